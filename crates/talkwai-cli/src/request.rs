//! One request/reply round trip with an optional bearer token, for idempotent reads (`query`,
//! `presence`): sent again when no reply comes in time or nobody listens yet.

use std::time::Duration;

use async_nats::{HeaderMap, Request, RequestErrorKind};
use bytes::Bytes;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use talkwai_proto::ErrorBody;
use talkwai_proto::headers;

use crate::error::CliError;

/// How a read is sent.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// How many requests at most.
    pub attempts: u32,
}

/// Sends `body` to `subject` and returns the reply's JSON. `service` names who should answer
/// in errors (`the query service`).
pub async fn request_json(
    client: &async_nats::Client,
    subject: &str,
    token: Option<&SecretString>,
    body: Bytes,
    options: ReadOptions,
    service: &str,
) -> Result<Value, CliError> {
    let mut request_headers = HeaderMap::new();
    if let Some(token) = token {
        request_headers.insert(
            headers::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()).as_str(),
        );
    }
    let attempts = options.attempts.max(1);
    let mut pause = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            tracing::warn!(attempt, reason = %last, "sending the request again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
        }
        let request = Request::new()
            .headers(request_headers.clone())
            .payload(body.clone())
            .timeout(Some(options.timeout));
        match client.send_request(subject.to_owned(), request).await {
            Ok(message) => {
                return serde_json::from_slice(&message.payload).map_err(|e| {
                    CliError::Nats(format!(
                        "the reply is not JSON ({e}): {}",
                        String::from_utf8_lossy(&message.payload)
                    ))
                });
            }
            Err(err) => match err.kind() {
                RequestErrorKind::TimedOut => last = "no reply in time".into(),
                RequestErrorKind::NoResponders => last = format!("{service} is not running"),
                _ => return Err(CliError::nats(err)),
            },
        }
    }
    Err(CliError::NoReply {
        subject: subject.to_owned(),
        attempts,
        last,
    })
}

/// The typed error of an `{"ok": false, "error": {...}}` reply; `None` when `ok` is true.
pub fn reply_error(reply: &Value, what: &'static str) -> Result<Option<CliError>, CliError> {
    match reply.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(None),
        Some(false) => {
            let error: ErrorBody = reply
                .get("error")
                .cloned()
                .and_then(|e| serde_json::from_value(e).ok())
                .ok_or_else(|| CliError::Nats(format!("unexpected {what} reply: {reply}")))?;
            Ok(Some(CliError::Refused { what, error }))
        }
        None => Err(CliError::Nats(format!("unexpected {what} reply: {reply}"))),
    }
}
