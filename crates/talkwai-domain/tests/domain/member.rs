//! `member.*` commands.

use talkwai_domain::enums::{MemberRole, MemberStatus, TenantStatus};
use talkwai_domain::member::{
    CreateMember, LinkUser, MemberCommand, MemberCreated, MemberEvent, MemberRoleChanged,
    MemberStatusChanged, MemberUpdated, SetMemberRole, SetMemberStatus, UpdateMember, UserLink,
};
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::{AggregateState, Command, ErrorCode, Event, Facts, GuardChange, GuardKey};

use crate::fixtures::*;
use crate::scenario::Scenario;

fn id() -> talkwai_domain::ids::MemberId {
    member_id(1)
}

fn email_key(e: &str) -> GuardKey {
    GuardKey::MemberEmail {
        tenant: tenant_a(),
        email: email(e),
    }
}

/// Ada Lovelace, manager of tenant A, created at [`T0`] (linked to `user`).
pub(crate) fn created_with(user: Option<talkwai_domain::ids::UserId>) -> Event {
    created_at(user, T0)
}

fn created_at(
    user: Option<talkwai_domain::ids::UserId>,
    at: talkwai_domain::values::Timestamp,
) -> Event {
    Event::Member(MemberEvent::Created(MemberCreated {
        first_name: name("Ada"),
        last_name: name("Lovelace"),
        email: email("ada@acme.com"),
        phone: Some(phone("+15550001111")),
        role: MemberRole::Manager,
        status: MemberStatus::Active,
        user,
        at,
    }))
}

fn created() -> Event {
    created_with(None)
}

fn deleted() -> Event {
    Event::Member(MemberEvent::Deleted(Stamp { at: T0 }))
}

fn create_body() -> CreateMember {
    CreateMember {
        id: id(),
        tenant: None,
        first_name: name("Ada"),
        last_name: name("Lovelace"),
        email: email("Ada@Acme.com"),
        phone: Some(phone("+1 555 000 1111")),
        role: MemberRole::Manager,
        user: None,
    }
}

fn create(body: CreateMember) -> Command {
    Command::Member(MemberCommand::Create(body))
}

fn update() -> UpdateMember {
    UpdateMember {
        id: id(),
        first_name: None,
        last_name: None,
        email: None,
        phone: None,
    }
}

fn cmd(c: MemberCommand) -> Command {
    Command::Member(c)
}

fn link(user: talkwai_domain::ids::UserId) -> Command {
    cmd(MemberCommand::LinkUser(LinkUser { id: id(), user }))
}

fn facts_with_user() -> Facts {
    let mut facts = facts_a();
    facts.users.insert(user_id(1), user_entity(user_id(1)));
    facts.users.insert(user_id(2), user_entity(user_id(2)));
    facts
}

fn all_commands() -> Vec<Command> {
    vec![
        cmd(MemberCommand::Update(UpdateMember {
            first_name: Some(name("Bob")),
            ..update()
        })),
        cmd(MemberCommand::SetRole(SetMemberRole {
            id: id(),
            role: MemberRole::Owner,
        })),
        cmd(MemberCommand::SetStatus(SetMemberStatus {
            id: id(),
            status: MemberStatus::Inactive,
        })),
        link(user_id(1)),
        cmd(MemberCommand::UnlinkUser(ById { id: id() })),
        cmd(MemberCommand::Delete(ById { id: id() })),
        cmd(MemberCommand::Erase(ById { id: id() })),
    ]
}

#[test]
fn create_emits_created_and_claims_the_email() {
    Scenario::empty(member_ref(id()))
        .with_facts(facts_a())
        .when(create(create_body()))
        .then_events([Event::Member(MemberEvent::Created(MemberCreated {
            first_name: name("Ada"),
            last_name: name("Lovelace"),
            email: email("ada@acme.com"),
            phone: Some(phone("+15550001111")),
            role: MemberRole::Manager,
            status: MemberStatus::Active,
            user: None,
            at: NOW,
        }))])
        .then_guards([GuardChange::claim(email_key("ada@acme.com"), id().0, NOW)]);
}

#[test]
fn create_with_user_claims_the_user_link() {
    Scenario::empty(member_ref(id()))
        .with_facts(facts_with_user())
        .when(create(CreateMember {
            user: Some(user_id(1)),
            tenant: Some(tenant_a()),
            ..create_body()
        }))
        .then_guards([
            GuardChange::claim(email_key("ada@acme.com"), id().0, NOW),
            GuardChange::claim(GuardKey::UserMember(user_id(1)), id().0, NOW),
        ])
        .then_events([created_at(Some(user_id(1)), NOW)]);
}

