//! Aggregate state from the log: loading, a bounded cache, and the facts a decider needs.
//!
//! The cache is safe without invalidation messages: the target aggregate is appended with the
//! sequence it was decided on, so stale state is refused by JetStream and reloaded. What a
//! command depends on is checked against its current last sequence in one merged read
//! ([`Repository::heads`]), and only what changed is read, except what this instance owns:
//! an aggregate cached during the current tenure of its partition (see [`crate::ownership`]) is
//! the log's last word and needs no read at all. Cached aggregates are shared (`Arc`): a hit
//! copies nothing.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use talkwai_domain::ids::TenantId;
use talkwai_domain::{
    AggregateRef, AggregateState, EntityKind, EventBody, FactKey, Facts, GuardEvent, GuardKey,
};
use talkwai_eventstore::{EventStore, HeadReader, StoredMessage};
use talkwai_keys::KeyStore;
use talkwai_proto::event::{DecodeError, data_key, decode_stored_with};
use talkwai_proto::sealed::{NoKeys, Opener};
use talkwai_proto::subject;
use uuid::Uuid;

use crate::error::ServiceError;
use crate::ownership::Ownership;

/// What a command did, kept so a retried command gets the original answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// Aggregate version after the command.
    pub version: u64,
    /// Stream sequence of the command's last event.
    pub seq: u64,
    /// The command's events.
    pub events: Vec<EventBody>,
}

/// An aggregate as read from the log.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its state.
    pub state: AggregateState,
    /// Sequence of its subject's last message (0: none).
    pub last_seq: u64,
    /// Outcome of every command in its history, by command id.
    pub commands: HashMap<Uuid, CommandRecord>,
    /// The tenure of its partition under which it was read or written (0: none); see
    /// [`crate::ownership`].
    pub tenure: u64,
    /// The data key its personal fields are sealed with (the latest `Talkwai-Key`; `None`:
    /// none yet).
    pub key: Option<Uuid>,
    /// Some event of its history carries personal fields in clear (written without a master
    /// key, or before one was configured).
    pub clear: bool,
}

impl Loaded {
    fn empty(target: AggregateRef) -> Self {
        Self {
            state: AggregateState::new(target),
            last_seq: 0,
            commands: HashMap::new(),
            tenure: 0,
            key: None,
            clear: false,
        }
    }

    /// Folds stored messages (in order) into the state, strictly, opening sealed fields with
    /// `keys`.
    pub fn fold(
        &mut self,
        subject: &str,
        messages: &[StoredMessage],
        keys: &dyn Opener,
    ) -> Result<(), ServiceError> {
        for message in messages {
            let key = data_key(|name| message.header(name));
            if let Some(key) = key {
                self.key = Some(key);
            }
            let stored =
                decode_stored_with(subject, |name| message.header(name), &message.payload, keys)
                    .map_err(|e| match e {
                        DecodeError::Event(e) => ServiceError::decode(subject, &e),
                        other => ServiceError::Corrupt {
                            subject: subject.to_owned(),
                            message: other.to_string(),
                        },
                    })?
                    .ok_or_else(|| ServiceError::Corrupt {
                        subject: subject.to_owned(),
                        message: "not an aggregate's subject".to_owned(),
                    })?;
            // Without a key, no field of it was sealed: what it holds is clear in the log.
            if key.is_none()
                && talkwai_proto::sealed::has_personal_text(
                    &stored.body.event_type,
                    &stored.body.data,
                )
            {
                self.clear = true;
            }
            talkwai_domain::apply(&mut self.state, &stored.event)
                .map_err(|e| ServiceError::evolve(subject, &e))?;
            self.last_seq = message.seq;
            if let Some(id) = stored.meta.command_id {
                let record = self.commands.entry(id).or_insert_with(|| CommandRecord {
                    version: 0,
                    seq: 0,
                    events: Vec::new(),
                });
                record.version = self.state.version();
                record.seq = message.seq;
                record.events.push(stored.body);
            }
        }
        Ok(())
    }
}

/// The last message of subjects, by subject (absent: the subject is empty).
pub type Heads = talkwai_eventstore::Heads;

/// The heads one attempt decides on: read from the log, or known from memory (aggregates this
/// instance cached during the current tenure of their partition), with the tenure each
/// subject's partition had before the read.
#[derive(Debug, Default)]
pub struct HeadsView {
    read: Arc<Heads>,
    /// Subjects known without reading, and their last sequence.
    known: HashMap<String, u64>,
    /// Tenure of each asked subject's partition, taken before the read (absent: 0).
    tags: HashMap<String, u64>,
}

