//! `talkwai-bench`: throughput and latency of the TalkwAI backbone on this machine.
//!
//! Starts its own nats-server through the testkit with the production settings
//! (`sync_interval: always`, file store) and measures, in one run, raw JetStream baselines and
//! the real command service (in process), so every figure has a ratio to raw single durable
//! publishes measured on the same server a few seconds apart.
//!
//! ```text
//! cargo run --release -p talkwai-bench -- commands [--quick] [--sweep] [--json out.json]
//! cargo run --release -p talkwai-bench -- baselines
//! cargo run --release -p talkwai-bench -- all
//! cargo run --release -p talkwai-bench -- projection   # also queries, notify
//! ```
//!
//! Not a test: nothing asserts; it prints a table and writes JSON (default
//! `target/bench/<suite>.json`). See BENCHMARKS.md at the repository root for figures.
//!
//! # Layout
//! - [`suite`]: which scenarios each subcommand runs, and their budgets.
//! - [`baselines`]: raw single publishes, raw atomic batches, the eventstore appender.
//! - [`commands`]: the command service in process and its scenarios.
//! - [`drive`]: closed-loop callers and latency histograms.
//! - [`payload`]: the events and commands the scenarios send.
//! - [`report`]: rows, the table and the JSON file; [`machine`]: what it ran on.
//! - [`projection`], [`queries`], [`notify`]: the read side (with PostgreSQL from the
//!   testkit), each with its own raw baseline; [`stack`]: what they share.

mod baselines;
mod commands;
mod drive;
mod machine;
mod notify;
mod payload;
mod projection;
mod queries;
mod report;
mod stack;
mod suite;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Benchmarks of the TalkwAI backbone on a throw-away nats-server.
#[derive(Debug, Parser)]
#[command(name = "talkwai-bench", version)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    suite: SuiteName,
    /// Small counts and short runs (under a minute), for CI and smoke checks.
    #[arg(long, global = true)]
    quick: bool,
    /// Also measure the command service with other writer settings (group commit on/off,
    /// writes in flight 1, 4, 8...), to find the best one.
    #[arg(long, global = true)]
    sweep: bool,
    /// Where to write the JSON results (default `target/bench/<suite>.json`).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Time budget of each scenario in seconds (default 5, 1 with --quick).
    #[arg(long, global = true)]
    seconds: Option<f64>,
}

/// The suites; later ones (projections, queries) add variants here.
#[derive(Debug, Clone, Copy, Subcommand)]
enum SuiteName {
    /// Everything below.
    All,
    /// Commands through the command service (plus the raw reference for ratios).
    Commands,
    /// Raw JetStream and eventstore appender baselines.
    Baselines,
    /// Projector catch-up and a 1M-event rebuild beside raw PostgreSQL upserts (not in `all`).
    Projection,
    /// The seed's three queries over NATS beside hand-written SQL (not in `all`).
    Queries,
    /// Event committed to `taskUpdates` delivered, at 1,000 events/s (not in `all`).
    Notify,
}

impl SuiteName {
    fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Commands => "commands",
            Self::Baselines => "baselines",
            Self::Projection => "projection",
            Self::Queries => "queries",
            Self::Notify => "notify",
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let plan = suite::Plan {
        baselines: matches!(cli.suite, SuiteName::All | SuiteName::Baselines),
        commands: matches!(cli.suite, SuiteName::All | SuiteName::Commands),
        sweep: cli.sweep,
        budgets: suite::Budgets::new(cli.quick, cli.seconds),
    };
    let report = runtime.block_on(async {
        match cli.suite {
            SuiteName::Projection => projection::run(cli.quick).await,
            SuiteName::Queries => queries::run(cli.quick, cli.seconds).await,
            SuiteName::Notify => notify::run(cli.quick, cli.seconds).await,
            _ => suite::run(cli.suite.name(), cli.quick, plan).await,
        }
    })?;
    println!();
    println!("{}", report.table());
    for note in &report.notes {
        println!("note: {note}");
    }
    let path = cli.json.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/bench")
            .join(format!("{}.json", cli.suite.name()))
    });
    report.write_json(&path)?;
    println!("results written to {}", path.display());
    Ok(())
}