#[test]
fn create_rejections() {
    // re-create, also after delete
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(create(create_body()))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    Scenario::given(member_ref(id()), [created(), deleted()])
        .with_facts(facts_a())
        .when(create(create_body()))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    // email held by another member of the tenant
    let mut facts = facts_a();
    facts
        .guards
        .insert(email_key("ada@acme.com"), Some(member_id(2).0));
    Scenario::empty(member_ref(id()))
        .with_facts(facts)
        .when(create(create_body()))
        .then_error(ErrorCode::AlreadyExists, Some("email"));
    // body tenant differs from the subject's
    Scenario::empty(member_ref(id()))
        .with_facts(facts_a())
        .when(create(CreateMember {
            tenant: Some(tenant_b()),
            ..create_body()
        }))
        .then_error(ErrorCode::ValidationFailed, Some("tenant"));
    // tenant not loaded: does not exist
    Scenario::empty(member_ref(id()))
        .when(create(create_body()))
        .then_error(ErrorCode::NotFound, Some("tenant"));
    // user missing
    Scenario::empty(member_ref(id()))
        .with_facts(facts_a())
        .when(create(CreateMember {
            user: Some(user_id(1)),
            ..create_body()
        }))
        .then_error(ErrorCode::NotFound, Some("user"));
    // user already linked to another member
    let mut facts = facts_with_user();
    facts
        .guards
        .insert(GuardKey::UserMember(user_id(1)), Some(member_id(2).0));
    Scenario::empty(member_ref(id()))
        .with_facts(facts)
        .when(create(CreateMember {
            user: Some(user_id(1)),
            ..create_body()
        }))
        .then_error(ErrorCode::AlreadyExists, Some("user"));
}

#[test]
fn create_claim_held_by_the_same_id_is_idempotent() {
    let mut facts = facts_a();
    facts.guards.insert(email_key("ada@acme.com"), Some(id().0));
    Scenario::empty(member_ref(id()))
        .with_facts(facts)
        .when(create(create_body()))
        .then_guards([GuardChange::claim(email_key("ada@acme.com"), id().0, NOW)]);
}

#[test]
fn tenant_domain_restricts_member_emails() {
    let facts = facts_with([tenant_entity(
        tenant_a(),
        TenantStatus::Active,
        Some("acme.com"),
    )]);
    Scenario::empty(member_ref(id()))
        .with_facts(facts.clone())
        .when(create(CreateMember {
            email: email("ada@evil.com"),
            ..create_body()
        }))
        .then_error(ErrorCode::ValidationFailed, Some("email"));
    // look-alike domains are not subdomains
    Scenario::empty(member_ref(id()))
        .with_facts(facts.clone())
        .when(create(CreateMember {
            email: email("ada@notacme.com"),
            ..create_body()
        }))
        .then_error(ErrorCode::ValidationFailed, Some("email"));
    // the domain itself and its subdomains pass
    for ok in ["ada@acme.com", "ada@eu.acme.com"] {
        Scenario::empty(member_ref(id()))
            .with_facts(facts.clone())
            .when(create(CreateMember {
                email: email(ok),
                ..create_body()
            }))
            .then_guards([GuardChange::claim(email_key(ok), id().0, NOW)]);
    }
    // and on update
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts)
        .when(cmd(MemberCommand::Update(UpdateMember {
            email: Some(email("ada@gmail.com")),
            ..update()
        })))
        .then_error(ErrorCode::ValidationFailed, Some("email"));
}

#[test]
fn update_changes_email_claiming_new_and_releasing_old() {
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::Update(UpdateMember {
            first_name: Some(name("Ada")),
            last_name: Some(name("King")),
            email: Some(email("ada.king@acme.com")),
            ..update()
        })))
        .then_events([Event::Member(MemberEvent::Updated(MemberUpdated {
            first_name: None,
            last_name: Some(name("King")),
            email: Some(email("ada.king@acme.com")),
            phone: None,
            at: NOW,
        }))])
        .then_guards([
            GuardChange::claim(email_key("ada.king@acme.com"), id().0, NOW),
            GuardChange::release(email_key("ada@acme.com"), id().0, NOW),
        ]);
}

