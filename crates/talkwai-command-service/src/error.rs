//! The service's errors and the one place that maps them to wire codes.

use talkwai_auth::{AuthError, RateLimited, Refused};
use talkwai_domain::{DecodeError, DomainError, ErrorCode, EvolveError};
use talkwai_eventstore::StoreError;
use talkwai_proto::ErrorBody;

/// Why a command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request could not be decoded (subject, headers, body).
    #[error("{0}")]
    Request(ErrorBody),
    /// The token was refused.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The caller's tenant spent its allowance.
    #[error("{0}")]
    RateLimited(#[from] RateLimited),
    /// The decider refused the command.
    #[error("{0}")]
    Domain(#[from] DomainError),
    /// JetStream is unreachable or refused the write.
    #[error("event store: {0}")]
    Store(String),
    /// Every retry met a concurrent writer.
    #[error("gave up after {0} conflicting attempts")]
    Conflict(u32),
    /// The command id already names another command.
    #[error("command id already used for another command on {command}")]
    CommandIdReused {
        /// The subject the earlier command arrived on.
        command: String,
    },
    /// The command's tenant is changing owner between instances (or has none yet): nothing
    /// was written; retry.
    #[error("partition {partition} is moving between command-service instances")]
    Moved {
        /// The tenant's partition.
        partition: u32,
    },
    /// The key store is unreachable or refused a key.
    #[error("key store: {0}")]
    Keys(String),
    /// The log holds something this code cannot read: a bug or a newer writer.
    #[error("unreadable event log at {subject}: {message}")]
    Corrupt {
        /// Where.
        subject: String,
        /// What.
        message: String,
    },
}

impl From<Refused> for ServiceError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Token(err) => Self::Auth(err),
            Refused::RateLimited(limited) => Self::RateLimited(limited),
            Refused::OutsideTenant => Self::Domain(DomainError::Forbidden(refused.to_string())),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        Self::Store(err.to_string())
    }
}

impl ServiceError {
    /// A corrupt-log error from a decode failure.
    pub fn decode(subject: &str, err: &DecodeError) -> Self {
        Self::Corrupt {
            subject: subject.to_owned(),
            message: err.to_string(),
        }
    }

    /// A corrupt-log error from an evolve failure.
    pub fn evolve(subject: &str, err: &EvolveError) -> Self {
        Self::Corrupt {
            subject: subject.to_owned(),
            message: err.to_string(),
        }
    }

    /// The wire error.
    pub fn to_body(&self) -> ErrorBody {
        match self {
            Self::Request(body) => body.clone(),
            Self::Auth(err) => ErrorBody::new(ErrorCode::Unauthenticated, err.to_string()),
            Self::RateLimited(limited) => {
                ErrorBody::new(ErrorCode::RateLimited, limited.to_string())
                    .with_retry_after_ms(limited.retry_after_ms())
            }
            Self::Domain(err) => ErrorBody::from(err),
            Self::Store(message) => ErrorBody::new(
                ErrorCode::Unavailable,
                format!("event store unavailable: {message}"),
            ),
            Self::Conflict(attempts) => ErrorBody::new(
                ErrorCode::Conflict,
                format!("concurrent writers won {attempts} times in a row; retry later"),
            ),
            Self::CommandIdReused { command } => ErrorBody::new(
                ErrorCode::CommandIdReused,
                format!(
                    "this command id already names another command (sent on {command}, with \
                     another body or subject); send a new command with a new command id"
                ),
            )
            .with_field(talkwai_proto::headers::COMMAND_ID),
            Self::Moved { partition } => ErrorBody::new(
                ErrorCode::Unavailable,
                format!(
                    "this tenant's commands are moving to another command-service instance \
                     (partition {partition}); nothing was written: retry with the same command id"
                ),
            )
            .with_retry_after_ms(200),
            Self::Keys(message) => ErrorBody::new(
                ErrorCode::Unavailable,
                format!("key store unavailable: {message}"),
            ),
            Self::Corrupt { .. } => ErrorBody::new(ErrorCode::Internal, "internal error"),
        }
    }
}
