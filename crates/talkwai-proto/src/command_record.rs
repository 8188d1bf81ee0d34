//! Command records: the log's memory of which command a command id names.
//!
//! A `Talkwai-Command-Id` names one command for ever. Every command the command service carries
//! out appends, in the same atomic batch as its events, one record on
//! `talkwai.evt.<scope>.guard.command.<command id>` expecting that subject to be empty. The
//! record holds the command's **fingerprint** (SHA-256 of the command subject and the
//! canonical JSON of its body). So:
//!
//! - the first command with an id lands its record; any later append with the same id fails
//!   its expectation, whichever aggregate it targets, on any instance, at any time;
//! - a resend with the same fingerprint is the same command: its outcome is read back from the
//!   log (the target's history, or the record itself for a command that changed nothing);
//! - another fingerprint is another command: refused with `command_id_reused`.
//!
//! The record is a guard-kind subject (`guard.command`), so every consumer that skips guards
//! (projections, rooms) skips it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::subject::{ROOT, Scope};

/// The event type of a command record.
pub const RECORD_TYPE: &str = "command.recorded";
/// The current version of the record's data.
pub const RECORD_VERSION: u32 = 1;
/// The guard kind token of command records in subjects.
pub const GUARD_KIND: &str = "command";

/// The subject of the record of `command_id` within `scope`.
pub fn subject(scope: Scope, command_id: Uuid) -> String {
    format!(
        "{ROOT}.evt.{scope}.guard.{GUARD_KIND}.{}",
        command_id.simple()
    )
}

/// The fingerprint of a command: hex SHA-256 of its subject and the canonical JSON of its body
/// (keys sorted, no insignificant whitespace), so a resend that re-serializes the same body
/// matches. A body that is not JSON is hashed as it is.
pub fn fingerprint(command_subject: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(command_subject.as_bytes());
    hasher.update([0]);
    match serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
    {
        Some(canonical) => hasher.update(&canonical),
        None => hasher.update(body),
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a command record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRecord {
    /// The command subject it arrived on (`talkwai.cmd.<scope>.<aggregate>.<action>`).
    pub command: String,
    /// [`fingerprint`] of the command.
    pub fingerprint: String,
    /// The event subject of the aggregate it targeted.
    pub target: String,
    /// How many events it appended (0: it changed nothing).
    pub events: u32,
    /// The aggregate's version after it.
    pub version: u64,
    /// For a command that appended nothing: the target subject's last sequence when it was
    /// decided (the reply's `seq`). Otherwise the reply's `seq` is its last event's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The wire body of a record, like an event's: `{"type": "command.recorded", "version": 1,
/// "data": {...}}`, on `talkwai.evt.<scope>.guard.command.<command id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRecorded {
    /// Always `command.recorded`.
    #[serde(rename = "type")]
    #[schemars(extend("const" = "command.recorded"))]
    pub kind: String,
    /// Always 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// The record.
    pub data: CommandRecord,
}

/// A stored record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable command record: {0}")]
pub struct RecordError(String);

impl CommandRecord {
    /// The wire body.
    pub fn encode(&self) -> Vec<u8> {
        let envelope = CommandRecorded {
            kind: RECORD_TYPE.to_owned(),
            version: RECORD_VERSION,
            data: self.clone(),
        };
        // A struct of strings and integers always serializes.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Reads a stored body.
    pub fn decode(body: &[u8]) -> Result<Self, RecordError> {
        let envelope: CommandRecorded =
            serde_json::from_slice(body).map_err(|e| RecordError(e.to_string()))?;
        if envelope.kind != RECORD_TYPE || envelope.version != RECORD_VERSION {
            return Err(RecordError(format!(
                "{} version {} is not {RECORD_TYPE} version {RECORD_VERSION}",
                envelope.kind, envelope.version
            )));
        }
        Ok(envelope.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_only() {
        let s = "talkwai.cmd.platform.user.create";
        let a = fingerprint(s, br#"{"id":"x","email":"a@b.c"}"#);
        assert_eq!(
            a,
            fingerprint(s, b"{ \"email\": \"a@b.c\",\n \"id\": \"x\" }")
        );
        assert_ne!(a, fingerprint(s, br#"{"id":"y","email":"a@b.c"}"#));
        assert_ne!(
            a,
            fingerprint(
                "talkwai.cmd.platform.user.update",
                br#"{"id":"x","email":"a@b.c"}"#
            )
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn records_round_trip_and_refuse_other_bodies() {
        let record = CommandRecord {
            command: "talkwai.cmd.platform.user.create".into(),
            fingerprint: "ab".repeat(32),
            target: "talkwai.evt.platform.user.00000000-0000-0000-0000-000000000001".into(),
            events: 0,
            version: 3,
            seq: Some(17),
        };
        assert_eq!(CommandRecord::decode(&record.encode()), Ok(record));
        assert!(
            CommandRecord::decode(br#"{"type":"guard.claimed","version":1,"data":{}}"#).is_err()
        );
        assert!(CommandRecord::decode(b"not json").is_err());
    }

    #[test]
    fn records_are_a_channel_of_the_contract_and_match_its_schema() {
        let tenant = Scope::Tenant(talkwai_domain::ids::TenantId(Uuid::from_u128(3)));
        assert_eq!(
            crate::asyncapi::channel_for(&subject(tenant, Uuid::from_u128(9))),
            Some("evt.command")
        );
        let schema = crate::schema::catalog()
            .into_iter()
            .find(|e| e.name == "CommandRecorded")
            .expect("in the catalog")
            .schema;
        let validator = jsonschema::validator_for(&schema).expect("a schema");
        let record = CommandRecord {
            command: "talkwai.cmd.platform.user.create".into(),
            fingerprint: "ab".repeat(32),
            target: "talkwai.evt.platform.user.x".into(),
            events: 1,
            version: 1,
            seq: None,
        };
        let body: serde_json::Value = serde_json::from_slice(&record.encode()).expect("json");
        assert!(validator.is_valid(&body), "{body}");
        let mut wrong = body.clone();
        wrong["type"] = "guard.claimed".into();
        assert!(!validator.is_valid(&wrong));
    }

    #[test]
    fn the_subject_is_a_guard_subject_of_its_scope() {
        let id = Uuid::from_u128(7);
        let subject = subject(Scope::Platform, id);
        assert_eq!(
            crate::EventSubject::parse(&subject),
            Ok(crate::EventSubject::Guard {
                scope: Scope::Platform,
                kind: GUARD_KIND.to_owned(),
                hash: id.simple().to_string(),
            })
        );
    }
}
