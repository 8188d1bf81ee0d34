//! Lag and status: what `talkwai projections status` shows and the metrics export.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use talkwai_eventstore::EventStore;

use crate::error::ProjectorError;

/// The state of one generation's projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Generation number.
    pub generation: i32,
    /// Its schema.
    pub schema: String,
    /// `building`, `live`, `retired` or `snapshot`.
    pub state: String,
    /// Last applied stream sequence.
    pub checkpoint: u64,
    /// Stream head.
    pub head: u64,
    /// Events not yet applied.
    pub lag_events: u64,
    /// Age of the oldest unapplied event, seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Events applied since the generation was created.
    pub applied: u64,
    /// Open dead letters.
    pub dead_letters: u64,
    /// Why the projection is stopped, if it is.
    pub stopped: Option<String>,
}

/// Reads the status of every non-retired generation.
pub async fn status(
    client: &impl GenericClient,
    store: &EventStore,
) -> Result<Vec<Status>, ProjectorError> {
    let head = store.last_sequence().await?;
    let rows = client
        .query(
            "SELECT g.generation, g.schema_name, g.state, s.stopped_reason
             FROM talkwai_meta.generations g
             LEFT JOIN talkwai_meta.projector_state s ON s.generation = g.generation
             WHERE g.state <> 'retired' ORDER BY g.generation",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let generation: i32 = row.get(0);
        let schema: String = row.get(1);
        let checkpoint = client
            .query_one(
                &format!("SELECT last_seq, applied FROM {schema}.checkpoint"),
                &[],
            )
            .await?;
        let last: i64 = checkpoint.get(0);
        let applied: i64 = checkpoint.get(1);
        let dead: i64 = client
            .query_one(
                "SELECT count(*) FROM talkwai_meta.dead_letters WHERE generation = $1 AND status IN ('open', 'skipped')",
                &[&generation],
            )
            .await?
            .get(0);
        let checkpoint = u64::try_from(last).unwrap_or(0);
        let lag_events = head.saturating_sub(checkpoint);
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            match store.jetstream().get_stream(store.stream_name()).await {
                Ok(stream) => match stream.direct_get(checkpoint + 1).await {
                    Ok(message) => {
                        let now = time::OffsetDateTime::now_utc();
                        (now - message.time).as_seconds_f64().max(0.0)
                    }
                    Err(_) => 0.0,
                },
                Err(_) => 0.0,
            }
        };
        out.push(Status {
            generation,
            schema,
            state: row.get(2),
            checkpoint,
            head,
            lag_events,
            lag_seconds,
            applied: u64::try_from(applied).unwrap_or(0),
            dead_letters: u64::try_from(dead).unwrap_or(0),
            stopped: row.get(3),
        });
    }
    Ok(out)
}

/// The live generation's checkpoint.
pub async fn live_checkpoint(client: &impl GenericClient) -> Result<u64, ProjectorError> {
    let row = client
        .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
        .await?;
    let seq: i64 = row.get(0);
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// Waits until the live generation has applied `seq` (read-your-writes), polling every few
/// milliseconds; returns false on timeout.
pub async fn wait_for(
    client: &impl GenericClient,
    seq: u64,
    timeout: std::time::Duration,
) -> Result<bool, ProjectorError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if live_checkpoint(client).await? >= seq {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
