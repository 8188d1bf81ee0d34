//! Applying a batch of stored events to one generation's tables in one transaction: rows and
//! the checkpoint commit together, so a crash at any point neither loses nor double-applies.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, Event, EventBody};
use talkwai_eventstore::StoredMessage;
use talkwai_proto::EventSubject;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::error::ProjectorError;
use crate::partition::Slot;
use crate::rows::{self, Applied, Row};

/// Column lists, in table order (kept equal to the DDL by a test).
pub const COLUMNS: [(&str, &[&str]); 6] = [
    (
        "tenants",
        &[
            "id",
            "name",
            "domain",
            "status",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
    (
        "members",
        &[
            "id",
            "tenant_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "role",
            "status",
            "user_id",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
    (
        "admins",
        &[
            "id",
            "first_name",
            "last_name",
            "email",
            "role",
            "permissions",
            "status",
            "user_id",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
    (
        "agents",
        &[
            "id",
            "tenant_id",
            "name",
            "description",
            "type",
            "configuration",
            "status",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
    (
        "tasks",
        &[
            "id",
            "tenant_id",
            "type",
            "status",
            "priority",
            "from_address",
            "to_address",
            "subject",
            "content",
            "metadata",
            "scheduled_at",
            "started_at",
            "completed_at",
            "created_at",
            "updated_at",
            "agent_id",
            "assigned_to",
            "created_by",
            "created_by_admin",
            "version",
            "last_seq",
        ],
    ),
    (
        "users",
        &[
            "id",
            "email",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
];

/// What to do with an event that cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PoisonPolicy {
    /// Record a dead letter and stop before it (default): nothing after it is applied.
    #[default]
    Stop,
    /// Record a dead letter, skip it and go on.
    Skip,
}

/// An event that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its type header, if any.
    pub event_type: Option<String>,
    /// Why.
    pub error: String,
    /// Its body.
    pub payload: String,
}

/// The result of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events applied (not counting re-deliveries and guards).
    pub applied: usize,
    /// The checkpoint after the batch.
    pub checkpoint: u64,
    /// Stored time of the last event applied, epoch milliseconds.
    pub last_event_at: i64,
    /// The event the projection stopped at (policy `stop`).
    pub stopped_at: Option<Poison>,
    /// Events skipped into dead letters (policy `skip`).
    pub skipped: Vec<Poison>,
}

/// One decoded message: what it addresses and the event, or why it is unreadable.
enum Decoded {
    /// A guard or other message the read models ignore.
    Ignored,
    /// An event of an aggregate.
    Event(AggregateRef, Box<Event>),
}

fn decode(message: &StoredMessage) -> Result<Decoded, String> {
    let subject = EventSubject::parse(&message.subject).map_err(|e| e.to_string())?;
    let EventSubject::Aggregate(target) = subject else {
        return Ok(Decoded::Ignored);
    };
    let body: EventBody = serde_json::from_slice(&message.payload).map_err(|e| e.to_string())?;
    let event = Event::decode(&body).map_err(|e| e.to_string())?;
    Ok(Decoded::Event(target, Box::new(event)))
}

fn poison(message: &StoredMessage, error: String) -> Poison {
    Poison {
        seq: message.seq,
        subject: message.subject.clone(),
        event_type: message.header("Talkwai-Event-Type").map(str::to_owned),
        error,
        payload: String::from_utf8_lossy(&message.payload).into_owned(),
    }
}

/// The working set of a batch: the rows it touches, as they are after each event.
#[derive(Default)]
struct WorkingSet {
    rows: HashMap<(&'static str, Uuid), Option<Row>>,
    /// Rows read from the database (or known absent) before the batch.
    existed: HashSet<(&'static str, Uuid)>,
    order: Vec<(&'static str, Uuid)>,
}

/// Applies `messages` (in stream order, all after the current checkpoint) to `schema`'s tables
/// inside `tx`, then moves the checkpoint (every partition row: all events were considered).
/// Messages of other tenants are skipped when `tenant` is given (one-tenant rebuilds). Does not
/// commit.
pub async fn apply_batch(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
) -> Result<BatchOutcome, ProjectorError> {
    let outcome = apply_rows(tx, schema, generation, messages, policy, tenant, None).await?;
    if outcome.checkpoint > 0 {
        let seq = i64::try_from(outcome.checkpoint).unwrap_or(i64::MAX);
        let applied = i64::try_from(outcome.applied).unwrap_or(i64::MAX);
        tx.execute(
            &format!(
                "UPDATE {schema}.checkpoint SET last_seq = $1, last_event_at = $2,
                 applied = applied + CASE WHEN part = 0 THEN $3::bigint ELSE 0 END, updated_at = now()
                 WHERE last_seq < $1"
            ),
            &[&seq, &outcome.last_event_at, &applied],
        )
        .await?;
        notify(tx, schema, seq).await?;
    }
    Ok(outcome)
}

/// Applies the events of partition `slot` among `messages` (the others are counted through:
/// the partition's checkpoint passes them) and moves that partition's checkpoint, inside `tx`.
/// Fenced: first locks the partition's checkpoint row and fails with
/// [`ProjectorError::Fenced`] unless it holds `expected` under the same layout, so an owner
/// that lost its partition can never apply an event twice. Does not commit.
pub async fn apply_partition(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    policy: PoisonPolicy,
    slot: Slot,
    expected: u64,
) -> Result<BatchOutcome, ProjectorError> {
    let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
    let row = tx
        .query_opt(
            &format!(
                "SELECT last_seq, partitions FROM {schema}.checkpoint WHERE part = $1 FOR UPDATE"
            ),
            &[&part],
        )
        .await?;
    let found = row.map(|r| {
        (
            u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
        )
    });
    if found != Some((expected, slot.count)) {
        return Err(ProjectorError::Fenced {
            slot: slot.to_string(),
            expected,
            found: found.map(|f| f.0),
        });
    }
    let outcome = apply_rows(tx, schema, generation, messages, policy, None, Some(slot)).await?;
    if outcome.checkpoint > 0 {
        let seq = i64::try_from(outcome.checkpoint).unwrap_or(i64::MAX);
        let applied = i64::try_from(outcome.applied).unwrap_or(i64::MAX);
        tx.execute(
            &format!(
                "UPDATE {schema}.checkpoint SET last_seq = $1, last_event_at = $2,
                 applied = applied + $3, updated_at = now() WHERE part = $4"
            ),
            &[&seq, &outcome.last_event_at, &applied, &part],
        )
        .await?;
        notify(tx, schema, seq).await?;
    }
    Ok(outcome)
}

async fn notify(tx: &Transaction<'_>, schema: &str, seq: i64) -> Result<(), ProjectorError> {
    tx.execute(
        "SELECT pg_notify('talkwai_checkpoint', $1)",
        &[&format!("{schema}:{seq}")],
    )
    .await?;
    Ok(())
}

/// Applies the rows of `messages` (those of `tenant` / `slot` when given; the others only move
/// the outcome's checkpoint) and records dead letters; leaves the checkpoint table alone.
async fn apply_rows(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
    slot: Option<Slot>,
) -> Result<BatchOutcome, ProjectorError> {
    let mut outcome = BatchOutcome::default();
    let mut decoded = Vec::with_capacity(messages.len());
    for message in messages {
        // Another partition's events are not even decoded.
        decoded.push(match slot {
            Some(slot) if !slot.owns(&message.subject) => Ok(Decoded::Ignored),
            _ => decode(message),
        });
    }
    // Load the rows that events other than creates will touch, one query per table.
    let mut needed: HashMap<&'static str, Vec<Uuid>> = HashMap::new();
    let mut seen: HashSet<(&'static str, Uuid)> = HashSet::new();
    for item in &decoded {
        if let Ok(Decoded::Event(target, event)) = item {
            let table = rows::table(target.kind);
            if seen.insert((table, target.id)) && !is_create(event) {
                needed.entry(table).or_default().push(target.id);
            }
        }
    }
    let mut work = WorkingSet::default();
    for (table, ids) in &needed {
        let found = tx
            .query(
                &format!("SELECT to_jsonb(t) FROM {schema}.{table} t WHERE id = ANY($1)"),
                &[ids],
            )
            .await?;
        for row in found {
            let value: Value = row.get(0);
            if let (Value::Object(map), Some(id)) = (
                value.clone(),
                value
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok()),
            ) {
                work.rows.insert((table, id), Some(map));
                work.existed.insert((table, id));
                work.order.push((table, id));
            }
        }
    }
    for (message, item) in messages.iter().zip(decoded) {
        let applied = match item {
            Ok(Decoded::Ignored) => Ok(None),
            Ok(Decoded::Event(target, event)) => {
                if tenant.is_some() && target.tenant != tenant {
                    Ok(None)
                } else {
                    let table = rows::table(target.kind);
                    let key = (table, target.id);
                    let order = &mut work.order;
                    let slot = work.rows.entry(key).or_insert_with(|| {
                        order.push(key);
                        None
                    });
                    let mut candidate = slot.clone();
                    match rows::apply(&mut candidate, &target, &event, message.seq) {
                        Ok(result) => {
                            *slot = candidate;
                            Ok(Some(result))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
            Err(e) => Err(e),
        };
        match applied {
            Ok(result) => {
                if matches!(result, Some(Applied::Changed | Applied::Deleted)) {
                    outcome.applied += 1;
                }
                outcome.checkpoint = message.seq;
                outcome.last_event_at = message.stored_at_ms;
            }
            Err(error) => {
                let dead = poison(message, error);
                match policy {
                    PoisonPolicy::Stop => {
                        outcome.stopped_at = Some(dead);
                        break;
                    }
                    PoisonPolicy::Skip => {
                        outcome.checkpoint = message.seq;
                        outcome.skipped.push(dead);
                    }
                }
            }
        }
    }
    write(tx, schema, &work).await?;
    for dead in outcome
        .skipped
        .iter()
        .map(|d| (d, "skipped"))
        .chain(outcome.stopped_at.iter().map(|d| (d, "open")))
    {
        record_dead_letter(tx, generation, dead.0, dead.1).await?;
    }
    Ok(outcome)
}

fn is_create(event: &Event) -> bool {
    use talkwai_domain::{admin::AdminEvent, agent::AgentEvent, member::MemberEvent};
    use talkwai_domain::{task::TaskEvent, tenant::TenantEvent, user::UserEvent};
    matches!(
        event,
        Event::Tenant(TenantEvent::Created(_))
            | Event::Member(MemberEvent::Created(_))
            | Event::Admin(AdminEvent::Created(_))
            | Event::Agent(AgentEvent::Created(_))
            | Event::Task(TaskEvent::Created(_))
            | Event::User(UserEvent::Created(_))
    )
}

async fn write(
    tx: &Transaction<'_>,
    schema: &str,
    work: &WorkingSet,
) -> Result<(), ProjectorError> {
    for (table, columns) in COLUMNS {
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for key in work.order.iter().filter(|(t, _)| *t == table) {
            match work.rows.get(key) {
                Some(Some(row)) => upserts.push(Value::Object(row.clone())),
                Some(None) if work.existed.contains(key) => deletes.push(key.1),
                _ => {}
            }
        }
        if !upserts.is_empty() {
            let set: Vec<String> = columns
                .iter()
                .skip(1)
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            let sql = format!(
                "INSERT INTO {schema}.{table} SELECT * FROM jsonb_populate_recordset(NULL::{schema}.{table}, $1)
                 ON CONFLICT (id) DO UPDATE SET {} WHERE {table}.last_seq < EXCLUDED.last_seq",
                set.join(", ")
            );
            tx.execute(&sql, &[&Value::Array(upserts)]).await?;
        }
        if !deletes.is_empty() {
            tx.execute(
                &format!("DELETE FROM {schema}.{table} WHERE id = ANY($1)"),
                &[&deletes],
            )
            .await?;
        }
    }
    Ok(())
}

async fn record_dead_letter(
    tx: &Transaction<'_>,
    generation: i32,
    dead: &Poison,
    status: &str,
) -> Result<(), ProjectorError> {
    let seq = i64::try_from(dead.seq).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO talkwai_meta.dead_letters (generation, seq, subject, event_type, error, payload, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (generation, seq) DO UPDATE SET error = EXCLUDED.error, status = EXCLUDED.status,
             resolved_at = NULL",
        &[&generation, &seq, &dead.subject, &dead.event_type, &dead.error, &dead.payload, &status],
    )
    .await?;
    Ok(())
}
