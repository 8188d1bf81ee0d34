//! Reading the log: a subject's history and the last message of many subjects through batched
//! direct gets (no consumer on the hot path), and ordered replay of the whole log.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};

use crate::EventStore;
use crate::error::StoreError;

/// How many messages one direct-get batch asks for.
const DIRECT_BATCH: usize = 512;
/// Last-by-subject direct gets one `EventStore::last_of_subjects` call keeps in flight.
const HEADS_IN_FLIGHT: usize = 256;
/// How long to wait for each message of a read's reply. A read takes milliseconds; one that
/// takes seconds went to a node that died (an R3 leader) or a connection that dropped, and the
/// command reading it is better failed as retryable at once than held.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `read`, failed as soon as the connection is lost or [`DIRECT_TIMEOUT`] passes: a request in
/// flight when the connection drops is never answered (the reply inbox is gone with the
/// connection), so waiting out its timeout would only hold the caller.
async fn bounded<T>(
    client: &async_nats::Client,
    read: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::select! {
        outcome = tokio::time::timeout(DIRECT_TIMEOUT, read) => {
            outcome.map_err(|_| StoreError::Nats("read timed out".into()))?
        }
        () = crate::connection_lost(client) => {
            Err(StoreError::Nats("the connection to NATS was lost during a read".into()))
        }
    }
}

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

    /// The size of the header block the server stores with the message (`NATS/1.0`, each
    /// `name: value` line, the blank line), without the headers a read adds
    /// ([`READ_SIDE_HEADERS`]).
    pub fn stored_header_bytes(&self) -> usize {
        let lines: usize = self
            .headers
            .iter()
            .filter(|(name, _)| !READ_SIDE_HEADERS.contains(&name.as_ref()))
            .map(|(name, values)| {
                let name: &str = name.as_ref();
                values
                    .iter()
                    .map(|v| name.len() + 2 + v.as_str().len() + 2)
                    .sum::<usize>()
            })
            .sum();
        "NATS/1.0\r\n\r\n".len() + lines
    }
}

/// Headers a direct get or a consumer adds to a message on reading it; not stored with it.
pub const READ_SIDE_HEADERS: [&str; 6] = [
    "Nats-Stream",
    "Nats-Sequence",
    "Nats-Time-Stamp",
    "Nats-Subject",
    "Nats-Num-Pending",
    "Nats-Last-Sequence",
];

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
            let message = bounded(&self.client, async {
                replies
                    .rx
                    .recv()
                    .await
                    .ok_or_else(|| StoreError::Nats("direct get reply inbox closed".into()))
            })
            .await?;
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

    /// The last message of each subject that has one: one last-by-subject direct get per
    /// distinct subject, all in flight at once (at most `HEADS_IN_FLIGHT`).
    ///
    /// Not one `multi_last` batch request: nats-server answers that by walking the stream's
    /// message blocks back from the newest one holding a named subject, making sure each
    /// block's per-subject state is loaded, under the stream's read lock. Facts (a tenant, a
    /// member) are written long before the commands that name them, so once the log is past
    /// its first block a `multi_last` naming them cost ≈ 2.3 ms on an idle server whatever the
    /// log's size, against ≈ 0.2 ms for last-by-subject gets, which find their block through
    /// the stream's subject index (`examples/head_reads.rs`, figures in `BENCHMARKS.md`).
    pub async fn last_of_subjects(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, StoredMessage>, StoreError> {
        let mut distinct: Vec<&String> = subjects.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let gets: Vec<_> = distinct.iter().map(|s| self.last_of_subject(s)).collect();
        let found: Vec<Option<StoredMessage>> = futures::stream::iter(gets)
            .buffered(HEADS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .flatten()
            .map(|m| (m.subject.clone(), m))
            .collect())
    }

    /// The last message of one subject, if any, as of this call.
    ///
    /// On a single node this is a direct get. A replicated stream answers direct gets from any
    /// replica, and a follower may not have applied the newest messages yet, so there the
    /// stream leader answers (`$JS.API.STREAM.MSG.GET`): a fact read after a write was
    /// acknowledged must see it.
    pub async fn last_of_subject(
        &self,
        subject: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        if self.replicas > 1 {
            return self.read_at_leader(subject, None).await;
        }
        let request = format!("$JS.API.DIRECT.GET.{}.{}", self.stream, subject);
        let message = bounded(&self.client, async {
            self.client
                .request(request, Bytes::new())
                .await
                .map_err(StoreError::nats)
        })
        .await?;
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

    /// Every message of `subject` after `after`, up to at least `through` (a head just read):
    /// [`EventStore::read_subject`], then, if a replica that was behind answered, the rest from
    /// the stream leader.
    pub async fn read_subject_through(
        &self,
        subject: &str,
        after: u64,
        through: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut messages = self.read_subject(subject, after).await?;
        let mut last = messages.last().map_or(after, |m| m.seq);
        while last < through {
            let Some(next) = self.read_at_leader(subject, Some(last + 1)).await? else {
                return Err(StoreError::Protocol(format!(
                    "{subject} ends at {last}, but its head was {through}"
                )));
            };
            last = next.seq;
            messages.push(next);
        }
        Ok(messages)
    }

    /// From the stream leader: the last message of `subject` (`from: None`), or its first
    /// message at or after sequence `from`.
    async fn read_at_leader(
        &self,
        subject: &str,
        from: Option<u64>,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(StoreError::nats)?;
        let request = match from {
            None => stream.raw_message_builder().last_by_subject(subject),
            Some(seq) => stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject),
        };
        let sent = bounded(&self.client, async { Ok(request.send().await) }).await?;
        match sent {
            Ok(message) => Ok(Some(StoredMessage {
                seq: message.sequence,
                subject: message.subject.to_string(),
                headers: message.headers,
                payload: message.payload,
                stored_at_ms: i64::try_from(message.time.unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(0),
            })),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(StoreError::nats(err)),
        }
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
