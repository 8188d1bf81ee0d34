//! The NATS endpoint: `talkwai.qry.<tenant>` and `talkwai.qry.platform` on the services API
//! (queue group `talkwai-query`), with token checks, read-your-writes and bounded statements.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{GenericClient, Pool};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_auth::{Admission, Principal, PrincipalKind, RateLimitConfig, Refused, TokenVerifier};
use talkwai_domain::ErrorCode;
use talkwai_proto::{headers, subject};
use talkwai_service::{Endpoints, Registration};
use talkwai_telemetry::ops::{Liveness, Watchdog};
use tokio_postgres::types::ToSql;
use tracing::{info, warn};
use uuid::Uuid;

use crate::error::QueryError;
use crate::exec::{self, Scope};
use crate::parse::{self, Audience};
use crate::reached::{Reached, WaitError};

/// Counts one answered request (`talkwai_queries_total{kind, outcome}`, `kind` `query` or
/// `subscribe`, `outcome` `ok` or the error code) and times it
/// (`talkwai_query_duration_seconds{kind}`).
fn record(subject: &str, error: Option<&QueryError>, started: std::time::Instant) {
    let kind = if subject::is_subscribe(subject) {
        "subscribe"
    } else {
        "query"
    };
    let outcome = error.map_or_else(|| "ok".to_owned(), |e| e.code.to_string());
    metrics::histogram!("talkwai_query_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("talkwai_queries_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// Largest query body, bytes.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Longest a query may run in PostgreSQL.
pub const STATEMENT_TIMEOUT: &str = "2s";

/// Prepared statements kept per pooled connection before its cache is cleared.
const MAX_CACHED_STATEMENTS: usize = 512;
/// How long the live-query refresher may stand still before `/livez` fails (default).
pub const DEFAULT_LIVENESS: Duration = Duration::from_secs(60);
/// Longest a query waits for `minSeq`.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// Queue group of every query instance.
pub const QUEUE_GROUP: &str = "talkwai-query";
/// Name in the NATS services API.
pub const SERVICE_NAME: &str = "talkwai-query";
/// Queries and subscriptions answered at once by one instance.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long a stopping instance waits for the requests in hand.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Answers queries.
pub struct QueryService {
    pool: Pool,
    /// The token, then the per-tenant allowance (off unless configured): the command
    /// service's admission, the same rules.
    admission: Admission,
    live: Arc<crate::live::Registry>,
    /// How far the read models are known to have come: what `minSeq` waits on.
    reached: Arc<Reached>,
    /// Where to `LISTEN` for the projector's change notifications (none: poll the checkpoint).
    change_feed: Option<String>,
    /// Most rows one answer holds over all its levels; over it, `too_many_rows`.
    max_rows: usize,
    /// Beaten by every round of the live-query refresher; `/livez` fails when it goes silent.
    progress: Watchdog,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").finish_non_exhaustive()
    }
}

/// The live generation's checkpoint; 0 before the projector created the views.
pub(crate) async fn checkpoint(conn: &deadpool_postgres::Object) -> Result<u64, QueryError> {
    match conn
        .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
        .await
    {
        Ok(row) => Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(err) => Err(err.into()),
    }
}

/// What the read models must confirm about a caller before an answer leaves: checked in the
/// answer's own snapshot, sent in the same flight as the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// The platform token: nothing to confirm.
    Platform,
    /// An admin's user: an active admin, not erased.
    Admin(Uuid),
    /// A member's user and tenant: an active member of that tenant (not erased), which is
    /// active.
    Member(Uuid, Uuid),
}

impl Grant {
    /// Confirms the grant on `client` (inside the answer's transaction).
    async fn confirm(self, client: &impl GenericClient) -> Result<(), QueryError> {
        let (sql, params, refusal): (&str, Vec<&(dyn ToSql + Sync)>, &str) = match &self {
            Self::Platform => return Ok(()),
            Self::Admin(user) => (
                "SELECT 1 FROM talkwai.admins WHERE user_id = $1 AND status = 'active' AND NOT erased",
                vec![user],
                "not an active admin",
            ),
            Self::Member(user, tenant) => (
                "SELECT 1 FROM talkwai.members m JOIN talkwai.tenants t ON t.id = m.tenant_id
                 WHERE m.user_id = $1 AND m.tenant_id = $2 AND m.status = 'active' AND NOT m.erased
                   AND t.status = 'active'",
                vec![user, tenant],
                "not an active member of an active tenant",
            ),
        };
        let statement = client.prepare_cached(sql).await?;
        match client.query_opt(&statement, &params).await? {
            Some(_) => Ok(()),
            None => Err(QueryError::forbidden("", refusal)),
        }
    }
}

