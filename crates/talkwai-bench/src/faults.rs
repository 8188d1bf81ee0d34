//! `talkwai-bench faults`: the fault suite. Each scenario runs the services as separate
//! processes ([`crate::procs`]) on their own nats-server (or 3-node cluster) and PostgreSQL
//! database, puts them under load from an outside client that retries every unanswered or
//! retryable command with the same `Talkwai-Command-Id` ([`load`]), injects one fault, and then
//!
//! - **asserts** the invariants ([`check`]): 0 acknowledged commands lost, 0 applied twice,
//!   read models equal to the log with the checkpoint caught up, no dead letters, presence
//!   answering again and every process that was not killed still running (nothing needed a
//!   restart); any violation fails the command (exit code 1);
//! - **measures** from the timelines of [`probes`] how long after the fault (or after the
//!   server or service came back) commands were answered again, `taskUpdates` flowed again,
//!   the checkpoint moved again and presence answered again, beside the targets of issue 16
//!   (pass or miss in the table; a miss does not fail the run: these are performance figures).
//!
//! | scenario | fault | figures from |
//! |---|---|---|
//! | `postgres-immediate` | `pg_ctl stop -m immediate`, restarted 2 s later (first: PostgreSQL then holds one database, as in production) | the server accepting connections |
//! | `command-2nd` | SIGKILL of one of two command services | the kill |
//! | `command-restart` | SIGKILL of the only command service, restarted 1 s later | its restart |
//! | `projector-restart` | SIGKILL of the only projector, restarted 1 s later | its restart |
//! | `projector-partitions` | SIGKILL of one of two projectors, `TALKWAI_PROJECTOR_PARTITIONS=2` | the kill |
//! | `notifier-2nd` | SIGKILL of the active one of two notifiers (the lease holder) | the kill |
//! | `notifier-restart` | SIGKILL of the only notifier, restarted 1 s later | its restart |
//! | `nats-restart` | SIGKILL of nats-server, restarted on its port and store 2 s later (projector with 2 partitions) | the server accepting connections |
//! | `stream-leader` | SIGKILL of the R3 stream leader of a 3-node cluster, restarted 2 s later | the kill |

mod check;
mod load;
mod probes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use talkwai_eventstore::{EventStore, StreamSettings, server_urls};
use talkwai_testkit::{NatsCluster, NatsServer, Postgres};

use crate::commands::{self, PLATFORM, SECRET};
use crate::procs::{Binaries, Service};
use crate::report::{Report, Row};
use crate::stack;

/// The stream the command service writes.
const STREAM: &str = "TALKWAI_EVENTS";
/// Pause between a service's SIGKILL and its restart.
const SERVICE_GAP: Duration = Duration::from_secs(1);
/// Pause between a server's SIGKILL (or immediate stop) and its restart.
const SERVER_GAP: Duration = Duration::from_secs(2);
/// How long presence may take to answer `ok` once the load is over (else a violation).
const PRESENCE_DEADLINE: Duration = Duration::from_secs(30);

/// What is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Command,
    Projector,
    Notifier,
    Nats,
    StreamLeader,
    Postgres,
}

/// What is measured after the fault: when its progress resumed ([`probes::resumed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Final answers to commands.
    Commands,
    /// `taskUpdates` messages with a `seq` newer than any before.
    TaskUpdates,
    /// Every partition's checkpoint moving.
    Checkpoint,
    /// `presence.join` answered `ok`.
    Presence,
}

impl Measure {
    fn label(self) -> &'static str {
        match self {
            Self::Commands => "commands answered again",
            Self::TaskUpdates => "taskUpdates flowing again",
            Self::Checkpoint => "checkpoint moving again",
            Self::Presence => "presence.join ok again",
        }
    }
}

