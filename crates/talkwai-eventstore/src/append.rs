//! Appends with optimistic concurrency, grouped into durable writes.
//!
//! [`Appender`] owns a writer task. Callers hand it [`AppendRequest`]s (one per command: the
//! command's events plus the guard messages that must land with them, each with the
//! sequence its subject must currently have). While a write is in flight, new requests queue;
//! the next write takes everything queued (up to 1000 messages, the server's atomic-batch
//! limit) as **one JetStream atomic batch**: one durable write for many commands. If the
//! server refuses a group (one request's expected sequence is stale), the group is split and
//! every request is written alone, so only the stale one fails with [`AppendError::Conflict`].
//! A request alone with one message is a plain publish with `Nats-Msg-Id`.
//!
//! **A fence in the log** ([`LogFence`], [`EventStore::fenced_appender`]): a writer that decides
//! from memory (the command service, while it holds a partition lease) adds to each atomic
//! batch carrying fenced requests one *mark* on its own fence subject, expected at the sequence
//! its previous mark got. Whoever takes a partition over from it appends a *bump* there first, so
//! every batch the old writer still sends afterwards (say, from its connection's buffer after a
//! pause) fails as a whole in the server. The writer then reads the bumps, tells its owner
//! (`on_fenced`) and answers the fenced requests [`AppendError::Fenced`]. Requests written alone
//! are fenced only by their in-process check (see `ARCHITECTURE.md`: an atomic batch costs an
//! R1 file stream far more than a lone publish, and a lone write is all a caller alone gets).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::future::join_all;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

/// The server's limit of messages in one atomic batch.
pub const MAX_ATOMIC_BATCH: usize = 1000;

/// One message to append.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Subject (one aggregate or guard).
    pub subject: String,
    /// Headers (event type, command id...); the appender adds the concurrency headers.
    pub headers: HeaderMap,
    /// Body.
    pub payload: Bytes,
    /// The sequence of the subject's last message this append was decided on (`Some(0)`: the
    /// subject must be empty). `None` only for a later message on a subject that an earlier
    /// message of the same request already checked.
    pub expected_last_subject_seq: Option<u64>,
}

/// A header map holding `pairs` in order (a message's `Talkwai-*` headers, as
/// `talkwai_proto::EventMeta::to_headers` gives them).
pub fn header_map<N: AsRef<str>, V: AsRef<str>>(
    pairs: impl IntoIterator<Item = (N, V)>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(name.as_ref(), value.as_ref());
    }
    headers
}

/// Messages that must land together or not at all.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The messages, in order.
    pub messages: Vec<Outbound>,
    /// Deduplication id (`Nats-Msg-Id`) used when the request is written as a single plain
    /// publish; atomic batches refuse it, so callers also record their own id in the headers.
    pub dedupe_id: Option<String>,
    /// The first message is a claim (a subject expected empty, such as a command record) that
    /// may land before the rest. When the request is written alone, the claim is published
    /// alone first and the rest only if it landed: two single publishes cost the server less
    /// than one atomic batch (which an R1 file stream stages on disk). If the rest then fails,
    /// the claim stays: the caller must recognize its own claim when it tries again. In a group
    /// the request is atomic as usual.
    pub claim_first: bool,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// Stream sequence of the request's first message; with
    /// [`AppendRequest::claim_first`], of its first message after the claim (the claim may have
    /// landed earlier, with other writers' messages between).
    pub first_seq: u64,
    /// Stream sequence of the request's last message.
    pub last_seq: u64,
    /// The server had already stored this message (same `Nats-Msg-Id` within the window).
    pub duplicate: bool,
}

/// Why an append failed. Nothing of a failed request is in the stream, except after
/// [`AppendError::Unknown`], whose outcome callers must find out by reading the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// A subject's last sequence is not the expected one: decide again on fresh state.
    #[error("wrong last sequence: {0}")]
    Conflict(String),
    /// JetStream refused the messages for another reason (too large, no stream...).
    #[error("jetstream refused the append: {0}")]
    Rejected(String),
    /// The write may or may not have landed (timeout, connection lost).
    #[error("append outcome unknown: {0}")]
    Unknown(String),
    /// The appender is shut down.
    #[error("appender is closed")]
    Closed,
    /// The request's fence failed right before it would have been written: nothing of it
    /// was sent (see [`Appender::append_fenced`]).
    #[error("fenced: the writer no longer holds what the request was decided under")]
    Fenced,
}

