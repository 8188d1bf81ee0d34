//! The query service as a process runs it: built from its [`Config`] with a NATS connection
//! and a PostgreSQL pool of its own, its readiness and liveness for `/readyz` and `/livez`,
//! and [`QueryServer::run`] until shutdown. Tests and `talkwai up` may also run a
//! [`QueryService`] over a pool and client they already have.

use std::future::Future;

use deadpool_postgres::{Pool, Runtime};
use talkwai_telemetry::ops::{Check, Liveness, Readiness};
use tokio_postgres::NoTls;

use crate::config::Config;
use crate::error::QueryError;
use crate::service::QueryService;

/// Why the query service could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// NATS is unreachable.
    #[error("cannot connect to nats: {0}")]
    Connect(String),
    /// The PostgreSQL pool cannot be configured (a malformed URL, e.g.).
    #[error("cannot set up the postgresql pool: {0}")]
    Pool(String),
    /// The identity provider's public keys cannot be loaded.
    #[error("cannot load jwt public keys: {0}")]
    Keys(#[from] talkwai_auth::KeyError),
    /// The endpoints could not be registered, or serving failed.
    #[error("serving: {0}")]
    Serve(#[from] QueryError),
}

/// A built query service, ready to run.
#[derive(Debug)]
pub struct QueryServer {
    client: async_nats::Client,
    pool: Pool,
    service: QueryService,
}

impl QueryServer {
    /// Connects to NATS with the credentials of the URL or the environment and sets up the pool
    /// (connections are made on first use, so PostgreSQL may come up later: readiness says
    /// when it answers).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let options = config
            .nats
            .options()
            .map_err(|e| StartError::Connect(e.to_string()))?;
        Self::build_with(config, options).await
    }

    /// [`build`](Self::build) with these connect options (credentials, e.g.); the name,
    /// `retry_on_initial_connect` and the reconnect policy are set here.
    pub async fn build_with(
        config: Config,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, StartError> {
        let verifier = config.auth.verifier()?;
        let mut pool_config = deadpool_postgres::Config::new();
        pool_config.url = Some(config.database_url.clone());
        pool_config.pool = Some(deadpool_postgres::PoolConfig::new(config.pool_size.max(1)));
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| StartError::Pool(e.to_string()))?;
        let name = format!("talkwai-query-service/{}", config.instance);
        let client = config
            .nats
            .connect(name, options)
            .await
            .map_err(|e| StartError::Connect(e.to_string()))?;
        let service = QueryService::new(pool.clone(), verifier)
            .with_change_feed(config.database_url.clone())
            .with_rate_limit(config.rate_limit)
            .with_max_rows(config.max_rows)
            .with_live_interval(config.live_interval())
            .with_liveness_after(config.liveness_after());
        Ok(Self {
            client,
            pool,
            service,
        })
    }

    /// `/readyz`: NATS connected, PostgreSQL answers and the read models' views exist (the
    /// projector created them). JetStream is not asked: the query service never uses it.
    pub fn readiness(&self) -> Readiness {
        let pool = self.pool.clone();
        Readiness::new(move || {
            let pool = pool.clone();
            async move {
                let unreachable = |why: String| {
                    vec![
                        Check::fail("postgres", why),
                        Check::fail("read_models", "postgres is unreachable"),
                    ]
                };
                let conn = match pool.get().await {
                    Ok(conn) => conn,
                    Err(err) => return unreachable(err.to_string()),
                };
                let views = match conn
                    .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
                    .await
                {
                    Ok(row) => Check {
                        name: "read_models",
                        ok: true,
                        detail: format!("checkpoint {}", row.get::<_, i64>(0)),
                    },
                    Err(err)
                        if err.code()
                            == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                    {
                        Check::fail("read_models", "the projector has not created the views yet")
                    }
                    Err(err) => return unreachable(err.to_string()),
                };
                vec![Check::pass("postgres"), views]
            }
        })
        .with_nats_connection(self.client.clone())
    }

    /// `/livez`: the live-query refresher still goes round.
    pub fn liveness(&self) -> Liveness {
        self.service.liveness()
    }

    /// Serves queries, subscriptions and live-query controls until `shutdown` resolves, then
    /// drains the requests in hand.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), QueryError> {
        self.service.run(self.client, shutdown).await
    }
}

impl talkwai_service::binary::Service for QueryServer {
    type Config = Config;
    type Error = StartError;
    const BINARY: &'static str = "talkwai-query-service";
    const ABOUT: &'static str =
        "TalkwAI query service: InstaQL-shaped queries over the read models";

    async fn build(config: Config) -> Result<Self, StartError> {
        Self::build(config).await
    }

    fn readiness(&self) -> Readiness {
        self.readiness()
    }

    fn liveness(&self) -> Liveness {
        self.liveness()
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        Ok(self.run(shutdown).await?)
    }
}
