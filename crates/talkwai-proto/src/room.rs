//! Room messages: what the notifier publishes on room topics (`taskUpdates`, member
//! `notifications`, admin `systemAlerts`), what clients publish (`taskActivity` and their own
//! topics) and the presence protocol (requests, replies, peers, announcements).
//!
//! | topic | published by | schema |
//! |---|---|---|
//! | `taskUpdates` | the notifier only | [`TaskUpdate`] |
//! | `notifications.<memberId>` | the notifier only | [`Notification`] |
//! | `systemAlerts` (admin room) | the notifier and the projector only | [`SystemAlert`] |
//! | `roomClosed` | the notifier only | [`RoomClosed`] |
//! | `taskActivity` | members of the room (clients) | [`TaskActivity`] |
//! | any other name | members of the room (clients) | any JSON, the client's own |
//!
//! Every message the notifier derives from the event log carries `seq`, the stream sequence of
//! the event it came from: delivery is at-least-once, so a client drops a message whose `seq`
//! it has already seen.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talkwai_domain::enums::TaskStatus;
use talkwai_domain::ids::{MemberId, TaskId, TenantId};
use uuid::Uuid;

use crate::envelope::ErrorBody;

/// The room type of a tenant room (id: the tenant id).
pub const TENANT_ROOM: &str = "tenant";
/// The room type of the admin room.
pub const ADMIN_ROOM: &str = "admin";
/// The id of the one admin room.
pub const ADMIN_ROOM_ID: &str = "global";
/// The topic carrying [`TaskUpdate`]s.
pub const TASK_UPDATES: &str = "taskUpdates";
/// The topic carrying [`Notification`]s (one sub-subject per member).
pub const NOTIFICATIONS: &str = "notifications";
/// The topic carrying [`SystemAlert`]s.
pub const SYSTEM_ALERTS: &str = "systemAlerts";
/// The presence subject token on which [`PresenceEvent`]s are announced.
pub const PRESENCE_EVENTS: &str = "events";
/// The client topic carrying [`TaskActivity`] (what members are doing with a task now).
pub const TASK_ACTIVITY: &str = "taskActivity";
/// The topic carrying the [`RoomClosed`] message, the last one a closed room sends.
pub const ROOM_CLOSED: &str = "roomClosed";
/// Topics only the backbone publishes, derived from the event log (with `seq`); NATS
/// permissions refuse them to client credentials. Every other topic name is a client topic.
pub const SERVICE_TOPICS: [&str; 4] = [TASK_UPDATES, NOTIFICATIONS, SYSTEM_ALERTS, ROOM_CLOSED];

/// Whether clients may publish on `topic` (`notifications.<memberId>` is a service topic).
pub fn is_client_topic(topic: &str) -> bool {
    let first = topic.split('.').next().unwrap_or(topic);
    !topic.is_empty() && !SERVICE_TOPICS.contains(&first)
}

/// What happened to a task: the event name without the `task.` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskAction {
    /// `task.created`.
    Created,
    /// `task.updated`.
    Updated,
    /// `task.metadataSet`.
    MetadataSet,
    /// `task.agentLinked`.
    AgentLinked,
    /// `task.agentUnlinked`.
    AgentUnlinked,
    /// `task.assigned`.
    Assigned,
    /// `task.unassigned`.
    Unassigned,
    /// `task.started`.
    Started,
    /// `task.completed`.
    Completed,
    /// `task.failed`.
    Failed,
    /// `task.cancelled`.
    Cancelled,
    /// `task.retried`.
    Retried,
    /// `task.deleted`.
    Deleted,
    /// `task.contentErased`: its addresses, subject, content and outcome summary were erased
    /// (a client showing them reads the task again: they are `null` now, with `erased: true`).
    ContentErased,
}

/// A real-time task change in a tenant room (`talkwai.room.tenant.<tenant>.topic.taskUpdates`),
/// the seed's `notifyTaskUpdate` shape plus the event's stream sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskUpdate {
    /// The task.
    pub task_id: TaskId,
    /// What happened.
    pub action: TaskAction,
    /// The task's status after the change; `null` when unknown (the task's history could not
    /// be read) or deleted.
    pub status: Option<TaskStatus>,
    /// Who caused the change: the member or admin id from the event's actor, `null` for the
    /// platform.
    pub user_id: Option<Uuid>,
    /// When the change happened, epoch milliseconds.
    pub timestamp: i64,
    /// The event's stream sequence: increasing, the key for client-side dedupe.
    pub seq: u64,
}

/// What a member is doing with a task right now, published by clients on the tenant room's
/// `taskActivity` topic (`talkwai.room.tenant.<tenant>.topic.taskActivity`): the seed's
/// `notifyTaskUpdate` shape. Ephemeral and not authoritative: a task's changes come from the
/// log, on `taskUpdates`, which only the notifier publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskActivity {
    /// The task.
    pub task_id: TaskId,
    /// What the member is doing (`viewing`, `editing`, `calling`...), a client-chosen word.
    #[schemars(length(min = 1, max = 64))]
    pub action: String,
    /// The `$users` id (or member id) of who does it.
    pub user_id: Uuid,
    /// When, epoch milliseconds.
    pub timestamp: i64,
}

