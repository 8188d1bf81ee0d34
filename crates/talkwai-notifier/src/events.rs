//! From the event log to room topics: the durable consumer `talkwai-notifier`, shared by every
//! instance, explicit ack after publishing. The consumer lives on the file-storage event stream
//! and survives a nats-server restart; should it be gone all the same (deleted by hand), the
//! loop recreates it ([`crate::heal`]) and reads on.

use std::num::NonZeroUsize;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;
use lru::LruCache;
use talkwai_domain::ids::TaskId;
use talkwai_domain::task::TaskEvent;
use talkwai_domain::tenant::TenantEvent;
use talkwai_domain::{EntityKind, Event};
use talkwai_eventstore::{EventStore, StoredMessage};
use talkwai_proto::event::{DecodeError, StoredEvent, decode_stored};
use talkwai_proto::headers::{EVENT_TYPE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use tokio::sync::watch;
use tracing::{Instrument as _, Span, debug, field, info, info_span, warn};

use crate::derive::{self, ActorRef, FailureSpikes, Happened, Outgoing, TaskFacts};
use crate::heal::{Upkeep, VERIFY_EVERY, is_missing, still_there};
use crate::{Config, NotifierError};

/// Pause between attempts to recreate a lost consumer.
const HEAL_PAUSE: Duration = Duration::from_secs(1);

/// The durable consumer every notifier instance pulls from.
pub const CONSUMER: &str = "talkwai-notifier";

/// Creates (or updates) the shared durable consumer: task and tenant events, from the start of
/// the log on first creation, explicit ack, at most `max_ack_pending` events in flight across
/// all instances (1: strict order).
pub async fn consumer(store: &EventStore, config: &Config) -> Result<PullConsumer, NotifierError> {
    let stream = store
        .jetstream()
        .get_stream(store.stream_name())
        .await
        .map_err(NotifierError::js)?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("TalkwAI notifier: room topics from events".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait(),
            max_ack_pending: config.max_ack_pending.max(1),
            max_deliver: -1,
            filter_subjects: vec![
                "talkwai.evt.*.task.*".into(),
                "talkwai.evt.*.tenant.*".into(),
            ],
            ..Default::default()
        })
        .await
        .map_err(NotifierError::js)
}

/// The state of the event loop: caches and detectors, owned by one task.
pub struct EventLoop {
    store: EventStore,
    /// What is known about recently seen tasks; a miss or a gap is filled from the log.
    tasks: LruCache<TaskId, TaskFacts>,
    spikes: FailureSpikes,
    skip_older_than_ms: i64,
    upkeep: Option<Upkeep>,
    /// How often an event still being worked on is reported in progress.
    progress_every: Duration,
}

