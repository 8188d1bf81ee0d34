//! Tenants owned by instances: which instance decides a partition's commands from memory.
//!
//! Tenants map to partitions (`talkwai_eventstore::partition`, FNV-1a of the subject's scope
//! token mod P); each partition's lease (`talkwai_eventstore::lease`, bucket [`BUCKET`]) is
//! held by one instance at a time. While an instance holds a partition's lease it is the only
//! writer of that partition, so what it read or wrote there during this *tenure* is still the
//! log's last word: its commands are decided from memory (see `repo`) without reading heads.
//!
//! A tenure is a number unique within the process, given when a lease is taken and ended when
//! it is given back or lost. Cached state is tagged with the tenure of its subject's partition
//! at the moment it was read or written, and trusted only while that same tenure is current
//! and the lease is certainly held by this process's clock (`valid_until`). A paused instance
//! that wakes after its lease expired therefore trusts nothing, and it checks again right
//! before each write ([`Ownership::holds`]); the expected-sequence checks on every append refuse
//! whatever else is stale.
//!
//! Other instances learn the owners by watching the bucket ([`Owners`]) and forward a
//! command to its partition's owner (`route`).
//!
//! Leases decide who *tries*; the log's fence decides what *lands*
//! (`talkwai_proto::writer_fence`): before it starts deciding in a partition, an instance
//! bumps the fence of the partition's previous owner ([`take_over`]), so that owner's later
//! batches fail in the server, and an instance whose own fence was bumped trusts none of its
//! memory any more ([`Ownership::retenure_all`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use talkwai_eventstore::lease::LeaseHolder;
use talkwai_eventstore::partition::{Slot, partition_of};
use talkwai_eventstore::{
    AppendError, AppendRequest, Appender, AppenderConfig, EventStore, Outbound,
};
use talkwai_proto::writer_fence;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The bucket holding the command service's partition leases and heartbeats.
pub const BUCKET: &str = "TALKWAI_COMMAND_LEASES";

/// One partition as this instance sees it.
struct Partition {
    /// The current tenure (0: not held).
    tenure: AtomicU64,
    /// Until when the lease is certainly held: nanoseconds after [`Ownership::base`].
    valid_until: AtomicU64,
    /// Commands deciding under the current tenure hold it shared; giving the partition back
    /// takes it exclusively, so nothing decided from memory is still being written when the
    /// next owner starts.
    drain: tokio::sync::RwLock<()>,
    /// Being given back: no new command enters; those inside finish (their lease is still
    /// held, and certainly so until `valid_until`).
    closing: std::sync::atomic::AtomicBool,
}

/// The partitions this instance holds, and since when.
pub struct Ownership {
    count: u32,
    base: Instant,
    partitions: Vec<Partition>,
    next_tenure: AtomicU64,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("count", &self.count)
            .field("held", &self.held())
            .finish()
    }
}

/// A command deciding under a tenure: keeps the partition from being given back meanwhile.
#[derive(Debug)]
pub struct Tenure<'a> {
    /// The partition.
    pub partition: u32,
    /// Its tenure when the command began.
    pub tenure: u64,
    _drain: tokio::sync::RwLockReadGuard<'a, ()>,
}

impl Ownership {
    /// `count` partitions, none held.
    pub fn new(count: u32) -> Self {
        let count = count.max(1);
        Self {
            count,
            base: Instant::now(),
            partitions: (0..count)
                .map(|_| Partition {
                    tenure: AtomicU64::new(0),
                    valid_until: AtomicU64::new(0),
                    drain: tokio::sync::RwLock::new(()),
                    closing: std::sync::atomic::AtomicBool::new(false),
                })
                .collect(),
            next_tenure: AtomicU64::new(1),
        }
    }

