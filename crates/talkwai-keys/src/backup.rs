//! Backups of the key bucket: its entries as stored (wrapped, so a backup is useless without
//! the master key), read and restored without a master key.
//!
//! A restore never replaces a key: an entry that is there with the same key is left as it is
//! (a restore is idempotent), one that holds a different key with the same name is refused
//! ([`KeyError::Conflict`]), and one that was destroyed here (its tombstone, or its empty slot
//! in a block, written by [`crate::KeyStore::destroy`]) stays destroyed: a backup taken before
//! an erasure does not bring the subject's key back. A block is the same as the one here when
//! every slot both hold is the same key; the one here is kept as it is.

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use talkwai_proto::Scope;

use crate::error::KeyError;
use crate::store::{KeyStoreConfig, StoredBlock, StoredTenant, bucket, nats, scope_token};

/// Entries read or restored at once.
const IN_FLIGHT: usize = 64;

/// One key of a backup: a bucket entry's name and its stored (wrapped) value in standard
/// base64. The line format of `talkwai keys export`, and of the key lines of `talkwai events
/// export` (`{"key": <this>}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyLine {
    /// The bucket entry: `tenant.<scope>`, `block.<scope>.<uuid>` (a block of data keys) or
    /// `data.<scope>.<uuid>` (a data key written alone, before blocks).
    pub name: String,
    /// Its stored value, base64.
    pub value: String,
}

impl KeyLine {
    /// The line of one stored entry.
    pub fn new(name: String, value: &[u8]) -> Self {
        Self {
            name,
            value: STANDARD.encode(value),
        }
    }

    /// The entry's name and stored bytes (a value that is not base64 is a [`KeyError::BadKey`]).
    pub fn entry(&self) -> Result<(String, Bytes), KeyError> {
        let value = STANDARD.decode(&self.value).map_err(|e| KeyError::BadKey {
            message: format!("key {}: value is not base64: {e}", self.name),
        })?;
        if !KINDS.iter().any(|kind| self.name.starts_with(kind)) {
            return Err(KeyError::BadKey {
                message: format!(
                    "{:?} is not a key name (tenant.*, block.* or data.*)",
                    self.name
                ),
            });
        }
        Ok((self.name.clone(), value.into()))
    }
}

/// The prefixes of the bucket's entries.
const KINDS: [&str; 3] = ["tenant.", "block.", "data."];

/// Whether the bucket entry `name` belongs to `scope` (`None`: every scope).
fn in_scope(name: &str, scope: Option<Scope>) -> bool {
    let Some(scope) = scope else {
        return true;
    };
    let token = scope_token(scope);
    name.strip_prefix("tenant.") == Some(token.as_str())
        || ["block.", "data."].iter().any(|kind| {
            name.strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix(token.as_str()))
                .is_some_and(|rest| rest.starts_with('.'))
        })
}

/// Every live entry of the key bucket `bucket_name` (of `scope` only, when given), as stored,
/// sorted by name; empty when the bucket does not exist. Needs no master key.
pub async fn entries(
    js: &jetstream::Context,
    bucket_name: &str,
    scope: Option<Scope>,
) -> Result<Vec<(String, Bytes)>, KeyError> {
    let stream = format!("KV_{bucket_name}");
    match js.get_stream(&stream).await {
        Ok(_) => {}
        Err(e) => {
            if let jetstream::context::GetStreamErrorKind::JetStream(api) = e.kind()
                && api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            {
                return Ok(Vec::new());
            }
            return Err(nats("key bucket", e));
        }
    }
    let kv = js
        .get_key_value(bucket_name)
        .await
        .map_err(|e| nats("key bucket", e))?;
    entries_of(&kv, scope).await
}

