//! The projection suite: how fast the projector turns the log into PostgreSQL rows, beside a
//! raw multi-row upsert of the very same rows.
//!
//! 1. A log of N events is written through the eventstore [`Appender`] in atomic requests of
//!    1,000 messages (bodies through the domain's `Event::encode`, the headers the command
//!    service writes). In rounds of 10,000 tasks: every task is created; every 5th task of the
//!    previous round is started, every 10th of the round before completed, so a lifecycle
//!    event usually finds its row in the database, not in the batch (≈77 % task.created).
//! 2. Raw baseline: the rows those events produce (computed in memory with the projector's own
//!    `rows::apply`, one row state per event, in log order) upserted with the projector's
//!    statement (`INSERT … SELECT * FROM jsonb_populate_recordset … ON CONFLICT DO UPDATE`),
//!    1,000 rows per statement, one transaction each, into a fresh database.
//! 3. The projector (`Projector::build` + `run`) on another fresh database: time from `run` to
//!    checkpoint == head.
//! 4. `rebuild::rebuild` of the whole log into a new generation (parity check and swap
//!    included), with the caught-up projector live.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::ids::TenantId;
use talkwai_domain::{Event, EventBody};
use talkwai_eventstore::{
    AppendRequest, AppenderConfig, EventStore, Outbound, StreamSettings, header_map,
};
use talkwai_projector::{Projector, rebuild, rows};
use talkwai_proto::{ActorRef, EventMeta, EventSubject, Scope};
use talkwai_testkit::{NatsServer, Postgres};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::drive;
use crate::report::{Report, Row};
use crate::stack::{self, push};

/// Tasks created per round.
const ROUND_TASKS: usize = 10_000;
/// Messages per append request (one atomic batch each).
const APPEND_BATCH: usize = 1000;
/// Rows per raw upsert statement (and transaction).
const UPSERT_BATCH: usize = 1000;
/// Tenants the tasks are spread over.
const TENANTS: usize = 100;
/// Events of the rebuild target.
const REBUILD_TARGET: u64 = 1_000_000;

fn outbound(subject: String, tenant: Uuid, event: &Event, expected: Option<u64>) -> Outbound {
    let body = event.encode();
    let meta = EventMeta::lone(
        &body,
        Scope::Tenant(TenantId(tenant)),
        ActorRef::Platform,
        Uuid::new_v4(),
        1_751_360_400_000,
    );
    Outbound {
        subject,
        headers: header_map(meta.to_headers()),
        payload: serde_json::to_vec(&body).unwrap_or_default().into(),
        expected_last_subject_seq: expected,
    }
}

/// A domain event from its JSON body (checked by the domain's decoder).
pub fn event(body: Value) -> anyhow::Result<Event> {
    let body: EventBody = serde_json::from_value(body)?;
    Event::decode(&body).map_err(|e| anyhow::anyhow!("event does not decode: {e}"))
}

/// The body of a seed-like task.created.
pub fn task_created(at: i64, k: usize) -> anyhow::Result<Event> {
    event(json!({"type": "task.created", "version": 1, "data": {
        "at": at, "type": "call", "status": "pending", "priority": "high",
        "fromAddress": "+15550001111", "toAddress": "+15550002222",
        "subject": format!("Confirm appointment {k}"),
        "content": "Call the patient to confirm the 2:30 pm cleaning.", "metadata": null,
        "scheduledAt": null, "agent": null, "assignedTo": null,
        "createdBy": null, "createdByAdmin": null}}))
}

/// The generated log, round by round, with the raw baseline's upsert batches.
struct Log {
    /// Append requests per round.
    rounds: Vec<Vec<Vec<Outbound>>>,
    /// JSON arrays of rows, `UPSERT_BATCH` each, in log order.
    upserts: Vec<String>,
    events: u64,
    created: u64,
}

