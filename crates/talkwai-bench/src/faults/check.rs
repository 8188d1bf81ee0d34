//! The invariants every fault must keep, checked against the log of record and the read
//! models once the load has finished:
//!
//! - **0 lost**: every acknowledged command is in the log under its `Talkwai-Command-Id`, at
//!   the sequence its reply named, with the events its reply listed;
//! - **0 applied twice**: every command's messages are there whole and once (`Talkwai-Command-Part`
//!   `i/n`, each `i` once), each task created once and started and completed at most once (the
//!   domain's strict fold accepts every task's history);
//! - **read models equal the log**: the checkpoint reaches the stream head, and
//!   `talkwai.tasks` holds exactly the tenant's tasks of the log with the status and version
//!   of their fold;
//! - **no dead letters**.
//!
//! Each broken invariant is one line of the returned list.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt as _;
use talkwai_domain::{AggregateState, Event, EventBody, Lifecycle, State};
use talkwai_eventstore::EventStore;
use talkwai_proto::headers;
use talkwai_testkit::wait;
use uuid::Uuid;

use super::load::Outcome;

/// How long the read models may take to catch up with the log after the load.
const CATCH_UP: Duration = Duration::from_secs(60);
/// Violations of one kind listed in full; more are counted.
const SHOWN: usize = 5;

/// One command's messages in the log.
#[derive(Debug, Default)]
struct Logged {
    /// Sequences.
    seqs: Vec<u64>,
    /// Event types (`Talkwai-Event-Type`).
    types: Vec<String>,
    /// Part index → (parts, times seen).
    parts: BTreeMap<usize, (usize, u32)>,
}

/// A task folded from the log.
#[derive(Debug)]
struct Folded {
    state: AggregateState,
    /// Events of each type, to name a repeat.
    counts: HashMap<String, u32>,
    /// The first event the strict fold refused.
    refused: Option<String>,
}

/// What the checks found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Broken invariants, one line each.
    pub violations: Vec<String>,
    /// The stream head the checks read up to.
    pub head: u64,
    /// Tasks in the log.
    pub tasks: usize,
}

/// Collects violations of one kind, listing the first few.
struct Kind<'a> {
    what: &'a str,
    found: Vec<String>,
}

impl<'a> Kind<'a> {
    fn new(what: &'a str) -> Self {
        Self {
            what,
            found: Vec::new(),
        }
    }

    fn add(&mut self, line: String) {
        self.found.push(line);
    }

    fn into(self, out: &mut Vec<String>) {
        if self.found.is_empty() {
            return;
        }
        let n = self.found.len();
        let shown: Vec<String> = self.found.into_iter().take(SHOWN).collect();
        out.push(format!(
            "{n} {}: {}{}",
            self.what,
            shown.join("; "),
            if n > SHOWN { "; ..." } else { "" }
        ));
    }
}

