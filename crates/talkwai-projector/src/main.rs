//! `talkwai-projector`: keeps the PostgreSQL read models up to date and answers queries on
//! `talkwai.qry.*` from them, until SIGINT/SIGTERM.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser;
use secrecy::SecretString;
use talkwai_auth::{KeyFiles, RateLimitConfig, TokenVerifier};
use talkwai_projector::{Config, Projector};
use talkwai_query::QueryService;

#[derive(Debug, Parser)]
#[command(
    name = "talkwai-projector",
    version,
    about = "TalkwAI projection service and query API"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Do not serve `talkwai.qry.*` (run the query API elsewhere).
    #[arg(long, env = "TALKWAI_NO_QUERIES")]
    no_queries: bool,
    /// The platform admin token, accepted by the query API.
    #[arg(long, env = "TALKWAI_PLATFORM_TOKEN", hide_env_values = true)]
    platform_token: Option<SecretString>,
    /// HS256 secret of member and admin JWTs.
    #[arg(long, env = "TALKWAI_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<SecretString>,
    /// Required JWT issuer.
    #[arg(long, env = "TALKWAI_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required JWT audience.
    #[arg(long, env = "TALKWAI_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// An external identity provider's EdDSA/RS256 public keys (PEM or JWKS file).
    #[command(flatten)]
    key_files: KeyFiles,
    /// Per-tenant query rate limit.
    #[command(flatten)]
    rate_limit: RateLimitConfig,
    /// Most rows one query answer holds, all levels together; a query over it is refused with
    /// `too_many_rows` (ask for pages with `limit` and `after`).
    #[arg(long, env = "TALKWAI_QUERY_MAX_ROWS", default_value_t = talkwai_query::exec::DEFAULT_MAX_ROWS, value_parser = at_least_one)]
    query_max_rows: usize,
    /// Serve `/metrics`, `/livez` and `/readyz` on this address, e.g. `0.0.0.0:9102`.
    #[arg(long, env = "TALKWAI_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// A positive count.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{text} is not a positive integer")),
        Ok(n) => Ok(n),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flushes exported spans when main returns.
    let _telemetry = talkwai_telemetry::init("talkwai-projector");
    let cli = Cli::parse();
    let database_url = cli.config.database_url.clone();
    let projector = Projector::build(cli.config)
        .await
        .context("starting the projector")?;
    let _ops = match cli.metrics_addr {
        Some(addr) => {
            let readiness = talkwai_projector::health::readiness(
                projector.pool().clone(),
                projector.store().clone(),
            );
            Some(
                talkwai_telemetry::ops::serve_ops_with(addr, readiness, projector.liveness())
                    .await
                    .context("serving /metrics")?,
            )
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let queries = if cli.no_queries {
        None
    } else {
        let verifier = TokenVerifier::new(
            cli.platform_token,
            cli.jwt_secret,
            cli.jwt_issuer.as_deref(),
            cli.jwt_audience.as_deref(),
        )
        .with_public_keys(cli.key_files.load().context("loading jwt public keys")?);
        let service = QueryService::new(projector.pool().clone(), verifier)
            .with_change_feed(database_url)
            .with_rate_limit(cli.rate_limit)
            .with_max_rows(cli.query_max_rows);
        let client = projector.store().client().clone();
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(async move {
            service
                .run(client, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        }))
    };
    let mut rx = stop_rx;
    let mut projecting = tokio::spawn(async move {
        projector
            .run(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    let ended_early = tokio::select! {
        () = shutdown_signal() => None,
        result = &mut projecting => Some(result),
    };
    let _ = stop_tx.send(true);
    let result = match ended_early {
        Some(result) => result,
        None => projecting.await,
    };
    result
        .context("projector task")?
        .context("running the projector")?;
    if let Some(queries) = queries {
        queries
            .await
            .context("query task")?
            .context("running the query service")?;
    }
    Ok(())
}
