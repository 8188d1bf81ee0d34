//! Handling one command, in named steps:
//! 1. `Request::parse` (module `request`): subject, command id, body, scope;
//! 2. admission ([`talkwai_auth::Admission`]): token, rate limit, tenant fence;
//! 3. under the target's stripe lock, `write`, the retry policy, runs attempts until one lands
//!    or the answer is known. Each `attempt` reads every head it needs in one round trip,
//!    resolves the actor (module `actor`), answers a known command id from the log
//!    (idempotency, see [`talkwai_proto::command_record`]), decides once, and `encode`s the
//!    messages; `accepted` moves the cached aggregate on after a landed append.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use bytes::Bytes;
use rand::Rng;
use talkwai_auth::{Admission, Principal, RateLimitConfig, TokenVerifier};
use talkwai_domain::ids::TenantId;
use talkwai_domain::values::Timestamp;
use talkwai_domain::{
    AggregateRef, Context, Decision, DomainError, ErrorCode, Event, EventBody, FactKey, GuardKey,
    GuardState,
};
use talkwai_eventstore::{
    AppendAck, AppendError, AppendRequest, Appender, Fence, Outbound, header_map,
};
use talkwai_proto::command_record::{self, CommandRecord};
use talkwai_proto::event::{ActorRef, CommandPart, EventMeta};
use talkwai_proto::{CommandAccepted, ErasureReport, Scope, headers, subject};
use tokio::sync::Mutex;
use tracing::{Instrument as _, Span, debug, field, info, info_span, warn};

use crate::actor::{ActorPlan, Actors};
use crate::error::ServiceError;
use crate::ownership::{Ownership, Tenure};
use crate::repo::{GuardHead, HeadsView, Loaded, Repository, fact_subjects};
use crate::request::{Request, header};

/// Number of per-aggregate lock stripes.
const STRIPES: usize = 4096;
/// Longest a command whose append outcome is unknown waits for the connection to come back
/// before answering `unavailable`.
const RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// Everything a command needs besides the request.
pub struct Handler {
    repo: Repository,
    appender: Appender,
    /// Token, per-tenant rate limit and tenant fence, checked before anything is read.
    admission: Admission,
    conflict_attempts: u32,
    /// Commands on one aggregate are decided one at a time in this instance, so they do not
    /// conflict with each other; instances still race, and the expected sequence settles that.
    stripes: Vec<Mutex<()>>,
    /// Users resolved to their member or admin entity (checked against the link guard's head
    /// on every command).
    actors: Actors,
    /// The partitions this instance decides from memory (`None`: every command reads its
    /// heads).
    ownership: Option<Arc<Ownership>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("conflict_attempts", &self.conflict_attempts)
            .finish()
    }
}

/// A decoded request.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The subject it arrived on.
    pub subject: &'a str,
    /// Its headers.
    pub headers: Option<&'a HeaderMap>,
    /// Its body.
    pub payload: &'a [u8],
}

/// Whether `command` erases one data subject (after which [`Handler::on_subject_erased`] runs).
fn erases_subject(command: &talkwai_domain::Command) -> bool {
    talkwai_domain::policy::is_erasure(command)
        && !matches!(
            command,
            talkwai_domain::Command::Tenant(talkwai_domain::tenant::TenantCommand::Erase(_))
        )
}

/// The event type after which [`Handler::on_tenant_erased`] runs.
const TENANT_ERASED: &str = "tenant.erased";

fn now_ms() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// An admitted command: what every attempt at writing it shares.
struct Job<'a> {
    request: &'a Request<'a>,
    principal: Principal,
    /// The addressed aggregate.
    target: AggregateRef,
    /// Its event subject.
    subject: String,
    /// The subject of the command id's record.
    record_subject: String,
    /// What the record compares a resent command with.
    fingerprint: String,
    /// The facts the decider needs.
    keys: Vec<FactKey>,
    /// `traceparent` (and `tracestate`) every message carries.
    trace: HeaderMap,
}

