//! Read-model rows and how each event changes them. A row is a JSON object whose keys are the
//! table's columns; batches are read with `row_to_json` and written with
//! `jsonb_populate_recordset`, so one statement per table writes a whole batch.

use serde::Serialize;
use serde_json::{Map, Value, json};
use talkwai_domain::admin::AdminEvent;
use talkwai_domain::agent::AgentEvent;
use talkwai_domain::member::MemberEvent;
use talkwai_domain::task::{TaskEvent, TaskOutcome};
use talkwai_domain::tenant::TenantEvent;
use talkwai_domain::user::UserEvent;
use talkwai_domain::{AggregateRef, EntityKind, Event};

/// A row: column name → value.
pub type Row = Map<String, Value>;

/// Why an event cannot be applied to the read model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// An event other than a create for a row that does not exist.
    #[error("{kind} {id} has no row")]
    Missing {
        /// Table kind.
        kind: EntityKind,
        /// Row id.
        id: uuid::Uuid,
    },
    /// A create for a row that exists.
    #[error("{kind} {id} already has a row")]
    Exists {
        /// Table kind.
        kind: EntityKind,
        /// Row id.
        id: uuid::Uuid,
    },
    /// The event does not belong to the subject's aggregate.
    #[error("a {event} event on a {subject} subject")]
    Misrouted {
        /// The event's aggregate.
        event: EntityKind,
        /// The subject's aggregate.
        subject: EntityKind,
    },
}

/// The table holding an aggregate kind (the change feed names the same tables).
pub use talkwai_proto::changes::table;

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Sets `column` when a patch field is present (`Some(None)` sets NULL).
fn patch<T: Serialize>(row: &mut Row, column: &str, field: Option<&T>) {
    if let Some(value) = field {
        row.insert(column.to_owned(), to_value(value));
    }
}

/// A task's `outcome` (the reported object, as `jsonb`) and `outcome_summary` (its summary
/// as text, so queries can filter on it with an index).
fn set_outcome(row: &mut Row, outcome: Option<&TaskOutcome>) {
    row.insert("outcome".into(), outcome.map_or(Value::Null, to_value));
    row.insert(
        "outcome_summary".into(),
        outcome.map_or(Value::Null, |o| to_value(&o.summary)),
    );
}

/// The personal columns of a table (what an erasure sets to NULL); empty for tables without
/// personal data. The same fields as `talkwai_proto::sealed::personal_fields`.
pub fn personal_columns(kind: EntityKind) -> &'static [&'static str] {
    match kind {
        EntityKind::Member => &["first_name", "last_name", "email", "phone"],
        EntityKind::Admin => &["first_name", "last_name", "email"],
        EntityKind::User => &["email"],
        EntityKind::Task => &[
            "from_address",
            "to_address",
            "subject",
            "content",
            "outcome_summary",
        ],
        EntityKind::Tenant | EntityKind::Agent => &[],
    }
}

/// Marks a row erased: its personal columns NULL (a task's `outcome` keeps its other keys,
/// its `summary` NULL) and `erased` true. What an `…erased` event does, and what a row gets
/// when an event's personal fields read as erased (their key was destroyed).
pub fn scrub(row: &mut Row, kind: EntityKind) {
    if personal_columns(kind).is_empty() {
        return;
    }
    for column in personal_columns(kind) {
        row.insert((*column).to_owned(), Value::Null);
    }
    if let Some(Value::Object(outcome)) = row.get_mut("outcome") {
        outcome.insert("summary".into(), Value::Null);
    }
    row.insert("erased".into(), Value::Bool(true));
}

/// Whether the row is marked erased.
pub fn is_erased(row: &Row) -> bool {
    row.get("erased").and_then(Value::as_bool).unwrap_or(false)
}

fn touch(row: &mut Row, at: i64, seq: u64) {
    row.insert("updated_at".into(), json!(at));
    let version = row.get("version").and_then(Value::as_i64).unwrap_or(0) + 1;
    row.insert("version".into(), json!(version));
    row.insert("last_seq".into(), json!(seq));
}

fn base(id: uuid::Uuid, at: i64, seq: u64) -> Row {
    let mut row = Row::new();
    row.insert("id".into(), json!(id));
    row.insert("created_at".into(), json!(at));
    row.insert("updated_at".into(), json!(at));
    row.insert("version".into(), json!(1));
    row.insert("last_seq".into(), json!(seq));
    row
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The row changed (or was created).
    Changed,
    /// The row was deleted.
    Deleted,
    /// The row already reflects this event (re-delivery): nothing to do.
    AlreadyApplied,
}

