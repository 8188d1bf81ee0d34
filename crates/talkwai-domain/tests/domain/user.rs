//! `user.*` commands.

use talkwai_domain::ids::UserId;
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::user::{UserCommand, UserEmailBody, UserEmailSet, UserEvent};
use talkwai_domain::{Command, ErrorCode, Event, Facts, GuardChange, GuardKey};

use crate::fixtures::*;
use crate::scenario::Scenario;

fn id() -> UserId {
    user_id(1)
}

fn created() -> Event {
    Event::User(UserEvent::Created(UserEmailSet {
        email: email("ada@example.com"),
        at: T0,
    }))
}

fn deleted() -> Event {
    Event::User(UserEvent::Deleted(Stamp { at: T0 }))
}

fn body(e: &str) -> UserEmailBody {
    UserEmailBody {
        id: id(),
        email: email(e),
    }
}

fn key(e: &str) -> GuardKey {
    GuardKey::UserEmail(email(e))
}

fn delete() -> Command {
    Command::User(UserCommand::Delete(ById { id: id() }))
}

#[test]
fn create_claims_the_email() {
    Scenario::empty(user_ref(id()))
        .when(Command::User(UserCommand::Create(body("Ada@Example.com"))))
        .then_events([Event::User(UserEvent::Created(UserEmailSet {
            email: email("ada@example.com"),
            at: NOW,
        }))])
        .then_guards([GuardChange::claim(key("ada@example.com"), id().0, NOW)]);
}

#[test]
fn create_rejections() {
    Scenario::given(user_ref(id()), [created()])
        .when(Command::User(UserCommand::Create(body("ada@example.com"))))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    Scenario::given(user_ref(id()), [created(), deleted()])
        .when(Command::User(UserCommand::Create(body("ada@example.com"))))
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    let mut facts = Facts::default();
    facts
        .guards
        .insert(key("ada@example.com"), Some(user_id(2).0));
    Scenario::empty(user_ref(id()))
        .with_facts(facts)
        .when(Command::User(UserCommand::Create(body("ada@example.com"))))
        .then_error(ErrorCode::AlreadyExists, Some("email"));
}

#[test]
fn update_email() {
    Scenario::given(user_ref(id()), [created()])
        .when(Command::User(UserCommand::Update(body("ada@lovelace.org"))))
        .then_events([Event::User(UserEvent::Updated(UserEmailSet {
            email: email("ada@lovelace.org"),
            at: NOW,
        }))])
        .then_guards([
            GuardChange::claim(key("ada@lovelace.org"), id().0, NOW),
            GuardChange::release(key("ada@example.com"), id().0, NOW),
        ]);
    Scenario::given(user_ref(id()), [created()])
        .when(Command::User(UserCommand::Update(body("ADA@example.com"))))
        .then_no_events();
    let mut facts = Facts::default();
    facts
        .guards
        .insert(key("bob@example.com"), Some(user_id(2).0));
    Scenario::given(user_ref(id()), [created()])
        .with_facts(facts)
        .when(Command::User(UserCommand::Update(body("bob@example.com"))))
        .then_error(ErrorCode::AlreadyExists, Some("email"));
}

#[test]
fn delete_releases_the_email_unless_linked() {
    Scenario::given(user_ref(id()), [created()])
        .when(delete())
        .then_events([Event::User(UserEvent::Deleted(Stamp { at: NOW }))])
        .then_guards([GuardChange::release(key("ada@example.com"), id().0, NOW)]);
    for linked in [GuardKey::UserMember(id()), GuardKey::UserAdmin(id())] {
        let mut facts = Facts::default();
        facts.guards.insert(linked, Some(member_id(1).0));
        Scenario::given(user_ref(id()), [created()])
            .with_facts(facts)
            .when(delete())
            .then_error(ErrorCode::InvalidTransition, None);
    }
    // a released link guard does not block
    let mut facts = Facts::default();
    facts.guards.insert(GuardKey::UserMember(id()), None);
    Scenario::given(user_ref(id()), [created()])
        .with_facts(facts)
        .when(delete())
        .then_guards([GuardChange::release(key("ada@example.com"), id().0, NOW)]);
}

#[test]
fn every_command_on_a_missing_or_deleted_user_is_not_found() {
    for c in [
        Command::User(UserCommand::Update(body("x@example.com"))),
        delete(),
    ] {
        Scenario::empty(user_ref(id()))
            .when(c.clone())
            .then_error(ErrorCode::NotFound, None);
        Scenario::given(user_ref(id()), [created(), deleted()])
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}