/// Every live entry of `kv` (of `scope` only, when given), sorted by name.
pub(crate) async fn entries_of(
    kv: &kv::Store,
    scope: Option<Scope>,
) -> Result<Vec<(String, Bytes)>, KeyError> {
    let mut names: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| nats("list keys", e))?
        .try_filter(|name| futures::future::ready(in_scope(name, scope)))
        .try_collect()
        .await
        .map_err(|e| nats("list keys", e))?;
    names.sort();
    let read: Vec<Option<(String, Bytes)>> = futures::stream::iter(names)
        .map(|name| async move {
            kv.get(&name)
                .await
                .map(|value| value.map(|v| (name, v)))
                .map_err(|e| nats("read key", e))
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    // An entry destroyed between the listing and the read is left out.
    Ok(read.into_iter().flatten().collect())
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries written.
    pub written: usize,
    /// Entries that were there already with the same key (left as they are).
    pub present: usize,
    /// Entries destroyed here (a tombstone): not brought back.
    pub destroyed: usize,
}

/// What happened to one entry.
enum Outcome {
    Written,
    Present,
    Destroyed,
}

/// Restores `entries` (as [`entries`] read them) into the key bucket of `config`, created
/// when missing with `config.replicas`. Refuses an entry whose name holds a different key
/// ([`KeyError::Conflict`]; the entries before it may be written); needs no master key.
pub async fn restore(
    js: &jetstream::Context,
    config: &KeyStoreConfig,
    entries: Vec<(String, Bytes)>,
) -> Result<Restored, KeyError> {
    let (kv, _) = bucket(js, config).await?;
    restore_into(&kv, entries).await
}

/// [`restore`] into an open bucket.
pub(crate) async fn restore_into(
    kv: &kv::Store,
    entries: Vec<(String, Bytes)>,
) -> Result<Restored, KeyError> {
    let outcomes: Vec<Outcome> = futures::stream::iter(entries)
        .map(|(name, value)| restore_one(kv, name, value))
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut restored = Restored::default();
    for outcome in outcomes {
        match outcome {
            Outcome::Written => restored.written += 1,
            Outcome::Present => restored.present += 1,
            Outcome::Destroyed => restored.destroyed += 1,
        }
    }
    Ok(restored)
}

async fn restore_one(kv: &kv::Store, name: String, value: Bytes) -> Result<Outcome, KeyError> {
    // Twice at most: a racing writer between the look and the create is looked at again.
    for _ in 0..2 {
        match kv.entry(&name).await.map_err(|e| nats("read key", e))? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                return match same_key(&name, &entry.value, &value) {
                    Same::Yes => Ok(Outcome::Present),
                    Same::DestroyedHere => Ok(Outcome::Destroyed),
                    Same::No => Err(KeyError::Conflict { name }),
                };
            }
            Some(_) => return Ok(Outcome::Destroyed),
            None => match kv.create(&name, value.clone()).await {
                Ok(_) => return Ok(Outcome::Written),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(nats("restore key", e)),
            },
        }
    }
    Err(nats(
        "restore key",
        format!("{name} changes while restored"),
    ))
}

/// How a restored value of an entry compares with the one stored.
#[derive(Debug, PartialEq, Eq)]
enum Same {
    /// The same key(s).
    Yes,
    /// A block whose keys are the same where both hold one, some destroyed here.
    DestroyedHere,
    /// A different key under the same name.
    No,
}

/// Whether two stored values of `name` hold the same key: the same bytes; for a tenant key,
/// the same key id (a master-key rotation re-wraps a tenant key under the same id); for a
/// block, the same wrapping tenant key and the same key in every slot both hold.
fn same_key(name: &str, stored: &[u8], restored: &[u8]) -> Same {
    if stored == restored {
        return Same::Yes;
    }
    if name.starts_with("tenant.") {
        let id = |bytes: &[u8]| {
            serde_json::from_slice::<StoredTenant>(bytes)
                .ok()
                .map(|t| t.id)
        };
        return if id(stored).is_some_and(|a| id(restored) == Some(a)) {
            Same::Yes
        } else {
            Same::No
        };
    }
    if !name.starts_with("block.") {
        return Same::No;
    }
    let (Ok(here), Ok(there)) = (
        serde_json::from_slice::<StoredBlock>(stored),
        serde_json::from_slice::<StoredBlock>(restored),
    ) else {
        return Same::No;
    };
    if here.wrap != there.wrap || here.keys.len() != there.keys.len() {
        return Same::No;
    }
    let mut same = Same::Yes;
    for (a, b) in here.keys.iter().zip(&there.keys) {
        match (a, b) {
            (Some(a), Some(b)) if a != b => return Same::No,
            (None, Some(_)) => same = Same::DestroyedHere,
            _ => {}
        }
    }
    same
}

