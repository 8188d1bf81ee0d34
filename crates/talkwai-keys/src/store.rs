//! The key store: the key hierarchy in a JetStream KV bucket, outside the log.
//!
//! ```text
//! master key (env / secret file, id = fingerprint)       never in NATS
//!   └─ tenant.<tenant|platform>   tenant key, wrapped by a master key      (one per scope)
//!        └─ block.<scope>.<uuid>  up to 256 data keys, each wrapped by that tenant key
//!                                 (one data key per subject)
//! ```
//!
//! A data key seals the personal fields of one data subject (a member, a task of a tenant; an
//! admin or a `$users` entry of the platform). Destroying it erases that subject; destroying a
//! tenant key erases every subject of the tenant at once; rotating the master key re-wraps the
//! tenant keys and leaves the log and the data keys as they are.
//!
//! Data keys are stored in **blocks**: one bucket entry holds the keys one pool refill made,
//! and a key's id names its block and slot (the block's id with the slot in its last two
//! bytes), so a new subject costs no stored message of its own and the bucket holds one
//! subject per block, not per task. Keys written one per entry (`data.<scope>.<uuid>`, before
//! blocks) are still read, destroyed, exported and restored.
//!
//! Writers never wait for a key write on their path: [`KeyStore::take`] hands out a key from a
//! pool of keys already durable in the bucket, refilled in the background a block at a time
//! (an unused key left by a crash is harmless). Readers fetch the keys a batch needs in one go
//! ([`KeyStore::keyring`], one read per block) through a bounded LRU cache; a destroyed key is
//! remembered as erased (a destroyed key never comes back).
//!
//! Destroying a key rewrites its block with the slot empty and then erases every older
//! revision of the block from the bucket's stream (JetStream's message delete overwrites the
//! stored bytes unless told not to), so the wrapped key is not left on disk; the bucket keeps
//! a few revisions per entry ([`HISTORY`]) so that the rewrite never drops the old one
//! unerased.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream::{self, kv};
use futures::{StreamExt, TryStreamExt};
use lru::LruCache;
use talkwai_domain::ids::TenantId;
use talkwai_proto::Scope;
use talkwai_proto::sealed::{OpenError, Opened, Opener, Sealed};
use tracing::warn;
use uuid::Uuid;

use crate::cipher::{DataKey, MasterKey, SecretKey, Wrapped, open_sealed};
use crate::error::KeyError;

/// The bucket's default name.
pub const BUCKET: &str = "TALKWAI_KEYS";

/// Key fetches in flight at once while building a keyring.
const FETCHES_IN_FLIGHT: usize = 64;

/// Data keys per block (a slot index fits the key id's last two bytes).
pub const BLOCK_KEYS: usize = 256;

/// Revisions the bucket keeps per entry: a block rewritten by a destroy keeps its old
/// revision until the destroy erases it (with one, the server would drop it unerased).
pub const HISTORY: i64 = 8;

/// Attempts at rewriting a block that other destroys change at the same moment.
const REWRITES: usize = 16;

/// Where the keys live and how much is kept in memory.
#[derive(Debug, Clone)]
pub struct KeyStoreConfig {
    /// The KV bucket.
    pub bucket: String,
    /// Replicas of the bucket (follow the event stream's: losing the keys loses the data).
    pub replicas: usize,
    /// Data keys kept unwrapped in memory (a bound, least recently used first out).
    pub cache: NonZeroUsize,
    /// Keys created per pool refill, per scope (0: no pool, every new subject writes its key
    /// before it is used); a refill starts when fewer than half are left.
    pub pool_batch: usize,
}

impl Default for KeyStoreConfig {
    fn default() -> Self {
        Self {
            bucket: BUCKET.to_owned(),
            replicas: 1,
            cache: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
            pool_batch: 512,
        }
    }
}

/// A data key as the cache and a keyring hold it.
#[derive(Debug, Clone)]
enum Slot {
    Key(Arc<SecretKey>),
    Erased,
}

/// A tenant key in memory.
#[derive(Debug)]
struct TenantKey {
    id: Uuid,
    key: SecretKey,
}

/// Ready keys of one scope.
#[derive(Debug)]
struct Pool {
    ready: Vec<DataKey>,
    refilling: bool,
    /// Bumped when a refill ends (with keys or not): what a writer that found the pool dry
    /// waits for, instead of writing a key of its own.
    refilled: tokio::sync::watch::Sender<u64>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            ready: Vec::new(),
            refilling: false,
            refilled: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Refills a writer that found the pool dry waits for before it writes a key of its own.
const DRY_WAITS: usize = 2;

#[derive(Debug)]
struct Inner {
    kv: kv::Store,
    stream: jetstream::stream::Stream,
    /// The current master key first, then older ones still accepted.
    masters: Vec<MasterKey>,
    config: KeyStoreConfig,
    tenants: Mutex<HashMap<Scope, Arc<TenantKey>>>,
    data: Mutex<LruCache<(Scope, Uuid), Slot>>,
    pools: Mutex<HashMap<Scope, Pool>>,
}

/// The key store (cheap to clone: one shared store per process).
#[derive(Debug, Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn scope_token(scope: Scope) -> String {
    match scope {
        Scope::Platform => "platform".to_owned(),
        Scope::Tenant(t) => t.0.to_string(),
    }
}

fn tenant_name(scope: Scope) -> String {
    format!("tenant.{}", scope_token(scope))
}

fn data_name(scope: Scope, id: Uuid) -> String {
    format!("data.{}.{id}", scope_token(scope))
}

/// The block holding the data key `id`, and its slot there.
fn block_of(id: Uuid) -> (Uuid, usize) {
    let mut bytes = *id.as_bytes();
    let slot = u16::from_be_bytes([bytes[14], bytes[15]]);
    bytes[14] = 0;
    bytes[15] = 0;
    (Uuid::from_bytes(bytes), usize::from(slot))
}

