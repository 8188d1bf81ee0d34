//! From the event log to room topics, on the active instance only (the holder of the lease of
//! [`crate::lease`]; the others stand by).
//!
//! - **Anchoring.** Each time an instance becomes active (and whenever a delivery goes
//!   missing or the consumer is gone) it recreates the durable consumer `talkwai-notifier` to
//!   deliver from just after the consumer's ack floor (or what it published itself, if more):
//!   everything up to there has had its messages published. Whatever the previous holder
//!   had in hand is delivered again, first and in order, at once: no ack wait to sit out.
//! - **Batches.** The consumer (`AckPolicy::All`, up to `max_ack_pending` events unacked)
//!   delivers in large pulls. The sequencer hands each event to the worker of its partition
//!   (a hash of the subject's scope token: one tenant, one partition), so tenants proceed in
//!   parallel and each tenant's events in log order ([`crate::worker`]).
//! - **Low-water ack.** When the oldest events in hand are done, the sequencer publishes
//!   their admin-room alerts (so `systemAlerts` also follows log order); it acks the newest
//!   released event, which acks all before it, at once when nothing else is in hand and
//!   every 20 ms while behind. Publishes and acks go out on one
//!   connection in that order, so the server has routed an event's messages before it records
//!   the ack.
//! - **Checks.** Every delivery's consumer sequence must follow the previous one: a gap (a
//!   delivery lost on the way, e.g. across a reconnect) re-anchors. A delivery of an event
//!   already in hand (the consumer's ack wait ran out) is dropped.
//!
//! Why a client sees every message once and in order after dropping repeats (every message
//! carries the event's `seq`; a client drops one whose `seq` is not above the last it took on
//! that subject): every publisher (an active instance in one term, or a frozen one waking up)
//! publishes, per subject, a run of the log in order that starts right after events whose
//! messages were already published and routed (they are acked). So anything a client takes is
//! preceded, on its subject, by every earlier message of the log; a late repeat from a frozen
//! instance is at or below what the client took and is dropped.

use std::collections::BTreeMap;
use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use bytes::Bytes;
use futures::StreamExt;
use talkwai_eventstore::{EventStore, StoredMessage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::heal::{Upkeep, VERIFY_EVERY, is_missing, still_there};
use crate::lease::{Leadership, Term};
use crate::worker::{Done, Job, Partition, publish};
use crate::{Config, NotifierError};

/// Pause between attempts to anchor the consumer.
const HEAL_PAUSE: Duration = Duration::from_secs(1);

/// The event consumer's ack wait. It no longer decides how soon another instance takes over
/// (the lease does, and the new holder re-anchors); it only brings back a delivery lost on
/// the way when nothing follows it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How often the low-water mark is acked while events are in hand (an ack per event would
/// cost the server a consumer-state write per event); once all are done it is acked at once.
const ACK_EVERY: Duration = Duration::from_millis(20);

/// How long a graceful stop waits for the workers to finish the events in hand.
const DRAIN: Duration = Duration::from_secs(5);

/// The durable consumer of the active instance.
pub const CONSUMER: &str = "talkwai-notifier";

/// The consumer's configuration, delivering from `start` (the start of the log when `None`).
fn consumer_config(config: &Config, start: Option<u64>) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("TalkwAI notifier: room topics from events".into()),
        deliver_policy: start.map_or(DeliverPolicy::All, |start_sequence| {
            DeliverPolicy::ByStartSequence { start_sequence }
        }),
        ack_policy: AckPolicy::All,
        ack_wait: ACK_WAIT,
        max_ack_pending: config.max_ack_pending.max(1),
        max_deliver: -1,
        filter_subjects: vec![
            "talkwai.evt.*.task.*".into(),
            "talkwai.evt.*.tenant.*".into(),
        ],
        ..Default::default()
    }
}

/// The consumer, created to deliver from the start of the log when it does not exist; an
/// existing one is left as the active instance anchored it.
pub async fn consumer(store: &EventStore, config: &Config) -> Result<PullConsumer, NotifierError> {
    let stream = store
        .jetstream()
        .get_stream(store.stream_name())
        .await
        .map_err(NotifierError::js)?;
    match stream.get_consumer(CONSUMER).await {
        Ok(consumer) => Ok(consumer),
        Err(err) if is_missing(&err.to_string()) => stream
            .create_consumer(consumer_config(config, None))
            .await
            .map_err(NotifierError::js),
        Err(err) => Err(NotifierError::js(err)),
    }
}