    /// How many partitions there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The partition of a command or event subject.
    pub fn partition_of(&self, subject: &str) -> u32 {
        partition_of(subject, self.count)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn partition(&self, index: u32) -> Option<&Partition> {
        self.partitions.get(index as usize)
    }

    /// The current tenure of `partition`, if this instance holds it, its lease is certainly
    /// still held now, and it is not being given back: whether new commands are decided here.
    pub fn tenure(&self, partition: u32) -> Option<u64> {
        let p = self.partition(partition)?;
        if p.closing.load(Ordering::Acquire) {
            return None;
        }
        self.held_tenure(p)
    }

    /// The tenure of `p` while its lease is certainly held (being given back or not).
    fn held_tenure(&self, p: &Partition) -> Option<u64> {
        let tenure = p.tenure.load(Ordering::Acquire);
        (tenure != 0 && self.nanos(Instant::now()) < p.valid_until.load(Ordering::Acquire))
            .then_some(tenure)
    }

    /// The current tenure of the partition `subject` belongs to (0: not held).
    pub fn tenure_of(&self, subject: &str) -> u64 {
        self.tenure(self.partition_of(subject)).unwrap_or(0)
    }

    /// Whether `tenure` of `partition` is still current and certainly held (also while the
    /// partition is being given back: the commands inside finish their writes).
    pub fn holds(&self, partition: u32, tenure: u64) -> bool {
        tenure != 0 && self.partition(partition).and_then(|p| self.held_tenure(p)) == Some(tenure)
    }

    /// Whether state tagged with `tag` for `subject` can be trusted without reading its head.
    pub fn trusts(&self, subject: &str, tag: u64) -> bool {
        tag != 0 && self.tenure_of(subject) == tag
    }

    /// Enters `partition` for one command: its tenure, held shared until the command is done,
    /// or `None` when this instance does not hold it (or no longer certainly does).
    pub async fn enter(&self, partition: u32) -> Option<Tenure<'_>> {
        let p = self.partition(partition)?;
        self.tenure(partition)?;
        let drain = p.drain.read().await;
        // Read again under the guard: a release may have finished while we waited.
        let tenure = self.tenure(partition)?;
        Some(Tenure {
            partition,
            tenure,
            _drain: drain,
        })
    }

    /// The partitions held now.
    pub fn held(&self) -> Vec<u32> {
        (0..self.count)
            .filter(|i| self.tenure(*i).is_some())
            .collect()
    }

    fn acquire(&self, index: u32, valid_until: Instant) {
        if let Some(p) = self.partition(index) {
            let tenure = self.next_tenure.fetch_add(1, Ordering::AcqRel);
            p.valid_until
                .store(self.nanos(valid_until), Ordering::Release);
            p.tenure.store(tenure, Ordering::Release);
        }
    }

    /// Starts a new tenure in every partition held (their leases unchanged): nothing cached
    /// under the old ones is trusted, and commands deciding under them fail their fence. For
    /// when another instance fenced this one in the log: it took one of our partitions over
    /// (we were paused, or could not renew), so our memory of it may be stale; the lease
    /// rounds find out which.
    pub fn retenure_all(&self) {
        for p in &self.partitions {
            if p.tenure.load(Ordering::Acquire) != 0 {
                let tenure = self.next_tenure.fetch_add(1, Ordering::AcqRel);
                p.tenure.store(tenure, Ordering::Release);
            }
        }
    }

    fn renew(&self, index: u32, valid_until: Instant) {
        if let Some(p) = self.partition(index) {
            p.valid_until
                .store(self.nanos(valid_until), Ordering::Release);
        }
    }

    async fn release(&self, index: u32) {
        if let Some(p) = self.partition(index) {
            // New commands stop entering at once; those inside finish (the lease is only
            // deleted after this returns), then nothing is trusted any more.
            p.closing.store(true, Ordering::Release);
            let drained = p.drain.write().await;
            p.tenure.store(0, Ordering::Release);
            p.closing.store(false, Ordering::Release);
            drop(drained);
        }
    }
}

/// The lease holder of the command service: moves [`Ownership`] as leases come and go.
pub struct Holder {
    ownership: Arc<Ownership>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Fences previous owners in the log before a partition is decided here.
    fencer: Option<Fencer>,
    /// Partitions whose lease was taken but whose previous owner could not be fenced: not
    /// decided here, and given back at the next round.
    unfenced: std::collections::HashSet<u32>,
    /// The sequence of our owner record of each partition held.
    owned_at: HashMap<u32, u64>,
}

/// What a holder needs to fence previous owners.
struct Fencer {
    store: EventStore,
    appender: Appender,
    me: String,
}

impl Holder {
    /// A holder for `ownership`; `ready` fires after the first lease round.
    pub fn new(ownership: Arc<Ownership>, ready: tokio::sync::oneshot::Sender<()>) -> Self {
        Self {
            ownership,
            ready: Some(ready),
            fencer: None,
            unfenced: std::collections::HashSet::new(),
            owned_at: HashMap::new(),
        }
    }