/// The id of the key in `slot` of `block`.
fn key_in(block: Uuid, slot: usize) -> Uuid {
    let mut bytes = *block.as_bytes();
    let slot = u16::try_from(slot).unwrap_or(u16::MAX).to_be_bytes();
    bytes[14] = slot[0];
    bytes[15] = slot[1];
    Uuid::from_bytes(bytes)
}

fn block_name(scope: Scope, block: Uuid) -> String {
    format!("block.{}.{block}", scope_token(scope))
}

/// The bucket entry that holds the data key `id` of `scope` (its block): what a backup line
/// or a look at the bucket names.
pub fn entry_name(scope: Scope, id: Uuid) -> String {
    block_name(scope, block_of(id).0)
}

/// A block of data keys as stored: the tenant key that wraps them and each slot's wrapped key
/// (`"<base64 nonce>.<base64 ciphertext>"`, the AEAD bound to the key's own id), `None` once
/// destroyed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredBlock {
    pub(crate) wrap: String,
    pub(crate) keys: Vec<Option<String>>,
}

impl StoredBlock {
    /// The wrapped key of a slot in the shape the cipher reads.
    fn wrapped(&self, slot: usize) -> Option<Wrapped> {
        let (n, c) = self.keys.get(slot)?.as_deref()?.split_once('.')?;
        Some(Wrapped {
            v: 1,
            wrap: self.wrap.clone(),
            n: n.to_owned(),
            c: c.to_owned(),
        })
    }

    fn parse(name: &str, bytes: &[u8]) -> Result<Self, KeyError> {
        serde_json::from_slice(bytes).map_err(|e| KeyError::Corrupt {
            name: name.to_owned(),
            message: e.to_string(),
        })
    }
}

/// The wrapped key of the data key `id` in the stored value of the bucket entry `name` (its
/// slot, for a block; the key, for one written alone), as `"<base64 nonce>.<base64
/// ciphertext>"`: `None` when it holds none for `id` (destroyed, or not this entry's).
pub fn stored_slot(name: &str, value: &[u8], id: Uuid) -> Option<String> {
    if name.starts_with("block.") {
        let stored: StoredBlock = serde_json::from_slice(value).ok()?;
        return stored.keys.get(block_of(id).1).cloned().flatten();
    }
    let wrapped: Wrapped = serde_json::from_slice(value).ok()?;
    Some(format!("{}.{}", wrapped.n, wrapped.c))
}

/// The wrapped key stored for the data key `id` of `scope` in `kv` ([`stored_slot`] of its
/// block, or of its own entry when written before blocks): `None` when it is not there or was
/// destroyed. What tests look for in nats-server's files.
pub async fn stored_key(
    kv: &kv::Store,
    scope: Scope,
    id: Uuid,
) -> Result<Option<String>, KeyError> {
    for name in [entry_name(scope, id), data_name(scope, id)] {
        if let Some(bytes) = kv.get(&name).await.map_err(|e| nats("read key", e))? {
            return Ok(stored_slot(&name, &bytes, id));
        }
    }
    Ok(None)
}

pub(crate) fn nats(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Nats(format!("{what}: {e}"))
}

/// Creates the key bucket when it is missing: a KV bucket's stream (`KV_<bucket>`, [`HISTORY`]
/// revisions per entry, file storage) made by hand because `create_key_value` denies message deletes for
/// good, and destroying a key erases its message. An existing bucket with fewer replicas than
/// `config.replicas` is scaled up to them (never down: a reader that asks for 1 leaves an R3
/// bucket as it is), so a bucket a tool created before the services keeps the stream's count;
/// one made with a single revision per entry gains [`HISTORY`].
pub async fn bucket(
    js: &jetstream::Context,
    config: &KeyStoreConfig,
) -> Result<(kv::Store, jetstream::stream::Stream), KeyError> {
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{}", config.bucket),
            description: Some("talkwai personal-data keys (wrapped)".to_owned()),
            subjects: vec![format!("$KV.{}.>", config.bucket)],
            max_messages_per_subject: HISTORY,
            storage: jetstream::stream::StorageType::File,
            num_replicas: config.replicas.max(1),
            allow_rollup: true,
            deny_delete: false,
            deny_purge: false,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| nats("key stream", e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| nats("key stream", e))?
        .config
        .clone();
    if info.num_replicas < config.replicas || info.max_messages_per_subject < HISTORY {
        js.update_stream(jetstream::stream::Config {
            num_replicas: info.num_replicas.max(config.replicas),
            max_messages_per_subject: info.max_messages_per_subject.max(HISTORY),
            ..info
        })
        .await
        .map_err(|e| nats("scale the key stream", e))?;
    }
    let kv = js
        .get_key_value(&config.bucket)
        .await
        .map_err(|e| nats("key bucket", e))?;
    Ok((kv, stream))
}

