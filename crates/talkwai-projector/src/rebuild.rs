//! Blue/green rebuilds, rollbacks and point-in-time replays.
//!
//! A rebuild replays the log from sequence 1 into a new generation schema at full speed while
//! the live generation keeps serving. Near the head it takes the live generation's lock (the
//! live projector takes the same lock for every batch, so it pauses), applies the last events
//! up to the live checkpoint, compares both generations table by table (row count and a content
//! hash) at that same sequence, and, if they agree, repoints the views in the same transaction.
//! Readers never see a partial generation: the views switch atomically.

use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Pool};
use futures::StreamExt;
use serde::Serialize;
use talkwai_domain::ids::TenantId;
use talkwai_eventstore::{EventStore, Replay, StoreError, StoredMessage};
use talkwai_proto::subject::{self, Scope};
use tokio::sync::mpsc;
use tracing::info;

use crate::apply::{self, Decoded, PoisonPolicy};
use crate::error::ProjectorError;
use crate::schema::{self, TABLES};

/// A replayed message with its decoded event (or why it cannot be decoded).
type Item = (StoredMessage, Result<Decoded, String>);

/// Messages read ahead of the writer: a task drains the replay and decodes the events (network
/// reads and JSON on one core) while batches are written to PostgreSQL (on the other).
struct Feed {
    rx: mpsc::Receiver<Result<Item, StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

/// Messages buffered between the replay and the writer.
const READ_AHEAD: usize = 20_000;
/// Messages decoded at a time by one blocking task.
const DECODE_CHUNK: usize = 512;
/// Messages folded at a time in the bulk phase.
const BULK_BATCH: usize = 10_000;

impl Feed {
    fn start(replay: Replay, keys: Option<talkwai_keys::KeyStore>) -> Self {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let task = tokio::spawn(async move {
            // Messages are decoded in chunks on blocking threads, two chunks at a time, so
            // decoding overlaps both the network reads and the fold; order is kept. Each
            // chunk's keys are fetched (or found in the cache) before it is decoded.
            let decoded = replay
                .ready_chunks(DECODE_CHUNK)
                .map(|chunk| {
                    let keys = keys.clone();
                    async move {
                        let read: Vec<StoredMessage> = chunk
                            .iter()
                            .filter_map(|m| m.as_ref().ok())
                            .cloned()
                            .collect();
                        let ring = match apply::keyring(keys.as_ref(), &read).await {
                            Ok(ring) => ring,
                            Err(err) => {
                                return Err(err.to_string());
                            }
                        };
                        tokio::task::spawn_blocking(move || {
                            chunk
                                .into_iter()
                                .map(|message| {
                                    message.map(|m| {
                                        let decoded = apply::decode_for(&m, None, &ring);
                                        (m, decoded)
                                    })
                                })
                                .collect::<Vec<_>>()
                        })
                        .await
                        .map_err(|e| e.to_string())
                    }
                })
                .buffered(2);
            futures::pin_mut!(decoded);
            while let Some(chunk) = decoded.next().await {
                let items = match chunk {
                    Ok(items) => items,
                    Err(message) => {
                        let _ = tx.send(Err(StoreError::Nats(message))).await;
                        return;
                    }
                };
                for item in items {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        });
        Self { rx, task }
    }

    async fn next(&mut self) -> Option<Result<Item, StoreError>> {
        self.rx.recv().await
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The secondary indexes of a fresh generation, dropped while it is bulk-filled and built
/// once at the end (far cheaper than maintaining them row by row).
async fn drop_secondary_indexes(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<String>, ProjectorError> {
    let rows = client
        .query(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i
             JOIN pg_class c ON c.relname = i.indexname
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname
             JOIN pg_index x ON x.indexrelid = c.oid
             WHERE i.schemaname = $1 AND NOT x.indisprimary
             ORDER BY i.indexname",
            &[&schema],
        )
        .await?;
    let mut definitions = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        client
            .batch_execute(&format!("DROP INDEX {schema}.\"{name}\""))
            .await?;
        definitions.push(row.get(1));
    }
    Ok(definitions)
}

/// Builds the indexes [`drop_secondary_indexes`] dropped.
async fn create_indexes(
    conn: &mut deadpool_postgres::Object,
    definitions: &[String],
) -> Result<(), ProjectorError> {
    let tx = conn.transaction().await?;
    tx.batch_execute("SET LOCAL maintenance_work_mem = '256MB'")
        .await?;
    for definition in definitions {
        tx.batch_execute(definition).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Progress of a replay, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Last sequence applied.
    pub checkpoint: u64,
    /// The sequence the replay runs to (stream head or the requested end).
    pub target: u64,
    /// Events per second so far.
    pub rate: f64,
}

/// Options of a rebuild.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Rebuild only this tenant's rows (copied into the live generation at the end).
    pub tenant: Option<TenantId>,
    /// Events per transaction once the replay nears the live checkpoint (the live projector
    /// pauses while the last of them are applied).
    pub batch_size: usize,
    /// Rows held in memory during the bulk phase (from sequence 1 to near the live checkpoint)
    /// before they are written with `COPY`: every event of a row within that window costs no
    /// write of its own. A 1M-event rebuild peaks at ≈ 8 KiB per window row (the window being
    /// written, the one folding, read-ahead and `COPY` buffers): ≈ 410 MiB at the default.
    pub bulk_rows: usize,
    /// Swap even when the parity check finds differences (for a tenant rebuild, the point is
    /// usually to replace rows that differ).
    pub force: bool,
    /// Opens sealed personal fields (`None`: no master key configured).
    pub keys: Option<talkwai_keys::KeyStore>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            tenant: None,
            batch_size: 5000,
            bulk_rows: 50_000,
            force: false,
            keys: None,
        }
    }
}

/// Row count and content hash of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableParity {
    /// Table.
    pub table: String,
    /// Rows in the live generation.
    pub live_rows: i64,
    /// Rows in the new generation.
    pub new_rows: i64,
    /// Whether the content hashes agree.
    pub same_content: bool,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    /// The new generation.
    pub generation: i32,
    /// Its schema.
    pub schema: String,
    /// The generation it replaced (whole rebuilds).
    pub previous: Option<i32>,
    /// The sequence both generations were compared at.
    pub parity_seq: u64,
    /// Per-table comparison.
    pub parity: Vec<TableParity>,
    /// Whether the views now point at the new generation (or the tenant's rows were replaced).
    pub swapped: bool,
    /// Events applied.
    pub events: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Rebuilds the read models into a new generation and swaps it in when it matches.
pub async fn rebuild(
    pool: &Pool,
    store: &EventStore,
    options: &RebuildOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<RebuildReport, ProjectorError> {
    let started = Instant::now();
    let mut conn = pool.get().await?;
    schema::migrate(&conn).await?;
    let (live, live_schema) = schema::live_generation(&mut conn).await?;
    let tenant_uuid = options.tenant.map(|t| t.0);
    let (generation, new_schema) = {
        let tx = conn.transaction().await?;
        let created = schema::create_generation(&tx, "building", tenant_uuid, None, None).await?;
        tx.commit().await?;
        created
    };
    let deferred = drop_secondary_indexes(&conn, &new_schema).await?;
    info!(generation, schema = %new_schema, "rebuild started");
    let filters = options
        .tenant
        .map(|t| vec![subject::tenant_events(Scope::Tenant(t))])
        .unwrap_or_default();
    let mut replay = Feed::start(store.replay(1, filters).await?, options.keys.clone());
    let mut checkpoint = 0u64;
    let mut events = 0u64;
    let mut pending: Vec<Item> = Vec::new();
    // Where the bulk phase's time goes: waiting for the replay, folding, waiting for writes.
    let (mut reading, mut folding, mut writing) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut fold = apply::BulkFold::new(options.bulk_rows);
    let mut writer = Writer::new(pool, &new_schema);
    // Phase 1: full speed up to (nearly) the head, without touching the live generation.
    loop {
        let head = store.last_sequence().await?;
        let live_checkpoint = read_checkpoint(&conn, &live_schema).await?;
        let target = live_checkpoint.max(1);
        if checkpoint + options.batch_size as u64 >= target || checkpoint >= head {
            break;
        }
        let size = BULK_BATCH.min(usize::try_from(target - checkpoint).unwrap_or(usize::MAX));
        let read_started = Instant::now();
        let batch = next_batch(&mut replay, &mut pending, size.max(1), head).await?;
        reading += read_started.elapsed();
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        let fold_started = Instant::now();
        checkpoint = fold_batch(&conn, &new_schema, &mut fold, batch, options.tenant).await?;
        folding += fold_started.elapsed();
        if fold.is_full() {
            let write_started = Instant::now();
            writer.flush(&mut conn, &mut fold).await?;
            writing += write_started.elapsed();
        }
        progress(Progress {
            checkpoint,
            target: head,
            rate: rate(events, started),
        });
    }
    let write_started = Instant::now();
    writer.finish(&mut conn, &mut fold).await?;
    writing += write_started.elapsed();
    info!(
        generation,
        events,
        seconds = started.elapsed().as_secs_f64(),
        waiting_for_replay = reading.as_secs_f64(),
        folding = folding.as_secs_f64(),
        writing = writing.as_secs_f64(),
        "rebuild bulk phase done"
    );
    let indexing = Instant::now();
    create_indexes(&mut conn, &deferred).await?;
    info!(
        generation,
        seconds = indexing.elapsed().as_secs_f64(),
        "rebuild indexes built"
    );
    // Phase 2: pause the live projector, catch up to its checkpoint, compare, swap.
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7420100 + $1::int)", &[&live])
        .await?;
    let still_live: Option<i32> = tx
        .query_opt(
            "SELECT generation FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    if still_live != Some(live) {
        return Err(ProjectorError::Invalid(
            "the live generation changed during the rebuild".into(),
        ));
    }
    // Partitioned: bring every live partition to the most advanced one first, so both
    // generations are compared at one sequence.
    let parity_seq =
        crate::partition::equalize(&tx, store, &live_schema, live, options.keys.as_ref()).await?;
    while checkpoint < parity_seq {
        let batch: Vec<StoredMessage> =
            next_batch(&mut replay, &mut pending, options.batch_size, parity_seq)
                .await?
                .into_iter()
                .map(|(message, _)| message)
                .collect();
        if batch.is_empty() {
            // Filtered replays (one tenant) may have no more messages below the checkpoint.
            if options.tenant.is_some() {
                break;
            }
            return Err(ProjectorError::Invalid(format!(
                "the log ended at {checkpoint} before the live checkpoint {parity_seq}"
            )));
        }
        let outcome = apply::apply_batch(
            &tx,
            &new_schema,
            generation,
            &batch,
            PoisonPolicy::Stop,
            options.tenant,
            options.keys.as_ref(),
        )
        .await?;
        if let Some(poison) = outcome.stopped_at {
            return Err(ProjectorError::Invalid(format!(
                "rebuild stopped at event {} ({}): {}",
                poison.seq, poison.subject, poison.error
            )));
        }
        checkpoint = outcome
            .checkpoint
            .max(batch.last().map_or(checkpoint, |m| m.seq));
        events += batch.len() as u64;
    }
    let seq = i64::try_from(parity_seq).unwrap_or(i64::MAX);
    tx.execute(
        &format!("UPDATE {new_schema}.checkpoint SET last_seq = $1, updated_at = now() WHERE last_seq < $1"),
        &[&seq],
    )
    .await?;
    progress(Progress {
        checkpoint: parity_seq,
        target: parity_seq,
        rate: rate(events, started),
    });
    let comparing = Instant::now();
    let parity = compare(&tx, &live_schema, &new_schema, options.tenant).await?;
    info!(
        generation,
        seconds = comparing.elapsed().as_secs_f64(),
        "rebuild parity compared"
    );
    let same = parity
        .iter()
        .all(|p| p.same_content && p.live_rows == p.new_rows);
    let swap = same || options.force;
    if swap {
        match options.tenant {
            None => {
                tx.execute(
                    "UPDATE talkwai_meta.generations SET state = 'retired' WHERE generation = $1",
                    &[&live],
                )
                .await?;
                tx.execute(
                    "UPDATE talkwai_meta.generations SET state = 'live', swapped_at = now() WHERE generation = $1",
                    &[&generation],
                )
                .await?;
                schema::point_views(&tx, &new_schema).await?;
            }
            Some(tenant) => {
                replace_tenant_rows(&tx, &live_schema, &new_schema, tenant).await?;
                tx.execute(
                    "UPDATE talkwai_meta.generations SET state = 'retired' WHERE generation = $1",
                    &[&generation],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    if options.tenant.is_some() && swap {
        drop_generation(pool, generation).await?;
    }
    let report = RebuildReport {
        generation,
        schema: new_schema,
        previous: (options.tenant.is_none() && swap).then_some(live),
        parity_seq,
        parity,
        swapped: swap,
        events,
        seconds: started.elapsed().as_secs_f64(),
    };
    if !swap {
        return Err(ProjectorError::Parity(
            serde_json::to_string(&report.parity).unwrap_or_default(),
        ));
    }
    info!(generation, parity_seq, events, "rebuild swapped in");
    Ok(report)
}

fn rate(events: u64, started: Instant) -> f64 {
    events as f64 / started.elapsed().as_secs_f64().max(1e-6)
}

async fn read_checkpoint(client: &impl GenericClient, schema: &str) -> Result<u64, ProjectorError> {
    let seq: i64 = client
        .query_one(
            &format!("SELECT min(last_seq)::bigint FROM {schema}.checkpoint"),
            &[],
        )
        .await?
        .get(0);
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// Up to `size` messages with sequence ≤ `until`; leftovers beyond `until` stay in `pending`.
async fn next_batch(
    replay: &mut Feed,
    pending: &mut Vec<Item>,
    size: usize,
    until: u64,
) -> Result<Vec<Item>, ProjectorError> {
    let mut batch = Vec::with_capacity(size.min(READ_AHEAD));
    while let Some(first) = pending.first() {
        if first.0.seq > until || batch.len() >= size {
            return Ok(batch);
        }
        batch.push(pending.remove(0));
    }
    while batch.len() < size {
        let next = tokio::time::timeout(Duration::from_millis(200), replay.next()).await;
        let Ok(Some(item)) = next else { break };
        let item = item?;
        if item.0.seq > until {
            pending.push(item);
            break;
        }
        let last = item.0.seq == until;
        batch.push(item);
        if last {
            break;
        }
    }
    Ok(batch)
}

/// Folds one bulk batch into `fold`; returns the sequence of its last message.
async fn fold_batch(
    conn: &deadpool_postgres::Object,
    schema: &str,
    fold: &mut apply::BulkFold,
    batch: Vec<Item>,
    tenant: Option<TenantId>,
) -> Result<u64, ProjectorError> {
    let (messages, decoded): (Vec<StoredMessage>, Vec<_>) = batch.into_iter().unzip();
    let client: &tokio_postgres::Client = conn;
    fold.fold(client, schema, &messages, decoded, tenant)
        .await
        .map_err(|e| match e {
            ProjectorError::Invalid(why) => ProjectorError::Invalid(format!("rebuild {why}")),
            other => other,
        })?;
    Ok(messages.last().map_or(0, |m| m.seq))
}

/// Writes the bulk phase's windows: on a connection of its own while the next window folds
/// when the pool has one to spare, else in line. At most one write is in flight.
struct Writer {
    pool: Pool,
    schema: String,
    background: bool,
    in_flight: Option<tokio::task::JoinHandle<Result<u64, ProjectorError>>>,
}

impl Writer {
    fn new(pool: &Pool, schema: &str) -> Self {
        Self {
            pool: pool.clone(),
            schema: schema.to_owned(),
            background: pool.status().max_size >= 2,
            in_flight: None,
        }
    }

    /// Waits for the write in flight, if any.
    async fn wait(&mut self) -> Result<(), ProjectorError> {
        if let Some(write) = self.in_flight.take() {
            write
                .await
                .map_err(|e| ProjectorError::Invalid(format!("bulk writer failed: {e}")))??;
        }
        Ok(())
    }

    /// Hands `fold`'s window over and writes it (after the previous write committed).
    async fn flush(
        &mut self,
        conn: &mut deadpool_postgres::Object,
        fold: &mut apply::BulkFold,
    ) -> Result<(), ProjectorError> {
        self.wait().await?;
        let flush = fold.hand_over();
        if self.background {
            let pool = self.pool.clone();
            let schema = self.schema.clone();
            self.in_flight = Some(tokio::spawn(async move {
                let mut conn = pool.get().await?;
                write_window(&mut conn, &schema, &flush).await
            }));
            Ok(())
        } else {
            write_window(conn, &self.schema, &flush).await.map(|_| ())
        }
    }

    /// Writes what `fold` still holds and waits for every write.
    async fn finish(
        mut self,
        conn: &mut deadpool_postgres::Object,
        fold: &mut apply::BulkFold,
    ) -> Result<(), ProjectorError> {
        self.wait().await?;
        let flush = fold.hand_over();
        write_window(conn, &self.schema, &flush).await.map(|_| ())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(write) = self.in_flight.take() {
            write.abort();
        }
    }
}

/// Writes one window and the checkpoint it reaches in one transaction.
async fn write_window(
    conn: &mut deadpool_postgres::Object,
    schema: &str,
    flush: &apply::Flush,
) -> Result<u64, ProjectorError> {
    let tx = conn.transaction().await?;
    // A lost commit after a crash is harmless here: the generation is not served until it is
    // complete, and rows and checkpoint are lost together (a new rebuild starts over).
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let checkpoint = flush.write(&tx, schema).await?;
    tx.commit().await?;
    Ok(checkpoint)
}

fn tenant_filter(table: &str, tenant: Option<TenantId>) -> String {
    match (table, tenant) {
        (_, None) => String::new(),
        ("tenants", Some(t)) => format!(" WHERE id = '{}'", t.0),
        ("admins" | "users", Some(_)) => " WHERE false".to_owned(),
        (_, Some(t)) => format!(" WHERE tenant_id = '{}'", t.0),
    }
}

/// Row counts and content hashes of every table in both schemas.
async fn compare(
    client: &impl GenericClient,
    live: &str,
    new: &str,
    tenant: Option<TenantId>,
) -> Result<Vec<TableParity>, ProjectorError> {
    let mut out = Vec::new();
    for table in TABLES {
        let filter = tenant_filter(table, tenant);
        // An order-independent digest: the sum of a 64-bit hash of each row's text, the columns
        // named in a fixed order (so generations whose physical column order differs still
        // compare). No sort and no per-row JSON: a scan of each table.
        let columns = crate::schema::COLUMNS
            .iter()
            .find(|(name, _)| *name == table)
            .map_or_else(
                || "t.*".to_owned(),
                |(_, columns)| {
                    let named: Vec<String> = columns.iter().map(|c| format!("t.{c}")).collect();
                    named.join(", ")
                },
            );
        let digest = |schema: &str| {
            format!(
                "SELECT count(*), coalesce(sum(hashtextextended(row({columns})::text, 0)), 0)::text
                 FROM {schema}.{table} t{filter}"
            )
        };
        let a = client.query_one(&digest(live), &[]).await?;
        let b = client.query_one(&digest(new), &[]).await?;
        let (live_rows, live_hash): (i64, String) = (a.get(0), a.get(1));
        let (new_rows, new_hash): (i64, String) = (b.get(0), b.get(1));
        out.push(TableParity {
            table: table.to_owned(),
            live_rows,
            new_rows,
            same_content: live_hash == new_hash,
        });
    }
    Ok(out)
}

async fn replace_tenant_rows(
    client: &impl GenericClient,
    live: &str,
    new: &str,
    tenant: TenantId,
) -> Result<(), ProjectorError> {
    for table in TABLES {
        if matches!(table, "admins" | "users") {
            continue;
        }
        let filter = tenant_filter(table, Some(tenant));
        client
            .batch_execute(&format!(
                "DELETE FROM {live}.{table}{filter}; INSERT INTO {live}.{table} SELECT * FROM {new}.{table}{filter};"
            ))
            .await?;
    }
    Ok(())
}

/// Points the views back at the most recently retired generation (the one a rebuild
/// replaced); the projector then resumes it from its checkpoint.
pub async fn rollback(pool: &Pool) -> Result<(i32, i32), ProjectorError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let live = tx
        .query_one(
            "SELECT generation, schema_name FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await?;
    let live_generation: i32 = live.get(0);
    tx.execute(
        "SELECT pg_advisory_xact_lock(7420100 + $1::int)",
        &[&live_generation],
    )
    .await?;
    let previous = tx
        .query_opt(
            "SELECT generation, schema_name FROM talkwai_meta.generations
             WHERE state = 'retired' AND tenant IS NULL AND generation < $1
             ORDER BY generation DESC LIMIT 1",
            &[&live_generation],
        )
        .await?
        .ok_or_else(|| ProjectorError::Invalid("no earlier generation to roll back to".into()))?;
    let previous_generation: i32 = previous.get(0);
    let previous_schema: String = previous.get(1);
    tx.execute(
        "UPDATE talkwai_meta.generations SET state = 'retired' WHERE generation = $1",
        &[&live_generation],
    )
    .await?;
    tx.execute(
        "UPDATE talkwai_meta.generations SET state = 'live', swapped_at = now() WHERE generation = $1",
        &[&previous_generation],
    )
    .await?;
    schema::point_views(&tx, &previous_schema).await?;
    tx.commit().await?;
    Ok((live_generation, previous_generation))
}

/// Drops a generation that is not live (its schema and its registration).
pub async fn drop_generation(pool: &Pool, generation: i32) -> Result<(), ProjectorError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT schema_name, state FROM talkwai_meta.generations WHERE generation = $1 FOR UPDATE",
            &[&generation],
        )
        .await?
        .ok_or_else(|| ProjectorError::Invalid(format!("no generation {generation}")))?;
    let schema_name: String = row.get(0);
    let state: String = row.get(1);
    if state == "live" {
        return Err(ProjectorError::Invalid(
            "the live generation cannot be dropped".into(),
        ));
    }
    tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema_name} CASCADE"))
        .await?;
    tx.execute(
        "DELETE FROM talkwai_meta.generations WHERE generation = $1",
        &[&generation],
    )
    .await?;
    tx.execute(
        "DELETE FROM talkwai_meta.projector_state WHERE generation = $1",
        &[&generation],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Where a point-in-time replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Through this stream sequence.
    Seq(u64),
    /// Through the last event stored at or before this time, epoch milliseconds.
    Time(i64),
}

/// Replays the log up to a point into a named schema: a read-only snapshot of the read models
/// as of then (audits: "tenant X as of yesterday 10:00"). The snapshot is registered as a
/// generation in state `snapshot` and never served by the views.
pub async fn replay_until(
    pool: &Pool,
    store: &EventStore,
    keys: Option<&talkwai_keys::KeyStore>,
    until: Until,
    into: &str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(i32, u64), ProjectorError> {
    let started = Instant::now();
    let mut conn = pool.get().await?;
    schema::migrate(&conn).await?;
    let head = store.last_sequence().await?;
    let limit_seq = match until {
        Until::Seq(seq) => seq.min(head),
        Until::Time(_) => head,
    };
    let (generation, schema_name) = {
        let tx = conn.transaction().await?;
        let until_seq = i64::try_from(limit_seq).ok();
        let created =
            schema::create_generation(&tx, "snapshot", None, until_seq, Some(into)).await?;
        tx.commit().await?;
        created
    };
    let mut replay = Feed::start(store.replay(1, Vec::new()).await?, keys.cloned());
    let mut fold = apply::BulkFold::new(RebuildOptions::default().bulk_rows);
    let mut writer = Writer::new(pool, &schema_name);
    let mut pending = Vec::new();
    let mut checkpoint = 0;
    let mut events = 0u64;
    while checkpoint < limit_seq {
        let mut batch = next_batch(&mut replay, &mut pending, BULK_BATCH, limit_seq).await?;
        if let Until::Time(ms) = until {
            let cut = batch.iter().position(|(m, _)| m.stored_at_ms > ms);
            if let Some(cut) = cut {
                batch.truncate(cut);
                if !batch.is_empty() {
                    checkpoint = fold_batch(&conn, &schema_name, &mut fold, batch, None).await?;
                }
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        checkpoint = fold_batch(&conn, &schema_name, &mut fold, batch, None).await?;
        if fold.is_full() {
            writer.flush(&mut conn, &mut fold).await?;
        }
        progress(Progress {
            checkpoint,
            target: limit_seq,
            rate: rate(events, started),
        });
    }
    writer.finish(&mut conn, &mut fold).await?;
    let until_seq = i64::try_from(checkpoint).unwrap_or(i64::MAX);
    conn.execute(
        "UPDATE talkwai_meta.generations SET until_seq = $2 WHERE generation = $1",
        &[&generation, &until_seq],
    )
    .await?;
    Ok((generation, checkpoint))
}
