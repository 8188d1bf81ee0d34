//! The services as separate processes, end to end, at fixed rates (open loop):
//!
//! - create-task at **500 commands/s** through the `talkwai-command-service` process: send →
//!   reply, p50/p99, beside raw JetStream publishes at the same pacing (send → ack);
//! - **1,000 commands/s**: command sent → the task visible in a query (read-your-writes: the
//!   query carries the reply's `seq` as `minSeq`, answered by the `talkwai-query-service`
//!   process from what the `talkwai-projector` process wrote), and command sent → its `taskUpdates` message delivered (from the
//!   `talkwai-notifier` process), and command reply → the update of a live query (the
//!   tenant's newest tasks, subscribed with the member's token) whose `seq` reaches the reply's,
//!   beside raw publishes read by a plain core subscriber at the same pacing;
//! - a closed-loop burst of create-task with 64 callers through the process;
//! - **peak RSS** (`VmHWM`) of each service process over all of the above;
//! - with `--sweep`: end to end at rising rates ([`SWEEP_RATES`]) until one misses a target;
//!   the **knee** is the highest rate at which query-visible p99 ≤ 50 ms, live-update p99
//!   ≤ 50 ms and `taskUpdates` p99 ≤ 20 ms all hold, with nothing missing or failed.
//!
//! nats-server `sync_interval: always`; PostgreSQL durable (`fsync` on) as in production.
//! Latencies count from each operation's *scheduled* send time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_proto::headers;
use talkwai_testkit::{NatsServer, Postgres};
use uuid::Uuid;

use crate::commands::{self, PLATFORM, SECRET, World};
use crate::cpu::{self, Watched};
use crate::drive::{self, Budget, Op};
use crate::payload::{EventFactory, create_task_command};
use crate::procs::{Binaries, Service};
use crate::report::{Report, Row};
use crate::stack::{self, push};

/// Rate of the command-latency scenario.
const COMMAND_RATE: u64 = 500;
/// Rate of the end-to-end scenario.
const E2E_RATE: u64 = 1_000;
/// Rates of the sweep, commands/s, in order (it stops at the first that misses a target).
const SWEEP_RATES: [u64; 9] = [100, 250, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000];
/// Targets of the knee, p99 ms: query-visible, live update, `taskUpdates`.
const KNEE_TARGETS: (f64, f64, f64) = (50.0, 50.0, 20.0);
/// The dashboard query whose updates are timed: the tenant's newest tasks.
const DASHBOARD: &str = r#"{"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}}}"#;

/// Peak RSS targets, MiB: (binary, label, target).
const RSS_TARGETS: [(&str, &str, f64); 4] = [
    ("talkwai-command-service", "command service", 150.0),
    ("talkwai-projector", "projector", 250.0),
    ("talkwai-query-service", "query service", 100.0),
    ("talkwai-notifier", "notifier", 100.0),
];

/// The service processes.
pub struct Processes(pub Vec<Service>);

impl Processes {
    /// Each service process, to sample its CPU time.
    pub fn watched(&self) -> Vec<Watched> {
        self.0
            .iter()
            .map(|s| Watched::process(s.name.trim_start_matches("talkwai-"), s.pid))
            .collect()
    }

    /// Fails when one of them exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(Service::check_alive)
    }

    /// Reports the peak RSS of each of `targets` (binary, label, target MiB), then stops them
    /// all (a failure to stop is a note of `report`).
    pub async fn finish(self, report: &mut Report, targets: &[(&str, &str, f64)]) {
        self.peak_rss(report, targets);
        self.stop(report).await;
    }

    fn peak_rss(&self, report: &mut Report, targets: &[(&str, &str, f64)]) {
        for &(bin, label, target) in targets {
            let Some(service) = self.0.iter().find(|s| s.name == bin) else {
                continue;
            };
            match service.memory() {
                Some(memory) => push(
                    report,
                    Row::figure(
                        "memory",
                        &format!("peak RSS: {label} (VmHWM)"),
                        memory.peak_mib,
                        "MiB",
                    )
                    .target(format!("<= {target:.0} MiB"), memory.peak_mib <= target)
                    .note(format!(
                        "{bin} process; RSS at the end {:.1} MiB",
                        memory.rss_mib
                    )),
                ),
                None => report
                    .notes
                    .push(format!("{bin}: /proc/{}/status unreadable", service.pid)),
            }
        }
    }

    async fn stop(self, report: &mut Report) {
        for service in self.0 {
            let name = service.name.clone();
            if let Err(err) = service.stop(Duration::from_secs(30)).await {
                report.notes.push(format!("stopping {name}: {err:#}"));
            }
        }
    }
}

