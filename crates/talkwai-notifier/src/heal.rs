//! Healing: the notifier recreates what it owns on NATS when it finds it missing.
//!
//! The presence bucket `TALKWAI_PRESENCE` is in memory, so a nats-server restart deletes it with
//! the announcer's consumer on it; a durable consumer can also be deleted by hand. Whoever meets
//! the loss heals it: a presence request that fails with "stream not found" / "no responders"
//! recreates the bucket and the announcer consumer, then retries once; the announcer and the
//! event loop recreate their consumer when their message stream says it is gone, then read on.
//! Every step is create-or-update with the same configuration, so instances healing at once
//! agree. Readiness ([`Upkeep::checks`]) looks at the bucket and the consumers themselves, so
//! `/readyz` is 503 while any is missing. Liveness ([`Upkeep::liveness`]) fails when the event
//! loop or the announcer has not been connected and reading for `liveness_secs`.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use talkwai_eventstore::EventStore;
use talkwai_telemetry::ops::{Check, Liveness, Watchdog};

use crate::presence::BUCKET;
use crate::{Config, NotifierError, announce, events, presence};

/// Longest a readiness look-up of one stream or consumer may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a reading loop makes sure its consumer still exists (a pull stream does not always
/// notice that its consumer went with a nats-server restart).
pub const VERIFY_EVERY: Duration = Duration::from_secs(5);

pub use talkwai_eventstore::is_missing;

/// Whether `consumer` still exists: `false` only when the server says it (or its stream) is
/// not there; a failed look-up (NATS down) counts as there.
pub async fn still_there(consumer: &PullConsumer) -> bool {
    match consumer.get_info().await {
        Ok(_) => true,
        Err(err) => !is_missing(&err.to_string()),
    }
}

/// Knows how to (re)create the notifier's bucket and consumers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Upkeep {
    store: EventStore,
    config: Config,
    events_alive: Watchdog,
    presence_alive: Watchdog,
}

impl Upkeep {
    /// Upkeep of the buckets and consumers of `config` on `store`'s JetStream.
    pub fn new(store: EventStore, config: Config) -> Self {
        let silence = Duration::from_secs(config.liveness_secs.max(1));
        Self {
            store,
            config,
            events_alive: Watchdog::new("events", silence),
            presence_alive: Watchdog::new("presence", silence),
        }
    }

    /// `/livez`: the event loop and the announcer were connected and reading recently.
    pub fn liveness(&self) -> Liveness {
        Liveness::watchdogs(vec![self.events_alive.clone(), self.presence_alive.clone()])
    }

    /// Beats the event loop's watchdog if NATS is connected.
    pub(crate) fn events_reading(&self) {
        if self.connected() {
            self.events_alive.beat();
        }
    }

    /// Beats the announcer's watchdog if NATS is connected.
    pub(crate) fn presence_reading(&self) {
        if self.connected() {
            self.presence_alive.beat();
        }
    }

    fn connected(&self) -> bool {
        self.store.client().connection_state() == async_nats::connection::State::Connected
    }

    /// Creates (or updates) the presence bucket and its announcer consumer; returns the
    /// consumer.
    pub async fn ensure_presence(&self) -> Result<PullConsumer, NotifierError> {
        let js = self.store.jetstream();
        presence::bucket(js, self.store.replicas()).await?;
        announce::consumer(js, self.config.ack_wait()).await
    }

    /// Creates (or updates) the event consumer `talkwai-notifier` and returns it.
    pub async fn ensure_events(&self) -> Result<PullConsumer, NotifierError> {
        events::consumer(&self.store, &self.config).await
    }

    /// Readiness: `presence` (the bucket and the announcer consumer exist) and `events` (the
    /// event consumer exists).
    pub async fn checks(&self) -> Vec<Check> {
        if !self.connected() {
            return vec![
                Check::fail("presence", "nats is not connected"),
                Check::fail("events", "nats is not connected"),
            ];
        }
        let bucket = format!("KV_{BUCKET}");
        let (presence, events) = tokio::join!(
            self.exists(&bucket, announce::CONSUMER),
            self.exists(self.store.stream_name(), events::CONSUMER),
        );
        vec![
            Check::from_result("presence", presence),
            Check::from_result("events", events),
        ]
    }

    async fn exists(&self, stream: &str, consumer: &str) -> Result<(), String> {
        let look = async {
            let stream = self
                .store
                .jetstream()
                .get_stream(stream)
                .await
                .map_err(|e| format!("stream {stream}: {e}"))?;
            stream
                .consumer_info(consumer)
                .await
                .map(|_| ())
                .map_err(|e| format!("consumer {consumer}: {e}"))
        };
        tokio::time::timeout(CHECK_TIMEOUT, look)
            .await
            .unwrap_or_else(|_| Err(format!("looking up {stream}/{consumer} timed out")))
    }
}