/// Recreates the consumer to deliver from just after its ack floor or `published` (every
/// event up to it has had its messages published), whichever is later; from the start of the
/// log when both are 0. Returns it and where it starts.
pub async fn anchor(
    store: &EventStore,
    config: &Config,
    published: u64,
) -> Result<(PullConsumer, u64), NotifierError> {
    let stream = store
        .jetstream()
        .get_stream(store.stream_name())
        .await
        .map_err(NotifierError::js)?;
    let floor = match stream.consumer_info(CONSUMER).await {
        Ok(info) => info.ack_floor.stream_sequence,
        Err(err) if is_missing(&err.to_string()) => 0,
        Err(err) => return Err(NotifierError::js(err)),
    };
    let after = floor.max(published);
    match stream.delete_consumer(CONSUMER).await {
        Ok(_) => {}
        Err(err) if is_missing(&err.to_string()) => {}
        Err(err) => return Err(NotifierError::js(err)),
    }
    let start = (after > 0).then_some(after + 1);
    let consumer = stream
        .create_consumer(consumer_config(config, start))
        .await
        .map_err(NotifierError::js)?;
    Ok((consumer, after + 1))
}

/// Why a term of reading ended.
enum End {
    /// Shutdown: the events in hand were finished and acked.
    Shutdown,
    /// The lease went to another instance (or could not be renewed).
    Lost,
    /// A delivery went missing, or the consumer is gone: anchor again.
    Reanchor,
}

/// The event loop: waits for the lease, then reads the log while holding it.
pub struct EventLoop {
    store: EventStore,
    /// Opens sealed personal fields, handed to every partition.
    keys: Option<talkwai_keys::KeyStore>,
    config: Config,
    leadership: Leadership,
    upkeep: Option<Upkeep>,
    /// The partitions' state, kept between terms (lost with a term that had to be aborted).
    partitions: Vec<Option<Partition>>,
    /// Every event up to this sequence has had its messages published by this instance.
    published: u64,
}

impl EventLoop {
    /// A loop over `store` with the settings of `config`, active while `leadership` says so.
    pub fn new(
        store: EventStore,
        keys: Option<talkwai_keys::KeyStore>,
        config: &Config,
        leadership: Leadership,
    ) -> Self {
        let count = config.workers.max(1);
        Self {
            partitions: (0..count)
                .map(|_| Some(Partition::new(store.clone(), keys.clone(), config, count)))
                .collect(),
            store,
            keys,
            config: config.clone(),
            leadership,
            upkeep: None,
            published: 0,
        }
    }

    /// Heals with `upkeep` (its watchdog is beaten while connected, active or not); without,
    /// the loop ends when the consumer is found missing.
    pub fn healing(mut self, upkeep: Upkeep) -> Self {
        self.upkeep = Some(upkeep);
        self
    }

    /// Stands by or reads until `shutdown` flips; the events in hand are finished first.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), NotifierError> {
        let client = self.store.client().clone();
        while let Some(term) = self.wait_for_term(&mut shutdown).await {
            let anchored = anchor(&self.store, &self.config, self.published).await;
            let consumer = match anchored {
                Ok((consumer, start)) => {
                    info!(
                        consumer = CONSUMER,
                        term, start, "notifying from the event log"
                    );
                    consumer
                }
                Err(err) => {
                    warn!(error = %err, "cannot anchor the event consumer yet");
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        () = tokio::time::sleep(HEAL_PAUSE) => continue,
                    }
                }
            };
            match self.term(term, &client, consumer, &mut shutdown).await {
                End::Shutdown => break,
                End::Lost => info!(term, "no longer the active notifier"),
                End::Reanchor if self.upkeep.is_none() => break,
                End::Reanchor => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        () = tokio::time::sleep(HEAL_PAUSE / 10) => {}
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        Ok(())
    }

