//! Partition leases: which instance of a service works on which partition.
//!
//! A KV bucket (memory storage, `max_age` = the lease TTL, so an entry not rewritten within
//! the TTL disappears) holds:
//! - `hb.<instance>`: each instance's heartbeat, rewritten every TTL/3;
//! - `p<P>.<i>`: the lease of partition `i` of `P`, valued with its holder's instance id.
//!   A lease is taken with `create` (only if absent) and renewed with `update` at the revision
//!   the holder last wrote, so two instances can never both believe they renewed it.
//!
//! Every round an instance heartbeats, renews its leases (a failed renewal releases that
//! partition at once), counts the live heartbeats `N`, gives back leases above its fair share
//! `ceil(P / N)` (releasing first) and claims free ones up to it. When an instance dies its
//! heartbeat and leases expire within one TTL and the others claim them.
//!
//! A lease says who *tries*; what a service does with it decides who *commits*. Each renewal
//! tells the [`LeaseHolder`] until when (by this process's monotonic clock) the lease is
//! certainly still held: the instant the renewal was *sent* plus the TTL, minus a margin. A
//! holder that must not act on a lost lease (the command service deciding from memory) checks
//! that instant; the projector fences its commits in PostgreSQL instead.
//!
//! The bucket is in memory: a nats-server restart deletes it. A round that finds it missing
//! (its heartbeat write answers "no stream found") recreates it and writes again; the leases
//! held are gone with it, so they are released and claimed afresh.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::StoreError;
use crate::partition::{Slot, fnv1a32};

/// Prefix of heartbeat keys.
const HEARTBEAT: &str = "hb.";

/// Where a service keeps its leases, and how they behave.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The KV bucket (one per service).
    pub bucket: String,
    /// The bucket's description.
    pub description: String,
    /// How long a lease and a heartbeat live without renewal (at least a second).
    pub ttl: Duration,
    /// Replicas of the bucket (follow the event stream's: a bucket on one node of a cluster
    /// would stop every instance when that node goes).
    pub replicas: usize,
    /// Partitions (at least 1).
    pub count: u32,
    /// This instance's configured name; a random suffix is added (see [`instance_id`]).
    pub instance: String,
}

impl LeaseConfig {
    /// The TTL actually used (at least a second).
    pub fn ttl(&self) -> Duration {
        self.ttl.max(Duration::from_secs(1))
    }
}

/// What a service does when it gains or loses a partition.
pub trait LeaseHolder: Send {
    /// The lease on `slot` was taken; it is held at least until `valid_until`.
    fn acquired(&mut self, slot: Slot, valid_until: Instant) -> impl Future<Output = ()> + Send;
    /// The lease on `slot` was renewed; it is held at least until `valid_until`.
    fn renewed(&mut self, slot: Slot, valid_until: Instant);
    /// Stop working on `slot` (given back, lost, or shutting down); returns once stopped.
    fn released(&mut self, slot: Slot) -> impl Future<Output = ()> + Send;
    /// Whether the work on `slot` still runs (a holder whose work ended gives the lease back).
    fn running(&self, _slot: Slot) -> bool {
        true
    }
    /// After each round; `healthy` when the heartbeat was written and instances counted.
    fn round_done(&mut self, _healthy: bool) {}
}

/// Creates (or updates) a lease bucket.
pub async fn bucket(
    js: &jetstream::Context,
    config: &LeaseConfig,
) -> Result<kv::Store, StoreError> {
    js.create_or_update_key_value(kv::Config {
        bucket: config.bucket.clone(),
        description: config.description.clone(),
        history: 1,
        max_age: config.ttl(),
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: config.replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| StoreError::Nats(format!("lease bucket {}: {e}", config.bucket)))
}

/// The lease key of a partition.
pub fn lease_key(slot: Slot) -> String {
    format!("p{}.{}", slot.count, slot.index)
}

fn parse_lease_key(key: &str) -> Option<Slot> {
    let (count, index) = key.strip_prefix('p')?.split_once('.')?;
    Some(Slot {
        index: index.parse().ok()?,
        count: count.parse().ok()?,
    })
}

/// A KV-safe unique id for an instance: its configured name plus a random suffix (two
/// processes started with the same name still hold distinct leases).
pub fn instance_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{clean}-{}", &suffix[..8])
}

