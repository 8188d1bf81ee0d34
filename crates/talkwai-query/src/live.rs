//! Live queries: a dashboard subscribes to a query and receives the fresh answer whenever a
//! committed change may have changed it and the answer did change.
//!
//! - `talkwai.qry.<scope>.subscribe` (request, same body as a query): answers the first result
//!   with a `subscription` id, the `subject` updates are published on
//!   (`talkwai.qry.<scope>.live.<id>`) and a `control` subject.
//! - `talkwai.qry.<scope>.live.<id>.ctl` (request `{"op": "renew" | "unsubscribe"}`): only the
//!   instance holding the subscription answers. Unrenewed subscriptions expire after the TTL,
//!   so dead dashboards are cleaned up.
//!
//! What to evaluate again is pushed, not polled: the projector sends, with `pg_notify` in the
//! transaction of each batch, the tenants and the tables the batch touched
//! ([`talkwai_proto::changes`]); an instance listening ([`crate::feed`]) marks the
//! subscriptions of those tenants (all tenants for a platform change) that read one of those
//! tables ([`Tables`]: the namespaces of every level and filter path, and what the grant
//! confirms), and wakes the evaluator at once. A tenant's writes never cost another tenant's
//! dashboards anything, and a task write does not re-run a dashboard that reads only agents.
//!
//! Bursts coalesce per subscription: one is evaluated at most once per interval (default
//! [`INTERVAL`]); marks that land before its next turn wait for that turn and are evaluated
//! once, in a snapshot taken after the last of them, so the last answer published is always
//! the latest. An answer is published only if it changed.
//!
//! Safety net: every [`CHECK`] the checkpoint is read; a checkpoint that the notifications
//! received a [`CHECK`] later still do not account for (notifications lost while the listening
//! connection was down, an older projector) marks every subscription. Without a listening
//! connection, every checkpoint move (polled every [`POLL`]) marks every subscription.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use talkwai_proto::changes::Changed;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::exec::Scope;
use crate::model::{NAMESPACES, Namespace};
use crate::parse::{Filter, Node, Query};
use crate::service::Grant;

/// How often the checkpoint is polled without a change feed.
pub const POLL: Duration = Duration::from_millis(20);
/// Shortest time between two evaluations of one subscription (bursts coalesce), by default.
pub const INTERVAL: Duration = Duration::from_millis(20);
/// How often the checkpoint is compared with the notifications received.
pub const CHECK: Duration = Duration::from_secs(1);
/// How long a subscription lives without a renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// Most subscriptions one instance holds.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// A set of read-model tables: one bit per namespace of [`NAMESPACES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables(u32);

impl Tables {
    /// Every table.
    pub const ALL: Self = Self(u32::MAX);
    /// No table.
    pub const NONE: Self = Self(0);

    /// The table named `table` (a view in schema `talkwai`); `None` for a table no query reads.
    pub fn named(table: &str) -> Option<Self> {
        NAMESPACES
            .iter()
            .position(|n| n.table == table)
            .map(|i| Self(1 << i))
    }

    fn of(namespace: &Namespace) -> Self {
        Self::named(namespace.table).unwrap_or(Self::ALL)
    }

    /// The tables a committed change wrote: [`Tables::ALL`] when it does not say (an older
    /// projector) or names a table this version does not know.
    pub fn changed(changed: &Changed) -> Self {
        if changed.tables.is_empty() {
            return Self::ALL;
        }
        changed.tables.iter().fold(Self::NONE, |set, table| {
            set.union(Self::named(table).unwrap_or(Self::ALL))
        })
    }