#[cfg(test)]
mod tests {
    use super::*;
    use talkwai_domain::ids::TenantId;
    use uuid::Uuid;

    #[test]
    fn scopes_select_their_entries_only() {
        let t = Uuid::new_v4();
        let other = Uuid::new_v4();
        let scope = Some(Scope::Tenant(TenantId(t)));
        assert!(in_scope(&format!("tenant.{t}"), scope));
        assert!(in_scope(&format!("data.{t}.{}", Uuid::new_v4()), scope));
        assert!(!in_scope(&format!("tenant.{other}"), scope));
        assert!(!in_scope(
            &format!("data.{other}.{}", Uuid::new_v4()),
            scope
        ));
        assert!(!in_scope("tenant.platform", scope));
        assert!(in_scope(&format!("block.{t}.{}", Uuid::new_v4()), scope));
        assert!(!in_scope(
            &format!("block.{other}.{}", Uuid::new_v4()),
            scope
        ));
        assert!(in_scope("data.platform.x", Some(Scope::Platform)));
        assert!(!in_scope("data.platformx.y", Some(Scope::Platform)));
        assert!(in_scope("anything", None));
    }

    #[test]
    fn lines_round_trip_and_reject_what_is_not_a_key() {
        let line = KeyLine::new("tenant.platform".into(), b"{\"id\":1}");
        assert_eq!(
            line.entry().expect("a key line"),
            (
                "tenant.platform".to_owned(),
                Bytes::from_static(b"{\"id\":1}")
            )
        );
        let bad = KeyLine {
            name: "tenant.platform".into(),
            value: "not base64!".into(),
        };
        assert!(matches!(bad.entry(), Err(KeyError::BadKey { .. })));
        let stray = KeyLine::new("other.thing".into(), b"x");
        assert!(matches!(stray.entry(), Err(KeyError::BadKey { .. })));
    }

    #[test]
    fn a_rewrapped_tenant_key_is_the_same_key() {
        let a = br#"{"id":"0190a0a0-0000-7000-8000-000000000001","wrapped":{"v":1,"wrap":"m1","n":"AA==","c":"AA=="}}"#;
        let b = br#"{"id":"0190a0a0-0000-7000-8000-000000000001","wrapped":{"v":1,"wrap":"m2","n":"AQ==","c":"AQ=="}}"#;
        let c = br#"{"id":"0190a0a0-0000-7000-8000-000000000002","wrapped":{"v":1,"wrap":"m1","n":"AA==","c":"AA=="}}"#;
        assert_eq!(same_key("tenant.platform", a, b), Same::Yes);
        assert_eq!(same_key("tenant.platform", a, c), Same::No);
        assert_eq!(same_key("data.platform.x", b"1", b"2"), Same::No);
        assert_eq!(same_key("data.platform.x", b"1", b"1"), Same::Yes);
    }

    #[test]
    fn a_block_is_the_same_where_both_hold_a_key_and_destroyed_slots_stay_destroyed() {
        let block = |wrap: &str, keys: &[Option<&str>]| {
            serde_json::to_vec(&StoredBlock {
                wrap: wrap.to_owned(),
                keys: keys.iter().map(|k| k.map(str::to_owned)).collect(),
            })
            .expect("json")
        };
        let name = "block.platform.x";
        let whole = block("t1", &[Some("a.1"), Some("b.2")]);
        let one_gone = block("t1", &[Some("a.1"), None]);
        assert_eq!(same_key(name, &whole, &whole), Same::Yes);
        // A backup taken before the destroy: the slot destroyed here stays destroyed.
        assert_eq!(same_key(name, &one_gone, &whole), Same::DestroyedHere);
        // A backup taken after it, restored where the key is still there: nothing changes.
        assert_eq!(same_key(name, &whole, &one_gone), Same::Yes);
        // A different key in a slot, another tenant key, another size: refused.
        assert_eq!(
            same_key(name, &whole, &block("t1", &[Some("a.1"), Some("c.3")])),
            Same::No
        );
        assert_eq!(
            same_key(name, &whole, &block("t2", &[Some("a.1"), Some("b.2")])),
            Same::No
        );
        assert_eq!(
            same_key(name, &whole, &block("t1", &[Some("a.1")])),
            Same::No
        );
        assert_eq!(same_key(name, &whole, b"not json"), Same::No);
    }
}
