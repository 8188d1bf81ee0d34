//! CPU time per process of the stack over a window: each service process, nats-server,
//! PostgreSQL (the postmaster and its children: every backend is a process of its own) and the
//! bench itself, read from `/proc/<pid>/stat` at the start and the end of the window. Divided
//! by the commands sent in it, it says which process burns the CPU per command.

use std::time::{Duration, Instant};

use crate::machine::cpu_time;

/// A process (or a process and its children) whose CPU time is sampled.
#[derive(Debug, Clone)]
pub struct Watched {
    /// What the figures call it.
    pub label: String,
    /// Its pid (`None`: this process).
    pub pid: Option<u32>,
    /// Whether its children's CPU time counts too (PostgreSQL's backends).
    pub children: bool,
}

impl Watched {
    /// `pid` alone.
    pub fn process(label: &str, pid: u32) -> Self {
        Self {
            label: label.to_owned(),
            pid: Some(pid),
            children: false,
        }
    }

    /// `pid` and its children.
    pub fn tree(label: &str, pid: u32) -> Self {
        Self {
            children: true,
            ..Self::process(label, pid)
        }
    }

    /// This process.
    pub fn bench() -> Self {
        Self {
            label: "bench".to_owned(),
            pid: None,
            children: false,
        }
    }

    fn used(&self) -> Duration {
        let own = cpu_time(self.pid).unwrap_or_default();
        match (self.children, self.pid) {
            (true, Some(pid)) => {
                own + children_of(pid)
                    .into_iter()
                    .map(|c| cpu_time(Some(c)).unwrap_or_default())
                    .sum::<Duration>()
            }
            _ => own,
        }
    }
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|text| {
                    // The parent is the second field after the command name.
                    let rest = text.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// CPU times at the start of a window.
#[derive(Debug, Clone)]
pub struct Window {
    watched: Vec<Watched>,
    at: Vec<Duration>,
    started: Instant,
}

/// CPU used per process over a window.
#[derive(Debug, Clone)]
pub struct Used {
    /// (label, CPU time), in the order watched.
    pub per_process: Vec<(String, Duration)>,
    /// The window's wall time.
    pub wall: Duration,
}

impl Window {
    /// Starts a window over `watched`.
    pub fn start(watched: &[Watched]) -> Self {
        Self {
            at: watched.iter().map(Watched::used).collect(),
            watched: watched.to_vec(),
            started: Instant::now(),
        }
    }

    /// What each process used since the start.
    pub fn end(&self) -> Used {
        Used {
            per_process: self
                .watched
                .iter()
                .zip(&self.at)
                .map(|(w, at)| (w.label.clone(), w.used().saturating_sub(*at)))
                .collect(),
            wall: self.started.elapsed(),
        }
    }
}

impl Used {
    /// All processes together.
    pub fn total(&self) -> Duration {
        self.per_process.iter().map(|(_, d)| *d).sum()
    }

    /// Cores busy on average over the window, all processes together.
    pub fn cores(&self) -> f64 {
        self.total().as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// `label µs (cores)` per process and the total, per operation of `ops` (`None`: cores
    /// only, for a window without operations).
    pub fn describe(&self, ops: Option<u64>) -> String {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let one = |d: Duration| match ops {
            Some(ops) => format!(
                "{:.0} µs ({:.2} core)",
                d.as_secs_f64() * 1e6 / ops.max(1) as f64,
                d.as_secs_f64() / wall
            ),
            None => format!("{:.3} core", d.as_secs_f64() / wall),
        };
        let parts: Vec<String> = self
            .per_process
            .iter()
            .map(|(label, d)| format!("{label} {}", one(*d)))
            .collect();
        format!(
            "CPU {} over {wall:.1} s: {}; total {} (load average {})",
            if ops.is_some() { "per command" } else { "used" },
            parts.join(", "),
            one(self.total()),
            load_average().unwrap_or_else(|| "?".to_owned())
        )
    }
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
}