/// Applies `event` (stream sequence `seq`) of the aggregate at `target` to its row. When it
/// refuses, `row` is left exactly as it was (callers change rows in place).
pub fn apply(
    row: &mut Option<Row>,
    target: &AggregateRef,
    event: &Event,
    seq: u64,
) -> Result<Applied, ApplyError> {
    if event.kind() != target.kind {
        return Err(ApplyError::Misrouted {
            event: event.kind(),
            subject: target.kind,
        });
    }
    if let Some(existing) = row.as_ref() {
        let last = existing
            .get("last_seq")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if last >= seq {
            return Ok(Applied::AlreadyApplied);
        }
    }
    let id = target.id;
    let kind = target.kind;
    let tenant = target.tenant.map(|t| t.0);
    let missing = || ApplyError::Missing { kind, id };
    // Creates need no row; everything else needs one.
    macro_rules! create {
        ($at:expr, $fill:expr) => {{
            if row.is_some() {
                return Err(ApplyError::Exists { kind, id });
            }
            let mut new = base(id, $at, seq);
            #[allow(clippy::redundant_closure_call)]
            ($fill)(&mut new);
            *row = Some(new);
            return Ok(Applied::Changed);
        }};
    }
    macro_rules! update {
        ($at:expr, $change:expr) => {{
            let current = row.as_mut().ok_or_else(missing)?;
            #[allow(clippy::redundant_closure_call)]
            ($change)(current);
            touch(current, $at, seq);
            return Ok(Applied::Changed);
        }};
    }
    macro_rules! delete {
        () => {{
            if row.is_none() {
                return Err(missing());
            }
            *row = None;
            return Ok(Applied::Deleted);
        }};
    }
    match event {
        Event::Tenant(e) => match e {
            TenantEvent::Created(c) => create!(c.at.0, |r: &mut Row| {
                r.insert("name".into(), to_value(&c.name));
                r.insert("domain".into(), to_value(&c.domain));
                r.insert("status".into(), to_value(&c.status));
            }),
            TenantEvent::Updated(u) => update!(u.at.0, |r: &mut Row| {
                patch(r, "name", u.name.as_ref());
                patch(r, "domain", u.domain.as_ref());
            }),
            TenantEvent::StatusChanged(s) => update!(s.at.0, |r: &mut Row| {
                r.insert("status".into(), to_value(&s.status));
            }),
            // The tenant's other rows go with it (`apply::fold`: the working set and a
            // tenant-wide delete).
            TenantEvent::Deleted(_) | TenantEvent::Erased(_) => delete!(),
        },
        Event::Member(e) => match e {
            MemberEvent::Created(c) => create!(c.at.0, |r: &mut Row| {
                r.insert("tenant_id".into(), json!(tenant));
                r.insert("first_name".into(), to_value(&c.first_name));
                r.insert("last_name".into(), to_value(&c.last_name));
                r.insert("email".into(), to_value(&c.email));
                r.insert("phone".into(), to_value(&c.phone));
                r.insert("role".into(), to_value(&c.role));
                r.insert("status".into(), to_value(&c.status));
                r.insert("user_id".into(), to_value(&c.user));
                r.insert("erased".into(), Value::Bool(false));
            }),
            MemberEvent::Updated(u) => update!(u.at.0, |r: &mut Row| {
                patch(r, "first_name", u.first_name.as_ref());
                patch(r, "last_name", u.last_name.as_ref());
                patch(r, "email", u.email.as_ref());
                patch(r, "phone", u.phone.as_ref());
            }),
            MemberEvent::RoleChanged(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("role".into(), to_value(&c.role));
            }),
            MemberEvent::StatusChanged(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("status".into(), to_value(&c.status));
            }),
            MemberEvent::UserLinked(l) => update!(l.at.0, |r: &mut Row| {
                r.insert("user_id".into(), to_value(&l.user));
            }),
            MemberEvent::UserUnlinked(l) => update!(l.at.0, |r: &mut Row| {
                r.insert("user_id".into(), Value::Null);
            }),
            MemberEvent::Deleted(_) => delete!(),
            MemberEvent::Erased(s) => update!(s.at.0, |r: &mut Row| scrub(r, kind)),
        },
        Event::Admin(e) => match e {
            AdminEvent::Created(c) => create!(c.at.0, |r: &mut Row| {
                r.insert("first_name".into(), to_value(&c.first_name));
                r.insert("last_name".into(), to_value(&c.last_name));
                r.insert("email".into(), to_value(&c.email));
                r.insert("role".into(), to_value(&c.role));
                r.insert("permissions".into(), to_value(&c.permissions));
                r.insert("status".into(), to_value(&c.status));
                r.insert("user_id".into(), to_value(&c.user));
                r.insert("erased".into(), Value::Bool(false));
            }),
            AdminEvent::Updated(u) => update!(u.at.0, |r: &mut Row| {
                patch(r, "first_name", u.first_name.as_ref());
                patch(r, "last_name", u.last_name.as_ref());
                patch(r, "email", u.email.as_ref());
            }),
            AdminEvent::RoleChanged(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("role".into(), to_value(&c.role));
            }),
            AdminEvent::PermissionsChanged(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("permissions".into(), to_value(&c.permissions));
            }),
            AdminEvent::StatusChanged(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("status".into(), to_value(&c.status));
            }),
            AdminEvent::UserLinked(l) => update!(l.at.0, |r: &mut Row| {
                r.insert("user_id".into(), to_value(&l.user));
            }),
            AdminEvent::UserUnlinked(l) => update!(l.at.0, |r: &mut Row| {
                r.insert("user_id".into(), Value::Null);
            }),
            AdminEvent::Deleted(_) => delete!(),
            AdminEvent::Erased(s) => update!(s.at.0, |r: &mut Row| scrub(r, kind)),
        },
        Event::Agent(e) => match e {
            AgentEvent::Created(c) => create!(c.at.0, |r: &mut Row| {
                r.insert("tenant_id".into(), json!(tenant));
                r.insert("name".into(), to_value(&c.name));
                r.insert("description".into(), to_value(&c.description));
                r.insert("type".into(), to_value(&c.agent_type));
                r.insert("configuration".into(), to_value(&c.configuration));
                r.insert("status".into(), to_value(&c.status));
            }),
            AgentEvent::Updated(u) => update!(u.at.0, |r: &mut Row| {
                patch(r, "name", u.name.as_ref());
                patch(r, "description", u.description.as_ref());
            }),
            AgentEvent::Configured(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("configuration".into(), to_value(&c.configuration));
            }),
            AgentEvent::StatusChanged(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("status".into(), to_value(&c.status));
            }),
            AgentEvent::Deleted(_) => delete!(),
        },
        Event::Task(e) => match e {
            TaskEvent::Created(c) => create!(c.at.0, |r: &mut Row| {
                r.insert("tenant_id".into(), json!(tenant));
                r.insert("type".into(), to_value(&c.task_type));
                r.insert("status".into(), to_value(&c.status));
                r.insert("priority".into(), to_value(&c.priority));
                r.insert("from_address".into(), to_value(&c.from_address));
                r.insert("to_address".into(), to_value(&c.to_address));
                r.insert("subject".into(), to_value(&c.subject));
                r.insert("content".into(), to_value(&c.content));
                r.insert("metadata".into(), to_value(&c.metadata));
                r.insert("scheduled_at".into(), to_value(&c.scheduled_at));
                r.insert("started_at".into(), Value::Null);
                r.insert("completed_at".into(), Value::Null);
                r.insert("agent_id".into(), to_value(&c.agent));
                r.insert("assigned_to".into(), to_value(&c.assigned_to));
                r.insert("created_by".into(), to_value(&c.created_by));
                r.insert("created_by_admin".into(), to_value(&c.created_by_admin));
                set_outcome(r, None);
                r.insert("erased".into(), Value::Bool(false));
            }),
            TaskEvent::Updated(u) => update!(u.at.0, |r: &mut Row| {
                patch(r, "type", u.task_type.as_ref());
                patch(r, "priority", u.priority.as_ref());
                patch(r, "from_address", u.from_address.as_ref());
                patch(r, "to_address", u.to_address.as_ref());
                patch(r, "subject", u.subject.as_ref());
                patch(r, "content", u.content.as_ref());
                patch(r, "scheduled_at", u.scheduled_at.as_ref());
            }),
            TaskEvent::MetadataSet(m) => update!(m.at.0, |r: &mut Row| {
                r.insert("metadata".into(), to_value(&m.metadata));
            }),
            TaskEvent::AgentLinked(l) => update!(l.at.0, |r: &mut Row| {
                r.insert("agent_id".into(), to_value(&l.agent));
            }),
            TaskEvent::AgentUnlinked(s) => update!(s.at.0, |r: &mut Row| {
                r.insert("agent_id".into(), Value::Null);
            }),
            TaskEvent::Assigned(a) => update!(a.at.0, |r: &mut Row| {
                r.insert("assigned_to".into(), to_value(&a.assigned_to));
            }),
            TaskEvent::Unassigned(s) => update!(s.at.0, |r: &mut Row| {
                r.insert("assigned_to".into(), Value::Null);
            }),
            TaskEvent::Started(s) => update!(s.at.0, |r: &mut Row| {
                r.insert("status".into(), json!("in_progress"));
                r.insert("started_at".into(), json!(s.at.0));
            }),
            TaskEvent::Completed(c) => update!(c.at.0, |r: &mut Row| {
                r.insert("status".into(), json!("completed"));
                r.insert("completed_at".into(), json!(c.at.0));
                set_outcome(r, c.outcome.as_ref());
            }),
            TaskEvent::Failed(f) => update!(f.at.0, |r: &mut Row| {
                r.insert("status".into(), json!("failed"));
                r.insert("completed_at".into(), json!(f.at.0));
                set_outcome(r, f.outcome.as_ref());
            }),
            TaskEvent::Cancelled(f) => update!(f.at.0, |r: &mut Row| {
                r.insert("status".into(), json!("failed"));
                r.insert("completed_at".into(), json!(f.at.0));
            }),
            TaskEvent::Retried(s) => update!(s.at.0, |r: &mut Row| {
                r.insert("status".into(), json!("pending"));
                r.insert("started_at".into(), Value::Null);
                r.insert("completed_at".into(), Value::Null);
                set_outcome(r, None);
            }),
            TaskEvent::Deleted(_) => delete!(),
            TaskEvent::ContentErased(s) => update!(s.at.0, |r: &mut Row| scrub(r, kind)),
        },
        Event::User(e) => match e {
            UserEvent::Created(c) => create!(c.at.0, |r: &mut Row| {
                r.insert("email".into(), to_value(&c.email));
                r.insert("erased".into(), Value::Bool(false));
            }),
            UserEvent::Updated(u) => update!(u.at.0, |r: &mut Row| {
                r.insert("email".into(), to_value(&u.email));
            }),
            UserEvent::Deleted(_) => delete!(),
            UserEvent::Erased(s) => update!(s.at.0, |r: &mut Row| scrub(r, kind)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talkwai_domain::EventBody;
    use talkwai_domain::ids::TenantId;

    fn event(body: Value) -> Event {
        let body: EventBody = serde_json::from_value(body).expect("body");
        Event::decode(&body).expect("event")
    }

    fn task(tenant: TenantId) -> AggregateRef {
        AggregateRef {
            kind: EntityKind::Task,
            tenant: Some(tenant),
            id: uuid::Uuid::new_v4(),
        }
    }

    fn created() -> Event {
        event(json!({"type": "task.created", "version": 1, "data": {
            "at": 5, "type": "call", "status": "pending", "priority": "high",
            "fromAddress": "+15550001111", "toAddress": "+15550002222", "subject": null,
            "content": null, "metadata": null, "scheduledAt": null, "agent": null,
            "assignedTo": null, "createdBy": null, "createdByAdmin": null}}))
    }

    #[test]
    fn a_refused_event_leaves_the_row_as_it_was() {
        let target = task(TenantId(uuid::Uuid::new_v4()));
        let started = event(json!({"type": "task.started", "version": 1, "data": {"at": 9}}));
        // An update of a missing row.
        let mut row = None;
        assert!(matches!(
            apply(&mut row, &target, &started, 1),
            Err(ApplyError::Missing { .. })
        ));
        assert_eq!(row, None);
        // A second create.
        assert_eq!(
            apply(&mut row, &target, &created(), 2),
            Ok(Applied::Changed)
        );
        let before = row.clone();
        assert!(matches!(
            apply(&mut row, &target, &created(), 3),
            Err(ApplyError::Exists { .. })
        ));
        assert_eq!(row, before);
        // An event of another aggregate kind.
        let tenant_event = event(json!({"type": "tenant.created", "version": 1,
            "data": {"at": 1, "name": "Acme", "domain": null, "status": "active"}}));
        assert!(matches!(
            apply(&mut row, &target, &tenant_event, 4),
            Err(ApplyError::Misrouted { .. })
        ));
        assert_eq!(row, before);
        // And the row still takes the next valid event.
        assert_eq!(apply(&mut row, &target, &started, 5), Ok(Applied::Changed));
        let row = row.expect("row");
        assert_eq!(row["status"], "in_progress");
        assert_eq!(row["version"], 2);
        assert_eq!(row["last_seq"], 5);
    }
}
