//! Partitions: how the projection is split between projector instances.
//!
//! An event belongs to partition `fnv1a32(scope token) mod P`, where the scope token is the
//! third token of its subject (`talkwai.evt.<tenant|platform>.…`). Every row of a read model is
//! written by the events of one aggregate, whose subject carries one scope token, so each row
//! is owned by exactly one partition and partitions never write the same row. FNV-1a over the
//! token is what nats-server's `{{partition(P,1)}}` subject transform computes, so a later
//! server-side split (a sourced stream per partition) gives the same partition numbers.
//!
//! Each generation's `checkpoint` table has one row per partition (`part`, with the layout's
//! partition count in `partitions`). A partition's owner commits its rows and its checkpoint
//! row in one transaction, after locking that row and checking it still holds the sequence the
//! owner last committed (the fence): a stale owner can never apply an event twice.
//!
//! Changing P re-lays the checkpoint rows out ([`ensure_layout`]) at one consistent sequence:
//! with every partition paused (an exclusive lock), lagging partitions are first caught up to
//! the most advanced one ([`equalize`]), then the rows are replaced by P rows at that sequence.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures::StreamExt;
use talkwai_eventstore::{EventStore, StoredMessage};
use tracing::info;

use crate::apply::{self, PoisonPolicy};
use crate::error::ProjectorError;

/// Events replayed per transaction while equalizing partitions.
const EQUALIZE_BATCH: usize = 5000;

pub use talkwai_eventstore::partition::{Slot, fnv1a32, partition_of};

/// One partition's checkpoint row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartCheckpoint {
    /// Partition number.
    pub part: u32,
    /// Partitions of the layout the row belongs to.
    pub partitions: u32,
    /// Last stream sequence applied (or counted through) by this partition.
    pub last_seq: u64,
    /// Events this partition applied.
    pub applied: u64,
}

/// Every checkpoint row of `schema`, by partition.
pub async fn checkpoints(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<PartCheckpoint>, ProjectorError> {
    let rows = client
        .query(
            &format!(
                "SELECT part, partitions, last_seq, applied FROM {schema}.checkpoint ORDER BY part"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| PartCheckpoint {
            part: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
            partitions: u32::try_from(r.get::<_, i32>(1)).unwrap_or(1),
            last_seq: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            applied: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
        })
        .collect())
}

/// Whether `rows` is exactly the layout of `count` partitions.
fn is_layout(rows: &[PartCheckpoint], count: u32) -> bool {
    rows.len() == count as usize
        && rows
            .iter()
            .enumerate()
            .all(|(i, r)| r.part as usize == i && r.partitions == count)
}

/// Makes `schema`'s checkpoint rows the layout of `count` partitions, if they are not already.
/// Takes the generation's lock exclusively (every partition owner pauses), catches lagging
/// partitions up to the most advanced one, then writes `count` rows at that sequence. Returns
/// whether it changed the layout.
pub async fn ensure_layout(
    conn: &mut deadpool_postgres::Object,
    store: &EventStore,
    schema: &str,
    generation: i32,
    count: u32,
    keys: Option<&talkwai_keys::KeyStore>,
) -> Result<bool, ProjectorError> {
    let count = count.max(1);
    if is_layout(&checkpoints(&*conn, schema).await?, count) {
        return Ok(false);
    }
    let tx = conn.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(7420100 + $1::int)",
        &[&generation],
    )
    .await?;
    let rows = checkpoints(&tx, schema).await?;
    if is_layout(&rows, count) {
        return Ok(false);
    }
    let stopped = tx
        .query_opt(
            "SELECT part, stopped_at_seq FROM talkwai_meta.projector_state
             WHERE generation = $1 AND stopped_at_seq IS NOT NULL LIMIT 1",
            &[&generation],
        )
        .await?;
    if let Some(row) = stopped {
        let (part, seq): (i32, i64) = (row.get(0), row.get(1));
        return Err(ProjectorError::Invalid(format!(
            "partition {part} of generation {generation} is stopped at event {seq}: run `talkwai projections retry` before changing the partition count"
        )));
    }
    let seq = equalize(&tx, store, schema, generation, keys).await?;
    let applied: i64 = tx
        .query_one(
            &format!("SELECT coalesce(sum(applied), 0)::bigint FROM {schema}.checkpoint"),
            &[],
        )
        .await?
        .get(0);
    let last_event_at: i64 = tx
        .query_one(
            &format!("SELECT coalesce(max(last_event_at), 0) FROM {schema}.checkpoint"),
            &[],
        )
        .await?
        .get(0);
    let seq_i = i64::try_from(seq).unwrap_or(i64::MAX);
    let count_i = i32::try_from(count).unwrap_or(i32::MAX);
    // The applied total stays on partition 0 so the view's sum is unchanged.
    tx.execute(&format!("DELETE FROM {schema}.checkpoint"), &[])
        .await?;
    tx.execute(
        &format!(
            "INSERT INTO {schema}.checkpoint (part, partitions, last_seq, last_event_at, applied)
             SELECT p, $1::int, $2::bigint, $3::bigint, CASE WHEN p = 0 THEN $4::bigint ELSE 0 END
             FROM generate_series(0, $1::int - 1) p"
        ),
        &[&count_i, &seq_i, &last_event_at, &applied],
    )
    .await?;
    tx.execute(
        "DELETE FROM talkwai_meta.projector_state WHERE generation = $1",
        &[&generation],
    )
    .await?;
    tx.commit().await?;
    info!(
        schema,
        from = rows.len(),
        to = count,
        seq,
        "checkpoint re-laid out"
    );
    Ok(true)
}

