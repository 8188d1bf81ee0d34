//! Partition leases: which projector instance applies which partition.
//!
//! The leases themselves (bucket [`BUCKET`], heartbeats, fair share, renewal by revision) are
//! [`talkwai_eventstore::lease`]'s; this module runs one apply loop per held partition and
//! stops it when the lease is given back or lost. Leases only decide who *tries*: correctness
//! rests on the fenced checkpoint (see [`crate::partition`]), so a paused instance that still
//! thinks it holds a lease cannot apply an event twice. Each successful round beats the
//! projector's liveness watchdog: an instance whose rounds keep failing turns `/livez` 503 so it
//! gets restarted.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use talkwai_eventstore::lease::{LeaseConfig, LeaseHolder, Leases};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::Projector;
use crate::error::ProjectorError;
use crate::partition::Slot;

/// The bucket holding heartbeats and partition leases.
pub const BUCKET: &str = "TALKWAI_PROJECTOR_LEASES";

pub use talkwai_eventstore::is_missing;
pub use talkwai_eventstore::lease::{instance_id, lease_key};

/// Who holds each partition lease now, by partition (of every layout found), and the live
/// instances (heartbeats). Empty when the bucket does not exist (unpartitioned projection).
pub async fn holders(
    js: &jetstream::Context,
) -> Result<(BTreeMap<Slot, String>, Vec<String>), ProjectorError> {
    talkwai_eventstore::lease::holders(js, BUCKET)
        .await
        .map_err(|e| ProjectorError::Nats(e.to_string()))
}

/// The lease settings of `projector`'s configuration.
fn lease_config(projector: &Projector) -> LeaseConfig {
    LeaseConfig {
        bucket: BUCKET.into(),
        description: "TalkwAI projector partition leases and heartbeats".into(),
        ttl: lease_ttl(&projector.config),
        replicas: projector.store.replicas(),
        count: projector.config.partitions.max(1),
        instance: projector.config.instance.clone(),
    }
}

/// A partition this instance applies: the worker and how to stop it.
struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs one apply loop per held partition.
struct Workers {
    projector: Projector,
    running: BTreeMap<Slot, Worker>,
}

impl LeaseHolder for Workers {
    async fn acquired(&mut self, slot: Slot, _valid_until: Instant) {
        let (tx, mut rx) = watch::channel(false);
        let projector = self.projector.clone();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            tokio::pin!(stopped);
            if let Err(err) = projector.partition_loop(slot, &mut stopped).await {
                warn!(partition = %slot, error = %err, "partition worker failed");
            }
        });
        self.running.insert(slot, Worker { stop: tx, task });
    }

    fn renewed(&mut self, _slot: Slot, _valid_until: Instant) {}

    async fn released(&mut self, slot: Slot) {
        if let Some(worker) = self.running.remove(&slot) {
            stop(worker).await;
        }
    }

    fn running(&self, slot: Slot) -> bool {
        self.running
            .get(&slot)
            .is_some_and(|worker| !worker.task.is_finished())
    }

    fn round_done(&mut self, healthy: bool) {
        if healthy {
            self.projector.progress.beat();
        }
    }
}

/// Claims, renews and gives back partition leases, running one apply loop per held partition.
pub(crate) struct Coordinator {
    leases: Leases<Workers>,
}

impl Coordinator {
    /// A coordinator for `projector`'s configured partitions.
    pub(crate) async fn new(projector: Projector) -> Result<Self, ProjectorError> {
        let config = lease_config(&projector);
        let js = projector.store.jetstream().clone();
        let workers = Workers {
            projector,
            running: BTreeMap::new(),
        };
        let leases = Leases::new(js, config, workers)
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))?;
        Ok(Self { leases })
    }

    /// Runs lease rounds until `shutdown` resolves, then stops every worker and gives its
    /// leases back (so others take them at once instead of after a TTL).
    pub(crate) async fn run(
        self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), ProjectorError> {
        self.leases.run(shutdown).await;
        Ok(())
    }
}

/// The lease TTL of `config` (at least a second).
pub(crate) fn lease_ttl(config: &crate::Config) -> Duration {
    Duration::from_millis(config.lease_ttl_ms.max(1000))
}

async fn stop(worker: Worker) {
    let _ = worker.stop.send(true);
    let mut task = worker.task;
    if tokio::time::timeout(Duration::from_secs(5), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}
