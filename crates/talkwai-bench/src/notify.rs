//! The notify suite: latency from an event committed to the log to its `taskUpdates` message
//! delivered to a subscriber of `talkwai.room.tenant.<t>.topic.taskUpdates`, with the notifier
//! in process, at a fixed rate; beside raw JetStream publishes received by a plain core
//! subscriber on the event subjects, same pacing.
//!
//! Events are appended directly (a `jetstream::publish` per event, with the body through the
//! domain's `Event::encode` and the headers the command service writes, including
//! `Nats-Expected-Last-Subject-Sequence`), open loop at a fixed rate: a new task is created
//! whenever no task waits for its next step, otherwise the next step (start, then complete) of
//! a task whose previous event was acknowledged, so about a third of the events of each kind.
//!
//! Last, on a fresh nats-server, the notifier as a process (its release binary, as deployed)
//! works through a backlog of task lifecycles spread over many tenants: events/s from its
//! start to its consumer drained, and its peak RSS (`VmHWM`), beside issue 19's targets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::EventBody;
use talkwai_domain::ids::TenantId;
use talkwai_eventstore::{EventStore, StreamSettings, header_map};
use talkwai_notifier::{Config, Notifier};
use talkwai_proto::{ActorRef, EventMeta, Scope, headers};
use talkwai_testkit::NatsServer;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::drive;
use crate::procs::Binaries;
use crate::projection::{event, task_created};
use crate::report::{Report, Row};
use crate::stack::{self, push};

const PLATFORM: &str = "bench-platform-token";
const SECRET: &str = "bench-jwt-secret";

/// Send and acknowledgement times of each sequence.
#[derive(Default)]
struct Times {
    sent: HashMap<u64, (Instant, Instant)>,
    errors: u64,
}

/// What a paced run produced.
struct Paced {
    times: Times,
    elapsed: Duration,
    events: u64,
}

/// Publishes `count` events at `rate` per second for `tenant`, open loop.
async fn pace(
    client: &async_nats::Client,
    tenant: Uuid,
    rate: u64,
    count: u64,
) -> anyhow::Result<Paced> {
    let js = jetstream::new(client.clone());
    let times = Arc::new(Mutex::new(Times::default()));
    let (next_tx, mut next_rx) = mpsc::unbounded_channel::<(Uuid, u64, u8)>();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let at = 1_751_360_400_000i64;
    let mut acks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for k in 0..count {
        interval.tick().await;
        let (task, expected, stage) = next_rx
            .try_recv()
            .unwrap_or_else(|_| (Uuid::new_v4(), 0, 0));
        let ev = match stage {
            0 => task_created(at, usize::try_from(k).unwrap_or(0))?,
            1 => event(json!({"type": "task.started", "version": 1, "data": {"at": at}}))?,
            _ => event(json!({"type": "task.completed", "version": 1, "data": {"at": at}}))?,
        };
        let body = ev.encode();
        let (h, _) = direct_headers(&body, tenant, at, expected);
        let payload = serde_json::to_vec(&body)?;
        let t0 = Instant::now();
        let ack = js
            .publish_with_headers(
                format!("talkwai.evt.{tenant}.task.{task}"),
                h,
                payload.into(),
            )
            .await
            .context("publishing")?;
        let times = Arc::clone(&times);
        let next_tx = next_tx.clone();
        acks.spawn(async move {
            match ack.await {
                Ok(ack) => {
                    let t1 = Instant::now();
                    if let Ok(mut times) = times.lock() {
                        times.sent.insert(ack.sequence, (t0, t1));
                    }
                    if stage < 2 {
                        let _ = next_tx.send((task, ack.sequence, stage + 1));
                    }
                }
                Err(_) => {
                    if let Ok(mut times) = times.lock() {
                        times.errors += 1;
                    }
                }
            }
        });
        while acks.try_join_next().is_some() {}
    }
    let elapsed = start.elapsed();
    while acks.join_next().await.is_some() {}
    let times = std::mem::take(&mut *times.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Paced {
        times,
        elapsed,
        events: count,
    })
}

/// Collects (seq → arrival) from a subscription until `stop` fires.
fn collect(
    mut sub: async_nats::Subscriber,
    seq_of: fn(&async_nats::Message) -> Option<u64>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<HashMap<u64, Instant>>,
) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut seen = HashMap::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                message = sub.next() => {
                    let Some(message) = message else { break };
                    let now = Instant::now();
                    if let Some(seq) = seq_of(&message) {
                        seen.entry(seq).or_insert(now);
                    }
                }
            }
        }
        seen
    });
    (stop, handle)
}