fn generate(events: u64) -> anyhow::Result<Log> {
    let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::new_v4()).collect();
    let at = 1_751_360_400_000i64;
    let mut log = Log {
        rounds: Vec::new(),
        upserts: Vec::new(),
        events: 0,
        created: 0,
    };
    // Row state of tasks that still expect an event; the rows written per event.
    let mut state: HashMap<Uuid, rows::Row> = HashMap::new();
    let mut pending_rows: Vec<Value> = Vec::with_capacity(UPSERT_BATCH);
    let mut previous: Vec<(Uuid, Uuid)> = Vec::new();
    let mut before_previous: Vec<(Uuid, Uuid)> = Vec::new();
    let mut seq = 0u64;
    let mut k = 0usize;
    while log.events < events {
        let mut round: Vec<(String, Uuid, Uuid, Event)> = Vec::new();
        let mut this_round = Vec::with_capacity(ROUND_TASKS);
        for i in 0..ROUND_TASKS {
            let tenant = tenants[k % TENANTS];
            let task = Uuid::new_v4();
            round.push((
                format!("talkwai.evt.{tenant}.task.{task}"),
                tenant,
                task,
                task_created(at + k as i64, k)?,
            ));
            if i % 5 == 0 {
                this_round.push((tenant, task));
            }
            k += 1;
        }
        for (tenant, task) in &previous {
            round.push((
                format!("talkwai.evt.{tenant}.task.{task}"),
                *tenant,
                *task,
                event(
                    json!({"type": "task.started", "version": 1, "data": {"at": at + k as i64}}),
                )?,
            ));
        }
        for (n, (tenant, task)) in before_previous.iter().enumerate() {
            if n % 2 == 0 {
                round.push((
                    format!("talkwai.evt.{tenant}.task.{task}"),
                    *tenant,
                    *task,
                    event(
                        json!({"type": "task.completed", "version": 1, "data": {"at": at + k as i64}}),
                    )?,
                ));
            }
        }
        let remaining = usize::try_from(events - log.events).unwrap_or(usize::MAX);
        round.truncate(remaining);
        let mut requests = Vec::new();
        let mut request = Vec::with_capacity(APPEND_BATCH);
        for (subject, tenant, task, ev) in round {
            seq += 1;
            log.events += 1;
            let target = match EventSubject::parse(&subject) {
                Ok(EventSubject::Aggregate(target)) => target,
                _ => bail!("{subject} is not an aggregate subject"),
            };
            let mut row = state.remove(&task);
            if row.is_none() {
                log.created += 1;
            }
            rows::apply(&mut row, &target, &ev, seq)
                .map_err(|e| anyhow::anyhow!("{subject}: {e}"))?;
            if let Some(row) = row {
                pending_rows.push(Value::Object(row.clone()));
                if pending_rows.len() == UPSERT_BATCH {
                    log.upserts
                        .push(serde_json::to_string(&Value::Array(std::mem::take(
                            &mut pending_rows,
                        )))?);
                }
                let status = row.get("status").and_then(Value::as_str).unwrap_or("");
                if status != "completed" {
                    state.insert(task, row);
                }
            }
            request.push(outbound(subject, tenant, &ev, None));
            if request.len() == APPEND_BATCH {
                requests.push(std::mem::take(&mut request));
            }
        }
        if !request.is_empty() {
            requests.push(request);
        }
        log.rounds.push(requests);
        // Tasks that get no further event leave the state map.
        let keep: std::collections::HashSet<Uuid> = this_round
            .iter()
            .chain(previous.iter())
            .map(|(_, t)| *t)
            .collect();
        state.retain(|id, _| keep.contains(id));
        before_previous = std::mem::replace(&mut previous, this_round);
    }
    if !pending_rows.is_empty() {
        log.upserts
            .push(serde_json::to_string(&Value::Array(pending_rows))?);
    }
    Ok(log)
}

/// Writes the rounds through the appender; every round completes before the next starts (a
/// lifecycle event always follows its task's creation in the log).
async fn write_log(store: &EventStore, rounds: Vec<Vec<Vec<Outbound>>>) -> anyhow::Result<u64> {
    let appender = store.appender(AppenderConfig::default());
    for requests in rounds {
        let mut appends = futures::stream::iter(requests.into_iter().map(|messages| {
            let appender = appender.clone();
            async move {
                appender
                    .append(AppendRequest {
                        messages,
                        dedupe_id: None,
                        claim_first: false,
                    })
                    .await
            }
        }))
        .buffer_unordered(8);
        while let Some(done) = appends.next().await {
            done.context("appending the log")?;
        }
    }
    Ok(store.last_sequence().await?)
}

