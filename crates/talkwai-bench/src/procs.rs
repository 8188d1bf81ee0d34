//! The services as separate processes — their own binaries (`talkwai-command-service`,
//! `talkwai-projector`, `talkwai-query-service`, `talkwai-notifier`), configured through their
//! `TALKWAI_*` environment variables like in production — so the peak RSS of each can be read
//! from `/proc/<pid>/status` (`VmHWM`).
//!
//! The binaries are built by cargo in the profile of this binary (`release` for
//! `cargo run --release -p talkwai-bench`) before they start, so they are never older than the
//! bench; `TALKWAI_BENCH_NO_BUILD=1` skips the build and uses what is there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The four service binaries.
pub const BINARIES: [&str; 4] = [
    "talkwai-command-service",
    "talkwai-projector",
    "talkwai-query-service",
    "talkwai-notifier",
];

/// Where the service binaries are (next to this one).
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
    /// The cargo profile they were built in.
    pub profile: String,
}

/// The profile directory this binary runs from (`target/<profile>/talkwai-bench`).
pub fn own_dir() -> anyhow::Result<(PathBuf, String)> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe
        .parent()
        .map(Path::to_path_buf)
        .context("the bench binary has no directory")?;
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release")
        .to_owned();
    Ok((dir, profile))
}

impl Binaries {
    /// Builds the service binaries in this binary's profile (unless `TALKWAI_BENCH_NO_BUILD`
    /// is set) and checks they exist.
    pub fn ensure() -> anyhow::Result<Self> {
        let (dir, profile) = own_dir()?;
        if std::env::var_os("TALKWAI_BENCH_NO_BUILD").is_none() {
            println!("  building the service binaries ({profile}) with cargo");
            let started = std::time::Instant::now();
            talkwai_testkit::bins::cargo_build(&dir, &BINARIES).map_err(anyhow::Error::msg)?;
            println!(
                "  service binaries built in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        for bin in BINARIES {
            if !dir.join(bin).is_file() {
                bail!(
                    "{} is missing (build it, or unset TALKWAI_BENCH_NO_BUILD)",
                    dir.join(bin).display()
                );
            }
        }
        Ok(Self { dir, profile })
    }

    /// Starts `bin` with `env` (on top of a clean `TALKWAI_*`-free environment), its output
    /// going to `logs/<bin>.log`.
    pub fn spawn(&self, bin: &str, env: &[(&str, String)], logs: &Path) -> anyhow::Result<Service> {
        self.spawn_as(bin, bin, env, logs)
    }

    /// [`spawn`](Self::spawn) with the output going to `logs/<label>.log` (several instances
    /// of one binary side by side).
    pub fn spawn_as(
        &self,
        bin: &str,
        label: &str,
        env: &[(&str, String)],
        logs: &Path,
    ) -> anyhow::Result<Service> {
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let log_path = logs.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = tokio::process::Command::new(self.dir.join(bin));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TALKWAI_")
                || key.to_string_lossy().starts_with("OTEL_")
            {
                command.env_remove(key);
            }
        }
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.dir.join(bin).display()))?;
        let pid = child.id().context("the service exited at once")?;
        Ok(Service {
            name: bin.to_owned(),
            pid,
            child,
            log: log_path,
        })
    }
}

/// A running service process.
#[derive(Debug)]
pub struct Service {
    /// The binary's name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    child: tokio::process::Child,
    /// Where its output goes.
    pub log: PathBuf,
}

/// Memory figures of a process, MiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_mib: f64,
    /// Peak resident set size since start (`VmHWM`).
    pub peak_mib: f64,
}

/// `VmRSS` and `VmHWM` of a process (`"self"` for this one) from `/proc/<pid>/status`.
pub fn memory_of(pid: &str) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some(Memory {
        rss_mib: field("VmRSS:")?,
        peak_mib: field("VmHWM:")?,
    })
}

/// Resets this process's `VmHWM` to its current RSS (Linux `clear_refs` 5); false if refused.
pub fn reset_own_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

impl Service {
    /// `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
    pub fn memory(&self) -> Option<Memory> {
        memory_of(&self.pid.to_string())
    }

    /// Fails when the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// SIGKILL (a crash: no shutdown work at all), then waits for the exit.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("sending SIGKILL to {}", self.name))?;
        self.child
            .wait()
            .await
            .with_context(|| format!("waiting for {} to exit", self.name))?;
        Ok(())
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (SIGKILL after that).
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!(
                        "{} ended with {status}; see {}",
                        self.name,
                        self.log.display()
                    );
                }
                Ok(())
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                bail!("{} did not stop within {grace:?}", self.name)
            }
        }
    }
}
