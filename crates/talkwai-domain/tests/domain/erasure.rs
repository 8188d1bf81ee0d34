//! Erasure of personal data: `member.erase`, `admin.erase`, `user.erase`, `task.eraseContent`
//! (their events, transitions, guards, idempotence, what is refused afterwards, and who may).

use talkwai_domain::admin::{AdminCommand, AdminCreated, AdminEvent, UpdateAdmin};
use talkwai_domain::enums::{
    AdminRole, AdminStatus, MemberRole, MemberStatus, TaskPriority, TaskStatus, TaskType,
};
use talkwai_domain::erasure::{ERASED_ADDRESS, ERASED_TEXT};
use talkwai_domain::member::{
    CreateMember, LinkUser, MemberCommand, MemberCreated, MemberEvent, SetMemberRole, UpdateMember,
};
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::task::{
    AssignTask, CompleteTask, TaskCommand, TaskCompleted, TaskCreated, TaskEvent, TaskOutcome,
    UpdateTask,
};
use talkwai_domain::user::{UserCommand, UserEmailBody, UserEmailSet, UserEvent};
use talkwai_domain::values::{JsonObject, OutcomeSummary};
use talkwai_domain::{AggregateState, Command, ErrorCode, Event, GuardChange, GuardKey};

use crate::fixtures::*;
use crate::scenario::Scenario;

fn member() -> talkwai_domain::ids::MemberId {
    member_id(1)
}

fn member_created() -> Event {
    crate::member::created_with(Some(user_id(1)))
}

fn member_erased() -> Event {
    Event::Member(MemberEvent::Erased(Stamp { at: T0 }))
}

fn erase_member() -> Command {
    Command::Member(MemberCommand::Erase(ById { id: member() }))
}

fn member_email_key(e: &str) -> GuardKey {
    GuardKey::MemberEmail {
        tenant: tenant_a(),
        email: email(e),
    }
}

#[test]
fn member_erase_appends_erased_releases_the_email_and_keeps_the_links() {
    Scenario::given(member_ref(member()), [member_created()])
        .with_facts(facts_a())
        .when(erase_member())
        .then_events([Event::Member(MemberEvent::Erased(Stamp { at: NOW }))])
        .then_guards([GuardChange::release(
            member_email_key("ada@acme.com"),
            member().0,
            NOW,
        )]);
    // Folded: placeholders, no phone, marked erased; id, role, status and user link stay.
    Scenario::given(member_ref(member()), [member_created(), member_erased()])
        .with_facts(facts_a())
        .when(erase_member())
        .then_no_events()
        .then_state(|state| {
            let AggregateState::Member(_, _, s) = state else {
                panic!("not a member: {state:?}");
            };
            let m = s.live().expect("live");
            assert!(m.erased);
            assert_eq!(m.first_name.as_str(), ERASED_TEXT);
            assert_eq!(m.last_name.as_str(), ERASED_TEXT);
            assert_eq!(m.email.as_str(), ERASED_ADDRESS);
            assert_eq!(m.phone, None);
            assert_eq!(m.user, Some(user_id(1)));
            assert_eq!(m.role, MemberRole::Manager);
            assert_eq!(m.status, MemberStatus::Active);
        });
}

#[test]
fn an_erased_member_takes_no_personal_data_but_keeps_working() {
    let erased = || Scenario::given(member_ref(member()), [member_created(), member_erased()]);
    erased()
        .with_facts(facts_a())
        .when(Command::Member(MemberCommand::Update(UpdateMember {
            id: member(),
            first_name: Some(name("Eve")),
            last_name: None,
            email: None,
            phone: None,
        })))
        .then_error(ErrorCode::InvalidTransition, None);
    erased()
        .with_facts(facts_a())
        .when(Command::Member(MemberCommand::SetRole(SetMemberRole {
            id: member(),
            role: MemberRole::Owner,
        })))
        .then_events([Event::Member(MemberEvent::RoleChanged(
            talkwai_domain::member::MemberRoleChanged {
                role: MemberRole::Owner,
                at: NOW,
            },
        ))]);
    // A delete releases the user link only: the email went with the erasure.
    erased()
        .with_facts(facts_a())
        .when(Command::Member(MemberCommand::Delete(ById {
            id: member(),
        })))
        .then_events([Event::Member(MemberEvent::Deleted(Stamp { at: NOW }))])
        .then_guards([GuardChange::release(
            GuardKey::UserMember(user_id(1)),
            member().0,
            NOW,
        )]);
}

