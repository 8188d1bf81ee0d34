//! The regression guard: every ratio of a run against the value recorded for it in a committed
//! file (`crates/talkwai-bench/baseline.json`). A ratio fails only on a gross regression:
//! below half its recorded value, or, for latency ratios (lower is better), above twice it.
//! Ratios are to baselines measured in the same run, so a slower or busier machine moves both
//! sides; absolute figures are never compared.
//!
//! `--record FILE` writes the run's ratios, keeping for each the *worse* of the value already
//! in the file and the new one, so recording several runs gives a value every one of them
//! passed comfortably.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::report::{REFERENCE, Report};

/// The committed file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    /// What the values are and how they were taken.
    pub about: String,
    /// Build profile of the runs (ratios of a debug build are not comparable to release).
    pub profile: String,
    /// Whether the runs used `--quick`.
    pub quick: bool,
    /// When the file was last written (RFC 3339).
    pub recorded_at: String,
    /// Git commit of the last recorded run.
    pub git_commit: Option<String>,
    /// Ratio per row key (`group / scenario / callers`).
    pub ratios: BTreeMap<String, RecordedRatio>,
}

/// One recorded ratio.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecordedRatio {
    /// The value.
    pub ratio: f64,
    /// A latency ratio: a regression makes it larger.
    pub lower_is_better: bool,
}

/// The ratios a run is guarded on: every row with a same-run baseline, except writer-setting
/// variants (`--sweep`), the cqrs-es peer (not part of `--quick`, and not ours to guard), the
/// reference itself (its ratio is to its own mean), and latency
/// ratios of fixed-rate (open-loop) scenarios: past saturation their p99 is the length of a
/// queue that grows with the run, a cliff rather than a gauge (those scenarios still have to
/// run without failing).
fn guarded(report: &Report) -> BTreeMap<String, RecordedRatio> {
    report
        .rows
        .iter()
        .filter(|r| r.group != "variant" && r.group != "peer" && r.scenario != REFERENCE)
        .filter(|r| !(r.lower_is_better && matches!(r.group.as_str(), "e2e" | "notify")))
        .filter_map(|r| {
            Some((
                r.key(),
                RecordedRatio {
                    ratio: r.ratio.filter(|x| x.is_finite() && *x > 0.0)?,
                    lower_is_better: r.lower_is_better,
                },
            ))
        })
        .collect()
}

fn read(path: &Path) -> anyhow::Result<Recorded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes (or merges into) `path` the ratios of `report`.
pub fn record(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut ratios = guarded(report);
    if path.is_file() {
        let old = read(path)?;
        if old.profile == report.machine.profile && old.quick == report.quick {
            for (key, was) in old.ratios {
                let merged = match ratios.get(&key) {
                    Some(now) if was.lower_is_better => RecordedRatio {
                        ratio: now.ratio.max(was.ratio),
                        ..*now
                    },
                    Some(now) => RecordedRatio {
                        ratio: now.ratio.min(was.ratio),
                        ..*now
                    },
                    None => was,
                };
                ratios.insert(key, merged);
            }
        } else {
            println!(
                "guard: {} was recorded with another profile or mode; starting it afresh",
                path.display()
            );
        }
    }
    let recorded = Recorded {
        about: "Ratios of `talkwai-bench all --quick` runs (each over a baseline measured in \
                the same run), the worst of the recorded runs. `--check` fails a ratio below \
                half of its value here (latency ratios: above twice). Re-record with \
                `--record` after a deliberate change; delete the file to start afresh."
            .to_owned(),
        profile: report.machine.profile.to_owned(),
        quick: report.quick,
        recorded_at: report.started_at.clone(),
        git_commit: report.machine.git_commit.clone(),
        ratios,
    };
    let mut text = serde_json::to_string_pretty(&recorded)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "guard: {} ratios recorded in {}",
        recorded.ratios.len(),
        path.display()
    );
    Ok(())
}

/// The keys of the ratios in `report` that only passed when measured again: those of
/// `failed` that the second run `again` holds and passes. Printed as a table.
pub fn confirm(failed: &[String], again: &Report, path: &Path) -> anyhow::Result<Vec<String>> {
    let recorded = read(path)?;
    let now = guarded(again);
    let mut cleared = Vec::new();
    println!("  {:<92} {:>9} {:>9}  result", "ratio", "recorded", "again");
    for key in failed {
        let (Some(was), Some(current)) = (recorded.ratios.get(key), now.get(key)) else {
            continue;
        };
        let ok = passes(was, current);
        println!(
            "  {:<92} {:>9.3} {:>9.3}  {}",
            key,
            was.ratio,
            current.ratio,
            if ok {
                "pass (the first run was noise)"
            } else {
                "FAIL again"
            }
        );
        if ok {
            cleared.push(key.clone());
        }
    }
    Ok(cleared)
}

fn passes(was: &RecordedRatio, current: &RecordedRatio) -> bool {
    if was.lower_is_better {
        current.ratio <= was.ratio * 2.0
    } else {
        current.ratio >= was.ratio / 2.0
    }
}

/// Prints every ratio of `report` beside its recorded value and returns the keys of those that
/// regressed grossly or are missing from the run.
pub fn failures(report: &Report, path: &Path) -> anyhow::Result<Vec<String>> {
    let recorded = read(path)?;
    if recorded.profile != report.machine.profile || recorded.quick != report.quick {
        bail!(
            "{} holds {} ratios{}, this run is {}{}: not comparable",
            path.display(),
            recorded.profile,
            if recorded.quick { " (--quick)" } else { "" },
            report.machine.profile,
            if report.quick { " (--quick)" } else { "" }
        );
    }
    let now = guarded(report);
    let mut failed = Vec::new();
    println!();
    println!(
        "regression guard against {} (recorded {}, {}):",
        path.display(),
        recorded.recorded_at,
        recorded.git_commit.as_deref().unwrap_or("?")
    );
    println!(
        "  {:<92} {:>9} {:>9} {:>10}  result",
        "ratio", "recorded", "now", "limit"
    );
    for (key, was) in &recorded.ratios {
        let (limit, verdict, now_text) = match now.get(key) {
            Some(current) => {
                let limit = if was.lower_is_better {
                    was.ratio * 2.0
                } else {
                    was.ratio / 2.0
                };
                (limit, passes(was, current), format!("{:.3}", current.ratio))
            }
            None => (f64::NAN, false, "missing".to_owned()),
        };
        if !verdict {
            failed.push(key.clone());
        }
        println!(
            "  {:<92} {:>9.3} {:>9} {:>10}  {}",
            key,
            was.ratio,
            now_text,
            if limit.is_nan() {
                "-".to_owned()
            } else if was.lower_is_better {
                format!("<= {limit:.3}")
            } else {
                format!(">= {limit:.3}")
            },
            if verdict { "pass" } else { "FAIL" }
        );
    }
    for key in now.keys().filter(|k| !recorded.ratios.contains_key(*k)) {
        println!("  {key:<92} (new, not recorded yet)");
    }
    if failed.is_empty() {
        println!("guard: all {} ratios pass", recorded.ratios.len());
    } else {
        println!(
            "guard: {} of {} ratios regressed grossly",
            failed.len(),
            recorded.ratios.len()
        );
    }
    Ok(failed)
}
