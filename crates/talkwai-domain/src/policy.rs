//! Who may do what: pure authorization over the actor, the command and the target's state.
//!
//! | actor | may |
//! |---|---|
//! | platform token | everything |
//! | admin `superadmin` | everything (the erasures `tenant.erase`, `member.erase`, `admin.erase`, `user.erase`, `task.eraseContent`: superadmins and the platform token only, whatever `permissions` allow) |
//! | admin `admin` | everything but `admin.*`, `user.update`, `user.delete` and the erasures |
//! | admin `support` | `task.*` but `task.delete` and `task.eraseContent` |
//! | member `owner` | in their tenant: `tenant.update`, `member.*` (`member.erase` included, of themselves too), `agent.*`, `task.*` (`task.eraseContent` included) |
//! | member `manager` | in their tenant: `agent.*`, `task.*` but `task.eraseContent` |
//! | member `user` | in their tenant: `task.create`; `task.update`, `task.setMetadata`, `task.start`, `task.complete`, `task.fail`, `task.cancel` on tasks assigned to them or created by them |
//! | any member | `member.update` of themselves |
//!
//! An admin's `permissions` object (`{"allow": ["tenant.setStatus"], "deny": ["task.*"]}`)
//! adds or removes permissions; `deny` wins. Inactive admins and members may do nothing;
//! members may do nothing in a tenant that is not `active`, and never cross tenants.
//!
//! Signing in comes first: [`signed_in`] turns the member or admin a token's user is linked to
//! into an [`Actor`] (refusing a deleted or erased one) and [`Actor::require_active`] refuses an
//! inactive one. The command service and the notifier's presence both decide with them.

use crate::admin::AdminCommand;
use crate::aggregate::{AggregateState, Command};
use crate::context::{Actor, Context};
use crate::enums::{AdminRole, AdminStatus, MemberRole, MemberStatus, TenantStatus};
use crate::error::DomainError;
use crate::ids::UserId;
use crate::member::MemberCommand;
use crate::task::TaskCommand;
use crate::tenant::TenantCommand;
use crate::user::UserCommand;
use crate::values::JsonObject;

fn forbidden(message: impl Into<String>) -> DomainError {
    DomainError::Forbidden(message.into())
}

/// The refusal of a token whose member or admin was erased: it can no longer sign in.
pub const ERASED_ACTOR: &str = "the member or admin this token signs in as was erased";

/// The actor `user` signs in as, from the state of the member or admin entity its link points
/// to (folded from the log): `Forbidden` when that entity was deleted (or, for a member, is not
/// in the token's tenant: its state there is empty) or erased ([`ERASED_ACTOR`]).
pub fn signed_in(user: UserId, state: &AggregateState) -> Result<Actor, DomainError> {
    match state {
        AggregateState::Admin(id, state) => {
            let admin = present(state.live(), |a| a.erased, "admin no longer exists")?;
            Ok(Actor::Admin {
                user,
                admin: *id,
                role: admin.role,
                permissions: Some(admin.permissions.clone()),
                active: admin.status == AdminStatus::Active,
            })
        }
        AggregateState::Member(_, id, state) => {
            let member = present(
                state.live(),
                |m| m.erased,
                "user is not a member of this tenant",
            )?;
            Ok(Actor::Member {
                user,
                member: *id,
                tenant: member.tenant,
                role: member.role,
                active: member.status == MemberStatus::Active,
            })
        }
        _ => Err(forbidden("user is not linked to a member or admin")),
    }
}

/// The live entity a user signs in as, neither deleted (`gone`) nor erased.
fn present<'a, T>(
    live: Option<&'a T>,
    erased: impl Fn(&T) -> bool,
    gone: &str,
) -> Result<&'a T, DomainError> {
    let entity = live.ok_or_else(|| forbidden(gone))?;
    if erased(entity) {
        return Err(forbidden(ERASED_ACTOR));
    }
    Ok(entity)
}

impl Actor {
    /// `Forbidden` for an inactive admin or member: they may do nothing.
    pub fn require_active(&self) -> Result<(), DomainError> {
        match self {
            Self::Admin { active: false, .. } => Err(forbidden("admin is inactive")),
            Self::Member { active: false, .. } => Err(forbidden("member is inactive")),
            _ => Ok(()),
        }
    }
}

/// Whether `pattern` (`task.start`, `task.*`, `*`) covers `permission`.
pub fn pattern_matches(pattern: &str, permission: &str) -> bool {
    if pattern == "*" || pattern == permission {
        return true;
    }
    pattern.strip_suffix(".*").is_some_and(|prefix| {
        permission
            .split_once('.')
            .is_some_and(|(agg, _)| agg == prefix)
    })
}

fn listed(permissions: Option<&JsonObject>, list: &str, permission: &str) -> bool {
    let Some(value) = permissions.map(JsonObject::value) else {
        return false;
    };
    value
        .get(list)
        .and_then(|v| v.as_array())
        .is_some_and(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str())
                .any(|p| pattern_matches(p, permission))
        })
}

