//! The projection service: turns the event log into PostgreSQL read models.
//!
//! Events are read through a durable JetStream consumer and applied in batches: one
//! transaction writes the rows (multi-row statements, one per table) and the checkpoint (the
//! last stream sequence applied); the batch is acknowledged after the commit. On every start
//! the consumer is re-created at the checkpoint + 1, so the checkpoint in PostgreSQL, not the
//! consumer's state, decides where to resume; per-row `last_seq` guards make a re-delivered
//! event harmless.
//!
//! Read models live in generation schemas (`talkwai_g<N>`); dashboards read the stable views in
//! schema `talkwai`, which a blue/green rebuild repoints atomically.
//!
//! With `TALKWAI_PROJECTOR_PARTITIONS=P` > 1, tenants are split into P partitions, each with its
//! own checkpoint row, consumer and apply loop; instances share them out through leases on NATS
//! KV and take over the partitions of an instance that dies ([`partition`], [`lease`]).
//!
//! # Architecture invariant
//! Reads the log, writes only its own schemas; never publishes events or commands.
//!
//! # Layout
//! - [`schema`]: migrations, generations, views.
//! - [`rows`]: how each event changes a row.
//! - [`apply`]: one batch, one transaction.
//! - [`partition`]: which partition an event belongs to; checkpoint layouts.
//! - [`lease`]: which instance applies which partition.
//! - [`status`]: lag, checkpoints, read-your-writes waits.
//! - [`health`]: readiness for `/readyz` (metrics are recorded with the `metrics` macros).
//! - [`ops`]: dead letters and retries for operators.
//! - [`rebuild`]: blue/green rebuilds, rollbacks, point-in-time replays.

pub mod apply;
pub mod error;
pub mod health;
pub mod lease;
pub mod ops;
pub mod partition;
pub mod rebuild;
pub mod rows;
pub mod schema;
pub mod status;

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use clap::Args;
use deadpool_postgres::{Pool, Runtime};
use futures::StreamExt;
use talkwai_eventstore::{EventStore, StoredMessage, StreamSettings};
use tokio_postgres::NoTls;
use tracing::{Instrument as _, Span, info, info_span, warn};

pub use apply::PoisonPolicy;
pub use error::ProjectorError;
pub use partition::Slot;

/// Configuration, from flags or `TALKWAI_*` environment variables.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// NATS server URL(s), comma separated.
    #[arg(
        long,
        env = "TALKWAI_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// PostgreSQL connection string (URL or `key=value` form).
    #[arg(long, env = "TALKWAI_DATABASE_URL")]
    pub database_url: String,
    /// Most events applied in one transaction.
    #[arg(long, env = "TALKWAI_PROJECTOR_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: usize,
    /// How long a batch waits to fill once it has its first event, milliseconds.
    #[arg(long, env = "TALKWAI_PROJECTOR_BATCH_WAIT_MS", default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// What to do with an event that cannot be applied.
    #[arg(long, env = "TALKWAI_PROJECTOR_ON_POISON", value_enum, default_value_t = PoisonPolicy::Stop)]
    pub on_poison: PoisonPolicy,
    /// PostgreSQL connections.
    #[arg(long, env = "TALKWAI_PROJECTOR_POOL_SIZE", default_value_t = 4)]
    pub pool_size: usize,
    /// Name of this instance.
    #[arg(long, env = "TALKWAI_INSTANCE", default_value = "projector-1")]
    pub instance: String,
    /// Partitions the tenants are split into (1: one apply loop, no leases). Every instance
    /// of a deployment must use the same value.
    #[arg(long, env = "TALKWAI_PROJECTOR_PARTITIONS", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// How long a partition lease (and an instance heartbeat) lives without renewal,
    /// milliseconds: how soon the partitions of a dead instance are taken over.
    #[arg(long, env = "TALKWAI_PROJECTOR_LEASE_TTL_MS", default_value_t = 5000)]
    pub lease_ttl_ms: u64,
    /// `/livez` fails after this many seconds without progress: no successful lease round
    /// (partitioned), no healthy apply pass (unpartitioned); a restart is then due.
    #[arg(long, env = "TALKWAI_PROJECTOR_LIVENESS_SECS", default_value_t = 60)]
    pub liveness_secs: u64,
}