impl EventLoop {
    /// A loop over `store` with the caches and thresholds of `config`.
    pub fn new(store: EventStore, config: &Config) -> Self {
        Self {
            store,
            tasks: LruCache::new(
                NonZeroUsize::new(config.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            spikes: FailureSpikes::new(
                config.failure_spike,
                i64::try_from(config.failure_spike_window_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                config.cache_capacity,
            ),
            skip_older_than_ms: i64::try_from(config.skip_older_than_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            upkeep: None,
            progress_every: config.ack_wait() / 4,
        }
    }

    /// Heals with `upkeep`: when the consumer is found missing it is recreated and read again
    /// (without, the loop ends).
    pub fn healing(mut self, upkeep: Upkeep) -> Self {
        self.upkeep = Some(upkeep);
        self
    }

    /// Pulls, publishes and acks until `shutdown` flips; the message in hand is finished first.
    pub async fn run(
        mut self,
        mut consumer: PullConsumer,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), NotifierError> {
        let client = self.store.client().clone();
        info!(consumer = CONSUMER, "notifying from the event log");
        loop {
            let messages = consumer.messages().await.map_err(NotifierError::js);
            let stopped = match messages {
                Ok(messages) => self.pull(&client, &consumer, messages, &mut shutdown).await,
                Err(err) => {
                    warn!(error = %err, "cannot read the event consumer");
                    false
                }
            };
            let Some(upkeep) = self.upkeep.clone().filter(|_| !stopped) else {
                break;
            };
            // The consumer is gone: recreate it, then read again.
            tokio::select! {
                _ = shutdown.changed() => break,
                () = tokio::time::sleep(HEAL_PAUSE) => {}
            }
            match upkeep.ensure_events().await {
                Ok(recreated) => {
                    info!(consumer = CONSUMER, "event consumer recreated");
                    consumer = recreated;
                }
                Err(err) => warn!(error = %err, "cannot recreate the event consumer yet"),
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        Ok(())
    }

    /// Handles messages until `shutdown` flips (`true`) or the consumer is found missing
    /// (`false`).
    async fn pull(
        &mut self,
        client: &async_nats::Client,
        consumer: &PullConsumer,
        mut messages: async_nats::jetstream::consumer::pull::Stream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        let mut verify = tokio::time::interval(VERIFY_EVERY);
        loop {
            if let Some(upkeep) = &self.upkeep {
                upkeep.events_reading();
            }
            let message = tokio::select! {
                _ = shutdown.changed() => return true,
                _ = alive.tick() => continue,
                _ = verify.tick() => {
                    if self.upkeep.is_none() || still_there(consumer).await {
                        continue;
                    }
                    warn!(consumer = CONSUMER, "the event consumer is gone");
                    return false;
                }
                message = messages.next() => message,
            };
            let Some(message) = message else {
                warn!(consumer = CONSUMER, "event consumer ended");
                return false;
            };
            let message = match message {
                Ok(message) => message,
                Err(err) if is_missing(&err.to_string()) => {
                    warn!(error = %err, "the event consumer is gone");
                    return false;
                }
                Err(err) => {
                    warn!(error = %err, "consumer error");
                    continue;
                }
            };
            let Some(stored) = StoredMessage::from_jetstream(&message) else {
                let _ = message.ack().await;
                continue;
            };
            // One `notify` span per event, in the trace of the command that appended it.
            let span = talkwai_telemetry::span_with_parent(
                info_span!(
                    "notify",
                    seq = stored.seq,
                    event_type = stored.header(EVENT_TYPE).unwrap_or(""),
                    subject = %stored.subject,
                    messages = field::Empty,
                ),
                Some(&stored.headers),
            );
            // While the event is being worked on, a progress ack every quarter of the ack
            // wait keeps it ours; should this instance die, the consumer hands it to another
            // one an ack wait later (a second by default), not after a long timeout.
            let progress_every = self.progress_every;
            let work = self.notify(client, &message, &stored).instrument(span);
            tokio::pin!(work);
            let mut progress = tokio::time::interval_at(
                tokio::time::Instant::now() + progress_every,
                progress_every,
            );
            loop {
                tokio::select! {
                    () = &mut work => break,
                    _ = progress.tick() => {
                        if let Err(err) = message.ack_with(AckKind::Progress).await {
                            debug!(error = %err, seq = stored.seq, "cannot report progress");
                        }
                    }
                }
            }
        }
    }

    /// Publishes the messages of one event (each carrying the `notify` span's trace context),
    /// then acks it; on failure leaves it for redelivery.
    async fn notify(
        &mut self,
        client: &async_nats::Client,
        message: &async_nats::jetstream::Message,
        stored: &StoredMessage,
    ) {
        match self.handle(stored).await {
            Ok(outgoing) => {
                Span::current().record("messages", outgoing.len());
                let mut trace = async_nats::HeaderMap::new();
                talkwai_telemetry::inject_span(&Span::current(), &mut trace);
                let mut published = true;
                crate::ops::notifying(stored, &outgoing);
                for out in outgoing {
                    let body = serde_json::to_vec(&out.body).unwrap_or_default();
                    let sent = if trace.is_empty() {
                        client.publish(out.subject, body.into()).await
                    } else {
                        client
                            .publish_with_headers(out.subject, trace.clone(), body.into())
                            .await
                    };
                    if let Err(err) = sent {
                        warn!(error = %err, seq = stored.seq, "cannot publish, redelivery will retry");
                        published = false;
                    }
                }
                crate::ops::event_done(published);
                if !published {
                    return;
                }
                // The publishes are queued before the ack on the same connection, so the
                // server sees them first; a crash before the ack means a redelivery.
                if let Err(err) = message.ack().await {
                    warn!(error = %err, seq = stored.seq, "cannot ack");
                }
            }
            Err(err) => {
                warn!(error = %err, seq = stored.seq, "cannot load the task, retrying");
                crate::ops::event_done(false);
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }

    /// The messages one stored event produces (nothing for stale or foreign events).
    pub async fn handle(&mut self, stored: &StoredMessage) -> Result<Vec<Outgoing>, NotifierError> {
        if self.skip_older_than_ms > 0
            && stored.stored_at_ms > 0
            && now_ms() - stored.stored_at_ms > self.skip_older_than_ms
        {
            debug!(seq = stored.seq, "skipping a stale event");
            return Ok(Vec::new());
        }
        let decoded =
            match decode_stored(&stored.subject, |name| stored.header(name), &stored.payload) {
                Ok(Some(decoded)) => decoded,
                // Not an aggregate's subject (a guard), or not one of ours.
                Ok(None) | Err(DecodeError::Subject(_)) => return Ok(Vec::new()),
                Err(err) => {
                    warn!(error = %err, seq = stored.seq, "undecodable event, not notified");
                    return Ok(Vec::new());
                }
            };
        let StoredEvent {
            target,
            meta,
            event,
            ..
        } = decoded;
        let Some(tenant) = target.tenant else {
            return Ok(Vec::new());
        };
        let meta = Happened {
            seq: stored.seq,
            tenant,
            actor: meta.actor.unwrap_or(ActorRef::Platform),
            occurred_at: meta.occurred_at.unwrap_or(stored.stored_at_ms),
        };
        match (target.kind, event) {
            (EntityKind::Task, Event::Task(event)) => {
                let task = TaskId::from(target.id);
                let before = self.facts_before(task, stored).await?;
                let mut after = before;
                after.evolve(&event, stored.seq);
                self.tasks.put(task, after);
                let mut out = derive::task_messages(meta, task, &event, &before, &after);
                if matches!(event, TaskEvent::Failed(_))
                    && let Some(count) = self.spikes.record(tenant, meta.occurred_at)
                {
                    out.push(self.spikes.alert(meta, count));
                }
                Ok(out)
            }
            (EntityKind::Tenant, Event::Tenant(TenantEvent::StatusChanged(change))) => {
                Ok(derive::tenant_alert(meta, &change).into_iter().collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The task's facts just before `stored`: the cached copy when it provably ends right
    /// before it (the event's expected last subject sequence), else caught up from the log.
    async fn facts_before(
        &mut self,
        task: TaskId,
        stored: &StoredMessage,
    ) -> Result<TaskFacts, NotifierError> {
        let cached = self.tasks.get(&task).copied();
        let expected = stored
            .header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
            .and_then(|v| v.parse::<u64>().ok());
        // The first event of a task (a create, appended expecting an empty subject) has
        // nothing before it: no read of the log on the hot path.
        if expected == Some(0) {
            return Ok(TaskFacts::default());
        }
        if let Some(facts) = cached
            && (expected == Some(facts.last_seq) || facts.last_seq + 1 == stored.seq)
        {
            return Ok(facts);
        }
        // A miss, or another instance (or a skipped event) moved the task on: fold the gap.
        let mut facts = cached
            .filter(|f| f.last_seq < stored.seq)
            .unwrap_or_default();
        let history = self
            .store
            .read_subject_through(&stored.subject, facts.last_seq, stored.seq)
            .await?;
        for message in history.iter().filter(|m| m.seq < stored.seq) {
            let decoded = decode_stored(
                &message.subject,
                |name| message.header(name),
                &message.payload,
            );
            if let Ok(Some(StoredEvent {
                event: Event::Task(event),
                ..
            })) = decoded
            {
                facts.evolve(&event, message.seq);
            }
        }
        Ok(facts)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