/// Catches every partition of `schema` up to the most advanced one, inside `tx`, which must
/// hold the generation's lock exclusively; returns that sequence. Fails when a partition meets
/// an event it cannot apply.
pub async fn equalize(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &EventStore,
    schema: &str,
    generation: i32,
    keys: Option<&talkwai_keys::KeyStore>,
) -> Result<u64, ProjectorError> {
    let mut rows = checkpoints(tx, schema).await?;
    let Some(target) = rows.iter().map(|r| r.last_seq).max() else {
        return Err(ProjectorError::Invalid(format!(
            "{schema}.checkpoint has no rows"
        )));
    };
    let low = rows.iter().map(|r| r.last_seq).min().unwrap_or(target);
    if low >= target {
        return Ok(target);
    }
    let mut replay = store.replay(low + 1, Vec::new()).await?;
    let mut at = low;
    while at < target {
        let mut batch: Vec<StoredMessage> = Vec::with_capacity(EQUALIZE_BATCH);
        while batch.len() < EQUALIZE_BATCH && at < target {
            let next = tokio::time::timeout(Duration::from_secs(5), replay.next()).await;
            let Ok(Some(message)) = next else {
                return Err(ProjectorError::Invalid(format!(
                    "the log ended at {at} before {target} while equalizing partitions"
                )));
            };
            let message = message?;
            at = message.seq;
            if message.seq <= target {
                batch.push(message);
            }
        }
        for row in &mut rows {
            let slot = Slot {
                index: row.part,
                count: row.partitions.max(1),
            };
            let start = batch.partition_point(|m| m.seq <= row.last_seq);
            let Some(todo) = batch.get(start..).filter(|t| !t.is_empty()) else {
                continue;
            };
            let outcome = apply::apply_partition(
                tx,
                schema,
                generation,
                todo,
                PoisonPolicy::Stop,
                slot,
                row.last_seq,
                keys,
            )
            .await?;
            if let Some(poison) = outcome.stopped_at {
                return Err(ProjectorError::Invalid(format!(
                    "partition {slot} cannot apply event {} ({}): {}; see `talkwai projections dead-letters`",
                    poison.seq, poison.subject, poison.error
                )));
            }
            row.last_seq = outcome.checkpoint.max(row.last_seq);
        }
    }
    Ok(target)
}
