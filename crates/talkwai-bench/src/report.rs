//! Results: one row per scenario, a printed table, and the JSON file.

use std::path::Path;

use serde::Serialize;

use crate::drive::Measured;
use crate::machine::Machine;

/// The scenario every ratio is measured against.
pub const REFERENCE: &str = "raw single publish (window 64)";
/// Groups whose rows get a ratio to [`REFERENCE`] (the others carry their own baseline).
const REFERENCE_GROUPS: [&str; 6] = [
    "baseline", "appender", "commands", "variant", "process", "peer",
];
/// How the peer's rows (group `peer`) name their scenario: this, then the scenario of ours
/// they compare with (`cqrs-es create-task`).
pub const PEER_PREFIX: &str = "cqrs-es ";

/// One measured scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `baseline`, `appender`, `commands` or `sweep`.
    pub group: String,
    /// What was measured.
    pub scenario: String,
    /// Concurrent callers (or messages in flight for raw publishes).
    pub callers: usize,
    /// What one operation is (`msg`, `command`, `batch of N`).
    pub unit: String,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time of the measurement, seconds.
    pub seconds: f64,
    /// Successful operations per second (messages per second for batches).
    pub ops_per_sec: f64,
    /// Median latency of one operation (for batches: one whole batch), ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// `ops_per_sec` over the reference (raw single publishes, window 64) of the same run;
    /// for the projection, queries and notify suites the ratio named by `ratio_to`.
    pub ratio: Option<f64>,
    /// What `ratio` compares with when it is not the raw-publish reference.
    pub ratio_to: Option<String>,
    /// `ops_per_sec` over the peer's (cqrs-es + postgres-es) for the same workload and
    /// callers in the same run; command rows only, when the peer ran.
    pub peer_ratio: Option<f64>,
    /// The target against the peer, e.g. `>= 2x peer, p99 <= peer's`.
    pub peer_target: Option<String>,
    /// Whether `peer_target` is met.
    pub peer_target_met: Option<bool>,
    /// CPU time of this process (load generator and, for commands, the command service; for
    /// the peer's rows, the peer's process) per operation, µs.
    pub bench_cpu_us_per_op: Option<f64>,
    /// CPU time of the server per operation, µs: nats-server, or the PostgreSQL processes for
    /// the peer's rows.
    pub server_cpu_us_per_op: Option<f64>,
    /// A figure that is not a rate (peak RSS in MiB, an extrapolated wall time in s...).
    pub value: Option<f64>,
    /// The unit of `value`.
    pub value_unit: Option<String>,
    /// `ratio` is a latency over a baseline's latency (lower is better) rather than a rate
    /// over a baseline's rate (higher is better); the guard compares it the other way round.
    pub lower_is_better: bool,
    /// The target of this figure from the issue, e.g. `ratio >= 2.5`.
    pub target: Option<String>,
    /// Whether the target is met.
    pub target_met: Option<bool>,
    /// Settings and remarks.
    pub note: String,
}

impl Row {
    /// A row from a measurement; `per_op` multiplies the count (messages per batch).
    pub fn new(group: &str, scenario: &str, callers: usize, unit: &str, m: &Measured) -> Self {
        Self {
            group: group.to_owned(),
            scenario: scenario.to_owned(),
            callers,
            unit: unit.to_owned(),
            ops: m.ok,
            errors: m.errors,
            seconds: m.elapsed.as_secs_f64(),
            ops_per_sec: m.per_sec(),
            p50_ms: m.quantile_ms(0.50),
            p99_ms: m.quantile_ms(0.99),
            ratio: None,
            ratio_to: None,
            peer_ratio: None,
            peer_target: None,
            peer_target_met: None,
            bench_cpu_us_per_op: m.cpu.bench.map(|d| per_op(d, m.ok)),
            server_cpu_us_per_op: m.cpu.server.map(|d| per_op(d, m.ok)),
            value: None,
            value_unit: None,
            lower_is_better: false,
            target: None,
            target_met: None,
            note: m.first_error.clone().unwrap_or_default(),
        }
    }

    /// A row holding one figure that is not a rate (`value` in `unit`).
    pub fn figure(group: &str, scenario: &str, value: f64, unit: &str) -> Self {
        Self {
            group: group.to_owned(),
            scenario: scenario.to_owned(),
            callers: 0,
            unit: unit.to_owned(),
            ops: 0,
            errors: 0,
            seconds: 0.0,
            ops_per_sec: 0.0,
            p50_ms: None,
            p99_ms: None,
            ratio: None,
            ratio_to: None,
            peer_ratio: None,
            peer_target: None,
            peer_target_met: None,
            bench_cpu_us_per_op: None,
            server_cpu_us_per_op: None,
            value: Some(value),
            value_unit: Some(unit.to_owned()),
            lower_is_better: false,
            target: None,
            target_met: None,
            note: String::new(),
        }
    }

