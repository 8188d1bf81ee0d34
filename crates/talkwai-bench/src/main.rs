//! `talkwai-bench`: throughput, latency and memory of the TalkwAI backbone on this machine.
//!
//! Starts its own nats-server (and PostgreSQL) through the testkit with the production
//! settings (`sync_interval: always`, file store) and measures, in one run, raw baselines and
//! the real services beside them, so every figure has a ratio to a baseline measured on the
//! same servers a few seconds apart.
//!
//! ```text
//! cargo run --release -p talkwai-bench -- all [--quick] [--check FILE] [--record FILE]
//! cargo run --release -p talkwai-bench -- commands [--quick] [--sweep] [--no-peer] [--json out.json]
//! cargo run --release -p talkwai-bench -- baselines
//! cargo run --release -p talkwai-bench -- e2e [--sweep]  # also projection, queries, notify
//! cargo run --release -p talkwai-bench -- live         # 10,000 live queries, 1,000 tenants
//! cargo run --release -p talkwai-bench -- faults [--quick]  # fails on a broken invariant
//! ```
//!
//! Not a test: it prints a table and writes JSON (default `target/bench/<suite>.json`) and a
//! chart (`target/bench/<suite>.svg`); `--check` turns it into a regression guard (a stage
//! holding a failed ratio is measured once more, and only a ratio that fails twice fails the
//! run). See BENCHMARKS.md at the repository root for figures.
//!
//! # Layout
//! - [`suite`]: which scenarios each subcommand runs, and their budgets.
//! - [`baselines`]: raw single publishes, raw atomic batches, the eventstore appender.
//! - [`commands`]: the command service in process and its scenarios.
//! - [`peer`]: the same commands through cqrs-es + postgres-es (`bench/peer-cqrs-es`, outside
//!   the workspace) on a durable PostgreSQL, for a ratio to the peer on every command row.
//! - [`e2e`]: the services as separate processes ([`procs`]): fixed-rate command latency,
//!   end to end (query, `taskUpdates`), peak RSS.
//! - [`drive`]: closed-loop callers, the open-loop pacer, latency histograms.
//! - [`payload`]: the events and commands the scenarios send.
//! - [`report`]: rows, the table and the JSON file; [`machine`]: what it ran on;
//!   [`chart`]: the SVG; [`guard`]: `--check` / `--record`.
//! - [`faults`]: the fault suite (SIGKILL of each service and of nats-server, PostgreSQL
//!   stopped at once) under load: invariants asserted, recovery times measured.
//! - [`live`]: 10,000 live queries over 1,000 tenants (services as processes): update
//!   latency, query-service CPU, one busy tenant beside quiet ones.
//! - [`projection`], [`queries`], [`notify`]: the read side (with PostgreSQL from the
//!   testkit), each with its own raw baseline; [`stack`]: what they share.

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod baselines;
mod chart;
mod commands;
mod cpu;
mod drive;
mod e2e;
mod faults;
mod guard;
mod live;
mod machine;
mod notify;
mod payload;
mod peer;
mod procs;
mod projection;
mod queries;
mod report;
mod sealing;
mod stack;
mod suite;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
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
    /// writes in flight 1, 4, 8...), to find the best one; `e2e`: end to end at rising rates,
    /// to find the knee.
    #[arg(long, global = true)]
    sweep: bool,
    /// `commands` and `all`: skip the cqrs-es peer (built and run by default, never with
    /// `--quick`).
    #[arg(long, global = true)]
    no_peer: bool,
    /// Where to write the JSON results (default `target/bench/<suite>.json`).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Time budget of each scenario in seconds (default 5, 1 with --quick).
    #[arg(long, global = true)]
    seconds: Option<f64>,
    /// Compare every ratio with the values recorded in FILE; fail when one falls below half
    /// of its recorded value (latency ratios: rises above twice it).
    #[arg(long, global = true, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Record this run's ratios in FILE (merged with what it holds: the worse value stays).
    #[arg(long, global = true, value_name = "FILE")]
    record: Option<PathBuf>,
    /// `faults` only: run just these scenarios (keys, comma separated, e.g.
    /// `nats-restart,stream-leader`).
    #[arg(long, global = true, value_name = "KEYS")]
    only: Option<String>,
    /// `e2e` only: run just the end-to-end sweep at these rates (commands/s, comma separated,
    /// e.g. `100,1000,2000`), each of them even after a miss, instead of the fixed scenarios
    /// and the default sweep.
    #[arg(long, global = true, value_name = "RATES", value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Where to write the chart (default `target/bench/<suite>.svg`; a full `all` run also
    /// writes `docs/benchmarks.svg`).
    #[arg(long, global = true, value_name = "FILE")]
    chart: Option<PathBuf>,
}

