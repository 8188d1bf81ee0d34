//! Presence: the `talkwai-presence` service (join, update, leave, heartbeat, get) over the
//! JetStream KV bucket `TALKWAI_PRESENCE`, one key `<roomType>.<roomId>.<sessionId>` per peer
//! with a per-key TTL that every write refreshes.
//!
//! The bucket is in memory: a nats-server restart deletes it (and every peer). A request that
//! finds it missing recreates it (with the announcer's consumer) and is retried once, so the
//! first `join` after a restart succeeds; a `heartbeat` or `update` of a session lost with it
//! answers `not_found` (join again), as after an expiry.
//!
//! A tenant room closes for good when its tenant is erased: the worker drops its sessions
//! ([`close_room`]) and a join is refused with `tenant_erased` — known from the tenant's last
//! event in the log (one last-by-subject read per join to a tenant room, remembered once
//! erased), so no instance needs to have seen the event.
//!
//! The member or admin behind the token must still be one ([`crate::signin`]): a `join`,
//! `update`, `heartbeat` or `get` of a deleted, erased or inactive one is `forbidden`, checked
//! against the log with the request's own reads (one head, in flight with the tenant's head or
//! the session's entry), and a refused `join`, `update` or `heartbeat` drops the caller's session
//! (announced as a leave). A `leave` is always let through.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use talkwai_auth::{Claims, Principal, PrincipalKind, TokenVerifier};
use talkwai_domain::ErrorCode;
use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, EntityKind};
use talkwai_eventstore::EventStore;
use talkwai_proto::ErrorBody;
use talkwai_proto::headers::{AUTHORIZATION, EVENT_TYPE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use talkwai_proto::room::{
    ADMIN_ROOM, ADMIN_ROOM_ID, Peer, PresenceReply, PresenceRequest, TENANT_ROOM,
};
use uuid::Uuid;

use crate::NotifierError;
use crate::events::now_ms;
use crate::heal::{Upkeep, is_missing};
use crate::signin::{Check, SignIns};

/// The presence bucket.
pub const BUCKET: &str = "TALKWAI_PRESENCE";
/// The services API name (and queue group) of the presence endpoints.
pub const SERVICE_NAME: &str = "talkwai-presence";
/// Largest presence data, bytes of JSON.
pub const MAX_DATA_BYTES: usize = 4096;
/// Most keys in presence data (top level).
pub const MAX_DATA_KEYS: usize = 32;
/// Deepest nesting of presence data (the object itself is depth 1).
pub const MAX_DATA_DEPTH: usize = 4;
/// How long leave and expiry markers stay in the bucket (for the announcer to see them).
pub const MARKER_TTL: Duration = Duration::from_secs(600);
/// The event type that closes a tenant's room.
const TENANT_ERASED: &str = "tenant.erased";
/// The presence operations with an endpoint.
pub const OPS: [&str; 5] = ["join", "update", "leave", "heartbeat", "get"];

/// What a KV value holds: the peer and the operation that wrote it (so announcements can tell
/// a join from an update from a heartbeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPeer {
    /// `join`, `update` or `heartbeat`.
    pub op: String,
    /// The peer.
    pub peer: Peer,
}

/// A room named by a presence subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// `tenant` or `admin`.
    pub room_type: String,
    /// The tenant id, or `global`.
    pub room_id: String,
}

impl Room {
    /// Parses `talkwai.room.<type>.<id>.presence.<op>` into the room and the op; only tenant
    /// rooms (UUID id) and the admin room `admin.global` exist.
    pub fn parse(subject: &str) -> Option<(Self, String)> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let ["talkwai", "room", room_type, room_id, "presence", op] = tokens.as_slice() else {
            return None;
        };
        let valid = match *room_type {
            TENANT_ROOM => room_id.parse::<Uuid>().is_ok(),
            ADMIN_ROOM => *room_id == ADMIN_ROOM_ID,
            _ => false,
        };
        valid.then(|| {
            (
                Self {
                    room_type: (*room_type).to_owned(),
                    room_id: (*room_id).to_owned(),
                },
                (*op).to_owned(),
            )
        })
    }

    /// The key of a session in this room.
    pub fn key(&self, session: &str) -> String {
        format!("{}.{}.{session}", self.room_type, self.room_id)
    }

    /// Whether a verified caller may be in this room: admins anywhere, members in their own
    /// tenant's room only.
    fn admits(&self, kind: PrincipalKind, tenant: Option<Uuid>) -> bool {
        match kind {
            PrincipalKind::Admin => true,
            PrincipalKind::Member => {
                self.room_type == TENANT_ROOM
                    && tenant.is_some_and(|t| t.to_string() == self.room_id)
            }
        }
    }
}