    /// Fences each partition's previous owner in `store`'s log (as instance `me`) before
    /// deciding in it.
    pub fn fencing(mut self, store: &EventStore, me: &str) -> Self {
        self.fencer = Some(Fencer {
            store: store.clone(),
            appender: store.appender(AppenderConfig {
                group: false,
                ..AppenderConfig::default()
            }),
            me: me.to_owned(),
        });
        self
    }
}

/// Takes partition `slot` over in the log as instance `me`: reads its owner record, bumps the
/// fence of the instance it names (unless that is `me` or it gave the partition back), then
/// writes `me` as the owner; returns the sequence of that record. From
/// the bump on, every batch the previous owner sends fails in the server. A lost race on the
/// owner record (another instance wrote it meanwhile) is tried again, up to three times.
pub async fn take_over(
    store: &EventStore,
    appender: &Appender,
    me: &str,
    slot: Slot,
) -> Result<u64, AppendError> {
    let subject = writer_fence::owner_subject(slot.index, slot.count);
    let mut last = Err(AppendError::Conflict("not tried".into()));
    for _ in 0..3 {
        let record = store
            .last_of_subject(&subject)
            .await
            .map_err(|e| AppendError::Unknown(e.to_string()))?;
        let seq = record.as_ref().map_or(0, |m| m.seq);
        let previous = record
            .and_then(|m| writer_fence::Owner::decode(&m.payload))
            .filter(|owner| !owner.released)
            .map(|owner| owner.by)
            .filter(|by| by != me);
        if let Some(previous) = &previous {
            let bump = writer_fence::Fence::bump(me, slot.index, slot.count);
            appender
                .append(lone(
                    writer_fence::fence_subject(previous),
                    writer_fence::FENCE_TYPE,
                    bump.encode(),
                    None,
                ))
                .await?;
            info!(partition = %slot, previous = %previous, "fenced the previous owner in the log");
        }
        let owner = writer_fence::Owner::new(me, slot.index, slot.count);
        last = appender
            .append(lone(
                subject.clone(),
                writer_fence::OWNER_TYPE,
                owner.encode(),
                Some(seq),
            ))
            .await
            .map(|ack| ack.last_seq);
        if !matches!(last, Err(AppendError::Conflict(_))) {
            return last;
        }
    }
    last
}

/// Records in the log that instance `me` gave partition `slot` back after its last write
/// there, so the next owner does not fence it. Written only if `me`'s own owner record (at
/// `owned_at`) is still the last: an instance that lost the partition writes nothing.
pub async fn hand_back(
    appender: &Appender,
    me: &str,
    slot: Slot,
    owned_at: u64,
) -> Result<(), AppendError> {
    let released = writer_fence::Owner::released(me, slot.index, slot.count);
    appender
        .append(lone(
            writer_fence::owner_subject(slot.index, slot.count),
            writer_fence::OWNER_TYPE,
            released.encode(),
            Some(owned_at),
        ))
        .await
        .map(|_| ())
}

/// A request of one fence message of `event_type`.
fn lone(
    subject: String,
    event_type: &str,
    payload: Vec<u8>,
    expected: Option<u64>,
) -> AppendRequest {
    AppendRequest {
        messages: vec![Outbound {
            subject,
            headers: talkwai_eventstore::header_map(writer_fence::headers(event_type)),
            payload: payload.into(),
            expected_last_subject_seq: expected,
        }],
        dedupe_id: None,
        claim_first: false,
    }
}

impl LeaseHolder for Holder {
    async fn acquired(&mut self, slot: Slot, valid_until: Instant) {
        if let Some(fencer) = &self.fencer {
            match take_over(&fencer.store, &fencer.appender, &fencer.me, slot).await {
                Ok(seq) => {
                    self.owned_at.insert(slot.index, seq);
                }
                Err(err) => {
                    warn!(partition = %slot, error = %err,
                        "cannot fence the partition's previous owner; giving the lease back");
                    self.unfenced.insert(slot.index);
                    return;
                }
            }
        }
        self.ownership.acquire(slot.index, valid_until);
        crate::ops::partitions_held(self.ownership.held().len());
    }

    fn running(&self, slot: Slot) -> bool {
        !self.unfenced.contains(&slot.index)
    }

    fn renewed(&mut self, slot: Slot, valid_until: Instant) {
        self.ownership.renew(slot.index, valid_until);
    }

