//! The query API: InstaQL-shaped queries (the seed's `db.useQuery` shape) answered from the
//! PostgreSQL read models, over NATS (`talkwai.qry.<tenant>`, `talkwai.qry.platform`).
//!
//! ```json
//! {"tenants": {"$": {"where": {"id": "<uuid>"}},
//!              "members": {"$": {"where": {"status": "active"}}},
//!              "tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20},
//!                        "agent": {}, "assignedTo": {}}}}
//! ```
//!
//! Unlike InstantDB, `order`, `limit`, `offset` and cursors are honored at every level,
//! server-side (the seed's dashboard query asks for 20 tasks *per tenant*). As in InstaQL, a
//! level without `limit` (or `first`/`last`) returns every matching row; an answer that would
//! pass the service's row cap (all levels together) is refused with `too_many_rows`, never cut
//! short.
//!
//! # Architecture invariant
//! Reads the stable views (`talkwai.*`) only, never the event log or a generation schema; the
//! tenant scope comes from the caller's token and is added to every level and every link.
//!
//! The crate is also the query service's binary, `talkwai-query-service` (`src/main.rs`): a
//! process of its own, so queries scale apart from projection; [`QueryServer`] is what it runs
//! (its own NATS connection, PostgreSQL pool, readiness and liveness).
//!
//! # Layout
//! - [`config`]: settings from flags and `TALKWAI_*` environment variables.
//! - [`server`]: the service as a process runs it.
//! - [`model`]: namespaces, fields, links, indexes.
//! - [`parse`]: the InstaQL shape into a typed query.
//! - [`exec`]: SQL per level, bound parameters only.
//! - [`service`]: the NATS endpoint, tokens, read-your-writes; [`reached`]: how far the read
//!   models are known to have come, which `minSeq` waits on without holding a connection.
//! - [`live`]: live queries; [`feed`]: the projector's change notifications they follow.

pub mod config;
pub mod error;
pub mod exec;
pub mod feed;
pub mod live;
pub mod model;
pub mod parse;
pub mod reached;
pub mod server;
pub mod service;

pub use config::Config;
pub use error::QueryError;
pub use exec::{Scope, execute};
pub use parse::{Audience, parse};
pub use server::{QueryServer, StartError};
pub use service::QueryService;
