//! The one error type of the testkit.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while starting, stopping or using a throw-away server.
///
/// `Display` never prints the cause chain; walk `source()` for it.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A server binary could not be found; `hint` says how to install it.
    #[error("{program} not found: {hint}")]
    BinaryNotFound {
        /// The program that was looked for (`nats-server`, `initdb`...).
        program: &'static str,
        /// What to run to install it.
        hint: &'static str,
    },

    /// A workspace binary could not be built or found ([`crate::bins`]).
    #[error("workspace binary: {0}")]
    Binary(String),

    /// A file-system or process operation failed.
    #[error("i/o error while {action}")]
    Io {
        /// What the testkit was doing.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server process exited before it accepted connections.
    #[error("{program} exited before becoming ready ({status}); log tail:\n{log_tail}")]
    ExitedEarly {
        /// The program that exited.
        program: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log.
        log_tail: String,
    },

    /// The server did not accept connections in time.
    #[error("{program} did not become ready within {timeout:?}; log tail:\n{log_tail}")]
    StartupTimeout {
        /// The program that was waited for.
        program: &'static str,
        /// How long the testkit waited.
        timeout: Duration,
        /// The last lines of its log.
        log_tail: String,
    },

    /// A helper command (`initdb`, `pg_ctl`...) failed.
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed (stdout and stderr, trimmed).
        output: String,
    },

    /// Every attempt to start on a free port collided with another process.
    #[error("{program} could not bind a free port after {attempts} attempts; last error: {last}")]
    PortCollision {
        /// The program that was started.
        program: &'static str,
        /// How many ports were tried.
        attempts: u32,
        /// The last start error, rendered.
        last: String,
    },

    /// The builder was given options that do not fit together.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A data directory exists but does not hold what the testkit expects.
    #[error("data directory {path} is not usable: {reason}")]
    UnusableDataDir {
        /// The directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// The server was asked for something while it is stopped.
    #[error("{program} is not running")]
    NotRunning {
        /// The program that is stopped.
        program: &'static str,
    },

    /// A cluster did not reach a state (a JetStream meta leader, a stream leader) in time.
    #[error("nats cluster: no {what} within {timeout:?}; last seen: {detail}")]
    ClusterNotReady {
        /// What was waited for.
        what: String,
        /// How long the testkit waited.
        timeout: Duration,
        /// What the monitoring endpoints said last.
        detail: String,
    },

    /// A PostgreSQL client operation failed.
    #[error("postgres error while {action}")]
    Postgres {
        /// What the testkit was doing.
        action: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl TestkitError {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}

/// Result alias used throughout the testkit.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