#[test]
fn update_phone_absent_keeps_null_clears() {
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::Update(UpdateMember {
            phone: Some(None),
            ..update()
        })))
        .then_events([Event::Member(MemberEvent::Updated(MemberUpdated {
            first_name: None,
            last_name: None,
            email: None,
            phone: Some(None),
            at: NOW,
        }))])
        .then_guards([])
        .then_state(|s| {
            let AggregateState::Member(_, _, st) = s else {
                panic!("not a member")
            };
            assert_eq!(st.live().expect("live").phone, None);
        });
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::Update(update())))
        .then_no_events();
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::Update(UpdateMember {
            first_name: Some(name("Ada")),
            email: Some(email("ADA@acme.com")),
            phone: Some(Some(phone("+15550001111"))),
            ..update()
        })))
        .then_no_events();
}

#[test]
fn update_email_taken_by_another_member() {
    let mut facts = facts_a();
    facts
        .guards
        .insert(email_key("bob@acme.com"), Some(member_id(2).0));
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts)
        .when(cmd(MemberCommand::Update(UpdateMember {
            email: Some(email("bob@acme.com")),
            ..update()
        })))
        .then_error(ErrorCode::AlreadyExists, Some("email"));
}

#[test]
fn set_role_and_status() {
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(all_commands()[1].clone())
        .then_events([Event::Member(MemberEvent::RoleChanged(MemberRoleChanged {
            role: MemberRole::Owner,
            at: NOW,
        }))]);
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::SetRole(SetMemberRole {
            id: id(),
            role: MemberRole::Manager,
        })))
        .then_no_events();
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(all_commands()[2].clone())
        .then_events([Event::Member(MemberEvent::StatusChanged(
            MemberStatusChanged {
                status: MemberStatus::Inactive,
                at: NOW,
            },
        ))]);
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::SetStatus(SetMemberStatus {
            id: id(),
            status: MemberStatus::Active,
        })))
        .then_no_events();
}

#[test]
fn link_user() {
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_with_user())
        .when(link(user_id(1)))
        .then_events([Event::Member(MemberEvent::UserLinked(UserLink {
            user: user_id(1),
            at: NOW,
        }))])
        .then_guards([GuardChange::claim(
            GuardKey::UserMember(user_id(1)),
            id().0,
            NOW,
        )]);
    // same user again: no-op
    Scenario::given(member_ref(id()), [created_with(Some(user_id(1)))])
        .with_facts(facts_with_user())
        .when(link(user_id(1)))
        .then_no_events();
    // another user while linked
    Scenario::given(member_ref(id()), [created_with(Some(user_id(1)))])
        .with_facts(facts_with_user())
        .when(link(user_id(2)))
        .then_error(ErrorCode::AlreadyExists, Some("user"));
    // unknown user
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(link(user_id(1)))
        .then_error(ErrorCode::NotFound, Some("user"));
    // user already linked to another member
    let mut facts = facts_with_user();
    facts
        .guards
        .insert(GuardKey::UserMember(user_id(1)), Some(member_id(7).0));
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts)
        .when(link(user_id(1)))
        .then_error(ErrorCode::AlreadyExists, Some("user"));
}

#[test]
fn unlink_user() {
    Scenario::given(member_ref(id()), [created_with(Some(user_id(1)))])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::UnlinkUser(ById { id: id() })))
        .then_events([Event::Member(MemberEvent::UserUnlinked(UserLink {
            user: user_id(1),
            at: NOW,
        }))])
        .then_guards([GuardChange::release(
            GuardKey::UserMember(user_id(1)),
            id().0,
            NOW,
        )]);
    Scenario::given(member_ref(id()), [created()])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::UnlinkUser(ById { id: id() })))
        .then_no_events();
}

#[test]
fn delete_releases_email_and_user_link() {
    Scenario::given(member_ref(id()), [created_with(Some(user_id(1)))])
        .with_facts(facts_a())
        .when(cmd(MemberCommand::Delete(ById { id: id() })))
        .then_events([Event::Member(MemberEvent::Deleted(Stamp { at: NOW }))])
        .then_guards([
            GuardChange::release(email_key("ada@acme.com"), id().0, NOW),
            GuardChange::release(GuardKey::UserMember(user_id(1)), id().0, NOW),
        ]);
}

#[test]
fn every_command_on_a_missing_or_deleted_member_is_not_found() {
    for c in all_commands() {
        Scenario::empty(member_ref(id()))
            .with_facts(facts_with_user())
            .when(c.clone())
            .then_error(ErrorCode::NotFound, None);
        Scenario::given(member_ref(id()), [created(), deleted()])
            .with_facts(facts_with_user())
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}
