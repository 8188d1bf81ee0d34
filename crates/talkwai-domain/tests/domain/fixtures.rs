//! Fixed ids, clocks, entities, facts, actors and value constructors shared by the tests.

use uuid::Uuid;

use talkwai_domain::agent::Agent;
use talkwai_domain::enums::{
    AdminRole, AgentStatus, AgentType, MemberRole, MemberStatus, TenantStatus,
};
use talkwai_domain::error::EntityKind;
use talkwai_domain::ids::{AdminId, AgentId, MemberId, TaskId, TenantId, UserId};
use talkwai_domain::member::Member;
use talkwai_domain::tenant::Tenant;
use talkwai_domain::user::User;
use talkwai_domain::values::{
    Address, CompanyDomain, Content, Description, Email, JsonObject, Name, Phone, Reason, Subject,
    Timestamp,
};
use talkwai_domain::{Actor, AggregateRef, Facts};

/// When the given history happened.
pub const T0: Timestamp = Timestamp(1_600_000_000_000);
/// The decider's clock.
pub const NOW: Timestamp = Timestamp(1_700_000_000_000);
/// The fresh random value every test decision gets (a suspension's erasure token).
pub const NONCE: uuid::Uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
/// The erasure token [`NONCE`] makes.
pub const NONCE_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The tenant most tests act in.
pub fn tenant_a() -> TenantId {
    TenantId(Uuid::from_u128(0xA))
}
/// Another tenant, for cross-tenant checks.
pub fn tenant_b() -> TenantId {
    TenantId(Uuid::from_u128(0xB))
}
/// Member `n`.
pub fn member_id(n: u128) -> MemberId {
    MemberId(Uuid::from_u128(0x1000 + n))
}
/// Admin `n`.
pub fn admin_id(n: u128) -> AdminId {
    AdminId(Uuid::from_u128(0x2000 + n))
}
/// Agent `n`.
pub fn agent_id(n: u128) -> AgentId {
    AgentId(Uuid::from_u128(0x3000 + n))
}
/// Task `n`.
pub fn task_id(n: u128) -> TaskId {
    TaskId(Uuid::from_u128(0x4000 + n))
}
/// User `n`.
pub fn user_id(n: u128) -> UserId {
    UserId(Uuid::from_u128(0x5000 + n))
}

/// Address of a tenant aggregate.
pub fn tenant_ref(id: TenantId) -> AggregateRef {
    AggregateRef {
        kind: EntityKind::Tenant,
        tenant: Some(id),
        id: id.0,
    }
}
/// Address of a member of tenant A.
pub fn member_ref(id: MemberId) -> AggregateRef {
    AggregateRef {
        kind: EntityKind::Member,
        tenant: Some(tenant_a()),
        id: id.0,
    }
}
/// Address of an admin.
pub fn admin_ref(id: AdminId) -> AggregateRef {
    AggregateRef {
        kind: EntityKind::Admin,
        tenant: None,
        id: id.0,
    }
}
/// Address of an agent of tenant A.
pub fn agent_ref(id: AgentId) -> AggregateRef {
    AggregateRef {
        kind: EntityKind::Agent,
        tenant: Some(tenant_a()),
        id: id.0,
    }
}
/// Address of a task of tenant A.
pub fn task_ref(id: TaskId) -> AggregateRef {
    AggregateRef {
        kind: EntityKind::Task,
        tenant: Some(tenant_a()),
        id: id.0,
    }
}
/// Address of a user.
pub fn user_ref(id: UserId) -> AggregateRef {
    AggregateRef {
        kind: EntityKind::User,
        tenant: None,
        id: id.0,
    }
}

/// A valid name.
pub fn name(s: &str) -> Name {
    Name::parse(s).expect("test name is valid")
}
/// A valid email.
pub fn email(s: &str) -> Email {
    Email::parse(s).expect("test email is valid")
}
/// A valid phone.
pub fn phone(s: &str) -> Phone {
    Phone::parse(s).expect("test phone is valid")
}
/// A valid address.
pub fn addr(s: &str) -> Address {
    Address::parse(s).expect("test address is valid")
}
/// A valid JSON object text.
pub fn json(s: &str) -> JsonObject {
    JsonObject::parse(s).expect("test json is a valid object")
}
/// A valid domain.
pub fn domain(s: &str) -> CompanyDomain {
    CompanyDomain::parse(s).expect("test domain is valid")
}
/// A valid subject.
pub fn subject(s: &str) -> Subject {
    Subject::parse(s).expect("test subject is valid")
}
/// A valid content.
pub fn content(s: &str) -> Content {
    Content::parse(s).expect("test content is valid")
}
/// A valid description.
pub fn description(s: &str) -> Description {
    Description::parse(s).expect("test description is valid")
}
/// A valid reason.
pub fn reason(s: &str) -> Reason {
    Reason::parse(s).expect("test reason is valid")
}

/// A tenant as a fact.
pub fn tenant_entity(id: TenantId, status: TenantStatus, dom: Option<&str>) -> Tenant {
    Tenant {
        id,
        name: name("Acme"),
        domain: dom.map(domain),
        status,
        created_at: T0,
        updated_at: T0,
        erasure_token: None,
        erased_at: None,
    }
}
/// A member as a fact.
pub fn member_entity(
    id: MemberId,
    tenant: TenantId,
    role: MemberRole,
    status: MemberStatus,
) -> Member {
    Member {
        id,
        tenant,
        first_name: name("Ada"),
        last_name: name("Lovelace"),
        email: email(&format!("m{}@acme.com", id.0.as_u128())),
        phone: None,
        role,
        status,
        user: None,
        created_at: T0,
        updated_at: T0,
        erased: false,
    }
}
/// An agent as a fact.
pub fn agent_entity(id: AgentId, tenant: TenantId, status: AgentStatus) -> Agent {
    Agent {
        id,
        tenant,
        name: name("Voicebot"),
        description: None,
        agent_type: AgentType::Voice,
        configuration: JsonObject::empty(),
        status,
        created_at: T0,
        updated_at: T0,
    }
}
/// A user as a fact.
pub fn user_entity(id: UserId) -> User {
    User {
        id,
        email: email(&format!("u{}@example.com", id.0.as_u128())),
        created_at: T0,
        updated_at: T0,
        erased: false,
    }
}

/// Facts holding the given tenants.
pub fn facts_with(tenants: impl IntoIterator<Item = Tenant>) -> Facts {
    let mut facts = Facts::default();
    for t in tenants {
        facts.tenants.insert(t.id, t);
    }
    facts
}
/// Facts holding an active tenant A without a domain.
pub fn facts_a() -> Facts {
    facts_with([tenant_entity(tenant_a(), TenantStatus::Active, None)])
}

/// An active member actor of `tenant`.
pub fn member_actor(member: MemberId, tenant: TenantId, role: MemberRole) -> Actor {
    Actor::Member {
        user: user_id(member.0.as_u128()),
        member,
        tenant,
        role,
        active: true,
    }
}
/// An active admin actor.
pub fn admin_actor(role: AdminRole, permissions: Option<&str>) -> Actor {
    Actor::Admin {
        user: user_id(0x99),
        admin: admin_id(0x99),
        role,
        permissions: permissions.map(json),
        active: true,
    }
}
