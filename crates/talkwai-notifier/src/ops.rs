//! Operations: the notifier's Prometheus metrics (recorded with the `metrics` macros; served
//! with `/livez` and `/readyz` by `talkwai_telemetry::ops::serve_ops_with`), its readiness and
//! its liveness.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `talkwai_notifier_events_total` | counter | `outcome`: `notified` (published, then acked), `retried` (left for redelivery) |
//! | `talkwai_notifier_messages_total` | counter | `topic`: `taskUpdates`, `notifications`, `systemAlerts` |
//! | `talkwai_notifier_delivery_lag_seconds` | histogram | (event stored → its room messages published) |
//! | `talkwai_notifier_last_seq` | gauge | (stream sequence of the last event handled) |
//! | `talkwai_presence_requests_total` | counter | `op`, `outcome` (`ok` or the error code) |
//! | `talkwai_presence_peers` | gauge | `room_type`: `tenant`, `admin` (counted every [`PEERS_INTERVAL`]) |

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use talkwai_eventstore::StoredMessage;
use talkwai_proto::room::PresenceReply;
use talkwai_telemetry::ops::{Liveness, Readiness};
use tokio::sync::watch;
use tracing::debug;

use crate::derive::Outgoing;
use crate::events::now_ms;
use crate::presence::BUCKET;
use crate::{Notifier, NotifierError};

/// How often presence peers are counted.
pub const PEERS_INTERVAL: Duration = Duration::from_secs(10);

/// The topic of a room subject (`talkwai.room.<type>.<id>.topic.<name>[.<member>]`).
pub fn topic_of(subject: &str) -> &str {
    subject.split('.').nth(5).unwrap_or("unknown")
}

/// Records the messages about to be published for one event and how long after it was stored.
pub fn notifying(stored: &StoredMessage, outgoing: &[Outgoing]) {
    for out in outgoing {
        metrics::counter!("talkwai_notifier_messages_total", "topic" => topic_of(&out.subject).to_owned())
            .increment(1);
    }
    if stored.stored_at_ms > 0 {
        let lag_ms = (now_ms() - stored.stored_at_ms).max(0);
        metrics::histogram!("talkwai_notifier_delivery_lag_seconds").record(lag_ms as f64 / 1000.0);
    }
    metrics::gauge!("talkwai_notifier_last_seq").set(stored.seq as f64);
}

/// Counts one event handled: `notified` or `retried`.
pub fn event_done(notified: bool) {
    let outcome = if notified { "notified" } else { "retried" };
    metrics::counter!("talkwai_notifier_events_total", "outcome" => outcome).increment(1);
}

/// Counts one presence request by operation and outcome.
pub fn presence_done(subject: &str, reply: &PresenceReply) {
    let op = subject
        .rsplit('.')
        .next()
        .and_then(|op| crate::presence::OPS.iter().find(|known| **known == op))
        .copied()
        .unwrap_or("invalid");
    let outcome = match &reply.error {
        None => "ok".to_owned(),
        Some(error) => error.code.to_string(),
    };
    metrics::counter!("talkwai_presence_requests_total", "op" => op, "outcome" => outcome)
        .increment(1);
}

/// Live peers per room type: the last entry of every key of the presence bucket, less delete
/// and expiry markers (one ordered, headers-only pass).
pub async fn count_peers(
    js: &async_nats::jetstream::Context,
) -> Result<BTreeMap<String, u64>, NotifierError> {
    let mut counts = BTreeMap::from([("admin".to_owned(), 0), ("tenant".to_owned(), 0)]);
    let stream = js
        .get_stream(format!("KV_{BUCKET}"))
        .await
        .map_err(NotifierError::js)?;
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("$KV.{BUCKET}.>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(NotifierError::js)?;
    let pending = consumer
        .info()
        .await
        .map_err(NotifierError::js)?
        .num_pending;
    if pending == 0 {
        return Ok(counts);
    }
    let mut messages = consumer.messages().await.map_err(NotifierError::js)?;
    let prefix = format!("$KV.{BUCKET}.");
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .map_err(|_| NotifierError::js("presence count timed out"))?;
        let Some(message) = next else { break };
        let message = message.map_err(NotifierError::js)?;
        let marker = message.headers.as_ref().is_some_and(|h| {
            h.get("KV-Operation").is_some() || h.get("Nats-Marker-Reason").is_some()
        });
        if !marker
            && let Some(room_type) = message
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .and_then(|key| key.split('.').next())
        {
            *counts.entry(room_type.to_owned()).or_default() += 1;
        }
        if message.info().map_or(true, |i| i.pending == 0) {
            break;
        }
    }
    Ok(counts)
}

/// Sets `talkwai_presence_peers` every [`PEERS_INTERVAL`] until `shutdown` flips.
pub async fn export_peers(
    js: async_nats::jetstream::Context,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NotifierError> {
    let mut ticker = tokio::time::interval(PEERS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = ticker.tick() => {}
        }
        match count_peers(&js).await {
            Ok(counts) => {
                for (room_type, peers) in counts {
                    metrics::gauge!("talkwai_presence_peers", "room_type" => room_type)
                        .set(peers as f64);
                }
            }
            Err(err) => debug!(error = %err, "cannot count presence peers"),
        }
    }
}

impl Notifier {
    /// Ready when the NATS connection is up, JetStream answers, and the presence bucket, the
    /// announcer consumer and the event consumer exist (see [`crate::heal`]).
    pub fn readiness(&self) -> Readiness {
        let upkeep = self.upkeep.clone();
        Readiness::new(move || {
            let upkeep = upkeep.clone();
            async move { upkeep.checks().await }
        })
        .with_nats(self.client.clone())
    }

    /// Live while the event loop and the announcer are connected and reading (see
    /// [`crate::heal`]).
    pub fn liveness(&self) -> Liveness {
        self.upkeep.liveness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_come_from_room_subjects() {
        assert_eq!(
            topic_of("talkwai.room.tenant.0b6c.topic.taskUpdates"),
            "taskUpdates"
        );
        assert_eq!(
            topic_of("talkwai.room.tenant.0b6c.topic.notifications.5f1e"),
            "notifications"
        );
        assert_eq!(
            topic_of("talkwai.room.admin.global.topic.systemAlerts"),
            "systemAlerts"
        );
        assert_eq!(topic_of("nonsense"), "unknown");
    }
}
