//! Pure decisions: which room messages one event produces, given what is known about its task.
//! No I/O; the caller loads [`TaskFacts`] and publishes the [`Outgoing`] messages.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use lru::LruCache;
use serde_json::json;
use talkwai_domain::enums::{TaskStatus, TenantStatus};
use talkwai_domain::ids::{MemberId, TaskId, TenantId};
use talkwai_domain::task::{TaskEnded, TaskEvent, TaskFailed};
use talkwai_domain::tenant::TenantStatusChanged;
use talkwai_proto::room::{
    ADMIN_ROOM, ADMIN_ROOM_ID, AlertKind, NOTIFICATIONS, Notification, NotificationKind,
    ROOM_CLOSED, RoomClosed, RoomClosedReason, SYSTEM_ALERTS, SystemAlert, TASK_UPDATES,
    TENANT_ROOM, TaskAction, TaskUpdate,
};
use talkwai_proto::subject::room_topic;

pub use talkwai_proto::event::ActorRef;

/// Whether `actor` is the member `member`.
fn is_member(actor: ActorRef, member: MemberId) -> bool {
    actor == ActorRef::Member(member.0)
}

/// What the notifier remembers about a task: enough to say its status after any event and
/// whom to notify. Folded from the task's events (cached, or rebuilt from the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskFacts {
    /// The status, `None` before creation and after deletion.
    pub status: Option<TaskStatus>,
    /// The member who created the task.
    pub created_by: Option<MemberId>,
    /// The current assignee.
    pub assigned_to: Option<MemberId>,
    /// The stream sequence of the last event folded in (0: none).
    pub last_seq: u64,
}

impl TaskFacts {
    /// Folds one event in.
    pub fn evolve(&mut self, event: &TaskEvent, seq: u64) {
        match event {
            TaskEvent::Created(c) => {
                self.status = Some(c.status);
                self.created_by = c.created_by;
                self.assigned_to = c.assigned_to;
            }
            TaskEvent::Assigned(a) => self.assigned_to = Some(a.assigned_to),
            TaskEvent::Unassigned(_) => self.assigned_to = None,
            TaskEvent::Started(_) => self.status = Some(TaskStatus::InProgress),
            TaskEvent::Completed(_) => self.status = Some(TaskStatus::Completed),
            TaskEvent::Failed(_) | TaskEvent::Cancelled(_) => {
                self.status = Some(TaskStatus::Failed)
            }
            TaskEvent::Retried(_) => self.status = Some(TaskStatus::Pending),
            TaskEvent::Deleted(_) => self.status = None,
            TaskEvent::Updated(_)
            | TaskEvent::MetadataSet(_)
            | TaskEvent::AgentLinked(_)
            | TaskEvent::AgentUnlinked(_)
            | TaskEvent::ContentErased(_) => {}
        }
        self.last_seq = seq;
    }
}

