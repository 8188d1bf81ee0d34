//! `admin.*` commands.

use talkwai_domain::admin::{
    AdminCommand, AdminCreated, AdminEvent, AdminPermissionsChanged, AdminRoleChanged,
    AdminStatusChanged, AdminUpdated, CreateAdmin, SetAdminPermissions, SetAdminRole,
    SetAdminStatus, UpdateAdmin,
};
use talkwai_domain::enums::{AdminRole, AdminStatus};
use talkwai_domain::ids::{AdminId, UserId};
use talkwai_domain::member::{LinkUser, UserLink};
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::values::{JsonObject, Timestamp};
use talkwai_domain::{Command, ErrorCode, Event, Facts, GuardChange, GuardKey};

use crate::fixtures::*;
use crate::scenario::Scenario;

fn id() -> AdminId {
    admin_id(1)
}

fn created_at(user: Option<UserId>, at: Timestamp) -> Event {
    Event::Admin(AdminEvent::Created(AdminCreated {
        first_name: name("Grace"),
        last_name: name("Hopper"),
        email: email("grace@talkwai.com"),
        role: AdminRole::Admin,
        permissions: JsonObject::empty(),
        status: AdminStatus::Active,
        user,
        at,
    }))
}

fn created() -> Event {
    created_at(None, T0)
}

fn deleted() -> Event {
    Event::Admin(AdminEvent::Deleted(Stamp { at: T0 }))
}

fn cmd(c: AdminCommand) -> Command {
    Command::Admin(c)
}

fn create_body() -> CreateAdmin {
    CreateAdmin {
        id: id(),
        first_name: name("Grace"),
        last_name: name("Hopper"),
        email: email("GRACE@talkwai.com"),
        role: AdminRole::Admin,
        permissions: None,
        user: None,
    }
}

fn update() -> UpdateAdmin {
    UpdateAdmin {
        id: id(),
        first_name: None,
        last_name: None,
        email: None,
    }
}

fn key(e: &str) -> GuardKey {
    GuardKey::AdminEmail(email(e))
}

fn facts_with_user() -> Facts {
    let mut facts = Facts::default();
    facts.users.insert(user_id(1), user_entity(user_id(1)));
    facts.users.insert(user_id(2), user_entity(user_id(2)));
    facts
}