    /// Sets the target and whether it is met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = Some(target.into());
        self.target_met = Some(met);
        self
    }

    /// Marks `ratio` as a latency ratio (lower is better).
    pub fn lower_is_better(mut self) -> Self {
        self.lower_is_better = true;
        self
    }

    /// The key the regression guard knows this row by: `group / scenario / callers`.
    pub fn key(&self) -> String {
        format!("{} / {} / {}", self.group, self.scenario, self.callers)
    }

    /// The target column: `ratio >= 2.5: pass`, the target against the peer after it, or `-`.
    pub fn target_cell(&self) -> String {
        let cell = |target: &Option<String>, met: Option<bool>| match (target, met) {
            (Some(t), Some(true)) => Some(format!("{t}: pass")),
            (Some(t), _) => Some(format!("{t}: MISS")),
            _ => None,
        };
        let cells: Vec<String> = [
            cell(&self.target, self.target_met),
            cell(&self.peer_target, self.peer_target_met),
        ]
        .into_iter()
        .flatten()
        .collect();
        if cells.is_empty() {
            "-".to_owned()
        } else {
            cells.join("; ")
        }
    }

    /// Counts `n` messages per operation (atomic batches).
    pub fn times(mut self, n: u64) -> Self {
        self.ops *= n;
        self.ops_per_sec *= n as f64;
        let n = n.max(1) as f64;
        self.bench_cpu_us_per_op = self.bench_cpu_us_per_op.map(|v| v / n);
        self.server_cpu_us_per_op = self.server_cpu_us_per_op.map(|v| v / n);
        self
    }

    /// Appends a remark after the note already there.
    pub fn remark(mut self, remark: impl Into<String>) -> Self {
        let remark = remark.into();
        self.note = if self.note.is_empty() {
            remark
        } else {
            format!("{}; {remark}", self.note)
        };
        self
    }

    /// Adds a remark.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        self.note = if self.note.is_empty() {
            note
        } else {
            format!("{note}; first error: {}", self.note)
        };
        self
    }

    /// Prints the row as soon as it is measured.
    pub fn announce(&self) {
        if let (Some(value), Some(unit)) = (self.value, &self.value_unit) {
            // A ratio near 1 needs its second decimal.
            let digits = if unit == "ratio" { 3 } else { 1 };
            println!("  {:<52} {value:>10.digits$} {unit}", self.scenario);
            return;
        }
        println!(
            "  {:<52} {:>4} callers {:>10.0} {}/s  p50 {:>7} ms  p99 {:>7} ms{}",
            self.scenario,
            self.callers,
            self.ops_per_sec,
            if self.unit.starts_with("batch") {
                "msg"
            } else {
                self.unit.as_str()
            },
            fmt_ms(self.p50_ms),
            fmt_ms(self.p99_ms),
            if self.errors > 0 {
                format!("  ({} errors)", self.errors)
            } else {
                String::new()
            }
        );
    }
}

fn per_op(cpu: std::time::Duration, ops: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / ops.max(1) as f64
}

fn fmt_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// Everything one run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The subcommand.
    pub suite: String,
    /// `--quick` was given.
    pub quick: bool,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Where it ran.
    pub machine: Machine,
    /// Ops/s of the reference scenario.
    pub reference_ops_per_sec: Option<f64>,
    /// Every measured scenario, in order.
    pub rows: Vec<Row>,
    /// Facts worth keeping beside the figures (payload sizes...).
    pub notes: Vec<String>,
}