    /// The tables an answer to `query` reads: the namespace of every level and of every link a
    /// filter follows, and those the grant `grant` is confirmed against.
    pub(crate) fn read_by(query: &Query, grant: Grant) -> Self {
        fn node(namespace: &Namespace, node_: &Node, set: Tables) -> Tables {
            let mut set = set.union(Tables::of(namespace));
            if let Some(filter) = &node_.params.filter {
                set = filter_tables(filter, set);
            }
            node_
                .links
                .iter()
                .fold(set, |set, (_, _, target, child)| node(target, child, set))
        }
        fn filter_tables(filter: &Filter, set: Tables) -> Tables {
            match filter {
                Filter::And(all) | Filter::Or(all) => {
                    all.iter().fold(set, |set, f| filter_tables(f, set))
                }
                Filter::Cond { path, .. } => path.iter().fold(set, |set, link| {
                    set.union(Tables::of(Namespace::target(link)))
                }),
            }
        }
        let granted = match grant {
            Grant::Platform => Self::NONE,
            Grant::Admin(_) => Self::named("admins").unwrap_or(Self::ALL),
            Grant::Member(..) => Self::named("members")
                .unwrap_or(Self::ALL)
                .union(Self::named("tenants").unwrap_or(Self::ALL)),
        };
        query
            .roots
            .iter()
            .fold(granted, |set, (_, namespace, root)| {
                node(namespace, root, set)
            })
    }

    /// Both sets together.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the sets share a table.
    pub const fn meets(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

/// One live subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) query: Query,
    pub(crate) scope: Scope,
    /// What the subscriber's token allows, confirmed again at every refresh.
    pub(crate) grant: Grant,
    /// The tables its answer depends on.
    pub(crate) tables: Tables,
    pub(crate) subject: String,
    pub(crate) hash: u64,
    pub(crate) expires: Instant,
    /// Marked: rows it reads changed since it was last evaluated.
    pub(crate) dirty: bool,
    /// Not evaluated again before this (one evaluation per interval).
    pub(crate) not_before: Instant,
    /// Times it was evaluated again after its first answer.
    pub(crate) evaluations: u64,
    /// Being evaluated now: not taken again until that evaluation is over, so two answers of
    /// one subscription are never computed at once (and never published out of order).
    pub(crate) in_flight: bool,
}

/// A subscription to evaluate: id, query, scope, grant, update subject, last digest.
pub(crate) type Marked = (Uuid, Query, Scope, Grant, String, u64);

/// What is due now.
#[derive(Debug, Default)]
pub(crate) struct Due {
    /// The marked subscriptions whose turn it is (unmarked now).
    pub(crate) marked: Vec<Marked>,
    /// When the next marked subscription's turn comes, if one waits.
    pub(crate) next: Option<Instant>,
    /// More were due than taken: take again at once.
    pub(crate) more: bool,
    /// Live subscriptions.
    pub(crate) live: usize,
}

/// The subscriptions, indexed by tenant, and the marked ones.
#[derive(Debug)]
struct Held {
    subs: HashMap<Uuid, Subscription>,
    /// Tenant-scoped subscriptions by tenant.
    by_tenant: HashMap<Uuid, HashSet<Uuid>>,
    /// Subscriptions over every tenant (admins, the platform token).
    every_tenant: HashSet<Uuid>,
    /// The marked subscriptions, oldest mark first (an id whose subscription is gone or no
    /// longer marked is skipped when reached).
    marked: VecDeque<Uuid>,
    /// When expired subscriptions were last dropped.
    swept: Instant,
}

impl Held {
    fn insert(&mut self, id: Uuid, sub: Subscription) {
        match sub.scope.tenant {
            Some(tenant) => {
                self.by_tenant.entry(tenant).or_default().insert(id);
            }
            None => {
                self.every_tenant.insert(id);
            }
        }
        self.marked.push_back(id);
        self.subs.insert(id, sub);
    }

    fn remove(&mut self, id: Uuid) {
        let Some(sub) = self.subs.remove(&id) else {
            return;
        };
        match sub.scope.tenant {
            Some(tenant) => {
                if let Some(ids) = self.by_tenant.get_mut(&tenant) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_tenant.remove(&tenant);
                    }
                }
            }
            None => {
                self.every_tenant.remove(&id);
            }
        }
    }

    /// Marks `id` if it reads one of `tables`; whether it was newly marked.
    fn mark(&mut self, id: Uuid, tables: Tables) -> bool {
        match self.subs.get_mut(&id) {
            Some(sub) if !sub.dirty && sub.tables.meets(tables) => {
                sub.dirty = true;
                self.marked.push_back(id);
                true
            }
            _ => false,
        }
    }

    /// Drops the subscriptions expired at `now`.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<Uuid> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove(id);
        }
        self.swept = now;
    }
}

