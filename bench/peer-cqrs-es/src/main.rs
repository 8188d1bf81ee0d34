//! `talkwai-peer-cqrs-es`: the peer `talkwai-bench commands` measures ours against. The same
//! Task commands and bodies, decided by cqrs-es 0.5 ([`task::Task`]) and stored by postgres-es
//! 0.5 in one `events` table, through a pool of 32 connections, called in process by N
//! closed-loop callers.
//!
//! ```text
//! talkwai-peer-cqrs-es --url postgres://postgres@127.0.0.1:5432/postgres \
//!     --workload create-task --callers 64 --seconds 5 --max-ops 20000 [--postgres-pid PID]
//! talkwai-peer-cqrs-es --url ... --workload start-complete --callers 64 --per-caller 100
//! ```
//!
//! Prints one JSON object on stdout ([`Output`]): commands/s, p50, p99, count, errors, the CPU
//! time of this process and (with `--postgres-pid`, the postmaster) of the PostgreSQL server
//! processes over the measured window. The database must be durable for the figures to mean
//! anything; the bench starts it with `fsync` and `synchronous_commit` on, and the output
//! carries what the server reports for both.
//!
//! Outside the cargo workspace on purpose (see its `Cargo.toml`); built and run by
//! `talkwai-bench commands` (`crates/talkwai-bench/src/peer.rs`).
//!
//! # Layout
//! - [`task`]: the aggregate, its commands, events and checks (no I/O).
//! - [`load`]: closed-loop callers, latencies, CPU time from `/proc`.

mod load;
mod task;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use cqrs_es::CqrsFramework;
use cqrs_es::persist::PersistedEventStore;
use postgres_es::PostgresEventRepository;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::load::{Budget, Op};
use crate::task::{Actor, Task, TaskCommand};

/// The framework over postgres-es, as `postgres_es::postgres_cqrs` builds it.
type Cqrs = CqrsFramework<Task, PersistedEventStore<PostgresEventRepository, Task>>;

/// Connections in the pool.
const POOL: u32 = 32;

/// The peer's command line.
#[derive(Debug, Parser)]
#[command(name = "talkwai-peer-cqrs-es", version)]
struct Cli {
    /// PostgreSQL URL (the `events` table is created when missing).
    #[arg(long)]
    url: String,
    /// What to send.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// create-task: most seconds of measuring.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// create-task: most commands.
    #[arg(long, default_value_t = 20_000)]
    max_ops: u64,
    /// start-complete: tasks each caller creates (unmeasured), then starts and completes.
    #[arg(long, default_value_t = 100)]
    per_caller: u64,
    /// Seconds of create-task from 16 callers before measuring (connections, caches).
    #[arg(long, default_value_t = 1.0)]
    warm_up: f64,
    /// The postmaster's pid: its CPU time and its children's are summed over the window.
    #[arg(long)]
    postgres_pid: Option<u32>,
}

/// The workloads of `talkwai-bench commands`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// One new task per command.
    CreateTask,
    /// Each caller starts then completes its own tasks: start t1, complete t1, start t2...
    StartComplete,
}

/// What the peer prints.
#[derive(Debug, Serialize)]
struct Output {
    /// Which framework and store.
    peer: &'static str,
    /// `create-task` or `start-complete`.
    workload: &'static str,
    /// Concurrent callers.
    callers: usize,
    /// Connections in the pool.
    pool: u32,
    /// Commands that succeeded.
    count: u64,
    /// Commands that failed.
    errors: u64,
    /// The first failure, if any.
    first_error: Option<String>,
    /// Wall time of the measurement.
    seconds: f64,
    /// `count / seconds`.
    commands_per_sec: f64,
    /// Median latency of one command.
    p50_ms: Option<f64>,
    /// 99th percentile.
    p99_ms: Option<f64>,
    /// CPU time (user + system) of this process over the window.
    cpu_seconds: Option<f64>,
    /// CPU time of the PostgreSQL processes over the window (with `--postgres-pid`).
    server_cpu_seconds: Option<f64>,
    /// Bytes of one create-task body sent.
    command_body_bytes: usize,
    /// Bytes of one stored `task.created` payload and of its metadata (JSON text).
    stored_event_bytes: Option<(i32, i32)>,
    /// `SHOW fsync` and `SHOW synchronous_commit` of the server.
    durability: (String, String),
}

