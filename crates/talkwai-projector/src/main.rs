//! `talkwai-projector`: keeps the PostgreSQL read models up to date until SIGINT/SIGTERM. The
//! query API over them is a service of its own (`talkwai-query-service`).

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser;
use talkwai_projector::{Config, Projector};

#[derive(Debug, Parser)]
#[command(
    name = "talkwai-projector",
    version,
    about = "TalkwAI projection service: the PostgreSQL read models"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Serve `/metrics`, `/livez` and `/readyz` on this address, e.g. `0.0.0.0:9102`.
    #[arg(long, env = "TALKWAI_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flushes exported spans when main returns.
    let _telemetry = talkwai_telemetry::init("talkwai-projector");
    let cli = Cli::parse();
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
    projector
        .run(talkwai_service::shutdown_signal())
        .await
        .context("running the projector")?;
    Ok(())
}
