//! The chart of a run: throughput, latency and peak memory per scenario, as an SVG drawn with
//! `plotters` (its SVG backend writes text as `<text>` elements, so no font is loaded).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Report, Row};

/// One bar: label, value, an optional inner value (p50 inside p99), and the text beside it.
struct Bar {
    label: String,
    value: f64,
    inner: Option<f64>,
    text: String,
}

const ROW_PX: u32 = 20;
const WIDTH: u32 = 1500;
const PANEL_EXTRA_PX: u32 = 90;

fn label(row: &Row) -> String {
    let callers = if row.callers > 1 {
        format!(" ×{}", row.callers)
    } else {
        String::new()
    };
    let mut name = format!("{}{callers}", row.scenario);
    if name.chars().count() > 84 {
        name = name.chars().take(83).collect::<String>() + "…";
    }
    name
}

fn throughput_bars(report: &Report) -> Vec<Bar> {
    report
        .rows
        .iter()
        .filter(|r| r.value.is_none() && r.ops_per_sec > 0.0 && r.ops > 0)
        .filter(|r| !r.lower_is_better && r.group != "e2e" && r.group != "e2e-baseline")
        .map(|r| Bar {
            label: label(r),
            value: r.ops_per_sec,
            inner: None,
            text: format!(
                "{:.0} {}/s{}{}",
                r.ops_per_sec,
                if r.unit.starts_with("batch") {
                    "msg"
                } else {
                    &r.unit
                },
                r.ratio
                    .map_or_else(String::new, |x| format!("  ({x:.2}× baseline)")),
                r.peer_ratio
                    .map_or_else(String::new, |x| format!("  ({x:.2}× cqrs-es)"))
            ),
        })
        .collect()
}

fn latency_bars(report: &Report) -> Vec<Bar> {
    report
        .rows
        .iter()
        .filter(|r| r.value.is_none() && !r.group.starts_with("queries-sql"))
        .filter_map(|r| {
            let p99 = r.p99_ms?;
            let target = r.target.as_ref().filter(|t| t.starts_with("p99"));
            Some(Bar {
                label: label(r),
                value: p99.max(0.01),
                inner: r.p50_ms.map(|p| p.max(0.01)),
                text: format!(
                    "p50 {:.2} / p99 {p99:.2} ms{}{}",
                    r.p50_ms.unwrap_or(0.0),
                    if r.lower_is_better {
                        r.ratio
                            .map_or_else(String::new, |x| format!("  (p99 {x:.2}× baseline)"))
                    } else {
                        String::new()
                    },
                    target.map_or_else(String::new, |t| format!(
                        "  [{t}: {}]",
                        if r.target_met == Some(true) {
                            "pass"
                        } else {
                            "MISS"
                        }
                    ))
                ),
            })
        })
        .collect()
}

fn memory_bars(report: &Report) -> Vec<Bar> {
    report
        .rows
        .iter()
        .filter(|r| r.value_unit.as_deref() == Some("MiB"))
        .filter_map(|r| {
            Some(Bar {
                label: r.scenario.clone(),
                value: r.value?,
                inner: None,
                text: format!("{:.1} MiB  [{}]", r.value?, r.target_cell()),
            })
        })
        .collect()
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    axis: &str,
    bars: &[Bar],
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the chart: {e}");
    if bars.is_empty() {
        return Ok(());
    }
    let n = i32::try_from(bars.len()).unwrap_or(i32::MAX);
    let low = bars
        .iter()
        .map(|b| b.inner.unwrap_or(b.value).min(b.value))
        .fold(f64::INFINITY, f64::min)
        .max(1e-3)
        / 2.0;
    let high = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0, f64::max)
        .max(low * 10.0)
        * 60.0;
    let names: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(520)
        .build_cartesian_2d((low..high).log_scale(), (0..n).into_segmented())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => usize::try_from(n - 1 - *i)
                .ok()
                .and_then(|k| names.get(k))
                .map_or_else(String::new, |s| (*s).to_owned()),
            _ => String::new(),
        })
        .x_desc(axis)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    let at = |k: usize| n - 1 - i32::try_from(k).unwrap_or(0);
    chart
        .draw_series(bars.iter().enumerate().map(|(k, b)| {
            Rectangle::new(
                [
                    (low, SegmentValue::Exact(at(k))),
                    (b.value, SegmentValue::Exact(at(k) + 1)),
                ],
                RGBColor(120, 160, 220).filled(),
            )
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(k, b)| {
            b.inner.map(|inner| {
                Rectangle::new(
                    [
                        (low, SegmentValue::Exact(at(k))),
                        (inner.min(b.value), SegmentValue::Exact(at(k) + 1)),
                    ],
                    RGBColor(30, 70, 150).filled(),
                )
            })
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(k, b)| {
            Text::new(
                b.text.clone(),
                (b.value * 1.08, SegmentValue::CenterOf(at(k))),
                ("sans-serif", 11).into_font().color(&BLACK),
            )
        }))
        .map_err(|e| err(&e))?;
    Ok(())
}

fn height(bars: usize) -> u32 {
    if bars == 0 {
        0
    } else {
        u32::try_from(bars).unwrap_or(0) * ROW_PX + PANEL_EXTRA_PX
    }
}

/// Draws the chart of `report` into `path` (SVG).
pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let throughput = throughput_bars(report);
    let latency = latency_bars(report);
    let memory = memory_bars(report);
    let header = 40;
    let total = header + height(throughput.len()) + height(latency.len()) + height(memory.len());
    let root = SVGBackend::new(path, (WIDTH, total.max(100))).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    let (top, rest) = root.split_vertically(header);
    top.draw(&Text::new(
        format!(
            "talkwai-bench {}{} — {} — {} CPUs, {}, git {}",
            report.suite,
            if report.quick { " --quick" } else { "" },
            report.started_at,
            report.machine.nproc,
            report.machine.profile,
            report.machine.git_commit.as_deref().unwrap_or("?")
        ),
        (10, 12),
        ("sans-serif", 16).into_font(),
    ))
    .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    let (a, rest) = rest.split_vertically(height(throughput.len()));
    panel(
        &a,
        "Throughput per scenario (closed loop; ratio to its same-run baseline)",
        "operations per second (log scale)",
        &throughput,
    )?;
    let (b, c) = rest.split_vertically(height(latency.len()));
    panel(
        &b,
        "Latency per scenario: p50 (dark) and p99 (light)",
        "milliseconds (log scale)",
        &latency,
    )?;
    panel(
        &c,
        "Peak RSS of each service process (VmHWM)",
        "MiB (log scale)",
        &memory,
    )?;
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}