impl Config {
    /// A configuration for tests.
    pub fn for_tests(nats_url: &str, database_url: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            database_url: database_url.to_owned(),
            batch_size: 1000,
            batch_wait_ms: 5,
            on_poison: PoisonPolicy::Stop,
            pool_size: 4,
            instance: "projector-test".to_owned(),
            partitions: 1,
            lease_ttl_ms: 5000,
            liveness_secs: 60,
        }
    }
}

/// Creates a PostgreSQL pool for `url`.
pub fn pool(url: &str, size: usize) -> Result<Pool, ProjectorError> {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config.pool = Some(deadpool_postgres::PoolConfig::new(size.max(1)));
    config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .map_err(|e| ProjectorError::Pool(e.to_string()))
}

/// A built projector, ready to run (cheap to clone: one per partition worker).
#[derive(Debug, Clone)]
pub struct Projector {
    pool: Pool,
    store: EventStore,
    config: Config,
    /// Beaten by the lease coordinator's successful rounds (partitioned) or by a healthy apply
    /// pass (unpartitioned); `/livez` fails when it goes silent.
    progress: talkwai_telemetry::ops::Watchdog,
}

/// Why one pass of the apply loop ended.
enum PassEnd {
    /// Stopped at a poison event; wait for `retry`.
    Stopped,
    /// The live generation changed (a swap or rollback): start over on the new one.
    Swapped,
}

impl Projector {
    /// Connects to NATS and PostgreSQL and applies migrations.
    pub async fn build(config: Config) -> Result<Self, ProjectorError> {
        // Credentials in the URL sign in; the reconnect policy is the shared one.
        let options = talkwai_eventstore::connect_options(&config.nats_url).0;
        Self::build_with(config, options).await
    }

    /// [`build`](Self::build) with these connect options (credentials, e.g.); the name,
    /// `retry_on_initial_connect` and the reconnect policy are set here.
    pub async fn build_with(
        config: Config,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, ProjectorError> {
        let name = format!("talkwai-projector/{}", config.instance);
        let client = talkwai_service::connect(name, &config.nats_url, options)
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        let store = EventStore::open(client, &StreamSettings::default()).await?;
        let pool = pool(&config.database_url, config.pool_size)?;
        let mut attempt = 0u32;
        loop {
            match pool.get().await {
                Ok(conn) => {
                    schema::migrate(&conn).await?;
                    break;
                }
                Err(err) if attempt < 30 => {
                    attempt += 1;
                    warn!(error = %err, attempt, "postgres not reachable yet");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10))))
                        .await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let progress = talkwai_telemetry::ops::Watchdog::new(
            if config.partitions > 1 {
                "leases"
            } else {
                "projection"
            },
            Duration::from_secs(config.liveness_secs.max(1)),
        );
        Ok(Self {
            pool,
            store,
            config,
            progress,
        })
    }

    /// What `/livez` checks: the projector still makes progress (see
    /// [`Config::liveness_secs`]).
    pub fn liveness(&self) -> talkwai_telemetry::ops::Liveness {
        talkwai_telemetry::ops::Liveness::watchdogs(vec![self.progress.clone()])
    }

