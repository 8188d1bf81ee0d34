//! Which scenarios a run measures, with which budgets, in which order.

use std::time::Duration;

use anyhow::Context as _;
use talkwai_eventstore::{AppenderConfig, EventStore, StreamSettings};
use talkwai_testkit::NatsServer;

use crate::baselines;
use crate::commands::{self, RunningService, ServiceSettings};
use crate::drive::Budget;
use crate::machine::Machine;
use crate::payload::EventFactory;
use crate::peer::{self, Peer};
use crate::report::{PEER_PREFIX, Report, Row};

/// The window of the reference: durable publishes with this many acks outstanding.
const REFERENCE_WINDOW: usize = 64;
/// Atomic batch sizes measured raw.
const BATCH_SIZES: [usize; 4] = [8, 64, 256, 1000];
/// Atomic batch sizes measured raw with `--quick` (the ceiling of the command path).
const QUICK_BATCH_SIZES: [usize; 2] = [64, 1000];

/// How much each scenario may take.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Most time per scenario.
    pub time: Duration,
    /// Most single messages or commands per scenario.
    pub ops: u64,
    /// Most messages per atomic-batch scenario.
    pub batch_messages: u64,
    /// Tasks each caller starts and completes.
    pub tasks_per_caller: u64,
    /// Time spent warming a fresh service instance up.
    pub warm_up: Duration,
}

impl Budgets {
    /// Full or quick budgets; `seconds` overrides the time per scenario.
    pub fn new(quick: bool, seconds: Option<f64>) -> Self {
        let mut budgets = if quick {
            Self {
                time: Duration::from_secs(1),
                ops: 3_000,
                batch_messages: 30_000,
                tasks_per_caller: 10,
                warm_up: Duration::from_millis(300),
            }
        } else {
            Self {
                time: Duration::from_secs(5),
                ops: 20_000,
                batch_messages: 300_000,
                tasks_per_caller: 100,
                warm_up: Duration::from_secs(1),
            }
        };
        if let Some(seconds) = seconds.filter(|s| s.is_finite() && *s > 0.0) {
            budgets.time = Duration::from_secs_f64(seconds);
        }
        budgets
    }

    fn ops(&self) -> Budget {
        Budget::new(self.ops, self.time)
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Raw atomic batches and the appender.
    pub baselines: bool,
    /// The command service.
    pub commands: bool,
    /// Writer-setting variants of the command service.
    pub sweep: bool,
    /// The cqrs-es peer beside every command row (with `commands`).
    pub peer: bool,
    /// Budgets.
    pub budgets: Budgets,
}

fn push(report: &mut Report, row: Row) {
    row.announce();
    report.rows.push(row);
}

/// Pushes a row of the peer and prints ours over it (the command row measured just before).
fn push_peer(report: &mut Report, row: Row) {
    row.announce();
    let workload = row.scenario.strip_prefix(PEER_PREFIX).unwrap_or_default();
    if let Some(ours) = report
        .rows
        .iter()
        .rev()
        .find(|r| r.group == "commands" && r.scenario == workload && r.callers == row.callers)
        .filter(|_| row.ops_per_sec > 0.0)
    {
        println!(
            "      ours / cqrs-es: {:.2}x",
            ours.ops_per_sec / row.ops_per_sec
        );
    }
    report.rows.push(row);
}

/// Runs one scenario of the peer; a failure drops the peer for the rest of the run (noted), so
/// it never costs the run its own figures.
async fn measure_peer<F>(report: &mut Report, slot: &mut Option<Peer>, scenario: F)
where
    F: AsyncFnOnce(&mut Peer, &mut Vec<String>) -> anyhow::Result<Row>,
{
    let Some(peer) = slot.as_mut() else { return };
    match scenario(peer, &mut report.notes).await {
        Ok(row) => push_peer(report, row),
        Err(err) => {
            println!("  the cqrs-es peer failed, skipped from here on: {err:#}");
            report
                .notes
                .push(format!("peer failed and was skipped: {err:#}"));
            *slot = None;
        }
    }
}

/// A fresh nats-server whose CPU the measurements count, and a client of it.
pub async fn start_server() -> anyhow::Result<(NatsServer, async_nats::Client)> {
    let server = NatsServer::start()
        .await
        .context("starting nats-server (scripts/dev.sh setup installs it)")?;
    crate::drive::set_server_pid(server.pid());
    let client = async_nats::connect(server.url())
        .await
        .context("connecting to nats-server")?;
    Ok((server, client))
}

/// Runs the plan on a fresh nats-server and returns the report.
pub async fn run(suite: &str, quick: bool, plan: Plan) -> anyhow::Result<Report> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut machine = Machine::detect();
    // Built before any server starts, so a (cold) build does not land in a measurement.
    let mut peer_failure = None;
    let peer_binary = if plan.commands && plan.peer {
        peer::build()
            .map_err(|err| peer_failure = Some(format!("peer not built, skipped: {err:#}")))
            .ok()
    } else {
        None
    };
    let (server, client) = start_server().await?;
    machine.nats_server = Some(client.server_info().version);
    let store = EventStore::open(client.clone(), &StreamSettings::default()).await?;
    let factory = EventFactory::new();
    let mut report = Report {
        suite: suite.to_owned(),
        quick,
        started_at,
        machine,
        reference_ops_per_sec: None,
        rows: Vec::new(),
        notes: vec![format!(
            "raw baselines write a {}-byte task.created body with the 7 Talkwai-* headers the \
             command service sets, on a new subject each",
            factory.payload_len()
        )],
    };
    println!(
        "talkwai-bench {suite}: nats-server {} (sync_interval always, file store) on {} CPUs",
        report.machine.nats_server.as_deref().unwrap_or("?"),
        report.machine.nproc
    );
    let b = plan.budgets;
    if let Some(failure) = peer_failure {
        println!("  {failure}");
        report.notes.push(failure);
    }