impl HeadsView {
    /// The last sequence of `subject` (`None`: empty).
    pub fn seq(&self, subject: &str) -> Option<u64> {
        match self.known.get(subject) {
            Some(0) => None,
            Some(seq) => Some(*seq),
            None => self.read.get(subject).map(|m| m.seq),
        }
    }

    /// The last message of `subject`, when it was read (guards and command records always are).
    pub fn message(&self, subject: &str) -> Option<&StoredMessage> {
        self.read.get(subject)
    }

    /// The tenure `subject`'s partition had before the read (0: not held).
    pub fn tag(&self, subject: &str) -> u64 {
        self.tags.get(subject).copied().unwrap_or(0)
    }

    /// How many subjects were answered from memory.
    pub fn known(&self) -> usize {
        self.known.len()
    }
}

/// Merged head reads outstanding at once (the appender's writes in flight, for the same reason:
/// one is answered while the next gathers).
const HEAD_READS_IN_FLIGHT: usize = 2;

/// A guard's holder and the sequence of its last message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardHead {
    /// Current holder.
    pub owner: Option<Uuid>,
    /// Last sequence of the guard's subject (0: never used).
    pub seq: u64,
}

/// Loads aggregates and facts, through a bounded cache.
pub struct Repository {
    store: EventStore,
    heads: HeadReader,
    /// The partitions this instance holds (`None`: no ownership, every head is read).
    ownership: Option<Arc<Ownership>>,
    /// Aggregates by subject, shared with the commands using them.
    cache: Mutex<LruCache<String, Arc<Loaded>>>,
    /// Seals and opens personal fields (`None`: written in clear).
    keys: Option<KeyStore>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository").finish_non_exhaustive()
    }
}

