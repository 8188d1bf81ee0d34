//! The demo tenant `talkwai up` seeds: "Acme Corp" with an owner (linked to a `$users`
//! identity), a manager, a voice agent and four tasks, one in each status. Every id and every
//! command id is fixed, so a re-run after an interrupted seed completes it without writing
//! anything twice (the service answers a known command id with its first answer).

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use talkwai_auth::PrincipalKind;
use talkwai_domain::{AggregateRef, EntityKind};
use talkwai_eventstore::EventStore;
use talkwai_proto::subject;
use uuid::Uuid;

use crate::error::CliError;
use crate::send::{SendOptions, send_command};
use crate::token::{TokenSpec, mint};

/// The demo tenant ("Acme Corp").
pub const TENANT: Uuid = Uuid::from_u128(0xa0000000_0000_4000_8000_000000000001);
/// The owner's `$users` identity.
pub const OWNER_USER: Uuid = Uuid::from_u128(0xb0000000_0000_4000_8000_000000000001);
/// The owner member (Olive Owner).
pub const OWNER: Uuid = Uuid::from_u128(0xc0000000_0000_4000_8000_000000000001);
/// The manager member (Max Manager).
pub const MANAGER: Uuid = Uuid::from_u128(0xc0000000_0000_4000_8000_000000000002);
/// The voice agent (Vera).
pub const AGENT: Uuid = Uuid::from_u128(0xd0000000_0000_4000_8000_000000000001);
/// The tasks: pending, in progress, completed, failed.
pub const TASKS: [Uuid; 4] = [
    Uuid::from_u128(0xe0000000_0000_4000_8000_000000000001),
    Uuid::from_u128(0xe0000000_0000_4000_8000_000000000002),
    Uuid::from_u128(0xe0000000_0000_4000_8000_000000000003),
    Uuid::from_u128(0xe0000000_0000_4000_8000_000000000004),
];

/// Who sends a seed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The platform token.
    Platform,
    /// The owner member's token.
    Owner,
}

/// One seed command.
#[derive(Debug, Clone)]
pub struct Step {
    /// The command subject.
    pub subject: String,
    /// The body.
    pub body: Value,
    /// Its fixed command id.
    pub command_id: Uuid,
    /// Who sends it.
    pub sender: As,
}

/// Every seed command, in order.
pub fn steps() -> Vec<Step> {
    let t = TENANT;
    let tenant_cmd =
        |aggregate: &str, action: &str| format!("talkwai.cmd.{t}.{aggregate}.{action}");
    let [pending, in_progress, completed, failed] = TASKS;
    let plan: Vec<(String, Value, As)> = vec![
        (
            "talkwai.cmd.platform.tenant.create".into(),
            json!({"id": t, "name": "Acme Corp", "domain": "acme.com"}),
            As::Platform,
        ),
        (
            "talkwai.cmd.platform.user.create".into(),
            json!({"id": OWNER_USER, "email": "olive@acme.com"}),
            As::Platform,
        ),
        (
            tenant_cmd("member", "create"),
            json!({"id": OWNER, "firstName": "Olive", "lastName": "Owner",
                   "email": "olive@acme.com", "role": "owner", "user": OWNER_USER}),
            As::Platform,
        ),
        (
            tenant_cmd("member", "create"),
            json!({"id": MANAGER, "firstName": "Max", "lastName": "Manager",
                   "email": "max@acme.com", "phone": "+15550003333", "role": "manager"}),
            As::Owner,
        ),
        (
            tenant_cmd("agent", "create"),
            json!({"id": AGENT, "name": "Vera", "type": "voice",
                   "description": "Answers and places calls",
                   "configuration": "{\"voice\":\"alto\",\"language\":\"en-US\"}"}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "create"),
            json!({"id": pending, "type": "call", "priority": "high",
                   "fromAddress": "+15550001111", "toAddress": "+15550002222",
                   "subject": "Call back about the renewal", "agent": AGENT,
                   "assignedTo": MANAGER}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "create"),
            json!({"id": in_progress, "type": "email", "fromAddress": "support@acme.com",
                   "toAddress": "client@example.com", "subject": "Quote follow-up",
                   "assignedTo": MANAGER}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "start"),
            json!({"id": in_progress}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "create"),
            json!({"id": completed, "type": "call", "priority": "low",
                   "fromAddress": "+15550001111", "toAddress": "+15550004444",
                   "subject": "Welcome call", "agent": AGENT}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "start"),
            json!({"id": completed}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "complete"),
            json!({"id": completed}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "create"),
            json!({"id": failed, "type": "other", "priority": "urgent",
                   "fromAddress": "ops@acme.com", "toAddress": "+15550005555",
                   "subject": "Reach the on-call engineer"}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "start"),
            json!({"id": failed}),
            As::Owner,
        ),
        (
            tenant_cmd("task", "fail"),
            json!({"id": failed, "reason": "no answer"}),
            As::Owner,
        ),
    ];
    plan.into_iter()
        .zip(1u128..)
        .map(|((subject, body, sender), n)| Step {
            subject,
            body,
            command_id: Uuid::from_u128(0xf0000000_0000_4000_8000_000000000000 + n),
            sender,
        })
        .collect()
}

