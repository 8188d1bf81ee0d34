//! Direct-get replies on one long-lived wildcard inbox.
//!
//! A batched direct get answers with many messages on the request's reply subject, which
//! `Client::request` cannot collect. Instead of subscribing and unsubscribing a fresh inbox per
//! read (a SUB and an UNSUB on the server each time), the store subscribes once to
//! `<inbox>.talkwai-dg.*` (lazily, on the first read) and a dispatcher task routes every reply
//! by its last token to the waiting request's channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::Message;
use futures::StreamExt;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tracing::debug;

use crate::error::StoreError;

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

/// The shared reply inbox of one [`crate::EventStore`] (and its clones).
pub(crate) struct ReplyMux {
    client: async_nats::Client,
    /// `<inbox>.talkwai-dg`, set on the first request.
    prefix: OnceCell<String>,
    pending: Pending,
    next: AtomicU64,
    /// Dropping it (with the last store clone) stops the dispatcher and unsubscribes.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for ReplyMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyMux")
            .field("prefix", &self.prefix.get())
            .finish_non_exhaustive()
    }
}

/// One request's replies; unregisters itself when dropped (done, failed or timed out).
pub(crate) struct Replies {
    pub(crate) subject: String,
    pub(crate) rx: mpsc::Receiver<Message>,
    id: u64,
    pending: Pending,
}

impl Drop for Replies {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&self.id);
        }
    }
}

impl ReplyMux {
    pub(crate) fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            prefix: OnceCell::new(),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(1),
            stop: Mutex::new(None),
        }
    }

    async fn prefix(&self) -> Result<&str, StoreError> {
        self.prefix
            .get_or_try_init(|| async {
                let prefix = format!("{}.talkwai-dg", self.client.new_inbox());
                let subscriber = self
                    .client
                    .subscribe(format!("{prefix}.*"))
                    .await
                    .map_err(StoreError::nats)?;
                let (stop, stopped) = oneshot::channel();
                if let Ok(mut slot) = self.stop.lock() {
                    *slot = Some(stop);
                }
                tokio::spawn(dispatch(subscriber, Arc::clone(&self.pending), stopped));
                Ok::<_, StoreError>(prefix)
            })
            .await
            .map(String::as_str)
    }

    /// Registers a request: its reply subject and the channel its replies arrive on.
    /// `capacity` bounds the replies buffered for it.
    pub(crate) async fn register(&self, capacity: usize) -> Result<Replies, StoreError> {
        let prefix = self.prefix().await?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.pending
            .lock()
            .map_err(|_| StoreError::Nats("reply mux poisoned".into()))?
            .insert(id, tx);
        Ok(Replies {
            subject: format!("{prefix}.{id}"),
            rx,
            id,
            pending: Arc::clone(&self.pending),
        })
    }
}

async fn dispatch(
    mut subscriber: async_nats::Subscriber,
    pending: Pending,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let message = tokio::select! {
            _ = &mut stopped => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Some(id) = message
            .subject
            .rsplit_once('.')
            .and_then(|(_, id)| id.parse::<u64>().ok())
        else {
            continue;
        };
        let sender = pending.lock().ok().and_then(|p| p.get(&id).cloned());
        let Some(sender) = sender else {
            // The request gave up (timed out): drop its late replies.
            continue;
        };
        if let Err(mpsc::error::TrySendError::Full(message)) = sender.try_send(message) {
            // The reader is behind its bound: wait for it rather than lose a reply.
            if sender.send(message).await.is_err() {
                debug!(id, "direct get reader went away");
            }
        }
    }
    // Readers still waiting see their channel close.
    if let Ok(mut pending) = pending.lock() {
        pending.clear();
    }
    let _ = subscriber.unsubscribe().await;
}
