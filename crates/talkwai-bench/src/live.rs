//! `talkwai-bench live`: live queries at scale, the services as processes.
//!
//! 10,000 live subscriptions over 1,000 tenants (10 dashboards each, [`SHAPES`]: 5 read tasks,
//! 5 do not) on one `talkwai-query-service` process; task-create commands through the
//! `talkwai-command-service` process, projected by the `talkwai-projector` process:
//!
//! - **spread**: 1,000 events/s over all the tenants (one each per second);
//! - **one tenant**: 1,000 events/s, all in one tenant;
//! - **quiet**, alone and beside a busy tenant (1,000 events/s in tenant 0): 20 events/s over
//!   the other tenants; the difference of their update p99 is what a busy tenant costs another.
//!
//! Update latency: from a command's reply to the first update, on each subscription of its
//! tenant that reads tasks, whose `seq` reaches the command's (its answer holds the change).
//! CPU of the query service from `/proc/<pid>/stat` over each scenario, per event.
//! Also the helpers `e2e` uses for its live-update latency ([`Updates`], [`subscribe`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use talkwai_proto::headers;
use uuid::Uuid;

use crate::commands::{self, PLATFORM, SECRET};
use crate::drive;
use crate::e2e::{Processes, Servers};
use crate::payload::create_task_command;
use crate::report::{Report, Row};
use crate::stack::{self, push};

/// Tenants.
const TENANTS: usize = 1_000;
/// Events per second of the spread and busy loads.
const RATE: f64 = 1_000.0;
/// Events per second of the quiet load.
const QUIET_RATE: f64 = 20.0;
/// Update p99 target, ms.
const TARGET_P99_MS: f64 = 100.0;
/// What a busy tenant may add to another tenant's update p99, ms.
const TARGET_NEIGHBOUR_MS: f64 = 10.0;
/// Requests in flight while setting up.
const SETUP_IN_FLIGHT: usize = 64;