impl<'a> Job<'a> {
    fn new(request: &'a Request<'a>, principal: Principal, trace: HeaderMap) -> Self {
        let scope = request.scope.tenant();
        let target = request.command.target(scope);
        Self {
            principal,
            target,
            subject: subject::event(&target),
            record_subject: command_record::subject(request.scope, request.command_id),
            fingerprint: command_record::fingerprint(request.subject, request.payload),
            keys: request.command.requirements(scope),
            trace,
            request,
        }
    }

    /// The tenant of the command's scope (`None`: the platform).
    fn scope(&self) -> Option<TenantId> {
        self.request.scope.tenant()
    }

    /// The answer of a command that wrote nothing to an aggregate at `loaded`.
    fn unchanged(&self, loaded: &Loaded) -> CommandAccepted {
        CommandAccepted {
            id: self.target.id,
            version: loaded.state.version(),
            events: Vec::new(),
            seq: loaded.last_seq,
            erasure: None,
        }
    }
}

/// What the attempts at one command have learnt so far.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Whether an attempt reads the target's head. Under load, a create of an aggregate this
    /// instance does not hold is decided on an empty one without reading it: the append
    /// expects the subject to be empty, so a taken id is refused and the next attempt reads
    /// the subject (finding the original outcome or the existing aggregate). When nothing else
    /// is being written the command will be written alone, its record (a claim) before its
    /// events, and the head is read first so a refused create leaves no claim behind.
    read_target: bool,
    /// Whether an attempt reads the command id's record: after any refused or unknown append,
    /// and when the target's history already names the command id. A first attempt needs no
    /// read: its append expects the record's subject to be empty.
    read_record: bool,
    /// Whether the log already holds this command's record (a claim whose events did not
    /// land): then only the events are appended.
    claimed: bool,
}

/// Where one attempt got to.
enum Step {
    /// The answer is known without writing: a resent command, or a claim with nothing left to
    /// append.
    Answered(CommandAccepted),
    /// The target's history names the command id: read its record and try again (no attempt
    /// spent).
    ReadRecord,
    /// The messages to append, and what a landed append makes of the aggregate.
    Append(AppendRequest, Decided),
}

/// A decision, encoded.
struct Decided {
    /// The aggregate it was decided on.
    loaded: Arc<Loaded>,
    /// Its events.
    events: Vec<Event>,
    /// Their bodies, as answered (appended with their personal fields sealed).
    bodies: Vec<EventBody>,
    /// The data key the events' personal fields were sealed with.
    key: Option<uuid::Uuid>,
}

impl Handler {
    /// A handler over `repo`, writing through `appender`; it decides from memory the partitions
    /// the repository owns (see [`Repository::with_ownership`]).
    pub fn new(
        repo: Repository,
        appender: Appender,
        verifier: TokenVerifier,
        conflict_attempts: u32,
    ) -> Self {
        // Decides from memory what the repository trusts, fencing those appends with the
        // tenure they were decided under.
        let repo_ownership = repo.ownership().map(Arc::clone);
        Self {
            repo,
            appender,
            admission: Admission::new(verifier),
            conflict_attempts: conflict_attempts.max(1),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            actors: Actors::new(),
            ownership: repo_ownership,
        }
    }

    /// How full this instance's writes are.
    pub fn group_stats(&self) -> Arc<talkwai_eventstore::GroupStats> {
        self.appender.stats()
    }

    /// The partitions this instance holds, when it owns partitions at all.
    pub fn ownership(&self) -> Option<&Arc<Ownership>> {
        self.ownership.as_ref()
    }

    /// Refuses a tenant's commands with `rate_limited` beyond `limits` (`0` per second: off);
    /// a refused command appends nothing.
    pub fn with_rate_limit(mut self, limits: RateLimitConfig) -> Self {
        self.admission = self.admission.with_rate_limit(limits);
        self
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
        match result {
            Ok(accepted) => {
                span.record("outcome", "accepted");
                let reply = talkwai_proto::CommandReply::accepted(accepted);
                (encode_reply(&reply), HeaderMap::new())
            }
            Err(err) => {
                let _entered = span.enter();
                span.record("outcome", err.to_body().code.to_string().as_str());
                let (body, mut headers) = Self::rejected(request.subject, &err);
                if matches!(err, ServiceError::Moved { .. }) {
                    // Nothing was written: the router may take the command to the partition's
                    // new owner (or this instance's new tenure) instead of answering.
                    headers.insert(crate::route::NOT_OWNER, "1");
                }
                (body, headers)
            }
        }
    }