/// Checks presence data: ≤ [`MAX_DATA_BYTES`] of JSON, ≤ [`MAX_DATA_KEYS`] keys, depth ≤
/// [`MAX_DATA_DEPTH`].
pub fn check_data(data: &Map<String, Value>) -> Result<(), ErrorBody> {
    let size = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
    if size > MAX_DATA_BYTES {
        return Err(ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!("presence data is {size} bytes, at most {MAX_DATA_BYTES}"),
        )
        .with_field("data"));
    }
    if data.len() > MAX_DATA_KEYS {
        return Err(invalid(format!(
            "presence data has more than {MAX_DATA_KEYS} keys"
        )));
    }
    fn depth(value: &Value) -> usize {
        match value {
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let d = 1 + data.values().map(depth).max().unwrap_or(0);
    if d > MAX_DATA_DEPTH {
        return Err(invalid(format!(
            "presence data is nested {d} levels deep, at most {MAX_DATA_DEPTH}"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::ValidationFailed, message).with_field("data")
}

fn valid_session(session: &str) -> bool {
    (1..=64).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Creates (or updates) the presence bucket: per-key TTL and markers for deletes and expiries.
pub async fn bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, NotifierError> {
    js.create_or_update_key_value(kv::Config {
        bucket: BUCKET.into(),
        description: "TalkwAI presence: one key per peer, per-key TTL".into(),
        history: 1,
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas.max(1),
        limit_markers: Some(MARKER_TTL),
        ..Default::default()
    })
    .await
    .map_err(NotifierError::js)
}

/// Writes `value` at `key` with a TTL, expecting `revision` as the key's last revision (0: no
/// message). Returns the new revision.
pub async fn put_with_ttl(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    value: Bytes,
    ttl: Duration,
    revision: u64,
) -> Result<u64, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        revision.to_string().as_str(),
    );
    headers.insert("Nats-TTL", ttl.as_secs().max(1).to_string().as_str());
    let ack = js
        .publish_with_headers(format!("$KV.{bucket}.{key}"), headers, value)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(ack.sequence)
}

/// Drops every presence session of `tenant`'s room (one purge of the bucket's stream by
/// subject filter; no leave is announced: the room's `roomClosed` message says it all).
pub async fn close_room(js: &jetstream::Context, tenant: TenantId) -> Result<(), NotifierError> {
    let stream = js
        .get_stream(format!("KV_{BUCKET}"))
        .await
        .map_err(NotifierError::js)?;
    stream
        .purge()
        .filter(format!("$KV.{BUCKET}.{TENANT_ROOM}.{tenant}.>"))
        .await
        .map_err(NotifierError::js)?;
    Ok(())
}

/// The presence endpoints' logic.
#[derive(Debug)]
pub struct PresenceService {
    js: jetstream::Context,
    client: async_nats::Client,
    kv: kv::Store,
    verifier: TokenVerifier,
    ttl: Duration,
    upkeep: Option<Upkeep>,
    /// The log, to refuse joins to the room of an erased tenant (`None`: not checked).
    log: Option<EventStore>,
    /// Tenants known to be erased (for good: never forgotten, bounded by the tenants erased).
    erased: std::sync::Mutex<HashSet<TenantId>>,
    /// Refuses members and admins the log says are gone (`None`: not checked).
    sign_ins: Option<SignIns>,
}

impl PresenceService {
    /// Presence over `kv` with entries living `ttl` without a heartbeat.
    pub fn new(
        client: async_nats::Client,
        kv: kv::Store,
        verifier: TokenVerifier,
        ttl: Duration,
    ) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            kv,
            verifier,
            ttl,
            upkeep: None,
            log: None,
            erased: std::sync::Mutex::default(),
            sign_ins: None,
        }
    }

    /// Refuses members and admins that `log` says are deleted, erased or inactive.
    pub fn signing_in(mut self, log: EventStore) -> Self {
        self.sign_ins = Some(SignIns::new(log));
        self
    }

    /// Refuses joins to the rooms of erased tenants, read from `log`.
    pub fn closing_erased_rooms(mut self, log: EventStore) -> Self {
        self.log = Some(log);
        self
    }

    /// Admits `claims` to `op` in `room`, or refuses it: `tenant_erased` when `room` is the room
    /// of an erased tenant (known here, or for a `join` read from the tenant's last event), and
    /// `forbidden` when the member or admin behind the token is gone ([`SignIns`], for every op
    /// but `leave`). The heads both need are read together, in one round of direct gets.
    async fn admit(&self, room: &Room, claims: &Claims, op: &str) -> Result<(), ErrorBody> {
        let tenant = (room.room_type == TENANT_ROOM)
            .then(|| room.room_id.parse::<Uuid>().ok())
            .flatten()
            .map(TenantId);
        let closed = |tenant: TenantId| {
            ErrorBody::new(
                ErrorCode::TenantErased,
                format!("tenant {tenant} was erased: its room is closed"),
            )
        };
        if let Some(tenant) = tenant
            && self.erased.lock().is_ok_and(|e| e.contains(&tenant))
        {
            return Err(closed(tenant));
        }
        let check = self
            .sign_ins
            .as_ref()
            .filter(|_| op != "leave")
            .map(|s| s.plan(claims));
        let tenant_subject = tenant
            .filter(|_| op == "join" && self.log.is_some())
            .map(|t| {
                talkwai_proto::subject::event(&AggregateRef {
                    kind: EntityKind::Tenant,
                    tenant: Some(t),
                    id: t.0,
                })
            });
        let mut subjects = check.as_ref().map(Check::subjects).unwrap_or_default();
        subjects.extend(tenant_subject.clone());
        let Some(log) = self
            .log
            .as_ref()
            .or(self.sign_ins.as_ref().map(SignIns::log))
            .filter(|_| !subjects.is_empty())
        else {
            return Ok(());
        };
        let heads = log
            .last_of_subjects(&subjects)
            .await
            .map_err(|e| ErrorBody::new(ErrorCode::Unavailable, e.to_string()))?;
        if let (Some(tenant), Some(subject)) = (tenant, &tenant_subject)
            && heads
                .get(subject)
                .is_some_and(|m| m.header(EVENT_TYPE) == Some(TENANT_ERASED))
        {
            if let Ok(mut erased) = self.erased.lock() {
                erased.insert(tenant);
            }
            return Err(closed(tenant));
        }
        match (check, &self.sign_ins) {
            (Some(check), Some(sign_ins)) => sign_ins.decide(check, &heads).await,
            _ => Ok(()),
        }
    }

    /// Heals with `upkeep`: a request that finds the bucket missing recreates it and is
    /// retried once.
    pub fn healing(mut self, upkeep: Upkeep) -> Self {
        self.upkeep = Some(upkeep);
        self
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> PresenceReply {
        let mut outcome = self.try_handle(subject, headers, payload).await;
        if let (Err(error), Some(upkeep)) = (&outcome, &self.upkeep)
            && error.code == ErrorCode::Unavailable
            && is_missing(&error.message)
        {
            tracing::warn!(error = %error.message, "the presence bucket is gone (nats-server restarted?): recreating it");
            match upkeep.ensure_presence().await {
                Ok(_) => outcome = self.try_handle(subject, headers, payload).await,
                Err(err) => tracing::warn!(error = %err, "cannot recreate the presence bucket"),
            }
        }
        match outcome {
            Ok(reply) => reply,
            Err(error) => PresenceReply {
                ok: false,
                peer: None,
                peers: None,
                ttl_secs: None,
                error: Some(error),
            },
        }
    }

    async fn try_handle(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<PresenceReply, ErrorBody> {
        let (room, op) = Room::parse(subject)
            .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, "no such room"))?;
        let principal = self
            .verifier
            .verify_header(
                headers
                    .and_then(|h| h.get(AUTHORIZATION))
                    .map(|v| v.as_str()),
            )
            .map_err(|e| ErrorBody::new(ErrorCode::Unauthenticated, e.to_string()))?;
        let Principal::User(claims) = principal else {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "presence needs a member or admin token",
            ));
        };
        if !room.admits(claims.kind, claims.tenant.map(|t| t.0)) {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "not a member of this room",
            ));
        }
        let request: PresenceRequest = if payload.is_empty() {
            PresenceRequest::default()
        } else {
            serde_json::from_slice(payload)
                .map_err(|e| ErrorBody::new(ErrorCode::ValidationFailed, e.to_string()))?
        };
        if op == "get" {
            let (admitted, peers) =
                tokio::join!(self.admit(&room, &claims, &op), self.peers(&room));
            admitted?;
            return Ok(self.reply(None, Some(peers?)));
        }
        let session = request
            .session_id
            .as_deref()
            .filter(|s| valid_session(s))
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::ValidationFailed,
                    "sessionId must be 1 to 64 of [A-Za-z0-9_-]",
                )
                .with_field("sessionId")
            })?;
        let key = room.key(session);
        let user = claims.sub.0;
        // The admission's reads and the session's are independent: one round trip for both.
        let (admitted, current) = tokio::join!(self.admit(&room, &claims, &op), self.current(&key));
        let current = current?;
        if let Some((_, stored)) = &current
            && stored.peer.user_id != user
        {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "this session belongs to another user",
            ));
        }
        if let Err(refusal) = admitted {
            if refusal.code == ErrorCode::Forbidden
                && let Some((revision, _)) = &current
            {
                self.drop_session(&key, *revision).await;
            }
            return Err(refusal);
        }
        let now = now_ms();
        match op.as_str() {
            "join" => {
                let data = request.data.unwrap_or_default();
                check_data(&data)?;
                let peer = Peer {
                    session_id: session.to_owned(),
                    user_id: user,
                    kind: match claims.kind {
                        PrincipalKind::Member => "member".into(),
                        PrincipalKind::Admin => "admin".into(),
                    },
                    data,
                    joined_at: current.as_ref().map_or(now, |(_, s)| s.peer.joined_at),
                    updated_at: now,
                };
                let revision = self.last_revision(&key).await?;
                self.write(&key, "join", &peer, revision).await?;
                Ok(self.reply(Some(peer), Some(self.peers(&room).await?)))
            }
            "update" | "heartbeat" => {
                let (revision, stored) = current.ok_or_else(not_joined)?;
                let mut peer = stored.peer;
                if op == "update" {
                    for (k, v) in request.data.unwrap_or_default() {
                        if v.is_null() {
                            peer.data.remove(&k);
                        } else {
                            peer.data.insert(k, v);
                        }
                    }
                    check_data(&peer.data)?;
                    peer.updated_at = now;
                }
                self.write(&key, &op, &peer, revision).await?;
                Ok(self.reply(Some(peer), None))
            }
            "leave" => {
                let (revision, _) = current.ok_or_else(not_joined)?;
                self.kv
                    .purge_expect_revision_with_ttl(&key, revision, MARKER_TTL)
                    .await
                    .map_err(|e| conflict_or_unavailable(&e.to_string()))?;
                Ok(self.reply(None, None))
            }
            _ => Err(ErrorBody::new(
                ErrorCode::NotFound,
                "no such presence operation",
            )),
        }
    }

    fn reply(&self, peer: Option<Peer>, peers: Option<Vec<Peer>>) -> PresenceReply {
        PresenceReply {
            ok: true,
            peer,
            peers,
            ttl_secs: Some(self.ttl.as_secs()),
            error: None,
        }
    }

    /// Drops the session at `key` of a caller who may no longer be in the room (announced as a
    /// leave). Presence is disposable: a failure is logged (the entry then expires), not retried.
    async fn drop_session(&self, key: &str, revision: u64) {
        if let Err(err) = self
            .kv
            .purge_expect_revision_with_ttl(key, revision, MARKER_TTL)
            .await
        {
            tracing::warn!(error = %err, key, "cannot drop the session of a refused caller");
        }
    }

    async fn write(
        &self,
        key: &str,
        op: &str,
        peer: &Peer,
        revision: u64,
    ) -> Result<u64, ErrorBody> {
        let value = serde_json::to_vec(&StoredPeer {
            op: op.to_owned(),
            peer: peer.clone(),
        })
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
        put_with_ttl(&self.js, BUCKET, key, value.into(), self.ttl, revision)
            .await
            .map_err(|e| conflict_or_unavailable(&e))
    }

    /// The live entry of a key (a put whose TTL has not run out), with its revision.
    async fn current(&self, key: &str) -> Result<Option<(u64, StoredPeer)>, ErrorBody> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| ErrorBody::new(ErrorCode::Unavailable, e.to_string()))?;
        Ok(entry.and_then(|e| {
            if e.operation != kv::Operation::Put {
                return None;
            }
            let stored: StoredPeer = serde_json::from_slice(&e.value).ok()?;
            Some((e.revision, stored))
        }))
    }

    /// The key's last revision, markers included (0: nothing stored).
    async fn last_revision(&self, key: &str) -> Result<u64, ErrorBody> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| ErrorBody::new(ErrorCode::Unavailable, e.to_string()))?;
        Ok(entry.map_or(0, |e| e.revision))
    }

    /// Every live peer of a room (one batched direct get of the last message per key).
    pub async fn peers(&self, room: &Room) -> Result<Vec<Peer>, ErrorBody> {
        let filter = format!("$KV.{BUCKET}.{}.*", room.key("").trim_end_matches('.'));
        let inbox = self.client.new_inbox();
        let unavailable = |e: String| ErrorBody::new(ErrorCode::Unavailable, e);
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let request = serde_json::json!({ "multi_last": [filter], "batch": 1000 });
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.KV_{BUCKET}"),
                inbox,
                serde_json::to_vec(&request).unwrap_or_default().into(),
            )
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let now = now_ms();
        let mut peers = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), replies.next())
                .await
                .map_err(|_| unavailable("presence read timed out".into()))?
                .ok_or_else(|| unavailable("presence read closed".into()))?;
            if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                return Err(unavailable(
                    "no responders: the presence bucket is missing".into(),
                ));
            }
            if message.status.is_some() {
                break; // 204 end of batch, 404 nothing there
            }
            let headers = message.headers.unwrap_or_default();
            if headers.get("KV-Operation").is_some() || headers.get("Nats-Marker-Reason").is_some()
            {
                continue;
            }
            // Skip an entry whose TTL ran out but which the server has not removed yet.
            let stored_at = headers
                .get("Nats-Time-Stamp")
                .and_then(|v| {
                    time::OffsetDateTime::parse(
                        v.as_str(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok()
                })
                .map_or(now, |t| {
                    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(now)
                });
            let ttl_ms = headers
                .get("Nats-TTL")
                .and_then(|v| v.as_str().trim_end_matches('s').parse::<i64>().ok())
                .map_or(i64::MAX, |s| s.saturating_mul(1000));
            if stored_at.saturating_add(ttl_ms) < now {
                continue;
            }
            if let Ok(stored) = serde_json::from_slice::<StoredPeer>(&message.payload) {
                peers.push(stored.peer);
            }
        }
        let _ = replies.unsubscribe().await;
        peers.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(peers)
    }
}

