//! Query errors, with the wire code and the path in the query they are about.

use talkwai_domain::ErrorCode;
use talkwai_proto::ErrorBody;

/// Why a query was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct QueryError {
    /// Wire code.
    pub code: ErrorCode,
    /// Explanation.
    pub message: String,
    /// Path in the query (`tasks.$.where.status`), when it is about one place.
    pub field: Option<String>,
    /// For `rate_limited`: milliseconds until a request can pass.
    pub retry_after_ms: Option<u64>,
}

impl QueryError {
    fn new(code: ErrorCode, path: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: (!path.is_empty()).then(|| path.to_owned()),
            retry_after_ms: None,
        }
    }

    /// A malformed query.
    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, path, message)
    }

    /// An unknown namespace, field, link, operator or parameter.
    pub fn unknown(path: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, path, message)
    }

    /// An order or range filter on a field no index serves.
    pub fn not_indexed(path: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, path, message)
    }

    /// Not for this caller.
    pub fn forbidden(path: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, path, message)
    }

    /// The caller's tenant spent its allowance.
    pub fn rate_limited(limited: &talkwai_auth::RateLimited) -> Self {
        Self {
            retry_after_ms: Some(limited.retry_after_ms()),
            ..Self::new(ErrorCode::RateLimited, "", limited.to_string())
        }
    }

    /// The answer would hold more than `cap` rows (all levels together); `path` is the level
    /// where it went over. The message says how to page instead.
    pub fn too_many_rows(path: &str, cap: usize) -> Self {
        Self::new(
            ErrorCode::TooManyRows,
            path,
            format!(
                "the answer would hold more than {cap} rows (all levels together), the most one \
                 answer returns; ask for pages: give the levels a \"first\" and fetch each next \
                 page with \"after\" set to the level's pageInfo endCursor while hasNextPage is \
                 true (or page with \"limit\" and \"offset\")"
            ),
        )
    }

    /// The read models are unreachable, or too slow.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, "", message)
    }

    /// The wire body.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            field: self.field.clone(),
            retry_after_ms: self.retry_after_ms,
        }
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(err: tokio_postgres::Error) -> Self {
        // Statement timeouts and cancellations are the caller's query being too heavy.
        if err.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
            return Self::new(
                ErrorCode::ValidationFailed,
                "",
                "query took too long; narrow it",
            );
        }
        if err.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            return Self::unavailable("read models are not initialized yet");
        }
        tracing::warn!(error = %err, "query failed in postgres");
        Self::unavailable("read models unavailable")
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %err, "no postgres connection");
        Self::unavailable("read models unavailable")
    }
}