/// What the process stages run on: the service binaries, nats-server, a durable PostgreSQL
/// with a fresh database, a client and the event stream.
/// Fields drop in order: the client, then PostgreSQL, then nats-server.
pub struct Servers {
    /// A client of nats-server.
    pub client: async_nats::Client,
    /// PostgreSQL (`fsync` on), kept running while this lives.
    pg: Postgres,
    /// nats-server.
    pub nats: NatsServer,
    /// The database's URL.
    pub db: String,
    /// The service binaries (built).
    pub binaries: Binaries,
}

impl Servers {
    /// nats-server and PostgreSQL (with its backends), to sample their CPU time.
    pub fn watched(&self) -> Vec<Watched> {
        let mut watched = Vec::new();
        if let Some(pid) = self.nats.pid() {
            watched.push(Watched::process("nats-server", pid));
        }
        if let Some(pid) = self.pg.pid() {
            watched.push(Watched::tree("postgres", pid));
        }
        watched
    }

    /// Builds the binaries and starts the servers; the database is named after `suite`.
    pub async fn start(suite: &str) -> anyhow::Result<Self> {
        let binaries = Binaries::ensure()?;
        let nats = NatsServer::start()
            .await
            .context("starting nats-server (scripts/dev.sh setup installs it)")?;
        drive::set_server_pid(nats.pid());
        let pg = Postgres::builder()
            .durable(true)
            .start()
            .await
            .context("starting PostgreSQL")?;
        let db = pg.create_unique_database(suite).await?;
        let client = async_nats::connect(nats.url()).await?;
        EventStore::open(client.clone(), &StreamSettings::default()).await?;
        Ok(Self {
            client,
            pg,
            nats,
            db,
            binaries,
        })
    }
}

/// What the stage measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The fixed scenarios (500/s, end to end at 1,000/s, the burst).
    Fixed,
    /// The fixed scenarios, then the sweep over [`SWEEP_RATES`] up to the first miss.
    Sweep,
    /// Only the sweep, over these rates, every one of them.
    Rates(Vec<u64>),
}