#[test]
fn erase_of_an_unknown_subject_is_not_found() {
    Scenario::empty(member_ref(member()))
        .with_facts(facts_a())
        .when(erase_member())
        .then_error(ErrorCode::NotFound, None);
    Scenario::empty(admin_ref(admin_id(1)))
        .when(Command::Admin(AdminCommand::Erase(ById {
            id: admin_id(1),
        })))
        .then_error(ErrorCode::NotFound, None);
    Scenario::empty(user_ref(user_id(1)))
        .when(Command::User(UserCommand::Erase(ById { id: user_id(1) })))
        .then_error(ErrorCode::NotFound, None);
    Scenario::empty(task_ref(task_id(1)))
        .with_facts(facts_a())
        .when(Command::Task(TaskCommand::EraseContent(ById {
            id: task_id(1),
        })))
        .then_error(ErrorCode::NotFound, None);
}

fn admin_created() -> Event {
    Event::Admin(AdminEvent::Created(AdminCreated {
        first_name: name("Grace"),
        last_name: name("Hopper"),
        email: email("grace@talkwai.com"),
        role: AdminRole::Support,
        permissions: JsonObject::empty(),
        status: AdminStatus::Active,
        user: None,
        at: T0,
    }))
}

#[test]
fn admin_erase_appends_erased_releases_the_email_and_refuses_updates() {
    let target = admin_ref(admin_id(1));
    let erase = || Command::Admin(AdminCommand::Erase(ById { id: admin_id(1) }));
    Scenario::given(target, [admin_created()])
        .when(erase())
        .then_events([Event::Admin(AdminEvent::Erased(Stamp { at: NOW }))])
        .then_guards([GuardChange::release(
            GuardKey::AdminEmail(email("grace@talkwai.com")),
            admin_id(1).0,
            NOW,
        )]);
    let erased = Event::Admin(AdminEvent::Erased(Stamp { at: T0 }));
    Scenario::given(target, [admin_created(), erased.clone()])
        .when(erase())
        .then_no_events()
        .then_state(|state| {
            let AggregateState::Admin(_, s) = state else {
                panic!("not an admin: {state:?}");
            };
            let a = s.live().expect("live");
            assert!(a.erased);
            assert_eq!(a.email.as_str(), ERASED_ADDRESS);
            assert_eq!(a.first_name.as_str(), ERASED_TEXT);
        });
    Scenario::given(target, [admin_created(), erased])
        .when(Command::Admin(AdminCommand::Update(UpdateAdmin {
            id: admin_id(1),
            first_name: None,
            last_name: None,
            email: Some(email("new@talkwai.com")),
        })))
        .then_error(ErrorCode::InvalidTransition, None);
}

fn user_created() -> Event {
    Event::User(UserEvent::Created(UserEmailSet {
        email: email("ada@example.com"),
        at: T0,
    }))
}

#[test]
fn user_erase_appends_erased_releases_the_email_and_refuses_updates() {
    let target = user_ref(user_id(1));
    let erase = || Command::User(UserCommand::Erase(ById { id: user_id(1) }));
    Scenario::given(target, [user_created()])
        .when(erase())
        .then_events([Event::User(UserEvent::Erased(Stamp { at: NOW }))])
        .then_guards([GuardChange::release(
            GuardKey::UserEmail(email("ada@example.com")),
            user_id(1).0,
            NOW,
        )]);
    let erased = Event::User(UserEvent::Erased(Stamp { at: T0 }));
    Scenario::given(target, [user_created(), erased.clone()])
        .when(erase())
        .then_no_events();
    Scenario::given(target, [user_created(), erased.clone()])
        .when(Command::User(UserCommand::Update(UserEmailBody {
            id: user_id(1),
            email: email("eve@example.com"),
        })))
        .then_error(ErrorCode::InvalidTransition, None);
    // Its delete releases nothing more: the email went with the erasure.
    Scenario::given(target, [user_created(), erased])
        .when(Command::User(UserCommand::Delete(ById { id: user_id(1) })))
        .then_events([Event::User(UserEvent::Deleted(Stamp { at: NOW }))])
        .then_guards([]);
}