fn update_seq(message: &async_nats::Message) -> Option<u64> {
    serde_json::from_slice::<Value>(&message.payload)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// Waits until `count` entries arrived (or `limit`), then stops the collector.
async fn finish(
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<HashMap<u64, Instant>>,
    settle: Duration,
) -> HashMap<u64, Instant> {
    tokio::time::sleep(settle).await;
    let _ = stop.send(());
    handle.await.unwrap_or_default()
}

struct Latencies {
    from_commit: hdrhistogram::Histogram<u64>,
    from_publish: hdrhistogram::Histogram<u64>,
    commit: hdrhistogram::Histogram<u64>,
    delivered: u64,
    missing: u64,
    before_ack: u64,
    /// Deliveries per second between the first and the last delivery.
    delivery_rate: f64,
}

fn latencies(times: &Times, seen: &HashMap<u64, Instant>) -> Latencies {
    let mut out = Latencies {
        from_commit: drive::histogram(),
        from_publish: drive::histogram(),
        commit: drive::histogram(),
        delivered: 0,
        missing: 0,
        before_ack: 0,
        delivery_rate: 0.0,
    };
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for (seq, (sent, acked)) in &times.sent {
        drive::record(&mut out.commit, acked.duration_since(*sent));
        let Some(arrived) = seen.get(seq) else {
            out.missing += 1;
            continue;
        };
        out.delivered += 1;
        first = Some(first.map_or(*arrived, |f: Instant| f.min(*arrived)));
        last = Some(last.map_or(*arrived, |l: Instant| l.max(*arrived)));
        drive::record(&mut out.from_publish, arrived.duration_since(*sent));
        if arrived < acked {
            out.before_ack += 1;
        }
        drive::record(
            &mut out.from_commit,
            arrived.saturating_duration_since(*acked),
        );
    }
    if let (Some(first), Some(last)) = (first, last) {
        out.delivery_rate =
            out.delivered as f64 / last.duration_since(first).as_secs_f64().max(1e-9);
    }
    out
}

/// Runs the suite.
pub async fn run(quick: bool, seconds: Option<f64>) -> anyhow::Result<Report> {
    let rate: u64 = 1_000;
    let secs = seconds.unwrap_or(if quick { 3.0 } else { 15.0 });
    let count = (rate as f64 * secs) as u64;
    let warm = rate;
    let nats = NatsServer::start()
        .await
        .context("starting nats-server (scripts/dev.sh setup installs it)")?;
    crate::drive::set_server_pid(nats.pid());
    let client = async_nats::connect(nats.url()).await?;
    let _store = EventStore::open(client.clone(), &StreamSettings::default()).await?;
    let mut report = stack::new_report("notify", quick, Some(client.server_info().version));
    report.notes.push(format!(
        "{rate} events/s open loop for {secs} s ({count} events) after {warm} warm-up events; \
         direct jetstream publishes (the command service is not in the path); \
         nats-server sync_interval always, file store"
    ));
    println!(
        "talkwai-bench notify: {rate} events/s for {secs} s, nats-server {} on {} CPUs",
        report.machine.nats_server.as_deref().unwrap_or("?"),
        report.machine.nproc
    );

    // Baseline: raw publishes, a plain core subscriber on the event subjects.
    let tenant = Uuid::new_v4();
    let sub = client
        .subscribe(format!("talkwai.evt.{tenant}.task.*"))
        .await?;
    // The core subscriber sees the stream sequence only through the ack; key by message id.
    let (stop, handle) = collect(sub, |m| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(headers::NATS_MSG_ID))
            .map(|v| {
                let mut hash = 0xcbf2_9ce4_8422_2325u64;
                for b in v.as_str().bytes() {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                hash
            })
    });
    let _ = pace(&client, tenant, rate, warm).await?;
    let paced = pace_keyed(&client, tenant, rate, count).await?;
    let seen = finish(stop, handle, Duration::from_secs(1)).await;
    let base = latencies(&paced.times, &seen);
    push(
        &mut report,
        stack::row(
            "notify-baseline",
            "raw: jetstream publish -> core subscriber on the event subject",
            1,
            "event",
            base.delivered,
            paced.elapsed,
            Some(&base.from_publish),
        )
        .note(format!(
            "latency from publish sent to delivered; missing {}; publish->ack p50 {:.2} ms p99 {:.2} ms",
            base.missing,
            base.commit.value_at_quantile(0.5) as f64 / 1000.0,
            base.commit.value_at_quantile(0.99) as f64 / 1000.0
        )),
    );
    let base_p99 = base.from_publish.value_at_quantile(0.99) as f64 / 1000.0;

    // The notifier in process.
    let mut config = Config::for_tests(&nats.url(), PLATFORM, SECRET);
    // Production values where the test configuration shortens them.
    config.ack_wait_secs = 30;
    config.max_ack_pending = 4096;
    config.lease_ms = 1000;
    config.cache_capacity = 100_000;
    config.failure_spike = 10;
    config.projection_lag_threshold = 10_000;
    config.check_interval_ms = 10_000;
    config.presence_ttl_secs = 15;
    config.max_in_flight = 1024;
    config.instance = "notifier-bench".into();
    let notifier = Notifier::build(config)
        .await
        .context("building the notifier")?;
    let (stop_notifier, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        notifier
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    // The consumer starts at the beginning of the log: the baseline's events are a backlog,
    // and working through it shows the notifier's sustained rate.
    let backlog = stored_events(&jetstream::new(client.clone())).await?;
    match drained(&client, Duration::from_secs(600)).await? {
        Some(took) => push(
            &mut report,
            stack::row(
                "notify",
                "notifier: working through a backlog (max sustained rate)",
                1,
                "event",
                backlog,
                took,
                None,
            )
            .note("from Notifier::run to consumer num_pending = 0, ack pending = 0; includes start-up"),
        ),
        None => report
            .notes
            .push("the notifier did not work through the backlog in 600 s".into()),
    }
    for rate in [rate, rate / 5] {
        measure_notifier(&client, &mut report, rate, secs, base_p99).await?;
    }
    let _ = stop_notifier.send(());
    if let Ok(Err(err)) = task.await {
        report.notes.push(format!("notifier ended with: {err}"));
    }
    drop(client);
    drop(nats);
    backlog_process(&mut report, if quick { 30_000 } else { 90_000 }).await?;
    Ok(report)
}

/// Tenants the process backlog is spread over.
const BACKLOG_TENANTS: usize = 200;
/// Appends in flight while the backlog is written.
const BACKLOG_WINDOW: usize = 512;

/// The notifier as a process through a backlog of about `events` events (task lifecycles of
/// [`BACKLOG_TENANTS`] tenants: every create, then every start, then every complete, each
/// with its expected last subject sequence): events/s from its start to its consumer drained
/// (start-up and taking the lease included), and its peak RSS.
async fn backlog_process(report: &mut Report, events: u64) -> anyhow::Result<()> {
    let binaries = Binaries::ensure()?;
    let nats = NatsServer::start()
        .await
        .context("starting nats-server for the backlog")?;
    let client = async_nats::connect(nats.url()).await?;
    let _store = EventStore::open(client.clone(), &StreamSettings::default()).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .build(client.clone());
    let tasks = usize::try_from(events / 3).unwrap_or(0).max(1);
    let ids: Vec<(Uuid, Uuid)> = (0..tasks).map(|k| (tenant_of(k), Uuid::new_v4())).collect();
    let at = 1_751_360_400_000i64;
    let written = Instant::now();
    // Each task's last sequence (`None` once an append of it failed: its later steps would
    // be refused).
    let mut last = vec![Some(0u64); tasks];
    for step in 0..3u8 {
        let mut acks = tokio::task::JoinSet::new();
        for (k, (tenant, task)) in ids.iter().enumerate() {
            let Some(expected) = last[k] else { continue };
            let ev = match step {
                0 => task_created(at, k)?,
                1 => event(json!({"type": "task.started", "version": 1, "data": {"at": at}}))?,
                _ => event(json!({"type": "task.completed", "version": 1, "data": {"at": at}}))?,
            };
            let body = ev.encode();
            let (h, _) = direct_headers(&body, *tenant, at, expected);
            let ack = js
                .publish_with_headers(
                    format!("talkwai.evt.{tenant}.task.{task}"),
                    h,
                    serde_json::to_vec(&body)?.into(),
                )
                .await
                .context("publishing the backlog")?;
            acks.spawn(async move { (k, ack.await.ok().map(|a| a.sequence)) });
            while acks.len() >= BACKLOG_WINDOW {
                record_ack(acks.join_next().await, &mut last)?;
            }
        }
        while let Some(joined) = acks.join_next().await {
            record_ack(Some(joined), &mut last)?;
        }
    }
    let backlog = stored_events(&js).await?;
    println!(
        "  backlog: {backlog} events over {BACKLOG_TENANTS} tenants written in {:.1} s; the notifier process starts",
        written.elapsed().as_secs_f64()
    );
    let logs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench/logs/notify");
    let service = binaries.spawn(
        "talkwai-notifier",
        &[
            ("TALKWAI_NATS_URL", nats.url()),
            ("TALKWAI_PLATFORM_TOKEN", PLATFORM.to_owned()),
            ("TALKWAI_JWT_SECRET", SECRET.to_owned()),
            ("TALKWAI_NOTIFIER_SKIP_OLDER_THAN_SECS", "0".to_owned()),
            ("TALKWAI_INSTANCE", "notifier-backlog".to_owned()),
        ],
        &logs,
    )?;
    let took = drained(&client, Duration::from_secs(600)).await?;
    let memory = service.memory();
    service.stop(Duration::from_secs(30)).await?;
    let Some(took) = took else {
        report.notes.push(format!(
            "the notifier process did not work through {backlog} events in 600 s"
        ));
        return Ok(());
    };
    let rate = backlog as f64 / took.as_secs_f64().max(1e-9);
    push(
        report,
        stack::row(
            "notify",
            "notifier process: working through a backlog",
            1,
            "event",
            backlog,
            took,
            None,
        )
        .target(">= 20000 events/s", rate >= 20_000.0)
        .note(format!(
            "{BACKLOG_TENANTS} tenants; from the process start to consumer num_pending = 0, \
             ack pending = 0 (start-up and the lease included); {} build",
            binaries.profile
        )),
    );
    if let Some(memory) = memory {
        let row = Row::figure(
            "notify",
            "notifier process: peak RSS through the backlog",
            memory.peak_mib,
            "MiB",
        )
        .target("<= 100 MiB", memory.peak_mib <= 100.0)
        .note(format!("VmHWM; VmRSS at the end {:.1} MiB", memory.rss_mib));
        println!("  notifier peak RSS {:.1} MiB", memory.peak_mib);
        report.rows.push(row);
    }
    drop(client);
    drop(nats);
    Ok(())
}

/// How many messages the event stream holds.
async fn stored_events(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream("TALKWAI_EVENTS")
        .await?
        .info()
        .await?
        .state
        .messages)
}

