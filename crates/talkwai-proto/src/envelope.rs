//! Request, reply and error envelopes and their JSON forms.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talkwai_domain::{Command, DomainError, EntityKind, ErrorCode, EventBody};
use uuid::Uuid;

use crate::subject::CommandSubject;

/// Largest command body accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// A typed error: a stable code, a lowercase message, and the body field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The camelCase body field, dotted for nested fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `rate_limited`: milliseconds until a request can pass.
    #[serde(
        default,
        rename = "retryAfterMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// An error with no field.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after_ms: None,
        }
    }

    /// Sets the field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the retry-after hint.
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}

impl From<&DomainError> for ErrorBody {
    fn from(err: &DomainError) -> Self {
        Self {
            code: err.code(),
            message: err.to_string(),
            field: err.field().map(str::to_owned),
            retry_after_ms: None,
        }
    }
}

impl From<DomainError> for ErrorBody {
    fn from(err: DomainError) -> Self {
        Self::from(&err)
    }
}

/// A successful command: what was written and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandAccepted {
    /// The addressed entity.
    pub id: Uuid,
    /// The aggregate version after the command (number of events it has).
    pub version: u64,
    /// The events the command appended (empty when it changed nothing).
    pub events: Vec<EventBody>,
    /// Stream sequence of the command's last event, or of the aggregate's last event for a
    /// no-op; wait for projections to reach it to read your writes.
    pub seq: u64,
    /// What an erasure (`member.erase`, `admin.erase`, `user.erase`, `task.eraseContent`)
    /// did to the subject's key; absent for every other command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureReport>,
}

/// What an erasure did to the subject's personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErasureReport {
    /// The subject's data key was destroyed: every sealed personal field of it is unreadable
    /// for good, in the log and in every backup (`false`: it never had one, nothing of it was
    /// sealed).
    pub key_destroyed: bool,
    /// Some of its personal data was written in clear (no master key, or before one was
    /// configured): the log and its backups still hold those values readable. Every reader
    /// treats them as erased from the `…erased` event on, but only deleting the log would
    /// remove them.
    pub clear_in_log: bool,
}

/// The reply to a command: `{"ok": true, ...}` or `{"ok": false, "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandReply {
    /// Accepted.
    Accepted {
        /// Always `true`.
        ok: True,
        /// What happened.
        #[serde(flatten)]
        accepted: CommandAccepted,
    },
    /// Rejected.
    Rejected {
        /// Always `false`.
        ok: False,
        /// Why.
        error: ErrorBody,
    },
}

impl CommandReply {
    /// An accepted reply.
    pub fn accepted(accepted: CommandAccepted) -> Self {
        Self::Accepted { ok: True, accepted }
    }

    /// A rejected reply.
    pub fn rejected(error: ErrorBody) -> Self {
        Self::Rejected { ok: False, error }
    }

    /// The result view.
    pub fn into_result(self) -> Result<CommandAccepted, ErrorBody> {
        match self {
            Self::Accepted { accepted, .. } => Ok(accepted),
            Self::Rejected { error, .. } => Err(error),
        }
    }
}

macro_rules! bool_literal {
    ($name:ident, $value:literal) => {
        /// A boolean that only accepts one value, so the two reply shapes cannot be confused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bool($value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if bool::deserialize(d)? == $value {
                    Ok(Self)
                } else {
                    Err(serde::de::Error::custom(concat!("expected ", stringify!($value))))
                }
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "const": $value })
            }
        }
    };
}

bool_literal!(True, true);
bool_literal!(False, false);

/// Decodes a command body for `subject`, naming the offending field in the error.
///
/// The subject gives the aggregate and action; the body is the seed-shaped object
/// (`{"id": ..., "firstName": ...}`). Unknown fields, wrong enums and invalid values are
/// `validation_failed` with the field; an unknown action too, with field `action`.
pub fn decode_command(subject: &CommandSubject, body: &[u8]) -> Result<Command, ErrorBody> {
    if body.len() > MAX_COMMAND_BYTES {
        return Err(ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "command body is {} bytes, at most {MAX_COMMAND_BYTES} accepted",
                body.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ErrorBody::new(
            ErrorCode::ValidationFailed,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ErrorBody::new(
            ErrorCode::ValidationFailed,
            "body must be a JSON object",
        ));
    }
    let wrapped = serde_json::json!({
        "aggregate": subject.aggregate.as_str(),
        "command": { "action": subject.action, "body": value },
    });
    serde_path_to_error::deserialize(wrapped).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let field = path
            .strip_prefix("command.body.")
            .or_else(|| path.strip_prefix("command.body"))
            .map(str::to_owned);
        if inner.starts_with("unknown variant") && path.starts_with("command") && field.is_none() {
            return ErrorBody::new(
                ErrorCode::ValidationFailed,
                format!(
                    "unknown action {} for {}",
                    subject.action, subject.aggregate
                ),
            )
            .with_field("action");
        }
        // serde reports unknown and missing fields at the containing object: name them.
        let field = field
            .filter(|f| !f.is_empty() && f != "?")
            .or_else(|| quoted_field(&inner));
        let mut error = ErrorBody::new(ErrorCode::ValidationFailed, inner);
        error.field = field;
        error
    })
}

/// Extracts the field from serde's "unknown field `x`" / "missing field `x`" messages.
fn quoted_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

/// The aggregate kinds that live in the platform scope.
pub fn is_platform_kind(kind: EntityKind) -> bool {
    matches!(kind, EntityKind::Admin | EntityKind::User)
}
