//! The authorization matrix documented at the top of `src/policy.rs`, as a table: every command
//! permission against every kind of actor.

use serde_json::json;

use talkwai_domain::enums::{
    AdminRole, MemberRole, TaskPriority, TaskStatus, TaskType, TenantStatus,
};
use talkwai_domain::ids::MemberId;
use talkwai_domain::policy::{admin_role_allows, authorize, pattern_matches};
use talkwai_domain::task::{TaskCreated, TaskEvent};
use talkwai_domain::{
    Actor, AggregateState, Command, Context, DomainError, ErrorCode, Event, Facts, apply, decide,
};

use crate::fixtures::*;
use crate::wire::every_command_body;

/// One sample command per permission (`tenant.create` ... `user.delete`), all addressing
/// tenant A's entities.
fn commands() -> Vec<Command> {
    every_command_body()
        .into_iter()
        .map(|(aggregate, action, body)| {
            serde_json::from_value(json!({
                "aggregate": aggregate,
                "command": {"action": action, "body": body},
            }))
            .expect("sample command decodes")
        })
        .collect()
}

fn scope_of(command: &Command) -> Option<talkwai_domain::ids::TenantId> {
    if command.is_platform() {
        None
    } else {
        Some(tenant_a())
    }
}

/// Who is involved in the task a command addresses.
#[derive(Debug, Clone, Copy)]
enum TaskFixture {
    Absent,
    AssignedTo(MemberId),
    CreatedBy(MemberId),
    Uninvolved,
}

fn state_for(command: &Command, task: TaskFixture) -> AggregateState {
    let mut state = AggregateState::new(command.target(scope_of(command)));
    if let AggregateState::Task(..) = state {
        let (assigned_to, created_by) = match task {
            TaskFixture::Absent => return state,
            TaskFixture::AssignedTo(m) => (Some(m), None),
            TaskFixture::CreatedBy(m) => (None, Some(m)),
            TaskFixture::Uninvolved => (Some(member_id(77)), Some(member_id(78))),
        };
        let created = Event::Task(TaskEvent::Created(TaskCreated {
            task_type: TaskType::Call,
            status: TaskStatus::Pending,
            priority: TaskPriority::Medium,
            from_address: addr("+15550001111"),
            to_address: addr("+15550002222"),
            subject: None,
            content: None,
            metadata: None,
            scheduled_at: None,
            agent: None,
            assigned_to,
            created_by,
            created_by_admin: None,
            at: T0,
        }));
        apply(&mut state, &created).expect("task fixture applies");
    }
    state
}

fn check(
    actor: &Actor,
    command: &Command,
    task: TaskFixture,
    facts: &Facts,
    scope: Option<talkwai_domain::ids::TenantId>,
) -> Result<(), DomainError> {
    let state = state_for(command, task);
    let ctx = Context {
        now: NOW,
        actor,
        tenant: scope,
        facts,
        nonce: NONCE,
    };
    authorize(actor, command, &state, &ctx)
}

/// Patterns each role is granted, straight from the table in `src/policy.rs`.
fn grants(role: &str) -> &'static [&'static str] {
    const WORK_OWN_TASKS: &[&str] = &[
        "task.create",
        "task.update",
        "task.setMetadata",
        "task.start",
        "task.complete",
        "task.fail",
        "task.cancel",
    ];
    match role {
        "platform" | "superadmin" => &["*"],
        "admin" => &["tenant.*", "member.*", "agent.*", "task.*", "user.create"],
        "support" => &[
            "task.create",
            "task.update",
            "task.setMetadata",
            "task.linkAgent",
            "task.unlinkAgent",
            "task.assign",
            "task.unassign",
            "task.start",
            "task.complete",
            "task.fail",
            "task.cancel",
            "task.retry",
        ],
        "owner" => &["tenant.update", "member.*", "agent.*", "task.*"],
        "manager" => &["agent.*", "task.*"],
        "user on own task" => WORK_OWN_TASKS,
        "user on other task" => &["task.create"],
        other => panic!("no grants for {other}"),
    }
}

/// What a role's patterns in [`grants`] cover but the role may still not do: erasing personal
/// data is the superadmins' (and the platform's) among admins, the owners' among members.
fn withheld(role: &str) -> &'static [&'static str] {
    match role {
        "admin" | "manager" => &["member.erase", "task.eraseContent"],
        _ => &[],
    }
}

fn granted(role: &str, permission: &str) -> bool {
    grants(role).iter().any(|p| pattern_matches(p, permission))
        && !withheld(role).contains(&permission)
}

#[track_caller]
fn assert_decision(result: Result<(), DomainError>, allowed: bool, who: &str, command: &Command) {
    match (result, allowed) {
        (Ok(()), true) => {}
        (Err(e), false) => assert_eq!(
            e.code(),
            ErrorCode::Forbidden,
            "{who} on {}: {e}",
            command.permission()
        ),
        (result, _) => panic!(
            "{who} on {}: expected {}, got {result:?}",
            command.permission(),
            if allowed { "allowed" } else { "forbidden" }
        ),
    }
}