/// A fresh database with the projector's schema; returns its live generation schema.
async fn fresh_schema(pg: &Postgres, prefix: &str) -> anyhow::Result<(String, String)> {
    let db = pg.create_unique_database(prefix).await?;
    let pool = talkwai_projector::pool(&db, 1)?;
    let mut conn = pool.get().await?;
    talkwai_projector::schema::migrate(&conn).await?;
    let (_, schema) = talkwai_projector::schema::live_generation(&mut conn).await?;
    Ok((db, schema))
}

/// The raw baseline: the projector's own upsert statement, 1,000 rows each, one transaction
/// per statement. Returns (rows, elapsed, per-batch latency).
async fn raw_upsert(
    db: &str,
    schema: &str,
    batches: &[String],
) -> anyhow::Result<(u64, Duration, hdrhistogram::Histogram<u64>)> {
    let mut client = stack::connect(db).await?;
    let columns = talkwai_projector::schema::COLUMNS
        .iter()
        .find(|(t, _)| *t == "tasks")
        .map(|(_, c)| *c)
        .unwrap_or_default();
    // The projector's own statement, so the baseline differs only in what it skips.
    let sql = talkwai_projector::apply::upsert_sql(schema, "tasks", columns, "$1::text::jsonb");
    let statement = client.prepare(&sql).await?;
    let mut latency = drive::histogram();
    let mut rows = 0u64;
    let start = Instant::now();
    for batch in batches {
        let t0 = Instant::now();
        let tx = client.transaction().await?;
        rows += tx.execute(&statement, &[batch]).await?;
        tx.commit().await?;
        drive::record(&mut latency, t0.elapsed());
    }
    Ok((rows, start.elapsed(), latency))
}

