//! One partition of the active instance's work: the events of the tenants that hash to it, in
//! log order. A worker derives each event's messages ([`crate::derive`]), publishes the ones
//! of tenant rooms itself (core NATS publishes, not awaited one by one) and hands the event
//! back to the sequencer ([`crate::events`]) with its admin-room alerts, which are published in
//! global log order before the event is acknowledged.

use std::num::NonZeroUsize;
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use talkwai_domain::ids::TaskId;
use talkwai_domain::task::TaskEvent;
use talkwai_domain::tenant::TenantEvent;
use talkwai_domain::{EntityKind, Event};
use talkwai_eventstore::{EventStore, StoredMessage};
use talkwai_keys::{KeyStore, Keyring, keyring_of};
use talkwai_proto::event::{DecodeError, StoredEvent, decode_stored_with};
use talkwai_proto::headers::{EVENT_TYPE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use tokio::sync::mpsc;
use tracing::{Instrument as _, Span, debug, field, info_span, warn};

use crate::derive::{
    self, ActorRef, FailureSpikes, Happened, Outgoing, TaskFacts, system_alerts_subject,
};
use crate::events::now_ms;
use crate::{Config, NotifierError};

/// Pause before an event whose task could not be loaded (or whose messages could not be
/// published) is tried again; the partition waits, so its rooms keep their order.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// An event handed to a worker.
pub(crate) struct Job {
    /// The stored event.
    pub stored: StoredMessage,
}

/// An event a worker is done with: its tenant-room messages are published; its admin-room
/// messages wait for their turn in global log order.
pub(crate) struct Done {
    /// The event's stream sequence.
    pub seq: u64,
    /// Its `systemAlerts` messages, encoded, with the trace context to publish them with.
    pub alerts: Vec<(String, Bytes)>,
    /// The trace context of the event's `notify` span (empty when not traced).
    pub trace: async_nats::HeaderMap,
}

/// What a partition remembers between events: its tasks and its tenants' failures.
pub struct Partition {
    store: EventStore,
    /// Opens sealed personal fields (`None`: no master key configured).
    keys: Option<KeyStore>,
    /// What is known about recently seen tasks; a miss or a gap is filled from the log.
    tasks: LruCache<TaskId, TaskFacts>,
    spikes: FailureSpikes,
    skip_older_than_ms: i64,
    /// The highest sequence handled: an event at or below it is a repeat (after a re-anchor)
    /// and counts no failure twice.
    highest: u64,
}

impl Partition {
    /// One of `partitions` partitions over `store`, with its share of the caches of `config`.
    pub fn new(
        store: EventStore,
        keys: Option<KeyStore>,
        config: &Config,
        partitions: usize,
    ) -> Self {
        let share = (config.cache_capacity / partitions.max(1)).max(1);
        Self {
            store,
            keys,
            tasks: LruCache::new(NonZeroUsize::new(share).unwrap_or(NonZeroUsize::MIN)),
            spikes: FailureSpikes::new(
                config.failure_spike,
                i64::try_from(config.failure_spike_window_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                share,
            ),
            skip_older_than_ms: i64::try_from(config.skip_older_than_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            highest: 0,
        }
    }

    /// Works through `jobs` in order until the channel closes, then gives the partition back.
    pub(crate) async fn work(
        mut self,
        client: async_nats::Client,
        mut jobs: mpsc::Receiver<Job>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Self {
        while let Some(Job { stored }) = jobs.recv().await {
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
            let finished = self.notify(&client, &stored).instrument(span).await;
            if done.send(finished).is_err() {
                break;
            }
        }
        self
    }

    /// Derives and publishes one event's tenant-room messages, trying again until it works.
    async fn notify(&mut self, client: &async_nats::Client, stored: &StoredMessage) -> Done {
        let mut trace = async_nats::HeaderMap::new();
        talkwai_telemetry::inject_span(&Span::current(), &mut trace);
        loop {
            let outgoing = match self.handle(stored).await {
                Ok(outgoing) => outgoing,
                Err(err) => {
                    warn!(error = %err, seq = stored.seq, "cannot load the task, retrying");
                    crate::ops::event_done(false);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            Span::current().record("messages", outgoing.len());
            crate::ops::notifying(stored, &outgoing);
            let admin = system_alerts_subject();
            let mut alerts = Vec::new();
            let mut published = true;
            for out in outgoing {
                let body: Bytes = serde_json::to_vec(&out.body).unwrap_or_default().into();
                if out.subject == admin {
                    alerts.push((out.subject, body));
                    continue;
                }
                if let Err(err) = publish(client, out.subject, &trace, body).await {
                    warn!(error = %err, seq = stored.seq, "cannot publish, retrying");
                    published = false;
                    break;
                }
            }
            crate::ops::event_done(published);
            if published {
                return Done {
                    seq: stored.seq,
                    alerts,
                    trace,
                };
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The keys `messages` need to be decoded.
    async fn keyring(&self, messages: &[StoredMessage]) -> Result<Keyring, NotifierError> {
        keyring_of(self.keys.as_ref(), messages)
            .await
            .map_err(NotifierError::js)
    }

    /// The messages one stored event produces (nothing for stale or foreign events).
    pub async fn handle(&mut self, stored: &StoredMessage) -> Result<Vec<Outgoing>, NotifierError> {
        let repeat = stored.seq <= self.highest;
        self.highest = self.highest.max(stored.seq);
        if self.skip_older_than_ms > 0
            && stored.stored_at_ms > 0
            && now_ms() - stored.stored_at_ms > self.skip_older_than_ms
        {
            debug!(seq = stored.seq, "skipping a stale event");
            return Ok(Vec::new());
        }
        let ring = self.keyring(std::slice::from_ref(stored)).await?;
        let decoded = match decode_stored_with(
            &stored.subject,
            |name| stored.header(name),
            &stored.payload,
            &ring,
        ) {
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
                    && !repeat
                    && let Some(count) = self.spikes.record(tenant, meta.occurred_at)
                {
                    out.push(self.spikes.alert(meta, count));
                }
                Ok(out)
            }
            (EntityKind::Tenant, Event::Tenant(TenantEvent::StatusChanged(change))) => {
                Ok(derive::tenant_alert(meta, &change).into_iter().collect())
            }
            (EntityKind::Tenant, Event::Tenant(TenantEvent::Erased(_))) => {
                // Presence is disposable: a failure is logged, not retried (joins are refused
                // from the log whatever the bucket holds).
                if let Err(err) = crate::presence::close_room(self.store.jetstream(), tenant).await
                {
                    warn!(error = %err, %tenant, "cannot drop the closed room's presence sessions");
                }
                Ok(derive::tenant_erased_messages(meta))
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
        // A miss, a repeat, or a skipped event: fold the gap from the log.
        let mut facts = cached
            .filter(|f| f.last_seq < stored.seq)
            .unwrap_or_default();
        let history = self
            .store
            .read_subject_through(&stored.subject, facts.last_seq, stored.seq)
            .await?;
        let ring = self.keyring(&history).await?;
        for message in history.iter().filter(|m| m.seq < stored.seq) {
            let decoded = decode_stored_with(
                &message.subject,
                |name| message.header(name),
                &message.payload,
                &ring,
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

/// One core NATS publish, with the trace context when there is one.
pub(crate) async fn publish(
    client: &async_nats::Client,
    subject: String,
    trace: &async_nats::HeaderMap,
    body: Bytes,
) -> Result<(), async_nats::PublishError> {
    if trace.is_empty() {
        client.publish(subject, body).await
    } else {
        client
            .publish_with_headers(subject, trace.clone(), body)
            .await
    }
}
