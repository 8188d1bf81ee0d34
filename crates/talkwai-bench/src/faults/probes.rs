//! What the fault suite watches while a fault runs, each on its own task, as timelines of
//! `(when, value)`:
//!
//! - `taskUpdates`: every room message of the tenant with its `seq` (a plain subscriber, as a
//!   dashboard would be);
//! - the projector's checkpoint: every partition's row of the live generation every 50 ms
//!   (`talkwai.checkpoint`, which dashboards read, is the lowest of them), reconnecting to
//!   PostgreSQL when it went away;
//! - presence: a `presence.join` every 100 ms, recording the ones answered `ok`.
//!
//! Recovery figures are read from these timelines afterwards, so a fault action never has to
//! measure while it acts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt as _;
use serde_json::{Value, json};
use talkwai_proto::headers;

use crate::commands::World;

/// How often the checkpoint is read.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// How often presence is tried.
const PRESENCE_EVERY: Duration = Duration::from_millis(100);
/// How long one presence request waits.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(1);

/// Samples of one probe: when, and the value seen (a sequence; 1 for a presence answer).
#[derive(Debug, Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<(Instant, u64)>>>);

impl Timeline {
    fn push(&self, value: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((Instant::now(), value));
    }

    /// A copy of the samples so far.
    pub fn samples(&self) -> Vec<(Instant, u64)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How long after `t0` the value first went past the highest value seen before `t0`
    /// (the stream moving again: a new `taskUpdates` seq, a checkpoint that advanced).
    pub fn advanced_after(&self, t0: Instant) -> Option<Duration> {
        let samples = self.samples();
        let before = samples
            .iter()
            .filter(|(at, _)| *at < t0)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        samples
            .iter()
            .find(|(at, v)| *at >= t0 && *v > before)
            .map(|(at, _)| *at - t0)
    }

    /// The latest value.
    pub fn last(&self) -> Option<u64> {
        self.samples().last().map(|(_, v)| *v)
    }
}

/// A timeline per partition of the live generation's checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Partitions(Arc<Mutex<std::collections::BTreeMap<i32, Timeline>>>);

impl Partitions {
    fn push(&self, part: i32, value: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(part)
            .or_default()
            .push(value);
    }

    /// How long after `t0` every partition's checkpoint had moved again (the slowest one
    /// counts: the read models are complete only up to the lowest checkpoint).
    pub fn advanced_after(&self, t0: Instant) -> Option<Duration> {
        let parts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if parts.is_empty() {
            return None;
        }
        parts
            .values()
            .map(|timeline| timeline.advanced_after(t0))
            .collect::<Option<Vec<Duration>>>()?
            .into_iter()
            .max()
    }
}

/// How long after `t0` the first of `times` came.
pub fn first_after(times: &[Instant], t0: Instant) -> Option<Duration> {
    times
        .iter()
        .filter(|at| **at >= t0)
        .min()
        .map(|at| *at - t0)
}

/// The three probes of one scenario; dropping it stops them.
pub struct Probes {
    /// `taskUpdates` seqs as they arrived.
    pub task_updates: Timeline,
    /// Checkpoint readings: the lowest partition's (`talkwai.checkpoint`).
    pub checkpoint: Timeline,
    /// Checkpoint readings of each partition.
    pub partitions: Partitions,
    /// When a `presence.join` was answered `ok` (value 1).
    pub presence: Timeline,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Probes {
    /// Starts the probes for `world`'s tenant; `database` is the projector's PostgreSQL URL.
    pub async fn start(
        client: &async_nats::Client,
        world: &World,
        database: &str,
    ) -> anyhow::Result<Self> {
        let task_updates = Timeline::default();
        let checkpoint = Timeline::default();
        let partitions = Partitions::default();
        let presence = Timeline::default();
        let mut updates = client
            .subscribe(format!(
                "talkwai.room.tenant.{}.topic.taskUpdates",
                world.tenant
            ))
            .await?;
        client.flush().await?;
        let seen = task_updates.clone();
        let reader = tokio::spawn(async move {
            while let Some(message) = updates.next().await {
                if let Some(seq) = serde_json::from_slice::<Value>(&message.payload)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(Value::as_u64))
                {
                    seen.push(seq);
                }
            }
        });
        let poller = tokio::spawn(poll_checkpoint(
            database.to_owned(),
            checkpoint.clone(),
            partitions.clone(),
        ));
        let prober = tokio::spawn(probe_presence(
            client.clone(),
            world.clone(),
            presence.clone(),
        ));
        Ok(Self {
            task_updates,
            checkpoint,
            partitions,
            presence,
            tasks: vec![reader, poller, prober],
        })
    }
}

/// Reads the checkpoints until aborted; a failed read drops the connection and opens another.
async fn poll_checkpoint(database: String, timeline: Timeline, partitions: Partitions) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            client = match tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&database, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((c, connection))) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Some(c)
                }
                _ => None,
            };
        }
        if let Some(c) = &client {
            let read = tokio::time::timeout(Duration::from_secs(2), read_checkpoints(c)).await;
            match read {
                Ok(Ok(rows)) => {
                    if let Some(lowest) = rows.iter().map(|(_, seq)| *seq).min() {
                        timeline.push(lowest);
                    }
                    for (part, seq) in rows {
                        partitions.push(part, seq);
                    }
                }
                // Not created yet, PostgreSQL gone or slow: connect again.
                _ => client = None,
            }
        }
        tokio::time::sleep(CHECKPOINT_EVERY).await;
    }
}

/// Every partition's checkpoint of the live generation: `(partition, last_seq)`.
async fn read_checkpoints(
    client: &tokio_postgres::Client,
) -> Result<Vec<(i32, u64)>, tokio_postgres::Error> {
    let schema: String = client
        .query_one(
            "SELECT schema_name FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await?
        .get(0);
    let rows = client
        .query(
            &format!("SELECT part, last_seq FROM \"{schema}\".checkpoint ORDER BY part"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
        .collect())
}

/// Joins the tenant's room with one session, again and again, until aborted.
async fn probe_presence(client: async_nats::Client, world: World, timeline: Timeline) {
    let subject = format!("talkwai.room.tenant.{}.presence.join", world.tenant);
    let body = json!({"sessionId": "fault-probe", "data": {"probe": true}}).to_string();
    loop {
        if presence_join(&client, &subject, &world.bearer, body.clone()).await {
            timeline.push(1);
        }
        tokio::time::sleep(PRESENCE_EVERY).await;
    }
}

/// One `presence.join`; true when answered `ok`.
pub async fn presence_join(
    client: &async_nats::Client,
    subject: &str,
    bearer: &str,
    body: String,
) -> bool {
    let mut map = HeaderMap::new();
    map.insert(headers::AUTHORIZATION, bearer);
    let request = client.request_with_headers(subject.to_owned(), map, body.into());
    match tokio::time::timeout(PRESENCE_TIMEOUT, request).await {
        Ok(Ok(reply)) => serde_json::from_slice::<Value>(&reply.payload)
            .is_ok_and(|v| v.get("ok") == Some(&Value::Bool(true))),
        _ => false,
    }
}
