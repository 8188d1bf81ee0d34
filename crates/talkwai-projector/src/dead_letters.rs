//! Operator actions: list dead letters, retry a stopped projection (optionally skipping the
//! poison event).

use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::error::ProjectorError;
use crate::partition::Slot;

/// A dead-lettered event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// Generation it belongs to.
    pub generation: i32,
    /// Stream sequence.
    pub seq: i64,
    /// Subject.
    pub subject: String,
    /// Event type header.
    pub event_type: Option<String>,
    /// Why it could not be applied.
    pub error: String,
    /// `open` (projection stopped on it), `skipped`, `retrying`, `resolved`.
    pub status: String,
    /// Its body.
    pub payload: String,
}

/// Dead letters, newest first; all of them or only unresolved ones.
pub async fn dead_letters(
    client: &impl GenericClient,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, ProjectorError> {
    let rows = client
        .query(
            "SELECT id, generation, seq, subject, event_type, error, status, payload
             FROM talkwai_meta.dead_letters
             WHERE $1 OR status IN ('open', 'skipped', 'retrying')
             ORDER BY seq DESC",
            &[&include_resolved],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetter {
            id: r.get(0),
            generation: r.get(1),
            seq: r.get(2),
            subject: r.get(3),
            event_type: r.get(4),
            error: r.get(5),
            status: r.get(6),
            payload: r.get(7),
        })
        .collect())
}

/// What a retry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// The generation resumed.
    pub generation: i32,
    /// The sequence it had stopped at, if it was stopped (the lowest, when several
    /// partitions were).
    pub stopped_at: Option<i64>,
    /// Whether the poison event was skipped (checkpoint moved past it).
    pub skipped: bool,
}

/// Resumes the live generation's projection after a stop (every stopped partition). Without
/// `skip`, the projector applies the stopped-at event again (after a fix it succeeds; otherwise
/// it stops again). With `skip`, the event is marked skipped and its partition's checkpoint
/// moves past it.
pub async fn retry(
    client: &mut deadpool_postgres::Object,
    skip: bool,
) -> Result<Retry, ProjectorError> {
    let tx = client.transaction().await?;
    let live = tx
        .query_opt(
            "SELECT generation, schema_name FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await?
        .ok_or_else(|| ProjectorError::Invalid("no live generation".into()))?;
    let generation: i32 = live.get(0);
    let schema: String = live.get(1);
    tx.execute(
        "SELECT pg_advisory_xact_lock(7420100 + $1::int)",
        &[&generation],
    )
    .await?;
    let stops: Vec<(i32, i64)> = tx
        .query(
            "SELECT part, stopped_at_seq FROM talkwai_meta.projector_state
             WHERE generation = $1 AND stopped_at_seq IS NOT NULL ORDER BY stopped_at_seq",
            &[&generation],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stopped = stops.first().map(|s| s.1);
    for (part, seq) in &stops {
        let seq = *seq;
        if skip {
            tx.execute(
                &format!("UPDATE {schema}.checkpoint SET last_seq = $1, updated_at = now() WHERE part = $2 AND last_seq < $1"),
                &[&seq, part],
            )
            .await?;
            tx.execute(
                "UPDATE talkwai_meta.dead_letters SET status = 'skipped' WHERE generation = $1 AND seq = $2",
                &[&generation, &seq],
            )
            .await?;
        } else {
            tx.execute(
                "UPDATE talkwai_meta.dead_letters SET status = 'retrying' WHERE generation = $1 AND seq = $2",
                &[&generation, &seq],
            )
            .await?;
        }
        tx.execute(
            "UPDATE talkwai_meta.projector_state SET stopped_at_seq = NULL, stopped_reason = NULL,
                updated_at = now() WHERE generation = $1 AND part = $2",
            &[&generation, part],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Retry {
        generation,
        stopped_at: stopped,
        skipped: skip && stopped.is_some(),
    })
}

/// Marks dead letters of partition `slot` whose events are now applied (its checkpoint past
/// them, not skipped) as resolved. Called by the projector after each batch.
pub async fn resolve_passed(
    client: &impl GenericClient,
    generation: i32,
    slot: Slot,
    checkpoint: i64,
) -> Result<u64, ProjectorError> {
    let passed = client
        .query(
            "SELECT id, subject FROM talkwai_meta.dead_letters
             WHERE generation = $1 AND status = 'retrying' AND seq <= $2",
            &[&generation, &checkpoint],
        )
        .await?;
    let ids: Vec<i64> = passed
        .iter()
        .filter(|r| slot.owns(r.get::<_, &str>(1)))
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(client
        .execute(
            "UPDATE talkwai_meta.dead_letters SET status = 'resolved', resolved_at = now()
             WHERE id = ANY($1)",
            &[&ids],
        )
        .await?)
}
