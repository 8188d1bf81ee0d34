//! The servers of `talkwai up` die with it, and a later `up` stops what a killed one left.
//!
//! **Dying with `up`.** For each server `up` starts a guardian: a `sh` that ignores SIGINT and
//! SIGHUP, blocks reading a pipe whose only writer is `up`, and signals the server once the
//! pipe closes. The kernel closes the pipe however `up` ends, `kill -9` included, so the server
//! is told to stop (nats-server SIGTERM, PostgreSQL SIGINT: a fast, clean shutdown). A normal
//! stop [`disarms`](Guardian::disarm) the guardian first and stops the servers itself.
//! This needs no `unsafe` (`PR_SET_PDEATHSIG` would need a `pre_exec` hook, and it fires when
//! the spawning *thread* ends, not the process).
//!
//! **Leftovers.** A server of a killed `up` may still be running (or shutting down) when the
//! next one starts on the same data dir: [`stop_leftover_nats`] reads nats-server's pid file,
//! [`stop_leftover_postgres`] PostgreSQL's `postmaster.pid` (whose second line is the data
//! dir), and each stops the process only when it is that program (by `/proc/<pid>/cmdline`
//! where there is a `/proc`), waiting until it is gone.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, ChildStdin, Command};

use crate::error::CliError;

/// A `sh` that signals a server when `up` ends.
#[derive(Debug)]
pub struct Guardian {
    /// The guardian process.
    child: Child,
    /// The pipe's write end: held open while `up` lives.
    _pipe: ChildStdin,
}

impl Guardian {
    /// Starts a guardian that sends `signal` (`TERM`, `INT`...) to `pid` when this process
    /// ends without disarming it.
    pub fn start(pid: u32, signal: &str) -> Result<Self, CliError> {
        let script = r#"trap '' INT HUP TERM; while read -r _; do :; done; kill -s "$1" "$2" 2>/dev/null; exit 0"#;
        let mut child = Command::new("sh")
            .args([
                "-c",
                script,
                "talkwai-up-guardian",
                signal,
                &pid.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CliError::Nats(format!("cannot start the guardian of pid {pid}: {e}")))?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| CliError::Nats("the guardian has no stdin pipe".into()))?;
        Ok(Self { child, _pipe: pipe })
    }

    /// Stops the guardian without signalling the server (before `up` stops it itself).
    pub async fn disarm(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether `pid` is a running (not zombie) process.
pub fn alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // `pid (comm) S ...`: the state follows the last `)`.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X'),
            Err(_) => false,
        };
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` runs `program` (its command line mentions it); `true` without `/proc`.
fn runs(pid: u32, program: &str) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(program))
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Sends `first` to `pid`, waits up to `grace` for it to end, then SIGKILL; errors when it
/// survives even that.
async fn stop(pid: u32, first: &str, grace: Duration, what: &str) -> Result<(), CliError> {
    tracing::warn!(pid, "stopping a leftover {what} of an earlier talkwai up");
    signal(pid, first);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if alive(pid) {
        tracing::warn!(pid, "the leftover {what} did not stop in time, killing it");
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if alive(pid) {
        return Err(CliError::Nats(format!(
            "a leftover {what} (pid {pid}) of this data dir does not stop; stop it and start again"
        )));
    }
    Ok(())
}

fn read_pid(text: &str) -> Option<u32> {
    text.lines().next()?.trim().parse().ok()
}

/// Stops the nats-server whose pid is in `pid_file` if it still runs, and removes the file.
pub async fn stop_leftover_nats(pid_file: &Path) -> Result<(), CliError> {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return Ok(());
    };
    if let Some(pid) = read_pid(&text)
        && pid != std::process::id()
        && alive(pid)
        && runs(pid, "nats-server")
    {
        stop(pid, "TERM", Duration::from_secs(30), "nats-server").await?;
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(())
}

/// Stops the PostgreSQL postmaster of `data_dir` (its `postmaster.pid`) if it still runs
/// (SIGINT: a fast shutdown), so the next start finds the data dir free.
pub async fn stop_leftover_postgres(data_dir: &Path) -> Result<(), CliError> {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return Ok(());
    };
    let Some(pid) = read_pid(&text) else {
        return Ok(());
    };
    let same_dir = text
        .lines()
        .nth(1)
        .is_some_and(|dir| Path::new(dir.trim()) == data_dir);
    if same_dir && pid != std::process::id() && alive(pid) && runs(pid, "postgres") {
        stop(pid, "INT", Duration::from_secs(60), "postgresql").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_guardian_signals_when_its_pipe_closes_and_not_when_disarmed() {
        let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
        let pid = sleeper.id().expect("pid");
        let guardian = Guardian::start(pid, "TERM").expect("guardian");
        guardian.disarm().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(alive(pid), "a disarmed guardian leaves the process alone");

        let guardian = Guardian::start(pid, "TERM").expect("guardian");
        drop(guardian); // closes the pipe, as the end of `up` would
        let status = tokio::time::timeout(Duration::from_secs(10), sleeper.wait())
            .await
            .expect("the process is signalled")
            .expect("wait");
        assert!(!status.success());
    }

    #[tokio::test]
    async fn a_leftover_pid_file_of_a_dead_or_foreign_process_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("nats-server.pid");
        let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
        let pid = sleeper.id().expect("pid");
        std::fs::write(&file, pid.to_string()).expect("write");
        stop_leftover_nats(&file).await.expect("ok");
        assert!(
            alive(pid),
            "a process that is not nats-server is not stopped"
        );
        assert!(!file.exists(), "the stale pid file is removed");
        let _ = sleeper.kill().await;
    }
}
