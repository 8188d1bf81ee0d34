//! Given/when/then, policy, wire and property tests for the domain crate. One test binary with
//! one module per concern, sharing the [`scenario`] harness and the [`fixtures`].

mod admin;
mod agent;
mod erasure;
mod events;
mod fixtures;
mod member;
mod policy;
mod props;
mod scenario;
mod task;
mod tenant;
mod user;
mod versions;
mod wire;