/// The suites.
#[derive(Debug, Clone, Copy, Subcommand)]
enum SuiteName {
    /// Everything below, in one report (JSON, table, chart).
    All,
    /// Commands through the command service (plus the raw reference for ratios), beside the
    /// same commands through cqrs-es + postgres-es (skipped by `--quick` and `--no-peer`).
    Commands,
    /// Raw JetStream and eventstore appender baselines.
    Baselines,
    /// The services as separate processes: create-task at 500/s, end to end at 1,000/s
    /// (query with minSeq, live-query update, taskUpdates), peak RSS of each service; with
    /// `--sweep`, end to end at rising rates to find the knee.
    E2e,
    /// 10,000 live queries over 1,000 tenants (services as processes): update latency at
    /// 1,000 events/s spread or in one tenant, query-service CPU, a busy tenant's cost to others.
    Live,
    /// Projector catch-up and a 1M-event rebuild beside raw PostgreSQL upserts.
    Projection,
    /// The seed's three queries over NATS beside hand-written SQL.
    Queries,
    /// Event committed to `taskUpdates` delivered, at 1,000 events/s, notifier in process.
    Notify,
    /// What sealing personal fields costs: create-task x64 with and without a master key,
    /// alternated over rounds in one run (the median `sealed / clear` against the 0.90 target).
    Sealing,
    /// Faults under load (SIGKILL of every service, of nats-server and of the R3 stream
    /// leader, PostgreSQL stopped at once): recovery times against their targets; exits
    /// non-zero when an invariant breaks (a command lost or applied twice, read models
    /// unequal to the log, dead letters, presence not back, a survivor gone).
    Faults,
}

impl SuiteName {
    fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Commands => "commands",
            Self::Baselines => "baselines",
            Self::E2e => "e2e",
            Self::Live => "live",
            Self::Projection => "projection",
            Self::Queries => "queries",
            Self::Notify => "notify",
            Self::Faults => "faults",
            Self::Sealing => "sealing",
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
        peer: !cli.quick && !cli.no_peer,
        budgets: suite::Budgets::new(cli.quick, cli.seconds),
    };
    let quick = cli.quick;
    let seconds = cli.seconds;
    let mut owners: Vec<(Stage, Vec<String>)> = Vec::new();
    let mut violations: Vec<String> = Vec::new();
    let mut report = runtime.block_on(async {
        match cli.suite {
            SuiteName::Projection => projection::run(quick, None).await,
            SuiteName::Queries => queries::run(quick, seconds, None).await,
            SuiteName::Notify => notify::run(quick, seconds).await,
            SuiteName::E2e => {
                let scope = match cli.rates.clone() {
                    Some(rates) => e2e::Scope::Rates(rates),
                    None if cli.sweep => e2e::Scope::Sweep,
                    None => e2e::Scope::Fixed,
                };
                e2e::run(quick, seconds, scope).await
            }
            SuiteName::Live => live::run(quick, seconds).await,
            SuiteName::Sealing => sealing::run(quick, seconds).await,
            SuiteName::Faults => {
                faults::run(quick, cli.only.as_deref())
                    .await
                    .map(|(report, broken)| {
                        violations = broken;
                        report
                    })
            }
            SuiteName::All => all(quick, plan).await.map(|(report, stages)| {
                owners = stages;
                report
            }),
            _ => suite::run(cli.suite.name(), quick, plan).await,
        }
    })?;
    if matches!(cli.suite, SuiteName::All) {
        report.compute_ratios();
    }
    println!();
    if matches!(cli.suite, SuiteName::Faults) {
        println!("{}", faults::table(&report));
    } else {
        println!("{}", report.table());
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let path = cli
        .json
        .unwrap_or_else(|| target.join(format!("{}.json", cli.suite.name())));
    report.write_json(&path)?;
    println!("results written to {}", path.display());
    if matches!(cli.suite, SuiteName::Faults) {
        if !violations.is_empty() {
            bail!(
                "{} broken invariants:\n{}",
                violations.len(),
                violations.join("\n")
            );
        }
        return Ok(());
    }
    let chart = cli
        .chart
        .unwrap_or_else(|| target.join(format!("{}.svg", cli.suite.name())));
    chart::write_svg(&report, &chart)?;
    println!("chart written to {}", chart.display());
    if matches!(cli.suite, SuiteName::All) && !quick {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.svg");
        chart::write_svg(&report, &docs)?;
        println!("chart written to {}", docs.display());
    }
    if let Some(file) = &cli.record {
        guard::record(&report, file)?;
    }
    if let Some(file) = &cli.check {
        let mut failed = guard::failures(&report, file)?;
        // A gross regression shows again; one noisy moment of a shared machine does not.
        // Each stage holding a failed ratio is measured once more, and only a ratio that
        // fails twice fails the guard.
        let stages: BTreeSet<Stage> = failed
            .iter()
            .filter_map(|key| {
                owners
                    .iter()
                    .find(|(_, keys)| keys.contains(key))
                    .map(|(stage, _)| *stage)
            })
            .collect();
        for stage in stages {
            println!(
                "\nguard: measuring the {} stage again, to tell a regression from a noisy moment",
                stage.name()
            );
            let mut again = runtime.block_on(run_stage(stage, quick, plan))?;
            // Ratios to the reference (raw single publishes) use the one measured in the
            // first stage, as in the full run.
            if stage != Stage::BaselinesAndCommands {
                again.rows.extend(
                    report
                        .rows
                        .iter()
                        .filter(|row| row.scenario == report::REFERENCE)
                        .cloned(),
                );
            }
            again.compute_ratios();
            let cleared = guard::confirm(&failed, &again, file)?;
            failed.retain(|key| !cleared.contains(key));
        }
        if !failed.is_empty() {
            bail!(
                "{} ratios regressed grossly: {}",
                failed.len(),
                failed.join("; ")
            );
        }
    }
    Ok(())
}