    /// The reply to a command refused with `err` outside [`handle`](Self::handle) (routing);
    /// counted like the others.
    pub fn reply_error(
        &self,
        subject: &str,
        err: &ServiceError,
        started: std::time::Instant,
    ) -> (Bytes, HeaderMap) {
        crate::ops::command_outcome(subject, &err.to_body().code.to_string(), started);
        Self::rejected(subject, err)
    }

    /// The error reply: the body and the services API's error headers; logged.
    fn rejected(subject: &str, err: &ServiceError) -> (Bytes, HeaderMap) {
        let body = err.to_body();
        if body.code == ErrorCode::Internal || body.code == ErrorCode::Unavailable {
            warn!(subject, error = %err, "command failed");
        } else {
            debug!(subject, code = %body.code, "command rejected");
        }
        let mut reply_headers = HeaderMap::new();
        reply_headers.insert(headers::NATS_SERVICE_ERROR, body.message.as_str());
        reply_headers.insert(
            headers::NATS_SERVICE_ERROR_CODE,
            body.code.status().to_string().as_str(),
        );
        let reply = talkwai_proto::CommandReply::rejected(body);
        (encode_reply(&reply), reply_headers)
    }

    /// Parse, admit, then write under the target's stripe lock.
    async fn run(&self, incoming: &Incoming<'_>) -> Result<CommandAccepted, ServiceError> {
        let span = Span::current();
        let request = Request::parse(incoming.subject, incoming.headers, incoming.payload, &span)?;
        let principal = self
            .admission
            .admit_to(request.authorization, request.scope.tenant())?;
        let job = Job::new(&request, principal, trace_context(&span, incoming.headers));
        let _guard = self.stripe(&job.target).lock().await;
        // Held until the command is answered: its partition is not given back meanwhile. The
        // router sent the command here because its subject's partition was held; if that lease
        // ran out since (say, across a pause), the command is refused as retryable rather than
        // decided unfenced. A command whose target lies in another partition than its subject
        // (`tenant.create`, sent on the platform's subject) is decided by reading heads.
        let tenure = match &self.ownership {
            Some(ownership) => {
                let partition = ownership.partition_of(&job.subject);
                let entered = ownership.enter(partition).await;
                if entered.is_none() && partition == ownership.partition_of(request.subject) {
                    return Err(ServiceError::Moved { partition });
                }
                entered
            }
            None => None,
        };
        let mut accepted = self.write(&job, tenure.as_ref()).await?;
        // Also when the outcome was read back from the command's record: a retry of an erase
        // whose follow-up failed runs it again.
        if let Some(tenant) = job.scope()
            && accepted
                .events
                .iter()
                .any(|e| e.event_type == TENANT_ERASED)
        {
            self.on_tenant_erased(tenant).await?;
        }
        // Also when answered from the record, or when the subject was erased already: the
        // key is destroyed whatever the decision (idempotent).
        if erases_subject(&job.request.command) {
            accepted.erasure = Some(self.on_subject_erased(&job).await?);
        }
        Ok(accepted)
    }

    /// What follows an accepted erasure of one data subject (`member.erase`, `admin.erase`,
    /// `user.erase`, `task.eraseContent`), before it is answered: its `…erased` event is in
    /// the log (appended now, or earlier by the first erasure), then its data key is destroyed
    /// (`KeyStore::destroy`): event first, then the key, so a crash between the two leaves an
    /// erased subject whose resent command (same id, answered from its record) destroys the
    /// key. Reports whether there was a key and whether any of its personal data was written
    /// in clear (the log keeps that readable).
    async fn on_subject_erased(&self, job: &Job<'_>) -> Result<ErasureReport, ServiceError> {
        let loaded = self.repo.load_current(job.target).await?;
        let scope = job.scope().map_or(Scope::Platform, Scope::Tenant);
        let key_destroyed = match (self.repo.keys(), loaded.key) {
            (Some(keys), Some(key)) => {
                keys.destroy(scope, key)
                    .await
                    .map_err(|e| ServiceError::Keys(e.to_string()))?;
                info!(subject = %job.subject, %key, "subject erased: its key is destroyed");
                true
            }
            (None, Some(key)) => {
                return Err(ServiceError::Keys(format!(
                    "{} is sealed with key {key}, and this service holds no key store to destroy it: configure TALKWAI_MASTER_KEY and resend the command",
                    job.subject
                )));
            }
            (_, None) => false,
        };
        if loaded.clear {
            warn!(subject = %job.subject, "subject erased, but some of its personal data was written in clear: the log still holds it");
        }
        Ok(ErasureReport {
            key_destroyed,
            clear_in_log: loaded.clear,
        })
    }

