//! A `talkwai up` child process for tests: started on free ports, read up to its ready line,
//! stopped with SIGTERM.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use talkwai_cli::up::READY_LINE;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// A running `talkwai up`.
pub struct Up {
    pub child: Child,
    pub stdout: Lines<BufReader<ChildStdout>>,
    /// What it printed up to its ready line.
    pub banner: Vec<String>,
    pub log: std::path::PathBuf,
}

impl Up {
    pub async fn start(data: &Path, log_name: &str) -> Self {
        Self::start_with(data, log_name, &[]).await
    }

    pub async fn start_with(data: &Path, log_name: &str, extra: &[&str]) -> Self {
        let log = data.with_file_name(log_name);
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let data_arg = data.to_string_lossy().into_owned();
        let mut child = super::talkwai()
            .args([
                "up",
                "--data-dir",
                &data_arg,
                "--nats-port",
                "0",
                "--postgres-port",
                "0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start talkwai up: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("talkwai up has no stdout pipe"));
        let mut up = Self {
            child,
            stdout: BufReader::new(stdout).lines(),
            banner: Vec::new(),
            log,
        };
        let ready = tokio::time::timeout(Duration::from_secs(180), async {
            while let Ok(Some(line)) = up.stdout.next_line().await {
                let done = line.starts_with(READY_LINE);
                up.banner.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            panic!(
                "talkwai up did not print {READY_LINE:?} (timed out: {}); stdout:\n{}\nstderr:\n{}",
                ready.is_err(),
                up.banner.join("\n"),
                std::fs::read_to_string(&up.log).unwrap_or_default()
            );
        }
        up
    }

    /// The value of `export NAME=<value>` in the banner.
    pub fn export(&self, name: &str) -> String {
        let prefix = format!("export {name}=");
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.banner.join("\n")))
    }

    /// The single-quoted text after `start` on the banner line holding it
    /// (`talkwai query '<json>'` gives the JSON).
    pub fn quoted_after(&self, start: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| {
                let rest = &l[l.find(start)? + start.len()..];
                Some(rest[..rest.find('\'')?].to_owned())
            })
            .unwrap_or_else(|| panic!("no `{start}...'` in:\n{}", self.banner.join("\n")))
    }

    /// A `talkwai` command with the master key file this `up` printed (its log is sealed).
    pub fn cli(&self) -> tokio::process::Command {
        let mut command = super::talkwai();
        command.env(
            "TALKWAI_MASTER_KEY_FILE",
            self.export("TALKWAI_MASTER_KEY_FILE"),
        );
        command
    }

    pub fn says(&self, text: &str) -> bool {
        self.banner.iter().any(|l| l.contains(text))
    }

    /// SIGTERM, then waits for a clean exit and the "stopped" line.
    pub async fn terminate(mut self) {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("talkwai up already exited"));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -TERM {pid} failed");
        let mut rest = Vec::new();
        let exited = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                rest.push(line);
            }
            self.child.wait().await
        })
        .await;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match exited {
            Ok(Ok(status)) => assert!(
                status.success(),
                "talkwai up exited with {status} after SIGTERM; stderr:\n{log}"
            ),
            Ok(Err(e)) => panic!("waiting for talkwai up: {e}"),
            Err(_) => panic!("talkwai up did not stop within 90s of SIGTERM; stderr:\n{log}"),
        }
        assert!(
            rest.iter().any(|l| l.contains("stopped; data kept")),
            "no stop line after SIGTERM: {rest:?}"
        );
    }
}

/// The data dir's secrets (the JWT secret, to mint tokens).
pub fn secrets_json(data: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(data.join("secrets.json"))
        .unwrap_or_else(|e| panic!("secrets.json: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("secrets.json: {e}"))
}