/// The action name of a task event.
pub fn action_of(event: &TaskEvent) -> TaskAction {
    match event {
        TaskEvent::Created(_) => TaskAction::Created,
        TaskEvent::Updated(_) => TaskAction::Updated,
        TaskEvent::MetadataSet(_) => TaskAction::MetadataSet,
        TaskEvent::AgentLinked(_) => TaskAction::AgentLinked,
        TaskEvent::AgentUnlinked(_) => TaskAction::AgentUnlinked,
        TaskEvent::Assigned(_) => TaskAction::Assigned,
        TaskEvent::Unassigned(_) => TaskAction::Unassigned,
        TaskEvent::Started(_) => TaskAction::Started,
        TaskEvent::Completed(_) => TaskAction::Completed,
        TaskEvent::Failed(_) => TaskAction::Failed,
        TaskEvent::Cancelled(_) => TaskAction::Cancelled,
        TaskEvent::Retried(_) => TaskAction::Retried,
        TaskEvent::Deleted(_) => TaskAction::Deleted,
        TaskEvent::ContentErased(_) => TaskAction::ContentErased,
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The subject.
    pub subject: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Outgoing {
    fn new(subject: String, body: &impl serde::Serialize) -> Self {
        Self {
            subject,
            body: serde_json::to_value(body).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Where and when an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Happened {
    /// Stream sequence.
    pub seq: u64,
    /// The tenant.
    pub tenant: TenantId,
    /// Who caused it.
    pub actor: ActorRef,
    /// `Talkwai-Occurred-At`, epoch milliseconds.
    pub occurred_at: i64,
}

/// The `taskUpdates` topic of a tenant.
pub fn task_updates_subject(tenant: TenantId) -> String {
    room_topic(TENANT_ROOM, &tenant.to_string(), TASK_UPDATES)
}

/// The `notifications` subject of one member.
pub fn notifications_subject(tenant: TenantId, member: MemberId) -> String {
    format!(
        "{}.{member}",
        room_topic(TENANT_ROOM, &tenant.to_string(), NOTIFICATIONS)
    )
}

/// The admin room's `systemAlerts` topic.
pub fn system_alerts_subject() -> String {
    room_topic(ADMIN_ROOM, ADMIN_ROOM_ID, SYSTEM_ALERTS)
}

/// The messages a task event produces: one `taskUpdates` message, and member notifications
/// (assigned to you; a task you created completed or failed). Nobody is notified of their own
/// action. `after` is the facts with the event folded in; `before` without it.
pub fn task_messages(
    meta: Happened,
    task: TaskId,
    event: &TaskEvent,
    before: &TaskFacts,
    after: &TaskFacts,
) -> Vec<Outgoing> {
    let mut out = vec![Outgoing::new(
        task_updates_subject(meta.tenant),
        &TaskUpdate {
            task_id: task,
            action: action_of(event),
            status: after.status,
            user_id: meta.actor.user_id(),
            timestamp: meta.occurred_at,
            seq: meta.seq,
        },
    )];
    let (recipient, kind, reason) = match event {
        TaskEvent::Created(c) => (c.assigned_to, NotificationKind::TaskAssigned, None),
        TaskEvent::Assigned(a) => (Some(a.assigned_to), NotificationKind::TaskAssigned, None),
        TaskEvent::Completed(_) => (before.created_by, NotificationKind::TaskCompleted, None),
        TaskEvent::Failed(TaskFailed { reason, .. })
        | TaskEvent::Cancelled(TaskEnded { reason, .. }) => (
            before.created_by,
            NotificationKind::TaskFailed,
            reason.as_ref().map(|r| r.as_str().to_owned()),
        ),
        _ => (None, NotificationKind::TaskAssigned, None),
    };
    if let Some(member) = recipient.filter(|m| !is_member(meta.actor, *m)) {
        out.push(Outgoing::new(
            notifications_subject(meta.tenant, member),
            &Notification {
                kind,
                member_id: member,
                task_id: task,
                user_id: meta.actor.user_id(),
                reason,
                timestamp: meta.occurred_at,
                seq: meta.seq,
            },
        ));
    }
    out
}

/// The alert of a tenant status change, if it is one admins care about.
pub fn tenant_alert(meta: Happened, change: &TenantStatusChanged) -> Option<Outgoing> {
    let kind = match (change.previous, change.status) {
        (_, TenantStatus::Suspended) => AlertKind::TenantSuspended,
        (TenantStatus::Active, TenantStatus::Inactive) => AlertKind::TenantDeactivated,
        (TenantStatus::Suspended | TenantStatus::Inactive, TenantStatus::Active) => {
            AlertKind::TenantReactivated
        }
        _ => return None,
    };
    let mut details = serde_json::Map::new();
    details.insert("status".into(), json!(change.status));
    details.insert("previous".into(), json!(change.previous));
    if let Some(reason) = &change.reason {
        details.insert("reason".into(), json!(reason.as_str()));
    }
    details.insert("userId".into(), json!(meta.actor.user_id()));
    Some(Outgoing::new(
        system_alerts_subject(),
        &SystemAlert {
            kind,
            tenant_id: Some(meta.tenant),
            message: format!("tenant {} is now {}", meta.tenant, change.status.as_str()),
            details,
            timestamp: meta.occurred_at,
            seq: Some(meta.seq),
        },
    ))
}

/// The `roomClosed` topic of a tenant.
pub fn room_closed_subject(tenant: TenantId) -> String {
    room_topic(TENANT_ROOM, &tenant.to_string(), ROOM_CLOSED)
}

/// The messages of a `tenant.erased`: the tenant room's last message (`roomClosed`) and an
/// admin alert.
pub fn tenant_erased_messages(meta: Happened) -> Vec<Outgoing> {
    let mut details = serde_json::Map::new();
    details.insert("userId".into(), json!(meta.actor.user_id()));
    vec![
        Outgoing::new(
            room_closed_subject(meta.tenant),
            &RoomClosed {
                tenant_id: meta.tenant,
                reason: RoomClosedReason::TenantErased,
                timestamp: meta.occurred_at,
                seq: meta.seq,
            },
        ),
        Outgoing::new(
            system_alerts_subject(),
            &SystemAlert {
                kind: AlertKind::TenantErased,
                tenant_id: Some(meta.tenant),
                message: format!("tenant {} was erased: its room is closed", meta.tenant),
                details,
                timestamp: meta.occurred_at,
                seq: Some(meta.seq),
            },
        ),
    ]
}

/// Counts task failures per tenant in a sliding window and says when a tenant crosses the
/// threshold: once per spike (re-armed when the window holds fewer failures again).
#[derive(Debug)]
pub struct FailureSpikes {
    threshold: usize,
    window_ms: i64,
    /// Failure times per tenant; bounded, least recently failing tenants forgotten first.
    tenants: LruCache<TenantId, Spike>,
}

#[derive(Debug, Default)]
struct Spike {
    times: VecDeque<i64>,
    alerted: bool,
}

impl FailureSpikes {
    /// A detector alerting at `threshold` failures within `window_ms`, remembering at most
    /// `capacity` tenants.
    pub fn new(threshold: usize, window_ms: i64, capacity: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            window_ms,
            tenants: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Records a failure at `at_ms`; returns the failure count when this one starts a spike.
    pub fn record(&mut self, tenant: TenantId, at_ms: i64) -> Option<usize> {
        let spike = self.tenants.get_or_insert_mut(tenant, Spike::default);
        spike.times.push_back(at_ms);
        while spike
            .times
            .front()
            .is_some_and(|t| *t <= at_ms - self.window_ms)
        {
            spike.times.pop_front();
        }
        while spike.times.len() > self.threshold {
            spike.times.pop_front();
        }
        let count = spike.times.len();
        if count < self.threshold {
            spike.alerted = false;
            return None;
        }
        if spike.alerted {
            return None;
        }
        spike.alerted = true;
        Some(count)
    }

    /// The alert for a spike of `count` failures in `tenant`.
    pub fn alert(&self, meta: Happened, count: usize) -> Outgoing {
        let mut details = serde_json::Map::new();
        details.insert("failures".into(), json!(count));
        details.insert("windowSecs".into(), json!(self.window_ms / 1000));
        Outgoing::new(
            system_alerts_subject(),
            &SystemAlert {
                kind: AlertKind::TaskFailureSpike,
                tenant_id: Some(meta.tenant),
                message: format!(
                    "{count} task failures within {} s in tenant {}",
                    self.window_ms / 1000,
                    meta.tenant
                ),
                details,
                timestamp: meta.occurred_at,
                seq: Some(meta.seq),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use talkwai_domain::state::Stamp;
    use talkwai_domain::values::Timestamp;

    use super::*;

    fn meta(actor: ActorRef) -> Happened {
        Happened {
            seq: 7,
            tenant: TenantId(Uuid::from_u128(1)),
            actor,
            occurred_at: 1000,
        }
    }

    fn completed() -> talkwai_domain::task::TaskCompleted {
        talkwai_domain::task::TaskCompleted {
            outcome: None,
            at: stamp().at,
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            at: Timestamp(1000),
        }
    }

    #[test]
    fn given_a_started_task_when_completed_then_update_and_creator_notified() {
        let creator = MemberId(Uuid::from_u128(2));
        let before = TaskFacts {
            status: Some(TaskStatus::InProgress),
            created_by: Some(creator),
            assigned_to: None,
            last_seq: 5,
        };
        let event = TaskEvent::Completed(completed());
        let mut after = before;
        after.evolve(&event, 7);
        let agent = ActorRef::Member(Uuid::from_u128(3));
        let out = task_messages(
            meta(agent),
            TaskId(Uuid::from_u128(9)),
            &event,
            &before,
            &after,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body["status"], "completed");
        assert_eq!(out[0].body["action"], "completed");
        assert_eq!(out[0].body["userId"], json!(Uuid::from_u128(3)));
        assert_eq!(out[0].body["seq"], 7);
        assert!(out[1].subject.ends_with(&creator.to_string()));
        assert_eq!(out[1].body["kind"], "taskCompleted");
    }

    #[test]
    fn given_any_task_when_the_creator_acts_then_no_self_notification() {
        let creator = MemberId(Uuid::from_u128(2));
        let before = TaskFacts {
            status: Some(TaskStatus::InProgress),
            created_by: Some(creator),
            ..Default::default()
        };
        let event = TaskEvent::Completed(completed());
        let out = task_messages(
            meta(ActorRef::Member(creator.0)),
            TaskId(Uuid::from_u128(9)),
            &event,
            &before,
            &before,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn given_no_known_status_when_updated_then_status_is_null() {
        let event = TaskEvent::MetadataSet(talkwai_domain::task::TaskMetadataSet {
            metadata: None,
            at: Timestamp(1),
        });
        let facts = TaskFacts::default();
        let out = task_messages(
            meta(ActorRef::Platform),
            TaskId(Uuid::from_u128(9)),
            &event,
            &facts,
            &facts,
        );
        assert_eq!(out[0].body["status"], serde_json::Value::Null);
        assert_eq!(out[0].body["userId"], serde_json::Value::Null);
    }

    #[test]
    fn given_failures_when_the_threshold_is_reached_then_one_alert_per_spike() {
        let tenant = TenantId(Uuid::from_u128(1));
        let mut spikes = FailureSpikes::new(3, 10_000, 10);
        assert_eq!(spikes.record(tenant, 0), None);
        assert_eq!(spikes.record(tenant, 1_000), None);
        assert_eq!(spikes.record(tenant, 2_000), Some(3));
        assert_eq!(spikes.record(tenant, 3_000), None, "same spike");
        // The window empties, then a new spike alerts again.
        assert_eq!(spikes.record(tenant, 50_000), None);
        assert_eq!(spikes.record(tenant, 50_001), None);
        assert_eq!(spikes.record(tenant, 50_002), Some(3));
    }
    #[test]
    fn given_an_erased_tenant_then_its_room_closes_and_admins_are_told() {
        let admin = Uuid::from_u128(3);
        let tenant = TenantId(Uuid::from_u128(1));
        let out = tenant_erased_messages(meta(ActorRef::Admin(admin)));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0].subject,
            format!("talkwai.room.tenant.{tenant}.topic.roomClosed")
        );
        assert_eq!(
            out[0].body,
            json!({"tenantId": tenant, "reason": "tenantErased", "timestamp": 1000, "seq": 7})
        );
        assert_eq!(out[1].subject, system_alerts_subject());
        assert_eq!(out[1].body["kind"], "tenantErased");
        assert_eq!(out[1].body["tenantId"], json!(tenant));
        assert_eq!(out[1].body["details"]["userId"], json!(admin));
        assert_eq!(out[1].body["seq"], 7);
    }
}