/// The owner member's token (also printed by `talkwai up` for the demo).
pub fn owner_token(jwt_secret: &SecretString, ttl: Duration) -> Result<String, CliError> {
    mint(
        &TokenSpec {
            kind: PrincipalKind::Member,
            sub: OWNER_USER,
            tenant: Some(TENANT),
            role: Some("owner".into()),
            ttl,
            issuer: None,
            audience: None,
        },
        jwt_secret,
    )
}

/// The demo tenant's event subject.
pub fn tenant_subject() -> String {
    subject::event(&AggregateRef {
        kind: EntityKind::Tenant,
        tenant: Some(TENANT.into()),
        id: TENANT,
    })
}

/// The subject of the last aggregate the seed writes.
fn last_step_subject() -> String {
    subject::event(&AggregateRef {
        kind: EntityKind::Task,
        tenant: Some(TENANT.into()),
        id: TASKS[3],
    })
}

/// Whether the demo is in the log: the tenant's subject and the last seeded task's subject
/// both have events.
pub async fn is_seeded(store: &EventStore) -> Result<bool, CliError> {
    Ok(store.last_of_subject(&tenant_subject()).await?.is_some()
        && store.last_of_subject(&last_step_subject()).await?.is_some())
}

/// Sends every seed command; a rejection stops the seed with the step that failed.
pub async fn seed(
    client: &async_nats::Client,
    platform_token: &SecretString,
    owner_token: &SecretString,
) -> Result<usize, CliError> {
    let steps = steps();
    for step in &steps {
        let token = match step.sender {
            As::Platform => platform_token,
            As::Owner => owner_token,
        };
        let body = serde_json::to_vec(&step.body).map_err(|e| CliError::Usage(e.to_string()))?;
        let reply = send_command(
            client,
            &step.subject,
            body.into(),
            Some(token),
            step.command_id,
            SendOptions::default(),
        )
        .await?;
        if let Err(error) = reply.reply.into_result() {
            return Err(CliError::Seed(format!(
                "{} {} was refused: {error}",
                step.subject, step.body
            )));
        }
    }
    Ok(steps.len())
}

/// The seed note's tenant dashboard query (`db.useQuery`) for the demo tenant: the tenant, its
/// active members, its agents and its 20 newest tasks with their agent and assignee.
pub fn dashboard_query() -> Value {
    json!({"tenants": {
        "$": {"where": {"id": TENANT}},
        "members": {"$": {"where": {"status": "active"}}},
        "agents": {},
        "tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}, "agent": {}, "assignedTo": {}},
    }})
}