/// The role's own grant for an admin, before `permissions` adjust it.
pub fn admin_role_allows(role: AdminRole, permission: &str) -> bool {
    match role {
        AdminRole::Superadmin => true,
        // Changing or deleting a `$users` identity could take over another admin's sign-in:
        // superadmins only.
        AdminRole::Admin => {
            !pattern_matches("admin.*", permission)
                && !matches!(permission, "user.update" | "user.delete")
                && !ERASURES.contains(&permission)
        }
        AdminRole::Support => {
            pattern_matches("task.*", permission)
                && !matches!(permission, "task.delete" | "task.eraseContent")
        }
    }
}

/// The permissions that erase personal data: the superadmin role's alone among admins.
pub const ERASURES: [&str; 5] = [
    "tenant.erase",
    "member.erase",
    "admin.erase",
    "user.erase",
    "task.eraseContent",
];

/// Whether `command` erases personal data (`tenant.erase`, `member.erase`, `admin.erase`,
/// `user.erase`, `task.eraseContent`): never granted by an admin's `permissions`, never a
/// manager's or a `user` member's.
pub fn is_erasure(command: &Command) -> bool {
    matches!(
        command,
        Command::Tenant(TenantCommand::Erase(_))
            | Command::Member(MemberCommand::Erase(_))
            | Command::Admin(AdminCommand::Erase(_))
            | Command::User(UserCommand::Erase(_))
            | Command::Task(TaskCommand::EraseContent(_))
    )
}

/// Checks that `actor` may run `command` against `state`.
pub fn authorize(
    actor: &Actor,
    command: &Command,
    state: &AggregateState,
    ctx: &Context<'_>,
) -> Result<(), DomainError> {
    let permission = command.permission();
    actor.require_active()?;
    match actor {
        Actor::Platform => Ok(()),
        Actor::Admin {
            role, permissions, ..
        } => {
            if listed(permissions.as_ref(), "deny", &permission) {
                return Err(forbidden(format!("permission {permission} is denied")));
            }
            // Offboarding and erasure cannot be granted: they are the superadmin role's alone.
            if is_erasure(command) {
                return if *role == AdminRole::Superadmin {
                    Ok(())
                } else {
                    Err(forbidden(format!("only a superadmin may {permission}")))
                };
            }
            if admin_role_allows(*role, &permission)
                || listed(permissions.as_ref(), "allow", &permission)
            {
                Ok(())
            } else {
                Err(forbidden(format!("role {role} may not {permission}")))
            }
        }
        Actor::Member {
            member,
            tenant,
            role,
            ..
        } => {
            if command.is_platform() {
                return Err(forbidden(format!("members may not {permission}")));
            }
            if ctx.tenant != Some(*tenant) || state.target().tenant != Some(*tenant) {
                return Err(forbidden("members act only within their own tenant"));
            }
            match ctx.facts.tenants.get(tenant).map(|t| t.status) {
                Some(TenantStatus::Active) => {}
                Some(status) => return Err(forbidden(format!("tenant is {status}"))),
                None => return Err(forbidden("tenant does not exist")),
            }
            if let Command::Member(MemberCommand::Update(c)) = command
                && c.id == *member
            {
                return Ok(());
            }
            let allowed = match role {
                MemberRole::Owner => {
                    matches!(command, Command::Tenant(TenantCommand::Update(_)))
                        || matches!(
                            command,
                            Command::Member(_) | Command::Agent(_) | Command::Task(_)
                        )
                }
                MemberRole::Manager => {
                    matches!(command, Command::Agent(_) | Command::Task(_)) && !is_erasure(command)
                }
                MemberRole::User => user_may(*member, command, state),
            };
            if allowed {
                Ok(())
            } else {
                Err(forbidden(format!("role {role} may not {permission}")))
            }
        }
    }
}

/// A member with role `user` creates tasks and works the ones assigned to (or created by) them.
fn user_may(member: crate::ids::MemberId, command: &Command, state: &AggregateState) -> bool {
    let Command::Task(task_command) = command else {
        return false;
    };
    if matches!(task_command, TaskCommand::Create(_)) {
        return true;
    }
    let works_tasks = matches!(
        task_command,
        TaskCommand::Update(_)
            | TaskCommand::SetMetadata(_)
            | TaskCommand::Start(_)
            | TaskCommand::Complete(_)
            | TaskCommand::Fail(_)
            | TaskCommand::Cancel(_)
    );
    if !works_tasks {
        // Never granted to the role, whether the task exists or not.
        return false;
    }
    let AggregateState::Task(_, _, task_state) = state else {
        return false;
    };
    let Some(task) = task_state.live() else {
        // Let the decider answer not_found for a missing task.
        return true;
    };
    task.assigned_to == Some(member) || task.created_by == Some(member)
}
