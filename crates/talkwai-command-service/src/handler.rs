//! Handling one command: decode, authenticate, decide, append, answer.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use bytes::Bytes;
use lru::LruCache;
use rand::Rng;
use talkwai_auth::{Principal, PrincipalKind, TokenVerifier};
use talkwai_domain::enums::{AdminStatus, MemberStatus};
use talkwai_domain::ids::TenantId;
use talkwai_domain::values::Timestamp;
use talkwai_domain::{
    Actor, AggregateRef, AggregateState, Context, DomainError, EntityKind, ErrorCode, GuardKey,
    GuardState,
};
use talkwai_eventstore::{AppendError, AppendRequest, Appender, Outbound};
use talkwai_proto::command_record::{self, CommandRecord};
use talkwai_proto::envelope::actor_header;
use talkwai_proto::{
    CommandAccepted, CommandSubject, ErrorBody, Scope, decode_command, headers, subject,
};
use tokio::sync::Mutex;
use tracing::{Instrument as _, Span, debug, field, info_span, warn};
use uuid::Uuid;

use crate::error::ServiceError;
use crate::repo::{GuardHead, Heads, Repository, fact_subjects, guard_head};

/// Number of per-aggregate lock stripes.
const STRIPES: usize = 4096;
/// Longest a command whose append outcome is unknown waits for the connection to come back
/// before answering `unavailable`.
const RECONNECT_WAIT: Duration = Duration::from_secs(5);
/// Users whose member or admin entity is remembered.
const ACTOR_CACHE: NonZeroUsize = NonZeroUsize::new(65_536).unwrap();

/// Everything a command needs besides the request.
pub struct Handler {
    repo: Repository,
    appender: Appender,
    verifier: TokenVerifier,
    conflict_attempts: u32,
    /// Commands on one aggregate are decided one at a time in this instance, so they do not
    /// conflict with each other; instances still race, and the expected sequence settles that.
    stripes: Vec<Mutex<()>>,
    /// Users resolved to their member or admin entity (checked against the link guard's head
    /// on every command).
    actors: std::sync::Mutex<LruCache<ActorKey, KnownActor>>,
    /// Per-tenant allowance, spent in admission (see [`crate::limit`]).
    pub(crate) limiter: talkwai_auth::TenantLimiter,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("conflict_attempts", &self.conflict_attempts)
            .finish()
    }
}

/// A decoded request.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The subject it arrived on.
    pub subject: &'a str,
    /// Its headers.
    pub headers: Option<&'a HeaderMap>,
    /// Its body.
    pub payload: &'a [u8],
}

fn now_ms() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

impl Handler {
    /// A handler over `repo`, writing through `appender`.
    pub fn new(
        repo: Repository,
        appender: Appender,
        verifier: TokenVerifier,
        conflict_attempts: u32,
    ) -> Self {
        Self {
            repo,
            appender,
            verifier,
            conflict_attempts: conflict_attempts.max(1),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            actors: std::sync::Mutex::new(LruCache::new(ACTOR_CACHE)),
            limiter: talkwai_auth::TenantLimiter::off(),
        }
    }

    /// Handles one command request; returns the reply body and headers.
    ///
    /// The command runs in a `command` span whose parent is the request's `traceparent`;
    /// its events carry that span's trace context.
    pub async fn handle(&self, request: Incoming<'_>) -> (Bytes, HeaderMap) {
        let span = talkwai_telemetry::span_with_parent(
            info_span!(
                "command",
                subject = request.subject,
                command_id = field::Empty,
                aggregate = field::Empty,
                action = field::Empty,
                outcome = field::Empty,
            ),
            request.headers,
        );
        let started = std::time::Instant::now();
        let result = self.run(&request).instrument(span.clone()).await;
        crate::ops::command_done(request.subject, &result, started);
        let mut reply_headers = HeaderMap::new();
        let reply = match result {
            Ok(accepted) => {
                span.record("outcome", "accepted");
                talkwai_proto::CommandReply::accepted(accepted)
            }
            Err(err) => {
                let body = err.to_body();
                span.record("outcome", body.code.to_string().as_str());
                let _entered = span.enter();
                if body.code == ErrorCode::Internal || body.code == ErrorCode::Unavailable {
                    warn!(subject = request.subject, error = %err, "command failed");
                } else {
                    debug!(subject = request.subject, code = %body.code, "command rejected");
                }
                reply_headers.insert(headers::NATS_SERVICE_ERROR, body.message.as_str());
                reply_headers.insert(
                    headers::NATS_SERVICE_ERROR_CODE,
                    body.code.status().to_string().as_str(),
                );
                talkwai_proto::CommandReply::rejected(body)
            }
        };
        let bytes = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        (Bytes::from(bytes), reply_headers)
    }

