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

    /// When the value went past every earlier one (the stream moved: a new `taskUpdates`
    /// seq, a checkpoint that advanced).
    pub fn progress(&self) -> Vec<Instant> {
        let mut highest = None;
        let mut out = Vec::new();
        for (at, value) in self.samples() {
            if highest.is_none_or(|h| value > h) {
                if highest.is_some() {
                    out.push(at);
                }
                highest = Some(value);
            }
        }
        out
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

    /// How long after `t0` every partition's checkpoint moved again ([`resumed`]; the
    /// slowest counts: the read models are complete only up to the lowest checkpoint).
    pub fn resumed(&self, t0: Instant) -> Option<Duration> {
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
            .map(|timeline| resumed(&timeline.progress(), t0))
            .collect::<Option<Vec<Duration>>>()?
            .into_iter()
            .max()
    }
}

/// Progress after this much past a fault still counts as the one the fault interrupted: a
/// killed process's last commit or reply can land a few milliseconds after its death, and the
/// stall it leaves begins only then.
pub const GRACE: Duration = Duration::from_millis(500);

/// How long after `t0` the progress stream (`times`: replies, new seqs, checkpoint moves)
/// resumed after the fault: the end of the longest pause that began before `t0 + GRACE` and
/// ended after `t0`. `None` while such a pause is still open (no progress since, longer than
/// any closed one), so a stream that only let through what was in flight at the fault does
/// not count as resumed. Meaningful from `t0 + GRACE` on.
pub fn resumed(times: &[Instant], t0: Instant) -> Option<Duration> {
    let now = Instant::now();
    let mut times = times.to_vec();
    times.sort();
    // Pauses: (start, end), the last one still open.
    let mut pauses: Vec<(Instant, Option<Instant>)> =
        times.windows(2).map(|w| (w[0], Some(w[1]))).collect();
    match (times.first(), times.last()) {
        (Some(first), Some(last)) => {
            if *first > t0 {
                pauses.push((t0, Some(*first)));
            }
            pauses.push((*last, None));
        }
        _ => pauses.push((t0, None)),
    }
    let longest = pauses
        .into_iter()
        .filter(|(start, end)| *start <= t0 + GRACE && end.is_none_or(|end| end >= t0))
        // The longest; of equally long ones, the first.
        .max_by_key(|(start, end)| {
            (
                end.unwrap_or(now).saturating_duration_since(*start),
                std::cmp::Reverse(*start),
            )
        })?;
    longest.1.map(|end| end.saturating_duration_since(t0))
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
        let mut updates = crate::e2e::subscribe_task_updates(client, world).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(start: Instant, samples: &[(u64, u64)]) -> Timeline {
        let timeline = Timeline::default();
        for (ms, value) in samples {
            timeline
                .0
                .lock()
                .expect("lock")
                .push((start + Duration::from_millis(*ms), *value));
        }
        timeline
    }

    #[test]
    fn progress_is_a_value_past_every_earlier_one() {
        let start = Instant::now();
        // A repeat of seq 7 (redelivered) is no progress.
        let t = timeline(start, &[(0, 5), (500, 7), (1200, 7), (1500, 8)]);
        let ms = |ms| start + Duration::from_millis(ms);
        assert_eq!(t.progress(), vec![ms(500), ms(1500)]);
    }

    #[test]
    fn resumed_is_the_end_of_the_pause_the_fault_made() {
        // Everything in the past: a pause still open lasts until now.
        let start = Instant::now()
            .checked_sub(Duration::from_secs(20))
            .expect("a clock 20 s old");
        let ms = |ms| start + Duration::from_millis(ms);
        let t0 = ms(1000);
        // Steady progress every 100 ms, a commit in flight lands 40 ms after the kill, then
        // nothing until 6 s later; a later hiccup does not count.
        let mut times: Vec<Instant> = (0..=10).map(|i| ms(i * 100)).collect();
        times.push(ms(1040));
        times.extend((0..10).map(|i| ms(7040 + i * 100)));
        times.extend([ms(9000), ms(11000)]);
        assert_eq!(resumed(&times, t0), Some(Duration::from_millis(6040)));
        // While the pause is open, not resumed, even though something came after the fault.
        let open: Vec<Instant> = vec![ms(900), ms(1040)];
        assert_eq!(resumed(&open, ms(1000)), None);
        // Nothing at all since the fault: not resumed.
        assert_eq!(resumed(&[ms(900)], ms(1000)), None);
        // Undisturbed: the first progress after the fault.
        let steady: Vec<Instant> = (0..50)
            .map(|i| start + Duration::from_millis(15_000 + i * 100))
            .collect();
        let t0 = steady[10] + Duration::from_millis(30);
        assert_eq!(resumed(&steady, t0), Some(Duration::from_millis(70)));
    }

    #[test]
    fn every_partition_must_move_and_the_slowest_counts() {
        let start = Instant::now()
            .checked_sub(Duration::from_millis(8000))
            .expect("a clock 8 s old");
        let ms = |ms| start + Duration::from_millis(ms);
        let parts = Partitions::default();
        let steady: Vec<(u64, u64)> = (0..80).map(|i| (i * 100, i)).collect();
        parts
            .0
            .lock()
            .expect("lock")
            .insert(0, timeline(start, &steady));
        // Partition 1 stops at 1 s and moves again at 7 s.
        let mut frozen: Vec<(u64, u64)> = (0..=10).map(|i| (i * 100, i)).collect();
        frozen.extend((11..80).map(|i| (i * 100, if i < 70 { 10 } else { i })));
        parts
            .0
            .lock()
            .expect("lock")
            .insert(1, timeline(start, &frozen));
        assert_eq!(parts.resumed(ms(1000)), Some(Duration::from_millis(6000)));
        assert_eq!(Partitions::default().resumed(ms(1000)), None);
    }
}
