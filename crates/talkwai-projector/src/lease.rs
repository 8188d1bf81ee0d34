//! Partition leases: which projector instance applies which partition.
//!
//! The KV bucket [`BUCKET`] (memory storage, `max_age` = the lease TTL, so an entry not
//! rewritten within the TTL disappears) holds:
//! - `hb.<instance>`: each instance's heartbeat, rewritten every TTL/3;
//! - `p<P>.<i>`: the lease of partition `i` of `P`, valued with its holder's instance id.
//!   A lease is taken with `create` (only if absent) and renewed with `update` at the revision
//!   the holder last wrote, so two instances can never both believe they renewed it.
//!
//! Every round an instance heartbeats, renews its leases (a failed renewal stops that
//! partition's worker at once), counts the live heartbeats `N`, gives back leases above its
//! fair share `ceil(P / N)` (stopping the worker first) and claims free ones up to it. When an
//! instance dies its heartbeat and leases expire within one TTL and the others claim them.
//! Leases only decide who *tries*: correctness rests on the fenced checkpoint (see
//! [`crate::partition`]), so a paused instance that still thinks it holds a lease cannot apply an
//! event twice.
//!
//! The bucket is in memory: a nats-server restart deletes it. A round that finds it missing
//! (its heartbeat write answers "no stream found") recreates it and writes again; the leases it
//! held are gone with it, so their workers stop and the same round claims partitions afresh.
//! Each successful round beats the projector's liveness watchdog: an instance whose rounds
//! keep failing turns `/livez` 503 so it gets restarted.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::Projector;
use crate::error::ProjectorError;
use crate::partition::Slot;

/// The bucket holding heartbeats and partition leases.
pub const BUCKET: &str = "TALKWAI_PROJECTOR_LEASES";
/// Prefix of heartbeat keys.
const HEARTBEAT: &str = "hb.";

/// Creates (or updates) the lease bucket; entries live `ttl` unless rewritten. `replicas`
/// follows the event stream's (a lease bucket on one node of a cluster would stop every
/// projector when that node goes).
pub async fn bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, ProjectorError> {
    js.create_or_update_key_value(kv::Config {
        bucket: BUCKET.into(),
        description: "TalkwAI projector partition leases and heartbeats".into(),
        history: 1,
        max_age: ttl,
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| ProjectorError::Nats(format!("lease bucket: {e}")))
}

pub use talkwai_eventstore::is_missing;

/// The lease key of a partition.
pub fn lease_key(slot: Slot) -> String {
    format!("p{}.{}", slot.count, slot.index)
}

/// A KV-safe unique id for this instance: its configured name plus a random suffix (two
/// processes started with the same `TALKWAI_INSTANCE` still hold distinct leases).
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

/// Who holds each partition lease now, by partition (of every layout found), and the live
/// instances (heartbeats). Empty when the bucket does not exist (unpartitioned projection).
pub async fn holders(
    js: &jetstream::Context,
) -> Result<(BTreeMap<Slot, String>, Vec<String>), ProjectorError> {
    let Ok(store) = js.get_key_value(BUCKET).await else {
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
                .map_err(|e| ProjectorError::Nats(format!("lease {key}: {e}")))?;
            if let Some(holder) = holder {
                leases.insert(slot, String::from_utf8_lossy(&holder).into_owned());
            }
        }
    }
    Ok((leases, live))
}

fn parse_lease_key(key: &str) -> Option<Slot> {
    let (count, index) = key.strip_prefix('p')?.split_once('.')?;
    Some(Slot {
        index: index.parse().ok()?,
        count: count.parse().ok()?,
    })
}

async fn keys(store: &kv::Store) -> Result<Vec<String>, ProjectorError> {
    let mut out = Vec::new();
    let mut keys = store
        .keys()
        .await
        .map_err(|e| ProjectorError::Nats(format!("lease keys: {e}")))?;
    while let Some(key) = keys.next().await {
        out.push(key.map_err(|e| ProjectorError::Nats(format!("lease keys: {e}")))?);
    }
    Ok(out)
}

/// A partition this instance holds: the lease revision and the worker applying it.
struct Held {
    revision: u64,
    stop: watch::Sender<bool>,
    worker: JoinHandle<()>,
}

/// Claims, renews and gives back partition leases, running one apply loop per held partition.
pub(crate) struct Coordinator {
    projector: Projector,
    kv: kv::Store,
    me: String,
    count: u32,
    ttl: Duration,
    held: BTreeMap<u32, Held>,
}

impl Coordinator {
    /// A coordinator for `projector`'s configured partitions.
    pub(crate) async fn new(projector: Projector) -> Result<Self, ProjectorError> {
        let ttl = lease_ttl(&projector.config);
        let kv = bucket(projector.store.jetstream(), ttl, projector.store.replicas()).await?;
        let me = instance_id(&projector.config.instance);
        let count = projector.config.partitions.max(1);
        Ok(Self {
            projector,
            kv,
            me,
            count,
            ttl,
            held: BTreeMap::new(),
        })
    }