    /// Waits until this instance holds the lease; `None` on shutdown.
    async fn wait_for_term(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<Term> {
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        loop {
            if *shutdown.borrow() {
                return None;
            }
            if let Some(term) = *self.leadership.borrow_and_update() {
                return Some(term);
            }
            tokio::select! {
                _ = shutdown.changed() => return None,
                changed = self.leadership.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = alive.tick() => self.beat(),
            }
        }
    }

    fn beat(&self) {
        if let Some(upkeep) = &self.upkeep {
            upkeep.events_reading();
        }
    }

    /// One term: reads, hands out, sequences and acks until the term ends.
    async fn term(
        &mut self,
        term: Term,
        client: &async_nats::Client,
        consumer: PullConsumer,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let batch = usize::try_from(self.config.max_ack_pending.max(2) / 2).unwrap_or(1);
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch.max(1))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(err) => {
                warn!(error = %err, "cannot read the event consumer");
                return End::Reanchor;
            }
        };
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut workers = JoinSet::new();
        let mut senders = Vec::with_capacity(self.partitions.len());
        for (index, slot) in self.partitions.iter_mut().enumerate() {
            let partition = slot.take().unwrap_or_else(|| {
                Partition::new(
                    self.store.clone(),
                    self.keys.clone(),
                    &self.config,
                    self.config.workers.max(1),
                )
            });
            let (tx, rx) = mpsc::channel::<Job>(batch.max(16));
            senders.push(tx);
            let client = client.clone();
            let done = done_tx.clone();
            workers.spawn(async move { (index, partition.work(client, rx, done).await) });
        }
        drop(done_tx);
        let mut line = Sequencer::new(client.clone());
        let mut last_delivery = 0u64;
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        let mut verify = tokio::time::interval(VERIFY_EVERY);
        let mut ack_tick = tokio::time::interval(ACK_EVERY);
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break End::Shutdown,
                _ = self.leadership.changed() => {
                    if *self.leadership.borrow_and_update() != Some(term) {
                        break End::Lost;
                    }
                }
                Some(done) = done_rx.recv() => {
                    line.done(done);
                    while let Ok(done) = done_rx.try_recv() {
                        line.done(done);
                    }
                    self.published = self.published.max(line.advance().await);
                    // Caught up: ack at once (a crash then repeats at most the event in
                    // flight); while behind, the tick acks.
                    if line.in_hand.is_empty() && *self.leadership.borrow() == Some(term) {
                        line.ack().await;
                    }
                }
                _ = ack_tick.tick() => {
                    // A frozen instance that wakes up acks nothing once it knows its term is
                    // over (an ack of a later term's consumer would only be early, not wrong).
                    if *self.leadership.borrow() == Some(term) {
                        line.ack().await;
                    }
                }
                _ = alive.tick() => self.beat(),
                _ = verify.tick() => {
                    if self.upkeep.is_some() && !still_there(&consumer).await {
                        warn!(consumer = CONSUMER, "the event consumer is gone");
                        break End::Reanchor;
                    }
                }
                message = messages.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(err)) if is_missing(&err.to_string()) => {
                            warn!(error = %err, "the event consumer is gone");
                            break End::Reanchor;
                        }
                        Some(Err(err)) => {
                            warn!(error = %err, "consumer error");
                            continue;
                        }
                        None => {
                            warn!(consumer = CONSUMER, "event consumer ended");
                            break End::Reanchor;
                        }
                    };
                    let Ok(info) = message.info() else { continue };
                    let (delivery, seq) = (info.consumer_sequence, info.stream_sequence);
                    if delivery != last_delivery + 1 {
                        warn!(after = last_delivery, got = delivery, "a delivery went missing: anchoring again");
                        break End::Reanchor;
                    }
                    last_delivery = delivery;
                    if seq <= line.highest {
                        // The ack wait ran out while it was in hand: the first delivery
                        // is still being worked on.
                        continue;
                    }
                    let Some(stored) = StoredMessage::from_jetstream(&message) else {
                        continue;
                    };
                    line.take(seq, message.reply.clone());
                    let partition = partition_of(&stored.subject, senders.len());
                    if senders[partition].send(Job { stored }).await.is_err() {
                        break End::Reanchor;
                    }
                }
            }
        };
        drop(messages);
        drop(senders);
        if matches!(end, End::Shutdown) {
            // Finish what is in hand, then ack it.
            let drained = tokio::time::timeout(DRAIN, async {
                while let Some(done) = done_rx.recv().await {
                    line.done(done);
                }
            })
            .await;
            if drained.is_err() {
                warn!("the events in hand were not finished in time");
            }
            self.published = self.published.max(line.advance().await);
            line.ack().await;
        } else {
            workers.abort_all();
        }
        while let Some(joined) = workers.join_next().await {
            if let Ok((index, partition)) = joined
                && let Some(slot) = self.partitions.get_mut(index)
            {
                *slot = Some(partition);
            }
        }
        end
    }
}

