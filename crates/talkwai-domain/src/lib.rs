//! The TalkwAI domain: every entity of the product's data model (tenants, members, admins,
//! agents, tasks and `$users`), their validated value types, commands and versioned events, the
//! deciders that turn a command into events, and the authorization policy.
//!
//! Event sourcing in two functions: [`decide`]`(&state, command, &ctx)` returns the events (and
//! the uniqueness guard changes) a command produces or a typed [`DomainError`];
//! [`evolve`]`(state, &event)` folds an event into the state. Both are pure.
//!
//! # Architecture invariant
//! This crate does no I/O and knows nothing of NATS, PostgreSQL, tokio or the wire envelopes:
//! it depends only on `serde`, `serde_json`, `uuid` and `thiserror` (and optionally `schemars`
//! to describe its types). CI checks it with `cargo tree`.
//!
//! # Layout
//! - [`values`], [`ids`], [`enums`]: validated building blocks.
//! - [`tenant`], [`member`], [`admin`], [`agent`], [`task`], [`user`]: one module per aggregate,
//!   each with its state, commands, events, `decide` and `apply`.
//! - [`guard`]: uniqueness guards for cross-aggregate invariants.
//! - [`erasure`]: what an erased subject's personal fields read as, and the refusal of new ones.
//! - [`aggregate`]: the enums over all aggregates and the top-level `decide`/`evolve`.
//! - [`upcast`]: each event type's version and the upcasters that read older ones.
//! - [`policy`]: who may do what.

pub mod admin;
pub mod agent;
pub mod aggregate;
pub mod context;
pub mod enums;
pub mod erasure;
pub mod error;
pub mod guard;
pub mod ids;
mod links;
pub mod member;
pub mod patch;
pub mod policy;
pub mod state;
pub mod task;
pub mod tenant;
pub mod upcast;
pub mod user;
pub mod values;

pub use aggregate::{
    ACTIONS, AggregateRef, AggregateState, Command, DecodeError, Event, EventBody, apply, decide,
    evolve,
};
pub use context::{Actor, Context, FactKey, Facts};
pub use error::{DomainError, EntityKind, ErrorCode};
pub use guard::{GuardChange, GuardEvent, GuardKey, GuardState};
pub use state::{Decision, EvolveError, Lifecycle, State};
pub use upcast::current_version;