/// The tenant of the `k`-th backlog task.
fn tenant_of(k: usize) -> Uuid {
    Uuid::from_u128(0x7a1c_0000_0000_4000_8000_0000_0000_0000 | (k % BACKLOG_TENANTS) as u128)
}

/// Remembers a backlog append's sequence as its task's last (the next step expects it), or
/// that it failed.
fn record_ack(
    joined: Option<Result<(usize, Option<u64>), tokio::task::JoinError>>,
    last: &mut [Option<u64>],
) -> anyhow::Result<()> {
    if let Some(joined) = joined {
        let (k, seq) = joined?;
        last[k] = seq;
    }
    Ok(())
}

/// Like [`pace`], but the times are keyed by a hash of the message id (what a core subscriber
/// can see), not by stream sequence.
async fn pace_keyed(
    client: &async_nats::Client,
    tenant: Uuid,
    rate: u64,
    count: u64,
) -> anyhow::Result<Paced> {
    let js = jetstream::new(client.clone());
    let times = Arc::new(Mutex::new(Times::default()));
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let at = 1_751_360_400_000i64;
    let mut acks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for k in 0..count {
        interval.tick().await;
        let task = Uuid::new_v4();
        let body = task_created(at, usize::try_from(k).unwrap_or(0))?.encode();
        let (h, command) = direct_headers(&body, tenant, at, 0);
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for b in command.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let payload = serde_json::to_vec(&body)?;
        let t0 = Instant::now();
        let ack = js
            .publish_with_headers(
                format!("talkwai.evt.{tenant}.task.{task}"),
                h,
                payload.into(),
            )
            .await
            .context("publishing")?;
        let times = Arc::clone(&times);
        acks.spawn(async move {
            let ok = ack.await.is_ok();
            let t1 = Instant::now();
            if let Ok(mut times) = times.lock() {
                if ok {
                    times.sent.insert(hash, (t0, t1));
                } else {
                    times.errors += 1;
                }
            }
        });
        while acks.try_join_next().is_some() {}
    }
    let elapsed = start.elapsed();
    while acks.join_next().await.is_some() {}
    let times = std::mem::take(&mut *times.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Paced {
        times,
        elapsed,
        events: count,
    })
}