/// Who holds each lease of `bucket` now, by partition (of every layout found), and the live
/// instances (heartbeats). Empty when the bucket does not exist.
pub async fn holders(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<(BTreeMap<Slot, String>, Vec<String>), StoreError> {
    let Ok(store) = js.get_key_value(bucket).await else {
        return Ok((BTreeMap::new(), Vec::new()));
    };
    let mut leases = BTreeMap::new();
    let mut live = Vec::new();
    for key in keys(&store).await? {
        if let Some(id) = key.strip_prefix(HEARTBEAT) {
            live.push(id.to_owned());
        } else if let Some(slot) = parse_lease_key(&key) {
            let holder = store
                .get(key.as_str())
                .await
                .map_err(|e| StoreError::Nats(format!("lease {key}: {e}")))?;
            if let Some(holder) = holder {
                leases.insert(slot, String::from_utf8_lossy(&holder).into_owned());
            }
        }
    }
    Ok((leases, live))
}

/// The holder named by a lease entry's value, for a key that is a lease key.
pub fn parse_entry(key: &str, value: &[u8]) -> Option<(Slot, String)> {
    let slot = parse_lease_key(key)?;
    Some((slot, String::from_utf8_lossy(value).into_owned()))
}

async fn keys(store: &kv::Store) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut keys = store
        .keys()
        .await
        .map_err(|e| StoreError::Nats(format!("lease keys: {e}")))?;
    while let Some(key) = keys.next().await {
        out.push(key.map_err(|e| StoreError::Nats(format!("lease keys: {e}")))?);
    }
    Ok(out)
}

/// Claims, renews and gives back partition leases for a [`LeaseHolder`].
pub struct Leases<H> {
    js: jetstream::Context,
    kv: kv::Store,
    config: LeaseConfig,
    me: String,
    /// Held partitions and the revision last written.
    held: BTreeMap<u32, u64>,
    holder: H,
}

impl<H: LeaseHolder> Leases<H> {
    /// Leases of `config`'s bucket (created when missing) for `holder`.
    pub async fn new(
        js: jetstream::Context,
        config: LeaseConfig,
        holder: H,
    ) -> Result<Self, StoreError> {
        let me = instance_id(&config.instance);
        Self::with_instance(js, config, me, holder).await
    }

    /// [`new`](Self::new) under an instance id made beforehand with [`instance_id`] (for a
    /// holder that names itself elsewhere too, e.g. in a fence subject).
    pub async fn with_instance(
        js: jetstream::Context,
        config: LeaseConfig,
        me: String,
        holder: H,
    ) -> Result<Self, StoreError> {
        let kv = bucket(&js, &config).await?;
        Ok(Self {
            js,
            kv,
            config,
            me,
            held: BTreeMap::new(),
            holder,
        })
    }

    /// This instance's id in the bucket (the value of the leases it holds).
    pub fn instance(&self) -> &str {
        &self.me
    }

