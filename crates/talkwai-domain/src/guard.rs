//! Uniqueness guards: tiny aggregates on their own subjects that make cross-aggregate invariants
//! (unique emails, 1:1 user links) race-free. A command that needs a unique value claims the
//! guard in the same atomic write as its own events, with the guard's expected last sequence, so
//! two racing claims cannot both land and a crash cannot leave a claim without its event.

use uuid::Uuid;

use crate::ids::{TenantId, UserId};
use crate::values::{Email, Timestamp};

/// A unique value that at most one entity may hold at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GuardKey {
    /// A member email, unique within a tenant.
    MemberEmail {
        /// The tenant the uniqueness is scoped to.
        tenant: TenantId,
        /// The normalized email.
        email: Email,
    },
    /// An admin email, unique across the platform.
    AdminEmail(Email),
    /// A `$users` email, unique across the platform.
    UserEmail(Email),
    /// The one member a user is linked to (`userMembers`, 1:1).
    UserMember(UserId),
    /// The one admin a user is linked to (`userAdmins`, 1:1).
    UserAdmin(UserId),
}

impl GuardKey {
    /// The tenant whose subject space holds the guard (`None`: platform).
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Self::MemberEmail { tenant, .. } => Some(*tenant),
            _ => None,
        }
    }

    /// A short stable kind name, used in subjects (`member-email`, `user-member`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MemberEmail { .. } => "member-email",
            Self::AdminEmail(_) => "admin-email",
            Self::UserEmail(_) => "user-email",
            Self::UserMember(_) => "user-member",
            Self::UserAdmin(_) => "user-admin",
        }
    }

    /// The guarded value as text (hashed by the event store into a subject token).
    pub fn value(&self) -> String {
        match self {
            Self::MemberEmail { email, .. } | Self::AdminEmail(email) | Self::UserEmail(email) => {
                email.as_str().to_owned()
            }
            Self::UserMember(user) | Self::UserAdmin(user) => user.to_string(),
        }
    }
}

/// An event of a guard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
pub enum GuardEvent {
    /// The value is now held by `owner`.
    #[serde(rename = "guard.claimed")]
    Claimed {
        /// The holding entity's id.
        owner: Uuid,
        /// When.
        at: Timestamp,
    },
    /// `owner` let go of the value.
    #[serde(rename = "guard.released")]
    Released {
        /// The entity that held it.
        owner: Uuid,
        /// When.
        at: Timestamp,
    },
}

/// A guard's state: who holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardState {
    /// The holder, if any.
    pub owner: Option<Uuid>,
}

/// Why a guard event cannot follow the guard's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// A claim on a guard someone else holds.
    #[error("guard is held by {0}")]
    Taken(Uuid),
    /// A release by someone who does not hold it.
    #[error("guard is not held by {0}")]
    NotHeld(Uuid),
}

impl GuardState {
    /// Applies a guard event, refusing one that breaks the guard's rule. A claim by the current
    /// owner is idempotent.
    pub fn apply(&mut self, event: &GuardEvent) -> Result<(), GuardError> {
        match (*event, self.owner) {
            (GuardEvent::Claimed { owner, .. }, Some(holder)) if holder != owner => {
                Err(GuardError::Taken(holder))
            }
            (GuardEvent::Claimed { owner, .. }, _) => {
                self.owner = Some(owner);
                Ok(())
            }
            (GuardEvent::Released { owner, .. }, Some(holder)) if holder == owner => {
                self.owner = None;
                Ok(())
            }
            (GuardEvent::Released { owner, .. }, _) => Err(GuardError::NotHeld(owner)),
        }
    }
}

// GuardEvent is Copy-like; derive it explicitly for the match above.
impl Copy for GuardEvent {}

/// A guard change a decision asks for, applied atomically with its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardChange {
    /// Which guard.
    pub key: GuardKey,
    /// What happens to it.
    pub event: GuardEvent,
}

impl GuardChange {
    /// Claim `key` for `owner`.
    pub fn claim(key: GuardKey, owner: Uuid, at: Timestamp) -> Self {
        Self {
            key,
            event: GuardEvent::Claimed { owner, at },
        }
    }

    /// Release `key` held by `owner`.
    pub fn release(key: GuardKey, owner: Uuid, at: Timestamp) -> Self {
        Self {
            key,
            event: GuardEvent::Released { owner, at },
        }
    }
}

impl GuardEvent {
    /// Current version of the guard events' data.
    pub const CURRENT_VERSION: u32 = 1;

    /// Encodes the event as a wire body `{"type", "version", "data"}`, like aggregate events.
    pub fn encode(&self) -> crate::EventBody {
        let (event_type, owner, at) = match *self {
            Self::Claimed { owner, at } => ("guard.claimed", owner, at),
            Self::Released { owner, at } => ("guard.released", owner, at),
        };
        crate::EventBody {
            event_type: event_type.to_owned(),
            version: Self::CURRENT_VERSION,
            data: serde_json::json!({ "owner": owner, "at": at }),
        }
    }

    /// Decodes a wire body.
    pub fn decode(body: &crate::EventBody) -> Result<Self, crate::DecodeError> {
        if !matches!(body.event_type.as_str(), "guard.claimed" | "guard.released") {
            return Err(crate::DecodeError::UnknownType(body.event_type.clone()));
        }
        if body.version != Self::CURRENT_VERSION {
            return Err(crate::DecodeError::UnknownVersion {
                event_type: body.event_type.clone(),
                version: body.version,
            });
        }
        serde_json::from_value(serde_json::json!({ "type": body.event_type, "data": body.data }))
            .map_err(|e| crate::DecodeError::InvalidData {
                event_type: body.event_type.clone(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_events_round_trip_through_their_wire_body() {
        let owner = Uuid::new_v4();
        for event in [
            GuardEvent::Claimed {
                owner,
                at: Timestamp(5),
            },
            GuardEvent::Released {
                owner,
                at: Timestamp(6),
            },
        ] {
            assert_eq!(GuardEvent::decode(&event.encode()), Ok(event));
        }
        let mut body = GuardEvent::Claimed {
            owner,
            at: Timestamp(1),
        }
        .encode();
        body.version = 2;
        assert!(matches!(
            GuardEvent::decode(&body),
            Err(crate::DecodeError::UnknownVersion { .. })
        ));
        body.event_type = "guard.stolen".into();
        assert!(matches!(
            GuardEvent::decode(&body),
            Err(crate::DecodeError::UnknownType(_))
        ));
    }
}