impl KeyStore {
    /// Opens the store on its bucket (created if missing) with `masters`: the current master
    /// key first, then any older one still accepted while a rotation is under way.
    pub async fn open(
        js: &jetstream::Context,
        masters: Vec<MasterKey>,
        config: KeyStoreConfig,
    ) -> Result<Self, KeyError> {
        if masters.is_empty() {
            return Err(KeyError::BadKey {
                message: "a key store needs a master key".to_owned(),
            });
        }
        let (kv, stream) = bucket(js, &config).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                kv,
                stream,
                masters,
                data: Mutex::new(LruCache::new(config.cache)),
                config,
                tenants: Mutex::new(HashMap::new()),
                pools: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The current master key's id.
    pub fn master_id(&self) -> &str {
        self.inner.masters[0].id()
    }

    fn master(&self, scope: Scope, wrap: &str) -> Result<&MasterKey, KeyError> {
        self.inner
            .masters
            .iter()
            .find(|m| m.id() == wrap)
            .ok_or_else(|| KeyError::UnknownMaster {
                scope: scope_token(scope),
                wrap: wrap.to_owned(),
            })
    }

    fn tenant_aad(scope: Scope) -> String {
        format!("talkwai/keys/{}", tenant_name(scope))
    }

    fn data_aad(scope: Scope, id: Uuid) -> String {
        format!("talkwai/keys/{}", data_name(scope, id))
    }

    /// Reads and parses one bucket entry (`None`: absent).
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, KeyError> {
        let Some(bytes) = self
            .inner
            .kv
            .get(name)
            .await
            .map_err(|e| nats("read key", e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KeyError::Corrupt {
                name: name.to_owned(),
                message: e.to_string(),
            })
    }

    /// Reads a tenant key from the bucket (`None`: there is none, or it was destroyed).
    async fn read_tenant(&self, scope: Scope) -> Result<Option<Arc<TenantKey>>, KeyError> {
        if let Some(key) = lock(&self.inner.tenants).get(&scope) {
            return Ok(Some(Arc::clone(key)));
        }
        let name = tenant_name(scope);
        let Some(stored) = self.read_json::<StoredTenant>(&name).await? else {
            return Ok(None);
        };
        let master = self.master(scope, &stored.wrapped.wrap)?;
        let key = master
            .key()
            .unwrap_key(&Self::tenant_aad(scope), &stored.wrapped)
            .ok_or_else(|| KeyError::Corrupt {
                name,
                message: "does not open under its master key".to_owned(),
            })?;
        let key = Arc::new(TenantKey { id: stored.id, key });
        lock(&self.inner.tenants).insert(scope, Arc::clone(&key));
        Ok(Some(key))
    }

    /// The tenant key of `scope`, created on first use.
    async fn tenant(&self, scope: Scope) -> Result<Arc<TenantKey>, KeyError> {
        if let Some(key) = self.read_tenant(scope).await? {
            return Ok(key);
        }
        let key = SecretKey::random();
        let id = Uuid::now_v7();
        let master = &self.inner.masters[0];
        let stored = StoredTenant {
            id,
            wrapped: master
                .key()
                .wrap(master.id(), &Self::tenant_aad(scope), &key),
        };
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();
        match self.inner.kv.create(tenant_name(scope), bytes.into()).await {
            Ok(_) => {
                let key = Arc::new(TenantKey { id, key });
                lock(&self.inner.tenants).insert(scope, Arc::clone(&key));
                Ok(key)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                .read_tenant(scope)
                .await?
                .ok_or_else(|| nats("create tenant key", "created and gone")),
            Err(e) => Err(nats("create tenant key", e)),
        }
    }

    /// Creates `count` data keys of `scope`, written to the bucket as blocks of up to
    /// [`BLOCK_KEYS`] (one stored message per block, written together); they are durable when
    /// this returns.
    pub async fn create(&self, scope: Scope, count: usize) -> Result<Vec<DataKey>, KeyError> {
        let tenant = self.tenant(scope).await?;
        let wrap = tenant.id.to_string();
        let mut keys = Vec::with_capacity(count);
        let mut blocks = Vec::new();
        let mut left = count;
        while left > 0 {
            let size = left.min(BLOCK_KEYS);
            left -= size;
            let block = key_in(Uuid::new_v4(), 0);
            let mut slots = Vec::with_capacity(size);
            for slot in 0..size {
                let key = DataKey {
                    id: key_in(block, slot),
                    key: SecretKey::random(),
                };
                let wrapped = tenant
                    .key
                    .wrap(&wrap, &Self::data_aad(scope, key.id), &key.key);
                slots.push(Some(format!("{}.{}", wrapped.n, wrapped.c)));
                keys.push(key);
            }
            let stored = StoredBlock {
                wrap: wrap.clone(),
                keys: slots,
            };
            let bytes = serde_json::to_vec(&stored).map_err(|e| KeyError::Corrupt {
                name: block_name(scope, block),
                message: e.to_string(),
            })?;
            blocks.push((block_name(scope, block), bytes::Bytes::from(bytes)));
        }
        // A new block's name is new: `create` never writes over anything.
        futures::future::try_join_all(blocks.into_iter().map(|(name, bytes)| async move {
            self.inner
                .kv
                .create(&name, bytes)
                .await
                .map_err(|e| nats("write data keys", e))
        }))
        .await?;
        let mut cache = lock(&self.inner.data);
        for k in &keys {
            cache.put((scope, k.id), Slot::Key(Arc::new(k.key.clone())));
        }
        Ok(keys)
    }

    /// A durable data key for a new subject of `scope`: from the pool when it has one (and a
    /// refill started in the background when it runs low). A writer that finds the pool dry
    /// waits for the refill under way (one batch serves every writer waiting), and writes a
    /// key of its own only when refills bring none.
    pub async fn take(&self, scope: Scope) -> Result<DataKey, KeyError> {
        let batch = self.inner.config.pool_batch;
        for _ in 0..=DRY_WAITS {
            let (key, refill, wait) = {
                let mut pools = lock(&self.inner.pools);
                let pool = pools.entry(scope).or_default();
                let key = pool.ready.pop();
                let refill = batch > 0 && !pool.refilling && pool.ready.len() < batch / 2;
                pool.refilling |= refill;
                let wait = (key.is_none() && pool.refilling).then(|| pool.refilled.subscribe());
                (key, refill, wait)
            };
            if refill {
                let store = self.clone();
                tokio::spawn(async move { store.refill(scope, batch).await });
            }
            match (key, wait) {
                (Some(key), _) => return Ok(key),
                // `changed` sees every bump after `subscribe`, so none is missed.
                (None, Some(mut refilled)) => {
                    let _ = refilled.changed().await;
                }
                (None, None) => break,
            }
        }
        self.create(scope, 1)
            .await?
            .pop()
            .ok_or_else(|| nats("write data keys", "no key created"))
    }

    async fn refill(&self, scope: Scope, batch: usize) {
        let made = self.create(scope, batch).await;
        let mut pools = lock(&self.inner.pools);
        let pool = pools.entry(scope).or_default();
        pool.refilling = false;
        match made {
            Ok(keys) => pool.ready.extend(keys),
            Err(e) => warn!(error = %e, scope = %scope_token(scope), "key pool refill failed"),
        }
        pool.refilled.send_modify(|n| *n += 1);
    }

    /// Fills the pool of `scope` now (a service warming up a tenant, or a benchmark).
    pub async fn fill(&self, scope: Scope) -> Result<(), KeyError> {
        let keys = self.create(scope, self.inner.config.pool_batch).await?;
        lock(&self.inner.pools)
            .entry(scope)
            .or_default()
            .ready
            .extend(keys);
        Ok(())
    }

    /// Reads one data key written alone (before blocks) from the bucket.
    async fn fetch(&self, scope: Scope, id: Uuid) -> Result<Slot, KeyError> {
        let name = data_name(scope, id);
        let Some(wrapped) = self.read_json::<Wrapped>(&name).await? else {
            return Ok(Slot::Erased);
        };
        // A data key whose tenant key is gone, or was replaced after being destroyed, is erased.
        let Some(tenant) = self.read_tenant(scope).await? else {
            return Ok(Slot::Erased);
        };
        if wrapped.wrap != tenant.id.to_string() {
            return Ok(Slot::Erased);
        }
        let key = tenant
            .key
            .unwrap_key(&Self::data_aad(scope, id), &wrapped)
            .ok_or_else(|| KeyError::Corrupt {
                name,
                message: "does not open under its tenant key".to_owned(),
            })?;
        Ok(Slot::Key(Arc::new(key)))
    }

    /// The keys named by `wants`, from the cache or the bucket (fetched together): what a
    /// reader hands to `talkwai_proto::event::decode_stored_with` for a batch.
    pub async fn keyring(
        &self,
        wants: impl IntoIterator<Item = (Scope, Uuid)>,
    ) -> Result<Keyring, KeyError> {
        let mut ring = HashMap::new();
        let mut missing = HashSet::new();
        {
            let mut cache = lock(&self.inner.data);
            for want in wants {
                if ring.contains_key(&want) {
                    continue;
                }
                match cache.get(&want) {
                    Some(slot) => {
                        ring.insert(want, slot.clone());
                    }
                    None => {
                        missing.insert(want);
                    }
                }
            }
        }
        // One read per block, however many of its keys are wanted.
        let mut by_block: HashMap<(Scope, Uuid), Vec<Uuid>> = HashMap::new();
        for (scope, id) in missing {
            by_block
                .entry((scope, block_of(id).0))
                .or_default()
                .push(id);
        }
        let fetched: Vec<Vec<((Scope, Uuid), Slot)>> = futures::stream::iter(by_block)
            .map(|((scope, block), ids)| self.fetch_block(scope, block, ids))
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut cache = lock(&self.inner.data);
        for (want, slot) in fetched.into_iter().flatten() {
            cache.put(want, slot.clone());
            ring.insert(want, slot);
        }
        Ok(Keyring { keys: ring })
    }

    /// The keys `ids` of one block of `scope`: from the block, or each on its own when there is
    /// no such block (keys written before blocks).
    async fn fetch_block(
        &self,
        scope: Scope,
        block: Uuid,
        ids: Vec<Uuid>,
    ) -> Result<Vec<((Scope, Uuid), Slot)>, KeyError> {
        let name = block_name(scope, block);
        let Some(bytes) = self
            .inner
            .kv
            .get(&name)
            .await
            .map_err(|e| nats("read key", e))?
        else {
            let mut slots = Vec::with_capacity(ids.len());
            for id in ids {
                slots.push(((scope, id), self.fetch(scope, id).await?));
            }
            return Ok(slots);
        };
        let stored = StoredBlock::parse(&name, &bytes)?;
        // Keys whose tenant key is gone, or was replaced after being destroyed, are erased.
        let tenant = self
            .read_tenant(scope)
            .await?
            .filter(|t| t.id.to_string() == stored.wrap);
        ids.into_iter()
            .map(|id| {
                let slot = match (&tenant, stored.wrapped(block_of(id).1)) {
                    (Some(tenant), Some(wrapped)) => Slot::Key(Arc::new(
                        tenant
                            .key
                            .unwrap_key(&Self::data_aad(scope, id), &wrapped)
                            .ok_or_else(|| KeyError::Corrupt {
                                name: name.clone(),
                                message: format!("key {id} does not open under its tenant key"),
                            })?,
                    )),
                    _ => Slot::Erased,
                };
                Ok(((scope, id), slot))
            })
            .collect()
    }

    /// The data key `id` of `scope` to seal more of its subject's fields with (`None`: it was
    /// destroyed).
    pub async fn data_key(&self, scope: Scope, id: Uuid) -> Result<Option<DataKey>, KeyError> {
        let ring = self.keyring([(scope, id)]).await?;
        Ok(match ring.keys.get(&(scope, id)) {
            Some(Slot::Key(key)) => Some(DataKey {
                id,
                key: SecretKey::clone(key),
            }),
            _ => None,
        })
    }

    /// Destroys the data key `id` of `scope`: its block is rewritten with the slot empty and
    /// every older revision of the block is erased from the bucket (a key written alone: its
    /// message is erased and a tombstone takes its place); an empty slot or a tombstone is
    /// what keeps a restore of an older backup from bringing it back. The key is dropped from
    /// this process's cache. Idempotent: a destroy cut short is completed by the next one.
    pub async fn destroy(&self, scope: Scope, id: Uuid) -> Result<(), KeyError> {
        let (block, slot) = block_of(id);
        let name = block_name(scope, block);
        let mut rewritten = false;
        for _ in 0..REWRITES {
            let entry = self
                .inner
                .kv
                .entry(&name)
                .await
                .map_err(|e| nats("read key", e))?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                // No block: a key written alone.
                self.erase_entry(&data_name(scope, id)).await?;
                self.forget(scope, id);
                return Ok(());
            };
            let mut stored = StoredBlock::parse(&name, &entry.value)?;
            match stored.keys.get_mut(slot) {
                Some(key @ Some(_)) => *key = None,
                _ => {
                    rewritten = true;
                    break;
                }
            }
            let bytes = serde_json::to_vec(&stored).map_err(|e| KeyError::Corrupt {
                name: name.clone(),
                message: e.to_string(),
            })?;
            match self
                .inner
                .kv
                .update(&name, bytes.into(), entry.revision)
                .await
            {
                Ok(_) => {
                    rewritten = true;
                    break;
                }
                // Another destroy rewrote the block meanwhile: read it again.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(nats("rewrite key block", e)),
            }
        }
        if !rewritten {
            return Err(nats("rewrite key block", format!("{name} keeps changing")));
        }
        self.erase_older(&name).await?;
        self.forget(scope, id);
        Ok(())
    }

    /// Erases every revision of `name` but the newest from the bucket's stream (their bytes
    /// are overwritten on every replica).
    async fn erase_older(&self, name: &str) -> Result<(), KeyError> {
        let revisions: Vec<u64> = self
            .inner
            .kv
            .history(name)
            .await
            .map_err(|e| nats("read key history", e))?
            .map_ok(|entry| entry.revision)
            .try_collect()
            .await
            .map_err(|e| nats("read key history", e))?;
        let newest = revisions.iter().copied().max().unwrap_or(0);
        for revision in revisions.into_iter().filter(|r| *r < newest) {
            match self.inner.stream.delete_message(revision).await {
                Ok(_) => {}
                // Already erased by a racing destroy.
                Err(e) if e.to_string().contains("no message found") => {}
                Err(e) => return Err(nats("erase key", e)),
            }
        }
        Ok(())
    }

    /// Drops a data key from this process's cache (another process destroyed it: readers
    /// call this when they read the `…erased` event).
    pub fn forget(&self, scope: Scope, id: Uuid) {
        lock(&self.inner.data).put((scope, id), Slot::Erased);
    }

    /// Destroys a tenant's key, which makes every personal field of the tenant unreadable at
    /// once: the tenant key's message is erased from the bucket (a tombstone takes its place),
    /// the tenant's data keys (blocks, and keys written alone) are purged, and this process
    /// forgets them all. Idempotent. What `tenant.erase` calls.
    pub async fn destroy_tenant(&self, tenant: &TenantId) -> Result<(), KeyError> {
        let scope = Scope::Tenant(*tenant);
        self.erase_entry(&tenant_name(scope)).await?;
        for kind in ["block", "data"] {
            self.inner
                .stream
                .purge()
                .filter(format!(
                    "$KV.{}.{kind}.{}.>",
                    self.inner.config.bucket,
                    scope_token(scope)
                ))
                .await
                .map_err(|e| nats("purge data keys", e))?;
        }
        self.forget_tenant(scope);
        Ok(())
    }

    /// Drops a tenant's keys from this process's caches and pool.
    pub fn forget_tenant(&self, scope: Scope) {
        lock(&self.inner.tenants).remove(&scope);
        lock(&self.inner.pools).remove(&scope);
        let mut cache = lock(&self.inner.data);
        let gone: Vec<(Scope, Uuid)> = cache
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            cache.put(key, Slot::Erased);
        }
    }

    /// Erases the entry's message (its bytes are overwritten on every replica), then writes a
    /// tombstone (a KV delete marker: no key material) unless one is there: what a restore
    /// reads as "destroyed here".
    async fn erase_entry(&self, name: &str) -> Result<(), KeyError> {
        let entry = self
            .inner
            .kv
            .entry(name)
            .await
            .map_err(|e| nats("read key", e))?;
        if let Some(entry) = &entry
            && entry.operation == kv::Operation::Put
        {
            match self.inner.stream.delete_message(entry.revision).await {
                Ok(_) => {}
                // Already erased by a racing destroy.
                Err(e) if e.to_string().contains("no message found") => {}
                Err(e) => return Err(nats("erase key", e)),
            }
        }
        let marked = entry.is_some_and(|e| e.operation != kv::Operation::Put);
        if !marked {
            self.inner
                .kv
                .delete(name)
                .await
                .map_err(|e| nats("mark key destroyed", e))?;
        }
        Ok(())
    }

    /// The names of the bucket's entries starting with `prefix`.
    async fn names(&self, prefix: &str) -> Result<Vec<String>, KeyError> {
        self.inner
            .kv
            .keys()
            .await
            .map_err(|e| nats("list keys", e))?
            .try_filter(|name| futures::future::ready(name.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(|e| nats("list keys", e))
    }

    /// Re-wraps every tenant key under the current master key (the first given to
    /// [`KeyStore::open`]); the data keys and the log are untouched. Returns how many tenant
    /// keys were re-wrapped (0 when all already use it).
    pub async fn rotate_master(&self) -> Result<usize, KeyError> {
        let names = self.names("tenant.").await?;
        let current = &self.inner.masters[0];
        let mut rewrapped = 0;
        for name in names {
            let Some(entry) = self
                .inner
                .kv
                .entry(&name)
                .await
                .map_err(|e| nats("read tenant key", e))?
            else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let stored: StoredTenant =
                serde_json::from_slice(&entry.value).map_err(|e| KeyError::Corrupt {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            if stored.wrapped.wrap == current.id() {
                continue;
            }
            let scope = name
                .strip_prefix("tenant.")
                .and_then(|t| Scope::parse(t).ok())
                .ok_or_else(|| KeyError::Corrupt {
                    name: name.clone(),
                    message: "not a scope".to_owned(),
                })?;
            let aad = Self::tenant_aad(scope);
            let key = self
                .master(scope, &stored.wrapped.wrap)?
                .key()
                .unwrap_key(&aad, &stored.wrapped)
                .ok_or_else(|| KeyError::Corrupt {
                    name: name.clone(),
                    message: "does not open under its master key".to_owned(),
                })?;
            let again = StoredTenant {
                id: stored.id,
                wrapped: current.key().wrap(current.id(), &aad, &key),
            };
            let bytes = serde_json::to_vec(&again).unwrap_or_default();
            self.inner
                .kv
                .update(&name, bytes.into(), entry.revision)
                .await
                .map_err(|e| nats("re-wrap tenant key", e))?;
            rewrapped += 1;
        }
        Ok(rewrapped)
    }

    /// Every live entry of the bucket as stored (wrapped), for a backup
    /// ([`crate::backup::entries`] reads them without a master key).
    pub async fn export(&self) -> Result<Vec<(String, bytes::Bytes)>, KeyError> {
        crate::backup::entries_of(&self.inner.kv, None).await
    }

    /// Restores entries written by [`Self::export`]: what [`crate::backup::restore`] does
    /// (the same key is left as it is, a destroyed one stays destroyed, a different key with
    /// the same name is a [`KeyError::Conflict`]).
    pub async fn restore(
        &self,
        entries: Vec<(String, bytes::Bytes)>,
    ) -> Result<crate::backup::Restored, KeyError> {
        crate::backup::restore_into(&self.inner.kv, entries).await
    }

    /// [`Self::restore`], returning how many entries were written.
    pub async fn import(&self, entries: Vec<(String, bytes::Bytes)>) -> Result<usize, KeyError> {
        Ok(self.restore(entries).await?.written)
    }
}

/// The keys named by `wants` from `keys`, or an empty keyring when there is no key store (a
/// sealed field then fails to decode with `OpenError::NoKey`).
pub async fn keyring_for(
    keys: Option<&KeyStore>,
    wants: impl IntoIterator<Item = (Scope, Uuid)>,
) -> Result<Keyring, KeyError> {
    match keys {
        Some(keys) => keys.keyring(wants).await,
        None => Ok(Keyring::default()),
    }
}

/// The keys stored `messages` need to be decoded: each one's `Talkwai-Key` under its subject's
/// scope (an empty keyring without a key store). A key an erasure among them names (a
/// `member.erased`... whose subject's key the command service destroys) is forgotten by this
/// process and reads as erased for the whole batch, even if this process cached it or the
/// destruction has not landed yet.
pub async fn keyring_of(
    keys: Option<&KeyStore>,
    messages: &[talkwai_eventstore::StoredMessage],
) -> Result<Keyring, KeyError> {
    let key_of = |m: &talkwai_eventstore::StoredMessage| {
        talkwai_proto::event::sealed_key(&m.subject, |name| m.header(name))
    };
    let wants: Vec<((Scope, Uuid), bool)> = messages
        .iter()
        .filter_map(|m| {
            let erases = m
                .header(talkwai_proto::headers::EVENT_TYPE)
                .is_some_and(talkwai_proto::sealed::erases_subject);
            key_of(m).map(|want| (want, erases))
        })
        .collect();
    let mut ring = keyring_for(keys, wants.iter().map(|(want, _)| *want)).await?;
    if let Some(store) = keys {
        for ((scope, id), _) in wants.iter().filter(|(_, erases)| *erases) {
            store.forget(*scope, *id);
            ring.keys.insert((*scope, *id), Slot::Erased);
        }
    }
    Ok(ring)
}

/// A tenant key as stored: its id (which its data keys name as their wrapping key) and itself,
/// wrapped by a master key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredTenant {
    pub(crate) id: Uuid,
    wrapped: Wrapped,
}

/// The keys one batch of events needs, in hand: opens sealed fields with no I/O.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<(Scope, Uuid), Slot>,
}

impl Keyring {
    /// Every data key of `entries` (bucket entries as stored: a backup's key lines), unwrapped
    /// with `masters`, with no key store and no I/O: what reads a backup, or the golden
    /// history, offline. A destroyed slot reads as erased; a tenant key that no master opens is
    /// [`KeyError::UnknownMaster`], a value that does not open is [`KeyError::Corrupt`].
    pub fn from_entries(
        masters: &[MasterKey],
        entries: &[(String, bytes::Bytes)],
    ) -> Result<Self, KeyError> {
        let corrupt = |name: &str, message: String| KeyError::Corrupt {
            name: name.to_owned(),
            message,
        };
        let scope_of = |name: &str, token: &str| {
            Scope::parse(token).map_err(|_| corrupt(name, "not a scope".to_owned()))
        };
        let mut tenants: HashMap<Scope, TenantKey> = HashMap::new();
        for (name, value) in entries {
            let Some(token) = name.strip_prefix("tenant.") else {
                continue;
            };
            let scope = scope_of(name, token)?;
            let stored: StoredTenant =
                serde_json::from_slice(value).map_err(|e| corrupt(name, e.to_string()))?;
            let master = masters
                .iter()
                .find(|m| m.id() == stored.wrapped.wrap)
                .ok_or_else(|| KeyError::UnknownMaster {
                    scope: token.to_owned(),
                    wrap: stored.wrapped.wrap.clone(),
                })?;
            let key = master
                .key()
                .unwrap_key(&KeyStore::tenant_aad(scope), &stored.wrapped)
                .ok_or_else(|| corrupt(name, "does not open under its master key".to_owned()))?;
            tenants.insert(scope, TenantKey { id: stored.id, key });
        }
        let mut keys = HashMap::new();
        let mut open = |scope: Scope, id: Uuid, wrapped: Option<Wrapped>, name: &str| {
            let slot = match (wrapped, tenants.get(&scope)) {
                (Some(wrapped), Some(tenant)) if wrapped.wrap == tenant.id.to_string() => {
                    Slot::Key(Arc::new(
                        tenant
                            .key
                            .unwrap_key(&KeyStore::data_aad(scope, id), &wrapped)
                            .ok_or_else(|| corrupt(name, format!("key {id} does not open")))?,
                    ))
                }
                _ => Slot::Erased,
            };
            keys.insert((scope, id), slot);
            Ok::<(), KeyError>(())
        };
        for (name, value) in entries {
            let (kind, rest) = name.split_once('.').unwrap_or_default();
            let Some((token, id)) = rest.rsplit_once('.') else {
                continue;
            };
            let id: Uuid = match (kind, id.parse()) {
                ("block" | "data", Ok(id)) => id,
                _ => continue,
            };
            let scope = scope_of(name, token)?;
            if kind == "data" {
                let wrapped: Wrapped =
                    serde_json::from_slice(value).map_err(|e| corrupt(name, e.to_string()))?;
                open(scope, id, Some(wrapped), name)?;
                continue;
            }
            let block = StoredBlock::parse(name, value)?;
            for slot in 0..block.keys.len() {
                open(scope, key_in(id, slot), block.wrapped(slot), name)?;
            }
        }
        Ok(Self { keys })
    }
}

impl Opener for Keyring {
    fn open(&self, scope: Scope, sealed: &Sealed, aad: &str) -> Result<Opened, OpenError> {
        match self.keys.get(&(scope, sealed.key)) {
            None => Err(OpenError::NoKey { key: sealed.key }),
            Some(Slot::Erased) => Ok(Opened::Erased),
            Some(Slot::Key(key)) => {
                open_sealed(key, sealed, aad)
                    .map(Opened::Plain)
                    .ok_or_else(|| OpenError::Corrupt {
                        key: sealed.key,
                        path: aad.to_owned(),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_names_its_block_and_slot() {
        let block = key_in(Uuid::new_v4(), 0);
        assert_eq!(block.get_version_num(), 4, "still a v4 UUID");
        let mut seen = HashSet::new();
        for slot in [0, 1, 17, BLOCK_KEYS - 1] {
            let id = key_in(block, slot);
            assert_eq!(block_of(id), (block, slot));
            assert!(seen.insert(id));
            assert_eq!(
                entry_name(Scope::Platform, id),
                format!("block.platform.{block}")
            );
        }
        let other = key_in(Uuid::new_v4(), 0);
        assert_ne!(block_of(key_in(other, 1)).0, block);
    }

    /// Writes the sealed part of the golden history once (`proto/fixtures/history/
    /// 0005-sealed.jsonl`, its key lines and its test-only master key under `keys/`): run with
    /// `TALKWAI_WRITE_SEALED_HISTORY=1 cargo nextest run -p talkwai-keys --run-ignored all
    /// write_sealed_history`. Never again once committed: the history is only appended to.
    #[test]
    #[ignore = "writes a fixture once"]
    fn write_sealed_history() {
        use talkwai_proto::sealed::{Sealer, aad, seal_data};
        if std::env::var_os("TALKWAI_WRITE_SEALED_HISTORY").is_none() {
            return;
        }
        let id =
            |n: u32| Uuid::parse_str(&format!("0190aaaa-0000-7000-8000-{n:012x}")).expect("id");
        let command = |n: u32| format!("0190bbbb-0000-7000-8000-{n:012x}");
        let master = MasterKey::from_key(SecretKey::from_bytes(&[0x5e; 32]).expect("key"));
        let tenant_id = id(0x106);
        let tenant = Scope::Tenant(TenantId(tenant_id));
        let tenant_key = TenantKey {
            id: id(0x900),
            key: SecretKey::from_bytes(&[0x11; 32]).expect("key"),
        };
        let platform_key = TenantKey {
            id: id(0x901),
            key: SecretKey::from_bytes(&[0x22; 32]).expect("key"),
        };
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for (scope, key) in [(tenant, &tenant_key), (Scope::Platform, &platform_key)] {
            let stored = StoredTenant {
                id: key.id,
                wrapped: master
                    .key()
                    .wrap(master.id(), &KeyStore::tenant_aad(scope), &key.key),
            };
            entries.push((
                tenant_name(scope),
                serde_json::to_vec(&stored).expect("json"),
            ));
        }
        // A member's key stored alone (before blocks), and two blocks.
        let member_key = DataKey {
            id: id(0x910),
            key: SecretKey::from_bytes(&[0x33; 32]).expect("key"),
        };
        let wrapped = tenant_key.key.wrap(
            &tenant_key.id.to_string(),
            &KeyStore::data_aad(tenant, member_key.id),
            &member_key.key,
        );
        entries.push((
            data_name(tenant, member_key.id),
            serde_json::to_vec(&wrapped).expect("json"),
        ));
        let mut block =
            |scope: Scope, owner: &TenantKey, block: Uuid, seeds: &[u8], destroyed: &[usize]| {
                let keys: Vec<DataKey> = seeds
                    .iter()
                    .enumerate()
                    .map(|(slot, seed)| DataKey {
                        id: key_in(block, slot),
                        key: SecretKey::from_bytes(&[*seed; 32]).expect("key"),
                    })
                    .collect();
                let stored = StoredBlock {
                    wrap: owner.id.to_string(),
                    keys: keys
                        .iter()
                        .enumerate()
                        .map(|(slot, k)| {
                            (!destroyed.contains(&slot)).then(|| {
                                let w = owner.key.wrap(
                                    &owner.id.to_string(),
                                    &KeyStore::data_aad(scope, k.id),
                                    &k.key,
                                );
                                format!("{}.{}", w.n, w.c)
                            })
                        })
                        .collect(),
                };
                entries.push((
                    block_name(scope, block),
                    serde_json::to_vec(&stored).expect("json"),
                ));
                keys
            };
        let task_keys = block(
            tenant,
            &tenant_key,
            key_in(id(0x92_0000), 0),
            &[0x44, 0x55, 0x66],
            &[1],
        );
        let user_keys = block(
            Scope::Platform,
            &platform_key,
            key_in(id(0x93_0000), 0),
            &[0x77],
            &[],
        );

        let mut lines = Vec::new();
        let mut line = |subject: String,
                        event_type: &str,
                        version: u32,
                        scope: Scope,
                        actor: &str,
                        n: u32,
                        at: u64,
                        data: serde_json::Value,
                        key: Option<Uuid>| {
            let mut headers = serde_json::json!({
                "Talkwai-Event-Type": event_type,
                "Talkwai-Event-Version": version.to_string(),
                "Talkwai-Tenant": scope_token(scope),
                "Talkwai-Actor": actor,
                "Talkwai-Command-Id": command(n),
                "Talkwai-Occurred-At": at.to_string(),
                "Talkwai-Command-Part": "1/1",
            });
            if let Some(key) = key {
                headers["Talkwai-Key"] = serde_json::json!(key.to_string());
            }
            lines.push(
                serde_json::json!({
                    "subject": subject,
                    "headers": headers,
                    "body": {"type": event_type, "version": version, "data": data},
                })
                .to_string(),
            );
        };
        let t = tenant_id;
        let (agent, user, member, done, erased) =
            (id(0x406), id(0x605), id(0x207), id(0x520), id(0x521));
        let at = 1_751_366_400_000_u64;
        line(
            format!("talkwai.evt.{t}.tenant.{t}"),
            "tenant.created",
            1,
            tenant,
            "platform",
            0x60,
            at,
            serde_json::json!({"name": "Sealed Supplies", "domain": null, "status": "active", "at": at}),
            None,
        );
        line(
            format!("talkwai.evt.{t}.agent.{agent}"),
            "agent.created",
            1,
            tenant,
            "platform",
            0x61,
            at + 60_000,
            serde_json::json!({"configuration": "{}", "description": "orders", "name": "Order desk", "status": "active", "type": "chat", "at": at + 60_000}),
            None,
        );
        // `v2`: a user's email under the platform's block key.
        let mut data =
            serde_json::json!({"email": "sealed.sam@sealed-supplies.example", "at": at + 120_000});
        seal_data("user.created", &mut data, &user_keys[0]);
        line(
            format!("talkwai.evt.platform.user.{user}"),
            "user.created",
            1,
            Scope::Platform,
            "platform",
            0x62,
            at + 120_000,
            data,
            Some(user_keys[0].id),
        );
        // `v1`: a member sealed field by field, under a key stored alone.
        let mut data = serde_json::json!({"email": "sealed.sam@sealed-supplies.example", "firstName": "Sam", "lastName": "Sealwell", "phone": "+15550007777", "role": "owner", "status": "active", "user": null, "at": at + 180_000});
        for path in talkwai_proto::sealed::personal_fields("member.created") {
            if let Some(serde_json::Value::String(plain)) = data.get(*path).cloned() {
                let sealed = member_key.seal(&aad(member_key.id, "member.created", path), &plain);
                data[*path] = serde_json::to_value(sealed).expect("json");
            }
        }
        line(
            format!("talkwai.evt.{t}.member.{member}"),
            "member.created",
            1,
            tenant,
            "platform",
            0x63,
            at + 180_000,
            data,
            Some(member_key.id),
        );
        // `v2` under the same key stored alone: a later event of that member.
        let mut data =
            serde_json::json!({"lastName": "Sealwell-Day", "phone": null, "at": at + 240_000});
        seal_data("member.updated", &mut data, &member_key);
        line(
            format!("talkwai.evt.{t}.member.{member}"),
            "member.updated",
            1,
            tenant,
            "platform",
            0x64,
            at + 240_000,
            data,
            Some(member_key.id),
        );
        // A task sealed `v2` under a block key, completed with a sealed outcome.
        let actor = format!("member:{member}");
        let task = |at: u64, subject: &str| serde_json::json!({"type": "email", "status": "pending", "priority": "low", "fromAddress": "orders@sealed-supplies.example", "toAddress": "buyer@example.org", "subject": subject, "content": format!("Confirm the order: {subject}."), "metadata": null, "scheduledAt": null, "agent": agent, "assignedTo": member, "createdBy": member, "createdByAdmin": null, "at": at});
        let mut data = task(at + 300_000, "Order 1001");
        seal_data("task.created", &mut data, &task_keys[0]);
        line(
            format!("talkwai.evt.{t}.task.{done}"),
            "task.created",
            1,
            tenant,
            &actor,
            0x65,
            at + 300_000,
            data,
            Some(task_keys[0].id),
        );
        line(
            format!("talkwai.evt.{t}.task.{done}"),
            "task.started",
            1,
            tenant,
            &actor,
            0x66,
            at + 360_000,
            serde_json::json!({"at": at + 360_000}),
            None,
        );
        let mut data = serde_json::json!({"outcome": {"summary": "Sam confirmed order 1001", "durationSecs": 30}, "at": at + 420_000});
        seal_data("task.completed", &mut data, &task_keys[0]);
        line(
            format!("talkwai.evt.{t}.task.{done}"),
            "task.completed",
            2,
            tenant,
            &actor,
            0x67,
            at + 420_000,
            data,
            Some(task_keys[0].id),
        );
        // A task whose key was destroyed by its erasure: its slot is empty in the key lines.
        let mut data = task(at + 480_000, "Order 1002");
        seal_data("task.created", &mut data, &task_keys[1]);
        line(
            format!("talkwai.evt.{t}.task.{erased}"),
            "task.created",
            1,
            tenant,
            &actor,
            0x68,
            at + 480_000,
            data,
            Some(task_keys[1].id),
        );
        line(
            format!("talkwai.evt.{t}.task.{erased}"),
            "task.contentErased",
            1,
            tenant,
            &actor,
            0x69,
            at + 540_000,
            serde_json::json!({"at": at + 540_000}),
            Some(task_keys[1].id),
        );

        let dir = talkwai_proto::generate::proto_dir().join("fixtures/history");
        std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
        std::fs::write(dir.join("0005-sealed.jsonl"), lines.join("\n") + "\n").expect("history");
        let keys: Vec<String> = entries
            .iter()
            .map(|(name, value)| {
                serde_json::to_string(&crate::backup::KeyLine::new(name.clone(), value))
                    .expect("json")
            })
            .collect();
        std::fs::write(dir.join("keys/0005-sealed.jsonl"), keys.join("\n") + "\n").expect("keys");
        use base64::Engine as _;
        std::fs::write(
            dir.join("keys/master.key"),
            base64::engine::general_purpose::STANDARD.encode([0x5e; 32]) + "\n",
        )
        .expect("master");
    }
}