/// A check made right before a request is written; `false` drops it unwritten.
pub type Fence = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a fenced writer is told: the bumps others appended on its fence subject.
pub type OnFenced = Box<dyn Fn(&[crate::StoredMessage]) + Send + Sync>;

/// A writer's fence in the log (see the module docs).
pub struct LogFence {
    /// The writer's own fence subject (one per writer process).
    pub subject: String,
    /// The body of the mark each fenced batch adds on `subject`.
    pub mark: Bytes,
    /// The mark's headers.
    pub mark_headers: HeaderMap,
    /// Called with the messages others appended on `subject` (the bumps) when a batch was
    /// refused because of them.
    pub on_fenced: OnFenced,
}

impl std::fmt::Debug for LogFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFence")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A [`LogFence`] in use: what the writer's next mark expects.
struct ActiveFence {
    fence: LogFence,
    store: crate::EventStore,
    /// The sequence of the fence subject's last message as this writer knows it.
    expected: std::sync::atomic::AtomicU64,
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct AppenderConfig {
    /// Group requests in flight into one atomic batch (the group commit). Off: every request
    /// is its own write (for comparisons).
    pub group: bool,
    /// Writes in flight at once.
    pub max_in_flight: usize,
    /// Most messages in one write (at most [`MAX_ATOMIC_BATCH`]).
    pub max_batch_messages: usize,
    /// Requests waiting for a write; senders wait when it is full (backpressure).
    pub queue: usize,
    /// How long to wait for the server's acknowledgement.
    pub ack_timeout: Duration,
    /// While another write is in flight and the group being formed has fewer than
    /// `linger_messages` messages, wait up to this long for more requests (a small atomic
    /// batch costs the server about as much as a large one). Zero: never wait.
    pub linger: Duration,
    /// The group size below which the writer lingers.
    pub linger_messages: usize,
}

impl Default for AppenderConfig {
    fn default() -> Self {
        Self {
            group: true,
            max_in_flight: 2,
            max_batch_messages: MAX_ATOMIC_BATCH,
            queue: 8192,
            ack_timeout: Duration::from_secs(10),
            linger: Duration::ZERO,
            linger_messages: 64,
        }
    }
}

struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendAck, AppendError>>,
    fence: Option<Fence>,
}

impl Job {
    /// Whether the job may still be written.
    fn admitted(&self) -> bool {
        self.fence.as_ref().is_none_or(|fence| fence())
    }
}

/// The group-commit writer. Cheap to clone; the writer task stops when every clone is dropped.
#[derive(Clone, Debug)]
pub struct Appender {
    tx: mpsc::Sender<Job>,
    /// Appends submitted and not yet answered.
    pending: Arc<AtomicUsize>,
    stats: Arc<GroupStats>,
}

/// How full the writes are: writes made and requests they carried (a request is one
/// command's messages), counted since the appender started.
#[derive(Debug, Default)]
pub struct GroupStats {
    writes: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
}

impl GroupStats {
    /// `(writes, requests)` so far; two readings give the mean group size in between.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    fn record(&self, requests: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
    }
}

/// Counts one append as pending while alive.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("messages", &self.request.messages.len())
            .finish()
    }
}

impl Appender {
    /// Spawns the writer task on the current tokio runtime.
    pub fn start(client: async_nats::Client, config: AppenderConfig) -> Self {
        Self::spawn(client, config, None)
    }

    /// [`start`](Self::start) with a fence in the log: groups carrying fenced requests add a
    /// mark on `fence.subject` (see the module docs). The fence needs one write in flight
    /// (each mark expects the previous one); with more, `config.max_in_flight` is lowered to 1.
    pub async fn start_fenced(
        store: &crate::EventStore,
        mut config: AppenderConfig,
        fence: LogFence,
    ) -> Result<Self, crate::StoreError> {
        if config.max_in_flight > 1 {
            warn!(
                writes_in_flight = config.max_in_flight,
                "a fence in the log needs one write in flight; using 1"
            );
            config.max_in_flight = 1;
        }
        let expected = store
            .last_of_subject(&fence.subject)
            .await?
            .map_or(0, |m| m.seq);
        let active = ActiveFence {
            fence,
            store: store.clone(),
            expected: std::sync::atomic::AtomicU64::new(expected),
        };
        Ok(Self::spawn(store.client().clone(), config, Some(active)))
    }