/// The stages of `all`, each on its own servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    BaselinesAndCommands,
    E2e,
    Projection,
    Queries,
    Notify,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::BaselinesAndCommands,
        Stage::E2e,
        Stage::Projection,
        Stage::Queries,
        Stage::Notify,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::BaselinesAndCommands => "baselines+commands",
            Stage::E2e => "e2e",
            Stage::Projection => "projection",
            Stage::Queries => "queries",
            Stage::Notify => "notify",
        }
    }
}

/// Runs one stage of `all`. `--quick` shrinks the read side too: 10k events to project, 200
/// tasks per tenant to query, 1 s of notifications.
async fn run_stage(stage: Stage, quick: bool, plan: suite::Plan) -> anyhow::Result<report::Report> {
    match stage {
        Stage::BaselinesAndCommands => suite::run("all", quick, plan).await,
        Stage::E2e => e2e::run(quick, quick.then_some(1.0), e2e::Scope::Fixed).await,
        Stage::Projection => projection::run(quick, quick.then_some(10_000)).await,
        Stage::Queries => queries::run(quick, quick.then_some(0.5), quick.then_some(200)).await,
        Stage::Notify => notify::run(quick, quick.then_some(1.0)).await,
    }
}

/// Every stage, one after the other (each on its own servers), in one report; also the keys of
/// the rows each stage measured (to measure a stage again when one fails the guard).
async fn all(
    quick: bool,
    plan: suite::Plan,
) -> anyhow::Result<(report::Report, Vec<(Stage, Vec<String>)>)> {
    let started = std::time::Instant::now();
    let mut stages = Vec::new();
    let mut owners = Vec::new();
    let mut report: Option<report::Report> = None;
    for stage in Stage::ALL {
        let part = run_stage(stage, quick, plan).await?;
        owners.push((stage, part.rows.iter().map(report::Row::key).collect()));
        match report.as_mut() {
            None => report = Some(part),
            Some(report) => report.merge(part),
        }
        stages.push(format!(
            "{} {:.0} s",
            stage.name(),
            started.elapsed().as_secs_f64()
        ));
    }
    let mut report = report.context("no stage ran")?;
    report.notes.push(format!(
        "elapsed at the end of each stage: {}",
        stages.join(", ")
    ));
    Ok((report, owners))
}