/// The create-task command `talkwai-bench` sends (`payload::create_task_command`).
fn create_task_body(task: Uuid) -> Vec<u8> {
    let body = serde_json::json!({
        "id": task,
        "type": "call",
        "priority": "high",
        "fromAddress": "+15550001111",
        "toAddress": "+15550002222",
        "subject": "Confirm Tuesday appointment",
        "content": "Call the patient to confirm the 2:30 pm cleaning.",
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Decodes `body` as `action` and executes it, with a fresh command id and the actor in the
/// event metadata (ours stores both in headers).
async fn send(cqrs: &Cqrs, actor: &Actor, action: &str, body: &[u8]) -> Result<(), String> {
    let (id, command) = TaskCommand::parse(action, body).map_err(|e| e.to_string())?;
    let metadata = HashMap::from([
        ("commandId".to_owned(), Uuid::new_v4().to_string()),
        ("actor".to_owned(), format!("member:{}", actor.member)),
    ]);
    cqrs.execute_with_metadata(&format!("{}.{id}", actor.tenant), command, metadata)
        .await
        .map_err(|e| e.to_string())
}

fn create_op(cqrs: &Arc<Cqrs>, actor: Actor) -> Op {
    let cqrs = Arc::clone(cqrs);
    Arc::new(move |_, _| {
        let cqrs = Arc::clone(&cqrs);
        Box::pin(async move {
            let body = create_task_body(Uuid::new_v4());
            send(&cqrs, &actor, "create", &body).await
        })
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = PgPoolOptions::new()
        .max_connections(POOL)
        .min_connections(POOL)
        .acquire_timeout(Duration::from_secs(60))
        .connect(&cli.url)
        .await
        .with_context(|| format!("connecting to {}", cli.url))?;
    // postgres-es's schema (db/init.sql), events only: no snapshots are taken.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS events (
            aggregate_type text NOT NULL,
            aggregate_id text NOT NULL,
            sequence bigint CHECK (sequence >= 0) NOT NULL,
            event_type text NOT NULL,
            event_version text NOT NULL,
            payload json NOT NULL,
            metadata json NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    )
    .execute(&pool)
    .await
    .context("creating the events table")?;
    let show = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                .fetch_one(&pool)
                .await
                .with_context(|| format!("SHOW {name}"))
        }
    };
    let durability = (show("fsync").await?, show("synchronous_commit").await?);

    let actor = Actor {
        tenant: Uuid::new_v4(),
        member: Uuid::new_v4(),
    };
    let store = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    let cqrs: Arc<Cqrs> = Arc::new(CqrsFramework::new(store, vec![], actor));

    if cli.warm_up > 0.0 {
        let warm = Budget::new(u64::MAX, Duration::from_secs_f64(cli.warm_up));
        let _ = load::run(16, warm, create_op(&cqrs, actor), None).await;
    }

    let measured = match cli.workload {
        Workload::CreateTask => {
            let budget = Budget::new(cli.max_ops, Duration::from_secs_f64(cli.seconds));
            load::run(
                cli.callers,
                budget,
                create_op(&cqrs, actor),
                cli.postgres_pid,
            )
            .await
        }
        Workload::StartComplete => {
            let tasks: Arc<Vec<Vec<Uuid>>> = Arc::new(
                (0..cli.callers)
                    .map(|_| (0..cli.per_caller).map(|_| Uuid::new_v4()).collect())
                    .collect(),
            );
            let task_of = |tasks: &Arc<Vec<Vec<Uuid>>>, caller: usize, index: u64| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| tasks.get(caller)?.get(i).copied())
            };
            let prepare: Op = {
                let (cqrs, tasks) = (Arc::clone(&cqrs), Arc::clone(&tasks));
                Arc::new(move |caller, index| {
                    let cqrs = Arc::clone(&cqrs);
                    let task = task_of(&tasks, caller, index);
                    Box::pin(async move {
                        let task = task.ok_or_else(|| "no such task".to_owned())?;
                        send(&cqrs, &actor, "create", &create_task_body(task)).await
                    })
                })
            };
            let budget = Budget::per_caller(cli.per_caller, Duration::from_secs(600));
            let prepared = load::run(cli.callers, budget, prepare, None).await;
            if prepared.errors > 0 {
                bail!(
                    "creating the tasks to start and complete failed {} times: {:?}",
                    prepared.errors,
                    prepared.first_error
                );
            }
            let transition: Op = {
                let (cqrs, tasks) = (Arc::clone(&cqrs), Arc::clone(&tasks));
                Arc::new(move |caller, index| {
                    let cqrs = Arc::clone(&cqrs);
                    let task = task_of(&tasks, caller, index / 2);
                    let action = if index % 2 == 0 { "start" } else { "complete" };
                    Box::pin(async move {
                        let task = task.ok_or_else(|| "no such task".to_owned())?;
                        let body = serde_json::to_vec(&serde_json::json!({ "id": task }))
                            .map_err(|e| e.to_string())?;
                        send(&cqrs, &actor, action, &body).await
                    })
                })
            };
            let budget = Budget::per_caller(cli.per_caller * 2, Duration::from_secs(600));
            load::run(cli.callers, budget, transition, cli.postgres_pid).await
        }
    };

    let stored_event_bytes = sqlx::query_as::<_, (i32, i32)>(
        "SELECT octet_length(payload::text), octet_length(metadata::text) FROM events
          WHERE event_type = 'task.created' LIMIT 1",
    )
    .fetch_optional(&pool)
    .await
    .context("reading one stored task.created")?;
    let output = Output {
        peer: "cqrs-es 0.5 + postgres-es 0.5 (sqlx 0.8)",
        workload: match cli.workload {
            Workload::CreateTask => "create-task",
            Workload::StartComplete => "start-complete",
        },
        callers: cli.callers,
        pool: POOL,
        count: measured.ok,
        errors: measured.errors,
        first_error: measured.first_error.clone(),
        seconds: measured.elapsed.as_secs_f64(),
        commands_per_sec: measured.per_sec(),
        p50_ms: measured.quantile_ms(0.50),
        p99_ms: measured.quantile_ms(0.99),
        cpu_seconds: measured.cpu.map(|d| d.as_secs_f64()),
        server_cpu_seconds: measured.server_cpu.map(|d| d.as_secs_f64()),
        command_body_bytes: create_task_body(Uuid::new_v4()).len(),
        stored_event_bytes,
        durability,
    };
    println!("{}", serde_json::to_string(&output)?);
    pool.close().await;
    Ok(())
}
