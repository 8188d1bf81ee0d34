//! Header names: ours (`Talkwai-*`), W3C trace context, and the NATS headers we rely on.

/// Idempotency key of a command (a UUID chosen by the caller).
pub const COMMAND_ID: &str = "Talkwai-Command-Id";
/// `Bearer <jwt>`.
pub const AUTHORIZATION: &str = "Authorization";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// Event type on an event message (`task.started`).
pub const EVENT_TYPE: &str = "Talkwai-Event-Type";
/// Event version on an event message.
pub const EVENT_VERSION: &str = "Talkwai-Event-Version";
/// The tenant of an event (`platform` for platform events).
pub const TENANT: &str = "Talkwai-Tenant";
/// Who caused the event (`platform`, `admin:<id>`, `member:<id>`).
pub const ACTOR: &str = "Talkwai-Actor";
/// When the event happened, epoch milliseconds.
pub const OCCURRED_AT: &str = "Talkwai-Occurred-At";
/// The data key of an event whose body holds sealed personal fields (a UUID; see
/// `crate::sealed`), so a reader can fetch it before decoding.
pub const KEY: &str = "Talkwai-Key";
/// Position of the event within its command (`1/3`), so readers can tell a command's events.
pub const COMMAND_PART: &str = "Talkwai-Command-Part";

/// JetStream deduplication id.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// JetStream optimistic concurrency on the subject.
pub const NATS_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// NATS services API error text.
pub const NATS_SERVICE_ERROR: &str = "Nats-Service-Error";
/// NATS services API error code.
pub const NATS_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
