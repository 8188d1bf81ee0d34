//! What the figures were measured on.

use std::process::Command;

use serde::Serialize;

/// The machine and the software under test.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// CPU model (from /proc/cpuinfo).
    pub cpu: Option<String>,
    /// Total memory, MiB (from /proc/meminfo).
    pub memory_mib: Option<u64>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// nats-server version, as the server announced itself.
    pub nats_server: Option<String>,
    /// Git commit of the workspace (`git rev-parse --short HEAD`), `+dirty` when the tree
    /// differs.
    pub git_commit: Option<String>,
    /// Release or debug build of this binary.
    pub profile: &'static str,
}

impl Machine {
    /// Reads what it can; missing facts stay `None`.
    pub fn detect() -> Self {
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: read("/proc/cpuinfo").and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            }),
            memory_mib: read("/proc/meminfo").and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .map(|kb| kb / 1024)
            }),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            nats_server: None,
            git_commit: git_commit(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn git_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: Option<u32>) -> Option<std::time::Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let text = read(&path)?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports them in clock ticks of 1/100 s on every common configuration.
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}
