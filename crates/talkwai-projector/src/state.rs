//! The apply loop's SQL: a partition's checkpoint, the generation lock every batch shares,
//! whether a generation is still live, and stops at a poison event
//! (`talkwai_meta.projector_state`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Transaction;

use crate::apply::Poison;
use crate::{ProjectorError, Slot};

/// The checkpoint of partition `slot` in `schema`; [`ProjectorError::Fenced`] when the
/// partition has no row (another layout).
pub(crate) async fn partition_checkpoint(
    client: &impl GenericClient,
    schema: &str,
    slot: Slot,
) -> Result<u64, ProjectorError> {
    let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
    let checkpoint: i64 = client
        .query_opt(
            &format!("SELECT last_seq FROM {schema}.checkpoint WHERE part = $1"),
            &[&part],
        )
        .await?
        .ok_or_else(|| ProjectorError::Fenced {
            slot: slot.to_string(),
            expected: 0,
            found: None,
        })?
        .get(0);
    Ok(u64::try_from(checkpoint).unwrap_or(0))
}

/// Takes `generation`'s lock shared for the transaction and tells whether it is still the
/// live generation. Shared between partitions; rebuild parity checks, swaps, retries and
/// layout changes take it exclusively, so they pause every partition.
pub(crate) async fn lock_live(
    tx: &Transaction<'_>,
    generation: i32,
) -> Result<bool, ProjectorError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared(7420100 + $1::int)",
        &[&generation],
    )
    .await?;
    let live: Option<i32> = tx
        .query_opt(
            "SELECT generation FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    Ok(live == Some(generation))
}

/// Records that partition `slot` of `generation` stopped at `poison`.
pub(crate) async fn record_stop(
    tx: &Transaction<'_>,
    generation: i32,
    slot: Slot,
    poison: &Poison,
) -> Result<(), ProjectorError> {
    let seq = i64::try_from(poison.seq).unwrap_or(i64::MAX);
    let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO talkwai_meta.projector_state (generation, part, stopped_at_seq, stopped_reason, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (generation, part) DO UPDATE SET stopped_at_seq = EXCLUDED.stopped_at_seq,
            stopped_reason = EXCLUDED.stopped_reason, updated_at = now()",
        &[&generation, &part, &seq, &format!("event {} on {}: {}", poison.seq, poison.subject, poison.error)],
    )
    .await?;
    Ok(())
}

/// Whether partition `slot` of `generation` is stopped at a poison event.
pub(crate) async fn is_stopped(
    client: &impl GenericClient,
    generation: i32,
    slot: Slot,
) -> Result<bool, ProjectorError> {
    let part = i32::try_from(slot.index).unwrap_or(i32::MAX);
    let row = client
        .query_opt(
            "SELECT stopped_at_seq FROM talkwai_meta.projector_state
             WHERE generation = $1 AND part = $2 AND stopped_at_seq IS NOT NULL",
            &[&generation, &part],
        )
        .await?;
    Ok(row.is_some())
}
