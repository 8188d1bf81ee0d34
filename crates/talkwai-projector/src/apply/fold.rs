//! The in-memory fold shared by the live apply and the bulk fold: the rows a batch touches,
//! read once, changed by each event in turn.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use talkwai_domain::Event;
use talkwai_domain::ids::TenantId;
use talkwai_eventstore::StoredMessage;
use talkwai_proto::{Scope, subject};
use uuid::Uuid;

use super::{BatchOutcome, Decoded, PoisonPolicy, poison};
use crate::error::ProjectorError;
use crate::rows::{self, Applied, Row};

/// The working set of a batch: the rows it touches, as they are after each event.
#[derive(Default)]
pub(super) struct WorkingSet {
    pub(super) rows: HashMap<(&'static str, Uuid), Option<Row>>,
    /// Rows read from the database (or known absent) before the batch.
    pub(super) existed: HashSet<(&'static str, Uuid)>,
    pub(super) order: Vec<(&'static str, Uuid)>,
    /// Tenants erased by the events folded: every row of theirs is deleted when the set is
    /// written, after its rows (so a row folded after the erasure goes too).
    pub(super) erased: Vec<Uuid>,
}

/// The tables holding a tenant's rows besides `tenants` itself (by their `tenant_id`).
const TENANT_TABLES: [&str; 3] = ["members", "agents", "tasks"];

/// Deletes every row of the `erased` tenants in every table of `schema`, and their dead
/// letters (which hold event payloads), inside the transaction the rows are written in: the
/// same statements for a live batch and a rebuild's flush.
pub(super) async fn drop_erased<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    schema: &str,
    erased: &[Uuid],
) -> Result<(), ProjectorError> {
    if erased.is_empty() {
        return Ok(());
    }
    for table in TENANT_TABLES {
        client
            .execute(
                &format!("DELETE FROM {schema}.{table} WHERE tenant_id = ANY($1)"),
                &[&erased],
            )
            .await?;
    }
    client
        .execute(
            &format!("DELETE FROM {schema}.tenants WHERE id = ANY($1)"),
            &[&erased],
        )
        .await?;
    // `talkwai.evt.<tenant>.>` as a LIKE pattern.
    let subjects: Vec<String> = erased
        .iter()
        .map(|t| {
            let filter = subject::tenant_events(Scope::Tenant(TenantId(*t)));
            format!("{}%", filter.trim_end_matches('>'))
        })
        .collect();
    client
        .execute(
            "DELETE FROM talkwai_meta.dead_letters WHERE subject LIKE ANY($1)",
            &[&subjects],
        )
        .await?;
    Ok(())
}

impl WorkingSet {
    /// Forgets the rows of an erased tenant held in the set (those read from the table are
    /// deleted by id) and records it for [`drop_erased`].
    fn erase_tenant(&mut self, tenant: Uuid) {
        let id = Value::String(tenant.to_string());
        for ((table, key), row) in &mut self.rows {
            let theirs = if *table == "tenants" {
                *key == tenant
            } else {
                row.as_ref()
                    .is_some_and(|r| r.get("tenant_id") == Some(&id))
            };
            if theirs {
                *row = None;
            }
        }
        if !self.erased.contains(&tenant) {
            self.erased.push(tenant);
        }
    }
}

/// The rows, per table, that events of `decoded` change but `work` does not hold: those whose
/// first event is not a create.
pub(super) fn needed_rows(
    work: &WorkingSet,
    decoded: &[Result<Decoded, String>],
) -> HashMap<&'static str, Vec<Uuid>> {
    let mut needed: HashMap<&'static str, Vec<Uuid>> = HashMap::new();
    let mut seen: HashSet<(&'static str, Uuid)> = HashSet::new();
    for item in decoded {
        if let Ok(Decoded::Event(target, event, _)) = item {
            let key = (rows::table(target.kind), target.id);
            if !work.rows.contains_key(&key) && seen.insert(key) && !is_create(event) {
                needed.entry(key.0).or_default().push(key.1);
            }
        }
    }
    needed
}

/// Reads `needed` rows into `work` (one query per table), marking them as existing.
pub(super) async fn load_rows<C: tokio_postgres::GenericClient + Sync>(
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
pub(super) fn apply_events(
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
            Ok(Decoded::Event(target, event, erased)) => {
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
                    let applied = rows::apply(slot, &target, &event, message.seq)
                        .map(Some)
                        .map_err(|e| e.to_string());
                    // Fields whose key is gone read as placeholders in the event: the row
                    // shows them as erased instead.
                    if erased
                        && matches!(applied, Ok(Some(Applied::Changed)))
                        && let Some(row) = slot.as_mut()
                    {
                        rows::scrub(row, target.kind);
                    }
                    if applied.is_ok() && is_erasure(&event) {
                        work.erase_tenant(target.id);
                    }
                    applied
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

fn is_erasure(event: &Event) -> bool {
    matches!(
        event,
        Event::Tenant(talkwai_domain::tenant::TenantEvent::Erased(_))
    )
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
