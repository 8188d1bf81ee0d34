//! The projector's configuration (flags or `TALKWAI_*` environment variables) and its
//! PostgreSQL pool.

use clap::Args;
use deadpool_postgres::{Pool, Runtime};
use tokio_postgres::NoTls;

use crate::{PoisonPolicy, ProjectorError};

/// Configuration, from flags or `TALKWAI_*` environment variables.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// NATS server URL(s), comma separated.
    #[command(flatten)]
    pub nats: talkwai_service::NatsArgs,
    /// The master key that opens sealed personal fields.
    #[command(flatten)]
    pub keys: talkwai_keys::KeyArgs,
    /// PostgreSQL connection string (URL or `key=value` form).
    #[arg(long, env = "TALKWAI_DATABASE_URL")]
    pub database_url: String,
    /// Most events applied in one transaction.
    #[arg(long, env = "TALKWAI_PROJECTOR_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,
    /// How long a batch waits to fill once it has its first event, milliseconds.
    #[arg(long, env = "TALKWAI_PROJECTOR_BATCH_WAIT_MS", default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// What to do with an event that cannot be applied.
    #[arg(long, env = "TALKWAI_PROJECTOR_ON_POISON", value_enum, default_value_t = PoisonPolicy::Stop)]
    pub on_poison: PoisonPolicy,
    /// PostgreSQL connections.
    #[arg(long, env = "TALKWAI_PROJECTOR_POOL_SIZE", default_value_t = 4)]
    pub pool_size: usize,
    /// Name of this instance.
    #[arg(long, env = "TALKWAI_INSTANCE", default_value = "projector-1")]
    pub instance: String,
    /// Partitions the tenants are split into (1: one apply loop, no leases). Every instance
    /// of a deployment must use the same value.
    #[arg(long, env = "TALKWAI_PROJECTOR_PARTITIONS", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// How long a partition lease (and an instance heartbeat) lives without renewal,
    /// milliseconds: how soon the partitions of a dead instance are taken over.
    #[arg(long, env = "TALKWAI_PROJECTOR_LEASE_TTL_MS", default_value_t = 5000)]
    pub lease_ttl_ms: u64,
    /// `/livez` fails after this many seconds without progress: no successful lease round
    /// (partitioned), no healthy apply pass (unpartitioned); a restart is then due.
    #[arg(long, env = "TALKWAI_PROJECTOR_LIVENESS_SECS", default_value_t = 60)]
    pub liveness_secs: u64,
}

impl Config {
    /// A configuration for tests.
    pub fn for_tests(nats_url: &str, database_url: &str) -> Self {
        Self {
            nats: talkwai_service::NatsArgs::new(nats_url),
            keys: talkwai_keys::KeyArgs::default(),
            database_url: database_url.to_owned(),
            batch_size: 1000,
            batch_wait_ms: 5,
            on_poison: PoisonPolicy::Stop,
            pool_size: 4,
            instance: "projector-test".to_owned(),
            partitions: 1,
            lease_ttl_ms: 5000,
            liveness_secs: 60,
        }
    }
}

/// Creates a PostgreSQL pool for `url`.
pub fn pool(url: &str, size: usize) -> Result<Pool, ProjectorError> {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config.pool = Some(deadpool_postgres::PoolConfig::new(size.max(1)));
    config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .map_err(|e| ProjectorError::Pool(e.to_string()))
}