    /// The PostgreSQL pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Applies events until `shutdown` resolves. PostgreSQL or NATS failures are retried with
    /// backoff (resuming from the checkpoint); a poison event stops the projection (policy
    /// `stop`) until `talkwai projections retry`. With several partitions, applies the
    /// partitions whose leases this instance holds.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        tokio::pin!(shutdown);
        let lag = tokio::spawn(export_lag(self.pool.clone(), self.store.clone()));
        let result = if self.config.partitions <= 1 {
            self.partition_loop(Slot::WHOLE, &mut shutdown).await
        } else {
            match lease::Coordinator::new(self).await {
                Ok(coordinator) => coordinator.run(&mut shutdown).await,
                Err(err) => Err(err),
            }
        };
        lag.abort();
        result
    }

    /// Applies partition `slot` until `shutdown` resolves.
    pub(crate) async fn partition_loop(
        &self,
        slot: Slot,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), ProjectorError> {
        let mut failures = 0u32;
        loop {
            let pass = tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                pass = self.pass(slot) => pass,
            };
            match pass {
                Ok(PassEnd::Swapped) => failures = 0,
                Ok(PassEnd::Stopped) => {
                    failures = 0;
                    // Stopped at a poison event is a state (readiness says so), not a hang.
                    self.beat(slot);
                    tokio::select! {
                        () = shutdown.as_mut() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
                Err(err) => {
                    failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    warn!(error = %err, partition = %slot, ?backoff, "projection pass failed, retrying");
                    tokio::select! {
                        () = shutdown.as_mut() => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// One pass of partition `slot`: from its checkpoint in the live generation until a stop,
    /// a swap or an error.
    async fn pass(&self, slot: Slot) -> Result<PassEnd, ProjectorError> {
        let mut conn = self.pool.get().await?;
        let (generation, schema) = schema::live_generation(&mut conn).await?;
        partition::ensure_layout(&mut conn, &self.store, &schema, generation, slot.count).await?;
        if self.is_stopped(&conn, generation, slot).await? {
            return Ok(PassEnd::Stopped);
        }
        let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
        let checkpoint: i64 = conn
            .query_opt(
                &format!("SELECT last_seq FROM {schema}.checkpoint WHERE part = $1"),
                &[&part],
            )
            .await?
            .ok_or_else(|| ProjectorError::Fenced {
                slot: slot.to_string(),
                expected: 0,
                found: None,
            })?
            .get(0);
        let checkpoint = u64::try_from(checkpoint).unwrap_or(0);
        let consumer = self.consumer(generation, slot, checkpoint).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size.max(1))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        info!(generation, partition = %slot, checkpoint, "projecting");
        let wait = Duration::from_millis(self.config.batch_wait_ms);
        // Batches are gathered and decoded one ahead of the transaction applying the previous
        // one; the fetcher stops when this pass ends (the receiver is dropped, or aborted).
        let (feed, mut fetched) = tokio::sync::mpsc::channel(1);
        let _fetcher = AbortOnDrop(tokio::spawn(fetch_batches(
            messages,
            self.config.batch_size,
            wait,
            slot,
            checkpoint,
            feed,
        )));
        let mut last_acked = checkpoint;
        // A pass that is reading (its consumer stream has not failed) is progress, idle or not.
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.beat(slot);
            let next = tokio::select! {
                next = fetched.recv() => next,
                _ = alive.tick() => continue,
            };
            let Some(next) = next else {
                return Err(ProjectorError::Nats("consumer stream ended".into()));
            };
            let Fetched {
                batch,
                stored,
                decoded,
            } = next?;
            let batch_span = info_span!(
                "project_batch",
                generation,
                partition = %slot,
                events = stored.len(),
                first_seq = stored.first().map_or(0, |m| m.seq),
                last_seq = stored.last().map_or(0, |m| m.seq),
            );
            // One short span per traced event, in its command's trace; they end at the commit.
            let event_spans = event_spans(&stored, &batch_span);
            let applied = self
                .apply_one(
                    &mut conn, &schema, generation, slot, &stored, decoded, last_acked,
                )
                .instrument(batch_span)
                .await;
            drop(event_spans);
            let Some(outcome) = applied? else {
                return Ok(PassEnd::Swapped);
            };
            if outcome.checkpoint > last_acked {
                if slot.count == 1 {
                    metrics::gauge!("talkwai_projector_checkpoint").set(outcome.checkpoint as f64);
                }
                last_acked = outcome.checkpoint;
                let last = batch
                    .iter()
                    .rev()
                    .find(|m| seq_of(m) == Some(outcome.checkpoint));
                if let Some(message) = last
                    && let Err(err) = message.ack().await
                {
                    warn!(error = %err, "ack failed; the checkpoint decides the resume point");
                }
            }
            if let Some(poison) = outcome.stopped_at {
                warn!(seq = poison.seq, subject = %poison.subject, error = %poison.error,
                    "projection stopped at a poison event; see `talkwai projections dead-letters`");
                return Ok(PassEnd::Stopped);
            }
        }
    }

    /// Records progress of the unpartitioned apply loop (partitioned: the coordinator beats).
    fn beat(&self, slot: Slot) {
        if slot.count <= 1 {
            self.progress.beat();
        }
    }

    /// Applies one batch of partition `slot` in one transaction with its checkpoint, fenced on
    /// the checkpoint being `expected`; `None` when the live generation changed under it.
    #[allow(clippy::too_many_arguments)]
    async fn apply_one(
        &self,
        conn: &mut deadpool_postgres::Object,
        schema: &str,
        generation: i32,
        slot: Slot,
        stored: &[StoredMessage],
        decoded: Vec<Result<apply::Decoded, String>>,
        expected: u64,
    ) -> Result<Option<apply::BatchOutcome>, ProjectorError> {
        {
            let tx = conn.transaction().await?;
            // Shared between partitions; rebuild parity checks, swaps, retries and layout
            // changes take it exclusively, so they pause every partition.
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared(7420100 + $1::int)",
                &[&generation],
            )
            .await?;
            let live: Option<i32> = tx
                .query_opt(
                    "SELECT generation FROM talkwai_meta.generations WHERE state = 'live'",
                    &[],
                )
                .await?
                .map(|r| r.get(0));
            if live != Some(generation) {
                return Ok(None);
            }
            let outcome = apply::apply_partition_decoded(
                &tx,
                schema,
                generation,
                stored,
                decoded,
                self.config.on_poison,
                slot,
                expected,
            )
            .await?;
            if let Some(poison) = &outcome.stopped_at {
                let seq = i64::try_from(poison.seq).unwrap_or(i64::MAX);
                let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
                tx.execute(
                    "INSERT INTO talkwai_meta.projector_state (generation, part, stopped_at_seq, stopped_reason, updated_at)
                     VALUES ($1, $2, $3, $4, now())
                     ON CONFLICT (generation, part) DO UPDATE SET stopped_at_seq = EXCLUDED.stopped_at_seq,
                        stopped_reason = EXCLUDED.stopped_reason, updated_at = now()",
                    &[&generation, &part, &seq, &format!("event {} on {}: {}", poison.seq, poison.subject, poison.error)],
                )
                .await?;
            }
            if outcome.checkpoint > 0 && outcome.stopped_at.is_none() {
                let checkpoint = i64::try_from(outcome.checkpoint).unwrap_or(i64::MAX);
                ops::resolve_passed(&tx, generation, slot, checkpoint).await?;
            }
            tx.commit().await?;
            self.alert_dead_letters(&outcome).await;
            metrics::counter!("talkwai_projector_events_applied_total")
                .increment(outcome.applied as u64);
            metrics::counter!("talkwai_projector_batches_total").increment(1);
            metrics::counter!("talkwai_projector_dead_letters_total")
                .increment(outcome.skipped.len() as u64 + u64::from(outcome.stopped_at.is_some()));
            Ok(Some(outcome))
        }
    }

    /// Raises a `deadLetter` system alert in the admin room for every event dead-lettered by
    /// a committed batch (best effort: the dead-letter table is the record).
    async fn alert_dead_letters(&self, outcome: &apply::BatchOutcome) {
        let stopped = outcome.stopped_at.iter().map(|p| (p, true));
        for (poison, stop) in outcome.skipped.iter().map(|p| (p, false)).chain(stopped) {
            let mut details = serde_json::Map::new();
            details.insert("seq".into(), poison.seq.into());
            details.insert("subject".into(), poison.subject.clone().into());
            details.insert("error".into(), poison.error.clone().into());
            details.insert("stopped".into(), stop.into());
            let tenant_id = match talkwai_proto::EventSubject::parse(&poison.subject) {
                Ok(talkwai_proto::EventSubject::Aggregate(target)) => target.tenant,
                _ => None,
            };
            let alert = talkwai_proto::room::SystemAlert {
                kind: talkwai_proto::room::AlertKind::DeadLetter,
                tenant_id,
                message: format!(
                    "projector dead-lettered event {} ({})",
                    poison.seq, poison.subject
                ),
                details,
                timestamp: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                seq: Some(poison.seq),
            };
            let subject = talkwai_proto::subject::room_topic("admin", "global", "systemAlerts");
            match serde_json::to_vec(&alert) {
                Ok(bytes) => {
                    if let Err(err) = self.store.client().publish(subject, bytes.into()).await {
                        warn!(error = %err, "cannot publish the dead-letter alert");
                    }
                }
                Err(err) => warn!(error = %err, "cannot encode the dead-letter alert"),
            }
        }
    }

    async fn is_stopped(
        &self,
        conn: &deadpool_postgres::Object,
        generation: i32,
        slot: Slot,
    ) -> Result<bool, ProjectorError> {
        let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
        let row = conn
            .query_opt(
                "SELECT stopped_at_seq FROM talkwai_meta.projector_state
                 WHERE generation = $1 AND part = $2 AND stopped_at_seq IS NOT NULL",
                &[&generation, &part],
            )
            .await?;
        Ok(row.is_some())
    }

    /// (Re)creates the durable consumer of the generation's partition at `checkpoint + 1`.
    /// Every partition reads the whole stream (and counts other partitions' events through);
    /// partitioned consumers are removed by the server after an idle hour (an old layout's).
    async fn consumer(
        &self,
        generation: i32,
        slot: Slot,
        checkpoint: u64,
    ) -> Result<async_nats::jetstream::consumer::PullConsumer, ProjectorError> {
        let name = consumer_name(generation, slot);
        let stream = self
            .store
            .jetstream()
            .get_stream(self.store.stream_name())
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        let _ = stream.delete_consumer(&name).await;
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name),
                description: Some("TalkwAI projector: PostgreSQL read models".into()),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: checkpoint + 1,
                },
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 100_000,
                max_deliver: -1,
                inactive_threshold: if slot.count > 1 {
                    Duration::from_secs(3600)
                } else {
                    Duration::ZERO
                },
                ..Default::default()
            })
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))
    }
}

