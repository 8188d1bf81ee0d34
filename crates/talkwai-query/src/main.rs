//! `talkwai-query-service`: answers queries and live queries on `talkwai.qry.*` from the
//! PostgreSQL read models until SIGINT/SIGTERM.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser;
use talkwai_query::{Config, QueryServer};

#[derive(Debug, Parser)]
#[command(
    name = "talkwai-query-service",
    version,
    about = "TalkwAI query service: InstaQL-shaped queries over the read models"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Serve `/metrics`, `/livez` and `/readyz` on this address, e.g. `0.0.0.0:9104`.
    #[arg(long, env = "TALKWAI_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flushes exported spans when main returns.
    let _telemetry = talkwai_telemetry::init("talkwai-query-service");
    let cli = Cli::parse();
    let server = QueryServer::build(cli.config)
        .await
        .context("starting the query service")?;
    let _ops = match cli.metrics_addr {
        Some(addr) => Some(
            talkwai_telemetry::ops::serve_ops_with(addr, server.readiness(), server.liveness())
                .await
                .context("serving /metrics")?,
        ),
        None => None,
    };
    server
        .run(talkwai_service::shutdown_signal())
        .await
        .context("running the query service")?;
    Ok(())
}
