//! `$users`: sign-in identities (the JWT `sub`). A user's email is unique across the platform;
//! the user is linked to at most one member and one admin (the links live on those entities,
//! guarded by [`GuardKey::UserMember`] and [`GuardKey::UserAdmin`]).

use serde::{Deserialize, Serialize};

use crate::context::{Context, FactKey};
use crate::erasure::{erased_email, refuse_erased};
use crate::error::{DomainError, EntityKind};
use crate::guard::{GuardChange, GuardKey};
use crate::ids::UserId;
use crate::links::claim_unique;
use crate::state::{ById, Decision, EvolveError, Stamp, State};
use crate::values::{Email, Timestamp};

const KIND: EntityKind = EntityKind::User;

/// A user's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The id (the JWT `sub`).
    pub id: UserId,
    /// Email, unique across users.
    pub email: Email,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// Erased (`user.erased`): the email is a placeholder and is never written again.
    pub erased: bool,
}

/// `user.create` and `user.update` (platform): the user's email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserEmailBody {
    /// The user.
    pub id: UserId,
    /// Email, unique across users.
    pub email: Email,
}

/// Commands on a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", content = "body", rename_all = "camelCase")]
pub enum UserCommand {
    /// Create.
    Create(UserEmailBody),
    /// Change email.
    Update(UserEmailBody),
    /// Delete (refused while linked to a member or admin).
    Delete(ById<UserId>),
    /// Erase its email: its key is destroyed. Its links stay (erase the member or admin it
    /// signs in as to stop it acting).
    Erase(ById<UserId>),
}

impl UserCommand {
    /// The addressed user.
    pub fn id(&self) -> UserId {
        match self {
            Self::Create(c) | Self::Update(c) => c.id,
            Self::Delete(c) | Self::Erase(c) => c.id,
        }
    }

    /// Facts the decider needs besides the user's own state.
    pub fn requirements(&self) -> Vec<FactKey> {
        match self {
            Self::Create(c) | Self::Update(c) => {
                vec![FactKey::Guard(GuardKey::UserEmail(c.email.clone()))]
            }
            Self::Erase(_) => Vec::new(),
            Self::Delete(c) => vec![
                FactKey::Guard(GuardKey::UserMember(c.id)),
                FactKey::Guard(GuardKey::UserAdmin(c.id)),
            ],
        }
    }
}

/// `user.created` / `user.updated` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserEmailSet {
    /// Email.
    pub email: Email,
    /// When.
    pub at: Timestamp,
}

/// Events of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    /// Created.
    #[serde(rename = "user.created")]
    Created(UserEmailSet),
    /// Email changed.
    #[serde(rename = "user.updated")]
    Updated(UserEmailSet),
    /// Deleted.
    #[serde(rename = "user.deleted")]
    Deleted(Stamp),
    /// Email erased (its key destroyed): from here on every reader shows it as erased.
    #[serde(rename = "user.erased")]
    Erased(Stamp),
}

/// Decides a user command.
pub fn decide(
    state: &State<User>,
    command: UserCommand,
    ctx: &Context<'_>,
) -> Result<Decision<UserEvent>, DomainError> {
    let at = ctx.now;
    let owner = command.id().0;
    match command {
        UserCommand::Create(c) => {
            state.require_absent(KIND)?;
            let claim = claim_unique(
                GuardKey::UserEmail(c.email.clone()),
                owner,
                "email",
                "email",
                ctx,
            )?;
            Ok(Decision {
                events: vec![UserEvent::Created(UserEmailSet { email: c.email, at })],
                guards: vec![claim],
            })
        }
        UserCommand::Update(c) => {
            let user = state.require_live(KIND)?;
            if user.erased {
                return Err(refuse_erased(KIND, "update"));
            }
            if user.email == c.email {
                return Ok(Decision::none());
            }
            let claim = claim_unique(
                GuardKey::UserEmail(c.email.clone()),
                owner,
                "email",
                "email",
                ctx,
            )?;
            let release = GuardChange::release(GuardKey::UserEmail(user.email.clone()), owner, at);
            Ok(Decision {
                events: vec![UserEvent::Updated(UserEmailSet { email: c.email, at })],
                guards: vec![claim, release],
            })
        }
        UserCommand::Delete(c) => {
            let user = state.require_live(KIND)?;
            let linked = ctx.facts.guard_owner(&GuardKey::UserMember(c.id)).is_some()
                || ctx.facts.guard_owner(&GuardKey::UserAdmin(c.id)).is_some();
            if linked {
                return Err(DomainError::InvalidTransition {
                    entity: KIND,
                    action: "delete",
                    status: "linked",
                });
            }
            // An erased user let go of its email when it was erased.
            let guards = if user.erased {
                Vec::new()
            } else {
                vec![GuardChange::release(
                    GuardKey::UserEmail(user.email.clone()),
                    owner,
                    at,
                )]
            };
            Ok(Decision {
                events: vec![UserEvent::Deleted(Stamp { at })],
                guards,
            })
        }
        UserCommand::Erase(_) => {
            let user = state.require_live(KIND)?;
            // Idempotent: erasing again appends nothing (the service still destroys the key).
            if user.erased {
                return Ok(Decision::none());
            }
            Ok(Decision {
                events: vec![UserEvent::Erased(Stamp { at })],
                guards: vec![GuardChange::release(
                    GuardKey::UserEmail(user.email.clone()),
                    owner,
                    at,
                )],
            })
        }
    }
}

/// Applies a user event strictly.
pub fn apply(state: &mut State<User>, id: UserId, event: &UserEvent) -> Result<(), EvolveError> {
    match event {
        UserEvent::Created(e) => state.create(
            KIND,
            User {
                id,
                email: e.email.clone(),
                created_at: e.at,
                updated_at: e.at,
                erased: false,
            },
        ),
        UserEvent::Updated(e) => state.mutate_live(KIND, |u| {
            u.email = e.email.clone();
            u.updated_at = e.at;
            Ok(())
        }),
        UserEvent::Deleted(_) => state.delete(KIND),
        UserEvent::Erased(e) => state.mutate_live(KIND, |u| {
            u.email = erased_email();
            u.erased = true;
            u.updated_at = e.at;
            Ok(())
        }),
    }
}
