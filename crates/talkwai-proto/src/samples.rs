//! Seed-like example messages: one body per command action and one event per event type. The
//! generator writes them to `proto/fixtures/` when a fixture is missing and never overwrites
//! one: checked-in fixtures are the record of what was written and are decoded forever.
//!
//! The ids are fixed so regenerating a missing fixture gives the same bytes.

use serde_json::{Value, json};
use talkwai_domain::admin::{
    AdminCreated, AdminEvent, AdminPermissionsChanged, AdminRoleChanged, AdminStatusChanged,
    AdminUpdated,
};
use talkwai_domain::agent::{
    AgentConfigured, AgentCreated, AgentEvent, AgentStatusChanged, AgentUpdated,
};
use talkwai_domain::enums::{
    AdminRole, AdminStatus, AgentStatus, AgentType, MemberRole, MemberStatus, TaskPriority,
    TaskStatus, TaskType, TenantStatus,
};
use talkwai_domain::ids::{AgentId, MemberId, UserId};
use talkwai_domain::member::{
    MemberCreated, MemberEvent, MemberRoleChanged, MemberStatusChanged, MemberUpdated, UserLink,
};
use talkwai_domain::state::Stamp;
use talkwai_domain::task::{
    TaskAgentLinked, TaskAssigned, TaskCompleted, TaskCreated, TaskEnded, TaskEvent, TaskFailed,
    TaskMetadataSet, TaskOutcome, TaskUpdated,
};
use talkwai_domain::tenant::{
    ErasureToken, TenantCreated, TenantEvent, TenantStatusChanged, TenantUpdated,
};
use talkwai_domain::user::{UserEmailSet, UserEvent};
use talkwai_domain::values::{
    Address, CompanyDomain, Content, Description, DurationSecs, Email, JsonObject, Name,
    OutcomeSummary, Phone, Reason, Subject, Timestamp, TranscriptRef,
};
use talkwai_domain::{Event, GuardEvent};
use uuid::Uuid;

/// The sample tenant (Acme Dental).
pub const TENANT: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_1e01);
/// The sample member (Jane Doe, owner).
pub const MEMBER: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_2e02);
/// A second sample member (Sam Lee, user), for reassignment.
pub const MEMBER_2: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_2e03);
/// The sample admin (Alex Admin, superadmin).
pub const ADMIN: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_3e04);
/// The sample agent (Reception voice agent).
pub const AGENT: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_4e05);
/// The sample task (a call).
pub const TASK: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_5e06);
/// The sample `$users` identity.
pub const USER: Uuid = Uuid::from_u128(0x0190_7c1e_5a3b_7d4e_8f21_3c6a_9b0d_6e07);
/// The sample erasure token (issued by the sample suspension).
pub const ERASURE_TOKEN: &str = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c";
/// The sample time: 2025-07-01T09:00:00Z, epoch milliseconds.
pub const AT: i64 = 1_751_360_400_000;

fn name(s: &str) -> Name {
    Name::parse(s).expect("sample name is valid")
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("sample email is valid")
}

fn json_object(s: &str) -> JsonObject {
    JsonObject::parse(s).expect("sample json object is valid")
}

fn address(s: &str) -> Address {
    Address::parse(s).expect("sample address is valid")
}

fn reason(s: &str) -> Reason {
    Reason::parse(s).expect("sample reason is valid")
}

fn outcome(summary: &str, secs: f64, transcript: Option<&str>) -> TaskOutcome {
    TaskOutcome {
        summary: OutcomeSummary::parse(summary).expect("sample summary is valid"),
        duration_secs: Some(DurationSecs::parse(secs).expect("sample duration is valid")),
        transcript_ref: transcript.map(|t| TranscriptRef::parse(t).expect("sample ref is valid")),
    }
}

fn at(minutes: i64) -> Timestamp {
    Timestamp(AT + minutes * 60_000)
}

const PERMISSIONS: &str = r#"{"allow":["tenant.*","task.*"],"deny":["admin.delete"]}"#;
const CONFIGURATION: &str = r#"{"voice":"alloy","language":"en-US","greeting":"Thanks for calling Acme Dental, how can I help?"}"#;
const METADATA: &str = r#"{"patientRef":"P-10293","appointment":"2025-07-08T14:30:00Z"}"#;