/// The dashboards of each tenant: (query, whether it reads tasks).
const SHAPES: [(&str, bool); 10] = [
    (
        r#"{"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}}}"#,
        true,
    ),
    (
        r#"{"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}, "limit": 20}}}"#,
        true,
    ),
    (
        r#"{"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 10}, "agent": {}, "assignedTo": {}}}"#,
        true,
    ),
    (
        r#"{"tenants": {"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}}}}"#,
        true,
    ),
    (
        r#"{"tasks": {"$": {"fields": ["id", "status", "createdAt"], "order": {"createdAt": "desc"}, "limit": 50}}}"#,
        true,
    ),
    (r#"{"agents": {}}"#, false),
    (
        r#"{"members": {"$": {"where": {"status": "active"}}}}"#,
        false,
    ),
    (r#"{"tenants": {"members": {}}}"#, false),
    (
        r#"{"agents": {"$": {"order": {"createdAt": "desc"}, "limit": 5}}}"#,
        false,
    ),
    (r#"{"tenants": {"agents": {}}}"#, false),
];

/// A live subscription: its update subject and its control subject.
#[derive(Debug, Clone)]
pub struct Live {
    /// Where its updates are published.
    pub subject: String,
    /// Where renewals go.
    pub control: String,
}

/// Subscribes to `query` in `tenant` as `bearer` (an `Authorization` value).
pub async fn subscribe(
    client: &async_nats::Client,
    tenant: Uuid,
    query: Value,
    bearer: &str,
) -> anyhow::Result<Live> {
    let mut map = HeaderMap::new();
    map.insert(headers::AUTHORIZATION, bearer);
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers(
            format!("talkwai.qry.{tenant}.subscribe"),
            map,
            Bytes::from(serde_json::to_vec(&query)?),
        ),
    )
    .await
    .context("no subscribe reply in time")??;
    let value: Value = serde_json::from_slice(&reply.payload)?;
    let text = |key: &str| {
        value[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("subscribe answered without {key}: {value}"))
    };
    Ok(Live {
        subject: text("subject")?,
        control: text("control")?,
    })
}

/// Sends `op` (`renew` or `unsubscribe`) for each of `lives`, `SETUP_IN_FLIGHT` at a time;
/// returns how many were not answered `ok`.
pub async fn control(client: &async_nats::Client, lives: &[Live], op: &str) -> usize {
    let body = Bytes::from(json!({ "op": op }).to_string());
    futures::stream::iter(lives)
        .map(|live| {
            let request = client.request(live.control.clone(), body.clone());
            async move {
                match tokio::time::timeout(Duration::from_secs(10), request).await {
                    Ok(Ok(reply)) => serde_json::from_slice::<Value>(&reply.payload)
                        .is_ok_and(|v| v["ok"] == json!(true)),
                    _ => false,
                }
            }
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .filter(|ok| futures::future::ready(!ok))
        .count()
        .await
}

/// The part of an update read here.
#[derive(Deserialize)]
struct UpdateSeq {
    seq: u64,
}

/// Per update subject, the `seq` and arrival of each update, in arrival order.
type Arrivals = HashMap<String, Vec<(u64, Instant)>>;

/// Every live-query update delivered to this client: per update subject, its `seq` and
/// arrival, in arrival order.
pub struct Updates {
    seen: Arc<Mutex<Arrivals>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Updates {
    /// Starts reading every update subject (`talkwai.qry.*.live.*`), subscribed on the server
    /// when it returns.
    pub async fn start(client: &async_nats::Client) -> anyhow::Result<Self> {
        let mut updates = client.subscribe("talkwai.qry.*.live.*").await?;
        client.flush().await?;
        let seen: Arc<Mutex<Arrivals>> = Arc::default();
        let into = Arc::clone(&seen);
        let reader = tokio::spawn(async move {
            while let Some(message) = updates.next().await {
                let now = Instant::now();
                if let Ok(update) = serde_json::from_slice::<UpdateSeq>(&message.payload)
                    && let Ok(mut seen) = into.lock()
                {
                    seen.entry(message.subject.to_string())
                        .or_default()
                        .push((update.seq, now));
                }
            }
        });
        Ok(Self { seen, reader })
    }

    /// When the first update on `subject` whose `seq` reaches `seq` arrived (one subscription's
    /// updates come in `seq` order: it is evaluated once at a time, each in a newer snapshot).
    pub fn reached(&self, subject: &str, seq: u64) -> Option<Instant> {
        let seen = self.seen.lock().ok()?;
        let updates = seen.get(subject)?;
        let first = updates.partition_point(|(at, _)| *at < seq);
        updates.get(first).map(|(_, arrived)| *arrived)
    }

    /// Waits (at most `most`) until every `(subject, seq)` of `wanted` was reached (the lock is
    /// taken per pair, so the reader's timestamps are not held up).
    pub async fn settle(&self, wanted: &[(String, u64)], most: Duration) {
        let deadline = Instant::now() + most;
        let mut pending = wanted.to_vec();
        loop {
            pending.retain(|(subject, seq)| self.reached(subject, *seq).is_none());
            if pending.is_empty() || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops reading.
    pub fn stop(self) {
        self.reader.abort();
    }
}

/// One stream of task-create commands: `rate` per second over `tenants` (round robin).
struct Stream {
    name: &'static str,
    rate: f64,
    tenants: Vec<usize>,
}

/// One accepted command: its stream, its tenant (index), its seq and when it was replied.
struct Sent {
    stream: usize,
    tenant: usize,
    seq: u64,
    replied: Instant,
    /// Sampled: reply → visible in a query with the reply's `seq` as `minSeq`.
    visible: Option<Duration>,
}

/// One command in this many is also queried with `minSeq` (projection's share of the latency).
const VISIBLE_SAMPLE: u64 = 10;

/// What one stream of a scenario saw.
struct Seen {
    latency: hdrhistogram::Histogram<u64>,
    /// Reply → visible in a query (`minSeq`), sampled.
    visible: hdrhistogram::Histogram<u64>,
    events: u64,
    missing: u64,
    errors: u64,
}

/// The world: tenants and their subscriptions.
struct World {
    tenants: Vec<Uuid>,
    /// Per tenant, the update subjects of its task-reading subscriptions.
    task_subjects: Vec<Vec<String>>,
    lives: Vec<Live>,
    platform: Arc<str>,
}

/// Runs the stage; `seconds` is the length of each scenario (default 10, 2 quick).
pub async fn run(quick: bool, seconds: Option<f64>) -> anyhow::Result<Report> {
    let secs = seconds.unwrap_or(if quick { 2.0 } else { 10.0 });
    let servers = Servers::start("live").await?;
    let client = &servers.client;
    let mut report = stack::new_report("live", quick, Some(client.server_info().version));
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench/logs");
    let common = [
        ("TALKWAI_NATS_URL", servers.nats.url()),
        ("TALKWAI_PLATFORM_TOKEN", PLATFORM.to_owned()),
        ("TALKWAI_JWT_SECRET", SECRET.to_owned()),
        ("TALKWAI_RATE_LIMIT_PER_TENANT", "0".to_owned()),
        ("TALKWAI_DATABASE_URL", servers.db.clone()),
    ];
    let mut procs = Processes(Vec::new());
    for bin in [
        "talkwai-command-service",
        "talkwai-projector",
        "talkwai-query-service",
    ] {
        let mut env = common.to_vec();
        env.push(("TALKWAI_INSTANCE", format!("bench-{bin}")));
        procs.0.push(servers.binaries.spawn(bin, &env, &logs)?);
    }
    let query_pid = procs
        .0
        .iter()
        .find(|s| s.name == "talkwai-query-service")
        .map(|s| s.pid)
        .context("no query service process")?;
    report.notes.push(format!(
        "live: services as separate processes ({} build), default settings (query pool 4, \
         live interval 20 ms) but the per-tenant rate limit off; {TENANTS} tenants x {} \
         subscriptions (platform token, tenant scope; 5 read tasks, 5 do not); {secs} s per \
         scenario; update latency from the command reply to the first update of each \
         task-reading subscription of its tenant whose seq reaches the command's",
        servers.binaries.profile,
        SHAPES.len()
    ));
    println!(
        "talkwai-bench live: {TENANTS} tenants x {} live queries, {secs} s per scenario",
        SHAPES.len()
    );
    let outcome = measure(client, &mut procs, query_pid, &mut report, secs).await;
    procs
        .finish(
            &mut report,
            &[(
                "talkwai-query-service",
                "query service, 10,000 live queries",
                100.0,
            )],
        )
        .await;
    outcome.map(|()| report)
}
/// Sets the world up and runs the scenarios.
async fn measure(
    client: &async_nats::Client,
    procs: &mut Processes,
    query_pid: u32,
    report: &mut Report,
    secs: f64,
) -> anyhow::Result<()> {
    commands::wait_ready(client)
        .await
        .context("waiting for the command service process")?;
    let world = setup(client).await?;
    procs.check_alive()?;
    let updates = Updates::start(client).await?;
    let everyone: Vec<usize> = (0..TENANTS).collect();
    let others: Vec<usize> = (1..TENANTS).collect();
    let spread = scenario(
        client,
        &world,
        &updates,
        query_pid,
        &[Stream {
            name: "spread",
            rate: RATE,
            tenants: everyone,
        }],
        secs,
    )
    .await?;
    procs.check_alive()?;
    let one = scenario(
        client,
        &world,
        &updates,
        query_pid,
        &[Stream {
            name: "busy",
            rate: RATE,
            tenants: vec![0],
        }],
        secs,
    )
    .await?;
    procs.check_alive()?;
    let quiet = || Stream {
        name: "quiet",
        rate: QUIET_RATE,
        tenants: others.clone(),
    };
    let alone = scenario(client, &world, &updates, query_pid, &[quiet()], secs).await?;
    procs.check_alive()?;
    let busy = Stream {
        name: "busy",
        rate: RATE,
        tenants: vec![0],
    };
    let beside = scenario(client, &world, &updates, query_pid, &[busy, quiet()], secs).await?;
    procs.check_alive()?;
    updates.stop();

    let label = |what: &str| format!("{} subs / {TENANTS} tenants: {what}", world.lives.len());
    let duration = Duration::from_secs_f64(secs);
    let latency_row = |what: &str, seen: &Seen, target: bool| {
        let p99 = p99_ms(&seen.latency);
        let mut row = stack::row(
            "live",
            &label(what),
            1,
            "update",
            seen.latency.len(),
            duration,
            Some(&seen.latency),
        )
        .note(format!(
            "{} events, {} failed; {} (event, subscription) pairs with no update reaching it; \
             projection's share: reply -> visible in a query (minSeq, 1 in {VISIBLE_SAMPLE}) \
             p50 {} / p99 {} ms",
            seen.events,
            seen.errors,
            seen.missing,
            ms(&seen.visible, 0.5),
            ms(&seen.visible, 0.99),
        ));
        if target {
            row = row.target(
                format!("p99 <= {TARGET_P99_MS:.0} ms"),
                p99.is_some_and(|p| p <= TARGET_P99_MS) && seen.missing == 0 && seen.errors == 0,
            );
        }
        row
    };
    let cpu_row = |what: &str, (cpu, events, elapsed): (Duration, u64, Duration)| {
        let per_event = cpu.as_secs_f64() * 1e6 / events.max(1) as f64;
        let cores = cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
        Row::figure(
            "live",
            &label(&format!("query service CPU per event, {what}")),
            per_event,
            "µs/event",
        )
        .target(format!("< 1 core ({cores:.2} used)"), cores < 1.0)
        .note(format!(
            "{:.1} s of CPU over {:.1} s (sending and settling) for {events} events",
            cpu.as_secs_f64(),
            elapsed.as_secs_f64()
        ))
    };
    let rows = [
        (
            format!("{RATE:.0} events/s spread"),
            &spread.0[0],
            Some(("spread", spread.1)),
        ),
        (
            format!("{RATE:.0} events/s in one tenant"),
            &one.0[0],
            Some(("one tenant", one.1)),
        ),
        (
            format!("quiet tenants ({QUIET_RATE:.0} events/s) alone"),
            &alone.0[0],
            None,
        ),
        (
            format!("quiet tenants beside a busy one ({RATE:.0} events/s)"),
            &beside.0[1],
            None,
        ),
    ];
    for (what, seen, cpu) in rows {
        push(
            report,
            latency_row(&format!("{what}: reply -> update"), seen, cpu.is_some()),
        );
        if let Some((name, used)) = cpu {
            push(report, cpu_row(name, used));
        }
    }
    if let (Some(with), Some(without)) = (p99_ms(&beside.0[1].latency), p99_ms(&alone.0[0].latency))
    {
        let raised = with - without;
        let p50 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1000.0;
        push(
            report,
            Row::figure(
                "live",
                "a busy tenant raises another tenant's update p99 by",
                raised,
                "ms",
            )
            .target(
                format!("< {TARGET_NEIGHBOUR_MS:.0} ms"),
                raised < TARGET_NEIGHBOUR_MS,
            )
            .note(format!(
                "quiet p99 {without:.1} ms alone, {with:.1} ms beside the busy tenant; p50 \
                 {:.1} -> {:.1} ms",
                p50(&alone.0[0].latency),
                p50(&beside.0[1].latency)
            )),
        );
    }
    let failed = control(client, &world.lives, "unsubscribe").await;
    if failed > 0 {
        report
            .notes
            .push(format!("live: {failed} unsubscribes not answered ok"));
    }
    Ok(())
}

/// Creates the tenants and their subscriptions.
async fn setup(client: &async_nats::Client) -> anyhow::Result<World> {
    let platform: Arc<str> = Arc::from(format!("Bearer {PLATFORM}"));
    let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::new_v4()).collect();
    let started = Instant::now();
    let created: Vec<Result<talkwai_proto::CommandAccepted, String>> =
        futures::stream::iter(&tenants)
            .map(|tenant| {
                let body = json!({"id": tenant, "name": format!("Live {tenant}")});
                commands::send(
                    client,
                    "talkwai.cmd.platform.tenant.create".to_owned(),
                    Bytes::from(body.to_string()),
                    &platform,
                )
            })
            .buffer_unordered(SETUP_IN_FLIGHT)
            .collect()
            .await;
    let mut last = 0;
    for outcome in created {
        last = last.max(
            outcome
                .map_err(|e| anyhow::anyhow!("creating a tenant: {e}"))?
                .seq,
        );
    }
    // The subscriptions start once every tenant is in the read models.
    let first = json!({"query": {"tenants": {}}, "minSeq": last});
    let probe = subscribe(client, tenants[0], first, &platform)
        .await
        .context("waiting for the tenants to be projected")?;
    // An instance holds at most 10,000: the probe makes room.
    control(client, std::slice::from_ref(&probe), "unsubscribe").await;
    let wanted: Vec<(usize, usize)> = (0..TENANTS)
        .flat_map(|t| (0..SHAPES.len()).map(move |s| (t, s)))
        .collect();
    let lives: Vec<(usize, usize, anyhow::Result<Live>)> = futures::stream::iter(wanted)
        .map(|(t, s)| {
            let platform = Arc::clone(&platform);
            let tenant = tenants[t];
            async move {
                let query: Value = serde_json::from_str(SHAPES[s].0).unwrap_or(Value::Null);
                (t, s, subscribe(client, tenant, query, &platform).await)
            }
        })
        .buffer_unordered(SETUP_IN_FLIGHT)
        .collect()
        .await;
    let mut task_subjects = vec![Vec::new(); TENANTS];
    let mut all = Vec::new();
    for (t, s, live) in lives {
        let live = live.with_context(|| format!("subscribing dashboard {s} of tenant {t}"))?;
        if SHAPES[s].1 {
            task_subjects[t].push(live.subject.clone());
        }
        all.push(live);
    }
    println!(
        "  {TENANTS} tenants and {} live queries set up in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(World {
        tenants,
        task_subjects,
        lives: all,
        platform,
    })
}

/// Quantile `q` of `h` in ms, as text (`-` when empty).
fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// The p99 of `h` in ms.
fn p99_ms(h: &hdrhistogram::Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Runs `streams` together for `secs` (subscriptions renewed first); returns what each saw and
/// the query service's CPU, the events and the time it took.
async fn scenario(
    client: &async_nats::Client,
    world: &World,
    updates: &Updates,
    query_pid: u32,
    streams: &[Stream],
    secs: f64,
) -> anyhow::Result<(Vec<Seen>, (Duration, u64, Duration))> {
    let unrenewed = control(client, &world.lives, "renew").await;
    if unrenewed > 0 {
        bail!("{unrenewed} live queries could not be renewed");
    }
    // What the renewals and earlier scenarios left settles first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<&str> = streams.iter().map(|s| s.name).collect();
    println!("  scenario: {}", names.join(" + "));
    let cpu_before = crate::machine::cpu_time(Some(query_pid));
    let start = Instant::now();
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let errors: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; streams.len()]));
    let mut senders = tokio::task::JoinSet::new();
    for (index, stream) in streams.iter().enumerate() {
        let count = (stream.rate * secs) as u64;
        let period = Duration::from_secs_f64(1.0 / stream.rate);
        let tenants = stream.tenants.clone();
        let client = client.clone();
        let world_tenants = world.tenants.clone();
        let platform = Arc::clone(&world.platform);
        let sent = Arc::clone(&sent);
        let errors = Arc::clone(&errors);
        senders.spawn(async move {
            let mut commands = tokio::task::JoinSet::new();
            for k in 0..count {
                tokio::time::sleep_until((start + period.mul_f64(k as f64)).into()).await;
                let tenant = tenants[k as usize % tenants.len()];
                let subject = format!("talkwai.cmd.{}.task.create", world_tenants[tenant]);
                let client = client.clone();
                let platform = Arc::clone(&platform);
                let sent = Arc::clone(&sent);
                let errors = Arc::clone(&errors);
                let tenant_id = world_tenants[tenant];
                commands.spawn(async move {
                    let task = Uuid::new_v4();
                    let body = create_task_command(task);
                    match commands::send(&client, subject, body, &platform).await {
                        Ok(accepted) => {
                            let replied = Instant::now();
                            let visible = if k % VISIBLE_SAMPLE == 0 {
                                let found = crate::e2e::query_tenant_task(
                                    &client,
                                    tenant_id,
                                    &platform,
                                    task,
                                    Some(accepted.seq),
                                )
                                .await;
                                matches!(found, Ok(true)).then(|| replied.elapsed())
                            } else {
                                None
                            };
                            if let Ok(mut sent) = sent.lock() {
                                sent.push(Sent {
                                    stream: index,
                                    tenant,
                                    seq: accepted.seq,
                                    replied,
                                    visible,
                                });
                            }
                        }
                        Err(_) => {
                            if let Ok(mut errors) = errors.lock() {
                                errors[index] += 1;
                            }
                        }
                    }
                });
            }
            while commands.join_next().await.is_some() {}
        });
    }
    while senders.join_next().await.is_some() {}
    let sent = std::mem::take(&mut *sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let wanted: Vec<(String, u64)> = sent
        .iter()
        .flat_map(|s| {
            world.task_subjects[s.tenant]
                .iter()
                .map(move |subject| (subject.clone(), s.seq))
        })
        .collect();
    updates.settle(&wanted, Duration::from_secs(10)).await;
    let elapsed = start.elapsed();
    let cpu = crate::machine::cpu_time(Some(query_pid))
        .zip(cpu_before)
        .map_or(Duration::ZERO, |(after, before)| {
            after.saturating_sub(before)
        });
    let errors = errors
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut seen: Vec<Seen> = errors
        .into_iter()
        .map(|errors| Seen {
            latency: drive::histogram(),
            visible: drive::histogram(),
            events: 0,
            missing: 0,
            errors,
        })
        .collect();
    for s in &sent {
        let into = &mut seen[s.stream];
        into.events += 1;
        if let Some(visible) = s.visible {
            drive::record(&mut into.visible, visible);
        }
        for subject in &world.task_subjects[s.tenant] {
            match updates.reached(subject, s.seq) {
                Some(arrived) => {
                    drive::record(
                        &mut into.latency,
                        arrived.saturating_duration_since(s.replied),
                    );
                }
                None => into.missing += 1,
            }
        }
    }
    Ok((seen, (cpu, sent.len() as u64, elapsed)))
}