/// Exports the live generation's lag, checkpoint and open dead letters as gauges every 2 s
/// (`talkwai_projector_lag_events`, `talkwai_projector_lag_seconds`,
/// `talkwai_projector_dead_letters_open`, `talkwai_projector_stopped`).
async fn export_lag(pool: Pool, store: EventStore) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        ticker.tick().await;
        let Ok(conn) = pool.get().await else { continue };
        let Ok(statuses) = status::status(&conn, &store).await else {
            continue;
        };
        if let Some(live) = statuses.iter().find(|s| s.state == "live") {
            metrics::gauge!("talkwai_projector_lag_events").set(live.lag_events as f64);
            metrics::gauge!("talkwai_projector_lag_seconds").set(live.lag_seconds);
            metrics::gauge!("talkwai_projector_checkpoint").set(live.checkpoint as f64);
            metrics::gauge!("talkwai_projector_stream_head").set(live.head as f64);
            metrics::gauge!("talkwai_projector_dead_letters_open").set(live.dead_letters as f64);
            metrics::gauge!("talkwai_projector_stopped")
                .set(f64::from(u8::from(live.stopped.is_some())));
            metrics::gauge!("talkwai_projector_generation").set(f64::from(live.generation));
        }
    }
}

/// A `project` span for each event that carries a `traceparent`, parented on it (so it joins
/// the trace of the command that appended the event) and linked from the batch span.
fn event_spans(stored: &[StoredMessage], batch: &Span) -> Vec<Span> {
    let traced = || {
        stored
            .iter()
            .filter(|m| m.header(talkwai_proto::headers::TRACEPARENT).is_some())
    };
    // Links first: creating a child may start the batch span, which freezes its links.
    for m in traced() {
        talkwai_telemetry::link_from(batch, &m.headers);
    }
    traced()
        .map(|m| {
            let span = info_span!(
                parent: batch,
                "project",
                seq = m.seq,
                event_type = m.header(talkwai_proto::headers::EVENT_TYPE).unwrap_or(""),
                subject = %m.subject,
            );
            talkwai_telemetry::span_with_parent(span, Some(&m.headers))
        })
        .collect()
}

