//! Fences in the log: how a command-service instance that lost a partition while paused is
//! kept from writing, by the server itself.
//!
//! Each instance that decides from memory has a **fence subject**,
//! `talkwai.evt.platform.guard.writer-fence.<instance>`. Every atomic batch it writes for
//! commands decided under a partition lease ends with a *mark* there, expected at the sequence
//! of its previous mark. An instance taking a partition over first reads the partition's
//! **owner record** (`talkwai.evt.platform.guard.partition-owner.<count>-<index>`, the last
//! instance that took it), appends a *bump* on that instance's fence subject (unless the record
//! says it gave the partition back, after its last write there), then writes its own owner
//! record. From the bump on, every batch the previous owner still sends fails as a
//! whole (its mark's expectation is stale), even bytes that sat in its connection's buffer
//! through a pause. Both are guard-kind subjects, so every consumer that skips guards skips
//! them. Fence messages' bodies are [`WriterFence`]s, owner records' [`PartitionOwner`]s.

use serde::{Deserialize, Serialize};

use crate::subject::ROOT;

/// The event type of fence messages.
pub const FENCE_TYPE: &str = "writer.fence";
/// The current version of their data.
pub const FENCE_VERSION: u32 = 1;
/// The guard kind token of writer fences.
pub const FENCE_KIND: &str = "writer-fence";
/// The guard kind token of partition owner records.
pub const OWNER_KIND: &str = "partition-owner";

/// The fence subject of `instance` (an instance id: letters, digits, `-`, `_`).
pub fn fence_subject(instance: &str) -> String {
    format!("{ROOT}.evt.platform.guard.{FENCE_KIND}.{instance}")
}

/// The owner record subject of partition `index` of `count`.
pub fn owner_subject(index: u32, count: u32) -> String {
    format!("{ROOT}.evt.platform.guard.{OWNER_KIND}.{count}-{index}")
}

/// The `Talkwai-*` headers of fence messages and owner records (`type`: [`FENCE_TYPE`] or
/// [`OWNER_TYPE`]): type, version and the platform scope, no command.
pub fn headers(event_type: &str) -> Vec<(&'static str, String)> {
    crate::EventMeta::typed(event_type, FENCE_VERSION, crate::Scope::Platform).to_headers()
}

/// Whether `subject` is a fence or an owner record (messages of no command).
pub fn is_fence_subject(subject: &str) -> bool {
    let prefix = format!("{ROOT}.evt.platform.guard.");
    subject.strip_prefix(&prefix).is_some_and(|rest| {
        rest.starts_with(&format!("{FENCE_KIND}.")) || rest.starts_with(&format!("{OWNER_KIND}."))
    })
}

/// What a fence message says: nothing for a mark; who took which partition for a bump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fence {
    /// The instance that took the partition (bumps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The partition, `<index>/<count>` (bumps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

/// The wire body of a fence message: `{"type": "writer.fence", "version": 1, "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriterFence {
    /// Always `writer.fence`.
    #[serde(rename = "type")]
    #[schemars(extend("const" = "writer.fence"))]
    pub kind: String,
    /// Always 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// What it says.
    pub data: Fence,
}

/// The event type of owner records.
pub const OWNER_TYPE: &str = "partition.owned";

/// Who took a partition over last, and whether it gave it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    /// The instance.
    pub by: String,
    /// The partition, `<index>/<count>`.
    pub partition: String,
    /// It gave the partition back after its last write there (so the next owner need not
    /// fence it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// The wire body of an owner record: `{"type": "partition.owned", "version": 1, "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionOwner {
    /// Always `partition.owned`.
    #[serde(rename = "type")]
    #[schemars(extend("const" = "partition.owned"))]
    pub kind: String,
    /// Always 1.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Who took it.
    pub data: Owner,
}

impl Fence {
    /// A mark (says nothing).
    pub fn mark() -> Self {
        Self::default()
    }

    /// A bump: `by` took partition `index` of `count` from the fenced instance.
    pub fn bump(by: &str, index: u32, count: u32) -> Self {
        Self {
            by: Some(by.to_owned()),
            partition: Some(format!("{index}/{count}")),
        }
    }

    /// The wire body.
    pub fn encode(&self) -> Vec<u8> {
        let envelope = WriterFence {
            kind: FENCE_TYPE.to_owned(),
            version: FENCE_VERSION,
            data: self.clone(),
        };
        // Strings only: always serializes.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Reads a stored body; `None` when it is not a fence message.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let envelope: WriterFence = serde_json::from_slice(body).ok()?;
        (envelope.kind == FENCE_TYPE && envelope.version == FENCE_VERSION).then_some(envelope.data)
    }
}

impl Owner {
    /// `by` took partition `index` of `count`.
    pub fn new(by: &str, index: u32, count: u32) -> Self {
        Self {
            by: by.to_owned(),
            partition: format!("{index}/{count}"),
            released: false,
        }
    }

    /// `by` gave partition `index` of `count` back, after its last write there.
    pub fn released(by: &str, index: u32, count: u32) -> Self {
        Self {
            released: true,
            ..Self::new(by, index, count)
        }
    }

    /// The wire body.
    pub fn encode(&self) -> Vec<u8> {
        let envelope = PartitionOwner {
            kind: OWNER_TYPE.to_owned(),
            version: FENCE_VERSION,
            data: self.clone(),
        };
        // Strings only: always serializes.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Reads a stored body; `None` when it is not an owner record.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let envelope: PartitionOwner = serde_json::from_slice(body).ok()?;
        (envelope.kind == OWNER_TYPE && envelope.version == FENCE_VERSION).then_some(envelope.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_round_trip_and_live_under_guards() {
        let bump = Fence::bump("command-1-ab12cd34", 3, 64);
        assert_eq!(Fence::decode(&bump.encode()), Some(bump));
        let owner = Owner::new("command-1-ab12cd34", 3, 64);
        assert_eq!(Owner::decode(&owner.encode()), Some(owner.clone()));
        assert_eq!(Fence::decode(&owner.encode()), None);
        let released = Owner::released("command-1-ab12cd34", 3, 64);
        assert_eq!(Owner::decode(&released.encode()), Some(released));
        assert!(
            !String::from_utf8(owner.encode())
                .expect("utf-8")
                .contains("released")
        );
        assert_eq!(Fence::decode(&Fence::mark().encode()), Some(Fence::mark()));
        assert_eq!(
            String::from_utf8(Fence::mark().encode()).expect("utf-8"),
            r#"{"type":"writer.fence","version":1,"data":{}}"#
        );
        assert_eq!(
            Fence::decode(br#"{"type":"guard.claimed","version":1,"data":{}}"#),
            None
        );
        assert!(!is_fence_subject("talkwai.evt.platform.guard.command.ab"));
        for subject in [fence_subject("command-1-ab12cd34"), owner_subject(3, 64)] {
            assert!(is_fence_subject(&subject));
            assert!(matches!(
                crate::EventSubject::parse(&subject),
                Ok(crate::EventSubject::Guard { .. })
            ));
        }
    }
}
