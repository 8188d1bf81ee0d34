//! Live queries: a dashboard subscribes to a query and receives the fresh answer whenever the
//! projection's checkpoint moves and the answer changed.
//!
//! - `talkwai.qry.<scope>.subscribe` (request, same body as a query): answers the first result
//!   with a `subscription` id, the `subject` updates are published on
//!   (`talkwai.qry.<scope>.live.<id>`) and a `control` subject.
//! - `talkwai.qry.<scope>.live.<id>.ctl` (request `{"op": "renew" | "unsubscribe"}`): only the
//!   instance holding the subscription answers. Unrenewed subscriptions expire after the TTL,
//!   so dead dashboards are cleaned up.
//!
//! What to evaluate again is pushed, not polled: the projector sends, with `pg_notify` in the
//! transaction of each batch, the tenants the batch touched ([`talkwai_proto::changes`]); an
//! instance listening ([`crate::feed`]) marks the subscriptions of those tenants (all of them
//! for a platform change), and every [`POLL`] evaluates only the marked ones, once however
//! many batches marked them (bursts coalesce; a mark that lands during an evaluation is kept
//! for the next, so the last answer published is always the latest). An answer is published
//! only if it changed. A tenant's writes never cost another tenant's dashboards anything.
//!
//! Safety net: every [`CHECK`] the checkpoint is read; a checkpoint that the notifications
//! received a [`CHECK`] later still do not account for (notifications lost while the listening
//! connection was down, an older projector) marks every subscription. Without a listening
//! connection, every checkpoint move marks every subscription, as before.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use talkwai_proto::changes::Changed;
use uuid::Uuid;

use crate::exec::Scope;
use crate::parse::Query;
use crate::service::Grant;

/// How often marked subscriptions are evaluated (and, without a change feed, how often the
/// checkpoint is polled).
pub const POLL: Duration = Duration::from_millis(20);
/// How often the checkpoint is compared with the notifications received.
pub const CHECK: Duration = Duration::from_secs(1);
/// How long a subscription lives without a renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// Most subscriptions one instance holds.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// One live subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) query: Query,
    pub(crate) scope: Scope,
    /// What the subscriber's token allows, confirmed again at every refresh.
    pub(crate) grant: Grant,
    pub(crate) subject: String,
    pub(crate) hash: u64,
    pub(crate) expires: Instant,
    /// Marked: its tenant's rows changed since it was last evaluated.
    pub(crate) dirty: bool,
    /// Times it was evaluated again after its first answer.
    pub(crate) evaluations: u64,
}

/// A subscription to evaluate: id, query, scope, grant, update subject, last digest.
pub(crate) type Marked = (Uuid, Query, Scope, Grant, String, u64);

/// The subscriptions this instance holds.
#[derive(Debug)]
pub struct Registry {
    subs: Mutex<HashMap<Uuid, Subscription>>,
    ttl: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

/// A stable digest of an answer, to publish only changes.
pub(crate) fn digest(data: &Value, page_info: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    data.to_string().hash(&mut hasher);
    page_info.to_string().hash(&mut hasher);
    hasher.finish()
}

impl Registry {
    /// A registry whose subscriptions expire after `ttl` without renewal.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            subs: Mutex::default(),
            ttl,
        }
    }

    /// The time to live of an unrenewed subscription.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Adds a subscription; `None` when the instance is full.
    pub(crate) fn add(
        &self,
        scope_token: &str,
        query: Query,
        scope: Scope,
        grant: Grant,
        hash: u64,
    ) -> Option<(Uuid, String)> {
        let mut subs = self.subs.lock().ok()?;
        if subs.len() >= MAX_SUBSCRIPTIONS {
            return None;
        }
        let id = Uuid::new_v4();
        let subject = talkwai_proto::subject::live_query(scope_token, id);
        subs.insert(
            id,
            Subscription {
                query,
                scope,
                grant,
                subject: subject.clone(),
                hash,
                expires: Instant::now() + self.ttl,
                // A change may have committed between its first answer and now.
                dirty: true,
                evaluations: 0,
            },
        );
        Some((id, subject))
    }

    /// Handles a control request for `id`; `None` when this instance does not hold it.
    pub(crate) fn control(&self, id: Uuid, body: &[u8]) -> Option<Value> {
        let op = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_owned));
        let mut subs = self.subs.lock().ok()?;
        if !subs.contains_key(&id) {
            return None;
        }
        Some(match op.as_deref() {
            Some("renew") => {
                if let Some(sub) = subs.get_mut(&id) {
                    sub.expires = Instant::now() + self.ttl;
                }
                json!({ "ok": true, "ttlMs": u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX) })
            }
            Some("unsubscribe") => {
                subs.remove(&id);
                json!({ "ok": true })
            }
            _ => {
                json!({ "ok": false, "error": { "code": "validation_failed", "message": "op is renew or unsubscribe", "field": "op" } })
            }
        })
    }

    /// Ends a subscription (its subscriber lost the right to read it).
    pub(crate) fn remove(&self, id: Uuid) {
        if let Ok(mut subs) = self.subs.lock() {
            subs.remove(&id);
        }
    }

    /// Marks the subscriptions `changed` may concern: those of its tenants and those that
    /// read every tenant (admins); all of them when it says everything.
    pub fn mark(&self, changed: &Changed) {
        let Ok(mut subs) = self.subs.lock() else {
            return;
        };
        for sub in subs.values_mut() {
            sub.dirty |= changed.everything
                || sub
                    .scope
                    .tenant
                    .is_none_or(|tenant| changed.tenants.contains(&tenant));
        }
    }

    /// Marks every subscription.
    pub fn mark_all(&self) {
        self.mark(&Changed {
            everything: true,
            ..Changed::default()
        });
    }

    /// Drops expired subscriptions; returns the marked ones (unmarking them, and counting an
    /// evaluation for each) and how many are live.
    pub(crate) fn take_marked(&self) -> (Vec<Marked>, usize) {
        let Ok(mut subs) = self.subs.lock() else {
            return (Vec::new(), 0);
        };
        let now = Instant::now();
        subs.retain(|_, s| s.expires > now);
        let live = subs.len();
        let marked = subs
            .iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(id, s)| {
                s.dirty = false;
                s.evaluations += 1;
                let query = s.query.clone();
                (*id, query, s.scope, s.grant, s.subject.clone(), s.hash)
            })
            .collect();
        (marked, live)
    }

    /// How many times subscription `id` was evaluated again after its first answer (`None`:
    /// not held here).
    pub fn evaluations(&self, id: Uuid) -> Option<u64> {
        self.subs.lock().ok()?.get(&id).map(|s| s.evaluations)
    }

    /// Records the digest last published for `id`.
    pub(crate) fn published(&self, id: Uuid, hash: u64) {
        if let Ok(mut subs) = self.subs.lock()
            && let Some(sub) = subs.get_mut(&id)
        {
            sub.hash = hash;
        }
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.subs.lock().map_or(0, |s| s.len())
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
