//! Lag and status: what `talkwai projections status` shows and the metrics export.

use deadpool_postgres::GenericClient;
use serde::Serialize;
use talkwai_eventstore::EventStore;

use crate::error::ProjectorError;
use crate::partition::{self, Slot};

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
    /// One entry per partition (one, unpartitioned).
    pub partitions: Vec<PartitionStatus>,
}

/// The state of one partition of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// Partitions in the layout.
    pub of: u32,
    /// Last stream sequence this partition applied or counted through.
    pub checkpoint: u64,
    /// Events of the stream this partition has not passed yet.
    pub lag_events: u64,
    /// Events it applied.
    pub applied: u64,
    /// The instance holding its lease (live generation, partitioned layouts), if any.
    pub owner: Option<String>,
}

/// Reads the status of every non-retired generation.
pub async fn status(
    client: &impl GenericClient,
    store: &EventStore,
) -> Result<Vec<Status>, ProjectorError> {
    let head = store.last_sequence().await?;
    let rows = client
        .query(
            "SELECT g.generation, g.schema_name, g.state, s.reason
             FROM talkwai_meta.generations g
             LEFT JOIN (SELECT generation, string_agg(stopped_reason, '; ' ORDER BY part) AS reason
                        FROM talkwai_meta.projector_state WHERE stopped_at_seq IS NOT NULL
                        GROUP BY generation) s ON s.generation = g.generation
             WHERE g.state <> 'retired' ORDER BY g.generation",
            &[],
        )
        .await?;
    // Lease holders (best effort: the bucket exists only for partitioned projectors).
    let (holders, _) = crate::lease::holders(store.jetstream())
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for row in rows {
        let generation: i32 = row.get(0);
        let schema: String = row.get(1);
        let state: String = row.get(2);
        let parts = partition::checkpoints(client, &schema).await?;
        let last = parts.iter().map(|p| p.last_seq).min().unwrap_or(0);
        let applied: u64 = parts.iter().map(|p| p.applied).sum();
        let partitions = parts
            .iter()
            .map(|p| PartitionStatus {
                partition: p.part,
                of: p.partitions,
                checkpoint: p.last_seq,
                lag_events: head.saturating_sub(p.last_seq),
                applied: p.applied,
                owner: (state == "live" && p.partitions > 1)
                    .then(|| {
                        holders.get(&Slot {
                            index: p.part,
                            count: p.partitions,
                        })
                    })
                    .flatten()
                    .cloned(),
            })
            .collect();
        let dead: i64 = client
            .query_one(
                "SELECT count(*) FROM talkwai_meta.dead_letters WHERE generation = $1 AND status IN ('open', 'skipped')",
                &[&generation],
            )
            .await?
            .get(0);
        let checkpoint = last;
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
            state,
            checkpoint,
            head,
            lag_events,
            lag_seconds,
            applied,
            dead_letters: u64::try_from(dead).unwrap_or(0),
            stopped: row.get(3),
            partitions,
        });
    }
    Ok(out)
}

/// The live generation's checkpoint (its lowest partition's).
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
