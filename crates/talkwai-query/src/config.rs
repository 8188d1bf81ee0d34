//! Configuration of the query service, from flags or `TALKWAI_*` environment variables (see
//! README, "Query service configuration").

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use talkwai_auth::{AuthArgs, RateLimitConfig};

use crate::exec::DEFAULT_MAX_ROWS;

/// Everything the query service needs to start.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// NATS server URL(s), comma separated.
    #[command(flatten)]
    pub nats: talkwai_service::NatsArgs,
    /// PostgreSQL connection string (URL or `key=value` form) of the read models.
    #[arg(long, env = "TALKWAI_DATABASE_URL")]
    pub database_url: String,
    /// PostgreSQL connections.
    #[arg(long, env = "TALKWAI_QUERY_POOL_SIZE", default_value_t = 4)]
    pub pool_size: usize,
    /// The platform token, JWT secret, issuer, audience and key files.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Per-tenant query rate limit.
    #[command(flatten)]
    pub rate_limit: RateLimitConfig,
    /// Most rows one query answer holds, all levels together; a query over it is refused with
    /// `too_many_rows` (ask for pages with `limit` and `after`).
    #[arg(long, env = "TALKWAI_QUERY_MAX_ROWS", default_value_t = DEFAULT_MAX_ROWS, value_parser = at_least_one)]
    pub max_rows: usize,
    /// Shortest time between two evaluations of one live query, in milliseconds: a burst of
    /// changes gives a dashboard at most one update per interval, ending on the latest answer.
    #[arg(long, env = "TALKWAI_QUERY_LIVE_INTERVAL_MS", default_value_t = 20)]
    pub live_interval_ms: u64,
    /// Name of this instance.
    #[arg(long, env = "TALKWAI_INSTANCE", default_value = "query-1")]
    pub instance: String,
    /// `/livez` fails after this many seconds in which the live-query refresher did not go
    /// round (a restart is then due).
    #[arg(long, env = "TALKWAI_QUERY_LIVENESS_SECS", default_value_t = 60)]
    pub liveness_secs: u64,
}

/// A positive count.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{text} is not a positive integer")),
        Ok(n) => Ok(n),
    }
}

impl Config {
    /// A configuration for tests: the given NATS and PostgreSQL URLs and secrets, no rate
    /// limit, defaults otherwise.
    pub fn for_tests(
        nats_url: &str,
        database_url: &str,
        platform_token: &str,
        jwt_secret: &str,
    ) -> Self {
        Self {
            nats: talkwai_service::NatsArgs::new(nats_url),
            database_url: database_url.to_owned(),
            pool_size: 4,
            auth: AuthArgs::with_secrets(
                SecretString::from(platform_token.to_owned()),
                SecretString::from(jwt_secret.to_owned()),
            ),
            rate_limit: RateLimitConfig::OFF,
            max_rows: DEFAULT_MAX_ROWS,
            live_interval_ms: 20,
            instance: "query-test".to_owned(),
            liveness_secs: 60,
        }
    }

    /// Shortest time between two evaluations of one live query.
    pub fn live_interval(&self) -> Duration {
        Duration::from_millis(self.live_interval_ms)
    }

    /// How long the live-query refresher may stand still before `/livez` fails.
    pub fn liveness_after(&self) -> Duration {
        Duration::from_secs(self.liveness_secs.max(1))
    }
}
