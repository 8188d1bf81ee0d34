//! The peer: the same create-task and start+complete commands decided by cqrs-es and stored by
//! postgres-es on a throw-away **durable** PostgreSQL (`fsync`, `synchronous_commit` on), run
//! in the same `commands` run as ours so every command row carries a ratio to it.
//!
//! The peer is its own program, `bench/peer-cqrs-es` (outside the cargo workspace, so sqlx and
//! its tree stay out of the product's lock file). It is built here with
//! `cargo build --release --locked` into `target/peer-cqrs-es/` (cached there;
//! `TALKWAI_BENCH_NO_BUILD=1` skips the build), run once per row, and prints its figures as
//! JSON. Its CPU per command is its own process plus the PostgreSQL processes (the postmaster
//! and its children, from `/proc/<pid>/stat`), which the peer samples around its window.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use talkwai_testkit::Postgres;

use crate::report::{PEER_PREFIX, Row};
use crate::suite::Budgets;

/// The peer's package and binary name.
const BINARY: &str = "talkwai-peer-cqrs-es";

/// What the peer prints (the fields the bench uses).
#[derive(Debug, Deserialize)]
struct Output {
    peer: String,
    count: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_seconds: Option<f64>,
    server_cpu_seconds: Option<f64>,
    command_body_bytes: usize,
    stored_event_bytes: Option<(i64, i64)>,
    durability: (String, String),
}

/// The built peer and its PostgreSQL.
pub struct Peer {
    binary: PathBuf,
    postgres: Postgres,
    url: String,
    /// Set from the first run: what the peer is, what it stores, how durable the server is.
    described: bool,
}

/// `cargo build --release --locked` of the peer into `<target>/peer-cqrs-es` (the target dir
/// this binary runs from), unless `TALKWAI_BENCH_NO_BUILD` is set; returns the binary.
pub fn build() -> anyhow::Result<PathBuf> {
    let (own, _) = crate::procs::own_dir()?;
    let target = own
        .parent()
        .context("the bench binary is not in a target directory")?
        .join("peer-cqrs-es");
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peer-cqrs-es/Cargo.toml");
    if std::env::var_os("TALKWAI_BENCH_NO_BUILD").is_none() {
        println!(
            "  building the cqrs-es peer (release) with cargo into {}",
            target.display()
        );
        let started = std::time::Instant::now();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--locked",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .context("running cargo to build the peer")?;
        if !status.success() {
            bail!("cargo build of {} failed: {status}", manifest.display());
        }
        println!("  peer built in {:.1} s", started.elapsed().as_secs_f64());
    }
    let binary = target.join("release").join(BINARY);
    if !binary.is_file() {
        bail!(
            "{} is missing (build it, or unset TALKWAI_BENCH_NO_BUILD)",
            binary.display()
        );
    }
    Ok(binary)
}

impl Peer {
    /// Starts the peer's durable PostgreSQL (fsync and synchronous commit on, as ours fsyncs
    /// every JetStream write).
    pub async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let postgres = Postgres::builder()
            .durable(true)
            .setting("fsync", "on")
            .setting("synchronous_commit", "on")
            .start()
            .await
            .context("starting the peer's PostgreSQL")?;
        let url = postgres.url_for("postgres");
        Ok(Self {
            binary,
            postgres,
            url,
            described: false,
        })
    }

    /// Create-task commands (a new task each) from `callers` callers, within the run's budget.
    pub async fn create_tasks(
        &mut self,
        callers: usize,
        budgets: &Budgets,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Row> {
        let args = [
            ("--workload", "create-task".to_owned()),
            ("--callers", callers.to_string()),
            ("--seconds", budgets.time.as_secs_f64().to_string()),
            ("--max-ops", budgets.ops.to_string()),
            ("--warm-up", budgets.warm_up.as_secs_f64().to_string()),
        ];
        self.row("create-task", callers, &args, notes).await
    }

    /// Each of `callers` callers creates `per_caller` tasks (not measured), then starts and
    /// completes them, as `commands::start_complete` does.
    pub async fn start_complete(
        &mut self,
        callers: usize,
        per_caller: u64,
        budgets: &Budgets,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Row> {
        let args = [
            ("--workload", "start-complete".to_owned()),
            ("--callers", callers.to_string()),
            ("--per-caller", per_caller.to_string()),
            ("--warm-up", budgets.warm_up.as_secs_f64().to_string()),
        ];
        self.row("start-task + complete-task", callers, &args, notes)
            .await
    }

    async fn row(
        &mut self,
        workload: &str,
        callers: usize,
        args: &[(&str, String)],
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Row> {
        let mut command = tokio::process::Command::new(&self.binary);
        command.arg("--url").arg(&self.url);
        for (flag, value) in args {
            command.arg(flag).arg(value);
        }
        if let Some(pid) = self.postgres.pid() {
            command.arg("--postgres-pid").arg(pid.to_string());
        }
        let output = command
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !output.status.success() {
            bail!("the peer ({workload} ×{callers}) failed: {}", output.status);
        }
        let out: Output = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "reading the peer's output: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
        let ours = crate::payload::create_task_command(uuid::Uuid::new_v4()).len();
        if out.command_body_bytes != ours {
            bail!(
                "the peer sends {}-byte create-task bodies, the bench {ours}: \
                 bench/peer-cqrs-es/src/main.rs must send payload::create_task_command's body",
                out.command_body_bytes
            );
        }
        if out.durability.0 != "on" || out.durability.1 != "on" {
            bail!(
                "the peer's PostgreSQL is not durable (fsync {}, synchronous_commit {})",
                out.durability.0,
                out.durability.1
            );
        }
        if !self.described {
            self.described = true;
            notes.push(format!(
                "peer: {} in its own process, pool of 32, on PostgreSQL with fsync={} \
                 synchronous_commit={}; a {}-byte create-task body; a stored task.created: \
                 {}; its CPU columns are the peer's process (bench µs) and the PostgreSQL \
                 processes (server µs)",
                out.peer,
                out.durability.0,
                out.durability.1,
                out.command_body_bytes,
                out.stored_event_bytes.map_or_else(
                    || "unknown".to_owned(),
                    |(payload, metadata)| format!(
                        "{payload}-byte payload, {metadata} bytes of metadata"
                    )
                ),
            ));
        }
        let per_op = |seconds: Option<f64>| seconds.map(|s| s * 1e6 / out.count.max(1) as f64);
        let elapsed = std::time::Duration::from_secs_f64(out.seconds.max(0.0));
        let mut row = crate::stack::row(
            "peer",
            &format!("{PEER_PREFIX}{workload}"),
            callers,
            "command",
            out.count,
            elapsed,
            None,
        );
        row.errors = out.errors;
        row.p50_ms = out.p50_ms;
        row.p99_ms = out.p99_ms;
        row.bench_cpu_us_per_op = per_op(out.cpu_seconds);
        row.server_cpu_us_per_op = per_op(out.server_cpu_seconds);
        row.note = out.first_error.unwrap_or_default();
        Ok(row.note("cqrs-es + postgres-es, pool 32, durable PostgreSQL"))
    }
}