    /// What follows a `tenant.erased` that landed, before the command is answered: the
    /// tenant's key is destroyed (`talkwai_keys::KeyStore::destroy_tenant`), so every sealed
    /// personal field of the tenant is unreadable at once, in the log and in every backup of
    /// it. Idempotent: a retry of the same command (answered from its record) runs it again,
    /// so a failure here is repaired by resending. The read models and rooms need nothing from
    /// here: the projector and the notifier act on the event itself.
    async fn on_tenant_erased(&self, tenant: TenantId) -> Result<(), ServiceError> {
        match self.repo.keys() {
            Some(keys) => {
                keys.destroy_tenant(&tenant)
                    .await
                    .map_err(|e| ServiceError::Keys(e.to_string()))?;
                info!(%tenant, "tenant erased: its key is destroyed");
            }
            None => info!(%tenant, "tenant erased (no master key: nothing was sealed)"),
        }
        Ok(())
    }

    /// The fence of an append decided under `tenure`: the lease is still certainly held.
    fn fence(&self, tenure: Option<&Tenure<'_>>) -> Option<Fence> {
        let ownership = Arc::clone(self.ownership.as_ref()?);
        let (partition, tenure) = tenure.map(|t| (t.partition, t.tenure))?;
        Some(Arc::new(move || ownership.holds(partition, tenure)))
    }

