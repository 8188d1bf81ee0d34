//! Versioned event bodies: every variant round-trips through `encode`/`decode`, and bad bodies
//! get the right `DecodeError`.

use serde_json::json;

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
use talkwai_domain::member::{
    MemberCreated, MemberEvent, MemberRoleChanged, MemberStatusChanged, MemberUpdated, UserLink,
};
use talkwai_domain::state::Stamp;
use talkwai_domain::task::{
    TaskAgentLinked, TaskAssigned, TaskCompleted, TaskCreated, TaskEnded, TaskEvent, TaskFailed,
    TaskMetadataSet, TaskUpdated,
};
use talkwai_domain::tenant::{
    ErasureToken, TenantCreated, TenantEvent, TenantStatusChanged, TenantUpdated,
};
use talkwai_domain::user::{UserEmailSet, UserEvent};
use talkwai_domain::{DecodeError, Event, EventBody};

use crate::fixtures::*;

/// One value of every event variant (with optional fields both set and cleared where the
/// variant has them).
pub fn all_events() -> Vec<Event> {
    let at = NOW;
    let stamp = Stamp { at };
    let link = UserLink {
        user: user_id(1),
        at,
    };
    vec![
        Event::Tenant(TenantEvent::Created(TenantCreated {
            name: name("Acme"),
            domain: Some(domain("acme.com")),
            status: TenantStatus::Active,
            at,
        })),
        Event::Tenant(TenantEvent::Created(TenantCreated {
            name: name("Acme"),
            domain: None,
            status: TenantStatus::Active,
            at,
        })),
        Event::Tenant(TenantEvent::Updated(TenantUpdated {
            name: Some(name("Acme 2")),
            domain: Some(None),
            at,
        })),
        Event::Tenant(TenantEvent::Updated(TenantUpdated {
            name: None,
            domain: Some(Some(domain("acme.io"))),
            at,
        })),
        Event::Tenant(TenantEvent::StatusChanged(TenantStatusChanged {
            status: TenantStatus::Suspended,
            previous: TenantStatus::Active,
            reason: Some(reason("billing")),
            erasure_token: Some(ErasureToken::from_nonce(NONCE)),
            at,
        })),
        Event::Tenant(TenantEvent::Erased(stamp)),
        Event::Tenant(TenantEvent::Deleted(stamp)),
        Event::Member(MemberEvent::Created(MemberCreated {
            first_name: name("Ada"),
            last_name: name("Lovelace"),
            email: email("ada@acme.com"),
            phone: Some(phone("+15550001111")),
            role: MemberRole::Owner,
            status: MemberStatus::Active,
            user: Some(user_id(1)),
            at,
        })),
        Event::Member(MemberEvent::Updated(MemberUpdated {
            first_name: Some(name("A")),
            last_name: None,
            email: Some(email("a@acme.com")),
            phone: Some(None),
            at,
        })),
        Event::Member(MemberEvent::Updated(MemberUpdated {
            first_name: None,
            last_name: Some(name("L")),
            email: None,
            phone: Some(Some(phone("+4930123456"))),
            at,
        })),
        Event::Member(MemberEvent::RoleChanged(MemberRoleChanged {
            role: MemberRole::User,
            at,
        })),
        Event::Member(MemberEvent::StatusChanged(MemberStatusChanged {
            status: MemberStatus::Inactive,
            at,
        })),
        Event::Member(MemberEvent::UserLinked(link)),
        Event::Member(MemberEvent::UserUnlinked(link)),
        Event::Member(MemberEvent::Deleted(stamp)),
        Event::Admin(AdminEvent::Created(AdminCreated {
            first_name: name("Grace"),
            last_name: name("Hopper"),
            email: email("grace@talkwai.com"),
            role: AdminRole::Superadmin,
            permissions: json(r#"{"deny":["admin.delete"]}"#),
            status: AdminStatus::Active,
            user: None,
            at,
        })),
        Event::Admin(AdminEvent::Updated(AdminUpdated {
            first_name: None,
            last_name: None,
            email: Some(email("g@talkwai.com")),
            at,
        })),
        Event::Admin(AdminEvent::RoleChanged(AdminRoleChanged {
            role: AdminRole::Support,
            at,
        })),
        Event::Admin(AdminEvent::PermissionsChanged(AdminPermissionsChanged {
            permissions: json("{}"),
            at,
        })),
        Event::Admin(AdminEvent::StatusChanged(AdminStatusChanged {
            status: AdminStatus::Inactive,
            at,
        })),
        Event::Admin(AdminEvent::UserLinked(link)),
        Event::Admin(AdminEvent::UserUnlinked(link)),
        Event::Admin(AdminEvent::Deleted(stamp)),
        Event::Agent(AgentEvent::Created(AgentCreated {
            name: name("Bot"),
            description: Some(description("a bot")),
            agent_type: AgentType::Email,
            configuration: json(r#"{"a":{"b":[1,2]}}"#),
            status: AgentStatus::Training,
            at,
        })),
        Event::Agent(AgentEvent::Updated(AgentUpdated {
            name: None,
            description: Some(None),
            at,
        })),
        Event::Agent(AgentEvent::Configured(AgentConfigured {
            configuration: json(r#"{"x":true}"#),
            at,
        })),
        Event::Agent(AgentEvent::StatusChanged(AgentStatusChanged {
            status: AgentStatus::Inactive,
            at,
        })),
        Event::Agent(AgentEvent::Deleted(stamp)),
        Event::Task(TaskEvent::Created(TaskCreated {
            task_type: TaskType::Other,
            status: TaskStatus::Pending,
            priority: TaskPriority::Urgent,
            from_address: addr("+15550001111"),
            to_address: addr("bob@example.com"),
            subject: Some(subject("s")),
            content: Some(content("c")),
            metadata: Some(json(r#"{"m":1}"#)),
            scheduled_at: Some(T0),
            agent: Some(agent_id(1)),
            assigned_to: Some(member_id(1)),
            created_by: Some(member_id(2)),
            created_by_admin: Some(admin_id(1)),
            at,
        })),
        Event::Task(TaskEvent::Updated(TaskUpdated {
            task_type: Some(TaskType::Email),
            priority: Some(TaskPriority::Low),
            from_address: Some(addr("a@example.com")),
            to_address: Some(addr("+15550009999")),
            subject: Some(None),
            content: Some(None),
            scheduled_at: Some(None),
            at,
        })),
        Event::Task(TaskEvent::MetadataSet(TaskMetadataSet {
            metadata: None,
            at,
        })),
        Event::Task(TaskEvent::AgentLinked(TaskAgentLinked {
            agent: agent_id(2),
            at,
        })),
        Event::Task(TaskEvent::AgentUnlinked(stamp)),
        Event::Task(TaskEvent::Assigned(TaskAssigned {
            assigned_to: member_id(3),
            previous: Some(member_id(1)),
            at,
        })),
        Event::Task(TaskEvent::Unassigned(stamp)),
        Event::Task(TaskEvent::Started(stamp)),
        Event::Task(TaskEvent::Completed(TaskCompleted { outcome: None, at })),
        Event::Task(TaskEvent::Failed(TaskFailed {
            reason: Some(reason("busy")),
            outcome: None,
            at,
        })),
        Event::Task(TaskEvent::Cancelled(TaskEnded { reason: None, at })),
        Event::Task(TaskEvent::Retried(stamp)),
        Event::Task(TaskEvent::Deleted(stamp)),
        Event::User(UserEvent::Created(UserEmailSet {
            email: email("u@example.com"),
            at,
        })),
        Event::User(UserEvent::Updated(UserEmailSet {
            email: email("v@example.com"),
            at,
        })),
        Event::User(UserEvent::Deleted(stamp)),
    ]
}

#[test]
fn every_event_round_trips_through_its_body() {
    let mut types = std::collections::BTreeSet::new();
    for event in all_events() {
        let body = event.encode();
        assert_eq!(
            body.version,
            talkwai_domain::current_version(&body.event_type)
        );
        assert_eq!(body.event_type, event.type_name());
        let (aggregate, _) = body
            .event_type
            .split_once('.')
            .expect("type is <aggregate>.<name>");
        assert_eq!(aggregate, event.kind().as_str());
        assert!(body.data.is_object(), "data is an object: {body:?}");
        // and through the wire text
        let text = serde_json::to_string(&body).expect("body serializes");
        let back: EventBody = serde_json::from_str(&text).expect("body deserializes");
        assert_eq!(back, body);
        assert_eq!(Event::decode(&back), Ok(event.clone()), "{text}");
        if let Event::Task(t) = &event {
            assert_eq!(t.type_name(), body.event_type);
        }
        types.insert(body.event_type);
    }
    // every variant, once: 5 tenant + 7 member + 8 admin + 5 agent + 13 task + 3 user
    assert_eq!(types.len(), 41, "{types:#?}");
}

#[test]
fn a_body_is_exactly_type_version_data() {
    let body = all_events()[0].encode();
    let value = serde_json::to_value(&body).expect("serializes");
    assert_eq!(
        value,
        json!({"type": "tenant.created", "version": 1, "data": {
            "name": "Acme", "domain": "acme.com", "status": "active", "at": NOW.0
        }})
    );
    let extra = json!({"type": "tenant.deleted", "version": 1, "data": {"at": 1}, "x": 1});
    assert!(serde_json::from_value::<EventBody>(extra).is_err());
}

/// An event body of `event_type` at `version` holding `data`.
pub fn body(event_type: &str, version: u32, data: serde_json::Value) -> EventBody {
    EventBody {
        event_type: event_type.into(),
        version,
        data,
    }
}

#[test]
fn unknown_types_are_unknown_type() {
    for ty in [
        "task.exploded",
        "widget.created",
        "taskcreated",
        "",
        "guard.claimed",
        "Task.created",
    ] {
        assert_eq!(
            Event::decode(&body(ty, 1, json!({"at": 1}))),
            Err(DecodeError::UnknownType(ty.into())),
            "{ty}"
        );
    }
}

#[test]
fn unknown_versions_are_unknown_version() {
    for version in [0, 2, 99] {
        assert_eq!(
            Event::decode(&body("task.started", version, json!({"at": 1}))),
            Err(DecodeError::UnknownVersion {
                event_type: "task.started".into(),
                version
            })
        );
    }
}

#[test]
fn bad_data_is_invalid_data() {
    let cases = [
        ("task.started", json!(null)),
        ("task.started", json!({})),
        ("task.started", json!({"at": "yesterday"})),
        ("task.started", json!({"at": 1, "extra": true})),
        (
            "tenant.created",
            json!({"name": "", "status": "active", "at": 1}),
        ),
        (
            "tenant.created",
            json!({"name": "Acme", "status": "bankrupt", "at": 1}),
        ),
        (
            "member.roleChanged",
            json!({"role": "member.roleChanged", "at": 1}),
        ),
        ("user.created", json!({"email": "not-an-email", "at": 1})),
        (
            "admin.permissionsChanged",
            json!({"permissions": "[1,2]", "at": 1}),
        ),
        (
            "task.created",
            json!({"type": "fax", "status": "pending", "priority": "low",
                   "fromAddress": "+15550001111", "toAddress": "+15550002222", "at": 1}),
        ),
        (
            "task.assigned",
            json!({"assignedTo": "not-a-uuid", "at": 1}),
        ),
    ];
    for (ty, data) in cases {
        match Event::decode(&body(ty, 1, data.clone())) {
            Err(DecodeError::InvalidData {
                event_type,
                message,
            }) => {
                assert_eq!(event_type, ty);
                assert!(!message.is_empty());
            }
            other => panic!("{ty} {data}: expected invalid data, got {other:?}"),
        }
    }
}

#[test]
fn decode_errors_display_lowercase() {
    let e = Event::decode(&body("task.exploded", 1, json!({}))).expect_err("unknown");
    assert_eq!(e.to_string(), "unknown event type task.exploded");
    let e = Event::decode(&body("task.started", 7, json!({}))).expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "unknown version 7 of event type task.started"
    );
}
