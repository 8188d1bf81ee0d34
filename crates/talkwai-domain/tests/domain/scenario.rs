//! A given/when/then harness for the deciders, after eventually-rs's aggregate `Scenario`:
//!
//! ```ignore
//! Scenario::given(task_ref(), [task_created()])
//!     .with_facts(facts)
//!     .as_actor(actor)
//!     .when(command)
//!     .then_events([expected]);
//! ```
//!
//! `given` folds the events with the strict [`apply`] (a given history that does not apply is a
//! broken test and panics), `when` runs the top-level [`decide`] with a fixed clock, and the
//! `then_*` assertions panic with the command, the state and the outcome in the message.

use talkwai_domain::values::Timestamp;
use talkwai_domain::{
    Actor, AggregateRef, AggregateState, Command, Context, Decision, DomainError, ErrorCode, Event,
    Facts, GuardChange, apply, decide,
};

use crate::fixtures::{NONCE, NOW};

/// The arrangement: the target's history, the facts about other aggregates, the actor and the
/// clock.
#[derive(Debug, Clone)]
pub struct Scenario {
    state: AggregateState,
    facts: Facts,
    actor: Actor,
    scope: Option<Option<talkwai_domain::ids::TenantId>>,
    now: Timestamp,
}

impl Scenario {
    /// The target aggregate after `events` (strictly applied, in order).
    #[track_caller]
    pub fn given(target: AggregateRef, events: impl IntoIterator<Item = Event>) -> Self {
        let mut state = AggregateState::new(target);
        for (i, event) in events.into_iter().enumerate() {
            if let Err(e) = apply(&mut state, &event) {
                panic!(
                    "given event #{i} does not apply: {e}\nevent: {event:#?}\nstate: {state:#?}"
                );
            }
        }
        Self {
            state,
            facts: Facts::default(),
            actor: Actor::Platform,
            scope: None,
            now: NOW,
        }
    }

    /// The target aggregate with no history.
    pub fn empty(target: AggregateRef) -> Self {
        Self::given(target, [])
    }

    /// Facts the command service would have loaded.
    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }

    /// Who acts (default: the platform token).
    #[allow(clippy::wrong_self_convention, reason = "reads as given/as_actor/when")]
    pub fn as_actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// The tenant named in the subject. Default: none for platform commands, the target's
    /// tenant otherwise.
    pub fn in_scope(mut self, scope: Option<talkwai_domain::ids::TenantId>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The clock (default [`NOW`]).
    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// Decides `command`.
    pub fn when(self, command: Command) -> Outcome {
        let scope = self.scope.unwrap_or_else(|| {
            if command.is_platform() {
                None
            } else {
                self.state.target().tenant
            }
        });
        let ctx = Context {
            now: self.now,
            actor: &self.actor,
            tenant: scope,
            facts: &self.facts,
            nonce: NONCE,
        };
        let described = format!("{command:?}");
        let result = decide(&self.state, command, &ctx);
        Outcome {
            before: self.state.clone(),
            state: self.state,
            command: described,
            result,
        }
    }
}

/// What `decide` answered, with the state the accepted events lead to.
#[derive(Debug)]
pub struct Outcome {
    before: AggregateState,
    state: AggregateState,
    command: String,
    result: Result<Decision<Event>, DomainError>,
}

impl Outcome {
    #[track_caller]
    fn decision(&self) -> &Decision<Event> {
        match &self.result {
            Ok(decision) => decision,
            Err(e) => panic!(
                "expected the command to be accepted, got {} ({e})\ncommand: {}\nstate: {:#?}",
                e.code(),
                self.command,
                self.before
            ),
        }
    }

    /// Asserts the command was accepted with exactly `expected`, and applies them (strictly) to
    /// the state, checking that each one counts as one version.
    #[track_caller]
    pub fn then_events(mut self, expected: impl IntoIterator<Item = Event>) -> Self {
        let expected: Vec<Event> = expected.into_iter().collect();
        let events = self.decision().events.clone();
        assert_eq!(
            events, expected,
            "unexpected events\ncommand: {}\nstate: {:#?}",
            self.command, self.before
        );
        for event in &events {
            let version = self.state.version();
            if let Err(e) = apply(&mut self.state, event) {
                panic!(
                    "decided event does not apply: {e}\nevent: {event:#?}\nstate: {:#?}",
                    self.state
                );
            }
            assert_eq!(
                self.state.version(),
                version + 1,
                "an event must count as one version"
            );
        }
        self
    }

    /// Asserts the command was accepted as a no-op: no events and no guard changes.
    #[track_caller]
    pub fn then_no_events(self) -> Self {
        let decision = self.decision();
        assert!(
            decision.events.is_empty() && decision.guards.is_empty(),
            "expected a no-op, got {decision:#?}\ncommand: {}",
            self.command
        );
        self
    }

    /// Asserts the guard changes of an accepted command.
    #[track_caller]
    pub fn then_guards(self, expected: impl IntoIterator<Item = GuardChange>) -> Self {
        let expected: Vec<GuardChange> = expected.into_iter().collect();
        assert_eq!(
            self.decision().guards,
            expected,
            "unexpected guard changes\ncommand: {}",
            self.command
        );
        self
    }

    /// Asserts the command was rejected with `code` about `field`; returns the error for more
    /// checks.
    #[track_caller]
    pub fn then_error(self, code: ErrorCode, field: Option<&str>) -> DomainError {
        match self.result {
            Ok(decision) => panic!(
                "expected {code} (field {field:?}), got accepted {decision:#?}\ncommand: {}\nstate: {:#?}",
                self.command, self.before
            ),
            Err(e) => {
                assert_eq!(
                    (e.code(), e.field()),
                    (code, field),
                    "unexpected rejection: {e}\ncommand: {}",
                    self.command
                );
                let message = e.to_string();
                assert!(
                    !message.is_empty() && !message.ends_with('.'),
                    "error messages are non-empty, without trailing period: {message:?}"
                );
                e
            }
        }
    }

    /// Runs `check` on the state after the accepted events (call after `then_events`).
    pub fn then_state(self, check: impl FnOnce(&AggregateState)) -> Self {
        check(&self.state);
        self
    }

    /// The state after the accepted events (call after `then_events`).
    pub fn state(&self) -> &AggregateState {
        &self.state
    }
}