#[test]
fn the_samples_cover_every_permission() {
    let permissions: Vec<String> = commands().iter().map(Command::permission).collect();
    let unique: std::collections::BTreeSet<&String> = permissions.iter().collect();
    assert_eq!(unique.len(), 44);
    assert!(permissions.contains(&"task.setMetadata".to_owned()));
}

#[test]
fn platform_and_admin_roles() {
    let facts = facts_a();
    for (who, actor) in [
        ("platform", Actor::Platform),
        ("superadmin", admin_actor(AdminRole::Superadmin, None)),
        ("admin", admin_actor(AdminRole::Admin, None)),
        ("support", admin_actor(AdminRole::Support, None)),
    ] {
        for command in commands() {
            let result = check(
                &actor,
                &command,
                TaskFixture::Uninvolved,
                &facts,
                scope_of(&command),
            );
            assert_decision(result, granted(who, &command.permission()), who, &command);
            if let Actor::Admin { role, .. } = &actor {
                assert_eq!(
                    admin_role_allows(*role, &command.permission()),
                    granted(who, &command.permission())
                );
            }
        }
    }
}

#[test]
fn admins_act_in_every_tenant_whatever_its_status() {
    let facts = facts_with([tenant_entity(tenant_a(), TenantStatus::Suspended, None)]);
    let actor = admin_actor(AdminRole::Admin, None);
    for command in commands() {
        let result = check(
            &actor,
            &command,
            TaskFixture::Uninvolved,
            &facts,
            scope_of(&command),
        );
        assert_decision(
            result,
            granted("admin", &command.permission()),
            "admin",
            &command,
        );
    }
}

#[test]
fn member_roles_in_their_active_tenant() {
    let facts = facts_a();
    let me = member_id(5);
    for (who, role, task) in [
        ("owner", MemberRole::Owner, TaskFixture::Uninvolved),
        ("manager", MemberRole::Manager, TaskFixture::Uninvolved),
        (
            "user on own task",
            MemberRole::User,
            TaskFixture::AssignedTo(me),
        ),
        (
            "user on own task",
            MemberRole::User,
            TaskFixture::CreatedBy(me),
        ),
        (
            "user on other task",
            MemberRole::User,
            TaskFixture::Uninvolved,
        ),
    ] {
        let actor = member_actor(me, tenant_a(), role);
        for command in commands() {
            let result = check(&actor, &command, task, &facts, scope_of(&command));
            let who = format!("{who} ({task:?})");
            assert_decision(
                result,
                granted(grants_key(&who), &command.permission()),
                &who,
                &command,
            );
        }
    }
}

fn grants_key(who: &str) -> &str {
    who.split(" (").next().unwrap_or(who)
}

#[test]
fn a_user_reaches_a_missing_task_so_the_decider_can_answer_not_found() {
    let actor = member_actor(member_id(5), tenant_a(), MemberRole::User);
    for command in commands() {
        if let Command::Task(_) = command {
            let allowed = granted("user on own task", &command.permission());
            let result = check(
                &actor,
                &command,
                TaskFixture::Absent,
                &facts_a(),
                Some(tenant_a()),
            );
            assert_decision(result, allowed, "user on a missing task", &command);
        }
    }
}

#[test]
fn any_member_may_update_themselves_but_nothing_else_about_themselves() {
    let facts = facts_a();
    for role in [MemberRole::User, MemberRole::Manager] {
        let actor = member_actor(member_id(1), tenant_a(), role);
        for command in commands() {
            let expected = match command.permission().as_str() {
                "member.update" => true,
                p => granted(
                    if role == MemberRole::User {
                        "user on other task"
                    } else {
                        "manager"
                    },
                    p,
                ),
            };
            let result = check(
                &actor,
                &command,
                TaskFixture::Uninvolved,
                &facts,
                scope_of(&command),
            );
            assert_decision(result, expected, &format!("{role} member 1"), &command);
        }
    }
}

