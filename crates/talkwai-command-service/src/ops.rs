//! Operations: the command service's Prometheus metrics (recorded with the `metrics` macros;
//! served with `/livez` and `/readyz` by `talkwai_telemetry::ops::serve_ops`) and its readiness.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `talkwai_commands_total` | counter | `action` (`task.create`...), `outcome` (`accepted` or the error code) |
//! | `talkwai_command_duration_seconds` | histogram | `action` |
//! | `talkwai_command_append_seconds` | histogram | (one per append, group commit included) |
//! | `talkwai_command_conflicts_total` | counter | (a concurrent writer won; decided again) |
//! | `talkwai_command_append_unknown_total` | counter | (append outcome unknown; log re-read) |
//! | `talkwai_commands_in_flight` | gauge | |
//! | `talkwai_commands_unknown_total` | counter | (answered `unknown_command`: no endpoint serves the subject) |
//! | `talkwai_command_partitions_held` | gauge | (partitions whose commands this instance decides from memory) |
//! | `talkwai_command_heads_total` | counter | `from` (`memory`: known without a read; `log`: read) |
//! | `talkwai_commands_forwarded_total` | counter | `outcome` (`answered`, `unavailable`) (sent on to the partition's owner) |
//!
//! The group commit itself (`talkwai_append_group_commands`, `_messages`, `_splits_total`) is
//! measured by the event store's appender.

use std::time::Instant;

use talkwai_eventstore::{AppendAck, AppendError};
use talkwai_telemetry::ops::{Check, Readiness};

use crate::CommandService;
use crate::error::ServiceError;

/// `<aggregate>.<action>` of a command subject (`talkwai.cmd.<scope>.<aggregate>.<action>`),
/// or `invalid` when the subject has another shape. The endpoints only receive subjects of
/// known actions, so the label set stays bounded.
pub fn action_label(subject: &str) -> String {
    let mut tokens = subject.rsplitn(3, '.');
    match (tokens.next(), tokens.next(), tokens.next()) {
        (Some(action), Some(aggregate), Some(_)) => format!("{aggregate}.{action}"),
        _ => "invalid".to_owned(),
    }
}

/// Counts one answered command by action and outcome, and times it.
pub fn command_done<T>(subject: &str, result: &Result<T, ServiceError>, started: Instant) {
    let outcome = match result {
        Ok(_) => "accepted".to_owned(),
        Err(err) => err.to_body().code.to_string(),
    };
    command_outcome(subject, &outcome, started);
}

/// Counts one answered command by action and `outcome` (`accepted` or an error code), and
/// times it.
pub fn command_outcome(subject: &str, outcome: &str, started: Instant) {
    let action = action_label(subject);
    let outcome = outcome.to_owned();
    metrics::histogram!("talkwai_command_duration_seconds", "action" => action.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("talkwai_commands_total", "action" => action, "outcome" => outcome)
        .increment(1);
}

/// Times one append and counts conflicts and unknown outcomes.
pub fn append_done(result: &Result<AppendAck, AppendError>, started: Instant) {
    metrics::histogram!("talkwai_command_append_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Err(AppendError::Conflict(_)) => {
            metrics::counter!("talkwai_command_conflicts_total").increment(1);
        }
        Err(AppendError::Unknown(_)) => {
            metrics::counter!("talkwai_command_append_unknown_total").increment(1);
        }
        _ => {}
    }
}

/// Sets how many partitions this instance holds.
pub fn partitions_held(held: usize) {
    metrics::gauge!("talkwai_command_partitions_held").set(held as f64);
}

/// Counts the heads one attempt knew from memory and those it read.
pub fn heads(known: usize, read: usize) {
    if known > 0 {
        metrics::counter!("talkwai_command_heads_total", "from" => "memory")
            .increment(known as u64);
    }
    if read > 0 {
        metrics::counter!("talkwai_command_heads_total", "from" => "log").increment(read as u64);
    }
}

/// Counts one command sent on to its partition's owner.
pub fn forwarded(answered: bool) {
    let outcome = if answered { "answered" } else { "unavailable" };
    metrics::counter!("talkwai_commands_forwarded_total", "outcome" => outcome).increment(1);
}

/// Counts one request on a subject no command endpoint serves.
pub fn unknown_command() {
    metrics::counter!("talkwai_commands_unknown_total").increment(1);
}

/// Holds one command in the `talkwai_commands_in_flight` gauge while alive.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Counts a command in.
    pub fn enter() -> Self {
        metrics::gauge!("talkwai_commands_in_flight").increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("talkwai_commands_in_flight").decrement(1.0);
    }
}

impl CommandService {
    /// Ready when the NATS connection is up, JetStream answers and [`CommandService::run`] has
    /// every command endpoint subscribed (confirmed by a round trip through the server): before
    /// that `$SRV.PING` may answer while a command gets no responders.
    pub fn readiness(&self) -> Readiness {
        let serving = std::sync::Arc::clone(&self.serving);
        Readiness::new(move || {
            let serving = serving.load(std::sync::atomic::Ordering::Acquire);
            async move {
                vec![if serving {
                    Check::pass("endpoints")
                } else {
                    Check::fail("endpoints", "the command endpoints are not subscribed")
                }]
            }
        })
        .with_nats(self.client.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_subject() {
        assert_eq!(
            action_label("talkwai.cmd.platform.tenant.create"),
            "tenant.create"
        );
        assert_eq!(
            action_label("talkwai.cmd.0b6c.task.setMetadata"),
            "task.setMetadata"
        );
        assert_eq!(action_label("nonsense"), "invalid");
    }
}