/// The subscriptions this instance holds.
#[derive(Debug)]
pub struct Registry {
    held: Mutex<Held>,
    ttl: Duration,
    interval: Duration,
    /// Woken when a subscription is marked.
    marked: Notify,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(TTL, INTERVAL)
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
    /// A registry whose subscriptions expire after `ttl` without renewal and are evaluated at
    /// most once per `interval`.
    pub fn new(ttl: Duration, interval: Duration) -> Self {
        Self {
            held: Mutex::new(Held {
                subs: HashMap::new(),
                by_tenant: HashMap::new(),
                every_tenant: HashSet::new(),
                marked: VecDeque::new(),
                swept: Instant::now(),
            }),
            ttl,
            interval,
            marked: Notify::new(),
        }
    }

    /// A registry whose subscriptions expire after `ttl` without renewal.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self::new(ttl, INTERVAL)
    }

    /// The time to live of an unrenewed subscription.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The shortest time between two evaluations of one subscription.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Adds a subscription (marked: a change may have committed between its first answer and
    /// now); `None` when the instance is full.
    pub(crate) fn add(
        &self,
        scope_token: &str,
        query: Query,
        scope: Scope,
        grant: Grant,
        hash: u64,
    ) -> Option<(Uuid, String)> {
        let mut held = self.held.lock().ok()?;
        if held.subs.len() >= MAX_SUBSCRIPTIONS {
            return None;
        }
        let id = Uuid::new_v4();
        let subject = talkwai_proto::subject::live_query(scope_token, id);
        let now = Instant::now();
        let tables = Tables::read_by(&query, grant);
        held.insert(
            id,
            Subscription {
                query,
                scope,
                grant,
                tables,
                subject: subject.clone(),
                hash,
                expires: now + self.ttl,
                dirty: true,
                not_before: now,
                evaluations: 0,
                in_flight: false,
            },
        );
        drop(held);
        self.marked.notify_one();
        Some((id, subject))
    }

    /// Handles a control request for `id`; `None` when this instance does not hold it (or it
    /// expired).
    pub(crate) fn control(&self, id: Uuid, body: &[u8]) -> Option<Value> {
        let op = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_owned));
        let mut held = self.held.lock().ok()?;
        let now = Instant::now();
        let expires = held.subs.get(&id)?.expires;
        if expires <= now {
            held.remove(id);
            return None;
        }
        Some(match op.as_deref() {
            Some("renew") => {
                if let Some(sub) = held.subs.get_mut(&id) {
                    sub.expires = now + self.ttl;
                }
                json!({ "ok": true, "ttlMs": u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX) })
            }
            Some("unsubscribe") => {
                held.remove(id);
                json!({ "ok": true })
            }
            _ => {
                json!({ "ok": false, "error": { "code": "validation_failed", "message": "op is renew or unsubscribe", "field": "op" } })
            }
        })
    }

    /// Ends a subscription (its subscriber lost the right to read it).
    pub(crate) fn remove(&self, id: Uuid) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(id);
        }
    }

    /// Marks the subscriptions `changed` may concern: those of its tenants and those that
    /// read every tenant (admins), all of them when it says everything; of those, the ones
    /// that read a table it names. Returns how many were newly marked.
    pub fn mark(&self, changed: &Changed) -> usize {
        if changed.is_empty() {
            return 0;
        }
        let Ok(mut held) = self.held.lock() else {
            return 0;
        };
        let tables = Tables::changed(changed);
        let candidates: Vec<Uuid> = if changed.everything {
            held.subs.keys().copied().collect()
        } else {
            changed
                .tenants
                .iter()
                .filter_map(|tenant| held.by_tenant.get(tenant))
                .flatten()
                .chain(held.every_tenant.iter())
                .copied()
                .collect()
        };
        let marked = candidates
            .into_iter()
            .filter(|id| held.mark(*id, tables))
            .count();
        drop(held);
        if marked > 0 {
            self.marked.notify_one();
        }
        marked
    }

    /// Marks every subscription.
    pub fn mark_all(&self) {
        self.mark(&Changed {
            everything: true,
            ..Changed::default()
        });
    }

    /// Marks these subscriptions again (their evaluation could not run).
    pub(crate) fn mark_again(&self, ids: impl IntoIterator<Item = Uuid>) {
        if let Ok(mut held) = self.held.lock() {
            for id in ids {
                if let Some(sub) = held.subs.get_mut(&id) {
                    sub.in_flight = false;
                }
                held.mark(id, Tables::ALL);
            }
        }
        self.marked.notify_one();
    }

    /// The evaluations of these subscriptions are over: they may be taken again (and are
    /// woken for, if a change marked them meanwhile).
    pub(crate) fn finished(&self, ids: impl IntoIterator<Item = Uuid>) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let mut waiting = false;
        for id in ids {
            if let Some(sub) = held.subs.get_mut(&id) {
                sub.in_flight = false;
                waiting |= sub.dirty;
            }
        }
        drop(held);
        if waiting {
            self.marked.notify_one();
        }
    }

    /// Resolves once a subscription was marked since the last call (at once if one was).
    pub(crate) async fn marked(&self) {
        self.marked.notified().await;
    }

    /// Drops expired subscriptions (at most once per second); returns at most `max` of the
    /// marked ones whose turn has come at `now` and that are not being evaluated (unmarking
    /// them, counting an evaluation for each, setting their next turn an interval on and
    /// holding them in flight until [`Registry::finished`]), whether more were due, when the
    /// next waiting one's turn comes, and how many are live.
    pub(crate) fn take_due(&self, now: Instant, max: usize) -> Due {
        let Ok(mut held) = self.held.lock() else {
            return Due::default();
        };
        if now.duration_since(held.swept) >= Duration::from_secs(1) {
            held.sweep(now);
        }
        let Held { subs, marked, .. } = &mut *held;
        let mut due = Due {
            live: subs.len(),
            ..Due::default()
        };
        // Oldest mark first, so that every marked subscription gets its turn: those in
        // flight or before their turn keep their place.
        let mut kept = Vec::new();
        while let Some(id) = marked.pop_front() {
            let Some(s) = subs.get_mut(&id) else {
                continue;
            };
            if !s.dirty {
                continue;
            }
            if due.marked.len() >= max {
                due.more = true;
                marked.push_front(id);
                break;
            }
            if s.in_flight {
                // Its evaluation's end wakes the loop for it.
                kept.push(id);
                continue;
            }
            if s.not_before > now {
                due.next = Some(due.next.map_or(s.not_before, |at| at.min(s.not_before)));
                kept.push(id);
                continue;
            }
            s.dirty = false;
            s.in_flight = true;
            s.not_before = now + self.interval;
            s.evaluations += 1;
            due.marked.push((
                id,
                s.query.clone(),
                s.scope,
                s.grant,
                s.subject.clone(),
                s.hash,
            ));
        }
        for id in kept.into_iter().rev() {
            marked.push_front(id);
        }
        due
    }

    /// How many times subscription `id` was evaluated again after its first answer (`None`:
    /// not held here).
    pub fn evaluations(&self, id: Uuid) -> Option<u64> {
        self.held.lock().ok()?.subs.get(&id).map(|s| s.evaluations)
    }

    /// Records the digest last published for `id`.
    pub(crate) fn published(&self, id: Uuid, hash: u64) {
        if let Ok(mut held) = self.held.lock()
            && let Some(sub) = held.subs.get_mut(&id)
        {
            sub.hash = hash;
        }
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.held.lock().map_or(0, |h| h.subs.len())
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Audience, parse};

    fn query(shape: Value) -> Query {
        parse(&shape, Audience::Admin).expect("a valid query")
    }

    fn tables(names: &[&str]) -> Tables {
        names.iter().fold(Tables::NONE, |set, name| {
            set.union(Tables::named(name).expect("a table"))
        })
    }

    fn changed(tenant: Uuid, tables: &[&str]) -> Changed {
        Changed {
            seq: 1,
            tenants: vec![tenant],
            everything: false,
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn a_query_reads_the_tables_of_its_levels_its_filter_paths_and_its_grant() {
        let tasks = query(json!({"tasks": {}}));
        assert_eq!(Tables::read_by(&tasks, Grant::Platform), tables(&["tasks"]));
        let member = Grant::Member(Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            Tables::read_by(&tasks, member),
            tables(&["tasks", "members", "tenants"])
        );
        assert_eq!(
            Tables::read_by(&tasks, Grant::Admin(Uuid::new_v4())),
            tables(&["tasks", "admins"])
        );
        let nested = query(json!({"tenants": {"tasks": {"agent": {}}}}));
        assert_eq!(
            Tables::read_by(&nested, Grant::Platform),
            tables(&["tenants", "tasks", "agents"])
        );
        let through = query(json!({"tasks": {"$": {"where": {"agent.name": "A"}}}}));
        assert_eq!(
            Tables::read_by(&through, Grant::Platform),
            tables(&["tasks", "agents"])
        );
    }

    #[test]
    fn a_change_names_its_tables_or_all_of_them() {
        let tenant = Uuid::new_v4();
        assert_eq!(
            Tables::changed(&changed(tenant, &["tasks", "agents"])),
            tables(&["tasks", "agents"])
        );
        assert_eq!(Tables::changed(&changed(tenant, &[])), Tables::ALL);
        assert_eq!(
            Tables::changed(&changed(tenant, &["tasks", "from_the_future"])),
            Tables::ALL
        );
    }

    /// Adds a platform subscription of `tenant` to `shape`; its id.
    fn subscribe(registry: &Registry, tenant: Uuid, shape: Value) -> Uuid {
        registry
            .add(
                &tenant.to_string(),
                query(shape),
                Scope {
                    tenant: Some(tenant),
                },
                Grant::Platform,
                0,
            )
            .expect("room for it")
            .0
    }

    /// A registry with a subscription of `tenant` to `shape`, its first turn taken.
    fn holding(tenant: Uuid, shape: Value, interval: Duration) -> (Registry, Uuid, Instant) {
        let registry = Registry::new(TTL, interval);
        let id = subscribe(&registry, tenant, shape);
        let now = Instant::now();
        let first = registry.take_due(now, usize::MAX);
        assert_eq!(
            first.marked.len(),
            1,
            "a new subscription is evaluated once"
        );
        registry.finished([id]);
        (registry, id, now)
    }

    #[test]
    fn only_changes_of_its_tenant_and_its_tables_mark_a_subscription() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (registry, id, now) = holding(a, json!({"agents": {}}), Duration::ZERO);
        assert_eq!(registry.mark(&changed(b, &["agents"])), 0, "another tenant");
        assert_eq!(registry.mark(&changed(a, &["tasks"])), 0, "another table");
        assert_eq!(registry.mark(&changed(a, &["tasks", "agents"])), 1);
        assert_eq!(registry.mark(&changed(a, &[])), 0, "already marked");
        assert_eq!(registry.mark(&Changed::default()), 0, "guards only");
        let due = registry.take_due(now, usize::MAX);
        assert_eq!(due.marked.len(), 1);
        assert_eq!(registry.evaluations(id), Some(2));
        registry.finished([id]);
        assert_eq!(
            registry.mark(&Changed {
                everything: true,
                tables: vec!["users".to_owned()],
                ..Changed::default()
            }),
            0,
            "a platform change to a table it does not read"
        );
        registry.mark_all();
        assert_eq!(registry.take_due(now, usize::MAX).marked.len(), 1);
    }

    #[test]
    fn a_burst_is_evaluated_once_per_interval_and_a_mark_during_an_evaluation_gets_a_turn() {
        let tenant = Uuid::new_v4();
        let interval = Duration::from_millis(50);
        let (registry, id, start) = holding(tenant, json!({"tasks": {}}), interval);
        for _ in 0..10 {
            registry.mark(&changed(tenant, &["tasks"]));
        }
        let turn = start + interval;
        let early = registry.take_due(start + Duration::from_millis(10), usize::MAX);
        assert!(early.marked.is_empty(), "not before its interval is over");
        assert_eq!(early.next, Some(turn));
        let due = registry.take_due(turn, usize::MAX);
        assert_eq!(due.marked.len(), 1, "ten marks, one evaluation");
        assert_eq!(due.next, None);
        // A change commits while that evaluation runs: it is not lost, and the subscription
        // is not taken again while its evaluation runs, however long that takes.
        registry.mark(&changed(tenant, &["tasks"]));
        assert!(
            registry
                .take_due(turn + interval * 2, usize::MAX)
                .marked
                .is_empty(),
            "never two evaluations of one subscription at once"
        );
        registry.finished([id]);
        let due = registry.take_due(turn + interval * 2, usize::MAX);
        assert_eq!(
            due.marked.len(),
            1,
            "the last change gets its own evaluation"
        );
        registry.finished([id]);
        assert_eq!(registry.evaluations(id), Some(3));
        assert!(
            registry
                .take_due(turn + interval * 4, usize::MAX)
                .marked
                .is_empty()
        );
    }

    #[test]
    fn due_subscriptions_are_taken_a_batch_at_a_time_and_the_rest_wait_their_turn() {
        let tenant = Uuid::new_v4();
        let registry = Registry::new(TTL, Duration::ZERO);
        let ids: Vec<Uuid> = (0..5)
            .map(|_| subscribe(&registry, tenant, json!({"tasks": {}})))
            .collect();
        let now = Instant::now();
        let first = registry.take_due(now, 2);
        let oldest: Vec<Uuid> = first.marked.iter().map(|(id, ..)| *id).collect();
        assert_eq!(oldest, ids[..2], "oldest mark first");
        assert!(first.more, "three more are due");
        let second = registry.take_due(now, 2);
        assert_eq!(second.marked.len(), 2);
        assert!(second.more);
        let third = registry.take_due(now, 2);
        assert_eq!(third.marked.len(), 1);
        assert!(!third.more, "all taken");
        let mut taken: Vec<Uuid> = [first, second, third]
            .into_iter()
            .flat_map(|due| due.marked.into_iter().map(|(id, ..)| id))
            .collect();
        taken.sort_unstable();
        let mut all = ids.clone();
        all.sort_unstable();
        assert_eq!(taken, all, "each one once");
        // Marked again while all five are in flight: none is taken until its evaluation ends.
        registry.mark(&changed(tenant, &["tasks"]));
        assert!(registry.take_due(now, 10).marked.is_empty());
        registry.finished(ids.iter().copied().take(3));
        assert_eq!(registry.take_due(now, 10).marked.len(), 3);
        // The two still in flight come next, before anything marked after them.
        registry.finished(ids.iter().copied().skip(3));
        let late = subscribe(&registry, tenant, json!({"tasks": {}}));
        let mut next: Vec<Uuid> = registry
            .take_due(now, 2)
            .marked
            .iter()
            .map(|(id, ..)| *id)
            .collect();
        next.sort_unstable();
        let mut waiting = ids[3..].to_vec();
        waiting.sort_unstable();
        // (One change marks them in no particular order among themselves.)
        assert_eq!(next, waiting, "marked before the newcomer");
        assert_eq!(registry.take_due(Instant::now(), 2).marked[0].0, late);
    }

    #[test]
    fn expired_and_unsubscribed_subscriptions_leave_the_index() {
        let tenant = Uuid::new_v4();
        let (registry, id, _) = holding(tenant, json!({"tasks": {}}), Duration::ZERO);
        let gone = registry.control(id, br#"{"op": "unsubscribe"}"#);
        assert_eq!(gone, Some(json!({"ok": true})));
        assert_eq!(registry.mark(&changed(tenant, &["tasks"])), 0);
        assert!(registry.is_empty());
        let short = Registry::new(Duration::ZERO, Duration::ZERO);
        let id = subscribe(&short, tenant, json!({"tasks": {}}));
        assert_eq!(short.control(id, br#"{"op": "renew"}"#), None, "expired");
        assert!(short.is_empty());
    }
}
