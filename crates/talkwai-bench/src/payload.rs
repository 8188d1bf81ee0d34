//! The messages the raw baselines write: a `task.created` event body and the headers the
//! command service puts on it, so raw appends and commands move the same bytes.

use async_nats::HeaderMap;
use bytes::Bytes;
use talkwai_domain::ids::TenantId;
use talkwai_eventstore::header_map;
use talkwai_proto::Scope;
use talkwai_proto::event::{ActorRef, CommandPart, EventMeta};
use uuid::Uuid;

/// The create-task command the command scenarios send (a seed-like `createTask`).
pub fn create_task_command(task: Uuid) -> Bytes {
    let body = serde_json::json!({
        "id": task,
        "type": "call",
        "priority": "high",
        "fromAddress": "+15550001111",
        "toAddress": "+15550002222",
        "subject": "Confirm Tuesday appointment",
        "content": "Call the patient to confirm the 2:30 pm cleaning.",
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// One event message as the command service would append it (without the concurrency
/// headers, which each writer adds).
#[derive(Debug, Clone)]
pub struct EventMessage {
    /// `talkwai.evt.<tenant>.task.<id>`.
    pub subject: String,
    /// Talkwai-* headers.
    pub headers: HeaderMap,
    /// The event body.
    pub payload: Bytes,
    /// The command id (also the dedupe id of single appends).
    pub command_id: Uuid,
}

/// Makes event messages for one tenant and actor.
#[derive(Debug, Clone)]
pub struct EventFactory {
    tenant: Uuid,
    member: Uuid,
    /// The body every event shares: the server does not look inside, so one body serves all
    /// and making messages costs the client little.
    payload: Bytes,
    at: u64,
}

impl EventFactory {
    /// Events of a fresh bench tenant.
    pub fn new() -> Self {
        let member = Uuid::new_v4();
        let at = now_ms();
        let body = serde_json::json!({
            "type": "task.created",
            "version": 1,
            "data": {
                "agent": null,
                "assignedTo": null,
                "at": at,
                "content": "Call the patient to confirm the 2:30 pm cleaning.",
                "createdBy": member,
                "createdByAdmin": null,
                "fromAddress": "+15550001111",
                "metadata": null,
                "priority": "high",
                "scheduledAt": null,
                "status": "pending",
                "subject": "Confirm Tuesday appointment",
                "toAddress": "+15550002222",
                "type": "call",
            },
        });
        Self {
            tenant: Uuid::new_v4(),
            member,
            payload: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            at,
        }
    }

    /// Size of the event body, bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// A `task.created` event on a new task subject.
    pub fn task_created(&self) -> EventMessage {
        let task = Uuid::new_v4();
        let command_id = Uuid::new_v4();
        let meta = EventMeta {
            actor: Some(ActorRef::Member(self.member)),
            command_id: Some(command_id),
            occurred_at: Some(i64::try_from(self.at).unwrap_or(i64::MAX)),
            part: Some(CommandPart { index: 1, total: 1 }),
            ..EventMeta::typed("task.created", 1, Scope::Tenant(TenantId(self.tenant)))
        };
        EventMessage {
            subject: format!("talkwai.evt.{}.task.{task}", self.tenant),
            headers: header_map(meta.to_headers()),
            payload: self.payload.clone(),
            command_id,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
