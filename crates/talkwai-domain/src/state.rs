//! The state every aggregate shares: a version and a lifecycle (absent, live, deleted), plus the
//! error for an event that cannot follow a state.

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, EntityKind};
use crate::guard::GuardChange;
use crate::values::Timestamp;

/// Where an entity is in its life. Ids are never reused: a deleted entity stays deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lifecycle<T> {
    /// No event yet.
    #[default]
    Absent,
    /// Created and not deleted.
    Live(T),
    /// Deleted; the last live state is kept for reference.
    Deleted(T),
}

/// An aggregate's state: how many events it has and its entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State<T> {
    /// Number of events applied (0 for an absent aggregate). Replies and read models show it.
    pub version: u64,
    /// The entity.
    pub entity: Lifecycle<T>,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self {
            version: 0,
            entity: Lifecycle::Absent,
        }
    }
}

impl<T> State<T> {
    /// The live entity, if any.
    pub fn live(&self) -> Option<&T> {
        match &self.entity {
            Lifecycle::Live(entity) => Some(entity),
            _ => None,
        }
    }

    /// The live entity, or `not_found`.
    pub fn require_live(&self, kind: EntityKind) -> Result<&T, DomainError> {
        self.live().ok_or(DomainError::NotFound {
            entity: kind,
            field: None,
        })
    }

    /// `Ok` when the aggregate was never created; `already_exists` otherwise (ids are never
    /// reused, also after a delete).
    pub fn require_absent(&self, kind: EntityKind) -> Result<(), DomainError> {
        match self.entity {
            Lifecycle::Absent => Ok(()),
            Lifecycle::Live(_) | Lifecycle::Deleted(_) => Err(DomainError::AlreadyExists {
                field: Some("id"),
                message: format!("{kind} already exists"),
            }),
        }
    }

    /// Applies a strict mutation to the live entity, counting the event.
    pub(crate) fn mutate_live(
        &mut self,
        kind: EntityKind,
        f: impl FnOnce(&mut T) -> Result<(), EvolveError>,
    ) -> Result<(), EvolveError> {
        match &mut self.entity {
            Lifecycle::Live(entity) => {
                f(entity)?;
                self.version += 1;
                Ok(())
            }
            Lifecycle::Absent => Err(EvolveError::NotCreated(kind)),
            Lifecycle::Deleted(_) => Err(EvolveError::Deleted(kind)),
        }
    }

    /// Applies a create event.
    pub(crate) fn create(&mut self, kind: EntityKind, entity: T) -> Result<(), EvolveError> {
        match self.entity {
            Lifecycle::Absent => {
                self.entity = Lifecycle::Live(entity);
                self.version += 1;
                Ok(())
            }
            _ => Err(EvolveError::AlreadyCreated(kind)),
        }
    }

    /// Applies a delete event.
    pub(crate) fn delete(&mut self, kind: EntityKind) -> Result<(), EvolveError> {
        match std::mem::take(&mut self.entity) {
            Lifecycle::Live(entity) => {
                self.entity = Lifecycle::Deleted(entity);
                self.version += 1;
                Ok(())
            }
            other => {
                let err = if matches!(other, Lifecycle::Absent) {
                    EvolveError::NotCreated(kind)
                } else {
                    EvolveError::Deleted(kind)
                };
                self.entity = other;
                Err(err)
            }
        }
    }
}

/// An event that cannot follow the state it is applied to: a corrupt or misrouted history.
/// Deciders never emit such events (a property test checks it); readers surface it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvolveError {
    /// An event other than a create on an absent aggregate.
    #[error("{0} does not exist")]
    NotCreated(EntityKind),
    /// A second create.
    #[error("{0} already exists")]
    AlreadyCreated(EntityKind),
    /// An event after the delete.
    #[error("{0} was deleted")]
    Deleted(EntityKind),
    /// A lifecycle step that the current status does not allow.
    #[error("{entity} cannot go from {from} by {event}")]
    Transition {
        /// The entity kind.
        entity: EntityKind,
        /// Current status.
        from: &'static str,
        /// The event type.
        event: &'static str,
    },
    /// The event belongs to another aggregate kind.
    #[error("a {event} event cannot apply to a {state}")]
    WrongAggregate {
        /// The event's aggregate.
        event: EntityKind,
        /// The state's aggregate.
        state: EntityKind,
    },
}

/// What a decider decided: the aggregate's new events and the guard changes that must land
/// atomically with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<E> {
    /// New events of the target aggregate, in order. Empty for a no-op (nothing changed).
    pub events: Vec<E>,
    /// Uniqueness guards claimed or released in the same write.
    pub guards: Vec<GuardChange>,
}

impl<E> Decision<E> {
    /// Events without guard changes.
    pub fn events(events: Vec<E>) -> Self {
        Self {
            events,
            guards: Vec::new(),
        }
    }

    /// Nothing to do: the command is already satisfied.
    pub fn none() -> Self {
        Self {
            events: Vec::new(),
            guards: Vec::new(),
        }
    }

    /// Maps the event type (used to lift aggregate events into [`crate::Event`]).
    pub fn map<F>(self, f: impl FnMut(E) -> F) -> Decision<F> {
        Decision {
            events: self.events.into_iter().map(f).collect(),
            guards: self.guards,
        }
    }
}

/// A command that addresses an entity by id only (`delete` and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ById<Id> {
    /// The addressed entity.
    pub id: Id,
}

/// An event with nothing but its time (`*.deleted` and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stamp {
    /// When.
    pub at: Timestamp,
}
