//! Applying a batch of stored events to one generation's tables in one transaction: rows and
//! the checkpoint commit together, so a crash at any point neither loses nor double-applies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, Event};
use talkwai_eventstore::StoredMessage;
use talkwai_proto::event::{EventMeta, decode_stored};
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
pub(crate) enum Decoded {
    /// A guard or other message the read models ignore.
    Ignored,
    /// An event of an aggregate.
    Event(AggregateRef, Box<Event>),
}

/// Decodes a message for the read models (another partition's messages are not even decoded).
pub(crate) fn decode_for(message: &StoredMessage, slot: Option<Slot>) -> Result<Decoded, String> {
    match slot {
        Some(slot) if !slot.owns(&message.subject) => Ok(Decoded::Ignored),
        _ => decode(message),
    }
}

fn decode(message: &StoredMessage) -> Result<Decoded, String> {
    let stored = decode_stored(
        &message.subject,
        |name| message.header(name),
        &message.payload,
    )
    .map_err(|e| e.to_string())?;
    Ok(stored.map_or(Decoded::Ignored, |s| {
        Decoded::Event(s.target, Box::new(s.event))
    }))
}

fn poison(message: &StoredMessage, error: String) -> Poison {
    Poison {
        seq: message.seq,
        subject: message.subject.clone(),
        event_type: EventMeta::from_headers(|name| message.header(name)).event_type,
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
    let decoded = messages.iter().map(|m| decode_for(m, None)).collect();
    let outcome = apply_rows(tx, schema, generation, messages, decoded, policy, tenant).await?;
    if let Some(seq) = advance_checkpoint(tx, schema, &outcome).await? {
        notify(tx, schema, seq).await?;
    }
    Ok(outcome)
}

/// Moves every partition row of `schema`'s checkpoint to `outcome`'s (counting its applied
/// events on partition 0); returns the sequence, or `None` when the outcome moved nothing.
async fn advance_checkpoint(
    tx: &Transaction<'_>,
    schema: &str,
    outcome: &BatchOutcome,
) -> Result<Option<i64>, ProjectorError> {
    if outcome.checkpoint == 0 {
        return Ok(None);
    }
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
    Ok(Some(seq))
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
    let decoded = messages.iter().map(|m| decode_for(m, Some(slot))).collect();
    apply_partition_decoded(
        tx, schema, generation, messages, decoded, policy, slot, expected,
    )
    .await
}

/// [`apply_partition`] with the messages already decoded (by [`decode_for`] with this slot,
/// in the same order), so decoding can run ahead of the transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_partition_decoded(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    decoded: Vec<Result<Decoded, String>>,
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
    let outcome = apply_rows(tx, schema, generation, messages, decoded, policy, None).await?;
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

/// A rebuild's bulk phase (or a replay into a snapshot): events are folded into rows held in
/// memory across batches, and the rows are written with `COPY` only when `capacity` rows are
/// held (and at the end), so a row created and changed within that window is written once, with
/// no upsert. Only for a generation nobody else writes and nobody reads until it is complete:
/// rows folded but not flushed are lost with the process, and the rebuild starts over.
///
/// A full window is handed over as a [`Flush`] that can be written on another connection while
/// the next window folds; rows of the window being written are read from it, not from the
/// table, until the next hand-over (which must wait for that write to commit).
pub(crate) struct BulkFold {
    work: WorkingSet,
    capacity: usize,
    outcome: BatchOutcome,
    /// The window handed over last (being written, or written).
    handed: Option<Arc<WorkingSet>>,
}

/// A window of folded rows to write, with the checkpoint it reaches.
pub(crate) struct Flush {
    work: Arc<WorkingSet>,
    outcome: BatchOutcome,
}

impl BulkFold {
    /// A fold that writes once `capacity` rows are held.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            work: WorkingSet::default(),
            capacity: capacity.max(1),
            outcome: BatchOutcome::default(),
            handed: None,
        }
    }

    /// Whether the fold holds its capacity of rows (time to hand them over).
    pub(crate) fn is_full(&self) -> bool {
        self.work.rows.len() >= self.capacity
    }

    /// Folds a batch (decoded, in stream order). Rows its events change that the fold does not
    /// hold are taken from the window handed over last, else read from the generation (flushed
    /// earlier). Fails at the first event that cannot be applied.
    pub(crate) async fn fold<C: tokio_postgres::GenericClient + Sync>(
        &mut self,
        client: &C,
        schema: &str,
        messages: &[StoredMessage],
        decoded: Vec<Result<Decoded, String>>,
        tenant: Option<TenantId>,
    ) -> Result<(), ProjectorError> {
        let mut needed = needed_rows(&self.work, &decoded);
        if let Some(handed) = &self.handed {
            for (table, ids) in &mut needed {
                ids.retain(|id| {
                    let key = (*table, *id);
                    let Some(row) = handed.rows.get(&key) else {
                        return true;
                    };
                    // In the table once the handed-over window is written, unless that
                    // window deleted it (then it is not, whether or not it was before).
                    if row.is_some() {
                        self.work.existed.insert(key);
                    }
                    self.work.rows.insert(key, row.clone());
                    self.work.order.push(key);
                    false
                });
            }
        }
        load_rows(client, schema, &mut self.work, &needed).await?;
        let outcome = apply_events(
            &mut self.work,
            messages,
            decoded,
            PoisonPolicy::Stop,
            tenant,
        );
        if let Some(poison) = outcome.stopped_at {
            return Err(ProjectorError::Invalid(format!(
                "stopped at event {} ({}): {}",
                poison.seq, poison.subject, poison.error
            )));
        }
        if outcome.checkpoint > 0 {
            self.outcome.checkpoint = outcome.checkpoint;
            self.outcome.last_event_at = outcome.last_event_at;
        }
        self.outcome.applied += outcome.applied;
        Ok(())
    }

    /// Hands the rows held over for writing and starts an empty window. The previous
    /// [`Flush`] must have committed first.
    pub(crate) fn hand_over(&mut self) -> Flush {
        let work = Arc::new(std::mem::take(&mut self.work));
        self.handed = Some(Arc::clone(&work));
        Flush {
            work,
            outcome: std::mem::take(&mut self.outcome),
        }
    }
}