    /// Runs rounds every TTL/3 until `shutdown` resolves, then stops every worker and gives
    /// its leases back (so others take them at once instead of after a TTL).
    pub(crate) async fn run(
        mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), ProjectorError> {
        info!(instance = %self.me, partitions = self.count, ttl_ms = self.ttl.as_millis() as u64,
            "projector partitioned: claiming leases");
        let mut ticker = tokio::time::interval(self.ttl / 3);
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
        Ok(())
    }

    /// Writes this instance's heartbeat; recreates the bucket once when it is missing.
    async fn heartbeat(&mut self) -> Result<(), ProjectorError> {
        let key = format!("{HEARTBEAT}{}", self.me);
        let value: bytes::Bytes = self.count.to_string().into_bytes().into();
        match self.kv.put(key.as_str(), value.clone()).await {
            Ok(_) => Ok(()),
            Err(err) if is_missing(&err.to_string()) => {
                warn!(error = %err, "the lease bucket is gone (nats-server restarted?): recreating it");
                self.kv = bucket(
                    self.projector.store.jetstream(),
                    self.ttl,
                    self.projector.store.replicas(),
                )
                .await?;
                self.kv
                    .put(key.as_str(), value)
                    .await
                    .map(|_| ())
                    .map_err(|e| ProjectorError::Nats(format!("heartbeat: {e}")))
            }
            Err(err) => Err(ProjectorError::Nats(format!("heartbeat: {err}"))),
        }
    }

    /// One round: heartbeat, renew, rebalance, claim; beats the liveness watchdog when the
    /// heartbeat was written and the live instances could be counted.
    async fn round(&mut self) {
        let beat = match self.heartbeat().await {
            Ok(()) => true,
            Err(err) => {
                warn!(error = %err, "cannot write the projector heartbeat");
                false
            }
        };
        // Renew what is held; whatever cannot be renewed is someone else's now.
        let indexes: Vec<u32> = self.held.keys().copied().collect();
        for index in indexes {
            let slot = self.slot(index);
            let Some(held) = self.held.get_mut(&index) else {
                continue;
            };
            if held.worker.is_finished() {
                warn!(partition = %slot, "partition worker ended; giving the lease back");
                self.release(index).await;
                continue;
            }
            match self
                .kv
                .update(
                    lease_key(slot),
                    self.me.clone().into_bytes().into(),
                    held.revision,
                )
                .await
            {
                Ok(revision) => held.revision = revision,
                Err(err) => {
                    warn!(partition = %slot, error = %err, "lost a partition lease");
                    if let Some(held) = self.held.remove(&index) {
                        stop(held).await;
                    }
                }
            }
        }
        let live = match keys(&self.kv).await {
            Ok(keys) => keys.iter().filter(|k| k.starts_with(HEARTBEAT)).count(),
            Err(err) => {
                warn!(error = %err, "cannot list projector heartbeats");
                return;
            }
        };
        if beat {
            self.projector.progress.beat();
        }
        let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
        let share = self.count.div_ceil(live) as usize;
        // Give back the highest partitions above the fair share (new instances joined).
        while self.held.len() > share {
            let Some(index) = self.held.keys().next_back().copied() else {
                break;
            };
            self.release(index).await;
        }
        // Claim free partitions up to the share, starting at a per-instance offset so
        // instances starting together do not all race for partition 0.
        let offset = crate::partition::fnv1a32(self.me.as_bytes()) % self.count;
        for k in 0..self.count {
            if self.held.len() >= share {
                break;
            }
            let index = (offset + k) % self.count;
            if self.held.contains_key(&index) {
                continue;
            }
            let slot = self.slot(index);
            let Ok(revision) = self
                .kv
                .create(lease_key(slot), self.me.clone().into_bytes().into())
                .await
            else {
                continue;
            };
            info!(instance = %self.me, partition = %slot, "claimed a partition");
            let (tx, mut rx) = watch::channel(false);
            let projector = self.projector.clone();
            let worker = tokio::spawn(async move {
                let stopped = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                tokio::pin!(stopped);
                if let Err(err) = projector.partition_loop(slot, &mut stopped).await {
                    warn!(partition = %slot, error = %err, "partition worker failed");
                }
            });
            self.held.insert(
                index,
                Held {
                    revision,
                    stop: tx,
                    worker,
                },
            );
        }
    }

    fn slot(&self, index: u32) -> Slot {
        Slot {
            index,
            count: self.count,
        }
    }

    /// Stops the partition's worker, then deletes its lease (at the revision held).
    async fn release(&mut self, index: u32) {
        let Some(held) = self.held.remove(&index) else {
            return;
        };
        let revision = held.revision;
        stop(held).await;
        let slot = self.slot(index);
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

/// The lease TTL of `config` (at least a second).
pub(crate) fn lease_ttl(config: &crate::Config) -> Duration {
    Duration::from_millis(config.lease_ttl_ms.max(1000))
}

async fn stop(held: Held) {
    let _ = held.stop.send(true);
    let mut worker = held.worker;
    if tokio::time::timeout(Duration::from_secs(5), &mut worker)
        .await
        .is_err()
    {
        worker.abort();
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