    async fn released(&mut self, slot: Slot) {
        self.unfenced.remove(&slot.index);
        self.ownership.release(slot.index).await;
        // Drained: nothing of ours is being written there any more.
        if let (Some(fencer), Some(owned_at)) = (&self.fencer, self.owned_at.remove(&slot.index))
            && let Err(err) = hand_back(&fencer.appender, &fencer.me, slot, owned_at).await
        {
            // Lost to another instance (its record is newer), or the log is unreachable: the
            // next owner fences us, which is safe.
            debug!(partition = %slot, error = %err, "no release record written");
        }
        crate::ops::partitions_held(self.ownership.held().len());
        info!(partition = %slot, "no longer deciding this partition's commands");
    }

    fn round_done(&mut self, _healthy: bool) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }
}

/// Who holds each partition, as the lease bucket says (kept current by a watch).
#[derive(Debug, Default)]
pub struct Owners {
    by_partition: RwLock<HashMap<u32, String>>,
}

impl Owners {
    /// The instance holding `partition`, if any.
    pub fn of(&self, partition: u32) -> Option<String> {
        self.by_partition
            .read()
            .ok()
            .and_then(|m| m.get(&partition).cloned())
    }

    /// Records a lease entry (`None`: deleted or expired).
    pub fn set(&self, partition: u32, holder: Option<String>) {
        if let Ok(mut map) = self.by_partition.write() {
            match holder {
                Some(holder) => {
                    map.insert(partition, holder);
                }
                None => {
                    map.remove(&partition);
                }
            }
        }
    }
}

/// How long a command waits for its partition to get an owner before answering `unavailable`.
pub fn settle_wait(ttl: Duration) -> Duration {
    ttl * 2 + Duration::from_millis(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tenure_is_trusted_only_while_held_and_valid() {
        let ownership = Ownership::new(4);
        let subject = "talkwai.evt.t1.task.x";
        let p = ownership.partition_of(subject);
        assert_eq!(ownership.tenure(p), None);
        assert_eq!(ownership.tenure_of(subject), 0);
        assert!(!ownership.trusts(subject, 0));

        ownership.acquire(p, Instant::now() + Duration::from_secs(2));
        let t = ownership.tenure(p).expect("held");
        assert!(ownership.trusts(subject, t));
        assert!(ownership.holds(p, t));
        assert_eq!(ownership.held(), vec![p]);

        // The lease runs out by this process's clock: nothing is trusted any more.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(ownership.tenure(p), None);
        assert!(!ownership.trusts(subject, t));
        assert!(!ownership.holds(p, t));

        // Renewed: the same tenure is good again (nobody else could have held it).
        ownership.renew(p, Instant::now() + Duration::from_secs(2));
        assert!(ownership.holds(p, t));

        // Given back and taken again: a new tenure, so state of the old one is not trusted.
        ownership.release(p).await;
        assert!(!ownership.holds(p, t));
        ownership.acquire(p, Instant::now() + Duration::from_secs(2));
        let t2 = ownership.tenure(p).expect("held again");
        assert_ne!(t, t2);
        assert!(!ownership.trusts(subject, t));
        assert!(ownership.trusts(subject, t2));
    }

    #[tokio::test(start_paused = true)]
    async fn giving_a_partition_back_waits_for_commands_deciding_in_it() {
        let ownership = Arc::new(Ownership::new(2));
        ownership.acquire(1, Instant::now() + Duration::from_secs(5));
        let entered = ownership.enter(1).await.expect("held");
        assert!(
            ownership.enter(0).await.is_none(),
            "partition 0 is not held"
        );
        let releasing = {
            let ownership = Arc::clone(&ownership);
            tokio::spawn(async move { ownership.release(1).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!releasing.is_finished(), "a command still decides in it");
        assert!(
            ownership.enter(1).await.is_none(),
            "no new command enters it"
        );
        assert!(
            ownership.holds(1, entered.tenure),
            "the command inside may still write"
        );
        let tenure = entered.tenure;
        drop(entered);
        releasing.await.expect("released");
        assert!(
            !ownership.holds(1, tenure),
            "given back: nothing is trusted"
        );
    }

    #[test]
    fn owners_follow_the_bucket() {
        let owners = Owners::default();
        assert_eq!(owners.of(3), None);
        owners.set(3, Some("a".into()));
        assert_eq!(owners.of(3).as_deref(), Some("a"));
        owners.set(3, None);
        assert_eq!(owners.of(3), None);
    }
}