/// Who may read what: members their own tenant (if active, in an active tenant), admins
/// (active) and the platform token any tenant or all of them. Decides what the token allows;
/// the returned [`Grant`] is confirmed against the read models with the answer.
fn authorize(
    principal: &Principal,
    subject_tenant: Option<Uuid>,
) -> Result<(Audience, Scope, Grant), QueryError> {
    let claims = match principal {
        Principal::Platform => {
            let scope = Scope {
                tenant: subject_tenant,
            };
            return Ok((Audience::Admin, scope, Grant::Platform));
        }
        Principal::User(claims) => claims,
    };
    let user: Uuid = claims.sub.0;
    match claims.kind {
        PrincipalKind::Admin => {
            let scope = Scope {
                tenant: subject_tenant,
            };
            Ok((Audience::Admin, scope, Grant::Admin(user)))
        }
        PrincipalKind::Member => match (claims.tenant.map(|t| t.0), subject_tenant) {
            (Some(tenant), Some(subject)) if tenant == subject => Ok((
                Audience::Member,
                Scope {
                    tenant: Some(tenant),
                },
                Grant::Member(user, tenant),
            )),
            _ => Err(QueryError::forbidden(
                "tenant",
                "members query their own tenant only",
            )),
        },
    }
}

/// A read-only, repeatable-read transaction: the snapshot an answer is read in.
async fn snapshot(
    conn: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, QueryError> {
    Ok(conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Bounds every statement of the snapshot `tx` in time.
async fn bound_time(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), QueryError> {
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    ))
    .await
    .map_err(QueryError::from)
}

/// The checkpoint the snapshot `tx` sees.
async fn snapshot_checkpoint(tx: &deadpool_postgres::Transaction<'_>) -> Result<i64, QueryError> {
    let statement = tx
        .prepare_cached("SELECT last_seq FROM talkwai.checkpoint")
        .await?;
    Ok(tx.query_one(&statement, &[]).await?.get(0))
}

/// Runs a parsed query in one consistent, read-only, time-bounded snapshot: every level of the
/// answer sees the same checkpoint, which is returned with it. The caller's grant is confirmed
/// in that snapshot too; when it is not, nothing of the answer is returned.
pub(crate) async fn evaluate(
    conn: &mut deadpool_postgres::Object,
    query: &parse::Query,
    scope: Scope,
    grant: Grant,
    max_rows: usize,
) -> Result<(Value, Value, i64), QueryError> {
    let tx = snapshot(conn).await?;
    // Sent together (pipelined on the connection, executed in this order): the time bound, the
    // grant, the snapshot's checkpoint and the whole query.
    let (timed, granted, seq, answer) = tokio::join!(
        bound_time(&tx),
        grant.confirm(&tx),
        snapshot_checkpoint(&tx),
        exec::execute(&tx, query, scope, max_rows),
    );
    // A refused grant wins over whatever else failed: the caller learns nothing more.
    granted?;
    timed?;
    let seq = seq?;
    let (data, page_info) = answer?;
    tx.commit().await?;
    Ok((data, page_info, seq))
}

/// Most live queries evaluated in one snapshot (one transaction, pipelined).
const EVALUATED_TOGETHER: usize = 32;

/// Evaluates several queries in one read-only, time-bounded snapshot, all sent together
/// (pipelined on the connection): one transaction's round trips for the lot instead of one
/// transaction each, which is what bounded live queries spread over many tenants. Each answer
/// is as [`evaluate`] gives it, in the order of `items`. A query that fails here (a refused
/// grant, too many rows, a statement timeout that aborted the transaction for those after it)
/// is evaluated again on its own, so that its answer is exactly what it alone would get.
pub(crate) async fn evaluate_together(
    conn: &mut deadpool_postgres::Object,
    items: &[(&parse::Query, Scope, Grant)],
    max_rows: usize,
) -> Vec<Result<(Value, Value, i64), QueryError>> {
    if items.len() < 2 {
        let mut answers = Vec::with_capacity(items.len());
        for (query, scope, grant) in items {
            answers.push(evaluate(conn, query, *scope, *grant, max_rows).await);
        }
        return answers;
    }
    let together = async {
        let tx = snapshot(conn).await?;
        let each = futures::future::join_all(items.iter().map(|(query, scope, grant)| {
            let tx = &tx;
            async move {
                let (granted, answer) = tokio::join!(
                    grant.confirm(tx),
                    exec::execute(tx, query, *scope, max_rows)
                );
                granted.and(answer)
            }
        }));
        let (timed, seq, answers) = tokio::join!(bound_time(&tx), snapshot_checkpoint(&tx), each);
        timed?;
        let seq = seq?;
        // Read-only: nothing to keep; an aborted transaction ends the same way.
        let _ = tx.rollback().await;
        Ok::<_, QueryError>(
            answers
                .into_iter()
                .map(|answer| answer.map(|(data, page_info)| (data, page_info, seq)))
                .collect::<Vec<_>>(),
        )
    }
    .await;
    let mut answers = match together {
        Ok(answers) => answers,
        Err(_) => items
            .iter()
            .map(|_| Err(QueryError::unavailable("")))
            .collect(),
    };
    for (answer, (query, scope, grant)) in answers.iter_mut().zip(items) {
        if answer.is_err() {
            *answer = evaluate(conn, query, *scope, *grant, max_rows).await;
        }
    }
    answers
}

/// A request that passed the token and parsing checks.
pub(crate) struct Admitted {
    query: parse::Query,
    scope: Scope,
    grant: Grant,
    /// The sequence the read models must have reached first.
    min_seq: Option<u64>,
}

/// A query request: the InstaQL object itself, or `{"query": {...}, "minSeq": n}`.
struct Request {
    query: Value,
    min_seq: Option<u64>,
}

fn decode_request(body: &[u8]) -> Result<Request, QueryError> {
    if body.len() > MAX_QUERY_BYTES {
        return Err(QueryError {
            code: ErrorCode::PayloadTooLarge,
            message: format!("query is {} bytes, at most {MAX_QUERY_BYTES}", body.len()),
            field: None,
            retry_after_ms: None,
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| QueryError::invalid("", format!("query is not valid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(QueryError::invalid("", "a query is a JSON object"));
    };
    if object.contains_key("query") {
        if let Some(extra) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "query" | "minSeq"))
        {
            return Err(QueryError::unknown(
                extra,
                format!("unknown request field {extra}"),
            ));
        }
        let min_seq = match object.get("minSeq") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| QueryError::invalid("minSeq", "minSeq is a sequence number"))?,
            ),
        };
        return Ok(Request {
            query: object["query"].clone(),
            min_seq,
        });
    }
    Ok(Request {
        query: value,
        min_seq: None,
    })
}