    async fn run(&self, request: &Incoming<'_>) -> Result<CommandAccepted, ServiceError> {
        let parsed = CommandSubject::parse(request.subject).map_err(|e| {
            let field = match e {
                talkwai_proto::SubjectError::InvalidScope(_) => "tenant",
                _ => "subject",
            };
            ServiceError::Request(
                ErrorBody::new(ErrorCode::ValidationFailed, e.to_string()).with_field(field),
            )
        })?;
        let command_id = header(request.headers, headers::COMMAND_ID)
            .ok_or_else(|| {
                ServiceError::Request(
                    ErrorBody::new(ErrorCode::ValidationFailed, "missing command id header")
                        .with_field(headers::COMMAND_ID),
                )
            })?
            .parse::<Uuid>()
            .map_err(|_| {
                ServiceError::Request(
                    ErrorBody::new(ErrorCode::ValidationFailed, "command id must be a UUID")
                        .with_field(headers::COMMAND_ID),
                )
            })?;
        let span = Span::current();
        span.record("aggregate", parsed.aggregate.to_string().as_str());
        span.record("action", parsed.action.as_str());
        span.record("command_id", command_id.to_string().as_str());
        let command = decode_command(&parsed, request.payload).map_err(ServiceError::Request)?;
        match (command.is_platform(), parsed.scope) {
            (true, Scope::Tenant(_)) => {
                return Err(ServiceError::Request(
                    ErrorBody::new(
                        ErrorCode::ValidationFailed,
                        format!(
                            "{} is a platform command: send it on talkwai.cmd.platform.{}.{}",
                            command.permission(),
                            parsed.aggregate,
                            parsed.action
                        ),
                    )
                    .with_field("subject"),
                ));
            }
            (false, Scope::Platform) => {
                return Err(ServiceError::Request(
                    ErrorBody::new(
                        ErrorCode::ValidationFailed,
                        format!(
                            "{} is a tenant command: send it on talkwai.cmd.<tenant>.{}.{}",
                            command.permission(),
                            parsed.aggregate,
                            parsed.action
                        ),
                    )
                    .with_field("subject"),
                ));
            }
            _ => {}
        }
        let principal = self
            .verifier
            .verify_header(header(request.headers, headers::AUTHORIZATION))?;
        self.admit(&principal, parsed.scope.tenant())?;
        let scope = parsed.scope.tenant();
        let target = command.target(scope);
        let trace = trace_context(&span, request.headers);
        let keys = command.requirements(scope);

        let _guard = self.stripe(&target).lock().await;
        let subject = subject::event(&target);
        let record_subject = command_record::subject(parsed.scope, command_id);
        let fingerprint = command_record::fingerprint(request.subject, request.payload);
        // Under load, a create of an aggregate this instance does not hold is decided on an
        // empty one without reading its head: the append expects the subject to be empty, so a
        // taken id is refused and the next attempt reads the subject (finding the original
        // outcome or the existing aggregate). When nothing else is being written the command
        // will be written alone, its record (a claim) before its events, and the head is read
        // first so a refused create leaves no claim behind.
        let mut read_target =
            command.action() != "create" || self.repo.holds(&subject) || self.appender.idle();
        // Whether this attempt reads the command id's record: after any refused or unknown
        // append, and when the target's history already names the command id. A first attempt
        // needs no read: its append expects the record's subject to be empty.
        let mut read_record = false;
        // Whether the log already holds this command's record (a claim whose events did not
        // land): then only the events are appended.
        let mut claimed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // One round trip for every head this command depends on: the target, its facts,
            // the actor's user link guard and (when its resolution is cached) the actor's entity.
            let plan = self.actor_plan(&principal);
            let mut subjects = Vec::with_capacity(keys.len() + 4);
            if read_target {
                subjects.push(subject.clone());
            }
            if read_record {
                subjects.push(record_subject.clone());
            }
            subjects.extend(fact_subjects(&keys, scope));
            if let Some(plan) = &plan {
                subjects.push(plan.guard_subject.clone());
                if let Some(known) = plan.known {
                    subjects.push(subject::event(&known.entity));
                }
            }
            let heads = self.repo.heads(subjects).await?;
            if read_record && let Some(stored) = heads.get(&record_subject) {
                // The id already names a command: this one, resent, or another.
                match self
                    .recorded_outcome(&record_subject, stored, &fingerprint, target)
                    .await?
                {
                    Some(outcome) => return Ok(outcome),
                    // Our own claim, whose events did not land: decide and append them.
                    None => claimed = true,
                }
            }
            let actor = self.resolve_actor(&principal, plan, &heads).await?;
            let head = if read_target {
                heads.get(&subject).map(|m| m.seq)
            } else {
                None
            };
            let loaded = self.repo.load_at(target, head).await?;
            if let Some(record) = loaded.commands.get(&command_id) {
                if !read_record {
                    // The history names this id: compare with its record before answering.
                    read_record = true;
                    attempt -= 1;
                    continue;
                }
                // Its events landed (and, for histories written before command records
                // existed, there is no record): the history is the outcome.
                return Ok(CommandAccepted {
                    id: target.id,
                    version: record.version,
                    events: record.events.clone(),
                    seq: record.seq,
                });
            }
            let (facts, mut guard_heads) = self.repo.facts_at(&keys, scope, &heads).await?;
            let ctx = Context {
                now: now_ms(),
                actor: &actor,
                tenant: scope,
                facts: &facts,
            };
            let decision = talkwai_domain::decide(&loaded.state, command.clone(), &ctx)?;
            // Guards the decision touches but the requirements did not load (releases).
            let missing: Vec<GuardKey> = decision
                .guards
                .iter()
                .map(|g| g.key.clone())
                .filter(|k| !guard_heads.contains_key(k))
                .collect();
            if !missing.is_empty() {
                guard_heads.extend(self.repo.guard_heads(&missing).await?);
            }
            let version = loaded.state.version() + decision.events.len() as u64;
            let record = CommandRecord {
                command: request.subject.to_owned(),
                fingerprint: fingerprint.clone(),
                target: subject.clone(),
                events: u32::try_from(decision.events.len()).unwrap_or(u32::MAX),
                version,
                seq: decision.events.is_empty().then_some(loaded.last_seq),
            };
            if claimed && decision.events.is_empty() {
                return Ok(CommandAccepted {
                    id: target.id,
                    version: loaded.state.version(),
                    events: Vec::new(),
                    seq: loaded.last_seq,
                });
            }
            let actor_text = actor_header(&actor);
            let at = ctx.now;
            // Parts count the record as part 1 even when it is already in the log (a claim being
            // completed), so a command's parts are whole however it was written.
            let total = 1 + decision.events.len() + decision.guards.len();
            let meta = |part: usize| MessageMeta {
                command_id,
                actor: &actor_text,
                at,
                part: (part, total),
                trace: &trace,
            };
            let mut messages = Vec::with_capacity(total);
            // The record comes first: written alone, it is the claim that must land before the
            // events (see `AppendRequest::claim_first`).
            if !claimed {
                messages.push(Self::record_message(
                    &record_subject,
                    parsed.scope.tenant(),
                    &record,
                    meta(1),
                ));
            }
            let mut bodies = Vec::with_capacity(decision.events.len());
            for (index, event) in decision.events.iter().enumerate() {
                let body = event.encode();
                messages.push(Self::message(
                    &subject,
                    target.tenant,
                    &body,
                    (index == 0).then_some(loaded.last_seq),
                    meta(index + 2),
                )?);
                bodies.push(body);
            }
            for (index, change) in decision.guards.iter().enumerate() {
                let head = guard_heads.get(&change.key).copied().unwrap_or(GuardHead {
                    owner: None,
                    seq: 0,
                });
                let mut state = GuardState { owner: head.owner };
                if let Err(err) = state.apply(&change.event) {
                    // A claim on a taken guard is refused by the decider; a release of a guard
                    // we do not hold means there is nothing to release.
                    if matches!(change.event, talkwai_domain::GuardEvent::Claimed { .. }) {
                        return Err(ServiceError::Domain(DomainError::AlreadyExists {
                            field: None,
                            message: format!("unique value is taken: {err}"),
                        }));
                    }
                    warn!(guard = change.key.kind(), error = %err, "skipping release of a guard not held");
                    continue;
                }
                let body = change.event.encode();
                messages.push(Self::message(
                    &subject::guard(&change.key),
                    change.key.tenant(),
                    &body,
                    Some(head.seq),
                    meta(decision.events.len() + 2 + index),
                )?);
            }
            // No `Nats-Msg-Id`: the record's expectation is the deduplication, for ever and
            // across aggregates, where the server's window is neither.
            let request = AppendRequest {
                messages,
                dedupe_id: None,
                claim_first: !claimed,
            };
            let append = info_span!("append", messages = request.messages.len(), attempt);
            let append_started = std::time::Instant::now();
            let appended = self.appender.append(request).instrument(append).await;
            crate::ops::append_done(&appended, append_started);
            match appended {
                Ok(ack) => {
                    if bodies.is_empty() {
                        return Ok(CommandAccepted {
                            id: target.id,
                            version: loaded.state.version(),
                            events: Vec::new(),
                            seq: loaded.last_seq,
                        });
                    }
                    let mut next = loaded;
                    let last_event_seq = ack.first_seq + bodies.len() as u64 - 1;
                    for event in &decision.events {
                        if let Err(err) = talkwai_domain::apply(&mut next.state, event) {
                            // The decider and evolve disagree: a bug. The log is fine; drop
                            // the cached state so the next command reloads it.
                            self.repo.forget(&subject);
                            return Err(ServiceError::evolve(&subject, &err));
                        }
                    }
                    next.last_seq = last_event_seq;
                    let version = next.state.version();
                    next.commands.insert(
                        command_id,
                        crate::repo::CommandRecord {
                            version,
                            seq: last_event_seq,
                            events: bodies.clone(),
                        },
                    );
                    self.repo.remember(subject.clone(), next);
                    return Ok(CommandAccepted {
                        id: target.id,
                        version,
                        events: bodies,
                        seq: last_event_seq,
                    });
                }
                Err(AppendError::Conflict(_)) if !read_target || !read_record => {
                    // A create's subject was not empty, or the command id is taken: not a
                    // race, so no attempt is spent and no backoff; read them this time.
                    read_target = true;
                    read_record = true;
                    attempt -= 1;
                }
                Err(AppendError::Conflict(reason)) => {
                    debug!(%subject, attempt, %reason, "conflict, deciding again");
                    self.repo.forget(&subject);
                    if attempt >= self.conflict_attempts {
                        return Err(ServiceError::Conflict(attempt));
                    }
                    let backoff = rand::rng().random_range(0..(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                Err(AppendError::Unknown(reason)) => {
                    // The write may have landed: the record says so if it did.
                    warn!(%subject, %reason, "append outcome unknown, re-reading the log");
                    self.repo.forget(&subject);
                    read_target = true;
                    read_record = true;
                    if attempt >= self.conflict_attempts {
                        return Err(ServiceError::Store(reason));
                    }
                    // Read the outcome as soon as the connection is back, not after a fixed
                    // wait; a caller retrying with the same id finds it too.
                    if !self.repo.store().wait_connected(RECONNECT_WAIT).await {
                        return Err(ServiceError::Store(reason));
                    }
                }
                Err(err @ (AppendError::Rejected(_) | AppendError::Closed)) => {
                    return Err(ServiceError::Store(err.to_string()));
                }
            }
        }
    }

    /// The answer to a command whose id the log already records: the original outcome when
    /// `fingerprint` matches and its events are in the target's history (read from the log,
    /// never rebuilt from the request); `None` when it matches but its events did not land (a
    /// claim, to be completed); `command_id_reused` when it does not match.
    async fn recorded_outcome(
        &self,
        record_subject: &str,
        stored: &talkwai_eventstore::StoredMessage,
        fingerprint: &str,
        target: AggregateRef,
    ) -> Result<Option<CommandAccepted>, ServiceError> {
        let record = CommandRecord::decode(&stored.payload).map_err(|e| ServiceError::Corrupt {
            subject: record_subject.to_owned(),
            message: e.to_string(),
        })?;
        if record.fingerprint != fingerprint {
            return Err(ServiceError::CommandIdReused {
                command: record.command,
            });
        }
        if record.events == 0 {
            return Ok(Some(CommandAccepted {
                id: target.id,
                version: record.version,
                events: Vec::new(),
                seq: record.seq.unwrap_or(0),
            }));
        }
        let loaded = self.repo.load_current(target).await?;
        let command_id = stored
            .header(headers::COMMAND_ID)
            .and_then(|v| v.parse::<Uuid>().ok());
        Ok(command_id
            .and_then(|id| loaded.commands.get(&id))
            .map(|found| CommandAccepted {
                id: target.id,
                version: found.version,
                events: found.events.clone(),
                seq: found.seq,
            }))
    }

    fn stripe(&self, target: &AggregateRef) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        target.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.stripes[index]
    }

    /// One event or guard message of a command. `Talkwai-Tenant` is the scope of the subject
    /// it is written to (a `tenant.created` on the new tenant's subject names that tenant).
    fn message(
        subject: &str,
        tenant: Option<TenantId>,
        body: &talkwai_domain::EventBody,
        expected: Option<u64>,
        meta: MessageMeta<'_>,
    ) -> Result<Outbound, ServiceError> {
        let payload = serde_json::to_vec(body).map_err(|e| ServiceError::Corrupt {
            subject: subject.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Outbound {
            subject: subject.to_owned(),
            headers: meta.headers(&body.event_type, body.version, tenant),
            payload: payload.into(),
            expected_last_subject_seq: expected,
        })
    }

    /// The command's record, appended expecting its subject to be empty.
    fn record_message(
        subject: &str,
        tenant: Option<TenantId>,
        record: &CommandRecord,
        meta: MessageMeta<'_>,
    ) -> Outbound {
        Outbound {
            subject: subject.to_owned(),
            headers: meta.headers(
                command_record::RECORD_TYPE,
                command_record::RECORD_VERSION,
                tenant,
            ),
            payload: record.encode().into(),
            expected_last_subject_seq: Some(0),
        }
    }

    /// What resolving `principal` needs read: its user link guard and, when a resolution is
    /// cached, the entity it pointed to. `None` for the platform.
    fn actor_plan(&self, principal: &Principal) -> Option<ActorPlan> {
        let Principal::User(claims) = principal else {
            return None;
        };
        let (guard, key) = match claims.kind {
            PrincipalKind::Admin => (
                GuardKey::UserAdmin(claims.sub),
                ActorKey {
                    user: claims.sub,
                    admin: true,
                    tenant: None,
                },
            ),
            PrincipalKind::Member => (
                GuardKey::UserMember(claims.sub),
                ActorKey {
                    user: claims.sub,
                    admin: false,
                    tenant: claims.tenant,
                },
            ),
        };
        let known = self
            .actors
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).copied());
        Some(ActorPlan {
            guard_subject: subject::guard(&guard),
            key,
            known,
        })
    }