    /// Runs rounds every TTL/3 until `shutdown` resolves, then releases every partition and
    /// gives its lease back (so others take them at once instead of after a TTL).
    pub async fn run(mut self, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) {
        let ttl = self.config.ttl();
        info!(instance = %self.me, bucket = %self.config.bucket, partitions = self.config.count,
            ttl_ms = ttl.as_millis() as u64, "claiming partition leases");
        let mut ticker = tokio::time::interval(ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.as_mut() => break,
                _ = ticker.tick() => {}
            }
            self.round().await;
        }
        let all: Vec<u32> = self.held.keys().copied().collect();
        for index in all {
            self.release(index).await;
        }
        let _ = self.kv.delete(format!("{HEARTBEAT}{}", self.me)).await;
    }

    /// The instant until which a lease written at `sent` is certainly held: the server
    /// expires it a TTL after it received the write, which was after `sent`; a tenth of the
    /// TTL covers the two clocks' drift over one TTL.
    fn valid_until(&self, sent: Instant) -> Instant {
        let ttl = self.config.ttl();
        sent + ttl - ttl / 10
    }

    /// Writes this instance's heartbeat; recreates the bucket once when it is missing.
    async fn heartbeat(&mut self) -> Result<(), StoreError> {
        let key = format!("{HEARTBEAT}{}", self.me);
        let value: bytes::Bytes = self.config.count.to_string().into_bytes().into();
        match self.kv.put(key.as_str(), value.clone()).await {
            Ok(_) => Ok(()),
            Err(err) if crate::is_missing(&err.to_string()) => {
                warn!(error = %err, bucket = %self.config.bucket,
                    "the lease bucket is gone (nats-server restarted?): recreating it");
                self.kv = bucket(&self.js, &self.config).await?;
                self.kv
                    .put(key.as_str(), value)
                    .await
                    .map(|_| ())
                    .map_err(|e| StoreError::Nats(format!("heartbeat: {e}")))
            }
            Err(err) => Err(StoreError::Nats(format!("heartbeat: {err}"))),
        }
    }

    /// One round: heartbeat, renew, rebalance, claim.
    async fn round(&mut self) {
        let beat = match self.heartbeat().await {
            Ok(()) => true,
            Err(err) => {
                warn!(error = %err, bucket = %self.config.bucket, "cannot write the heartbeat");
                false
            }
        };
        // Renew what is held; whatever cannot be renewed is someone else's now.
        let indexes: Vec<u32> = self.held.keys().copied().collect();
        for index in indexes {
            let slot = self.slot(index);
            let Some(revision) = self.held.get(&index).copied() else {
                continue;
            };
            if !self.holder.running(slot) {
                warn!(partition = %slot, "partition work ended; giving the lease back");
                self.release(index).await;
                continue;
            }
            let sent = Instant::now();
            match self
                .kv
                .update(
                    lease_key(slot),
                    self.me.clone().into_bytes().into(),
                    revision,
                )
                .await
            {
                Ok(revision) => {
                    self.held.insert(index, revision);
                    let until = self.valid_until(sent);
                    self.holder.renewed(slot, until);
                }
                Err(err) => {
                    warn!(partition = %slot, error = %err, "lost a partition lease");
                    self.held.remove(&index);
                    self.holder.released(slot).await;
                }
            }
        }
        let live = match keys(&self.kv).await {
            Ok(keys) => keys.iter().filter(|k| k.starts_with(HEARTBEAT)).count(),
            Err(err) => {
                warn!(error = %err, "cannot list heartbeats");
                self.holder.round_done(false);
                return;
            }
        };
        self.holder.round_done(beat);
        let count = self.config.count.max(1);
        let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
        let share = count.div_ceil(live) as usize;
        // Give back the highest partitions above the fair share (new instances joined).
        while self.held.len() > share {
            let Some(index) = self.held.keys().next_back().copied() else {
                break;
            };
            self.release(index).await;
        }
        // Claim free partitions up to the share, starting at a per-instance offset so
        // instances starting together do not all race for partition 0.
        let offset = fnv1a32(self.me.as_bytes()) % count;
        for k in 0..count {
            if self.held.len() >= share {
                break;
            }
            let index = (offset + k) % count;
            if self.held.contains_key(&index) {
                continue;
            }
            let slot = self.slot(index);
            let sent = Instant::now();
            let Ok(revision) = self
                .kv
                .create(lease_key(slot), self.me.clone().into_bytes().into())
                .await
            else {
                continue;
            };
            info!(instance = %self.me, partition = %slot, "claimed a partition");
            self.held.insert(index, revision);
            let until = self.valid_until(sent);
            self.holder.acquired(slot, until).await;
        }
    }

    fn slot(&self, index: u32) -> Slot {
        Slot {
            index,
            count: self.config.count.max(1),
        }
    }

    /// Releases the partition, then deletes its lease (at the revision held).
    async fn release(&mut self, index: u32) {
        let Some(revision) = self.held.remove(&index) else {
            return;
        };
        let slot = self.slot(index);
        self.holder.released(slot).await;
        if let Err(err) = self
            .kv
            .delete_expect_revision(lease_key(slot), Some(revision))
            .await
        {
            warn!(partition = %slot, error = %err, "cannot give the lease back; it expires");
        } else {
            info!(instance = %self.me, partition = %slot, "gave a partition back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_round_trip() {
        let slot = Slot { index: 4, count: 6 };
        assert_eq!(lease_key(slot), "p6.4");
        assert_eq!(parse_lease_key("p6.4"), Some(slot));
        assert_eq!(parse_lease_key("hb.x"), None);
        assert_eq!(parse_entry("p6.4", b"me"), Some((slot, "me".to_owned())));
    }

    #[test]
    fn instance_ids_are_kv_safe_and_distinct() {
        let a = instance_id("projector 1/eu");
        let b = instance_id("projector 1/eu");
        assert_ne!(a, b);
        assert!(a.starts_with("projector_1_eu-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