#[test]
fn inactive_actors_may_do_nothing() {
    let facts = facts_a();
    let inactive_admin = match admin_actor(AdminRole::Superadmin, Some(r#"{"allow":["*"]}"#)) {
        Actor::Admin {
            user,
            admin,
            role,
            permissions,
            ..
        } => Actor::Admin {
            user,
            admin,
            role,
            permissions,
            active: false,
        },
        other => other,
    };
    let inactive_owner = Actor::Member {
        user: user_id(1),
        member: member_id(1),
        tenant: tenant_a(),
        role: MemberRole::Owner,
        active: false,
    };
    for actor in [inactive_admin, inactive_owner] {
        for command in commands() {
            let result = check(
                &actor,
                &command,
                TaskFixture::AssignedTo(member_id(1)),
                &facts,
                scope_of(&command),
            );
            assert_decision(result, false, "inactive", &command);
        }
    }
}

#[test]
fn members_may_do_nothing_in_a_tenant_that_is_not_active() {
    let owner = member_actor(member_id(1), tenant_a(), MemberRole::Owner);
    for facts in [
        facts_with([tenant_entity(tenant_a(), TenantStatus::Suspended, None)]),
        facts_with([tenant_entity(tenant_a(), TenantStatus::Inactive, None)]),
        Facts::default(),
    ] {
        for command in commands() {
            let result = check(
                &owner,
                &command,
                TaskFixture::AssignedTo(member_id(1)),
                &facts,
                scope_of(&command),
            );
            assert_decision(result, false, "owner of a closed tenant", &command);
        }
    }
}

#[test]
fn members_never_cross_tenants() {
    let both = facts_with([
        tenant_entity(tenant_a(), TenantStatus::Active, None),
        tenant_entity(tenant_b(), TenantStatus::Active, None),
    ]);
    // an owner of tenant B sending commands into tenant A's subjects
    let intruder = member_actor(member_id(9), tenant_b(), MemberRole::Owner);
    for command in commands() {
        let result = check(
            &intruder,
            &command,
            TaskFixture::AssignedTo(member_id(9)),
            &both,
            scope_of(&command),
        );
        assert_decision(result, false, "owner of B in A", &command);
    }
    // or naming their own tenant in the subject while the target lives in A
    for command in commands().into_iter().filter(|c| !c.is_platform()) {
        let result = check(
            &intruder,
            &command,
            TaskFixture::AssignedTo(member_id(9)),
            &both,
            Some(tenant_b()),
        );
        assert_decision(result, false, "owner of B on A's entity", &command);
    }
}

#[test]
fn admin_permissions_allow_and_deny_and_deny_wins() {
    let facts = facts_a();
    let rows: [(AdminRole, &str, &str, bool); 10] = [
        (AdminRole::Support, "{}", "tenant.setStatus", false),
        (
            AdminRole::Support,
            r#"{"allow":["tenant.setStatus"]}"#,
            "tenant.setStatus",
            true,
        ),
        (
            AdminRole::Support,
            r#"{"allow":["tenant.setStatus"]}"#,
            "tenant.delete",
            false,
        ),
        (
            AdminRole::Support,
            r#"{"allow":["*"]}"#,
            "admin.create",
            true,
        ),
        (
            AdminRole::Support,
            r#"{"deny":["task.*"]}"#,
            "task.start",
            false,
        ),
        (
            AdminRole::Admin,
            r#"{"allow":["admin.*"],"deny":["admin.delete"]}"#,
            "admin.setRole",
            true,
        ),
        (
            AdminRole::Admin,
            r#"{"allow":["admin.*"],"deny":["admin.delete"]}"#,
            "admin.delete",
            false,
        ),
        (
            AdminRole::Superadmin,
            r#"{"deny":["admin.*"]}"#,
            "admin.create",
            false,
        ),
        (
            AdminRole::Superadmin,
            r#"{"allow":["*"],"deny":["*"]}"#,
            "task.start",
            false,
        ),
        (
            AdminRole::Superadmin,
            r#"{"allow":"task.*","deny":"task.*"}"#,
            "task.start",
            true,
        ),
    ];
    let all = commands();
    for (role, permissions, permission, allowed) in rows {
        let actor = admin_actor(role, Some(permissions));
        let command = all
            .iter()
            .find(|c| c.permission() == permission)
            .expect("a sample for the permission");
        let result = check(
            &actor,
            command,
            TaskFixture::Uninvolved,
            &facts,
            scope_of(command),
        );
        assert_decision(result, allowed, &format!("{role} {permissions}"), command);
    }
}

#[test]
fn pattern_matching() {
    for (pattern, permission, matches) in [
        ("*", "task.start", true),
        ("task.*", "task.start", true),
        ("task.start", "task.start", true),
        ("task.*", "tenant.update", false),
        ("task", "task.start", false),
        ("task.st*", "task.start", false),
        ("tas.*", "task.start", false),
        ("task.start", "task.startX", false),
    ] {
        assert_eq!(
            pattern_matches(pattern, permission),
            matches,
            "{pattern} {permission}"
        );
    }
}

/// Through the full `decide`: the policy answers before the decider, so a forbidden actor never
/// learns whether the target exists.
#[test]
fn decide_checks_the_policy_first() {
    let actor = member_actor(member_id(5), tenant_a(), MemberRole::User);
    let facts = facts_a();
    for command in commands() {
        let state = AggregateState::new(command.target(scope_of(&command)));
        let ctx = Context {
            now: NOW,
            actor: &actor,
            tenant: scope_of(&command),
            facts: &facts,
            nonce: NONCE,
        };
        let result = decide(&state, command.clone(), &ctx);
        if granted("user on own task", &command.permission()) {
            // the task commands a user may run reach the decider: create succeeds, the rest
            // are not_found; the others are forbidden whether the task exists or not
            match result {
                Ok(_) => assert_eq!(command.permission(), "task.create"),
                Err(e) => assert_eq!(e.code(), ErrorCode::NotFound, "{}", command.permission()),
            }
        } else {
            let e = result.expect_err("a user may not");
            assert_eq!(e.code(), ErrorCode::Forbidden, "{}", command.permission());
        }
    }
}