    /// Turns a verified principal into an actor with its current role and status from the log,
    /// from the heads read for the command (a second read only when the user's link is new to
    /// this instance or changed).
    async fn resolve_actor(
        &self,
        principal: &Principal,
        plan: Option<ActorPlan>,
        heads: &Heads,
    ) -> Result<Actor, ServiceError> {
        let claims = match principal {
            Principal::Platform => return Ok(Actor::Platform),
            Principal::User(claims) => claims,
        };
        let Some(plan) = plan else {
            return Ok(Actor::Platform);
        };
        let forbidden =
            |message: &str| ServiceError::Domain(DomainError::Forbidden(message.to_owned()));
        let (kind, tenant, unlinked) = match claims.kind {
            PrincipalKind::Admin => (EntityKind::Admin, None, "user is not linked to an admin"),
            PrincipalKind::Member => (
                EntityKind::Member,
                Some(
                    claims
                        .tenant
                        .ok_or_else(|| forbidden("member token without tenant"))?,
                ),
                "user is not linked to a member",
            ),
        };
        let guard = heads.get(&plan.guard_subject);
        let guard_seq = guard.map_or(0, |m| m.seq);
        let entity = match plan.known {
            Some(known) if known.guard_seq == guard_seq => known.entity,
            _ => {
                let Some(owner) = guard_head(&plan.guard_subject, guard)?.owner else {
                    self.forget_actor(&plan.key);
                    return Err(forbidden(unlinked));
                };
                AggregateRef {
                    kind,
                    tenant,
                    id: owner,
                }
            }
        };
        let loaded = match plan.known {
            // Its entity's head was read with the others.
            Some(known) if known.entity == entity => {
                let head = heads.get(&subject::event(&entity)).map(|m| m.seq);
                self.repo.load_at(entity, head).await?
            }
            _ => self.repo.load_current(entity).await?,
        };
        if let Ok(mut actors) = self.actors.lock() {
            actors.put(plan.key, KnownActor { entity, guard_seq });
        }
        match &loaded.state {
            AggregateState::Admin(id, state) => {
                let admin = state
                    .live()
                    .ok_or_else(|| forbidden("admin no longer exists"))?;
                Ok(Actor::Admin {
                    user: claims.sub,
                    admin: *id,
                    role: admin.role,
                    permissions: Some(admin.permissions.clone()),
                    active: admin.status == AdminStatus::Active,
                })
            }
            AggregateState::Member(_, id, state) => {
                let member = state
                    .live()
                    .ok_or_else(|| forbidden("user is not a member of this tenant"))?;
                Ok(Actor::Member {
                    user: claims.sub,
                    member: *id,
                    tenant: member.tenant,
                    role: member.role,
                    active: member.status == MemberStatus::Active,
                })
            }
            _ => Err(forbidden(unlinked)),
        }
    }