/// The partition of an event subject `talkwai.evt.<scope>.<kind>.<id>`: by its scope token
/// (the tenant), so one tenant's events stay in order.
pub fn partition_of(subject: &str, partitions: usize) -> usize {
    let scope = subject.split('.').nth(2).unwrap_or(subject);
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(scope);
    usize::try_from(hash % u64::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// The events in hand, in log order, and which are done.
struct Sequencer {
    client: async_nats::Client,
    /// Events in hand by sequence: their ack subject and, once done, their alerts.
    in_hand: BTreeMap<u64, (Option<async_nats::Subject>, Option<Done>)>,
    /// The newest released event not acked yet: its sequence and ack subject.
    unacked: Option<(u64, async_nats::Subject)>,
    /// The highest sequence taken in this term.
    highest: u64,
}

impl Sequencer {
    fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            in_hand: BTreeMap::new(),
            unacked: None,
            highest: 0,
        }
    }

    /// An event handed to its worker.
    fn take(&mut self, seq: u64, reply: Option<async_nats::Subject>) {
        self.highest = seq;
        self.in_hand.insert(seq, (reply, None));
    }

    /// A worker finished an event.
    fn done(&mut self, done: Done) {
        if let Some(slot) = self.in_hand.get_mut(&done.seq) {
            slot.1 = Some(done);
        }
    }

    /// Publishes the alerts of the oldest events that are done, in order, and marks the
    /// newest of them for the next [`ack`](Self::ack); returns the last sequence so released
    /// (0: none yet).
    async fn advance(&mut self) -> u64 {
        let mut through = 0;
        while let Some(entry) = self.in_hand.first_entry() {
            if entry.get().1.is_none() {
                break;
            }
            let (seq, (reply, done)) = entry.remove_entry();
            if let Some(done) = done {
                for (subject, body) in done.alerts {
                    if let Err(err) = publish(&self.client, subject, &done.trace, body).await {
                        warn!(error = %err, seq, "cannot publish an alert");
                    }
                }
            }
            through = seq;
            if let Some(reply) = reply {
                self.unacked = Some((seq, reply));
            }
        }
        through
    }

    /// Acks the newest released event, which acks all before it (after their messages, on the
    /// same connection).
    async fn ack(&mut self) {
        if let Some((seq, reply)) = self.unacked.take()
            && let Err(err) = self.client.publish(reply, Bytes::new()).await
        {
            warn!(error = %err, seq, "cannot ack");
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn given_one_tenant_when_partitioned_then_every_event_lands_in_one_partition() {
        let tenant = "0191c7a2-0000-7000-8000-000000000001";
        let first = partition_of(&format!("talkwai.evt.{tenant}.task.a"), 4);
        for id in ["b", "c", "d"] {
            assert_eq!(
                partition_of(&format!("talkwai.evt.{tenant}.task.{id}"), 4),
                first
            );
        }
        assert_eq!(
            partition_of(&format!("talkwai.evt.{tenant}.tenant.{tenant}"), 4),
            first
        );
        assert!(first < 4);
        assert_eq!(partition_of("talkwai.evt.x.task.y", 1), 0);
    }

    #[test]
    fn given_many_tenants_when_partitioned_then_every_partition_gets_some() {
        let mut seen = HashMap::new();
        for n in 0..64 {
            *seen
                .entry(partition_of(&format!("talkwai.evt.tenant-{n}.task.t"), 4))
                .or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
    }
}
