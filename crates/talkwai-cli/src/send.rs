//! `talkwai cmd`: send one command, retrying with the same command id so a retry is applied
//! at most once.

use std::io::Read as _;
use std::time::Duration;

use async_nats::{HeaderMap, Request, RequestErrorKind};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use talkwai_domain::ErrorCode;
use talkwai_proto::{CommandReply, CommandSubject, headers};
use uuid::Uuid;

use crate::cli::CmdArgs;
use crate::error::CliError;

/// How a command is sent.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// How many requests at most (all with the same command id).
    pub attempts: u32,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempts: 4,
        }
    }
}

/// A reply with its raw JSON, as the service sent it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The typed reply.
    pub reply: CommandReply,
    /// The reply exactly as received, for printing.
    pub raw: serde_json::Value,
}

/// Completes a subject given without the `talkwai.cmd.` prefix and checks it follows the
/// scheme.
pub fn normalize_subject(subject: &str) -> Result<String, CliError> {
    let full = if subject.starts_with("talkwai.") {
        subject.to_owned()
    } else {
        format!("talkwai.cmd.{subject}")
    };
    CommandSubject::parse(&full).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(full)
}

/// Reads the body argument: inline JSON, `-` for stdin or `@path`, and checks it is a JSON
/// object.
pub fn read_body(arg: &str) -> Result<Bytes, CliError> {
    read_json_object(arg, "command").map(|(_, bytes)| bytes)
}

/// Reads a JSON object argument (inline, `-` for stdin, `@path` for a file); `what` names it
/// in errors. Returns the parsed value and the text as given.
pub fn read_json_object(arg: &str, what: &str) -> Result<(serde_json::Value, Bytes), CliError> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::io("reading", "stdin", e))?;
        text
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).map_err(|e| CliError::io("reading", path, e))?
    } else {
        arg.to_owned()
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("the {what} body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(CliError::Usage(format!(
            "the {what} body must be a JSON object"
        )));
    }
    Ok((value, Bytes::from(text.into_bytes())))
}

/// Sends a command and waits for its reply. A request that times out, finds no responder or
/// is answered `unavailable` is sent again with the same command id (the service applies a
/// command id once), up to `options.attempts` times with a growing pause.
pub async fn send_command(
    client: &async_nats::Client,
    subject: &str,
    body: Bytes,
    token: Option<&SecretString>,
    command_id: Uuid,
    options: SendOptions,
) -> Result<Reply, CliError> {
    let mut headers = HeaderMap::new();
    headers.insert(headers::COMMAND_ID, command_id.to_string().as_str());
    if let Some(token) = token {
        headers.insert(
            headers::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()).as_str(),
        );
    }
    let attempts = options.attempts.max(1);
    let mut pause = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            tracing::warn!(attempt, %command_id, reason = %last, "retrying the command");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
        }
        let request = Request::new()
            .headers(headers.clone())
            .payload(body.clone())
            .timeout(Some(options.timeout));
        match client.send_request(subject.to_owned(), request).await {
            Ok(message) => {
                let raw: serde_json::Value =
                    serde_json::from_slice(&message.payload).map_err(|e| {
                        CliError::Nats(format!(
                            "the reply is not JSON ({e}): {}",
                            String::from_utf8_lossy(&message.payload)
                        ))
                    })?;
                let reply: CommandReply = serde_json::from_value(raw.clone())
                    .map_err(|e| CliError::Nats(format!("unexpected reply shape ({e}): {raw}")))?;
                if let CommandReply::Rejected { error, .. } = &reply
                    && error.code == ErrorCode::Unavailable
                    && attempt < attempts
                {
                    last = error.to_string();
                    continue;
                }
                return Ok(Reply { reply, raw });
            }
            Err(err) => match err.kind() {
                RequestErrorKind::TimedOut => last = "no reply in time".into(),
                RequestErrorKind::NoResponders => {
                    last = "no command service is listening".into();
                }
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

/// Runs `talkwai cmd`: prints the reply as pretty JSON; a rejection is an error (exit 1).
pub async fn run(nats_url: &str, args: CmdArgs) -> Result<(), CliError> {
    let subject = normalize_subject(&args.subject)?;
    let body = read_body(&args.json)?;
    let client = crate::connect(nats_url).await?;
    let command_id = args.command_id.unwrap_or_else(Uuid::new_v4);
    let reply = send_command(
        &client,
        &subject,
        body,
        args.token.as_ref(),
        command_id,
        SendOptions {
            timeout: args.timeout,
            attempts: args.attempts,
        },
    )
    .await?;
    let pretty =
        serde_json::to_string_pretty(&reply.raw).map_err(|e| CliError::Nats(e.to_string()))?;
    crate::output::line(&pretty)?;
    match reply.reply.into_result() {
        Ok(_) => Ok(()),
        Err(error) => Err(CliError::Rejected(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_may_omit_the_prefix() {
        let tenant = Uuid::new_v4();
        assert_eq!(
            normalize_subject(&format!("{tenant}.task.create")).ok(),
            Some(format!("talkwai.cmd.{tenant}.task.create"))
        );
        assert_eq!(
            normalize_subject("talkwai.cmd.platform.tenant.create").ok(),
            Some("talkwai.cmd.platform.tenant.create".to_owned())
        );
        assert!(matches!(
            normalize_subject("talkwai.cmd.acme.task.create"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            normalize_subject("task.create"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(read_body(r#"{"id": "x"}"#).is_ok());
        assert!(matches!(read_body("[1]"), Err(CliError::Usage(_))));
        assert!(matches!(read_body("{nope"), Err(CliError::Usage(_))));
    }
}
