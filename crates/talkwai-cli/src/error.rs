//! The CLI's one error type and its exit codes. `Display` never prints the cause chain; the
//! binary edge walks `source()`.

use std::path::PathBuf;

use talkwai_proto::ErrorBody;

/// Exit code of a command the service refused, or of an aggregate with no history.
pub const EXIT_REJECTED: u8 = 1;
/// Exit code of bad arguments or input (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of an operational failure: NATS unreachable, no reply, corrupt log, I/O.
pub const EXIT_FAILURE: u8 = 3;

/// Why a `talkwai` command failed. `Display` is what the operator reads on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command service answered with a typed error.
    #[error("command rejected: {}", describe(.0))]
    Rejected(ErrorBody),
    /// The query API or the presence service answered with a typed error.
    #[error("{what} refused: {}", describe(.error))]
    Refused {
        /// `query` or `presence`.
        what: &'static str,
        /// The error body of the reply.
        error: ErrorBody,
    },
    /// Bad arguments or input.
    #[error("{0}")]
    Usage(String),
    /// Nothing is recorded where the operator looked.
    #[error("not found: {0}")]
    NotFound(String),
    /// NATS is unreachable.
    #[error("cannot connect to nats at {url}: {message}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's reason.
        message: String,
    },
    /// The command service did not answer, even after the retries.
    #[error("no reply on {subject} after {attempts} attempts: {last}")]
    NoReply {
        /// The command subject.
        subject: String,
        /// How many requests were sent (all with the same command id).
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// NATS or JetStream failed, or answered something unreadable.
    #[error("nats: {0}")]
    Nats(String),
    /// The event log holds events this code cannot fold.
    #[error("corrupt history of {subject} at sequence {seq}: {message}")]
    Corrupt {
        /// The aggregate subject.
        subject: String,
        /// The first event that cannot be read or applied.
        seq: u64,
        /// Why.
        message: String,
    },
    /// A token could not be minted.
    #[error("cannot mint the token")]
    Mint(#[from] talkwai_auth::AuthError),
    /// A local server (nats-server, PostgreSQL) failed.
    #[error("{action}")]
    Server {
        /// What `talkwai up` was doing.
        action: &'static str,
        /// The testkit's error.
        #[source]
        source: talkwai_testkit::TestkitError,
    },
    /// The in-process command service failed.
    #[error("command service failed")]
    Service(#[from] talkwai_command_service::StartError),
    /// The in-process query service failed.
    #[error("query service failed")]
    Query(#[from] talkwai_query::QueryError),
    /// The in-process query service could not start.
    #[error("query service failed to start")]
    QueryStart(#[from] talkwai_query::StartError),
    /// The in-process notifier failed.
    #[error("notifier failed")]
    Notifier(#[from] talkwai_notifier::NotifierError),
    /// The projector or its PostgreSQL failed, or refused an operator request.
    #[error("projections")]
    Projection(#[from] talkwai_projector::ProjectorError),
    /// A rebuild's parity check found differences; nothing was swapped.
    #[error("parity check failed: the new generation differs from the live one; nothing swapped")]
    ParityFailed,
    /// The NATS users and permissions of `talkwai up` could not be set up.
    #[error("nats auth")]
    NatsAuth(#[from] crate::nats_auth::NatsAuthError),
    /// The demo could not be seeded.
    #[error("seeding the demo: {0}")]
    Seed(String),
    /// Whoever reads stdout went away (`talkwai events tail | head`); not a failure.
    #[error("output closed")]
    OutputClosed,
    /// The personal-data key store refused or failed (a restore that would replace a
    /// different key is [`talkwai_keys::KeyError::Conflict`], exit code 2).
    #[error("personal-data keys: {0}")]
    Keys(#[from] talkwai_keys::KeyError),
    /// A file operation failed.
    #[error("{action} {}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn describe(error: &ErrorBody) -> String {
    match &error.field {
        Some(field) => format!("{}: {} (field {field})", error.code, error.message),
        None => format!("{}: {}", error.code, error.message),
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::OutputClosed => 0,
            Self::Rejected(_) | Self::Refused { .. } | Self::NotFound(_) | Self::ParityFailed => {
                EXIT_REJECTED
            }
            Self::Projection(
                talkwai_projector::ProjectorError::Invalid(_)
                | talkwai_projector::ProjectorError::Parity(_),
            ) => EXIT_REJECTED,
            Self::Usage(_) | Self::Keys(talkwai_keys::KeyError::Conflict { .. }) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Wraps any NATS or JetStream error.
    pub fn nats(err: impl std::fmt::Display) -> Self {
        Self::Nats(err.to_string())
    }

    /// Wraps an I/O error on a path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<talkwai_eventstore::StoreError> for CliError {
    fn from(err: talkwai_eventstore::StoreError) -> Self {
        Self::Nats(err.to_string())
    }
}