/// Checks the log and the read models of `tenant` against what the load saw.
pub async fn check(
    store: &EventStore,
    database: &str,
    tenant: Uuid,
    outcome: &Outcome,
) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();
    let out = &mut findings.violations;
    let mut refused = Kind::new("commands refused for good (no final refusal is expected)");
    outcome.refused.iter().for_each(|r| refused.add(r.clone()));
    refused.into(out);
    let mut unanswered = Kind::new("commands without a final answer");
    outcome
        .unanswered
        .iter()
        .for_each(|r| unanswered.add(r.clone()));
    unanswered.into(out);

    let (head, commands, tasks) = read_log(store, tenant).await?;
    findings.head = head;
    findings.tasks = tasks.len();

    // 0 lost: every acknowledged command is in the log as its reply said.
    let mut lost = Kind::new("acknowledged commands not in the log as acknowledged");
    for acked in &outcome.acked {
        let id = acked.command.to_string();
        let Some(logged) = commands.get(&id) else {
            lost.add(format!(
                "task.{} of {} (command {id}, seq {}) is missing",
                acked.action, acked.task, acked.accepted.seq
            ));
            continue;
        };
        if !logged.seqs.contains(&acked.accepted.seq) {
            lost.add(format!(
                "command {id}: reply seq {} not among its messages {:?}",
                acked.accepted.seq, logged.seqs
            ));
        }
        for event in &acked.accepted.events {
            if !logged.types.contains(&event.event_type) {
                lost.add(format!(
                    "command {id}: acknowledged event {} not logged (logged: {:?})",
                    event.event_type, logged.types
                ));
            }
        }
    }
    lost.into(out);

    // 0 applied twice: each command once and whole; each task's history folds strictly.
    let mut twice = Kind::new("commands in the log twice or in part");
    for (id, logged) in &commands {
        let n = logged.parts.values().next().map_or(0, |(n, _)| *n);
        let indices: Vec<usize> = logged.parts.keys().copied().collect();
        if indices != (1..=n).collect::<Vec<_>>() {
            twice.add(format!("command {id} in part: parts {indices:?} of {n}"));
        }
        if let Some((i, (_, times))) = logged.parts.iter().find(|(_, (_, t))| *t > 1) {
            twice.add(format!("command {id}: part {i} logged {times} times"));
        }
    }
    twice.into(out);
    let mut repeated = Kind::new("tasks whose history does not fold (an event applied twice)");
    for (task, folded) in &tasks {
        if let Some(refused) = &folded.refused {
            repeated.add(format!(
                "task {task}: {refused} (counts {:?})",
                folded.counts
            ));
        }
        if folded.counts.get("task.created") != Some(&1) {
            repeated.add(format!("task {task} created {:?} times", folded.counts));
        }
    }
    repeated.into(out);

    // Read models equal the log.
    let pg = crate::stack::connect(database).await?;
    let caught_up = wait::wait_until(CATCH_UP, Duration::from_millis(100), || async {
        match pg
            .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
            .await
        {
            Ok(row) if u64::try_from(row.get::<_, i64>(0)).unwrap_or(0) >= head => Ok(()),
            Ok(row) => Err(format!(
                "checkpoint {} of head {head}",
                row.get::<_, i64>(0)
            )),
            Err(err) => Err(err.to_string()),
        }
    })
    .await;
    if let Err(err) = caught_up {
        out.push(format!(
            "the checkpoint did not catch up within {CATCH_UP:?}: {err}"
        ));
    }
    let rows = pg
        .query(
            "SELECT id, status, version FROM talkwai.tasks WHERE tenant_id = $1",
            &[&tenant],
        )
        .await?;
    let mut differ = Kind::new("tasks whose read model differs from the log");
    let mut projected: HashMap<Uuid, (String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for (task, folded) in &tasks {
        let AggregateState::Task(_, _, state) = &folded.state else {
            continue;
        };
        let expected = match &state.entity {
            Lifecycle::Live(t) => Some((t.status.as_str().to_owned(), state.version)),
            Lifecycle::Absent | Lifecycle::Deleted(_) => None,
        };
        let got = projected.remove(task);
        let matches = match (&expected, &got) {
            (Some((status, version)), Some((s, v))) => {
                status == s && i64::try_from(*version).is_ok_and(|version| version == *v)
            }
            (None, None) => true,
            _ => false,
        };
        if !matches {
            differ.add(format!("task {task}: log {expected:?}, tasks view {got:?}"));
        }
    }
    for (task, got) in projected {
        differ.add(format!(
            "task {task}: in the tasks view {got:?}, not in the log"
        ));
    }
    differ.into(out);
    let dead: i64 = pg
        .query_one("SELECT count(*) FROM talkwai_meta.dead_letters", &[])
        .await?
        .get(0);
    if dead > 0 {
        out.push(format!("{dead} dead letters"));
    }
    Ok(findings)
}

/// The whole log up to its head now: each command's messages, and each task of `tenant`
/// folded strictly.
async fn read_log(
    store: &EventStore,
    tenant: Uuid,
) -> anyhow::Result<(u64, HashMap<String, Logged>, BTreeMap<Uuid, Folded>)> {
    let head = store.last_sequence().await?;
    let mut commands: HashMap<String, Logged> = HashMap::new();
    let mut tasks: BTreeMap<Uuid, Folded> = BTreeMap::new();
    if head == 0 {
        return Ok((head, commands, tasks));
    }
    // Right after a node restart a cluster may still refuse consumer creation for a moment.
    let mut replay = wait::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        store.replay(1, vec![])
    })
    .await
    .map_err(|e| anyhow::anyhow!("replaying the log: {e}"))?;
    let task_prefix = format!("talkwai.evt.{tenant}.task.");
    let mut seen = 0;
    while seen < head {
        let message = tokio::time::timeout(Duration::from_secs(30), replay.next())
            .await
            .map_err(|_| anyhow::anyhow!("the replay stalled at {seen} of {head}"))?
            .ok_or_else(|| anyhow::anyhow!("the replay ended at {seen} of {head}"))??;
        seen = message.seq;
        let event_type = message.header(headers::EVENT_TYPE).unwrap_or("").to_owned();
        if let Some(id) = message.header(headers::COMMAND_ID) {
            let logged = commands.entry(id.to_owned()).or_default();
            logged.seqs.push(message.seq);
            logged.types.push(event_type.clone());
            if let Some((i, n)) = message
                .header(headers::COMMAND_PART)
                .and_then(|p| p.split_once('/'))
                && let (Ok(i), Ok(n)) = (i.parse(), n.parse())
            {
                logged.parts.entry(i).or_insert((n, 0)).1 += 1;
            }
        }
        let Some(task) = message
            .subject
            .strip_prefix(&task_prefix)
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            continue;
        };
        let folded = tasks.entry(task).or_insert_with(|| Folded {
            state: AggregateState::Task(tenant.into(), task.into(), State::default()),
            counts: HashMap::new(),
            refused: None,
        });
        *folded.counts.entry(event_type.clone()).or_default() += 1;
        let event = serde_json::from_slice::<EventBody>(&message.payload)
            .map_err(|e| e.to_string())
            .and_then(|body| Event::decode(&body).map_err(|e| e.to_string()));
        let applied = event.and_then(|event| {
            talkwai_domain::apply(&mut folded.state, &event).map_err(|e| e.to_string())
        });
        if let Err(err) = applied
            && folded.refused.is_none()
        {
            folded.refused = Some(format!("{event_type} at seq {}: {err}", message.seq));
        }
    }
    Ok((head, commands, tasks))
}