impl Flush {
    /// Writes the window's rows and the checkpoint they reach inside `tx`; returns that
    /// checkpoint.
    pub(crate) async fn write(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<u64, ProjectorError> {
        copy(tx, schema, &self.work).await?;
        // Not announced: nobody reads a generation that is being built.
        advance_checkpoint(tx, schema, &self.outcome).await?;
        Ok(self.outcome.checkpoint)
    }
}

/// Applies the rows of `messages` (decoded as `decoded`; those of `tenant` when given — another
/// partition's were decoded as ignored; the others only move the outcome's checkpoint) and
/// records dead letters; leaves the checkpoint table alone.
async fn apply_rows(
    tx: &Transaction<'_>,
    schema: &str,
    generation: i32,
    messages: &[StoredMessage],
    decoded: Vec<Result<Decoded, String>>,
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
) -> Result<BatchOutcome, ProjectorError> {
    let mut work = WorkingSet::default();
    let needed = needed_rows(&work, &decoded);
    load_rows(tx, schema, &mut work, &needed).await?;
    let outcome = apply_events(&mut work, messages, decoded, policy, tenant);
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

/// The rows, per table, that events of `decoded` change but `work` does not hold: those whose
/// first event is not a create.
fn needed_rows(
    work: &WorkingSet,
    decoded: &[Result<Decoded, String>],
) -> HashMap<&'static str, Vec<Uuid>> {
    let mut needed: HashMap<&'static str, Vec<Uuid>> = HashMap::new();
    let mut seen: HashSet<(&'static str, Uuid)> = HashSet::new();
    for item in decoded {
        if let Ok(Decoded::Event(target, event)) = item {
            let key = (rows::table(target.kind), target.id);
            if !work.rows.contains_key(&key) && seen.insert(key) && !is_create(event) {
                needed.entry(key.0).or_default().push(key.1);
            }
        }
    }
    needed
}

/// Reads `needed` rows into `work` (one query per table), marking them as existing.
async fn load_rows<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    schema: &str,
    work: &mut WorkingSet,
    needed: &HashMap<&'static str, Vec<Uuid>>,
) -> Result<(), ProjectorError> {
    for (table, ids) in needed {
        let found = client
            .query(
                &format!("SELECT row_to_json(t) FROM {schema}.{table} t WHERE id = ANY($1)"),
                &[ids],
            )
            .await?;
        for row in found {
            let Value::Object(map) = row.get::<_, Value>(0) else {
                continue;
            };
            let Some(id) = map
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            work.rows.insert((table, id), Some(map));
            work.existed.insert((table, id));
            work.order.push((table, id));
        }
    }
    Ok(())
}

/// Folds `messages` into `work`, in order, under `policy`; returns what happened.
fn apply_events(
    work: &mut WorkingSet,
    messages: &[StoredMessage],
    decoded: Vec<Result<Decoded, String>>,
    policy: PoisonPolicy,
    tenant: Option<TenantId>,
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
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
                    // `rows::apply` refuses before it changes anything, so the row is
                    // changed in place.
                    rows::apply(slot, &target, &event, message.seq)
                        .map(Some)
                        .map_err(|e| e.to_string())
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
    outcome
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
        let mut upserts: Vec<&Row> = Vec::new();
        let mut deletes = Vec::new();
        for key in work.order.iter().filter(|(t, _)| *t == table) {
            match work.rows.get(key) {
                Some(Some(row)) => upserts.push(row),
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
            // Serialized straight from the working set (no copy of the rows).
            tx.execute(&sql, &[&tokio_postgres::types::Json(&upserts)])
                .await?;
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

/// Bytes per `COPY` data message.
const COPY_CHUNK: usize = 1 << 20;

/// A bulk flush: deletes the rows that were read from the table and changed or deleted since,
/// every row of the working set with `COPY … FROM STDIN` (text format).
async fn copy(tx: &Transaction<'_>, schema: &str, work: &WorkingSet) -> Result<(), ProjectorError> {
    use futures::SinkExt;
    for (table, columns) in COLUMNS {
        let mut replaced: Vec<Uuid> = Vec::new();
        let mut rows: Vec<&Row> = Vec::new();
        for key in &work.order {
            if key.0 != table {
                continue;
            }
            if work.existed.contains(key) {
                replaced.push(key.1);
            }
            if let Some(Some(row)) = work.rows.get(key) {
                rows.push(row);
            }
        }
        if !replaced.is_empty() {
            tx.execute(
                &format!("DELETE FROM {schema}.{table} WHERE id = ANY($1)"),
                &[&replaced],
            )
            .await?;
        }
        if rows.is_empty() {
            continue;
        }
        // Encoded up front: nothing borrowed from the working set is held across the sends.
        let mut chunks = Vec::new();
        let mut buffer = bytes::BytesMut::with_capacity(COPY_CHUNK + 4096);
        for row in rows {
            copy_row(&mut buffer, row, columns);
            if buffer.len() >= COPY_CHUNK {
                chunks.push(buffer.split().freeze());
            }
        }
        if !buffer.is_empty() {
            chunks.push(buffer.freeze());
        }
        let sink = tx
            .copy_in(&format!(
                "COPY {schema}.{table} ({}) FROM STDIN",
                columns.join(", ")
            ))
            .await?;
        futures::pin_mut!(sink);
        for chunk in chunks {
            sink.send(chunk).await?;
        }
        sink.finish().await?;
    }
    Ok(())
}

/// Appends one row in `COPY`'s text format: tab-separated, `\N` for NULL, backslash escapes.
fn copy_row(buffer: &mut bytes::BytesMut, row: &Row, columns: &[&str]) {
    use std::fmt::Write as _;
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            buffer.extend_from_slice(b"\t");
        }
        match row.get(*column) {
            None | Some(Value::Null) => buffer.extend_from_slice(b"\\N"),
            Some(Value::String(text)) => copy_text(buffer, text),
            Some(Value::Number(number)) => {
                let _ = write!(buffer, "{number}");
            }
            Some(Value::Bool(flag)) => buffer.extend_from_slice(if *flag { b"t" } else { b"f" }),
            // No column holds structured JSON (objects travel as validated JSON text); written
            // as JSON text should one ever appear.
            Some(other) => copy_text(buffer, &other.to_string()),
        }
    }
    buffer.extend_from_slice(b"\n");
}

/// Appends `text` escaped for `COPY`'s text format (runs without special bytes are copied whole).
fn copy_text(buffer: &mut bytes::BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buffer.extend_from_slice(&bytes[start..i]);
        buffer.extend_from_slice(escaped);
        start = i + 1;
    }
    buffer.extend_from_slice(&bytes[start..]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(row: &Row, columns: &[&str]) -> String {
        let mut buffer = bytes::BytesMut::new();
        copy_row(&mut buffer, row, columns);
        String::from_utf8(buffer.to_vec()).expect("UTF-8")
    }

    #[test]
    fn copy_rows_are_tab_separated_with_null_markers_and_a_newline() {
        let mut row = Row::new();
        row.insert("id".into(), Value::String("7d1b…".into()));
        row.insert("n".into(), serde_json::json!(-42));
        row.insert("big".into(), serde_json::json!(u64::MAX));
        row.insert("gone".into(), Value::Null);
        assert_eq!(
            copied(&row, &["id", "n", "big", "gone", "missing"]),
            "7d1b…\t-42\t18446744073709551615\t\\N\t\\N\n"
        );
    }

    #[test]
    fn copy_text_escapes_exactly_the_bytes_copy_reads_specially() {
        let mut row = Row::new();
        let nasty = "a\\b\tc\nd\re \\N {\"json\": [1, \"x\"]} ünïcödé";
        row.insert("t".into(), Value::String(nasty.into()));
        row.insert("u".into(), Value::String("\\N".into()));
        assert_eq!(
            copied(&row, &["t", "u"]),
            "a\\\\b\\tc\\nd\\re \\\\N {\"json\": [1, \"x\"]} ünïcödé\t\\\\N\n"
        );
    }

    #[test]
    fn every_table_writes_every_column_it_declares() {
        // A row holding a value for each column copies to exactly that many fields.
        for (_, columns) in COLUMNS {
            let row: Row = columns
                .iter()
                .map(|c| ((*c).to_owned(), Value::String(format!("v-{c}"))))
                .collect();
            let line = copied(&row, columns);
            assert_eq!(
                line.trim_end_matches('\n').split('\t').count(),
                columns.len()
            );
            assert!(!line.contains("\\N"));
        }
    }
}