fn all_commands() -> Vec<Command> {
    vec![
        cmd(AdminCommand::Update(UpdateAdmin {
            last_name: Some(name("Murray")),
            ..update()
        })),
        cmd(AdminCommand::SetRole(SetAdminRole {
            id: id(),
            role: AdminRole::Support,
        })),
        cmd(AdminCommand::SetPermissions(SetAdminPermissions {
            id: id(),
            permissions: json(r#"{"deny":["task.*"]}"#),
        })),
        cmd(AdminCommand::SetStatus(SetAdminStatus {
            id: id(),
            status: AdminStatus::Inactive,
        })),
        cmd(AdminCommand::LinkUser(LinkUser {
            id: id(),
            user: user_id(1),
        })),
        cmd(AdminCommand::UnlinkUser(ById { id: id() })),
        cmd(AdminCommand::Delete(ById { id: id() })),
        cmd(AdminCommand::Erase(ById { id: id() })),
    ]
}

#[test]
fn create_defaults_permissions_to_empty_and_claims_email() {
    Scenario::empty(admin_ref(id()))
        .when(cmd(AdminCommand::Create(create_body())))
        .then_events([created_at(None, NOW)])
        .then_guards([GuardChange::claim(key("grace@talkwai.com"), id().0, NOW)]);
}

#[test]
fn create_with_user_and_permissions() {
    let perms = json(r#"{"allow":["tenant.setStatus"]}"#);
    Scenario::empty(admin_ref(id()))
        .with_facts(facts_with_user())
        .when(cmd(AdminCommand::Create(CreateAdmin {
            permissions: Some(perms.clone()),
            user: Some(user_id(1)),
            ..create_body()
        })))
        .then_events([Event::Admin(AdminEvent::Created(AdminCreated {
            first_name: name("Grace"),
            last_name: name("Hopper"),
            email: email("grace@talkwai.com"),
            role: AdminRole::Admin,
            permissions: perms,
            status: AdminStatus::Active,
            user: Some(user_id(1)),
            at: NOW,
        }))])
        .then_guards([
            GuardChange::claim(key("grace@talkwai.com"), id().0, NOW),
            GuardChange::claim(GuardKey::UserAdmin(user_id(1)), id().0, NOW),
        ]);
}

#[test]
fn create_rejections() {
    Scenario::given(admin_ref(id()), [created()])
        .when(cmd(AdminCommand::Create(create_body())))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    Scenario::given(admin_ref(id()), [created(), deleted()])
        .when(cmd(AdminCommand::Create(create_body())))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    let mut facts = Facts::default();
    facts
        .guards
        .insert(key("grace@talkwai.com"), Some(admin_id(2).0));
    Scenario::empty(admin_ref(id()))
        .with_facts(facts)
        .when(cmd(AdminCommand::Create(create_body())))
        .then_error(ErrorCode::AlreadyExists, Some("email"));
    Scenario::empty(admin_ref(id()))
        .when(cmd(AdminCommand::Create(CreateAdmin {
            user: Some(user_id(1)),
            ..create_body()
        })))
        .then_error(ErrorCode::NotFound, Some("user"));
    let mut facts = facts_with_user();
    facts
        .guards
        .insert(GuardKey::UserAdmin(user_id(1)), Some(admin_id(2).0));
    Scenario::empty(admin_ref(id()))
        .with_facts(facts)
        .when(cmd(AdminCommand::Create(CreateAdmin {
            user: Some(user_id(1)),
            ..create_body()
        })))
        .then_error(ErrorCode::AlreadyExists, Some("user"));
}

#[test]
fn update_email_claims_and_releases() {
    Scenario::given(admin_ref(id()), [created()])
        .when(cmd(AdminCommand::Update(UpdateAdmin {
            first_name: Some(name("Grace")),
            email: Some(email("g.hopper@talkwai.com")),
            ..update()
        })))
        .then_events([Event::Admin(AdminEvent::Updated(AdminUpdated {
            first_name: None,
            last_name: None,
            email: Some(email("g.hopper@talkwai.com")),
            at: NOW,
        }))])
        .then_guards([
            GuardChange::claim(key("g.hopper@talkwai.com"), id().0, NOW),
            GuardChange::release(key("grace@talkwai.com"), id().0, NOW),
        ]);
    Scenario::given(admin_ref(id()), [created()])
        .when(cmd(AdminCommand::Update(UpdateAdmin {
            last_name: Some(name("Murray")),
            ..update()
        })))
        .then_events([Event::Admin(AdminEvent::Updated(AdminUpdated {
            first_name: None,
            last_name: Some(name("Murray")),
            email: None,
            at: NOW,
        }))])
        .then_guards([]);
    Scenario::given(admin_ref(id()), [created()])
        .when(cmd(AdminCommand::Update(UpdateAdmin {
            email: Some(email("grace@talkwai.com")),
            ..update()
        })))
        .then_no_events();
    let mut facts = Facts::default();
    facts
        .guards
        .insert(key("bob@talkwai.com"), Some(admin_id(2).0));
    Scenario::given(admin_ref(id()), [created()])
        .with_facts(facts)
        .when(cmd(AdminCommand::Update(UpdateAdmin {
            email: Some(email("bob@talkwai.com")),
            ..update()
        })))
        .then_error(ErrorCode::AlreadyExists, Some("email"));
}

#[test]
fn set_role_permissions_status() {
    let c = all_commands();
    Scenario::given(admin_ref(id()), [created()])
        .when(c[1].clone())
        .then_events([Event::Admin(AdminEvent::RoleChanged(AdminRoleChanged {
            role: AdminRole::Support,
            at: NOW,
        }))]);
    Scenario::given(admin_ref(id()), [created()])
        .when(c[2].clone())
        .then_events([Event::Admin(AdminEvent::PermissionsChanged(
            AdminPermissionsChanged {
                permissions: json(r#"{"deny":["task.*"]}"#),
                at: NOW,
            },
        ))]);
    Scenario::given(admin_ref(id()), [created()])
        .when(c[3].clone())
        .then_events([Event::Admin(AdminEvent::StatusChanged(
            AdminStatusChanged {
                status: AdminStatus::Inactive,
                at: NOW,
            },
        ))]);
    for no_op in [
        AdminCommand::SetRole(SetAdminRole {
            id: id(),
            role: AdminRole::Admin,
        }),
        AdminCommand::SetPermissions(SetAdminPermissions {
            id: id(),
            permissions: JsonObject::empty(),
        }),
        AdminCommand::SetStatus(SetAdminStatus {
            id: id(),
            status: AdminStatus::Active,
        }),
        AdminCommand::UnlinkUser(ById { id: id() }),
    ] {
        Scenario::given(admin_ref(id()), [created()])
            .when(cmd(no_op))
            .then_no_events();
    }
}

#[test]
fn link_and_unlink_user() {
    Scenario::given(admin_ref(id()), [created()])
        .with_facts(facts_with_user())
        .when(all_commands()[4].clone())
        .then_events([Event::Admin(AdminEvent::UserLinked(UserLink {
            user: user_id(1),
            at: NOW,
        }))])
        .then_guards([GuardChange::claim(
            GuardKey::UserAdmin(user_id(1)),
            id().0,
            NOW,
        )]);
    Scenario::given(admin_ref(id()), [created_at(Some(user_id(1)), T0)])
        .with_facts(facts_with_user())
        .when(all_commands()[4].clone())
        .then_no_events();
    Scenario::given(admin_ref(id()), [created_at(Some(user_id(2)), T0)])
        .with_facts(facts_with_user())
        .when(all_commands()[4].clone())
        .then_error(ErrorCode::AlreadyExists, Some("user"));
    Scenario::given(admin_ref(id()), [created()])
        .when(all_commands()[4].clone())
        .then_error(ErrorCode::NotFound, Some("user"));
    let mut facts = facts_with_user();
    facts
        .guards
        .insert(GuardKey::UserAdmin(user_id(1)), Some(admin_id(3).0));
    Scenario::given(admin_ref(id()), [created()])
        .with_facts(facts)
        .when(all_commands()[4].clone())
        .then_error(ErrorCode::AlreadyExists, Some("user"));
    Scenario::given(admin_ref(id()), [created_at(Some(user_id(1)), T0)])
        .when(all_commands()[5].clone())
        .then_events([Event::Admin(AdminEvent::UserUnlinked(UserLink {
            user: user_id(1),
            at: NOW,
        }))])
        .then_guards([GuardChange::release(
            GuardKey::UserAdmin(user_id(1)),
            id().0,
            NOW,
        )]);
}

#[test]
fn delete_releases_guards() {
    Scenario::given(admin_ref(id()), [created_at(Some(user_id(1)), T0)])
        .when(all_commands()[6].clone())
        .then_events([Event::Admin(AdminEvent::Deleted(Stamp { at: NOW }))])
        .then_guards([
            GuardChange::release(key("grace@talkwai.com"), id().0, NOW),
            GuardChange::release(GuardKey::UserAdmin(user_id(1)), id().0, NOW),
        ]);
}

#[test]
fn every_command_on_a_missing_or_deleted_admin_is_not_found() {
    for c in all_commands() {
        Scenario::empty(admin_ref(id()))
            .with_facts(facts_with_user())
            .when(c.clone())
            .then_error(ErrorCode::NotFound, None);
        Scenario::given(admin_ref(id()), [created(), deleted()])
            .with_facts(facts_with_user())
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}
