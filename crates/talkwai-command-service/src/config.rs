//! Configuration, from flags or `TALKWAI_*` environment variables (see README).

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use talkwai_auth::{AuthArgs, RateLimitConfig};

/// Everything the command service needs to start.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// NATS server URL(s), comma separated.
    #[command(flatten)]
    pub nats: talkwai_service::NatsArgs,
    /// The platform token, JWT secret, issuer, audience and key files.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Per-tenant command rate limit.
    #[command(flatten)]
    pub rate_limit: RateLimitConfig,
    /// The master key that seals personal fields (none: they are written in clear).
    #[command(flatten)]
    pub keys: talkwai_keys::KeyArgs,
    /// Event stream replicas (1 single node, 3 cluster); 0 keeps an existing stream's count
    /// and creates a new stream with 1.
    #[arg(long, env = "TALKWAI_STREAM_REPLICAS", default_value_t = 0)]
    pub stream_replicas: usize,
    /// The event stream's `Nats-Msg-Id` window in seconds (unset: keep the stream's, 120 s for
    /// a new one). Command ids do not rely on it: their records in the log refuse a reused id
    /// at any time.
    #[arg(long, env = "TALKWAI_DUPLICATE_WINDOW_SECS")]
    pub duplicate_window_secs: Option<u64>,
    /// Commands handled at once by this instance.
    #[arg(long, env = "TALKWAI_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Aggregates kept in memory (≈ 2.2 KiB each for a task with its command records: the
    /// default bounds the cache near 45 MiB; a miss costs one read, never correctness).
    #[arg(long, env = "TALKWAI_CACHE_CAPACITY", default_value_t = 20_000)]
    pub cache_capacity: usize,
    /// Attempts when concurrent writers conflict.
    #[arg(long, env = "TALKWAI_CONFLICT_ATTEMPTS", default_value_t = 8)]
    pub conflict_attempts: u32,
    /// Group concurrent commands into one durable write.
    #[arg(long, env = "TALKWAI_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub group_commit: bool,
    /// Durable writes in flight at once.
    #[arg(long, env = "TALKWAI_WRITES_IN_FLIGHT", default_value_t = 1)]
    pub writes_in_flight: usize,
    /// While a durable write is in flight and fewer than 64 messages are queued, wait up to
    /// this many microseconds for more commands before writing (0: never wait).
    #[arg(long, env = "TALKWAI_GROUP_LINGER_US", default_value_t = 2000)]
    pub group_linger_us: u64,
    /// Partitions the tenants are split into between instances; each is decided from memory by
    /// the one instance holding its lease (0: no ownership, every command reads the heads it
    /// depends on). Every instance must use the same number.
    #[arg(long, env = "TALKWAI_COMMAND_PARTITIONS", default_value_t = 64)]
    pub partitions: u32,
    /// How long a partition lease lives without renewal, milliseconds (at least 1000): how
    /// soon the tenants of a dead instance move to the others.
    #[arg(long, env = "TALKWAI_COMMAND_LEASE_TTL_MS", default_value_t = 2000)]
    pub lease_ttl_ms: u64,
    /// Name of this instance in service discovery.
    #[arg(long, env = "TALKWAI_INSTANCE", default_value = "command-1")]
    pub instance: String,
    /// How long shutdown waits for in-flight commands, in seconds.
    #[arg(long, env = "TALKWAI_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// A configuration for tests: the given NATS URL and secrets, no rate limit, defaults
    /// otherwise (`TALKWAI_GROUP_LINGER_US` is honoured, so benchmarks can compare lingers).
    pub fn for_tests(nats_url: &str, platform_token: &str, jwt_secret: &str) -> Self {
        Self {
            nats: talkwai_service::NatsArgs::new(nats_url),
            auth: AuthArgs::with_secrets(
                SecretString::from(platform_token.to_owned()),
                SecretString::from(jwt_secret.to_owned()),
            ),
            rate_limit: RateLimitConfig::OFF,
            keys: talkwai_keys::KeyArgs::default(),
            stream_replicas: 1,
            duplicate_window_secs: None,
            max_in_flight: 1024,
            cache_capacity: 10_000,
            conflict_attempts: 8,
            group_commit: true,
            writes_in_flight: 1,
            group_linger_us: std::env::var("TALKWAI_GROUP_LINGER_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000),
            partitions: 64,
            lease_ttl_ms: 2000,
            instance: "command-test".to_owned(),
            shutdown_grace_secs: 10,
        }
    }

    /// The partition lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms.max(1000))
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