impl Report {
    /// Fills every row's ratio to the reference (the mean of its measurements in this run).
    pub fn compute_ratios(&mut self) {
        let measured: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.scenario == REFERENCE)
            .map(|r| r.ops_per_sec)
            .collect();
        let reference = (!measured.is_empty())
            .then(|| measured.iter().sum::<f64>() / measured.len() as f64)
            .filter(|v| *v > 0.0);
        self.reference_ops_per_sec = reference;
        for row in self
            .rows
            .iter_mut()
            .filter(|r| r.ratio_to.is_none() && REFERENCE_GROUPS.contains(&r.group.as_str()))
        {
            row.ratio = reference.map(|r| row.ops_per_sec / r);
        }
        self.command_targets();
        self.peer_ratios();
    }

    /// The table: scenario, callers, ops/s (or the figure), p50, p99, ratio, CPU, target.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "| {:<66} | {:>7} | {:>10} | {:>8} | {:>8} | {:>6} | {:>7} | {:>9} | {:>9} | {} |\n",
            "scenario",
            "callers",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "ratio",
            "vs peer",
            "bench µs",
            "server µs",
            "target"
        ));
        out.push_str(&format!(
            "|{:-<68}|{:->9}|{:->12}|{:->10}|{:->10}|{:->8}|{:->9}|{:->11}|{:->11}|{:-<8}|\n",
            "", ":", ":", ":", ":", ":", ":", ":", ":", ""
        ));
        for row in &self.rows {
            if let (Some(value), Some(unit)) = (row.value, &row.value_unit) {
                out.push_str(&format!(
                    "| {:<66} | {:>7} | {:>10} | {:>8} | {:>8} | {:>6} | {:>7} | {:>9} | {:>9} | {} |\n",
                    format!("{} ({unit})", row.scenario),
                    "-",
                    format!("{value:.1}"),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    row.target_cell()
                ));
                continue;
            }
            let unit = if row.unit.starts_with("batch") {
                "msg"
            } else {
                row.unit.as_str()
            };
            out.push_str(&format!(
                "| {:<66} | {:>7} | {:>10} | {:>8} | {:>8} | {:>6} | {:>7} | {:>9} | {:>9} | {} |\n",
                format!("{} ({unit}/s)", row.scenario),
                row.callers,
                format!("{:.0}", row.ops_per_sec),
                fmt_ms(row.p50_ms),
                fmt_ms(row.p99_ms),
                row.ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                row.peer_ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                row.bench_cpu_us_per_op
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
                row.server_cpu_us_per_op
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
                row.target_cell(),
            ));
        }
        out
    }

    /// Appends the rows and notes of another suite's report.
    pub fn merge(&mut self, other: Report) {
        self.rows.extend(other.rows);
        self.notes.extend(
            other
                .notes
                .into_iter()
                .map(|n| format!("[{}] {n}", other.suite)),
        );
    }

    /// The targets for the command rows (ratios to the reference), and how close 512
    /// callers come to the raw atomic-batch ceiling.
    fn command_targets(&mut self) {
        let ceiling = self
            .rows
            .iter()
            .find(|r| r.scenario == "raw atomic batch of 1000")
            .map(|r| r.ops_per_sec);
        for row in self.rows.iter_mut().filter(|r| r.group == "commands") {
            let Some(ratio) = row.ratio else { continue };
            match (row.scenario.as_str(), row.callers) {
                ("create-task", 64) => *row = row.clone().target("ratio >= 2.5", ratio >= 2.5),
                ("start-task + complete-task", 64) => {
                    *row = row.clone().target("ratio >= 2", ratio >= 2.0);
                }
                ("create-task", 512) => {
                    if let Some(ceiling) = ceiling.filter(|c| *c > 0.0) {
                        let share = row.ops_per_sec / ceiling;
                        *row = row.clone().note(format!(
                            "{share:.2} of the raw atomic batch of 1000 (the ceiling)"
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// Fills every command row's ratio to the peer's row of the same workload (the scenario
    /// before any `, settings` suffix) and callers, and the targets against the peer
    /// for the default rows: ×1 p50 no higher than the peer's; ×64 at least 2× with a p99 no
    /// higher; ×512 at least 3×; start+complete ×64 at least 2×.
    fn peer_ratios(&mut self) {
        let peers: Vec<Row> = self
            .rows
            .iter()
            .filter(|r| r.group == "peer")
            .cloned()
            .collect();
        for row in self
            .rows
            .iter_mut()
            .filter(|r| matches!(r.group.as_str(), "commands" | "variant"))
        {
            let workload = row.scenario.split(", ").next().unwrap_or_default();
            let Some(peer) = peers.iter().find(|p| {
                p.callers == row.callers
                    && p.scenario.strip_prefix(PEER_PREFIX) == Some(workload)
                    && p.ops_per_sec > 0.0
            }) else {
                continue;
            };
            let ratio = row.ops_per_sec / peer.ops_per_sec;
            row.peer_ratio = Some(ratio);
            if row.group != "commands" || row.scenario != workload {
                continue;
            }
            let at_most = |ours: Option<f64>, theirs: Option<f64>| {
                ours.zip(theirs).is_some_and(|(a, b)| a <= b)
            };
            let target = match (workload, row.callers) {
                ("create-task", 1) => Some(("p50 <= peer's", at_most(row.p50_ms, peer.p50_ms))),
                ("create-task", 64) => Some((
                    ">= 2x peer, p99 <= peer's",
                    ratio >= 2.0 && at_most(row.p99_ms, peer.p99_ms),
                )),
                ("create-task", 512) => Some((">= 3x peer", ratio >= 3.0)),
                ("start-task + complete-task", 64) => Some((">= 2x peer", ratio >= 2.0)),
                _ => None,
            };
            if let Some((target, met)) = target {
                row.peer_target = Some(target.to_owned());
                row.peer_target_met = Some(met);
            }
        }
    }

    /// Writes the JSON file (creating its directory).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(
        group: &str,
        scenario: &str,
        callers: usize,
        ops_per_sec: f64,
        p50: f64,
        p99: f64,
    ) -> Row {
        let mut row = crate::stack::row(
            group,
            scenario,
            callers,
            "command",
            1,
            std::time::Duration::from_secs(1),
            None,
        );
        row.ops_per_sec = ops_per_sec;
        row.p50_ms = Some(p50);
        row.p99_ms = Some(p99);
        row
    }

    fn report(rows: Vec<Row>) -> Report {
        let mut report = crate::stack::new_report("commands", false, None);
        report.rows = rows;
        report.compute_ratios();
        report
    }

    #[test]
    fn command_rows_get_a_ratio_to_the_peer_of_their_workload_and_callers() {
        let report = report(vec![
            rate("baseline", REFERENCE, 64, 1_000.0, 1.0, 2.0),
            rate("commands", "create-task", 1, 800.0, 0.9, 2.0),
            rate("peer", "cqrs-es create-task", 1, 1_000.0, 0.7, 1.5),
            rate("commands", "create-task", 64, 9_000.0, 5.0, 20.0),
            rate("peer", "cqrs-es create-task", 64, 4_000.0, 10.0, 22.0),
            rate("commands", "create-task", 512, 9_000.0, 5.0, 20.0),
            rate("peer", "cqrs-es create-task", 512, 4_000.0, 10.0, 22.0),
            rate(
                "commands",
                "start-task + complete-task",
                64,
                3_000.0,
                5.0,
                20.0,
            ),
            rate(
                "peer",
                "cqrs-es start-task + complete-task",
                64,
                2_000.0,
                5.0,
                20.0,
            ),
            rate(
                "commands",
                "create-task, group_commit=false writes_in_flight=2",
                64,
                2_000.0,
                5.0,
                20.0,
            ),
        ]);
        let find = |scenario: &str, callers: usize| {
            report
                .rows
                .iter()
                .find(|r| r.scenario == scenario && r.callers == callers)
                .expect("row present")
        };
        let one = find("create-task", 1);
        assert_eq!(one.peer_ratio, Some(0.8));
        assert_eq!(one.peer_target.as_deref(), Some("p50 <= peer's"));
        assert_eq!(one.peer_target_met, Some(false));
        let many = find("create-task", 64);
        assert_eq!(many.peer_ratio, Some(2.25));
        assert_eq!(many.peer_target_met, Some(true));
        assert_eq!(find("create-task", 512).peer_target_met, Some(false));
        let transitions = find("start-task + complete-task", 64);
        assert_eq!(transitions.peer_ratio, Some(1.5));
        assert_eq!(transitions.peer_target_met, Some(false));
        let variant = find("create-task, group_commit=false writes_in_flight=2", 64);
        assert_eq!(variant.peer_ratio, Some(0.5));
        assert_eq!(variant.peer_target, None);
        // The peer's rows have a ratio to raw appends, none to themselves.
        let peer = find("cqrs-es create-task", 64);
        assert_eq!(peer.ratio, Some(4.0));
        assert_eq!(peer.peer_ratio, None);
        assert!(
            many.target_cell()
                .contains(">= 2x peer, p99 <= peer's: pass")
        );
    }

    #[test]
    fn without_the_peer_no_row_gets_a_peer_ratio() {
        let report = report(vec![
            rate("baseline", REFERENCE, 64, 1_000.0, 1.0, 2.0),
            rate("commands", "create-task", 64, 9_000.0, 5.0, 20.0),
        ]);
        assert!(
            report
                .rows
                .iter()
                .all(|r| r.peer_ratio.is_none() && r.peer_target.is_none())
        );
        assert_eq!(report.rows[1].target_cell(), "ratio >= 2.5: pass");
    }
}