/// One paced pass through the running notifier at `rate` events/s.
async fn measure_notifier(
    client: &async_nats::Client,
    report: &mut Report,
    rate: u64,
    secs: f64,
    base_p99: f64,
) -> anyhow::Result<()> {
    let count = (rate as f64 * secs) as u64;
    let warm = rate;
    let tenant = Uuid::new_v4();
    let sub = client
        .subscribe(format!("talkwai.room.tenant.{tenant}.topic.taskUpdates"))
        .await?;
    let (stop, handle) = collect(sub, update_seq);
    // Warm-up: the notifier first works through the baseline's events (its consumer starts at
    // the beginning of the log), then these.
    let warmed = pace(client, tenant, rate, warm).await?;
    let _ = warmed;
    let _ = drained(client, Duration::from_secs(600)).await?;
    let paced = pace(client, tenant, rate, count).await?;
    let _ = drained(client, Duration::from_secs(600)).await?;
    let seen = finish(stop, handle, Duration::from_millis(200)).await;
    let out = latencies(&paced.times, &seen);
    let p99 = out.from_commit.value_at_quantile(0.99) as f64 / 1000.0;
    push(
        report,
        stack::row(
            "notify",
            &format!("notifier @ {rate}/s: event committed (ack) -> taskUpdates delivered"),
            1,
            "event",
            out.delivered,
            paced.elapsed,
            Some(&out.from_commit),
        )
        .note(format!(
            "missing {}; {} delivered before the publisher saw the ack (counted as 0); \
             achieved {:.0} events/s offered; delivered {:.0}/s (first to last delivery)",
            out.missing,
            out.before_ack,
            paced.events as f64 / paced.elapsed.as_secs_f64().max(1e-9),
            out.delivery_rate
        )),
    );
    if rate == 1_000
        && let Some(row) = report.rows.last_mut()
    {
        *row = row.clone().target("p99 <= 20 ms", p99 <= 20.0);
    }
    let p99_pub = out.from_publish.value_at_quantile(0.99) as f64 / 1000.0;
    push(
        report,
        stack::row(
            "notify",
            &format!("notifier @ {rate}/s: publish sent -> taskUpdates delivered"),
            1,
            "event",
            out.delivered,
            paced.elapsed,
            Some(&out.from_publish),
        )
        .ratio(
            p99_pub / base_p99.max(1e-6),
            "p99 over the raw core-subscriber p99 (both from publish sent)",
        )
        .lower_is_better()
        .note(format!(
            "publish->ack p50 {:.2} ms p99 {:.2} ms",
            out.commit.value_at_quantile(0.5) as f64 / 1000.0,
            out.commit.value_at_quantile(0.99) as f64 / 1000.0
        )),
    );
    Ok(())
}

/// Waits until the notifier's consumer has nothing pending or unacknowledged (at most
/// `limit`); returns how long it took, or `None` on timeout.
async fn drained(client: &async_nats::Client, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("TALKWAI_EVENTS").await?;
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(info) = stream
            .consumer_info(talkwai_notifier::events::CONSUMER)
            .await
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            return Ok(Some(start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(None)
}

/// A lone event's headers in `tenant` as the command service writes them, with the
/// concurrency header (`expected`) and a fresh command id as the dedupe id; and that id.
fn direct_headers(
    body: &EventBody,
    tenant: Uuid,
    at: i64,
    expected: u64,
) -> (async_nats::HeaderMap, String) {
    let command_id = Uuid::new_v4();
    let command = command_id.to_string();
    let mut h = header_map(
        EventMeta::lone(
            body,
            Scope::Tenant(TenantId(tenant)),
            ActorRef::Platform,
            command_id,
            at,
        )
        .to_headers(),
    );
    h.insert(
        headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
    h.insert(headers::NATS_MSG_ID, command.as_str());
    (h, command)
}
