//! Request parsing, the first step of a command: the subject, the `Talkwai-Command-Id` header
//! and the body, and the check that the command arrived in its own scope (a platform command on
//! a platform subject, a tenant command on a tenant's). Nothing is read or written yet.

use async_nats::HeaderMap;
use talkwai_domain::{Command, ErrorCode};
use talkwai_proto::{CommandSubject, ErrorBody, Scope, SubjectError, decode_command, headers};
use tracing::Span;
use uuid::Uuid;

use crate::error::ServiceError;

/// A command request, parsed.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The subject it arrived on.
    pub subject: &'a str,
    /// Its scope (the tenant, or the platform).
    pub scope: Scope,
    /// The caller's idempotency key.
    pub command_id: Uuid,
    /// The decoded command.
    pub command: Command,
    /// The body as sent (its fingerprint is part of the command's record).
    pub payload: &'a [u8],
    /// The `Authorization` header, for admission.
    pub authorization: Option<&'a str>,
}

/// A request header's value.
pub(crate) fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

fn invalid(message: impl Into<String>, field: &str) -> ServiceError {
    ServiceError::Request(ErrorBody::new(ErrorCode::ValidationFailed, message).with_field(field))
}

impl<'a> Request<'a> {
    /// Parses a request, recording its aggregate, action and command id on `span` as soon as
    /// they are known (before the body is decoded).
    pub(crate) fn parse(
        subject: &'a str,
        request_headers: Option<&'a HeaderMap>,
        payload: &'a [u8],
        span: &Span,
    ) -> Result<Self, ServiceError> {
        let parsed = CommandSubject::parse(subject).map_err(|e| {
            let field = match e {
                SubjectError::InvalidScope(_) => "tenant",
                _ => "subject",
            };
            invalid(e.to_string(), field)
        })?;
        let command_id = header(request_headers, headers::COMMAND_ID)
            .ok_or_else(|| invalid("missing command id header", headers::COMMAND_ID))?
            .parse::<Uuid>()
            .map_err(|_| invalid("command id must be a UUID", headers::COMMAND_ID))?;
        span.record("aggregate", parsed.aggregate.to_string().as_str());
        span.record("action", parsed.action.as_str());
        span.record("command_id", command_id.to_string().as_str());
        let command = decode_command(&parsed, payload).map_err(ServiceError::Request)?;
        match (command.is_platform(), parsed.scope) {
            (true, Scope::Tenant(_)) => {
                return Err(invalid(
                    format!(
                        "{} is a platform command: send it on talkwai.cmd.platform.{}.{}",
                        command.permission(),
                        parsed.aggregate,
                        parsed.action
                    ),
                    "subject",
                ));
            }
            (false, Scope::Platform) => {
                return Err(invalid(
                    format!(
                        "{} is a tenant command: send it on talkwai.cmd.<tenant>.{}.{}",
                        command.permission(),
                        parsed.aggregate,
                        parsed.action
                    ),
                    "subject",
                ));
            }
            _ => {}
        }
        Ok(Self {
            subject,
            scope: parsed.scope,
            command_id,
            command,
            payload,
            authorization: header(request_headers, headers::AUTHORIZATION),
        })
    }
}
