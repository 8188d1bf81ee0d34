//! The apply loop of one partition: passes from the checkpoint in the live generation, each
//! batch applied in one transaction fenced on the checkpoint, retried with backoff.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use talkwai_eventstore::StoredMessage;
use talkwai_proto::changes::{CHANNEL, Changed};
use tracing::{Instrument as _, Span, info, info_span, warn};

use crate::fetch::{AbortOnDrop, Fetched, fetch_batches, seq_of};
use crate::{Projector, ProjectorError, Slot, apply, dead_letters, partition, schema, state};

/// Why one pass of the apply loop ended.
enum PassEnd {
    /// Stopped at a poison event; wait for `retry`.
    Stopped,
    /// The live generation changed (a swap or rollback): start over on the new one.
    Swapped,
}

impl Projector {
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
                    // 200 ms doubling to 1 s: a pass every second against a server that is
                    // down costs nothing, and projection resumes within a second of its return.
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(4)))
                        .min(Duration::from_secs(1));
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
        partition::ensure_layout(
            &mut conn,
            &self.store,
            &schema,
            generation,
            slot.count,
            self.keys.as_ref(),
        )
        .await?;
        if state::is_stopped(&conn, generation, slot).await? {
            return Ok(PassEnd::Stopped);
        }
        let checkpoint = state::partition_checkpoint(&conn, &schema, slot).await?;
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
            self.keys.clone(),
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
            if !state::lock_live(&tx, generation).await? {
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
                state::record_stop(&tx, generation, slot, poison).await?;
            }
            if outcome.checkpoint > 0 && outcome.stopped_at.is_none() {
                let checkpoint = i64::try_from(outcome.checkpoint).unwrap_or(i64::MAX);
                dead_letters::resolve_passed(&tx, generation, slot, checkpoint).await?;
            }
            // Live queries learn which tenants and tables changed when (and only if) this commits.
            let changed = Changed::of_batch(
                outcome.checkpoint,
                stored
                    .iter()
                    .filter(|m| m.seq <= outcome.checkpoint && slot.owns(&m.subject))
                    .map(|m| m.subject.as_str()),
            );
            // Sent even when it names nothing (guards only), so the checkpoint is accounted for.
            let payload = serde_json::to_string(&changed).unwrap_or_default();
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
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