/// The durable consumer of a generation's partition (`talkwai-projector-g<N>` unpartitioned,
/// `talkwai-projector-g<N>-p<i>of<P>` otherwise).
pub fn consumer_name(generation: i32, slot: Slot) -> String {
    if slot.count <= 1 {
        format!("talkwai-projector-g{generation}")
    } else {
        format!(
            "talkwai-projector-g{generation}-p{}of{}",
            slot.index, slot.count
        )
    }
}

fn seq_of(message: &async_nats::jetstream::Message) -> Option<u64> {
    message.info().ok().map(|i| i.stream_sequence)
}

/// A gathered batch: the consumer's messages (to ack), the new ones as stored messages, and
/// their decoded events.
struct Fetched {
    batch: Vec<async_nats::jetstream::Message>,
    stored: Vec<StoredMessage>,
    decoded: Vec<Result<apply::Decoded, String>>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Gathers batches from the consumer (up to `size` messages, waiting at most `wait` after the
/// first), drops redeliveries at or below what was already handed on (`from` at first), fails
/// on a hole in the sequence, decodes each batch on a blocking thread and hands it on, in
/// order, until the consumer fails or nobody listens.
async fn fetch_batches<S>(
    mut messages: S,
    size: usize,
    wait: Duration,
    slot: Slot,
    from: u64,
    feed: tokio::sync::mpsc::Sender<Result<Fetched, ProjectorError>>,
) where
    S: futures::Stream<
            Item = Result<
                async_nats::jetstream::Message,
                async_nats::jetstream::consumer::pull::MessagesError,
            >,
        > + Unpin,
{
    let mut handed = from;
    loop {
        let Some(first) = messages.next().await else {
            return;
        };
        let gathered = async {
            let mut batch = vec![first.map_err(|e| ProjectorError::Nats(e.to_string()))?];
            let deadline = tokio::time::Instant::now() + wait;
            while batch.len() < size {
                match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(message)) => {
                        batch.push(message.map_err(|e| ProjectorError::Nats(e.to_string()))?);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            Ok::<_, ProjectorError>(batch)
        }
        .await;
        let batch = match gathered {
            Ok(batch) => batch,
            Err(err) => {
                let _ = feed.send(Err(err)).await;
                return;
            }
        };
        // The consumer reads the whole stream, whose sequences have no holes: each new message
        // must be the next sequence. A hole means messages were lost in flight (a consumer
        // leader change): acking past it would skip them for good, so the pass restarts from
        // the checkpoint instead.
        let mut stored: Vec<StoredMessage> = Vec::with_capacity(batch.len());
        for message in batch.iter().filter_map(StoredMessage::from_jetstream) {
            if message.seq <= handed {
                continue;
            }
            if message.seq != handed + 1 {
                let _ = feed
                    .send(Err(ProjectorError::Nats(format!(
                        "the consumer skipped from {handed} to {}: restarting from the checkpoint",
                        message.seq
                    ))))
                    .await;
                return;
            }
            handed = message.seq;
            stored.push(message);
        }
        if stored.is_empty() {
            continue;
        }
        let decoding = tokio::task::spawn_blocking(move || {
            let decoded = stored
                .iter()
                .map(|m| apply::decode_for(m, Some(slot)))
                .collect();
            (stored, decoded)
        });
        let Ok((stored, decoded)) = decoding.await else {
            return;
        };
        let fetched = Fetched {
            batch,
            stored,
            decoded,
        };
        if feed.send(Ok(fetched)).await.is_err() {
            return;
        }
    }
}
