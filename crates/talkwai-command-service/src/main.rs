//! `talkwai-command-service`: serves the command endpoints until SIGINT/SIGTERM.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser;
use talkwai_command_service::{CommandService, Config};

#[derive(Debug, Parser)]
#[command(
    name = "talkwai-command-service",
    version,
    about = "TalkwAI command service"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Serve `/metrics`, `/livez` and `/readyz` on this address, e.g. `0.0.0.0:9101`.
    #[arg(long, env = "TALKWAI_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flushes exported spans when main returns.
    let _telemetry = talkwai_telemetry::init("talkwai-command-service");
    let cli = Cli::parse();
    let service = CommandService::build(cli.config)
        .await
        .context("starting the command service")?;
    let _ops = match cli.metrics_addr {
        Some(addr) => Some(
            talkwai_telemetry::ops::serve_ops(addr, service.readiness())
                .await
                .context("serving /metrics")?,
        ),
        None => None,
    };
    service
        .run(talkwai_service::shutdown_signal())
        .await
        .context("running the command service")?;
    Ok(())
}
