//! Presence announcements: every change of the presence bucket (joins, updates, leaves, and
//! the markers the server writes when a TTL runs out) is read through one durable consumer,
//! `talkwai-presence-announcer`, shared by every instance, and announced once on
//! `talkwai.room.<type>.<id>.presence.events` before it is acked. When the consumer is gone
//! (the in-memory bucket was lost with a nats-server restart) the announcer recreates the
//! bucket and the consumer ([`crate::heal`]) and reads on.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self};
use futures::StreamExt;
use talkwai_proto::room::{LeaveReason, PRESENCE_EVENTS, PresenceEvent, PresenceOp};
use talkwai_proto::subject::room_presence;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::NotifierError;
use crate::heal::{Upkeep, VERIFY_EVERY, is_missing, still_there};
use crate::presence::{BUCKET, StoredPeer};

/// Pause between attempts to recreate a lost consumer.
const HEAL_PAUSE: Duration = Duration::from_secs(1);

/// The durable consumer every instance pulls presence changes from.
pub const CONSUMER: &str = "talkwai-presence-announcer";

/// Creates (or updates) the shared consumer on the bucket's stream: new changes only, in
/// order (one in flight across all instances).
pub async fn consumer(
    js: &jetstream::Context,
    ack_wait: Duration,
) -> Result<PullConsumer, NotifierError> {
    let stream = js
        .get_stream(format!("KV_{BUCKET}"))
        .await
        .map_err(NotifierError::js)?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("TalkwAI presence announcements".into()),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_ack_pending: 1,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(NotifierError::js)
}

/// The announcement for one change of the bucket: `(subject, event)`, or `None` for a
/// heartbeat or something that is not a peer.
pub fn announcement(
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    seq: u64,
) -> Option<(String, PresenceEvent)> {
    let key = subject.strip_prefix(&format!("$KV.{BUCKET}."))?;
    let mut tokens = key.splitn(3, '.');
    let (room_type, room_id, session) = (tokens.next()?, tokens.next()?, tokens.next()?);
    let target = room_presence(room_type, room_id, PRESENCE_EVENTS);
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let leave = |reason| PresenceEvent {
        op: PresenceOp::Leave,
        session_id: session.to_owned(),
        peer: None,
        reason: Some(reason),
        seq,
    };
    if header("Nats-Marker-Reason").is_some() {
        return Some((target, leave(LeaveReason::Expired)));
    }
    if header("KV-Operation").is_some() {
        return Some((target, leave(LeaveReason::Left)));
    }
    let stored: StoredPeer = serde_json::from_slice(payload).ok()?;
    let op = match stored.op.as_str() {
        "join" => PresenceOp::Join,
        "update" => PresenceOp::Update,
        _ => return None,
    };
    Some((
        target,
        PresenceEvent {
            op,
            session_id: session.to_owned(),
            peer: Some(stored.peer),
            reason: None,
            seq,
        },
    ))
}

/// Announces until `shutdown` flips; recreates the bucket and `consumer` with `upkeep` when
/// they are found missing.
pub async fn run(
    client: async_nats::Client,
    mut consumer: PullConsumer,
    upkeep: Upkeep,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NotifierError> {
    info!(consumer = CONSUMER, "announcing presence");
    loop {
        match consumer.messages().await {
            Ok(messages) => {
                if announce(&client, &consumer, messages, &upkeep, &mut shutdown).await {
                    return Ok(());
                }
            }
            Err(err) => warn!(error = %err, "cannot read presence changes"),
        }
        // The consumer (or the whole bucket) is gone: recreate, then read again.
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            () = tokio::time::sleep(HEAL_PAUSE) => {}
        }
        match upkeep.ensure_presence().await {
            Ok(recreated) => {
                info!(consumer = CONSUMER, "presence consumer recreated");
                consumer = recreated;
            }
            Err(err) => warn!(error = %err, "cannot recreate the presence consumer yet"),
        }
    }
}

/// Announces from `messages` until `shutdown` flips (`true`) or the consumer is found missing
/// (`false`).
async fn announce(
    client: &async_nats::Client,
    consumer: &PullConsumer,
    mut messages: pull::Stream,
    upkeep: &Upkeep,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    let mut verify = tokio::time::interval(VERIFY_EVERY);
    loop {
        upkeep.presence_reading();
        let message = tokio::select! {
            _ = shutdown.changed() => return true,
            _ = alive.tick() => continue,
            _ = verify.tick() => {
                if still_there(consumer).await {
                    continue;
                }
                warn!(consumer = CONSUMER, "the presence consumer is gone (nats-server restarted?)");
                return false;
            }
            message = messages.next() => message,
        };
        let Some(message) = message else {
            warn!(consumer = CONSUMER, "presence consumer ended");
            return false;
        };
        let message = match message {
            Ok(message) => message,
            Err(err) if is_missing(&err.to_string()) => {
                warn!(error = %err, "the presence consumer is gone (nats-server restarted?)");
                return false;
            }
            Err(err) => {
                warn!(error = %err, "presence consumer error");
                continue;
            }
        };
        let seq = message.info().map_or(0, |i| i.stream_sequence);
        if let Some((subject, event)) = announcement(
            message.subject.as_str(),
            message.headers.as_ref(),
            &message.payload,
            seq,
        ) {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            if let Err(err) = client.publish(subject, body.into()).await {
                warn!(error = %err, seq, "cannot announce, redelivery will retry");
                continue;
            }
        }
        if let Err(err) = message.ack().await {
            warn!(error = %err, seq, "cannot ack a presence change");
        }
    }
}
