//! Routing: a command reaches its partition's owner with at most one internal hop.
//!
//! Clients keep sending to `talkwai.cmd.<scope>.<aggregate>.<action>` (queue group
//! `talkwai-command`, any instance). The instance that receives a command decides it when it
//! holds the command's partition; otherwise it sends it on to the holder named by the lease
//! bucket (`talkwai.fwd.cmd.<instance>`, the original subject in
//! [`FORWARDED_SUBJECT`]) and relays the answer. A forwarded command is never sent on again:
//! its receiver decides it when it holds the partition, or answers at once that it does not
//! ([`NOT_OWNER`]; nothing was written), and the forwarding instance looks again. While a
//! partition has no holder (its owner died and its lease has not expired yet), commands wait at
//! the instance that received them for the next owner, at most
//! [`crate::ownership::settle_wait`], then get `unavailable` (retryable).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::ServiceError;
use crate::handler::{Handler, Incoming};
use crate::ownership::Owners;

/// Subject prefix of commands sent on to an instance: `talkwai.fwd.cmd.<instance>`.
pub const FORWARD_PREFIX: &str = "talkwai.fwd.cmd";
/// Header naming a forwarded command's original subject.
pub const FORWARDED_SUBJECT: &str = "Talkwai-Forwarded-Subject";
/// Header on the answer to a forwarded command whose receiver does not hold its partition
/// (any more, or yet): the forwarding instance looks for the owner again.
pub const NOT_OWNER: &str = "Talkwai-Not-Owner";
/// How long a forwarded command may take at its owner before the owners are looked at again
/// (a paused owner keeps its connection, so its silence is the only sign). Sending it again is
/// safe: the command id makes a second delivery answer the first one's outcome.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between looks at a partition that is changing owner.
const SETTLE_PAUSE: Duration = Duration::from_millis(50);

/// The subject an instance receives forwarded commands on.
pub fn forward_subject(instance: &str) -> String {
    format!("{FORWARD_PREFIX}.{instance}")
}

/// Sends each command to where it is decided.
pub struct Router {
    client: async_nats::Client,
    handler: Arc<Handler>,
    owners: Arc<Owners>,
    /// This instance's id in the lease bucket.
    me: String,
    /// Longest wait for a partition to get a holder.
    settle: Duration,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("me", &self.me).finish()
    }
}

impl Router {
    /// A router for `handler`, forwarding by `owners`.
    pub fn new(
        client: async_nats::Client,
        handler: Arc<Handler>,
        owners: Arc<Owners>,
        me: String,
        settle: Duration,
    ) -> Self {
        Self {
            client,
            handler,
            owners,
            me,
            settle,
        }
    }

    /// Answers one command: here when this instance holds its partition (or owns no
    /// partitions at all), else through its owner.
    pub async fn route(
        &self,
        subject: &str,
        message: &Message,
        forwarded: bool,
    ) -> (Bytes, HeaderMap) {
        let incoming = Incoming {
            subject,
            headers: message.headers.as_ref(),
            payload: &message.payload,
        };
        let Some(ownership) = self.handler.ownership() else {
            return self.handler.handle(incoming).await;
        };
        let partition = ownership.partition_of(subject);
        let started = std::time::Instant::now();
        let deadline = Instant::now() + self.settle;
        loop {
            if ownership.tenure(partition).is_some() {
                let (body, headers) = self.handler.handle(incoming).await;
                if forwarded || headers.get(NOT_OWNER).is_none() || Instant::now() >= deadline {
                    return (body, headers);
                }
                // The partition moved (or this instance was fenced) while the command waited
                // here, and nothing of it was written: look for its owner again, after the
                // same pause as any other wait for a partition to settle.
                tokio::time::sleep(SETTLE_PAUSE).await;
                continue;
            }
            if forwarded {
                // The forwarding instance waits and looks for the owner, not this one: a
                // paused owner that woke after losing its lease answers at once.
                let (body, mut headers) =
                    self.handler
                        .reply_error(subject, &ServiceError::Moved { partition }, started);
                headers.insert(NOT_OWNER, "1");
                return (body, headers);
            }
            if let Some(owner) = self.owners.of(partition)
                && owner != self.me
            {
                match self.forward(&owner, subject, message).await {
                    Ok((body, headers)) if headers.get(NOT_OWNER).is_none() => {
                        crate::ops::forwarded(true);
                        return (body, headers);
                    }
                    Ok(_) => {
                        debug!(%owner, partition, "the owner named by the leases does not hold the partition; looking again")
                    }
                    Err(err) => {
                        debug!(%owner, partition, error = %err, "forwarding failed; waiting for the partition to settle")
                    }
                }
            }
            if Instant::now() >= deadline {
                crate::ops::forwarded(false);
                return self.handler.reply_error(
                    subject,
                    &ServiceError::Moved { partition },
                    started,
                );
            }
            tokio::time::sleep(SETTLE_PAUSE).await;
        }
    }

    /// Sends the command to `owner` and returns its answer.
    async fn forward(
        &self,
        owner: &str,
        subject: &str,
        message: &Message,
    ) -> Result<(Bytes, HeaderMap), async_nats::RequestError> {
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert(FORWARDED_SUBJECT, subject);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(message.payload.clone())
            .timeout(Some(FORWARD_TIMEOUT));
        let reply = self
            .client
            .send_request(forward_subject(owner), request)
            .await?;
        Ok((reply.payload, reply.headers.unwrap_or_default()))
    }
}

impl talkwai_service::Handler for Router {
    async fn handle(&self, message: &Message) -> (Bytes, HeaderMap) {
        let _in_flight = crate::ops::InFlight::enter();
        self.route(message.subject.as_str(), message, false).await
    }
}

/// Serves the commands other instances forward here until `stop` resolves, at most
/// `max_in_flight` at once; then unsubscribes.
pub async fn serve_forwarded(
    router: Arc<Router>,
    mut requests: async_nats::Subscriber,
    max_in_flight: usize,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            _ = &mut stop => break,
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            let _in_flight = crate::ops::InFlight::enter();
            let Some(reply_to) = message.reply.clone() else {
                return;
            };
            let subject = message
                .headers
                .as_ref()
                .and_then(|h| h.get(FORWARDED_SUBJECT))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let (body, headers) = router.route(&subject, &message, true).await;
            if let Err(err) = router
                .client
                .publish_with_headers(reply_to, headers, body)
                .await
            {
                warn!(error = %err, "cannot answer a forwarded command");
            }
            drop(permit);
        });
    }
    if let Err(err) = requests.unsubscribe().await {
        warn!(error = %err, "cannot unsubscribe the forwarded commands");
    }
}