impl Repository {
    /// A repository caching at most `capacity` aggregates. Starts its head reader on the
    /// current tokio runtime.
    pub fn new(store: EventStore, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            heads: HeadReader::start(store.clone(), HEAD_READS_IN_FLIGHT),
            ownership: None,
            store,
            cache: Mutex::new(LruCache::new(capacity)),
            keys: None,
        }
    }

    /// Seals personal fields with `keys` and opens them when reading (`None`: in clear).
    pub fn with_keys(mut self, keys: Option<KeyStore>) -> Self {
        self.keys = keys;
        self
    }

    /// The key store, when personal fields are sealed.
    pub fn keys(&self) -> Option<&KeyStore> {
        self.keys.as_ref()
    }

    /// Trusts what was cached during the tenures of `ownership`'s partitions.
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// The partitions this repository trusts its cache for, when it owns partitions at all.
    pub fn ownership(&self) -> Option<&Arc<Ownership>> {
        self.ownership.as_ref()
    }

    /// The event store.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The current tenure of `subject`'s partition (0: not held, or no ownership).
    pub fn tenure_of(&self, subject: &str) -> u64 {
        self.ownership.as_ref().map_or(0, |o| o.tenure_of(subject))
    }

    /// The cached aggregate at `subject` when it is the log's last word: cached during the
    /// current tenure of its partition.
    fn trusted(&self, subject: &str) -> Option<Arc<Loaded>> {
        let ownership = self.ownership.as_ref()?;
        self.cached(subject)
            .filter(|loaded| ownership.trusts(subject, loaded.tenure))
    }

    fn cached(&self, subject: &str) -> Option<Arc<Loaded>> {
        self.cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(subject).map(Arc::clone))
    }

    /// Whether the cache holds the aggregate at `subject`.
    pub fn holds(&self, subject: &str) -> bool {
        self.cache.lock().is_ok_and(|c| c.contains(subject))
    }

    /// Remembers an aggregate's state.
    pub fn remember(&self, subject: String, loaded: Loaded) {
        self.share(subject, Arc::new(loaded));
    }

    /// Caches `loaded` unless the cache already holds a later copy (a slower read must not
    /// undo a write that landed meanwhile): the log only grows, so a higher last sequence is
    /// newer; at the same sequence a tagged copy is kept over an untagged one.
    fn share(&self, subject: String, loaded: Arc<Loaded>) {
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(existing) = cache.peek(&subject)
                && (existing.last_seq > loaded.last_seq
                    || (existing.last_seq == loaded.last_seq && loaded.tenure == 0))
            {
                return;
            }
            cache.put(subject, loaded);
        }
    }

    /// Forgets an aggregate (after a conflict).
    pub fn forget(&self, subject: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.pop(subject);
        }
    }

    /// Reads what the log holds beyond `base` (or everything), up to at least `head` (the
    /// subject's last sequence, just read), and caches the result.
    pub async fn reload(
        &self,
        target: AggregateRef,
        base: Option<Arc<Loaded>>,
        head: u64,
        tag: u64,
    ) -> Result<Arc<Loaded>, ServiceError> {
        let subject = subject::event(&target);
        let from = base.as_ref().map_or(0, |b| b.last_seq);
        let messages = self
            .store
            .read_subject_through(&subject, from, head)
            .await?;
        // The base stays in the cache (and with other readers) until the result replaces it.
        let mut loaded = base.map_or_else(|| Loaded::empty(target), Arc::unwrap_or_clone);
        match &self.keys {
            Some(keys) => {
                let ring = talkwai_keys::keyring_of(Some(keys), &messages)
                    .await
                    .map_err(|e| ServiceError::Keys(e.to_string()))?;
                loaded.fold(&subject, &messages, &ring)?;
            }
            None => loaded.fold(&subject, &messages, &NoKeys)?,
        }
        loaded.tenure = tag;
        let loaded = Arc::new(loaded);
        self.share(subject, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// The last sequence of each subject (duplicates allowed): from memory for the aggregates
    /// this instance cached during their partition's current tenure, else read after this call
    /// began, in one round trip shared with the commands reading at the same moment. No round
    /// trip at all when everything is known.
    pub async fn heads(&self, subjects: Vec<String>) -> Result<HeadsView, ServiceError> {
        let mut view = HeadsView::default();
        let mut unknown = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let tag = self.tenure_of(&subject);
            if tag != 0 {
                if let Some(loaded) = self.trusted(&subject) {
                    view.known.insert(subject.clone(), loaded.last_seq);
                    view.tags.insert(subject, tag);
                    continue;
                }
                view.tags.insert(subject.clone(), tag);
            }
            unknown.push(subject);
        }
        if !unknown.is_empty() {
            view.read = self
                .heads
                .read(unknown)
                .await
                .map_err(ServiceError::Store)?;
        }
        Ok(view)
    }

    /// The aggregate at `target` as of `head` (its subject's last sequence, just read; `None`:
    /// the subject is empty): the cached copy when it is at `head`, else the cached copy plus
    /// the messages after it, else the whole history. An empty subject costs no read.
    /// `tag` is the tenure of its partition taken before `head` was read (0: none).
    pub async fn load_at(
        &self,
        target: AggregateRef,
        head: Option<u64>,
        tag: u64,
    ) -> Result<Arc<Loaded>, ServiceError> {
        let subject = subject::event(&target);
        let cached = self.cached(&subject);
        let Some(head) = head else {
            if cached.is_some() {
                // The cache knows messages the log no longer has (stream purged): drop it.
                self.forget(&subject);
            }
            return Ok(Arc::new(Loaded::empty(target)));
        };
        match cached {
            Some(cached) if cached.last_seq == head => Ok(cached),
            Some(cached) if cached.last_seq < head => {
                self.reload(target, Some(cached), head, tag).await
            }
            _ => self.reload(target, None, head, tag).await,
        }
    }

    /// Loads the facts named by `keys` from `heads` (which must hold every subject of
    /// [`fact_subjects`]), reading only the aggregates whose cached copy is behind.
    pub async fn facts_at(
        &self,
        keys: &[FactKey],
        scope: Option<TenantId>,
        heads: &HeadsView,
    ) -> Result<(Facts, HashMap<GuardKey, GuardHead>), ServiceError> {
        let mut facts = Facts::default();
        let mut guards = HashMap::new();
        for key in keys {
            let Some(subject) = fact_subject(key, scope) else {
                continue;
            };
            match key {
                FactKey::Guard(guard) => {
                    let head = guard_head(&subject, heads.message(&subject))?;
                    facts.guards.insert(guard.clone(), head.owner);
                    guards.insert(guard.clone(), head);
                }
                _ => {
                    let Some(head) = heads.seq(&subject) else {
                        continue;
                    };
                    let Some(target) = fact_target(key, scope) else {
                        continue;
                    };
                    let loaded = self
                        .load_at(target, Some(head), heads.tag(&subject))
                        .await?;
                    insert_fact(&mut facts, &loaded.state);
                }
            }
        }
        Ok((facts, guards))
    }

    /// The current head of each guard.
    pub async fn guard_heads(
        &self,
        keys: &[GuardKey],
    ) -> Result<HashMap<GuardKey, GuardHead>, ServiceError> {
        let subjects: Vec<String> = keys.iter().map(subject::guard).collect();
        let heads = self.store.last_of_subjects(&subjects).await?;
        let mut out = HashMap::new();
        for (key, subject) in keys.iter().zip(subjects) {
            out.insert(key.clone(), guard_head(&subject, heads.get(&subject))?);
        }
        Ok(out)
    }

    /// Loads an aggregate checking its head first, so the state is current (used for facts
    /// such as the actor's own member or admin entity).
    pub async fn load_current(&self, target: AggregateRef) -> Result<Arc<Loaded>, ServiceError> {
        let subject = subject::event(&target);
        let tag = self.tenure_of(&subject);
        if tag != 0
            && let Some(loaded) = self.trusted(&subject)
        {
            return Ok(loaded);
        }
        let head = self.store.last_of_subject(&subject).await?;
        self.load_at(target, head.map(|m| m.seq), tag).await
    }
}