fn not_joined() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        "no such session in this room (expired or never joined): join again",
    )
}

fn conflict_or_unavailable(message: &str) -> ErrorBody {
    if message.contains("wrong last sequence") || message.contains("10071") {
        ErrorBody::new(
            ErrorCode::Conflict,
            "the session changed concurrently, retry",
        )
    } else {
        ErrorBody::new(ErrorCode::Unavailable, message.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rooms_parse_and_admit() {
        let tenant = Uuid::from_u128(1);
        let (room, op) = Room::parse(&format!("talkwai.room.tenant.{tenant}.presence.join"))
            .expect("a tenant room");
        assert_eq!(op, "join");
        assert!(room.admits(PrincipalKind::Member, Some(tenant)));
        assert!(!room.admits(PrincipalKind::Member, Some(Uuid::from_u128(2))));
        assert!(room.admits(PrincipalKind::Admin, None));
        let (admin, _) = Room::parse("talkwai.room.admin.global.presence.get").expect("admin");
        assert!(!admin.admits(PrincipalKind::Member, Some(tenant)));
        assert!(Room::parse("talkwai.room.admin.other.presence.get").is_none());
        assert!(Room::parse("talkwai.room.tenant.nope.presence.get").is_none());
    }

    #[test]
    fn presence_data_is_bounded() {
        let ok = json!({"cursor": {"x": 1, "y": {"z": 2}}});
        assert!(check_data(ok.as_object().expect("object")).is_ok());
        let four = json!({"a": {"b": {"c": {"d": 1}}}});
        assert!(check_data(four.as_object().expect("object")).is_ok());
        let deep = json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
        assert!(check_data(deep.as_object().expect("object")).is_err());
        let many: Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(check_data(&many).is_err());
        let big = json!({"blob": "x".repeat(5000)});
        assert_eq!(
            check_data(big.as_object().expect("object"))
                .expect_err("too big")
                .code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn sessions_are_single_tokens() {
        assert!(valid_session("tab-1_A"));
        assert!(!valid_session("a.b"));
        assert!(!valid_session(""));
        assert!(!valid_session("*"));
    }
}