async fn checkpoint(client: &tokio_postgres::Client) -> u64 {
    client
        .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
        .await
        .map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Runs the suite on a fresh nats-server and PostgreSQL with `events` events (default 1M,
/// 100k with `quick`).
pub async fn run(quick: bool, events: Option<u64>) -> anyhow::Result<Report> {
    let events: u64 = events.unwrap_or(if quick { 100_000 } else { REBUILD_TARGET });
    let nats = NatsServer::start()
        .await
        .context("starting nats-server (scripts/dev.sh setup installs it)")?;
    crate::drive::set_server_pid(nats.pid());
    let pg = Postgres::start().await.context("starting PostgreSQL")?;
    let client = async_nats::connect(nats.url()).await?;
    let mut report = stack::new_report("projection", quick, Some(client.server_info().version));
    report.notes.push(
        "PostgreSQL from the testkit default: fsync=off, full_page_writes=off (not durable); \
         nats-server sync_interval always, file store"
            .into(),
    );
    println!(
        "talkwai-bench projection: {events} events, nats-server {} on {} CPUs",
        report.machine.nats_server.as_deref().unwrap_or("?"),
        report.machine.nproc
    );
    let store = EventStore::open(client.clone(), &StreamSettings::default()).await?;

    let t0 = Instant::now();
    let log = generate(events)?;
    println!(
        "  generated {} events ({} task.created) and {} upsert batches in {:.1} s",
        log.events,
        log.created,
        log.upserts.len(),
        t0.elapsed().as_secs_f64()
    );
    report.notes.push(format!(
        "log: {} events, {} task.created ({:.0} %), the rest task.started / task.completed \
         of earlier rounds; {}-byte task.created body",
        log.events,
        log.created,
        100.0 * log.created as f64 / log.events.max(1) as f64,
        log.rounds
            .first()
            .and_then(|r| r.first())
            .and_then(|r| r.first())
            .map_or(0, |m| m.payload.len())
    ));

    // 1. The log.
    let start = Instant::now();
    let head = write_log(&store, log.rounds).await?;
    let written = start.elapsed();
    if head != log.events {
        bail!(
            "the stream head is {head}, {} events were written",
            log.events
        );
    }
    push(
        &mut report,
        stack::row(
            "projection",
            "write log: appender, atomic requests of 1000 msgs, 8 in flight",
            8,
            "event",
            head,
            written,
            None,
        )
        .note("not a target; the time it takes to have a log to project"),
    );

    // 2. Raw upsert of the same rows.
    let (raw_db, raw_schema) = fresh_schema(&pg, "raw").await?;
    let (rows, elapsed, latency) = raw_upsert(&raw_db, &raw_schema, &log.upserts).await?;
    let raw_rate = rows as f64 / elapsed.as_secs_f64().max(1e-9);
    push(
        &mut report,
        stack::row(
            "projection",
            "raw upsert: jsonb_populate_recordset, 1000 rows/tx",
            1,
            "row",
            rows,
            elapsed,
            Some(&latency),
        )
        .note("latency per 1000-row transaction; rows pre-serialized (no client-side JSON work)"),
    );

    // 3. The projector catching up from zero.
    let db = pg.create_unique_database("proj").await?;
    let projector = Projector::build(talkwai_projector::Config::for_tests(&nats.url(), &db))
        .await
        .context("building the projector")?;
    let watch = stack::connect(&db).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(async move {
        projector
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = start + Duration::from_secs(1800);
    let mut at = 0;
    while at < head {
        if Instant::now() > deadline {
            bail!("the projector reached {at} of {head} in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        at = checkpoint(&watch).await;
    }
    let catch_up = start.elapsed();
    let rate = head as f64 / catch_up.as_secs_f64().max(1e-9);
    push(
        &mut report,
        stack::row(
            "projection",
            "projector catch-up (build + run, fresh db)",
            1,
            "event",
            head,
            catch_up,
            None,
        )
        .ratio(rate / raw_rate, "events/s over raw upsert rows/s")
        .target("ratio >= 0.5", rate / raw_rate >= 0.5)
        .note("batch_size 1000, batch_wait 5 ms, pool 4 (Config::for_tests = production defaults)"),
    );

    // 4. A rebuild of everything into a new generation while the projector is live.
    let pool = talkwai_projector::pool(&db, 4)?;
    // The rebuild's own memory: this process's peak RSS growth while it runs (the live
    // projector, idle, and the generated log are in the baseline).
    let peak_reset = crate::procs::reset_own_peak();
    let before = crate::procs::memory_of("self");
    let start = Instant::now();
    let rebuilt = rebuild::rebuild(
        &pool,
        &store,
        &rebuild::RebuildOptions::default(),
        &|_: rebuild::Progress| {},
    )
    .await
    .context("rebuild")?;
    let elapsed = start.elapsed();
    let rate = rebuilt.events as f64 / elapsed.as_secs_f64().max(1e-9);
    let scale = REBUILD_TARGET as f64 / rebuilt.events.max(1) as f64;
    let mut note = format!(
        "swapped={} parity_seq={} generation={}",
        rebuilt.swapped, rebuilt.parity_seq, rebuilt.generation
    );
    if let (true, Some(before), Some(after)) = (peak_reset, before, crate::procs::memory_of("self"))
    {
        let growth = after.peak_mib - before.rss_mib;
        note.push_str(&format!(
            "; peak RSS growth during the rebuild {growth:.0} MiB ({} rows at most per bulk window)",
            rebuild::RebuildOptions::default().bulk_rows
        ));
    }
    let mut row = stack::row(
        "projection",
        "rebuild::rebuild (replay + parity + swap)",
        1,
        "event",
        rebuilt.events,
        elapsed,
        None,
    )
    .ratio(rate / raw_rate, "events/s over raw upsert rows/s")
    .note(note);
    if !rebuilt.swapped {
        row = row.note("parity check failed: NOT swapped");
    }
    push(&mut report, row);
    let raw_1m = REBUILD_TARGET as f64 / raw_rate;
    let rebuild_1m = elapsed.as_secs_f64() * scale;
    let label = if quick {
        format!(
            "EXTRAPOLATED from {} events (x{scale:.1}, --quick)",
            rebuilt.events
        )
    } else {
        "measured".to_owned()
    };
    report.notes.push(format!(
        "1M-event rebuild wall time: {rebuild_1m:.1} s ({label}; target <= 30 s); raw batched \
         upsert of 1M rows: {raw_1m:.1} s ({label}); log write of 1M events: {:.1} s ({label})",
        written.as_secs_f64() * scale
    ));
    println!("  note: {}", report.notes.last().map_or("", String::as_str));
    push(
        &mut report,
        Row::figure("projection", "1M-event rebuild wall time", rebuild_1m, "s")
            .target("<= 30 s", rebuild_1m <= 30.0)
            .note(label),
    );

    let _ = stop.send(());
    if let Ok(Err(err)) = task.await {
        report.notes.push(format!("projector ended with: {err}"));
    }
    drop(client);
    drop(pg);
    drop(nats);
    Ok(report)
}