/// Why a member is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotificationKind {
    /// A task was assigned to you (created with `assignedTo`, or `task.assigned`).
    TaskAssigned,
    /// A task you created was completed.
    TaskCompleted,
    /// A task you created failed (`task.failed` or `task.cancelled`).
    TaskFailed,
}

/// An in-app notification for one member
/// (`talkwai.room.tenant.<tenant>.topic.notifications.<memberId>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notification {
    /// Why.
    pub kind: NotificationKind,
    /// The member notified.
    pub member_id: MemberId,
    /// The task concerned.
    pub task_id: TaskId,
    /// Who caused it: the member or admin id from the event's actor, `null` for the platform.
    pub user_id: Option<Uuid>,
    /// The failure reason (`taskFailed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened, epoch milliseconds.
    pub timestamp: i64,
    /// The event's stream sequence, the key for client-side dedupe.
    pub seq: u64,
}

/// Why a room was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RoomClosedReason {
    /// The tenant was erased (`tenant.erased`): offboarded for good.
    TenantErased,
}

/// The last message of a tenant room (`talkwai.room.tenant.<tenant>.topic.roomClosed`): the
/// room is closed for good. Every presence session in it is gone, a join is refused with
/// `tenant_erased`, and nothing else will be published in it; a client stops its
/// subscriptions and heartbeats and signs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoomClosed {
    /// The room's tenant.
    pub tenant_id: TenantId,
    /// Why.
    pub reason: RoomClosedReason,
    /// When, epoch milliseconds (the event's time).
    pub timestamp: i64,
    /// The event's stream sequence, the key for client-side dedupe.
    pub seq: u64,
}

/// What a system alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// A tenant was suspended.
    TenantSuspended,
    /// A tenant was deactivated.
    TenantDeactivated,
    /// A suspended or inactive tenant became active again.
    TenantReactivated,
    /// A tenant was erased (offboarded); its room is closed.
    TenantErased,
    /// At least the configured number of task failures within the configured window.
    TaskFailureSpike,
    /// A projector consumer is more than the configured number of events behind.
    ProjectionLag,
    /// A service instance seen before stopped answering `$SRV.PING`.
    ServiceInstanceGone,
    /// The projector could not apply an event and dead-lettered it (details: `seq`, `subject`,
    /// `error`, `stopped`).
    DeadLetter,
}

/// A system-wide alert in the admin room (`talkwai.room.admin.global.topic.systemAlerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemAlert {
    /// What the alert is about.
    pub kind: AlertKind,
    /// The tenant concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// A lowercase human-readable summary.
    pub message: String,
    /// Kind-specific facts (`failures`, `windowSecs`, `consumer`, `pending`, `service`,
    /// `instance`, `reason`...).
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// When, epoch milliseconds (the event's time for event-driven alerts).
    pub timestamp: i64,
    /// The stream sequence of the event that raised it (event-driven alerts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A presence request on `talkwai.room.<type>.<id>.presence.<op>` for `join`, `update`,
/// `leave`, `heartbeat` and `get`, with `Authorization: Bearer <token>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceRequest {
    /// The client's session (`[A-Za-z0-9_-]{1,64}`); required except for `get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The peer's data: a JSON object (≤ 4 KiB, ≤ 32 keys, depth ≤ 4). `join` sets it,
    /// `update` merges it shallowly (a `null` value removes the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One peer in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    /// The session.
    pub session_id: String,
    /// The `$users` id from the token that joined.
    pub user_id: Uuid,
    /// `member` or `admin`.
    pub kind: String,
    /// The peer's data.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// When the session joined, epoch milliseconds.
    pub joined_at: i64,
    /// When the data last changed, epoch milliseconds.
    pub updated_at: i64,
}

/// The reply to a presence request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The caller's peer entry after `join`, `update` and `heartbeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// Every peer of the room (`join` and `get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Peer>>,
    /// The TTL of the entry, seconds: heartbeat well within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What happened to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PresenceOp {
    /// A session joined.
    Join,
    /// A session changed its data.
    Update,
    /// A session left or expired.
    Leave,
}

/// Why a session left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LeaveReason {
    /// The client sent `leave`.
    Left,
    /// The client stopped heartbeating and its entry expired.
    Expired,
}

/// A presence announcement on `talkwai.room.<type>.<id>.presence.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceEvent {
    /// Join, update or leave.
    pub op: PresenceOp,
    /// The session.
    pub session_id: String,
    /// The peer after a join or update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// Why the session left (`leave` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<LeaveReason>,
    /// The presence entry's revision: increasing, the key for client-side dedupe.
    pub seq: u64,
}
