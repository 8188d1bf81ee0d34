//! What the projection, queries and notify suites share: a fresh report, rows built from plain
//! figures, a PostgreSQL connection, and a small deterministic random source.

use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use crate::machine::Machine;
use crate::report::{Report, Row};

/// A report for `suite` with the machine filled in.
pub fn new_report(suite: &str, quick: bool, nats_version: Option<String>) -> Report {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut machine = Machine::detect();
    machine.nats_server = nats_version;
    Report {
        suite: suite.to_owned(),
        quick,
        started_at,
        machine,
        reference_ops_per_sec: None,
        rows: Vec::new(),
        notes: Vec::new(),
    }
}

/// A row from a count and a wall time, with optional latencies.
pub fn row(
    group: &str,
    scenario: &str,
    callers: usize,
    unit: &str,
    ops: u64,
    elapsed: Duration,
    latency: Option<&Histogram<u64>>,
) -> Row {
    let seconds = elapsed.as_secs_f64();
    let q = |q: f64| {
        latency
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    Row {
        group: group.to_owned(),
        scenario: scenario.to_owned(),
        callers,
        unit: unit.to_owned(),
        ops,
        errors: 0,
        seconds,
        ops_per_sec: ops as f64 / seconds.max(1e-9),
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        ratio: None,
        ratio_to: None,
        peer_ratio: None,
        peer_target: None,
        peer_target_met: None,
        bench_cpu_us_per_op: None,
        server_cpu_us_per_op: None,
        value: None,
        value_unit: None,
        lower_is_better: false,
        target: None,
        target_met: None,
        note: String::new(),
    }
}

impl Row {
    /// Sets the ratio and what it compares with.
    pub fn ratio(mut self, ratio: f64, to: impl Into<String>) -> Self {
        self.ratio = ratio.is_finite().then_some(ratio);
        self.ratio_to = Some(to.into());
        self
    }
}

/// Prints and keeps a row.
pub fn push(report: &mut Report, row: Row) {
    row.announce();
    if let Some(to) = &row.ratio_to {
        println!(
            "      ratio {} ({to})",
            row.ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"))
        );
    }
    report.rows.push(row);
}

/// One PostgreSQL connection (its driver runs on a task).
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A deterministic pseudo-random source (xorshift), so runs pick the same tenants.
#[derive(Debug, Clone, Copy)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `1..=n`.
    pub fn pick(&mut self, n: u64) -> u64 {
        1 + self.next() % n.max(1)
    }
}
