//! Reading the log: a subject's history and the last message of many subjects through batched
//! direct gets (no consumer on the hot path), and ordered replay of the whole log.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::Stream;

use crate::EventStore;
use crate::error::StoreError;

/// How many messages one direct-get batch asks for.
const DIRECT_BATCH: usize = 512;
/// How long to wait for each message of a direct-get reply.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A message as stored in the stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Stream sequence.
    pub seq: u64,
    /// Subject.
    pub subject: String,
    /// Headers as published.
    pub headers: HeaderMap,
    /// Body.
    pub payload: Bytes,
    /// When the server stored it, epoch milliseconds (0 if unknown).
    pub stored_at_ms: i64,
}

impl StoredMessage {
    /// The stored form of a message delivered by a JetStream consumer (its stream sequence and
    /// stored time come from the ack subject); `None` when it carries no JetStream metadata.
    pub fn from_jetstream(message: &async_nats::jetstream::Message) -> Option<Self> {
        let info = message.info().ok()?;
        Some(Self {
            seq: info.stream_sequence,
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
            stored_at_ms: i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0),
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

/// Parses `Nats-Time-Stamp` (RFC 3339) into epoch milliseconds; 0 when unreadable.
fn parse_rfc3339_ms(value: &str) -> i64 {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .unwrap_or(0)
}

impl EventStore {
    /// Sends one direct-get request whose reply is a batch, and collects the batch.
    async fn direct_batch(
        &self,
        request: serde_json::Value,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut replies = self.mux.register(DIRECT_BATCH + 2).await?;
        let payload =
            serde_json::to_vec(&request).map_err(|e| StoreError::Protocol(e.to_string()))?;
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.stream),
                replies.subject.clone(),
                payload.into(),
            )
            .await
            .map_err(StoreError::nats)?;
        let mut out = Vec::new();
        loop {
            let message = tokio::time::timeout(DIRECT_TIMEOUT, replies.rx.recv())
                .await
                .map_err(|_| StoreError::Nats("direct get timed out".into()))?
                .ok_or_else(|| StoreError::Nats("direct get reply inbox closed".into()))?;
            if let Some(status) = message.status {
                match status.as_u16() {
                    // End of batch, or nothing matched.
                    204 | 404 => break,
                    code => {
                        return Err(StoreError::Nats(format!(
                            "direct get failed with status {code}: {}",
                            message.description.unwrap_or_default()
                        )));
                    }
                }
            }
            let headers = message.headers.unwrap_or_default();
            let seq = headers
                .get("Nats-Sequence")
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .ok_or_else(|| {
                    StoreError::Protocol("direct get reply without Nats-Sequence".into())
                })?;
            let subject = headers
                .get("Nats-Subject")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let stored_at_ms = headers
                .get("Nats-Time-Stamp")
                .map_or(0, |v| parse_rfc3339_ms(v.as_str()));
            out.push(StoredMessage {
                seq,
                subject,
                headers,
                payload: message.payload,
                stored_at_ms,
            });
        }
        Ok(out)
    }

    /// Every message of `subject` with a sequence greater than `after`, in order.
    pub async fn read_subject(
        &self,
        subject: &str,
        after: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut all = Vec::new();
        let mut from = after + 1;
        loop {
            let batch = self
                .direct_batch(serde_json::json!({
                    "seq": from,
                    "next_by_subj": subject,
                    "batch": DIRECT_BATCH,
                }))
                .await?;
            let full = batch.len() == DIRECT_BATCH;
            if let Some(last) = batch.last() {
                from = last.seq + 1;
            }
            all.extend(batch);
            if !full {
                return Ok(all);
            }
        }
    }

    /// The last message of each subject that has one, in one round trip per 256 subjects.
    pub async fn last_of_subjects(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, StoredMessage>, StoreError> {
        let mut out = HashMap::with_capacity(subjects.len());
        for chunk in subjects.chunks(256) {
            if let [single] = chunk {
                // A single subject: the cheaper last-by-subject form.
                if let Some(message) = self.last_of_subject(single).await? {
                    out.insert(single.clone(), message);
                }
                continue;
            }
            let batch = self
                .direct_batch(serde_json::json!({ "multi_last": chunk, "batch": chunk.len() }))
                .await?;
            for message in batch {
                out.insert(message.subject.clone(), message);
            }
        }
        Ok(out)
    }

    /// The last message of one subject, if any.
    pub async fn last_of_subject(
        &self,
        subject: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let request = format!("$JS.API.DIRECT.GET.{}.{}", self.stream, subject);
        let message =
            tokio::time::timeout(DIRECT_TIMEOUT, self.client.request(request, Bytes::new()))
                .await
                .map_err(|_| StoreError::Nats("direct get timed out".into()))?
                .map_err(StoreError::nats)?;
        if let Some(status) = message.status {
            return match status.as_u16() {
                404 => Ok(None),
                code => Err(StoreError::Nats(format!(
                    "direct get failed with status {code}: {}",
                    message.description.unwrap_or_default()
                ))),
            };
        }
        let headers = message.headers.unwrap_or_default();
        let seq = headers
            .get("Nats-Sequence")
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or_else(|| StoreError::Protocol("direct get reply without Nats-Sequence".into()))?;
        let stored_at_ms = headers
            .get("Nats-Time-Stamp")
            .map_or(0, |v| parse_rfc3339_ms(v.as_str()));
        Ok(Some(StoredMessage {
            seq,
            subject: subject.to_owned(),
            headers,
            payload: message.payload,
            stored_at_ms,
        }))
    }

    /// Replays the log in order from `from_seq` (1 for the beginning), optionally filtered by
    /// subjects (wildcards allowed), through an ordered consumer. The stream does not end: it
    /// waits for new events.
    pub async fn replay(&self, from_seq: u64, filters: Vec<String>) -> Result<Replay, StoreError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(StoreError::nats)?;
        let config = pull::OrderedConfig {
            filter_subjects: filters,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from_seq.max(1),
            },
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(StoreError::nats)?;
        let messages = consumer.messages().await.map_err(StoreError::nats)?;
        Ok(Replay {
            inner: Box::pin(messages),
        })
    }
}

type OrderedMessages =
    Pin<Box<dyn Stream<Item = Result<async_nats::jetstream::Message, pull::OrderedError>> + Send>>;

/// The log in order, as [`StoredMessage`]s.
pub struct Replay {
    inner: OrderedMessages,
}

impl Stream for Replay {
    type Item = Result<StoredMessage, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => {
                Poll::Ready(Some(StoredMessage::from_jetstream(&message).ok_or_else(
                    || StoreError::Protocol("message without jetstream metadata".into()),
                )))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(StoreError::nats(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_ms;

    #[test]
    fn parses_nats_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T11:53:24.123456789Z"),
            1_795_607_604_123
        );
        assert_eq!(parse_rfc3339_ms("garbage"), 0);
    }
}