/// One scenario.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    key: &'static str,
    fault: Fault,
    /// Instances of the killed service (2: one survives; 1: it is restarted).
    instances: usize,
    /// `TALKWAI_PROJECTOR_PARTITIONS`.
    partitions: u32,
    /// Figures and their targets in seconds (from issue 16).
    measures: &'static [(Measure, Option<f64>)],
    /// Where the figures count from.
    from: &'static str,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario {
        key: "postgres-immediate",
        fault: Fault::Postgres,
        instances: 1,
        partitions: 1,
        measures: &[(Measure::Checkpoint, None), (Measure::Commands, None)],
        from: "the server accepting connections",
    },
    Scenario {
        key: "command-2nd",
        fault: Fault::Command,
        instances: 2,
        partitions: 1,
        measures: &[(Measure::Commands, None)],
        from: "the kill",
    },
    Scenario {
        key: "command-restart",
        fault: Fault::Command,
        instances: 1,
        partitions: 1,
        measures: &[(Measure::Commands, None)],
        from: "the restart",
    },
    Scenario {
        key: "projector-restart",
        fault: Fault::Projector,
        instances: 1,
        partitions: 1,
        measures: &[(Measure::Checkpoint, None)],
        from: "the restart",
    },
    Scenario {
        key: "projector-partitions",
        fault: Fault::Projector,
        instances: 2,
        partitions: 2,
        measures: &[(Measure::Checkpoint, None)],
        from: "the kill",
    },
    Scenario {
        key: "notifier-2nd",
        fault: Fault::Notifier,
        instances: 2,
        partitions: 1,
        measures: &[(Measure::TaskUpdates, Some(2.0)), (Measure::Presence, None)],
        from: "the kill",
    },
    Scenario {
        key: "notifier-restart",
        fault: Fault::Notifier,
        instances: 1,
        partitions: 1,
        measures: &[(Measure::TaskUpdates, Some(2.0)), (Measure::Presence, None)],
        from: "the restart",
    },
    Scenario {
        key: "nats-restart",
        fault: Fault::Nats,
        instances: 1,
        partitions: 2,
        measures: &[
            (Measure::Commands, Some(1.0)),
            (Measure::TaskUpdates, None),
            (Measure::Checkpoint, None),
            (Measure::Presence, None),
        ],
        from: "the server accepting connections",
    },
    Scenario {
        key: "stream-leader",
        fault: Fault::StreamLeader,
        instances: 1,
        partitions: 1,
        measures: &[
            (Measure::Commands, None),
            (Measure::TaskUpdates, None),
            (Measure::Checkpoint, None),
            (Measure::Presence, None),
        ],
        from: "the kill",
    },
];

/// Lengths of one scenario's phases.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Task lifecycles started per second (three commands each).
    lifecycles_per_sec: f64,
    /// Load before the fault.
    before: Duration,
    /// Load after every figure was measured.
    after: Duration,
    /// The longest a figure is waited for (a miss after that).
    cap: Duration,
}

impl Pace {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                lifecycles_per_sec: 80.0,
                before: Duration::from_secs(2),
                after: Duration::from_secs(2),
                cap: Duration::from_secs(15),
            }
        } else {
            Self {
                lifecycles_per_sec: 150.0,
                before: Duration::from_secs(5),
                after: Duration::from_secs(5),
                cap: Duration::from_secs(40),
            }
        }
    }
}

/// Runs every scenario (or those whose keys `only` lists, comma separated); returns the report
/// and the broken invariants (empty when all held).
pub async fn run(quick: bool, only: Option<&str>) -> anyhow::Result<(Report, Vec<String>)> {
    let pace = Pace::new(quick);
    let chosen: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|s| only.is_none_or(|keys| keys.split(',').any(|k| k.trim() == s.key)))
        .collect();
    if chosen.is_empty() {
        anyhow::bail!(
            "no scenario named {only:?}; the scenarios: {}",
            SCENARIOS.map(|s| s.key).join(", ")
        );
    }
    let binaries = Binaries::ensure()?;
    let mut pg = Postgres::builder()
        .durable(true)
        .start()
        .await
        .context("starting PostgreSQL")?;
    let mut report = stack::new_report("faults", quick, None);
    report.notes.push(format!(
        "faults: services as separate processes ({} build), default settings but the \
         per-tenant rate limit off; nats-server sync_interval always (the cluster: default); \
         PostgreSQL durable; load: {} task lifecycles/s (create, start, complete: {} \
         commands/s) from an outside client retrying with the same command id after {:?} \
         without a reply or a retryable refusal, pausing 100 ms doubling to 1.6 s; {:?} of \
         load before the fault, figures waited for up to {:?}, then {:?} more load",
        binaries.profile,
        pace.lifecycles_per_sec,
        pace.lifecycles_per_sec * 3.0,
        load::ATTEMPT_TIMEOUT,
        pace.before,
        pace.cap,
        pace.after,
    ));
    println!(
        "talkwai-bench faults: {} scenarios, service processes ({})",
        chosen.len(),
        binaries.profile
    );
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench/logs/faults");
    let mut violations = Vec::new();
    for scenario in chosen {
        println!("\n  scenario {}", scenario.key);
        let started = Instant::now();
        let found = match run_scenario(
            scenario,
            pace,
            &binaries,
            &mut pg,
            &logs.join(scenario.key),
            &mut report,
        )
        .await
        {
            Ok(found) => found,
            Err(err) => vec![format!("the scenario could not run: {err:#}")],
        };
        println!(
            "    {} in {:.1} s: {}",
            scenario.key,
            started.elapsed().as_secs_f64(),
            if found.is_empty() {
                "every invariant held".to_owned()
            } else {
                format!("{} VIOLATIONS", found.len())
            }
        );
        let mut row = Row::figure(
            "faults",
            &format!("{}: invariants", scenario.key),
            found.len() as f64,
            "violations",
        )
        .target("0 violations", found.is_empty());
        row.note = if found.is_empty() {
            "0 lost, 0 applied twice, views = log, checkpoint caught up, 0 dead letters, \
             presence ok, survivors running"
                .to_owned()
        } else {
            found.join(" | ")
        };
        keep(&mut report, row);
        violations.extend(found.into_iter().map(|v| format!("{}: {v}", scenario.key)));
    }
    drop(pg);
    Ok((report, violations))
}

