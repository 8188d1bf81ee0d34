//! Small helpers shared by the server modules: free ports, logs, unique names, process exits.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Result, TestkitError};

/// How many fresh ports a start tries before giving up.
pub(crate) const PORT_ATTEMPTS: u32 = 8;

/// Asks the kernel for a free port on 127.0.0.1 by binding port 0, then releases it.
///
/// Another process may take the port before the server binds it; callers retry.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("reading the free port", e))?
        .port();
    Ok(port)
}

/// A name no other instance of this process (or another process) is using right now.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// The last `lines` lines of a log file, or a note saying it could not be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

/// Opens (appending) the log file a child's stdout and stderr go to.
pub(crate) fn open_log(path: &Path) -> Result<(std::process::Stdio, std::process::Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TestkitError::io(format!("opening log {}", path.display()), e))?;
    let err = file
        .try_clone()
        .map_err(|e| TestkitError::io("cloning the log file handle", e))?;
    Ok((file.into(), err.into()))
}

/// Waits (blocking, bounded) for a child that was signalled to exit; used from `Drop`.
pub(crate) fn reap_blocking(child: &mut tokio::process::Child, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.start_kill();
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The user a child process runs as.
///
/// PostgreSQL refuses to run as root, so when this process is root the PostgreSQL binaries are
/// started as `nobody` (uid and gid read from `/etc/passwd`, 65534 otherwise) with the
/// supplementary groups dropped, and the directories they write are chowned to that user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// Run as the current user.
    Current,
    /// Run as this uid/gid.
    User {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
}

impl RunAs {
    /// `Current` unless this process's effective user is root, judged by the owner of a
    /// directory it just created (`probe`).
    pub(crate) fn for_postgres(probe: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(probe)
            .map_err(|e| TestkitError::io(format!("reading owner of {}", probe.display()), e))?
            .uid();
        if owner != 0 {
            return Ok(Self::Current);
        }
        let (uid, gid) = nobody_ids();
        Ok(Self::User { uid, gid })
    }

    /// Applies the identity to a command.
    pub(crate) fn apply(self, command: &mut tokio::process::Command) {
        if let Self::User { uid, gid } = self {
            // std drops supplementary groups when it switches uid as root.
            command.uid(uid).gid(gid);
        }
    }

    /// Applies the identity to a blocking command (used from `Drop`).
    pub(crate) fn apply_std(self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        if let Self::User { uid, gid } = self {
            command.uid(uid).gid(gid);
        }
    }

    /// Makes `path` owned by the identity (no-op for `Current`).
    pub(crate) fn chown(self, path: &Path) -> Result<()> {
        if let Self::User { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| TestkitError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }
}

fn nobody_ids() -> (u32, u32) {
    let fallback = (65534, 65534);
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return fallback;
    };
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != "nobody" {
                return None;
            }
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .unwrap_or(fallback)
}
