//! Shared rules for the 1:1 `$users` links (`userMembers`, `userAdmins`).

use uuid::Uuid;

use crate::context::Context;
use crate::error::{DomainError, EntityKind};
use crate::guard::{GuardChange, GuardKey};
use crate::ids::UserId;
use crate::state::EvolveError;
use crate::values::Timestamp;

/// What linking `user` to an entity that currently links `current` requires.
pub(crate) enum LinkPlan {
    /// Already linked to this user: nothing to do.
    AlreadyLinked,
    /// Link and claim the guard.
    Link(GuardChange),
}

/// Checks a user link: the user exists, the entity has no other user, and the user is not
/// linked to another entity of the same kind.
pub(crate) fn plan_link(
    current: Option<UserId>,
    user: UserId,
    owner: Uuid,
    key: GuardKey,
    linked_kind: EntityKind,
    ctx: &Context<'_>,
) -> Result<LinkPlan, DomainError> {
    if current == Some(user) {
        return Ok(LinkPlan::AlreadyLinked);
    }
    if current.is_some() {
        return Err(DomainError::AlreadyExists {
            field: Some("user"),
            message: format!("{linked_kind} is already linked to another user; unlink it first"),
        });
    }
    match ctx.facts.users.get(&user) {
        None => {
            return Err(DomainError::NotFound {
                entity: EntityKind::User,
                field: Some("user"),
            });
        }
        Some(found) if found.erased => {
            return Err(DomainError::InvalidReference {
                field: "user",
                message: "user was erased".into(),
            });
        }
        Some(_) => {}
    }
    match ctx.facts.guard_owner(&key) {
        Some(holder) if holder != owner => Err(DomainError::AlreadyExists {
            field: Some("user"),
            message: format!("user is already linked to another {linked_kind}"),
        }),
        _ => Ok(LinkPlan::Link(GuardChange::claim(key, owner, ctx.now))),
    }
}

/// Checks that a unique value is free for `owner` and returns the claim.
pub(crate) fn claim_unique(
    key: GuardKey,
    owner: Uuid,
    field: &'static str,
    what: &str,
    ctx: &Context<'_>,
) -> Result<GuardChange, DomainError> {
    match ctx.facts.guard_owner(&key) {
        Some(holder) if holder != owner => Err(DomainError::AlreadyExists {
            field: Some(field),
            message: format!("{what} is already taken"),
        }),
        _ => Ok(GuardChange::claim(key, owner, ctx.now)),
    }
}

/// Applies a `*.userLinked` (`link`) or `*.userUnlinked` event to an entity's user link,
/// refusing a link over another link and an unlink of a user that is not linked.
pub(crate) fn apply_link(
    linked: &mut Option<UserId>,
    updated_at: &mut Timestamp,
    user: UserId,
    at: Timestamp,
    link: bool,
    entity: EntityKind,
    event: &'static str,
) -> Result<(), EvolveError> {
    let allowed = if link {
        linked.is_none()
    } else {
        *linked == Some(user)
    };
    if !allowed {
        let from = if link { "linked" } else { "unlinked" };
        return Err(EvolveError::Transition {
            entity,
            from,
            event,
        });
    }
    *linked = link.then_some(user);
    *updated_at = at;
    Ok(())
}
