//! The projection service: turns the event log into PostgreSQL read models.
//!
//! Events are read through a durable JetStream consumer and applied in batches: one
//! transaction writes the rows (multi-row statements, one per table) and the checkpoint (the
//! last stream sequence applied); the batch is acknowledged after the commit. On every start
//! the consumer is re-created at the checkpoint + 1, so the checkpoint in PostgreSQL, not the
//! consumer's state, decides where to resume; per-row `last_seq` guards make a re-delivered
//! event harmless.
//!
//! Read models live in generation schemas (`talkwai_g<N>`); dashboards read the stable views in
//! schema `talkwai`, which a blue/green rebuild repoints atomically.
//!
//! With `TALKWAI_PROJECTOR_PARTITIONS=P` > 1, tenants are split into P partitions, each with its
//! own checkpoint row, consumer and apply loop; instances share them out through leases on NATS
//! KV and take over the partitions of an instance that dies ([`partition`], [`lease`]).
//!
//! # Architecture invariant
//! Reads the log, writes only its own schemas; never publishes events or commands.
//!
//! # Layout
//! - [`schema`]: migrations, generations, views.
//! - [`rows`]: how each event changes a row.
//! - [`apply`]: one batch, one transaction.
//! - [`partition`]: which partition an event belongs to; checkpoint layouts.
//! - [`lease`]: which instance applies which partition.
//! - [`status`]: lag, checkpoints, read-your-writes waits.
//! - [`health`]: readiness for `/readyz` (metrics are recorded with the `metrics` macros).
//! - [`dead_letters`]: dead letters and retries for operators.
//! - [`rebuild`]: blue/green rebuilds, rollbacks, point-in-time replays.
//! - `config`: flags and the PostgreSQL pool; `pass`: the apply loop of a partition; `state`:
//!   its SQL (checkpoint, generation lock, stops); `fetch`: batches gathered and decoded ahead;
//!   `alerts`: dead-letter alerts; `lag`: lag gauges.

mod alerts;
pub mod apply;
mod config;
pub mod dead_letters;
pub mod error;
mod fetch;
pub mod health;
mod lag;
pub mod lease;
pub mod partition;
mod pass;
pub mod rebuild;
pub mod rows;
pub mod schema;
mod state;
pub mod status;

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use talkwai_eventstore::{EventStore, StreamSettings};
use tracing::warn;

pub use apply::PoisonPolicy;
pub use config::{Config, pool};
pub use error::ProjectorError;
pub use partition::Slot;
pub use pass::consumer_name;

/// A built projector, ready to run (cheap to clone: one per partition worker).
#[derive(Debug, Clone)]
pub struct Projector {
    pool: Pool,
    store: EventStore,
    config: Config,
    /// Opens sealed personal fields (`None`: no master key configured).
    keys: Option<talkwai_keys::KeyStore>,
    /// Beaten by the lease coordinator's successful rounds (partitioned) or by a healthy apply
    /// pass (unpartitioned); `/livez` fails when it goes silent.
    progress: talkwai_telemetry::ops::Watchdog,
}

impl Projector {
    /// Connects to NATS and PostgreSQL and applies migrations.
    pub async fn build(config: Config) -> Result<Self, ProjectorError> {
        // The credentials of the URL or the environment sign in; the reconnect policy is the
        // shared one.
        let options = config
            .nats
            .options()
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        Self::build_with(config, options).await
    }

    /// [`build`](Self::build) with these connect options (credentials, e.g.); the name,
    /// `retry_on_initial_connect` and the reconnect policy are set here.
    pub async fn build_with(
        config: Config,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, ProjectorError> {
        let name = format!("talkwai-projector/{}", config.instance);
        let client = config
            .nats
            .connect(name, options)
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        let store = EventStore::open(client.clone(), &StreamSettings::default()).await?;
        let keys = config
            .keys
            .open(&async_nats::jetstream::new(client), store.replicas())
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        let pool = pool(&config.database_url, config.pool_size)?;
        let mut attempt = 0u32;
        loop {
            match pool.get().await {
                Ok(conn) => {
                    schema::migrate(&conn).await?;
                    break;
                }
                Err(err) if attempt < 30 => {
                    attempt += 1;
                    warn!(error = %err, attempt, "postgres not reachable yet");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10))))
                        .await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let progress = talkwai_telemetry::ops::Watchdog::new(
            if config.partitions > 1 {
                "leases"
            } else {
                "projection"
            },
            Duration::from_secs(config.liveness_secs.max(1)),
        );
        Ok(Self {
            pool,
            store,
            config,
            keys,
            progress,
        })
    }

    /// What `/livez` checks: the projector still makes progress (see
    /// [`Config::liveness_secs`]).
    pub fn liveness(&self) -> talkwai_telemetry::ops::Liveness {
        talkwai_telemetry::ops::Liveness::watchdogs(vec![self.progress.clone()])
    }

    /// The PostgreSQL pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The key store that opens sealed personal fields, when a master key is configured.
    pub fn keys(&self) -> Option<&talkwai_keys::KeyStore> {
        self.keys.as_ref()
    }

    /// Applies events until `shutdown` resolves. PostgreSQL or NATS failures are retried with
    /// backoff (resuming from the checkpoint); a poison event stops the projection (policy
    /// `stop`) until `talkwai projections retry`. With several partitions, applies the
    /// partitions whose leases this instance holds.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        tokio::pin!(shutdown);
        let lag = tokio::spawn(lag::export_lag(self.pool.clone(), self.store.clone()));
        let result = if self.config.partitions <= 1 {
            self.partition_loop(Slot::WHOLE, &mut shutdown).await
        } else {
            match lease::Coordinator::new(self).await {
                Ok(coordinator) => coordinator.run(&mut shutdown).await,
                Err(err) => Err(err),
            }
        };
        lag.abort();
        result
    }
}
