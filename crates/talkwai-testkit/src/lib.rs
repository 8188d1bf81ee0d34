//! Throw-away servers for tests, benches and `talkwai up`.
//!
//! [`NatsServer`] starts a real `nats-server` with JetStream (`sync_interval: always`) and
//! [`Postgres`] a real PostgreSQL, each on a free port of 127.0.0.1 with its own temp dir, so
//! any number of them run side by side. A handle kills its server and deletes its temp dir on
//! drop; `kill`/`stop` and `restart` keep the port and the data for crash and restart tests.
//! Given a data dir and `persistent(true)`, the same types run the long-lived local servers of
//! `talkwai up`. [`NatsCluster`] runs several `nats-server`s routed into one JetStream cluster
//! (3 by default) for replication and fail-over tests.
//!
//! ```no_run
//! # async fn example() -> Result<(), talkwai_testkit::TestkitError> {
//! let nats = talkwai_testkit::NatsServer::start().await?;
//! let pg = talkwai_testkit::Postgres::start().await?;
//! let db = pg.create_unique_database("my_test").await?;
//! println!("nats at {}, postgres at {db}", nats.url());
//! # Ok(())
//! # }
//! ```
//!
//! Binaries are found as described in [`discover`]: `scripts/dev.sh setup` installs the pinned
//! `nats-server` into `.tools/bin`; PostgreSQL comes from the system.
//!
//! # Layout
//! - [`nats`] holds [`NatsServer`] and its builder.
//! - [`cluster`] holds [`NatsCluster`]: nodes, routes, meta and stream leaders, kill/restart.
//! - [`postgres`] holds [`Postgres`] and its builder (runs as `nobody` when the caller is root).
//! - [`discover`] says where the server binaries are looked for; [`bins`] builds and finds the
//!   workspace's own binaries for tests that run them as processes.
//! - [`error`] holds [`TestkitError`].
//! - [`wait`] holds the waits of tests: [`wait::wait_until`] (a deadline and a pause around any
//!   probe), [`wait::wait_for_endpoint`] (until a NATS endpoint answers) and service pings.
//! - [`scan`] holds the erasure proofs' searches: files under a store directory, or text,
//!   holding marker strings or key bytes.
//! - [`services`] holds what the services' test harnesses share: [`services::ServiceTask`],
//!   command requests, test tokens, the headers of an event appended around the service.
//!
//! This crate is for tests and local tooling: production services never depend on it.

pub mod bins;
pub mod cluster;
pub mod discover;
pub mod error;
pub mod nats;
pub mod postgres;
pub mod scan;
pub mod services;
pub mod trace;
mod util;
pub mod wait;

pub use cluster::{NatsCluster, NatsClusterBuilder};
pub use error::{Result, TestkitError};
pub use nats::{NatsServer, NatsServerBuilder};
pub use postgres::{Postgres, PostgresBuilder};
pub use util::free_port;
pub use wait::http_get;