    fn spawn(
        client: async_nats::Client,
        config: AppenderConfig,
        log_fence: Option<ActiveFence>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(GroupStats::default());
        let writer = Writer {
            client,
            config,
            stats: Arc::clone(&stats),
            batch_ids: BatchIds::new(),
            log_fence,
        };
        tokio::spawn(writer.run(rx));
        Self {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            stats,
        }
    }

    /// How full this appender's writes are.
    pub fn stats(&self) -> Arc<GroupStats> {
        Arc::clone(&self.stats)
    }

    /// Whether no append is waiting or being written right now: the next one will most
    /// likely be written alone (and a claim-first request as two single publishes).
    pub fn idle(&self) -> bool {
        self.pending.load(Ordering::Relaxed) == 0
    }

    /// Appends the request's messages atomically; resolves when they are durable (or not).
    pub async fn append(&self, request: AppendRequest) -> Result<AppendAck, AppendError> {
        self.submit(request, None).await
    }

    /// [`append`](Self::append), checking `fence` right before the request is written (after
    /// any wait in the queue); when it fails nothing is written and the answer is
    /// [`AppendError::Fenced`]. The command service fences its partition leases this way: a
    /// paused instance that wakes after losing a lease writes nothing it decided before.
    pub async fn append_fenced(
        &self,
        request: AppendRequest,
        fence: Fence,
    ) -> Result<AppendAck, AppendError> {
        self.submit(request, Some(fence)).await
    }