    fn forget_actor(&self, key: &ActorKey) {
        if let Ok(mut actors) = self.actors.lock() {
            actors.pop(key);
        }
    }
}

/// Whose resolution is cached: a user, as admin or as member of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ActorKey {
    user: talkwai_domain::ids::UserId,
    admin: bool,
    tenant: Option<TenantId>,
}

/// A user's resolved entity, and the sequence of the link guard it was read from.
#[derive(Debug, Clone, Copy)]
struct KnownActor {
    entity: AggregateRef,
    guard_seq: u64,
}

/// The reads resolving one principal needs.
struct ActorPlan {
    guard_subject: String,
    key: ActorKey,
    known: Option<KnownActor>,
}

/// Headers every message of a command carries.
#[derive(Clone, Copy)]
struct MessageMeta<'a> {
    command_id: Uuid,
    actor: &'a str,
    at: Timestamp,
    part: (usize, usize),
    /// `traceparent` (and `tracestate`) to carry.
    trace: &'a HeaderMap,
}

impl MessageMeta<'_> {
    /// The headers of one message of type `event_type` on a subject of `tenant`'s scope.
    fn headers(&self, event_type: &str, version: u32, tenant: Option<TenantId>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(headers::EVENT_TYPE, event_type);
        headers.insert(headers::EVENT_VERSION, version.to_string().as_str());
        headers.insert(
            headers::TENANT,
            tenant
                .map_or_else(|| subject::PLATFORM.to_owned(), |t| t.to_string())
                .as_str(),
        );
        headers.insert(headers::ACTOR, self.actor);
        headers.insert(headers::COMMAND_ID, self.command_id.to_string().as_str());
        headers.insert(headers::OCCURRED_AT, self.at.0.to_string().as_str());
        headers.insert(
            headers::COMMAND_PART,
            format!("{}/{}", self.part.0, self.part.1).as_str(),
        );
        for (name, values) in self.trace.iter() {
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        headers
    }
}

/// The trace context the events of a command carry: the `command` span's when tracing
/// exports spans, else the caller's `traceparent` and `tracestate` as they came.
fn trace_context(span: &Span, request: Option<&HeaderMap>) -> HeaderMap {
    let mut trace = HeaderMap::new();
    talkwai_telemetry::inject_span(span, &mut trace);
    if trace.get(headers::TRACEPARENT).is_none() {
        for name in [headers::TRACEPARENT, headers::TRACESTATE] {
            if let Some(value) = header(request, name) {
                trace.insert(name, value);
            }
        }
    }
    trace
}
