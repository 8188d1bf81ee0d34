//! The fetcher: gathers the consumer's messages into batches and decodes them ahead of the
//! transaction applying the previous one.

use std::time::Duration;

use futures::StreamExt;
use talkwai_eventstore::StoredMessage;

use crate::{ProjectorError, Slot, apply};

pub(crate) fn seq_of(message: &async_nats::jetstream::Message) -> Option<u64> {
    message.info().ok().map(|i| i.stream_sequence)
}

/// A gathered batch: the consumer's messages (to ack), the new ones as stored messages, and
/// their decoded events.
pub(crate) struct Fetched {
    pub(crate) batch: Vec<async_nats::jetstream::Message>,
    pub(crate) stored: Vec<StoredMessage>,
    pub(crate) decoded: Vec<Result<apply::Decoded, String>>,
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Gathers batches from the consumer (up to `size` messages, waiting at most `wait` after the
/// first), drops redeliveries at or below what was already handed on (`from` at first), fails
/// on a hole in the sequence, decodes each batch on a blocking thread and hands it on, in
/// order, until the consumer fails or nobody listens.
pub(crate) async fn fetch_batches<S>(
    mut messages: S,
    size: usize,
    wait: Duration,
    slot: Slot,
    from: u64,
    keys: Option<talkwai_keys::KeyStore>,
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
        let ring = match apply::keyring(keys.as_ref(), &stored).await {
            Ok(ring) => ring,
            Err(err) => {
                let _ = feed.send(Err(err)).await;
                return;
            }
        };
        let decoding = tokio::task::spawn_blocking(move || {
            let decoded = stored
                .iter()
                .map(|m| apply::decode_for(m, Some(slot), &ring))
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
