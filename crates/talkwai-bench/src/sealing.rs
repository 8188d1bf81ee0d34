//! `talkwai-bench sealing`: what sealing personal fields (#20) costs the write path.
//!
//! Create-task ×64 through a command service in this process, alternately without a master
//! key (personal fields in clear) and with one (every `task.created` seals its four personal
//! fields under a data key of its own), on one nats-server. Each round measures both, in
//! alternating order so a drift of the shared machine falls on both alike; the verdict is the
//! median of the rounds' `sealed ÷ clear` ratios (the target: ≥ 0.90).

use crate::commands::{self, RunningService, ServiceSettings};
use crate::drive::Budget;
use crate::report::{Report, Row};
use crate::suite::Budgets;

/// Rounds of (clear, sealed) measurements.
const ROUNDS: usize = 5;
/// Callers, as the issue asks.
const CALLERS: usize = 64;
/// The target for `sealed ÷ clear`.
const TARGET: f64 = 0.90;

/// Runs the rounds on a fresh nats-server.
pub async fn run(quick: bool, seconds: Option<f64>) -> anyhow::Result<Report> {
    let b = Budgets::new(quick, seconds);
    let (server, client) = crate::suite::start_server().await?;
    let mut report = crate::stack::new_report("sealing", quick, Some(client.server_info().version));
    println!(
        "talkwai-bench sealing: create-task x{CALLERS}, clear and sealed, {} rounds",
        if quick { 1 } else { ROUNDS }
    );
    let mut world = None;
    let clear = ServiceSettings::default();
    let sealed = ServiceSettings {
        sealed: true,
        ..clear
    };
    let mut ratios = Vec::new();
    for round in 0..if quick { 1 } else { ROUNDS } {
        let order = if round % 2 == 0 {
            [clear, sealed]
        } else {
            [sealed, clear]
        };
        let mut rates = [0.0; 2];
        for settings in order {
            let service = RunningService::start(&server.url(), &client, settings).await?;
            // The tenant and its member are made by the first instance.
            let world = match &world {
                Some(world) => world,
                None => world.insert(commands::world(&client).await?),
            };
            commands::warm_up(&client, world, Budget::new(u64::MAX, b.warm_up)).await;
            let row = commands::create_tasks(
                &client,
                world,
                CALLERS,
                Budget::new(b.ops, b.time),
                settings,
                "sealing",
            )
            .await
            .remark(format!("round {}", round + 1));
            service.stop().await?;
            rates[usize::from(settings.sealed)] = row.ops_per_sec;
            row.announce();
            report.rows.push(row);
        }
        if rates[0] > 0.0 {
            let ratio = rates[1] / rates[0];
            println!("    round {}: sealed / clear {ratio:.2}", round + 1);
            ratios.push(ratio);
        }
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(&median) = ratios.get(ratios.len() / 2) {
        let mut row = Row::figure(
            "sealing",
            "create-task x64: sealed / clear (median of rounds)",
            median,
            "ratio",
        );
        row.target = Some(format!("ratio >= {TARGET:.2}"));
        row.target_met = Some(median >= TARGET);
        row.announce();
        println!(
            "  sealed / clear, median of {} rounds: {median:.3} (target >= {TARGET:.2}: {})",
            ratios.len(),
            if median >= TARGET { "met" } else { "MISSED" }
        );
        report.rows.push(row);
    }
    drop(client);
    drop(server);
    Ok(report)
}