/// Runs the stage; `seconds` is the length of each paced scenario (default 10, 2 quick).
pub async fn run(quick: bool, seconds: Option<f64>, scope: Scope) -> anyhow::Result<Report> {
    let secs = seconds.unwrap_or(if quick { 2.0 } else { 10.0 });
    let servers = Servers::start("e2e").await?;
    let (client, binaries, db) = (&servers.client, &servers.binaries, &servers.db);
    let mut report = stack::new_report("e2e", quick, Some(client.server_info().version));
    report.notes.push(format!(
        "e2e: services as separate processes ({} build): talkwai-command-service, \
         talkwai-projector, talkwai-query-service, talkwai-notifier, default settings but the \
         per-tenant rate limit off (one tenant sends everything); PostgreSQL durable (fsync on); {secs} s per paced scenario",
        binaries.profile
    ));
    println!(
        "talkwai-bench e2e: service processes ({}), {secs} s per paced scenario",
        binaries.profile
    );

    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench/logs");
    let url = servers.nats.url();
    let common = [
        ("TALKWAI_NATS_URL", url.clone()),
        ("TALKWAI_PLATFORM_TOKEN", PLATFORM.to_owned()),
        ("TALKWAI_JWT_SECRET", SECRET.to_owned()),
        // One tenant sends everything: capacity is measured, not the per-tenant limit.
        ("TALKWAI_RATE_LIMIT_PER_TENANT", "0".to_owned()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut env = common.to_vec();
        env.extend_from_slice(extra);
        env
    };
    let mut procs = Processes(Vec::new());
    procs.0.push(binaries.spawn(
        "talkwai-command-service",
        &with(&[("TALKWAI_INSTANCE", "bench-command".to_owned())]),
        &logs,
    )?);
    procs.0.push(binaries.spawn(
        "talkwai-projector",
        &with(&[
            ("TALKWAI_DATABASE_URL", db.clone()),
            ("TALKWAI_INSTANCE", "bench-projector".to_owned()),
        ]),
        &logs,
    )?);
    procs.0.push(binaries.spawn(
        "talkwai-query-service",
        &with(&[
            ("TALKWAI_DATABASE_URL", db.clone()),
            ("TALKWAI_INSTANCE", "bench-query".to_owned()),
        ]),
        &logs,
    )?);
    procs.0.push(binaries.spawn(
        "talkwai-notifier",
        &with(&[("TALKWAI_INSTANCE", "bench-notifier".to_owned())]),
        &logs,
    )?);

    let mut watched = procs.watched();
    watched.extend(servers.watched());
    watched.push(Watched::bench());
    let outcome = measure(
        client,
        &mut procs,
        &watched,
        &mut report,
        (quick, secs, scope),
    )
    .await;
    // Peak RSS before stopping (the stop itself is not part of the run).
    procs.finish(&mut report, &RSS_TARGETS).await;
    outcome.map(|()| report)
}

async fn measure(
    client: &async_nats::Client,
    procs: &mut Processes,
    watched: &[Watched],
    report: &mut Report,
    (quick, secs, scope): (bool, f64, Scope),
) -> anyhow::Result<()> {
    commands::wait_ready(client)
        .await
        .context("waiting for the command service process")?;
    wait_ping(client, talkwai_notifier::PRESENCE_SERVICE).await?;
    procs.check_alive()?;
    let world = commands::world(client).await?;
    let token = world.bearer.to_string();

    // Warm up the whole path, then wait until the projector and the notifier caught up.
    let warm = if quick { 200 } else { 1_000 };
    let _ = drive::paced(200.0, warm, commands::create_op(client, &world)).await;
    caught_up(client, &world, &token).await?;
    procs.check_alive()?;
    if let Scope::Rates(rates) = &scope {
        return knee(client, &world, procs, watched, report, (secs, rates, false)).await;
    }

    // 1. create-task at a fixed 500/s beside raw publishes at the same pacing.
    let count = (COMMAND_RATE as f64 * secs) as u64;
    let factory = EventFactory::new();
    let raw = drive::paced(COMMAND_RATE as f64, count, raw_publish_op(client, &factory)).await;
    let raw_row = Row::new(
        "e2e-baseline",
        &format!("raw publish @ {COMMAND_RATE}/s open loop: send -> ack"),
        1,
        "msg",
        &raw,
    )
    .note("jetstream publish, new subject each, expected seq 0 + Nats-Msg-Id");
    let raw_p99 = raw.quantile_ms(0.99);
    push(report, raw_row);
    let cmds = drive::paced(
        COMMAND_RATE as f64,
        count,
        commands::create_op(client, &world),
    )
    .await;
    let p99 = cmds.quantile_ms(0.99);
    let mut row = Row::new(
        "e2e",
        &format!("create-task @ {COMMAND_RATE}/s open loop (service process): send -> reply"),
        1,
        "command",
        &cmds,
    )
    .note("latency from the scheduled send; CPU: bench = load generator only");
    if let (Some(p99), Some(raw_p99)) = (p99, raw_p99) {
        row = row
            .ratio(p99 / raw_p99.max(1e-6), "p99 over the raw publish p99")
            .lower_is_better();
    }
    push(report, row);
    procs.check_alive()?;

    // 2. End to end at 1,000/s beside raw publish -> core subscriber.
    let count = (E2E_RATE as f64 * secs) as u64;
    let raw = raw_delivery(client, &factory, E2E_RATE, count).await?;
    let raw_p99 = (!raw.is_empty()).then(|| raw.value_at_quantile(0.99) as f64 / 1000.0);
    push(
        report,
        stack::row(
            "e2e-baseline",
            &format!("raw publish @ {E2E_RATE}/s -> core subscriber on the event subject"),
            1,
            "msg",
            raw.len(),
            Duration::from_secs_f64(secs),
            Some(&raw),
        )
        .note("latency from the scheduled send to the subscriber"),
    );
    let at = Rate {
        per_sec: E2E_RATE,
        count,
        secs,
    };
    end_to_end(client, &world, report, at, (raw_p99, watched), "e2e").await?;
    procs.check_alive()?;

    // 3. A closed-loop burst through the process (peak memory under load; rate vs reference).
    let budget = if quick {
        Budget::new(3_000, Duration::from_secs(1))
    } else {
        Budget::new(20_000, Duration::from_secs(5))
    };
    let burst = drive::run(64, budget, commands::create_op(client, &world)).await;
    push(
        report,
        Row::new(
            "process",
            "create-task (service process)",
            64,
            "command",
            &burst,
        )
        .note("closed loop; bench CPU = load generator only"),
    );
    procs.check_alive()?;
    if scope == Scope::Sweep {
        knee(
            client,
            &world,
            procs,
            watched,
            report,
            (secs, &SWEEP_RATES, true),
        )
        .await?;
    }
    Ok(())
}

/// End to end at each of `rates` (until one misses a target when `stop_at_miss`); reports
/// the knee: the highest rate below which no rate tried missed.
async fn knee(
    client: &async_nats::Client,
    world: &World,
    procs: &mut Processes,
    watched: &[Watched],
    report: &mut Report,
    (secs, rates, stop_at_miss): (f64, &[u64], bool),
) -> anyhow::Result<()> {
    // What the burst left behind is projected first.
    caught_up(client, world, &world.bearer).await?;
    idle(watched, report, secs).await;
    let mut best = None;
    let mut missed = None;
    for &per_sec in rates {
        let at = Rate {
            per_sec,
            count: (per_sec as f64 * secs) as u64,
            secs,
        };
        let summary = end_to_end(client, world, report, at, (None, watched), "e2e-sweep").await?;
        procs.check_alive()?;
        match summary.misses() {
            None if missed.is_none() => best = Some(per_sec),
            None => {}
            Some(why) => {
                missed.get_or_insert(format!("{per_sec}/s: {why}"));
                if stop_at_miss {
                    break;
                }
            }
        }
    }
    let knee = best.unwrap_or(0);
    push(
        report,
        Row::figure(
            "e2e-sweep",
            "knee: highest command rate with every end-to-end target met",
            knee as f64,
            "commands/s",
        )
        .target(">= 2000 commands/s", knee >= 2_000)
        .note(format!(
            "targets p99: query-visible <= {:.0} ms, live update <= {:.0} ms, taskUpdates \
             <= {:.0} ms, nothing missing; rates tried {rates:?} for {secs} s each; {}",
            KNEE_TARGETS.0,
            KNEE_TARGETS.1,
            KNEE_TARGETS.2,
            missed.map_or_else(|| "none missed".to_owned(), |m| format!("first miss {m}"))
        )),
    );
    Ok(())
}

/// The CPU every process uses while no command is sent, for `secs`: what the stack costs
/// before any work (polling, heartbeats).
async fn idle(watched: &[Watched], report: &mut Report, secs: f64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window = cpu::Window::start(watched);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let used = window.end();
    let described = used.describe(None);
    println!("      idle: {described}");
    push(
        report,
        Row::figure(
            "e2e-sweep",
            "idle: CPU of every process, no command sent",
            used.cores(),
            "cores",
        )
        .note(described),
    );
}

/// Sends one more create-task and waits (at most 2 min) until a query with its `seq` as
/// `minSeq` holds it: whatever was sent before is projected.
async fn caught_up(client: &async_nats::Client, world: &World, token: &str) -> anyhow::Result<()> {
    let last = commands::send(
        client,
        format!("talkwai.cmd.{}.task.create", world.tenant),
        create_task_command(Uuid::new_v4()),
        &world.bearer,
    )
    .await
    .map_err(|e| anyhow::anyhow!("create-task to catch up with: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match query_task(client, world, token, last.id, Some(last.seq)).await {
            Ok(true) => return Ok(()),
            Ok(false) => bail!("the query answered without the task it waited for"),
            Err(err) if Instant::now() > deadline => {
                bail!("the query service does not answer: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until a service answers `$SRV.PING.<name>`.
pub async fn wait_ping(client: &async_nats::Client, name: &str) -> anyhow::Result<()> {
    let subject = format!("$SRV.PING.{name}");
    for _ in 0..300 {
        let ping = client.request(subject.clone(), Bytes::new());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{name} did not answer {subject}")
}

/// Asks `world`'s tenant for one task by id (with `minSeq` when given); `Ok(true)` when the
/// answer has it.
async fn query_task(
    client: &async_nats::Client,
    world: &World,
    bearer: &str,
    task: Uuid,
    min_seq: Option<u64>,
) -> Result<bool, String> {
    query_tenant_task(client, world.tenant, bearer, task, min_seq).await
}

/// Asks `tenant` for one task by id (with `minSeq` when given) as `bearer`; `Ok(true)` when
/// the answer has it.
pub async fn query_tenant_task(
    client: &async_nats::Client,
    tenant: Uuid,
    bearer: &str,
    task: Uuid,
    min_seq: Option<u64>,
) -> Result<bool, String> {
    let mut body = json!({"query": {"tasks": {"$": {"where": {"id": task}}}}});
    if let Some(seq) = min_seq {
        body["minSeq"] = json!(seq);
    }
    let mut map = HeaderMap::new();
    map.insert(headers::AUTHORIZATION, bearer);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(
            format!("talkwai.qry.{tenant}"),
            map,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        ),
    )
    .await
    .map_err(|_| "no reply in time".to_owned())?
    .map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
    if value["ok"] != json!(true) {
        return Err(value.to_string());
    }
    Ok(value["data"]["tasks"]
        .as_array()
        .is_some_and(|tasks| !tasks.is_empty()))
}

/// One raw durable publish of a `task.created` on a new subject, waiting for its ack.
fn raw_publish_op(client: &async_nats::Client, factory: &EventFactory) -> Op {
    let js = jetstream::new(client.clone());
    let factory = factory.clone();
    Arc::new(move |_, _| {
        let js = js.clone();
        let message = factory.task_created();
        Box::pin(async move {
            let mut map = message.headers;
            map.insert(headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
            map.insert(
                headers::NATS_MSG_ID,
                message.command_id.to_string().as_str(),
            );
            js.publish_with_headers(message.subject, map, message.payload)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

/// Raw publishes at `rate`, read by a core subscriber on their subjects: latency from the
/// scheduled send to delivery.
async fn raw_delivery(
    client: &async_nats::Client,
    factory: &EventFactory,
    rate: u64,
    count: u64,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let sample = factory.task_created();
    let prefix = sample
        .subject
        .rsplit_once('.')
        .map_or(sample.subject.as_str(), |(p, _)| p)
        .to_owned();
    let mut sub = client.subscribe(format!("{prefix}.*")).await?;
    client.flush().await?;
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = Arc::clone(&arrivals);
    let reader = tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let now = Instant::now();
            if let Ok(mut seen) = seen.lock() {
                seen.entry(message.subject.to_string()).or_insert(now);
            }
        }
    });
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let op: Op = {
        let js = jetstream::new(client.clone());
        let factory = factory.clone();
        let sent = Arc::clone(&sent);
        Arc::new(move |_, _| {
            let js = js.clone();
            let message = factory.task_created();
            let sent = Arc::clone(&sent);
            Box::pin(async move {
                let mut map = message.headers;
                map.insert(headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
                map.insert(
                    headers::NATS_MSG_ID,
                    message.command_id.to_string().as_str(),
                );
                if let Ok(mut sent) = sent.lock() {
                    sent.insert(message.subject.clone(), Instant::now());
                }
                js.publish_with_headers(message.subject, map, message.payload)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
    };
    let _ = drive::paced(rate as f64, count, op).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    reader.abort();
    let mut histogram = drive::histogram();
    let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    for (subject, at) in sent.iter() {
        if let Some(arrived) = arrivals.get(subject) {
            drive::record(&mut histogram, arrived.saturating_duration_since(*at));
        }
    }
    Ok(histogram)
}

/// Subscribes to the `taskUpdates` room topic of `world`'s tenant (flushed: subscribed on
/// the server when it returns).
pub async fn subscribe_task_updates(
    client: &async_nats::Client,
    world: &World,
) -> anyhow::Result<async_nats::Subscriber> {
    let updates = client
        .subscribe(format!(
            "talkwai.room.tenant.{}.topic.taskUpdates",
            world.tenant
        ))
        .await?;
    client.flush().await?;
    Ok(updates)
}

/// What one end-to-end command saw.
struct Trace {
    scheduled: Instant,
    seq: u64,
    replied: Duration,
    visible: Result<Duration, String>,
}

/// An end-to-end rate: `count` commands over `secs` (`per_sec` for labels).
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: u64,
    count: u64,
    secs: f64,
}

/// The p99s (ms) of one end-to-end run and what went missing.
struct Summary {
    visible_p99: Option<f64>,
    live_p99: Option<f64>,
    notified_p99: Option<f64>,
    /// Commands failed, tasks not visible, live updates or `taskUpdates` never delivered.
    missing: u64,
}

impl Summary {
    /// Why this run misses the knee's targets, if it does.
    fn misses(&self) -> Option<String> {
        let (visible, live, notified) = KNEE_TARGETS;
        let over = |p99: Option<f64>, target: f64, what: &str| match p99 {
            Some(p) if p <= target => None,
            Some(p) => Some(format!("{what} p99 {p:.1} ms > {target:.0} ms")),
            None => Some(format!("no {what} measured")),
        };
        let mut why: Vec<String> = [
            over(self.visible_p99, visible, "query-visible"),
            over(self.live_p99, live, "live update"),
            over(self.notified_p99, notified, "taskUpdates"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.missing > 0 {
            why.push(format!("{} missing", self.missing));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// Create-task at `at`; each reply's `seq` becomes the `minSeq` of a query for the task, and
/// is matched with the `taskUpdates` message carrying it and with the first update of a live
/// dashboard query that reaches it. Rows go to `group`, with the CPU each of `watched` used
/// per command while the commands were sent and answered.
async fn end_to_end(
    client: &async_nats::Client,
    world: &World,
    report: &mut Report,
    at: Rate,
    (raw_p99, watched): (Option<f64>, &[Watched]),
    group: &str,
) -> anyhow::Result<Summary> {
    let Rate {
        per_sec,
        count,
        secs,
    } = at;
    let lives = crate::live::Updates::start(client).await?;
    let dashboard = crate::live::subscribe(
        client,
        world.tenant,
        serde_json::from_str(DASHBOARD)?,
        &world.bearer,
    )
    .await
    .context("subscribing the dashboard")?;
    let mut updates = subscribe_task_updates(client, world).await?;
    let arrivals: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let seen = Arc::clone(&arrivals);
    let reader = tokio::spawn(async move {
        while let Some(message) = updates.next().await {
            let now = Instant::now();
            let seq = serde_json::from_slice::<Value>(&message.payload)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            if let (Some(seq), Ok(mut seen)) = (seq, seen.lock()) {
                seen.entry(seq).or_insert(now);
            }
        }
    });
    let rate = count as f64 / secs.max(1e-3);
    let period = Duration::from_secs_f64(1.0 / rate);
    let subject: Arc<str> = Arc::from(format!("talkwai.cmd.{}.task.create", world.tenant));
    let bearer = Arc::clone(&world.bearer);
    let window = cpu::Window::start(watched);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..count {
        let scheduled = start + period.mul_f64(k as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let subject = subject.to_string();
        let bearer = Arc::clone(&bearer);
        let world = world.clone();
        tasks.spawn(async move {
            let task = Uuid::new_v4();
            let accepted =
                commands::send(&client, subject, create_task_command(task), &bearer).await?;
            let replied = scheduled.elapsed();
            let replied_at = Instant::now();
            let visible = match query_task(&client, &world, &bearer, task, Some(accepted.seq)).await
            {
                Ok(true) => Ok(scheduled.elapsed()),
                Ok(false) => Err("task not in the answer".to_owned()),
                Err(err) => Err(err),
            };
            Ok::<_, String>((
                Trace {
                    scheduled,
                    seq: accepted.seq,
                    replied,
                    visible,
                },
                replied_at,
            ))
        });
    }
    let mut traces = Vec::new();
    let mut replies = Vec::new();
    let (mut errors, mut first_error) = (0u64, None::<String>);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((trace, replied_at))) => {
                replies.push((trace.seq, replied_at));
                traces.push(trace);
            }
            Ok(Err(err)) => {
                errors += 1;
                first_error.get_or_insert(err);
            }
            Err(err) => {
                errors += 1;
                first_error.get_or_insert(err.to_string());
            }
        }
    }
    let elapsed = start.elapsed();
    let used = window.end();
    // Let the last notifications arrive.
    let settle = Instant::now() + Duration::from_secs(5);
    loop {
        let all = arrivals
            .lock()
            .map(|a| traces.iter().all(|t| a.contains_key(&t.seq)))
            .unwrap_or(true);
        if all || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();
    let wanted: Vec<(String, u64)> = replies
        .iter()
        .map(|(seq, _)| (dashboard.subject.clone(), *seq))
        .collect();
    lives.settle(&wanted, Duration::from_secs(5)).await;
    let (mut live, mut live_missing) = (drive::histogram(), 0u64);
    for (seq, replied_at) in &replies {
        match lives.reached(&dashboard.subject, *seq) {
            Some(arrived) => {
                drive::record(&mut live, arrived.saturating_duration_since(*replied_at))
            }
            None => live_missing += 1,
        }
    }
    lives.stop();
    crate::live::control(client, std::slice::from_ref(&dashboard), "unsubscribe").await;
    let arrivals = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (mut replied, mut visible, mut notified) =
        (drive::histogram(), drive::histogram(), drive::histogram());
    let (mut invisible, mut first_invisible, mut missing) = (0u64, None::<String>, 0u64);
    for trace in &traces {
        drive::record(&mut replied, trace.replied);
        match &trace.visible {
            Ok(d) => drive::record(&mut visible, *d),
            Err(err) => {
                invisible += 1;
                first_invisible.get_or_insert(err.clone());
            }
        }
        match arrivals.get(&trace.seq) {
            Some(at) => drive::record(&mut notified, at.saturating_duration_since(trace.scheduled)),
            None => missing += 1,
        }
    }
    let p99 = |h: &hdrhistogram::Histogram<u64>| {
        (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0)
    };
    let offered = format!(
        "{count} commands offered in {:.1} s; {errors} failed{}",
        elapsed.as_secs_f64(),
        first_error.map_or_else(String::new, |e| format!(" (first: {e})"))
    );
    push(
        report,
        stack::row(
            group,
            &format!("e2e @ {per_sec}/s: command sent -> reply"),
            1,
            "command",
            replied.len(),
            elapsed,
            Some(&replied),
        )
        .note(offered.clone()),
    );
    let visible_p99 = p99(&visible);
    push(
        report,
        stack::row(
            group,
            &format!("e2e @ {per_sec}/s: command sent -> visible in a query (minSeq)"),
            1,
            "command",
            visible.len(),
            elapsed,
            Some(&visible),
        )
        .target(
            "p99 <= 50 ms",
            visible_p99.is_some_and(|p| p <= 50.0) && invisible == 0,
        )
        .note(format!(
            "one query per command, by task id with the reply's seq as minSeq; {invisible} not \
             visible{}",
            first_invisible.map_or_else(String::new, |e| format!(" (first: {e})"))
        )),
    );
    let live_p99 = p99(&live);
    push(
        report,
        stack::row(
            group,
            &format!("e2e @ {per_sec}/s: command reply -> live query update"),
            1,
            "command",
            live.len(),
            elapsed,
            Some(&live),
        )
        .target(
            "p99 <= 50 ms",
            live_p99.is_some_and(|p| p <= 50.0) && live_missing == 0,
        )
        .note(format!(
            "the tenant's newest 20 tasks, subscribed with the member's token; from the reply \
             to the first update whose seq reaches it; {live_missing} of {} never reached",
            replies.len()
        )),
    );
    let notified_p99 = p99(&notified);
    let mut row = stack::row(
        group,
        &format!("e2e @ {per_sec}/s: command sent -> taskUpdates delivered"),
        1,
        "command",
        notified.len(),
        elapsed,
        Some(&notified),
    )
    .target(
        "p99 <= 20 ms",
        notified_p99.is_some_and(|p| p <= 20.0) && missing == 0,
    )
    .note(format!("{missing} of {} not delivered", traces.len()));
    if let (Some(p99), Some(raw)) = (notified_p99, raw_p99) {
        row = row
            .ratio(
                p99 / raw.max(1e-6),
                "p99 over the raw publish -> core subscriber p99",
            )
            .lower_is_better();
    }
    push(report, row);
    let described = used.describe(Some(count));
    println!("      {described}");
    push(
        report,
        Row::figure(
            group,
            &format!("e2e @ {per_sec}/s: CPU per command, every process"),
            used.total().as_secs_f64() * 1e6 / count.max(1) as f64,
            "µs",
        )
        .note(described),
    );
    Ok(Summary {
        visible_p99,
        live_p99,
        notified_p99,
        missing: errors + invisible + missing + live_missing,
    })
}