/// The subjects whose heads [`Repository::facts_at`] needs for `keys`.
pub fn fact_subjects(keys: &[FactKey], scope: Option<TenantId>) -> Vec<String> {
    keys.iter().filter_map(|k| fact_subject(k, scope)).collect()
}

/// A guard's holder and sequence from its subject's head (`None`: never used).
pub fn guard_head(subject: &str, head: Option<&StoredMessage>) -> Result<GuardHead, ServiceError> {
    let owner = head.map(|m| guard_owner(subject, m)).transpose()?.flatten();
    Ok(GuardHead {
        owner,
        seq: head.map_or(0, |m| m.seq),
    })
}

/// The aggregate a fact key names, within the command's scope.
fn fact_target(key: &FactKey, scope: Option<TenantId>) -> Option<AggregateRef> {
    let (kind, tenant, id) = match key {
        FactKey::Tenant(t) => (EntityKind::Tenant, Some(*t), t.0),
        FactKey::Member(m) => (EntityKind::Member, Some(scope?), m.0),
        FactKey::Agent(a) => (EntityKind::Agent, Some(scope?), a.0),
        FactKey::Admin(a) => (EntityKind::Admin, None, a.0),
        FactKey::User(u) => (EntityKind::User, None, u.0),
        FactKey::Guard(_) => return None,
    };
    Some(AggregateRef { kind, tenant, id })
}

fn fact_subject(key: &FactKey, scope: Option<TenantId>) -> Option<String> {
    match key {
        FactKey::Guard(guard) => Some(subject::guard(guard)),
        other => fact_target(other, scope).map(|t| subject::event(&t)),
    }
}

fn insert_fact(facts: &mut Facts, state: &AggregateState) {
    match state {
        AggregateState::Tenant(id, s) => {
            if let Some(t) = s.live() {
                facts.tenants.insert(*id, t.clone());
            }
        }
        AggregateState::Member(_, id, s) => {
            if let Some(m) = s.live() {
                facts.members.insert(*id, m.clone());
            }
        }
        AggregateState::Agent(_, id, s) => {
            if let Some(a) = s.live() {
                facts.agents.insert(*id, a.clone());
            }
        }
        AggregateState::Admin(id, s) => {
            if let Some(a) = s.live() {
                facts.admins.insert(*id, a.clone());
            }
        }
        AggregateState::User(id, s) => {
            if let Some(u) = s.live() {
                facts.users.insert(*id, u.clone());
            }
        }
        AggregateState::Task(..) => {}
    }
}

/// Reads a guard's last message: who holds it now.
fn guard_owner(subject: &str, message: &StoredMessage) -> Result<Option<Uuid>, ServiceError> {
    let body: EventBody =
        serde_json::from_slice(&message.payload).map_err(|e| ServiceError::Corrupt {
            subject: subject.to_owned(),
            message: e.to_string(),
        })?;
    let event = GuardEvent::decode(&body).map_err(|e| ServiceError::Corrupt {
        subject: subject.to_owned(),
        message: e.to_string(),
    })?;
    Ok(match event {
        GuardEvent::Claimed { owner, .. } => Some(owner),
        GuardEvent::Released { .. } => None,
    })
}