/// One example body per command action, keyed `<aggregate>.<action>`, in the seed's words
/// (the `createTenant` / `createMember` / `createTask` shapes, camelCase).
pub fn command_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "tenant.create",
            json!({ "id": TENANT, "name": "Acme Dental", "domain": "acme-dental.com" }),
        ),
        (
            "tenant.update",
            json!({ "id": TENANT, "name": "Acme Dental Group", "domain": null }),
        ),
        (
            "tenant.setStatus",
            json!({ "id": TENANT, "status": "suspended", "reason": "invoice overdue" }),
        ),
        ("tenant.delete", json!({ "id": TENANT })),
        (
            "tenant.erase",
            json!({ "id": TENANT, "confirmationToken": ERASURE_TOKEN }),
        ),
        (
            "member.create",
            json!({
                "id": MEMBER, "tenant": TENANT, "firstName": "Jane", "lastName": "Doe",
                "email": "jane.doe@acme-dental.com", "phone": "+15550001111", "role": "owner",
            }),
        ),
        (
            "member.update",
            json!({ "id": MEMBER, "lastName": "Doe-Smith", "phone": null }),
        ),
        ("member.setRole", json!({ "id": MEMBER, "role": "manager" })),
        (
            "member.setStatus",
            json!({ "id": MEMBER, "status": "inactive" }),
        ),
        ("member.linkUser", json!({ "id": MEMBER, "user": USER })),
        ("member.unlinkUser", json!({ "id": MEMBER })),
        ("member.delete", json!({ "id": MEMBER })),
        ("member.erase", json!({ "id": MEMBER })),
        (
            "admin.create",
            json!({
                "id": ADMIN, "firstName": "Alex", "lastName": "Admin",
                "email": "alex@talkwai.example", "role": "superadmin",
                "permissions": PERMISSIONS, "user": USER,
            }),
        ),
        (
            "admin.update",
            json!({ "id": ADMIN, "firstName": "Alexandra" }),
        ),
        ("admin.setRole", json!({ "id": ADMIN, "role": "support" })),
        (
            "admin.setPermissions",
            json!({ "id": ADMIN, "permissions": r#"{"allow":["task.*"]}"# }),
        ),
        (
            "admin.setStatus",
            json!({ "id": ADMIN, "status": "inactive" }),
        ),
        ("admin.linkUser", json!({ "id": ADMIN, "user": USER })),
        ("admin.unlinkUser", json!({ "id": ADMIN })),
        ("admin.delete", json!({ "id": ADMIN })),
        ("admin.erase", json!({ "id": ADMIN })),
        (
            "agent.create",
            json!({
                "id": AGENT, "tenant": TENANT, "name": "Reception",
                "description": "answers the front desk line", "type": "voice",
                "configuration": CONFIGURATION, "status": "training",
            }),
        ),
        (
            "agent.update",
            json!({ "id": AGENT, "name": "Front Desk", "description": null }),
        ),
        (
            "agent.configure",
            json!({ "id": AGENT, "configuration": r#"{"voice":"verse","language":"en-GB"}"# }),
        ),
        (
            "agent.setStatus",
            json!({ "id": AGENT, "status": "active" }),
        ),
        ("agent.delete", json!({ "id": AGENT })),
        (
            "task.create",
            json!({
                "id": TASK, "tenant": TENANT, "type": "call", "priority": "high",
                "fromAddress": "+15550001111", "toAddress": "+15550002222",
                "subject": "Confirm Tuesday appointment",
                "content": "Call the patient to confirm the 2:30 pm cleaning.",
                "metadata": METADATA, "scheduledAt": AT + 3_600_000,
                "agent": AGENT, "assignedTo": MEMBER,
            }),
        ),
        (
            "task.update",
            json!({
                "id": TASK, "priority": "urgent", "subject": "Confirm appointment today",
                "content": null, "scheduledAt": null,
            }),
        ),
        ("task.setMetadata", json!({ "id": TASK, "metadata": null })),
        ("task.linkAgent", json!({ "id": TASK, "agent": AGENT })),
        ("task.unlinkAgent", json!({ "id": TASK })),
        ("task.assign", json!({ "id": TASK, "assignedTo": MEMBER_2 })),
        ("task.unassign", json!({ "id": TASK })),
        ("task.start", json!({ "id": TASK })),
        (
            "task.complete",
            json!({
                "id": TASK,
                "outcome": {
                    "summary": "Confirmed the appointment on July 8 at 14:30",
                    "durationSecs": 94.5, "transcriptRef": "transcripts/2025/07/01/5e06.json",
                },
            }),
        ),
        (
            "task.fail",
            json!({
                "id": TASK, "reason": "no answer after 3 attempts",
                "outcome": { "summary": "Voicemail each time; left no message", "durationSecs": 61 },
            }),
        ),
        (
            "task.cancel",
            json!({ "id": TASK, "reason": "patient rescheduled online" }),
        ),
        ("task.retry", json!({ "id": TASK })),
        ("task.delete", json!({ "id": TASK })),
        ("task.eraseContent", json!({ "id": TASK })),
        (
            "user.create",
            json!({ "id": USER, "email": "jane.doe@acme-dental.com" }),
        ),
        (
            "user.update",
            json!({ "id": USER, "email": "jane@acme-dental.com" }),
        ),
        ("user.delete", json!({ "id": USER })),
        ("user.erase", json!({ "id": USER })),
    ]
}

/// One example of every event the domain emits, in a plausible order.
pub fn events() -> Vec<Event> {
    let stamp = |minutes| Stamp { at: at(minutes) };
    let user_link = |minutes| UserLink {
        user: UserId(USER),
        at: at(minutes),
    };
    let mut events: Vec<Event> = vec![
        TenantEvent::Created(TenantCreated {
            name: name("Acme Dental"),
            domain: Some(CompanyDomain::parse("acme-dental.com").expect("sample domain")),
            status: TenantStatus::Active,
            at: at(0),
        }),
        TenantEvent::Updated(TenantUpdated {
            name: Some(name("Acme Dental Group")),
            domain: Some(None),
            at: at(1),
        }),
        TenantEvent::StatusChanged(TenantStatusChanged {
            status: TenantStatus::Suspended,
            previous: TenantStatus::Active,
            reason: Some(reason("invoice overdue")),
            erasure_token: Some(ErasureToken(ERASURE_TOKEN.into())),
            at: at(2),
        }),
        TenantEvent::Erased(stamp(3)),
        TenantEvent::Deleted(stamp(3)),
    ]
    .into_iter()
    .map(Event::Tenant)
    .collect();
    events.extend(
        [
            MemberEvent::Created(MemberCreated {
                first_name: name("Jane"),
                last_name: name("Doe"),
                email: email("jane.doe@acme-dental.com"),
                phone: Some(Phone::parse("+15550001111").expect("sample phone")),
                role: MemberRole::Owner,
                status: MemberStatus::Active,
                user: None,
                at: at(0),
            }),
            MemberEvent::Updated(MemberUpdated {
                first_name: None,
                last_name: Some(name("Doe-Smith")),
                email: None,
                phone: Some(None),
                at: at(1),
            }),
            MemberEvent::RoleChanged(MemberRoleChanged {
                role: MemberRole::Manager,
                at: at(2),
            }),
            MemberEvent::StatusChanged(MemberStatusChanged {
                status: MemberStatus::Inactive,
                at: at(3),
            }),
            MemberEvent::UserLinked(user_link(4)),
            MemberEvent::UserUnlinked(user_link(5)),
            MemberEvent::Erased(stamp(6)),
            MemberEvent::Deleted(stamp(6)),
        ]
        .map(Event::Member),
    );
    events.extend(
        [
            AdminEvent::Created(AdminCreated {
                first_name: name("Alex"),
                last_name: name("Admin"),
                email: email("alex@talkwai.example"),
                role: AdminRole::Superadmin,
                permissions: json_object(PERMISSIONS),
                status: AdminStatus::Active,
                user: Some(UserId(USER)),
                at: at(0),
            }),
            AdminEvent::Updated(AdminUpdated {
                first_name: Some(name("Alexandra")),
                last_name: None,
                email: None,
                at: at(1),
            }),
            AdminEvent::RoleChanged(AdminRoleChanged {
                role: AdminRole::Support,
                at: at(2),
            }),
            AdminEvent::PermissionsChanged(AdminPermissionsChanged {
                permissions: json_object(r#"{"allow":["task.*"]}"#),
                at: at(3),
            }),
            AdminEvent::StatusChanged(AdminStatusChanged {
                status: AdminStatus::Inactive,
                at: at(4),
            }),
            AdminEvent::UserLinked(user_link(5)),
            AdminEvent::UserUnlinked(user_link(6)),
            AdminEvent::Erased(stamp(7)),
            AdminEvent::Deleted(stamp(7)),
        ]
        .map(Event::Admin),
    );
    events.extend(
        [
            AgentEvent::Created(AgentCreated {
                name: name("Reception"),
                description: Some(
                    Description::parse("answers the front desk line").expect("sample text"),
                ),
                agent_type: AgentType::Voice,
                configuration: json_object(CONFIGURATION),
                status: AgentStatus::Training,
                at: at(0),
            }),
            AgentEvent::Updated(AgentUpdated {
                name: Some(name("Front Desk")),
                description: Some(None),
                at: at(1),
            }),
            AgentEvent::Configured(AgentConfigured {
                configuration: json_object(r#"{"voice":"verse","language":"en-GB"}"#),
                at: at(2),
            }),
            AgentEvent::StatusChanged(AgentStatusChanged {
                status: AgentStatus::Active,
                at: at(3),
            }),
            AgentEvent::Deleted(stamp(4)),
        ]
        .map(Event::Agent),
    );
    events.extend(
        [
            TaskEvent::Created(TaskCreated {
                task_type: TaskType::Call,
                status: TaskStatus::Pending,
                priority: TaskPriority::High,
                from_address: address("+15550001111"),
                to_address: address("+15550002222"),
                subject: Some(Subject::parse("Confirm Tuesday appointment").expect("sample")),
                content: Some(
                    Content::parse("Call the patient to confirm the 2:30 pm cleaning.")
                        .expect("sample text"),
                ),
                metadata: Some(json_object(METADATA)),
                scheduled_at: Some(at(60)),
                agent: Some(AgentId(AGENT)),
                assigned_to: Some(MemberId(MEMBER)),
                created_by: Some(MemberId(MEMBER)),
                created_by_admin: None,
                at: at(0),
            }),
            TaskEvent::Updated(TaskUpdated {
                task_type: None,
                priority: Some(TaskPriority::Urgent),
                from_address: None,
                to_address: None,
                subject: Some(Some(
                    Subject::parse("Confirm appointment today").expect("sample"),
                )),
                content: Some(None),
                scheduled_at: Some(None),
                at: at(1),
            }),
            TaskEvent::MetadataSet(TaskMetadataSet {
                metadata: None,
                at: at(2),
            }),
            TaskEvent::AgentLinked(TaskAgentLinked {
                agent: AgentId(AGENT),
                at: at(3),
            }),
            TaskEvent::AgentUnlinked(stamp(4)),
            TaskEvent::Assigned(TaskAssigned {
                assigned_to: MemberId(MEMBER_2),
                previous: Some(MemberId(MEMBER)),
                at: at(5),
            }),
            TaskEvent::Unassigned(stamp(6)),
            TaskEvent::Started(stamp(7)),
            TaskEvent::Completed(TaskCompleted {
                outcome: Some(outcome(
                    "Confirmed the appointment on July 8 at 14:30",
                    94.5,
                    Some("transcripts/2025/07/01/5e06.json"),
                )),
                at: at(12),
            }),
            TaskEvent::Failed(TaskFailed {
                reason: Some(reason("no answer after 3 attempts")),
                outcome: Some(outcome("Voicemail each time; left no message", 61.0, None)),
                at: at(13),
            }),
            TaskEvent::Cancelled(TaskEnded {
                reason: Some(reason("patient rescheduled online")),
                at: at(14),
            }),
            TaskEvent::Retried(stamp(15)),
            TaskEvent::ContentErased(stamp(16)),
            TaskEvent::Deleted(stamp(16)),
        ]
        .map(Event::Task),
    );
    events.extend(
        [
            UserEvent::Created(UserEmailSet {
                email: email("jane.doe@acme-dental.com"),
                at: at(0),
            }),
            UserEvent::Updated(UserEmailSet {
                email: email("jane@acme-dental.com"),
                at: at(1),
            }),
            UserEvent::Erased(stamp(2)),
            UserEvent::Deleted(stamp(2)),
        ]
        .map(Event::User),
    );
    events
}

/// One example of each guard event.
pub fn guard_events() -> Vec<GuardEvent> {
    vec![
        GuardEvent::Claimed {
            owner: MEMBER,
            at: at(0),
        },
        GuardEvent::Released {
            owner: MEMBER,
            at: at(6),
        },
    ]
}