#[test]
fn an_erased_user_cannot_be_linked_and_an_erased_member_cannot_be_assigned() {
    let mut facts = facts_a();
    let mut user = user_entity(user_id(2));
    user.erased = true;
    facts.users.insert(user_id(2), user);
    Scenario::empty(member_ref(member_id(2)))
        .with_facts(facts.clone())
        .when(Command::Member(MemberCommand::Create(CreateMember {
            id: member_id(2),
            tenant: None,
            first_name: name("Bo"),
            last_name: name("B"),
            email: email("bo@acme.com"),
            phone: None,
            role: MemberRole::User,
            user: Some(user_id(2)),
        })))
        .then_error(ErrorCode::InvalidReference, Some("user"));
    Scenario::given(member_ref(member()), [member_created()])
        .with_facts(facts.clone())
        .when(Command::Member(MemberCommand::UnlinkUser(ById {
            id: member(),
        })))
        .then_events([Event::Member(MemberEvent::UserUnlinked(
            talkwai_domain::member::UserLink {
                user: user_id(1),
                at: NOW,
            },
        ))]);
    let mut erased_member = member_entity(
        member_id(3),
        tenant_a(),
        MemberRole::User,
        MemberStatus::Active,
    );
    erased_member.erased = true;
    facts.members.insert(member_id(3), erased_member);
    Scenario::given(task_ref(task_id(1)), [task_created()])
        .with_facts(facts.clone())
        .when(Command::Task(TaskCommand::Assign(AssignTask {
            id: task_id(1),
            assigned_to: member_id(3),
        })))
        .then_error(ErrorCode::InvalidReference, Some("assignedTo"));
    // Linking is refused through `member.linkUser` too.
    Scenario::given(member_ref(member_id(4)), [member_created_unlinked()])
        .with_facts(facts)
        .when(Command::Member(MemberCommand::LinkUser(LinkUser {
            id: member_id(4),
            user: user_id(2),
        })))
        .then_error(ErrorCode::InvalidReference, Some("user"));
}

fn member_created_unlinked() -> Event {
    Event::Member(MemberEvent::Created(MemberCreated {
        first_name: name("Cy"),
        last_name: name("C"),
        email: email("cy@acme.com"),
        phone: None,
        role: MemberRole::User,
        status: MemberStatus::Active,
        user: None,
        at: T0,
    }))
}

fn task_created() -> Event {
    Event::Task(TaskEvent::Created(TaskCreated {
        task_type: TaskType::Call,
        status: TaskStatus::Pending,
        priority: TaskPriority::High,
        from_address: addr("+15550001111"),
        to_address: addr("ada@acme.com"),
        subject: Some(subject("call back")),
        content: Some(content("about the invoice")),
        metadata: None,
        scheduled_at: None,
        agent: None,
        assigned_to: Some(member_id(1)),
        created_by: Some(member_id(2)),
        created_by_admin: None,
        at: T0,
    }))
}

fn task_outcome() -> TaskOutcome {
    TaskOutcome {
        summary: OutcomeSummary::parse("talked to Ada").expect("summary"),
        duration_secs: None,
        transcript_ref: None,
    }
}

#[test]
fn task_erase_content_appends_content_erased_and_keeps_status_and_links() {
    let target = task_ref(task_id(1));
    let erase = || Command::Task(TaskCommand::EraseContent(ById { id: task_id(1) }));
    Scenario::given(target, [task_created()])
        .with_facts(facts_a())
        .when(erase())
        .then_events([Event::Task(TaskEvent::ContentErased(Stamp { at: NOW }))])
        .then_guards([]);
    let started = Event::Task(TaskEvent::Started(Stamp { at: T0 }));
    let completed = Event::Task(TaskEvent::Completed(TaskCompleted {
        outcome: Some(task_outcome()),
        at: T0,
    }));
    let erased = Event::Task(TaskEvent::ContentErased(Stamp { at: T0 }));
    Scenario::given(target, [task_created(), started, completed, erased])
        .with_facts(facts_a())
        .when(erase())
        .then_no_events()
        .then_state(|state| {
            let AggregateState::Task(_, _, s) = state else {
                panic!("not a task: {state:?}");
            };
            let t = s.live().expect("live");
            assert!(t.erased);
            assert_eq!(t.from_address.to_string(), ERASED_ADDRESS);
            assert_eq!(t.to_address.to_string(), ERASED_ADDRESS);
            assert_eq!(t.subject, None);
            assert_eq!(t.content, None);
            let outcome = t.outcome.as_ref().expect("outcome kept");
            assert_eq!(outcome.summary.as_str(), ERASED_TEXT);
            assert_eq!(t.status, TaskStatus::Completed);
            assert_eq!(t.assigned_to, Some(member_id(1)));
            assert_eq!(t.created_by, Some(member_id(2)));
        });
}

