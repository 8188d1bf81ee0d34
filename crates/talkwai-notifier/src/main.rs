//! `talkwai-notifier`: room topics from the event log and presence, until SIGINT/SIGTERM.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser;
use talkwai_notifier::{Config, Notifier};

#[derive(Debug, Parser)]
#[command(
    name = "talkwai-notifier",
    version,
    about = "TalkwAI notifier: rooms, notifications, presence"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Serve `/metrics`, `/livez` and `/readyz` on this address, e.g. `0.0.0.0:9103`.
    #[arg(long, env = "TALKWAI_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flushes exported spans when main returns.
    let _telemetry = talkwai_telemetry::init("talkwai-notifier");
    let cli = Cli::parse();
    let notifier = Notifier::build(cli.config)
        .await
        .context("starting the notifier")?;
    let _ops = match cli.metrics_addr {
        Some(addr) => Some(
            talkwai_telemetry::ops::serve_ops_with(addr, notifier.readiness(), notifier.liveness())
                .await
                .context("serving /metrics")?,
        ),
        None => None,
    };
    notifier
        .run(talkwai_service::shutdown_signal())
        .await
        .context("running the notifier")?;
    Ok(())
}