    async fn submit(
        &self,
        request: AppendRequest,
        fence: Option<Fence>,
    ) -> Result<AppendAck, AppendError> {
        if request.messages.is_empty() {
            return Err(AppendError::Rejected("empty append".into()));
        }
        if request.messages.len() > MAX_ATOMIC_BATCH {
            return Err(AppendError::Rejected(format!(
                "{} messages in one append, at most {MAX_ATOMIC_BATCH}",
                request.messages.len()
            )));
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        let _pending = Pending(&self.pending);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                request,
                reply,
                fence,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }
}

struct Writer {
    client: async_nats::Client,
    config: AppenderConfig,
    stats: Arc<GroupStats>,
    batch_ids: BatchIds,
    log_fence: Option<ActiveFence>,
}

/// Short atomic-batch ids. The server stores `Nats-Batch-Id` with every message of a batch,
/// forever, so it is kept short: a random prefix per appender (48 bits) and a counter, both
/// base 62, 9–15 characters where a UUID takes 32. Unique among the batches in flight on a
/// stream, which is all the server asks of it.
struct BatchIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl BatchIds {
    fn new() -> Self {
        let random = uuid::Uuid::new_v4().as_u128() as u64 & 0xFFFF_FFFF_FFFF;
        Self {
            prefix: format!("{:0>9}", base62(random)),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{}", self.prefix, base62(n))
    }
}

/// `n` in base 62 (`0-9A-Za-z`), most significant digit first.
fn base62(mut n: u64) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(11);
    loop {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.max_in_flight.max(1)));
        let mut deferred: VecDeque<Job> = VecDeque::new();
        let done = Arc::new(Notify::new());
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let first = match deferred.pop_front() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            let mut group = vec![first];
            if this.config.group {
                let mut builder = this.fill(&mut group, &mut deferred, &mut rx);
                let max = this.config.max_in_flight.max(1);
                if !this.config.linger.is_zero() && permits.available_permits() + 1 < max {
                    this.linger(&mut builder, &mut group, &mut rx, &done, &permits)
                        .await;
                }
                // Keep arrival order: skipped jobs are older than the deferred ones left (rx
                // is only read once `deferred` is empty).
                while let Some(job) = builder.skipped.pop_back() {
                    deferred.push_front(job);
                }
            }
            let writer = Arc::clone(&this);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                writer.write_group(group, true).await;
                drop(permit);
                done.notify_waiters();
            });
        }
        // Let in-flight writes finish before the task ends.
        let _ = permits
            .acquire_many(this.config.max_in_flight.max(1) as u32)
            .await;
    }

    /// Waits for more jobs while the group is small, until it is big enough, `linger` has
    /// passed, or a write in flight finishes (a permit frees up).
    async fn linger(
        &self,
        builder: &mut GroupBuilder,
        group: &mut Vec<Job>,
        rx: &mut mpsc::Receiver<Job>,
        done: &Notify,
        permits: &Semaphore,
    ) {
        let target = self.config.linger_messages.min(builder.limit);
        if builder.count >= target || !builder.skipped.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.config.linger;
        let finished = done.notified();
        tokio::pin!(finished);
        if permits.available_permits() + 1 >= self.config.max_in_flight.max(1) {
            // The write in flight finished meanwhile.
            return;
        }
        while builder.count < target {
            tokio::select! {
                job = rx.recv() => {
                    let Some(job) = job else { return };
                    if !builder.consider(job, group) {
                        return;
                    }
                    while builder.count < builder.limit {
                        let Ok(job) = rx.try_recv() else { break };
                        if !builder.consider(job, group) {
                            return;
                        }
                    }
                }
                () = &mut finished => return,
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Adds queued jobs to the group while they fit and touch no subject already in it.
    fn fill(
        &self,
        group: &mut Vec<Job>,
        deferred: &mut VecDeque<Job>,
        rx: &mut mpsc::Receiver<Job>,
    ) -> GroupBuilder {
        let mut builder = GroupBuilder {
            subjects: group
                .iter()
                .flat_map(|j| j.request.messages.iter().map(|m| m.subject.clone()))
                .collect(),
            count: group.iter().map(|j| j.request.messages.len()).sum(),
            limit: self.config.max_batch_messages.clamp(1, MAX_ATOMIC_BATCH),
            skipped: VecDeque::new(),
        };
        let mut full = false;
        while let Some(job) = deferred.pop_front() {
            if !builder.consider(job, group) {
                full = true;
                break;
            }
        }
        while !full && builder.count < builder.limit {
            match rx.try_recv() {
                Ok(job) => {
                    if !builder.consider(job, group) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        builder
    }

    /// Writes a group as one atomic batch (a lone request as itself). Fences are checked
    /// before anything is sent and again right before the commit; when one fails at the
    /// commit, the batch is left uncommitted (the server drops it) and, once
    /// (`rewrite_fenced`), the others are written again without it.
    async fn write_group(&self, group: Vec<Job>, rewrite_fenced: bool) {
        // The fences are checked last, right before the write.
        let (group, fenced): (Vec<Job>, Vec<Job>) = group.into_iter().partition(Job::admitted);
        for job in fenced {
            metrics::counter!("talkwai_append_fenced_total").increment(1);
            let _ = job.reply.send(Err(AppendError::Fenced));
        }
        if group.is_empty() {
            return;
        }
        let sizes = group
            .iter()
            .map(|j| j.request.messages.len())
            .sum::<usize>();
        metrics::histogram!("talkwai_append_group_commands").record(group.len() as f64);
        self.stats.record(group.len());
        metrics::histogram!("talkwai_append_group_messages").record(sizes as f64);
        if group.len() == 1 {
            for job in group {
                let result = self.write_one(&job.request, &|| job.admitted()).await;
                let _ = job.reply.send(result);
            }
            return;
        }
        let fences = || group.iter().all(Job::admitted);
        let mut messages: Vec<&Outbound> = group
            .iter()
            .flat_map(|j| j.request.messages.iter())
            .collect();
        // The mark goes last, so the batch's acknowledged sequence is the mark's.
        let mark = self
            .log_fence
            .as_ref()
            .filter(|_| group.iter().any(|j| j.fence.is_some()))
            .map(|active| Outbound {
                subject: active.fence.subject.clone(),
                headers: active.fence.mark_headers.clone(),
                payload: active.fence.mark.clone(),
                expected_last_subject_seq: Some(active.expected.load(Ordering::Acquire)),
            });
        if let Some(mark) = &mark {
            messages.push(mark);
        }
        let total = messages.len() as u64;
        let published = self.publish_atomic(&messages, &fences).await;
        drop(messages);
        if let (Some(active), Ok(last)) = (&self.log_fence, &published)
            && mark.is_some()
        {
            active.expected.store(*last, Ordering::Release);
        }
        let group = match published {
            Err(AppendError::Conflict(_)) if mark.is_some() => {
                let Some(group) = self.fenced_out(group).await else {
                    return;
                };
                group
            }
            _ => group,
        };
        match published {
            Err(AppendError::Fenced) if rewrite_fenced => {
                Box::pin(self.write_group(group, false)).await;
            }
            Ok(last) => {
                debug!(
                    commands = group.len(),
                    messages = total,
                    last_seq = last,
                    "group committed"
                );
                let mut next = last + 1 - total;
                for job in group {
                    let n = job.request.messages.len() as u64;
                    let claim = u64::from(job.request.claim_first && n > 1);
                    let ack = AppendAck {
                        first_seq: next + claim,
                        last_seq: next + n - 1,
                        duplicate: false,
                    };
                    next += n;
                    let _ = job.reply.send(Ok(ack));
                }
            }
            Err(AppendError::Unknown(reason)) => {
                for job in group {
                    let _ = job.reply.send(Err(AppendError::Unknown(reason.clone())));
                }
            }
            Err(err) => {
                // Someone's expected sequence was stale (or one request is refused): nothing
                // landed; write each request alone so only the culprit fails.
                debug!(error = %err, commands = group.len(), "group refused, splitting");
                metrics::counter!("talkwai_append_group_splits_total").increment(1);
                let results = join_all(group.iter().map(|job| async move {
                    self.write_one(&job.request, &|| job.admitted()).await
                }))
                .await;
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    /// After a group carrying a mark was refused: whether others bumped this writer's fence.
    /// If they did, its fenced requests are answered [`AppendError::Fenced`], the owner is told,
    /// and the others (if any) are returned to be written alone; if not (a stale expectation
    /// of some request), the whole group is returned. `None`: nothing left to write.
    async fn fenced_out(&self, group: Vec<Job>) -> Option<Vec<Job>> {
        let active = self.log_fence.as_ref()?;
        let known = active.expected.load(Ordering::Acquire);
        let after = match active
            .store
            .read_subject(&active.fence.subject, known)
            .await
        {
            Ok(after) => after,
            Err(err) => {
                warn!(error = %err, "cannot read the writer's fence; splitting the group");
                return Some(group);
            }
        };
        let Some(last) = after.last() else {
            return Some(group);
        };
        active.expected.store(last.seq, Ordering::Release);
        let bumps: Vec<crate::StoredMessage> = after
            .into_iter()
            .filter(|m| m.payload != active.fence.mark)
            .collect();
        if bumps.is_empty() {
            // Our own mark from a write whose outcome we did not learn.
            return Some(group);
        }
        warn!(
            bumps = bumps.len(),
            "fenced in the log: another instance took over a partition"
        );
        (active.fence.on_fenced)(&bumps);
        let (fenced, rest): (Vec<Job>, Vec<Job>) =
            group.into_iter().partition(|j| j.fence.is_some());
        metrics::counter!("talkwai_append_log_fenced_total").increment(fenced.len() as u64);
        for job in fenced {
            let _ = job.reply.send(Err(AppendError::Fenced));
        }
        (!rest.is_empty()).then_some(rest)
    }

    /// Writes one request; `fence` is checked right before each publish.
    async fn write_one(
        &self,
        request: &AppendRequest,
        fence: &(dyn Fn() -> bool + Sync),
    ) -> Result<AppendAck, AppendError> {
        if request.claim_first
            && let [claim, rest @ ..] = request.messages.as_slice()
            && !rest.is_empty()
        {
            let claim = AppendRequest {
                messages: vec![claim.clone()],
                dedupe_id: None,
                claim_first: false,
            };
            Box::pin(self.write_one(&claim, fence)).await?;
            let rest = AppendRequest {
                messages: rest.to_vec(),
                dedupe_id: None,
                claim_first: false,
            };
            return Box::pin(self.write_one(&rest, fence)).await;
        }
        if let [message] = request.messages.as_slice() {
            let mut headers = message.headers.clone();
            if let Some(expected) = message.expected_last_subject_seq {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    expected.to_string().as_str(),
                );
            }
            if let Some(id) = &request.dedupe_id {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            if !fence() {
                return Err(AppendError::Fenced);
            }
            let ack = self
                .request(&message.subject, headers, message.payload.clone())
                .await?;
            return Ok(AppendAck {
                first_seq: ack.seq,
                last_seq: ack.seq,
                duplicate: ack.duplicate,
            });
        }
        let messages: Vec<&Outbound> = request.messages.iter().collect();
        let last = self.publish_atomic(&messages, fence).await?;
        let n = messages.len() as u64;
        Ok(AppendAck {
            first_seq: last + 1 - n,
            last_seq: last,
            duplicate: false,
        })
    }

    /// Publishes `messages` as one atomic batch; returns the last message's sequence. `fence`
    /// is checked right before the commit: when it fails the commit is not sent, so the server
    /// drops the batch, and the answer is [`AppendError::Fenced`].
    async fn publish_atomic(
        &self,
        messages: &[&Outbound],
        fence: &(dyn Fn() -> bool + Sync),
    ) -> Result<u64, AppendError> {
        let batch_id = self.batch_ids.next();
        let last_index = messages.len() - 1;
        for (index, message) in messages.iter().enumerate() {
            let mut headers = message.headers.clone();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
            if let Some(expected) = message.expected_last_subject_seq {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    expected.to_string().as_str(),
                );
            }
            if index == last_index {
                headers.insert("Nats-Batch-Commit", "1");
                if !fence() {
                    return Err(AppendError::Fenced);
                }
                let ack = self
                    .request(&message.subject, headers, message.payload.clone())
                    .await?;
                if ack.count.is_some_and(|c| c != messages.len() as u64) {
                    return Err(AppendError::Unknown(format!(
                        "batch ack counts {:?} messages, sent {}",
                        ack.count,
                        messages.len()
                    )));
                }
                return Ok(ack.seq);
            }
            self.client
                .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
                .await
                .map_err(|e| AppendError::Unknown(e.to_string()))?;
        }
        Err(AppendError::Rejected("empty batch".into()))
    }

    async fn request(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PubAck, AppendError> {
        let request = tokio::time::timeout(
            self.config.ack_timeout,
            self.client
                .request_with_headers(subject.to_owned(), headers, payload),
        );
        // A lost connection loses the ack too: say "unknown" at once, so the caller can find
        // the outcome in the log as soon as the connection is back, instead of waiting out the
        // ack timeout.
        let response = tokio::select! {
            response = request => response,
            () = crate::connection_lost(&self.client) => {
                return Err(AppendError::Unknown(
                    "connection lost while waiting for the append ack".into(),
                ));
            }
        }
        .map_err(|_| AppendError::Unknown("timed out waiting for the append ack".into()))?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                AppendError::Rejected("no stream listens on this subject".into())
            }
            _ => AppendError::Unknown(e.to_string()),
        })?;
        let reply: AckReply = serde_json::from_slice(&response.payload)
            .map_err(|e| AppendError::Unknown(format!("unreadable ack: {e}")))?;
        match reply {
            AckReply {
                error: Some(error), ..
            } => {
                if matches!(error.err_code, 10071 | 10164) {
                    Err(AppendError::Conflict(error.description))
                } else {
                    warn!(code = error.err_code, description = %error.description, "append refused");
                    Err(AppendError::Rejected(error.description))
                }
            }
            AckReply {
                seq: Some(seq),
                duplicate,
                count,
                ..
            } => Ok(PubAck {
                seq,
                duplicate: duplicate.unwrap_or(false),
                count,
            }),
            AckReply { .. } => Err(AppendError::Unknown("ack without sequence".into())),
        }
    }
}

/// The group being formed: its subjects and size.
struct GroupBuilder {
    subjects: HashSet<String>,
    count: usize,
    limit: usize,
    /// Jobs that did not fit or touch a subject already in the group, in arrival order.
    skipped: VecDeque<Job>,
}

impl GroupBuilder {
    /// Adds `job` to the group if it fits and touches no subject already in it; returns
    /// false when the group is full.
    fn consider(&mut self, job: Job, group: &mut Vec<Job>) -> bool {
        let n = job.request.messages.len();
        if self.count + n > self.limit {
            self.skipped.push_back(job);
            return false;
        }
        if job
            .request
            .messages
            .iter()
            .any(|m| self.subjects.contains(&m.subject))
        {
            self.skipped.push_back(job);
            return true;
        }
        self.subjects
            .extend(job.request.messages.iter().map(|m| m.subject.clone()));
        self.count += n;
        group.push(job);
        true
    }
}

struct PubAck {
    seq: u64,
    duplicate: bool,
    count: Option<u64>,
}

#[derive(Deserialize)]
struct AckReply {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: Option<bool>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[cfg(test)]
mod tests {
    use super::{BatchIds, base62};
    use std::collections::HashSet;

    #[test]
    fn base62_counts_in_62_digits() {
        assert_eq!(base62(0), "0");
        assert_eq!(base62(61), "z");
        assert_eq!(base62(62), "10");
        assert_eq!(base62(u64::MAX), "LygHa16AHYF");
    }

    #[test]
    fn batch_ids_are_short_and_unique_per_appender_and_across_appenders() {
        let (a, b) = (BatchIds::new(), BatchIds::new());
        assert_ne!(a.prefix, b.prefix);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            for ids in [&a, &b] {
                let id = ids.next();
                assert!(id.len() <= 15 && id.chars().all(|c| c.is_ascii_alphanumeric()));
                assert!(seen.insert(id));
            }
        }
    }
}
