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

mod baselines;
mod commands;
mod drive;
mod machine;
mod payload;
mod report;
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
}

impl SuiteName {
    fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Commands => "commands",
            Self::Baselines => "baselines",
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
    let report = runtime.block_on(suite::run(cli.suite.name(), cli.quick, plan))?;
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