#[test]
fn an_erased_task_takes_no_personal_content_but_keeps_working() {
    let target = task_ref(task_id(1));
    let erased = Event::Task(TaskEvent::ContentErased(Stamp { at: T0 }));
    let update = |content_given: bool| {
        Command::Task(TaskCommand::Update(UpdateTask {
            id: task_id(1),
            task_type: None,
            priority: Some(TaskPriority::Low),
            from_address: None,
            to_address: None,
            subject: None,
            content: content_given.then(|| Some(content("again"))),
            scheduled_at: None,
        }))
    };
    Scenario::given(target, [task_created(), erased.clone()])
        .with_facts(facts_a())
        .when(update(true))
        .then_error(ErrorCode::ValidationFailed, Some("content"));
    Scenario::given(target, [task_created(), erased.clone()])
        .with_facts(facts_a())
        .when(update(false))
        .then_events([Event::Task(TaskEvent::Updated(
            talkwai_domain::task::TaskUpdated {
                task_type: None,
                priority: Some(TaskPriority::Low),
                from_address: None,
                to_address: None,
                subject: None,
                content: None,
                scheduled_at: None,
                at: NOW,
            },
        ))]);
    let started = Event::Task(TaskEvent::Started(Stamp { at: T0 }));
    Scenario::given(target, [task_created(), erased.clone(), started.clone()])
        .with_facts(facts_a())
        .when(Command::Task(TaskCommand::Complete(CompleteTask {
            id: task_id(1),
            outcome: Some(task_outcome()),
        })))
        .then_error(ErrorCode::ValidationFailed, Some("outcome"));
    Scenario::given(target, [task_created(), erased, started])
        .with_facts(facts_a())
        .when(Command::Task(TaskCommand::Complete(CompleteTask {
            id: task_id(1),
            outcome: None,
        })))
        .then_events([Event::Task(TaskEvent::Completed(TaskCompleted {
            outcome: None,
            at: NOW,
        }))]);
}

#[test]
fn who_may_erase() {
    let owner = member_actor(member_id(9), tenant_a(), MemberRole::Owner);
    let manager = member_actor(member_id(9), tenant_a(), MemberRole::Manager);
    let user = member_actor(member(), tenant_a(), MemberRole::User);
    let self_owner = member_actor(member(), tenant_a(), MemberRole::Owner);
    // An owner erases members (themselves too) and task content of their tenant.
    for actor in [owner.clone(), self_owner] {
        Scenario::given(member_ref(member()), [member_created()])
            .with_facts(facts_a())
            .as_actor(actor)
            .when(erase_member())
            .then_events([Event::Member(MemberEvent::Erased(Stamp { at: NOW }))]);
    }
    Scenario::given(task_ref(task_id(1)), [task_created()])
        .with_facts(facts_a())
        .as_actor(owner)
        .when(Command::Task(TaskCommand::EraseContent(ById {
            id: task_id(1),
        })))
        .then_events([Event::Task(TaskEvent::ContentErased(Stamp { at: NOW }))]);
    // A manager does not, nor does a member erase themselves without being an owner.
    Scenario::given(task_ref(task_id(1)), [task_created()])
        .with_facts(facts_a())
        .as_actor(manager)
        .when(Command::Task(TaskCommand::EraseContent(ById {
            id: task_id(1),
        })))
        .then_error(ErrorCode::Forbidden, None);
    Scenario::given(member_ref(member()), [member_created()])
        .with_facts(facts_a())
        .as_actor(user)
        .when(erase_member())
        .then_error(ErrorCode::Forbidden, None);
    // Admins: superadmins only, whatever `permissions` grant; the platform token always.
    let granted = admin_actor(AdminRole::Admin, Some(r#"{"allow": ["*"]}"#));
    for (actor, allowed) in [
        (admin_actor(AdminRole::Superadmin, None), true),
        (granted, false),
        (admin_actor(AdminRole::Support, None), false),
    ] {
        let outcome = Scenario::given(user_ref(user_id(1)), [user_created()])
            .as_actor(actor.clone())
            .when(Command::User(UserCommand::Erase(ById { id: user_id(1) })));
        if allowed {
            outcome.then_events([Event::User(UserEvent::Erased(Stamp { at: NOW }))]);
        } else {
            outcome.then_error(ErrorCode::Forbidden, None);
        }
        let outcome = Scenario::given(task_ref(task_id(1)), [task_created()])
            .with_facts(facts_a())
            .as_actor(actor)
            .when(Command::Task(TaskCommand::EraseContent(ById {
                id: task_id(1),
            })));
        if allowed {
            outcome.then_events([Event::Task(TaskEvent::ContentErased(Stamp { at: NOW }))]);
        } else {
            outcome.then_error(ErrorCode::Forbidden, None);
        }
    }
    Scenario::given(admin_ref(admin_id(1)), [admin_created()])
        .when(Command::Admin(AdminCommand::Erase(ById {
            id: admin_id(1),
        })))
        .then_events([Event::Admin(AdminEvent::Erased(Stamp { at: NOW }))]);
}

#[test]
fn the_erased_events_round_trip_at_version_one() {
    for event in [
        member_erased(),
        Event::Admin(AdminEvent::Erased(Stamp { at: T0 })),
        Event::User(UserEvent::Erased(Stamp { at: T0 })),
        Event::Task(TaskEvent::ContentErased(Stamp { at: T0 })),
    ] {
        let body = event.encode();
        assert_eq!(body.version, 1, "{}", body.event_type);
        assert!(body.event_type.ends_with("rased"), "{}", body.event_type);
        assert_eq!(Event::decode(&body).expect("decodes"), event);
    }
}