impl QueryService {
    /// A service over `pool` (the read models' database).
    pub fn new(pool: Pool, verifier: TokenVerifier) -> Self {
        Self {
            pool,
            admission: Admission::new(verifier),
            live: Arc::new(crate::live::Registry::default()),
            reached: Arc::new(Reached::default()),
            change_feed: None,
            max_rows: exec::DEFAULT_MAX_ROWS,
            progress: Watchdog::new("live_queries", DEFAULT_LIVENESS),
        }
    }

    /// Follows the projector's change notifications on the database at `url` (the read
    /// models' database), so live queries are evaluated again only for the tenants and tables
    /// a committed batch touched ([`crate::feed`]). Without it, every checkpoint move evaluates
    /// every live query.
    pub fn with_change_feed(mut self, url: impl Into<String>) -> Self {
        self.change_feed = Some(url.into());
        self
    }

    /// The live subscriptions this instance holds (for their evaluation counts).
    pub fn live_queries(&self) -> Arc<crate::live::Registry> {
        Arc::clone(&self.live)
    }

    /// Makes [`liveness`](Self::liveness) fail once the live-query refresher has not gone
    /// round for `silence` (default 60 s).
    pub fn with_liveness_after(mut self, silence: Duration) -> Self {
        self.progress = Watchdog::new("live_queries", silence);
        self
    }