/// The nats-server of a scenario: one node, or a 3-node cluster.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    /// What the services and the client are given: one URL or every node's.
    fn urls(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.url_list(),
        }
    }
}

/// A service process with what it was started with (to start it again).
struct Instance {
    bin: &'static str,
    label: String,
    env: Vec<(&'static str, String)>,
    service: Service,
}

/// The service processes of a scenario.
struct Fleet {
    binaries: Binaries,
    logs: PathBuf,
    instances: Vec<Instance>,
}

impl Fleet {
    fn spawn(
        &mut self,
        bin: &'static str,
        label: String,
        env: Vec<(&'static str, String)>,
    ) -> anyhow::Result<()> {
        let service = self.binaries.spawn_as(bin, &label, &env, &self.logs)?;
        self.instances.push(Instance {
            bin,
            label,
            env,
            service,
        });
        Ok(())
    }

    /// Starts `n` instances of `bin` with `env`, named (`TALKWAI_INSTANCE`) and labelled
    /// `<name>-1`, `<name>-2`...
    fn spawn_each(
        &mut self,
        bin: &'static str,
        name: &str,
        n: usize,
        env: &[(&'static str, String)],
    ) -> anyhow::Result<()> {
        for i in 1..=n {
            let label = format!("{name}-{i}");
            let mut env = env.to_vec();
            env.push(("TALKWAI_INSTANCE", label.clone()));
            self.spawn(bin, label, env)?;
        }
        Ok(())
    }

    /// SIGKILLs the instance labelled `label`, or else the first of `bin`; returns what it
    /// needs to start again.
    async fn kill(
        &mut self,
        bin: &str,
        label: Option<&str>,
    ) -> anyhow::Result<(&'static str, String, Vec<(&'static str, String)>)> {
        let at = self
            .instances
            .iter()
            .position(|i| i.bin == bin && label.is_none_or(|l| i.label == l))
            .with_context(|| format!("no {bin} {label:?} runs"))?;
        let instance = self.instances.remove(at);
        instance.service.kill().await?;
        Ok((instance.bin, instance.label, instance.env))
    }

    /// A line for each process that is not running any more.
    fn dead(&mut self) -> Vec<String> {
        self.instances
            .iter_mut()
            .filter_map(|i| {
                i.service
                    .check_alive()
                    .err()
                    .map(|e| format!("{} stopped by itself: {e:#}", i.label))
            })
            .collect()
    }

    async fn stop(self, report: &mut Report) {
        for instance in self.instances {
            if let Err(err) = instance.service.stop(Duration::from_secs(30)).await {
                report
                    .notes
                    .push(format!("faults: stopping {}: {err:#}", instance.label));
            }
        }
    }
}

/// Runs one scenario; returns its broken invariants.
async fn run_scenario(
    scenario: Scenario,
    pace: Pace,
    binaries: &Binaries,
    pg: &mut Postgres,
    logs: &Path,
    report: &mut Report,
) -> anyhow::Result<Vec<String>> {
    let mut nats = if scenario.fault == Fault::StreamLeader {
        Nats::Cluster(
            NatsCluster::start()
                .await
                .context("starting a 3-node cluster")?,
        )
    } else {
        Nats::Single(NatsServer::start().await.context("starting nats-server")?)
    };
    let urls = nats.urls();
    let db = pg.create_unique_database("faults").await?;
    let mut fleet = Fleet {
        binaries: binaries.clone(),
        logs: logs.to_path_buf(),
        instances: Vec::new(),
    };
    let replicas = if matches!(nats, Nats::Cluster(_)) {
        "3"
    } else {
        "1"
    };
    let common = vec![
        ("TALKWAI_NATS_URL", urls.clone()),
        ("TALKWAI_PLATFORM_TOKEN", PLATFORM.to_owned()),
        ("TALKWAI_JWT_SECRET", SECRET.to_owned()),
        ("TALKWAI_RATE_LIMIT_PER_TENANT", "0".to_owned()),
        ("TALKWAI_STREAM_REPLICAS", replicas.to_owned()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut env = common.clone();
        env.extend_from_slice(extra);
        env
    };
    let count = |fault: Fault| {
        if scenario.fault == fault {
            scenario.instances
        } else {
            1
        }
    };
    let partitions = scenario.partitions.to_string();
    fleet.spawn_each(
        "talkwai-command-service",
        "command",
        count(Fault::Command),
        &with(&[]),
    )?;
    let client = connect(&urls).await?;
    commands::wait_ready(&client)
        .await
        .context("waiting for the command service")?;
    fleet.spawn_each(
        "talkwai-projector",
        "projector",
        count(Fault::Projector),
        &with(&[
            ("TALKWAI_DATABASE_URL", db.clone()),
            ("TALKWAI_PROJECTOR_PARTITIONS", partitions),
        ]),
    )?;
    fleet.spawn_each(
        "talkwai-notifier",
        "notifier",
        count(Fault::Notifier),
        &with(&[]),
    )?;
    let outcome = under_fault(
        scenario, pace, &client, &mut nats, pg, &mut fleet, &db, report,
    )
    .await;
    fleet.stop(report).await;
    drop(client);
    drop(nats);
    outcome
}

/// Connects the outside client: every URL, reconnecting at once and then every 100 ms (as a
/// client that wants its answers soon would).
async fn connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("talkwai-bench-faults")
        .reconnect_delay_callback(|attempts| {
            if attempts <= 1 {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            }
        })
        .connect(server_urls(urls))
        .await
        .with_context(|| format!("connecting to {urls}"))
}

/// Everything from the world's creation to the checks, with the services running.
#[allow(clippy::too_many_arguments)]
async fn under_fault(
    scenario: Scenario,
    pace: Pace,
    client: &async_nats::Client,
    nats: &mut Nats,
    pg: &mut Postgres,
    fleet: &mut Fleet,
    db: &str,
    report: &mut Report,
) -> anyhow::Result<Vec<String>> {
    crate::e2e::wait_ping(client, talkwai_notifier::PRESENCE_SERVICE).await?;
    let world = commands::world(client).await?;
    let store = EventStore::open(client.clone(), &StreamSettings::default()).await?;
    let probes = probes::Probes::start(client, &world, db).await?;
    let load = load::Load::start(client, &world, pace.lifecycles_per_sec);
    // The whole path works before the fault: a room message, a checkpoint, presence.
    talkwai_testkit::wait::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let ready = probes.task_updates.last().is_some()
            && probes.checkpoint.last().is_some_and(|c| c > 0)
            && probes.presence.last().is_some();
        async move { ready }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the services did not all work before the fault: {e}"))?;
    tokio::time::sleep(pace.before).await;
    if load.answers().is_empty() {
        anyhow::bail!("no command answered before the fault");
    }

    // Partitioned: kill the instance applying the load's partition, once each holds one; of
    // two notifiers, the active one.
    let victim = if scenario.fault == Fault::Projector && scenario.partitions > 1 {
        Some(partition_owner(&store, world.tenant, scenario.partitions).await?)
    } else if scenario.fault == Fault::Notifier && scenario.instances > 1 {
        Some(active_notifier(&store).await?)
    } else {
        None
    };
    let fault_at = Instant::now();
    let t0 = inject(scenario, victim.as_deref(), nats, pg, fleet).await?;
    println!(
        "    fault injected; figures count from {} ({:.1} s after the fault)",
        scenario.from,
        (t0 - fault_at).as_secs_f64()
    );
    let measure = |m: Measure| match m {
        Measure::Commands => probes::resumed(&load.answers(), t0),
        Measure::TaskUpdates => probes::resumed(&probes.task_updates.progress(), t0),
        Measure::Checkpoint => probes.partitions.resumed(t0),
        Measure::Presence => {
            let times: Vec<Instant> = probes
                .presence
                .samples()
                .into_iter()
                .map(|(at, _)| at)
                .collect();
            probes::resumed(&times, t0)
        }
    };
    tokio::time::sleep(probes::GRACE.saturating_sub(t0.elapsed())).await;
    while !scenario.measures.iter().all(|(m, _)| measure(*m).is_some()) && t0.elapsed() < pace.cap {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let figures: Vec<(Measure, Option<f64>, Option<Duration>)> = scenario
        .measures
        .iter()
        .map(|(m, target)| (*m, *target, measure(*m)))
        .collect();
    tokio::time::sleep(pace.after).await;
    let outcome = load.finish().await;
    let presence_subject = format!("talkwai.room.tenant.{}.presence.join", world.tenant);
    let presence_ok =
        talkwai_testkit::wait::wait_until(PRESENCE_DEADLINE, Duration::from_millis(200), || {
            probes::presence_join(
                client,
                &presence_subject,
                &world.bearer,
                r#"{"sessionId":"fault-final","data":{}}"#.to_owned(),
            )
        })
        .await;
    drop(probes);

    let findings = check::check(&store, db, world.tenant, &outcome).await?;
    let mut violations = findings.violations;
    if let Err(err) = presence_ok {
        violations.push(format!(
            "presence.join did not answer ok within {PRESENCE_DEADLINE:?} after the load: {err}"
        ));
    }
    violations.extend(fleet.dead());

    for (m, target, got) in figures {
        let mut row = Row::figure(
            "faults",
            &format!("{}: {}", scenario.key, m.label()),
            got.map_or(0.0, |d| d.as_secs_f64()),
            "s",
        );
        // Not recovered within the cap: no value (JSON null); `seconds` says how long it was
        // watched.
        row.value = got.map(|d| d.as_secs_f64());
        row.seconds = pace.cap.as_secs_f64();
        if let Some(target) = target {
            row = row.target(
                format!("<= {target:.0} s"),
                got.is_some_and(|d| d.as_secs_f64() <= target),
            );
        }
        row.note = match got {
            Some(_) => format!("from {}", scenario.from),
            None => format!("not within {:?} of {}", pace.cap, scenario.from),
        };
        keep(report, row);
    }
    let (attempts, timeouts, retryable) = outcome.attempts;
    let mut row = Row::figure(
        "faults",
        &format!("{}: longest command", scenario.key),
        outcome.longest.as_secs_f64(),
        "s",
    );
    row.ops = outcome.acked.len() as u64;
    row.note = format!(
        "first send -> final answer; {} commands acknowledged, {attempts} attempts \
         ({timeouts} without a reply in time, {retryable} refused as retryable); log head {}, \
         {} tasks",
        outcome.acked.len(),
        findings.head,
        findings.tasks
    );
    keep(report, row);
    Ok(violations)
}

/// Prints a figure row as it is measured and keeps it.
fn keep(report: &mut Report, row: Row) {
    let (figure, value) = cells(&row);
    println!("    {figure:<28} {value:>12}  {}", row.target_cell());
    report.rows.push(row);
}

/// The figure's name (the scenario key cut off) and its value with its unit.
fn cells(row: &Row) -> (&str, String) {
    let figure = row
        .scenario
        .split_once(": ")
        .map_or(row.scenario.as_str(), |(_, f)| f);
    let value = match (row.value, row.value_unit.as_deref()) {
        (Some(v), Some("s")) => format!("{v:.2} s"),
        (Some(v), Some(unit)) => format!("{v:.0} {unit}"),
        (None, Some("s")) if row.seconds > 0.0 => format!("> {:.0} s", row.seconds),
        _ => "-".to_owned(),
    };
    (figure, value)
}

/// The suite's table: one line per figure, with its target, pass or miss, and where it
/// counts from.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "| {:<20} | {:<26} | {:>12} | {:<20} | {} |\n|{:-<22}|{:-<28}|{:->14}|{:-<22}|{:-<8}|\n",
        "scenario", "figure", "value", "target", "note", "", "", ":", "", ""
    );
    for row in &report.rows {
        let key = row.scenario.split_once(": ").map_or("", |(k, _)| k);
        let (figure, value) = cells(row);
        let note = if row.note.chars().count() > 160 {
            format!("{}...", row.note.chars().take(160).collect::<String>())
        } else {
            row.note.clone()
        };
        out.push_str(&format!(
            "| {key:<20} | {figure:<26} | {value:>12} | {:<20} | {note} |\n",
            row.target_cell()
        ));
    }
    out
}

/// The projector instance holding the partition of `tenant`'s events, once the leases of all
/// `partitions` are held and by more than one instance (the instances shared them out).
async fn partition_owner(
    store: &EventStore,
    tenant: uuid::Uuid,
    partitions: u32,
) -> anyhow::Result<String> {
    let ours = talkwai_projector::partition::partition_of(
        &format!("talkwai.evt.{tenant}.task.{}", uuid::Uuid::nil()),
        partitions,
    );
    talkwai_testkit::wait::wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let (leases, _) = talkwai_projector::lease::holders(store.jetstream())
                .await
                .map_err(|e| e.to_string())?;
            // A holder id is the instance name plus `-<8 hex>`.
            let instance = |holder: &String| {
                holder
                    .rsplit_once('-')
                    .map_or(holder.clone(), |(name, _)| name.to_owned())
            };
            let held: Vec<(u32, String)> = leases
                .iter()
                .filter(|(slot, _)| slot.count == partitions)
                .map(|(slot, holder)| (slot.index, instance(holder)))
                .collect();
            let mut owners: Vec<&String> = held.iter().map(|(_, o)| o).collect();
            owners.sort();
            owners.dedup();
            match held.iter().find(|(index, _)| *index == ours) {
                Some((_, owner)) if held.len() == partitions as usize && owners.len() > 1 => {
                    Ok(owner.clone())
                }
                _ => Err(format!("partition leases: {held:?}")),
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("the projectors did not share the partitions: {e}"))
}

/// The notifier instance holding the lease (its value is `<instance>/<uuid>`).
async fn active_notifier(store: &EventStore) -> anyhow::Result<String> {
    use talkwai_notifier::lease::{BUCKET, LEADER_KEY};
    talkwai_testkit::wait::wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let kv = store
                .jetstream()
                .get_key_value(BUCKET)
                .await
                .map_err(|e| e.to_string())?;
            let value = kv
                .get(LEADER_KEY)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("nobody holds the notifier lease")?;
            String::from_utf8_lossy(&value)
                .rsplit_once('/')
                .map(|(name, _)| name.to_owned())
                .ok_or_else(|| "a lease value without an instance".to_owned())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("no notifier became active: {e}"))
}

/// Injects the scenario's fault (and restarts what it killed, where it is restarted); returns
/// the moment its figures count from. `victim` names the service instance to kill (else the
/// first of its kind).
async fn inject(
    scenario: Scenario,
    victim: Option<&str>,
    nats: &mut Nats,
    pg: &mut Postgres,
    fleet: &mut Fleet,
) -> anyhow::Result<Instant> {
    let killed_at = Instant::now();
    let bin = match scenario.fault {
        Fault::Command => "talkwai-command-service",
        Fault::Projector => "talkwai-projector",
        Fault::Notifier => "talkwai-notifier",
        Fault::Nats => {
            let Nats::Single(server) = nats else {
                anyhow::bail!("the nats scenario runs on one node");
            };
            server.kill().await?;
            tokio::time::sleep(SERVER_GAP).await;
            server.restart().await?;
            return Ok(Instant::now());
        }
        Fault::StreamLeader => {
            let Nats::Cluster(cluster) = nats else {
                anyhow::bail!("the stream leader scenario runs on a cluster");
            };
            let leader = cluster.wait_for_stream_leader(STREAM).await?;
            let killed_at = Instant::now();
            cluster.kill(leader).await?;
            tokio::time::sleep(SERVER_GAP).await;
            cluster.restart(leader).await?;
            return Ok(killed_at);
        }
        Fault::Postgres => {
            pg.kill().await?;
            let stopped = killed_at.elapsed();
            tokio::time::sleep(SERVER_GAP).await;
            let restarting = Instant::now();
            pg.restart().await?;
            println!(
                "    postgres: stopped -m immediate in {:.2} s, up again in {:.2} s after its restart",
                stopped.as_secs_f64(),
                restarting.elapsed().as_secs_f64()
            );
            return Ok(Instant::now());
        }
    };
    let (bin, label, env) = fleet.kill(bin, victim).await?;
    if let Some(victim) = victim {
        println!("    killed {victim}");
    }
    if scenario.instances > 1 {
        return Ok(killed_at);
    }
    tokio::time::sleep(SERVICE_GAP).await;
    fleet.spawn(bin, format!("{label}-restarted"), env)?;
    Ok(Instant::now())
}
