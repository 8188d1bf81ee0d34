//! Typed domain errors and the stable wire codes they map to.
//!
//! Every rejection a decider can produce is a [`DomainError`]; its [`ErrorCode`] is part of the
//! wire contract (see `proto/`) and never changes meaning once published.

use std::fmt;

/// Stable, machine-readable error codes shared by every endpoint.
///
/// The domain produces a subset of them; the service edges add transport codes
/// (`unauthenticated`, `rate_limited`, `unavailable`, ...). The string form is the wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The input is malformed or breaks a field rule.
    ValidationFailed,
    /// The addressed entity (or a referenced one) does not exist for this caller.
    NotFound,
    /// The entity or a unique value (email, user link) is already taken.
    AlreadyExists,
    /// A concurrent writer won; retrying with fresh state may succeed.
    Conflict,
    /// The command is not allowed in the entity's current status.
    InvalidTransition,
    /// A referenced entity exists but cannot be used (inactive member, deleted agent...).
    InvalidReference,
    /// The caller is known but not allowed to do this.
    Forbidden,
    /// The caller did not present a valid identity.
    Unauthenticated,
    /// The caller sends too much too fast.
    RateLimited,
    /// A dependency (NATS, PostgreSQL) is unavailable; retry later.
    Unavailable,
    /// The request body is larger than the endpoint accepts.
    PayloadTooLarge,
    /// The answer would hold more rows than the query API returns at once; ask for pages.
    TooManyRows,
    /// A bug or an unexpected state on our side.
    Internal,
    /// The command id already names another command (another subject or body); not retryable:
    /// send the new command with a new id.
    CommandIdReused,
    /// No handler serves the command subject (unknown aggregate or action).
    UnknownCommand,
    /// The tenant was erased (offboarded): nothing of it can be changed or read any more.
    TenantErased,
}

impl ErrorCode {
    /// Every code, in declaration order (used by tests and generated documentation).
    pub const ALL: [ErrorCode; 16] = [
        Self::ValidationFailed,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Conflict,
        Self::InvalidTransition,
        Self::InvalidReference,
        Self::Forbidden,
        Self::Unauthenticated,
        Self::RateLimited,
        Self::Unavailable,
        Self::PayloadTooLarge,
        Self::TooManyRows,
        Self::Internal,
        Self::CommandIdReused,
        Self::UnknownCommand,
        Self::TenantErased,
    ];

    /// The wire form, e.g. `"validation_failed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "validation_failed",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::InvalidTransition => "invalid_transition",
            Self::InvalidReference => "invalid_reference",
            Self::Forbidden => "forbidden",
            Self::Unauthenticated => "unauthenticated",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TooManyRows => "too_many_rows",
            Self::Internal => "internal",
            Self::CommandIdReused => "command_id_reused",
            Self::UnknownCommand => "unknown_command",
            Self::TenantErased => "tenant_erased",
        }
    }

    /// The NATS services API error code (`Nats-Service-Error-Code`), HTTP-like.
    pub const fn status(self) -> u16 {
        match self {
            Self::ValidationFailed => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound | Self::UnknownCommand => 404,
            Self::AlreadyExists | Self::Conflict | Self::CommandIdReused => 409,
            Self::PayloadTooLarge => 413,
            Self::InvalidTransition | Self::InvalidReference | Self::TooManyRows => 422,
            Self::RateLimited => 429,
            Self::TenantErased => 410,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of entity an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A client company.
    Tenant,
    /// A client's user.
    Member,
    /// A TalkwAI superuser.
    Admin,
    /// An AI agent.
    Agent,
    /// A call, email or other task.
    Task,
    /// A `$users` identity.
    User,
}

impl EntityKind {
    /// Lowercase singular name, as used in subjects (`task`, `member`...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Task => "task",
            Self::User => "user",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected command. Messages are lowercase without trailing punctuation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field breaks its rule.
    #[error("{field}: {message}")]
    Validation {
        /// The camelCase field name, dotted for nested fields.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The addressed entity does not exist (or was deleted).
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for.
        entity: EntityKind,
        /// The body field that named it, when it was a reference.
        field: Option<&'static str>,
    },
    /// The entity already exists, or a unique value is taken.
    #[error("{message}")]
    AlreadyExists {
        /// The field holding the taken value, if any.
        field: Option<&'static str>,
        /// Human-readable explanation.
        message: String,
    },
    /// The entity's status does not allow this action.
    #[error("cannot {action} a {entity} that is {status}")]
    InvalidTransition {
        /// The entity kind.
        entity: EntityKind,
        /// The attempted action, e.g. `complete`.
        action: &'static str,
        /// The current status, wire form.
        status: &'static str,
    },
    /// A referenced entity exists but cannot be used.
    #[error("{field}: {message}")]
    InvalidReference {
        /// The body field holding the reference.
        field: &'static str,
        /// Why it cannot be used.
        message: String,
    },
    /// The actor may not perform this command.
    #[error("{0}")]
    Forbidden(String),
    /// The addressed tenant was erased.
    #[error("tenant {0} was erased")]
    TenantErased(crate::ids::TenantId),
}

impl DomainError {
    /// Shorthand for a validation error.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Self::InvalidTransition { .. } => ErrorCode::InvalidTransition,
            Self::InvalidReference { .. } => ErrorCode::InvalidReference,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::TenantErased(_) => ErrorCode::TenantErased,
        }
    }

    /// The body field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Validation { field, .. } => Some(field),
            Self::NotFound { field, .. } | Self::AlreadyExists { field, .. } => *field,
            Self::InvalidReference { field, .. } => Some(field),
            Self::InvalidTransition { .. } | Self::Forbidden(_) | Self::TenantErased(_) => None,
        }
    }
}

/// A value failed validation; carries no field name (the caller knows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl InvalidValue {
    /// Attaches the field name, making a [`DomainError::Validation`].
    pub fn at(self, field: impl Into<String>) -> DomainError {
        DomainError::validation(field, self.0)
    }
}