    /// The retry policy: attempts until an append lands or the answer is known. A conflict
    /// that is not a race (a create's subject was taken, the command id is known) is read
    /// again at once; a race backs off and decides again, at most `conflict_attempts` times;
    /// an append of unknown outcome waits for the connection and reads the record.
    async fn write(
        &self,
        job: &Job<'_>,
        tenure: Option<&Tenure<'_>>,
    ) -> Result<CommandAccepted, ServiceError> {
        let mut progress = Progress {
            read_target: job.request.command.action() != "create"
                || self.repo.holds(&job.subject)
                || self.appender.idle(),
            read_record: false,
            claimed: false,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (request, decided) = match self.attempt(job, &mut progress).await? {
                Step::Answered(accepted) => return Ok(accepted),
                Step::ReadRecord => {
                    progress.read_record = true;
                    attempt -= 1;
                    continue;
                }
                Step::Append(request, decided) => (request, decided),
            };
            let append = info_span!("append", messages = request.messages.len(), attempt);
            let append_started = std::time::Instant::now();
            let fence = self.fence(tenure);
            let appended = async {
                match fence {
                    Some(fence) => self.appender.append_fenced(request, fence).await,
                    None => self.appender.append(request).await,
                }
            }
            .instrument(append)
            .await;
            crate::ops::append_done(&appended, append_started);
            match appended {
                Ok(ack) => return self.accepted(job, decided, &ack, tenure),
                Err(AppendError::Fenced) => {
                    // The lease ran out (a pause, a lost connection): another instance may
                    // own the partition now, so nothing decided here may be written.
                    return Err(ServiceError::Moved {
                        partition: tenure.map_or(0, |t| t.partition),
                    });
                }
                Err(AppendError::Conflict(_)) if !progress.read_target || !progress.read_record => {
                    // A create's subject was not empty, or the command id is taken: not a
                    // race, so no attempt is spent and no backoff; read them this time.
                    progress.read_target = true;
                    progress.read_record = true;
                    attempt -= 1;
                }
                Err(AppendError::Conflict(reason)) => {
                    debug!(subject = %job.subject, attempt, %reason, "conflict, deciding again");
                    self.repo.forget(&job.subject);
                    if attempt >= self.conflict_attempts {
                        return Err(ServiceError::Conflict(attempt));
                    }
                    let backoff = rand::rng().random_range(0..(2u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                Err(AppendError::Unknown(reason)) => {
                    // The write may have landed: the record says so if it did.
                    warn!(subject = %job.subject, %reason, "append outcome unknown, re-reading the log");
                    self.repo.forget(&job.subject);
                    progress.read_target = true;
                    progress.read_record = true;
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

    /// One attempt: read the heads, answer a known command id, decide once, encode.
    async fn attempt(&self, job: &Job<'_>, progress: &mut Progress) -> Result<Step, ServiceError> {
        let request = job.request;
        let plan = self.actors.plan(&job.principal);
        let heads = self.read_heads(job, progress, plan.as_ref()).await?;
        if progress.read_record
            && let Some(stored) = heads.message(&job.record_subject)
        {
            // The id already names a command: this one, resent, or another.
            match self
                .recorded_outcome(&job.record_subject, stored, &job.fingerprint, job.target)
                .await?
            {
                Some(outcome) => return Ok(Step::Answered(outcome)),
                // Our own claim, whose events did not land: decide and append them.
                None => progress.claimed = true,
            }
        }
        let actor = self
            .actors
            .resolve(&self.repo, &job.principal, plan, &heads)
            .await?;
        let head = if progress.read_target {
            heads.seq(&job.subject)
        } else {
            None
        };
        let loaded = self
            .repo
            .load_at(job.target, head, heads.tag(&job.subject))
            .await?;
        if let Some(record) = loaded.commands.get(&request.command_id) {
            if !progress.read_record {
                // The history names this id: compare with its record before answering.
                return Ok(Step::ReadRecord);
            }
            // Its events landed (and, for histories written before command records existed,
            // there is no record): the history is the outcome.
            return Ok(Step::Answered(CommandAccepted {
                id: job.target.id,
                version: record.version,
                events: record.events.clone(),
                seq: record.seq,
                erasure: None,
            }));
        }
        let (facts, mut guard_heads) = self.repo.facts_at(&job.keys, job.scope(), &heads).await?;
        let ctx = Context {
            now: now_ms(),
            actor: &actor,
            tenant: job.scope(),
            facts: &facts,
            nonce: uuid::Uuid::new_v4(),
        };
        let decision = talkwai_domain::decide(&loaded.state, request.command.clone(), &ctx)?;
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
        if progress.claimed && decision.events.is_empty() {
            return Ok(Step::Answered(job.unchanged(&loaded)));
        }
        let author = Author {
            actor: ActorRef::from(&actor),
            at: ctx.now,
        };
        let seal = self.sealing_key(job, &loaded, &decision).await?;
        let (messages, bodies) = Self::encode(
            job,
            progress.claimed,
            &loaded,
            &decision,
            &guard_heads,
            author,
            seal.as_ref(),
        )?;
        // No `Nats-Msg-Id`: the record's expectation is the deduplication, for ever and
        // across aggregates, where the server's window is neither.
        let append = AppendRequest {
            messages,
            dedupe_id: None,
            claim_first: !progress.claimed,
        };
        Ok(Step::Append(
            append,
            Decided {
                loaded,
                events: decision.events,
                bodies,
                key: seal.map(|k| k.id),
            },
        ))
    }

    /// One round trip for every head this attempt depends on: the target (unless skipped), the
    /// command id's record (when it must be read), its facts, the actor's user link guard and
    /// (when its resolution is cached) the actor's entity.
    async fn read_heads(
        &self,
        job: &Job<'_>,
        progress: &Progress,
        plan: Option<&ActorPlan>,
    ) -> Result<HeadsView, ServiceError> {
        let mut subjects = Vec::with_capacity(job.keys.len() + 4);
        if progress.read_target {
            subjects.push(job.subject.clone());
        }
        if progress.read_record {
            subjects.push(job.record_subject.clone());
        }
        subjects.extend(fact_subjects(&job.keys, job.scope()));
        if let Some(plan) = plan {
            subjects.push(plan.guard_subject.clone());
            if let Some(known) = plan.known {
                subjects.push(subject::event(&known.entity));
            }
        }
        let asked = subjects.len();
        let view = self.repo.heads(subjects).await?;
        crate::ops::heads(view.known(), asked - view.known());
        Ok(view)
    }

    /// The key that seals the personal fields of `decision`'s events: none when the service
    /// writes in clear or the events hold none; else the aggregate's own key, or a new one
    /// from the pool (a new subject, or one whose key was destroyed). Taking a pooled key
    /// writes nothing: it is already durable.
    async fn sealing_key(
        &self,
        job: &Job<'_>,
        loaded: &Loaded,
        decision: &Decision<Event>,
    ) -> Result<Option<talkwai_keys::DataKey>, ServiceError> {
        let Some(keys) = self.repo.keys() else {
            return Ok(None);
        };
        if !decision
            .events
            .iter()
            .any(|e| talkwai_proto::sealed::is_personal(&e.type_name()))
        {
            return Ok(None);
        }
        let scope = job.scope().map_or(Scope::Platform, Scope::Tenant);
        let keys_error = |e: talkwai_keys::KeyError| ServiceError::Keys(e.to_string());
        if let Some(id) = loaded.key
            && let Some(key) = keys.data_key(scope, id).await.map_err(keys_error)?
        {
            return Ok(Some(key));
        }
        keys.take(scope).await.map(Some).map_err(keys_error)
    }

    /// The messages of a decision: the command's record (unless `claimed`: already in the
    /// log), its events on the target (personal fields sealed with `seal`), then its guard
    /// changes; and the events' bodies in clear.
    fn encode(
        job: &Job<'_>,
        claimed: bool,
        loaded: &Loaded,
        decision: &Decision<Event>,
        guard_heads: &HashMap<GuardKey, GuardHead>,
        author: Author,
        seal: Option<&talkwai_keys::DataKey>,
    ) -> Result<(Vec<Outbound>, Vec<EventBody>), ServiceError> {
        let request = job.request;
        // Parts count the record as part 1 even when it is already in the log (a claim being
        // completed), so a command's parts are whole however it was written.
        let total = 1 + decision.events.len() + decision.guards.len();
        let headers = |event_type: &str, version: u32, tenant: Option<TenantId>, part: usize| {
            let meta = EventMeta {
                actor: Some(author.actor),
                command_id: Some(request.command_id),
                occurred_at: Some(author.at.0),
                part: Some(CommandPart {
                    index: u32::try_from(part).unwrap_or(u32::MAX),
                    total: u32::try_from(total).unwrap_or(u32::MAX),
                }),
                ..EventMeta::typed(
                    event_type,
                    version,
                    tenant.map_or(Scope::Platform, Scope::Tenant),
                )
            };
            let mut headers = header_map(meta.to_headers());
            for (name, values) in job.trace.iter() {
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
            headers
        };
        let mut messages = Vec::with_capacity(total);
        // The record comes first: written alone, it is the claim that must land before the
        // events (see `AppendRequest::claim_first`). `Talkwai-Tenant` is the scope of the
        // subject a message is written to (a `tenant.created` on the new tenant's subject
        // names that tenant).
        if !claimed {
            let record = CommandRecord {
                command: request.subject.to_owned(),
                fingerprint: job.fingerprint.clone(),
                target: job.subject.clone(),
                events: u32::try_from(decision.events.len()).unwrap_or(u32::MAX),
                version: loaded.state.version() + decision.events.len() as u64,
                seq: decision.events.is_empty().then_some(loaded.last_seq),
            };
            messages.push(Outbound {
                subject: job.record_subject.clone(),
                headers: headers(
                    command_record::RECORD_TYPE,
                    command_record::RECORD_VERSION,
                    job.scope(),
                    1,
                ),
                payload: record.encode().into(),
                expected_last_subject_seq: Some(0),
            });
        }
        let mut bodies = Vec::with_capacity(decision.events.len());
        for (index, event) in decision.events.iter().enumerate() {
            let body = event.encode();
            let mut headers = headers(&body.event_type, body.version, job.target.tenant, index + 2);
            // An erasure names the key it destroys, so readers forget it too.
            if talkwai_proto::sealed::erases_subject(&body.event_type)
                && let Some(key) = loaded.key
            {
                headers.insert(talkwai_proto::headers::KEY, key.to_string().as_str());
            }
            let payload = match seal {
                Some(key) if talkwai_proto::sealed::is_personal(&body.event_type) => {
                    let mut sealed = body.clone();
                    if talkwai_proto::sealed::seal_data(&body.event_type, &mut sealed.data, key) {
                        headers.insert(talkwai_proto::headers::KEY, key.id.to_string().as_str());
                    }
                    payload(&job.subject, &sealed)?
                }
                _ => payload(&job.subject, &body)?,
            };
            messages.push(Outbound {
                subject: job.subject.clone(),
                headers,
                payload,
                expected_last_subject_seq: (index == 0).then_some(loaded.last_seq),
            });
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
            let guard_subject = subject::guard(&change.key);
            messages.push(Outbound {
                payload: payload(&guard_subject, &body)?,
                headers: headers(
                    &body.event_type,
                    body.version,
                    change.key.tenant(),
                    decision.events.len() + 2 + index,
                ),
                subject: guard_subject,
                expected_last_subject_seq: Some(head.seq),
            });
        }
        Ok((messages, bodies))
    }

    /// The answer to a landed append; the aggregate, moved on by its events, is cached.
    fn accepted(
        &self,
        job: &Job<'_>,
        decided: Decided,
        ack: &AppendAck,
        tenure: Option<&Tenure<'_>>,
    ) -> Result<CommandAccepted, ServiceError> {
        let Decided {
            loaded,
            events,
            bodies,
            key,
        } = decided;
        if bodies.is_empty() {
            return Ok(job.unchanged(&loaded));
        }
        let last_event_seq = ack.first_seq + bodies.len() as u64 - 1;
        // The cached copy is about to be replaced: drop it first so the state is moved on in
        // place, not copied, unless a concurrent reader still holds it.
        self.repo.forget(&job.subject);
        let mut next = Arc::unwrap_or_clone(loaded);
        for event in &events {
            if let Err(err) = talkwai_domain::apply(&mut next.state, event) {
                // The decider and evolve disagree: a bug. The log is fine; the cached state is
                // already dropped, so the next command reloads it.
                return Err(ServiceError::evolve(&job.subject, &err));
            }
        }
        next.last_seq = last_event_seq;
        // Personal fields written without a key are in the log in clear.
        if key.is_none()
            && bodies
                .iter()
                .any(|b| talkwai_proto::sealed::has_personal_text(&b.event_type, &b.data))
        {
            next.clear = true;
        }
        next.key = key.or(next.key);
        // Written under the tenure this command holds: the log's last word while it lasts.
        next.tenure = tenure.map_or(0, |t| t.tenure);
        let version = next.state.version();
        next.commands.insert(
            job.request.command_id,
            crate::repo::CommandRecord {
                version,
                seq: last_event_seq,
                events: bodies.clone(),
            },
        );
        self.repo.remember(job.subject.clone(), next);
        Ok(CommandAccepted {
            id: job.target.id,
            version,
            events: bodies,
            seq: last_event_seq,
            erasure: None,
        })
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
                erasure: None,
            }));
        }
        let loaded = self.repo.load_current(target).await?;
        let command_id = EventMeta::from_headers(|name| stored.header(name)).command_id;
        Ok(command_id
            .and_then(|id| loaded.commands.get(&id))
            .map(|found| CommandAccepted {
                id: target.id,
                version: found.version,
                events: found.events.clone(),
                seq: found.seq,
                erasure: None,
            }))
    }

    fn stripe(&self, target: &AggregateRef) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        target.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.stripes[index]
    }
}

/// A reply's JSON.
fn encode_reply(reply: &talkwai_proto::CommandReply) -> Bytes {
    Bytes::from(serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec()))
}

/// Who wrote a command's messages, and when.
#[derive(Debug, Clone, Copy)]
struct Author {
    actor: ActorRef,
    at: Timestamp,
}

/// An event or guard body as appended.
fn payload(subject: &str, body: &EventBody) -> Result<Bytes, ServiceError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ServiceError::Corrupt {
            subject: subject.to_owned(),
            message: e.to_string(),
        })
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