    /// `/livez`: the live-query refresher still goes round (it is the one loop of the service
    /// that runs on its own; a wedged or dead refresher leaves every live query stale).
    pub fn liveness(&self) -> Liveness {
        Liveness::watchdogs(vec![self.progress.clone()])
    }

    /// Caps the rows of one answer, all levels together (default
    /// [`exec::DEFAULT_MAX_ROWS`]; at least 1): a query or live query whose answer would hold
    /// more is refused with `too_many_rows` instead of being cut short.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows.max(1);
        self
    }

    /// Refuses a tenant's queries with `rate_limited` beyond `limits`.
    pub fn with_rate_limit(self, limits: RateLimitConfig) -> Self {
        Self {
            admission: self.admission.with_rate_limit(limits),
            ..self
        }
    }

    /// Answers one request on `subject`; returns the reply body and whether it is an error.
    pub async fn answer(
        &self,
        subject: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> (Value, Option<QueryError>) {
        match self.try_answer(subject, auth, body).await {
            Ok(value) => (value, None),
            Err(err) => (json!({ "ok": false, "error": err.to_body() }), Some(err)),
        }
    }

    async fn try_answer(
        &self,
        subject: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> Result<Value, QueryError> {
        let scope_token = subject::query_scope(subject).ok_or_else(|| {
            QueryError::invalid("subject", format!("{subject} is not a query subject"))
        })?;
        let admitted = self.admit(scope_token, auth, body)?;
        let (data, page_info, seq) = self.evaluate_admitted(&admitted).await?;
        Ok(json!({ "ok": true, "data": data, "pageInfo": page_info, "seq": seq }))
    }

    /// Checks the caller's token and the request, and parses the query; returns it with what
    /// [`evaluate`] must still confirm about the caller.
    pub(crate) fn admit(
        &self,
        scope_token: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> Result<Admitted, QueryError> {
        let subject_tenant = subject::Scope::parse(scope_token)
            .map_err(|_| {
                QueryError::invalid("tenant", "the subject names a tenant UUID or 'platform'")
            })?
            .tenant()
            .map(|tenant| *tenant.as_uuid());
        // The tenant fence comes with the grant (`authorize`), after the body is read.
        let principal = self
            .admission
            .admit(auth)
            .map_err(|refused| match refused {
                Refused::Token(e) => QueryError {
                    code: ErrorCode::Unauthenticated,
                    message: e.to_string(),
                    field: None,
                    retry_after_ms: None,
                },
                Refused::RateLimited(limited) => QueryError::rate_limited(&limited),
                Refused::OutsideTenant => {
                    QueryError::forbidden("tenant", "members query their own tenant only")
                }
            })?;
        let request = decode_request(body)?;
        let (audience, scope, grant) = authorize(&principal, subject_tenant)?;
        let query = parse::parse(&request.query, audience)?;
        Ok(Admitted {
            query,
            scope,
            grant,
            min_seq: request.min_seq,
        })
    }

    /// A pooled connection whose statement cache is kept bounded.
    async fn connection(&self) -> Result<deadpool_postgres::Object, QueryError> {
        let conn = self.pool.get().await?;
        // Query shapes are cached per connection (see `exec::fetch`); a caller cycling through
        // endless shapes must not grow that cache without bound.
        if conn.statement_cache.size() > MAX_CACHED_STATEMENTS {
            conn.statement_cache.clear();
        }
        Ok(conn)
    }

    /// Waits (without a connection, see [`crate::reached`]) until the read models reach the
    /// request's `minSeq`, then answers it in one snapshot; an answer whose snapshot is still
    /// below `minSeq` waits again, all within [`MAX_WAIT`].
    async fn evaluate_admitted(
        &self,
        admitted: &Admitted,
    ) -> Result<(Value, Value, i64), QueryError> {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        let behind = |seq: u64, at: u64| {
            QueryError::unavailable(format!(
                "the read models have not reached sequence {seq} yet (at {at})"
            ))
        };
        loop {
            if let Some(seq) = admitted.min_seq {
                // Before the projector's first run the views do not exist yet: that is "behind".
                self.reached
                    .wait(&self.pool, seq, deadline)
                    .await
                    .map_err(|err| match err {
                        WaitError::Behind(at) => behind(seq, at),
                        WaitError::Query(err) => err,
                    })?;
            }
            let mut conn = self.connection().await?;
            let (data, page_info, at) = evaluate(
                &mut conn,
                &admitted.query,
                admitted.scope,
                admitted.grant,
                self.max_rows,
            )
            .await?;
            let at_seq = u64::try_from(at).unwrap_or(0);
            match admitted.min_seq {
                Some(seq) if at_seq < seq => {
                    // The read models went back (rebuilt from scratch) after they were seen
                    // at `seq`: wait for them again.
                    self.reached.lowered(at_seq);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(behind(seq, at_seq));
                    }
                }
                _ => {
                    self.reached.saw(at_seq);
                    return Ok((data, page_info, at));
                }
            }
        }
    }

    /// Sets how long live queries live without renewal (default [`crate::live::TTL`]).
    pub fn with_live_ttl(mut self, ttl: Duration) -> Self {
        self.live = Arc::new(crate::live::Registry::new(ttl, self.live.interval()));
        self
    }

    /// Sets the shortest time between two evaluations of one live query (default
    /// [`crate::live::INTERVAL`]): a burst of changes gives a dashboard at most one update per
    /// interval, the last one holding the latest answer.
    pub fn with_live_interval(mut self, interval: Duration) -> Self {
        self.live = Arc::new(crate::live::Registry::new(self.live.ttl(), interval));
        self
    }

    /// Starts a live query: answers the first result and where updates go.
    async fn subscribe(
        &self,
        subject: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> Result<Value, QueryError> {
        let scope_token = subject::subscribe_scope(subject).ok_or_else(|| {
            QueryError::invalid("subject", format!("{subject} is not a subscribe subject"))
        })?;
        let admitted = self.admit(scope_token, auth, body)?;
        let (data, page_info, seq) = self.evaluate_admitted(&admitted).await?;
        let hash = crate::live::digest(&data, &page_info);
        let Admitted {
            query,
            scope,
            grant,
            ..
        } = admitted;
        let (id, live_subject) = self
            .live
            .add(scope_token, query, scope, grant, hash)
            .ok_or_else(|| QueryError::unavailable("too many live queries on this instance"))?;
        Ok(json!({
            "ok": true, "subscription": id, "subject": live_subject,
            "control": subject::live_control(scope_token, id),
            "ttlMs": u64::try_from(self.live.ttl().as_millis()).unwrap_or(u64::MAX),
            "data": data, "pageInfo": page_info, "seq": seq,
        }))
    }

    /// Evaluates the marked live queries as soon as their turn comes (at most once per
    /// interval each) and publishes changed answers. Marks come from `feed`, the moment a
    /// notification arrives; without one listening, from checkpoint moves polled every
    /// [`crate::live::POLL`].
    async fn refresh_live(
        self: Arc<Self>,
        client: async_nats::Client,
        mut stop: tokio::sync::watch::Receiver<bool>,
        feed: Option<Arc<crate::feed::ChangeFeed>>,
    ) {
        let mut last_seen = None;
        let mut last_check: Option<std::time::Instant> = None;
        // A checkpoint read at the last check that notifications did not yet account for.
        let mut unexplained: Option<u64> = None;
        // When the next marked subscription's turn comes.
        let mut next_turn: Option<std::time::Instant> = None;
        let workers = Arc::new(tokio::sync::Semaphore::new(
            self.pool.status().max_size.div_ceil(2).max(1),
        ));
        loop {
            let listening = feed.as_ref().filter(|f| f.listening());
            let now = std::time::Instant::now();
            let mut wake = match (listening, last_check) {
                (None, _) => now + crate::live::POLL,
                (Some(_), Some(at)) => at + crate::live::CHECK,
                (Some(_), None) => now,
            };
            if let Some(turn) = next_turn {
                wake = wake.min(turn);
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = self.live.marked() => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            self.progress.beat();
            if self.live.is_empty() {
                metrics::gauge!("talkwai_live_queries").set(0.0);
                next_turn = None;
                // Nothing to check for: the next round is a check away (or a subscription).
                last_check = Some(std::time::Instant::now());
                continue;
            }
            let listening = feed.as_ref().filter(|f| f.listening());
            let due = last_check.is_none_or(|at| at.elapsed() >= crate::live::CHECK);
            if listening.is_none() || due {
                if let Ok(conn) = self.pool.get().await
                    && let Ok(seq) = checkpoint(&conn).await
                {
                    self.reached.saw(seq);
                    match listening {
                        None => {
                            if last_seen != Some(seq) {
                                self.live.mark_all();
                            }
                        }
                        Some(feed) => {
                            let notified = feed.max_seq();
                            if unexplained.is_some_and(|earlier| earlier > notified) {
                                warn!(
                                    checkpoint = seq,
                                    notified,
                                    "change notifications missing; evaluating every live query"
                                );
                                self.live.mark_all();
                            }
                            unexplained = (seq > notified).then_some(seq);
                        }
                    }
                    last_seen = Some(seq);
                }
                last_check = Some(std::time::Instant::now());
            }
            // Due subscriptions go out a batch at a time to whichever worker is free (half the
            // pool: queries and subscribes keep the other half), without waiting for a round
            // to end: a quiet tenant's dashboard waits for a free worker, never for the
            // slowest batch of someone else's.
            let seq = last_seen.unwrap_or(0);
            loop {
                let Ok(worker) = Arc::clone(&workers).acquire_owned().await else {
                    return;
                };
                let due = self
                    .live
                    .take_due(std::time::Instant::now(), EVALUATED_TOGETHER);
                next_turn = due.next;
                metrics::gauge!("talkwai_live_queries").set(due.live as f64);
                if due.marked.is_empty() {
                    break;
                }
                metrics::counter!("talkwai_live_evaluations_total")
                    .increment(due.marked.len() as u64);
                let this = Arc::clone(&self);
                let client = client.clone();
                tokio::spawn(async move {
                    this.refresh_batch(&client, due.marked, seq).await;
                    drop(worker);
                });
                if !due.more {
                    break;
                }
            }
        }
    }

    /// Evaluates `batch` in one snapshot on one connection, publishing the answers that
    /// changed (`seq`: the checkpoint last read, for an answer refused without one), then
    /// lets the registry take its subscriptions again.
    async fn refresh_batch(
        &self,
        client: &async_nats::Client,
        batch: Vec<crate::live::Marked>,
        seq: u64,
    ) {
        let Ok(mut conn) = self.pool.get().await else {
            self.live.mark_again(batch.into_iter().map(|(id, ..)| id));
            return;
        };
        let items: Vec<_> = batch
            .iter()
            .map(|(_, query, scope, grant, ..)| (query, *scope, *grant))
            .collect();
        let answers = evaluate_together(&mut conn, &items, self.max_rows).await;
        for ((id, _, _, _, subject, hash), answer) in batch.iter().zip(answers) {
            self.publish_answer((client, &conn), (*id, subject, *hash), answer, seq)
                .await;
        }
        self.live.finished(batch.into_iter().map(|(id, ..)| id));
    }

    /// Publishes a live query's answer when it changed, or its end when its grant went.
    async fn publish_answer(
        &self,
        (client, conn): (&async_nats::Client, &deadpool_postgres::Object),
        (id, subject, hash): (Uuid, &str, u64),
        answer: Result<(Value, Value, i64), QueryError>,
        seq: u64,
    ) {
        match answer {
            Ok((data, page_info, at)) => {
                self.reached.saw(u64::try_from(at).unwrap_or(0));
                let digest = crate::live::digest(&data, &page_info);
                if digest != hash {
                    let update = json!({ "subscription": id, "ok": true, "data": data, "pageInfo": page_info, "seq": at });
                    let bytes = Bytes::from(serde_json::to_vec(&update).unwrap_or_default());
                    if client.publish(subject.to_owned(), bytes).await.is_ok() {
                        self.live.published(id, digest);
                    }
                }
            }
            Err(err) if err.code == ErrorCode::TooManyRows => {
                // The answer grew past the cap: say so once (not a stale or cut answer);
                // the subscription stays, and answers again once it fits.
                let body = err.to_body();
                let digest = crate::live::digest(&json!(body), &Value::Null);
                if digest != hash {
                    let at = checkpoint(conn).await.unwrap_or(seq);
                    let update =
                        json!({ "subscription": id, "ok": false, "error": body, "seq": at });
                    let bytes = Bytes::from(serde_json::to_vec(&update).unwrap_or_default());
                    if client.publish(subject.to_owned(), bytes).await.is_ok() {
                        self.live.published(id, digest);
                    }
                }
            }
            Err(err) if err.code == ErrorCode::Forbidden => {
                // Deactivated since it subscribed: no more answers.
                info!(subscription = %id, "live query ended: {}", err.message);
                self.live.remove(id);
            }
            Err(err) => warn!(error = %err, "live query evaluation failed"),
        }
    }

    /// Answers live-query control requests for the subscriptions this instance holds until
    /// `stop` changes (or the subscription ends).
    async fn answer_controls(
        self: Arc<Self>,
        client: async_nats::Client,
        mut control: async_nats::Subscriber,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                message = control.next() => {
                    let Some(message) = message else { return };
                    if let (Some(id), Some(reply)) = (subject::live_control_id(&message.subject), message.reply.clone())
                        && let Some(answer) = self.live.control(id, &message.payload)
                    {
                        let _ = client.publish(reply, Bytes::from(answer.to_string())).await;
                    }
                }
            }
        }
    }

    /// Serves `talkwai.qry.*` (queries), `talkwai.qry.*.subscribe` and the live-query control
    /// subjects until `shutdown` resolves, then drains in-flight requests.
    pub async fn run(
        self,
        client: async_nats::Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), QueryError> {
        // Subscribed before the endpoints, so the confirmation of theirs covers it too.
        let control = client
            .subscribe(subject::LIVE_CONTROL_ENDPOINT)
            .await
            .map_err(|e| {
                QueryError::unavailable(format!("cannot subscribe to live controls: {e}"))
            })?;
        let mut endpoints = Endpoints::start(
            &client,
            Registration {
                name: SERVICE_NAME,
                version: env!("CARGO_PKG_VERSION"),
                description: "TalkwAI queries: InstaQL-shaped reads of the read models",
                queue_group: QUEUE_GROUP,
            },
            vec![
                ("query".to_owned(), subject::QUERY_ENDPOINT.to_owned()),
                (
                    "subscribe".to_owned(),
                    subject::SUBSCRIBE_ENDPOINT.to_owned(),
                ),
            ],
        )
        .await
        .map_err(|e| QueryError::unavailable(e.to_string()))?;
        let this = Arc::new(self);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let feed = this.change_feed.clone().map(|url| {
            let feed = Arc::new(crate::feed::ChangeFeed::default());
            tokio::spawn(Arc::clone(&feed).run(
                url,
                (Arc::clone(&this.live), Arc::clone(&this.reached)),
                stop_rx.clone(),
            ));
            feed
        });
        let refresher =
            tokio::spawn(Arc::clone(&this).refresh_live(client.clone(), stop_rx.clone(), feed));
        let controls =
            tokio::spawn(Arc::clone(&this).answer_controls(client.clone(), control, stop_rx));
        info!("query service ready");
        let in_flight = endpoints
            .serve(Arc::clone(&this), MAX_IN_FLIGHT, shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = refresher.await;
        let _ = controls.await;
        endpoints.stop().await;
        in_flight.drain(Some(SHUTDOWN_GRACE)).await;
        Ok(())
    }
}

impl talkwai_service::Handler for QueryService {
    async fn handle(&self, message: &async_nats::Message) -> (Bytes, async_nats::HeaderMap) {
        let auth = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::AUTHORIZATION))
            .map(|v| v.as_str());
        let subject = message.subject.as_str();
        let started = std::time::Instant::now();
        let (body, error) = if subject::is_subscribe(subject) {
            match self.subscribe(subject, auth, &message.payload).await {
                Ok(value) => (value, None),
                Err(err) => (json!({ "ok": false, "error": err.to_body() }), Some(err)),
            }
        } else {
            self.answer(subject, auth, &message.payload).await
        };
        record(subject, error.as_ref(), started);
        let mut reply_headers = async_nats::HeaderMap::new();
        if let Some(err) = error {
            reply_headers.insert(headers::NATS_SERVICE_ERROR, err.message.as_str());
            reply_headers.insert(
                headers::NATS_SERVICE_ERROR_CODE,
                err.code.status().to_string().as_str(),
            );
        }
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        (bytes, reply_headers)
    }
}