    push(
        &mut report,
        baselines::raw_single(&client, &factory, REFERENCE_WINDOW, b.ops()).await?,
    );

    if plan.baselines {
        let sizes: &[usize] = if quick {
            &QUICK_BATCH_SIZES
        } else {
            &BATCH_SIZES
        };
        for &size in sizes {
            push(
                &mut report,
                baselines::raw_atomic(
                    &client,
                    &factory,
                    size,
                    Budget::new(b.batch_messages, b.time),
                )
                .await?,
            );
        }
        let appenders: &[(bool, usize)] = if quick {
            &[(true, 2)]
        } else {
            &[(true, 1), (true, 2), (true, 4), (false, 2), (false, 64)]
        };
        for &(group, max_in_flight) in appenders {
            let config = AppenderConfig {
                group,
                max_in_flight,
                ..Default::default()
            };
            push(
                &mut report,
                baselines::appender(&client, &factory, 64, config, b.ops()).await,
            );
        }
    }

    if plan.commands {
        let url = server.url();
        let defaults = ServiceSettings::default();
        let service = RunningService::start(&url, &client, defaults).await?;
        let world = commands::world(&client).await?;
        commands::warm_up(&client, &world, Budget::new(u64::MAX, b.warm_up)).await;
        match commands::stored_event_size(&store, &world, &client).await {
            Ok((body, headers)) => report.notes.push(format!(
                "a task.created event written alone by the command service: {body}-byte body, \
                 {headers} bytes of headers stored with it"
            )),
            Err(err) => report
                .notes
                .push(format!("stored event size unknown: {err}")),
        }
        let mut peer = match peer_binary {
            Some(binary) => match Peer::start(binary).await {
                Ok(peer) => Some(peer),
                Err(err) => {
                    let failure = format!("peer not started, skipped: {err:#}");
                    println!("  {failure}");
                    report.notes.push(failure);
                    None
                }
            },
            None => None,
        };
        // Each row of ours, then the peer's for the same workload, so both meet the same
        // moment of a shared machine.
        for callers in [1, 64, 512] {
            push(
                &mut report,
                service
                    .with_groups(commands::create_tasks(
                        &client,
                        &world,
                        callers,
                        b.ops(),
                        defaults,
                        "commands",
                    ))
                    .await,
            );
            measure_peer(&mut report, &mut peer, async |p, notes| {
                p.create_tasks(callers, &b, notes).await
            })
            .await;
        }
        push(
            &mut report,
            commands::start_complete(&client, &world, 64, b.tasks_per_caller, defaults).await?,
        );
        measure_peer(&mut report, &mut peer, async |p, notes| {
            p.start_complete(64, b.tasks_per_caller, &b, notes).await
        })
        .await;
        drop(peer);
        service.stop().await?;

        // The group commit off (skipped by --quick: the guard does not need it).
        let mut variants = Vec::new();
        if !quick {
            variants.push(ServiceSettings {
                group_commit: false,
                ..defaults
            });
            // Ownership off: every command reads its heads (the write path before #18).
            variants.push(ServiceSettings {
                partitions: 0,
                ..defaults
            });
            // Two writes in flight (the default before #18): smaller groups.
            variants.push(ServiceSettings {
                writes_in_flight: 2,
                ..defaults
            });
            // Personal fields sealed (#20): the cost of encryption on the write path.
            variants.push(ServiceSettings {
                sealed: true,
                ..defaults
            });
        }
        if plan.sweep {
            variants.extend(
                [4, 8]
                    .into_iter()
                    .filter(|w| *w != defaults.writes_in_flight)
                    .map(|writes_in_flight| ServiceSettings {
                        group_commit: true,
                        writes_in_flight,
                        ..defaults
                    }),
            );
            variants.push(ServiceSettings {
                group_commit: false,
                writes_in_flight: 64,
                ..defaults
            });
        }
        for settings in variants {
            let group = if settings.writes_in_flight == defaults.writes_in_flight {
                "commands"
            } else {
                "variant"
            };
            let service = RunningService::start(&url, &client, settings).await?;
            commands::warm_up(&client, &world, Budget::new(u64::MAX, b.warm_up)).await;
            push(
                &mut report,
                service
                    .with_groups(commands::create_tasks(
                        &client,
                        &world,
                        64,
                        b.ops(),
                        settings,
                        group,
                    ))
                    .await,
            );
            if plan.sweep && settings.group_commit {
                push(
                    &mut report,
                    commands::create_tasks(&client, &world, 512, b.ops(), settings, group).await,
                );
            }
            service.stop().await?;
        }
    }

    // The machine is shared and noisy: measure the reference again at the end; ratios use
    // the mean of both.
    push(
        &mut report,
        baselines::raw_single(&client, &factory, REFERENCE_WINDOW, b.ops())
            .await?
            .note("repeated at the end of the run"),
    );
    report.compute_ratios();
    drop(client);
    drop(server);
    Ok(report)
}
