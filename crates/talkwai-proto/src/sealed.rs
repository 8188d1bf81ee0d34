//! Sealed (encrypted) personal fields of an event body: the wire shape of a sealed value, which
//! fields of which event type are personal, and the two walks over an event's data that seal
//! them before an append and open them after a read.
//!
//! A sealed value replaces a string in the event's `data`:
//! `{"enc": "v1", "key": "<data key id>", "n": "<base64 nonce>", "c": "<base64 ciphertext>"}`.
//! The key id is a UUID naming the data subject's key in the key store, looked up under the
//! scope of the event's subject (a tenant, or the platform for `$users` and admins); the event
//! also carries it clear in the `Talkwai-Key` header, so a reader can fetch every key a batch
//! needs before decoding it. The AEAD's associated data binds a ciphertext to its key, event
//! type and field path ([`aad`]), so a sealed value moved to another field does not open.
//!
//! This module does no cryptography: sealing and opening go through the [`Sealer`] and
//! [`Opener`] traits (implemented by `talkwai-keys`), so the contract stays free of keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::subject::Scope;

/// The format tag of a sealed value.
pub const SEALED_V1: &str = "v1";

/// A sealed personal value as it is stored in an event body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The format, `v1` (XChaCha20-Poly1305).
    pub enc: String,
    /// The data key's id.
    pub key: Uuid,
    /// The nonce, base64 (standard, padded).
    pub n: String,
    /// The ciphertext with its tag, base64 (standard, padded).
    pub c: String,
}

/// The personal fields of an event type (paths into its `data`, `.` between levels). Ids,
/// enums, timestamps and links are not personal and stay clear.
pub fn personal_fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "member.created" | "member.updated" | "admin.created" | "admin.updated" => {
            &["firstName", "lastName", "email", "phone"]
        }
        "user.created" | "user.updated" => &["email"],
        "task.created" | "task.updated" => &["fromAddress", "toAddress", "subject", "content"],
        "task.completed" | "task.failed" => &["outcome.summary"],
        _ => &[],
    }
}

/// The value an erased personal field takes for the domain's deciders and folds when the
/// event's type requires one (`email`s and addresses a reserved `.invalid` address, text the
/// word `erased`, a phone none): the state stays well-formed and no decision ever needs the erased value.
/// What readers show is `null` with the field named in the `erased` list, never this.
pub fn placeholder(path: &str) -> Value {
    match path {
        "email" | "fromAddress" | "toAddress" => Value::String(ERASED_ADDRESS.to_owned()),
        // Optional wherever it appears.
        "phone" => Value::Null,
        _ => Value::String("erased".to_owned()),
    }
}

/// The address an erased email or task address reads as inside the domain.
pub const ERASED_ADDRESS: &str = "erased@erased.invalid";

/// Sets every erased path of `data` to its [`placeholder`].
pub fn fill_placeholders(data: &mut Value, erased: &[&str]) {
    for path in erased {
        if let Some(value) = field_mut(data, path) {
            *value = placeholder(path);
        }
    }
}

/// The events that erase one data subject's personal data (its key destroyed). Such an event
/// names the destroyed key in its `Talkwai-Key` header, so a reader forgets it.
pub const SUBJECT_ERASURES: [&str; 4] = [
    "member.erased",
    "admin.erased",
    "user.erased",
    "task.contentErased",
];

/// Whether an event of this type erases its subject's personal data.
pub fn erases_subject(event_type: &str) -> bool {
    SUBJECT_ERASURES.contains(&event_type)
}

/// Whether events of this type can carry personal data (and so a key).
pub fn is_personal(event_type: &str) -> bool {
    !personal_fields(event_type).is_empty()
}

/// The associated data of a sealed field: its key, event type and path.
pub fn aad(key: Uuid, event_type: &str, path: &str) -> String {
    format!("talkwai/{SEALED_V1}/{key}/{event_type}/{path}")
}

/// Seals plain text under one data key.
pub trait Sealer {
    /// The data key's id.
    fn key_id(&self) -> Uuid;
    /// Encrypts `plain` with `aad` bound to it.
    fn seal(&self, aad: &str, plain: &str) -> Sealed;
}

/// What opening a sealed value gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The plain text.
    Plain(String),
    /// The key was destroyed: the value is gone for good.
    Erased,
}

/// Why a sealed value could not be opened (not an erasure: a fault to report or retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The reader was given no key for it (a reader without a key store, or a key not fetched).
    #[error("no key {key} in hand for a sealed field")]
    NoKey {
        /// The key's id.
        key: Uuid,
    },
    /// The ciphertext does not open under its key (tampered, or moved to another field).
    #[error("sealed field {path} does not open under key {key}")]
    Corrupt {
        /// The key's id.
        key: Uuid,
        /// The field's path.
        path: String,
    },
    /// A personal field holds neither text nor a sealed value.
    #[error("personal field {path} is neither text nor sealed")]
    Malformed {
        /// The field's path.
        path: String,
    },
}

/// Opens sealed values with the keys a reader holds.
pub trait Opener {
    /// Opens `sealed`, a field of an event of `scope`, with `aad` (see [`aad`]).
    fn open(&self, scope: Scope, sealed: &Sealed, aad: &str) -> Result<Opened, OpenError>;
}

/// An opener holding no key: a sealed field is [`OpenError::NoKey`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeys;

impl Opener for NoKeys {
    fn open(&self, _scope: Scope, sealed: &Sealed, _aad: &str) -> Result<Opened, OpenError> {
        Err(OpenError::NoKey { key: sealed.key })
    }
}

fn field_mut<'a>(data: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut at = data;
    for part in path.split('.') {
        at = at.as_object_mut()?.get_mut(part)?;
    }
    Some(at)
}

/// Seals every personal string field of `data` (an event of `event_type`) with `sealer`.
/// Returns whether any field was sealed. Absent and `null` fields stay as they are.
pub fn seal_data(event_type: &str, data: &mut Value, sealer: &dyn Sealer) -> bool {
    let mut sealed_any = false;
    for path in personal_fields(event_type) {
        if let Some(value) = field_mut(data, path)
            && let Value::String(plain) = value
        {
            let sealed = sealer.seal(&aad(sealer.key_id(), event_type, path), plain);
            *value = serde_json::to_value(sealed).unwrap_or(Value::Null);
            sealed_any = true;
        }
    }
    sealed_any
}

/// Whether `data` (an event of `event_type`) holds a personal field as text: in a stored body
/// with no `Talkwai-Key`, a value written in clear.
pub fn has_personal_text(event_type: &str, data: &Value) -> bool {
    personal_fields(event_type).iter().any(|path| {
        let mut at = data;
        for part in path.split('.') {
            match at.as_object().and_then(|o| o.get(part)) {
                Some(next) => at = next,
                None => return false,
            }
        }
        at.is_string()
    })
}

/// The key id of the first sealed field of `data`, if any.
pub fn sealed_key(event_type: &str, data: &Value) -> Option<Uuid> {
    personal_fields(event_type).iter().find_map(|path| {
        let mut at = data;
        for part in path.split('.') {
            at = at.as_object()?.get(part)?;
        }
        Sealed::deserialize(at).ok().map(|s| s.key)
    })
}

/// Opens every sealed personal field of `data` (an event of `event_type` on a subject of
/// `scope`) in place. A field whose key was destroyed becomes `null`; the returned paths name
/// them (empty: nothing was erased). Plain text (events written before sealing, or by a writer
/// without keys) is left as it is.
pub fn open_data(
    event_type: &str,
    scope: Scope,
    data: &mut Value,
    opener: &dyn Opener,
) -> Result<Vec<&'static str>, OpenError> {
    let mut erased = Vec::new();
    for path in personal_fields(event_type) {
        let Some(value) = field_mut(data, path) else {
            continue;
        };
        match value {
            Value::Null | Value::String(_) => {}
            Value::Object(_) => {
                let sealed = Sealed::deserialize(&*value).map_err(|_| OpenError::Malformed {
                    path: (*path).to_owned(),
                })?;
                match opener.open(scope, &sealed, &aad(sealed.key, event_type, path))? {
                    Opened::Plain(plain) => *value = Value::String(plain),
                    Opened::Erased => {
                        *value = Value::Null;
                        erased.push(*path);
                    }
                }
            }
            _ => {
                return Err(OpenError::Malformed {
                    path: (*path).to_owned(),
                });
            }
        }
    }
    Ok(erased)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reversible stand-in for a cipher: the "ciphertext" is the text and its aad.
    struct Mirror(Uuid);

    impl Sealer for Mirror {
        fn key_id(&self) -> Uuid {
            self.0
        }
        fn seal(&self, aad: &str, plain: &str) -> Sealed {
            Sealed {
                enc: SEALED_V1.into(),
                key: self.0,
                n: aad.into(),
                c: plain.chars().rev().collect(),
            }
        }
    }

    impl Opener for Mirror {
        fn open(&self, _: Scope, sealed: &Sealed, aad: &str) -> Result<Opened, OpenError> {
            if sealed.key != self.0 {
                return Ok(Opened::Erased);
            }
            if sealed.n != aad {
                return Err(OpenError::Corrupt {
                    key: sealed.key,
                    path: aad.into(),
                });
            }
            Ok(Opened::Plain(sealed.c.chars().rev().collect()))
        }
    }

    #[test]
    fn seals_only_personal_strings_and_opens_them_back() {
        let key = Mirror(Uuid::from_u128(7));
        let plain = serde_json::json!({
            "at": 1, "email": "a@b.c", "firstName": "Ann", "phone": null, "role": "owner",
            "outcome": {"summary": "done", "durationSecs": 3.0}
        });
        let mut data = plain.clone();
        assert!(seal_data("member.created", &mut data, &key));
        assert_eq!(data["role"], "owner");
        assert_eq!(data["phone"], Value::Null);
        assert!(data["email"].is_object());
        assert_eq!(sealed_key("member.created", &data), Some(key.0));
        let erased = open_data("member.created", Scope::Platform, &mut data, &key).expect("opens");
        assert!(erased.is_empty());
        assert_eq!(data, plain);

        let mut task = serde_json::json!({"at": 1, "outcome": {"summary": "done"}});
        assert!(seal_data("task.completed", &mut task, &key));
        assert!(task["outcome"]["summary"].is_object());
        assert!(!seal_data("task.started", &mut task, &key));
    }

    #[test]
    fn a_destroyed_key_reads_as_null_and_is_named() {
        let mut data = serde_json::json!({"email": "a@b.c"});
        seal_data("user.created", &mut data, &Mirror(Uuid::from_u128(1)));
        let erased = open_data(
            "user.created",
            Scope::Platform,
            &mut data,
            &Mirror(Uuid::from_u128(2)),
        )
        .expect("erased is not an error");
        assert_eq!(erased, vec!["email"]);
        assert_eq!(data["email"], Value::Null);
    }

    #[test]
    fn a_sealed_value_moved_to_another_field_does_not_open() {
        let key = Mirror(Uuid::from_u128(1));
        let mut data = serde_json::json!({"firstName": "Ann", "lastName": "Lee"});
        seal_data("member.created", &mut data, &key);
        let first = data["firstName"].clone();
        data["lastName"] = first;
        let e = open_data("member.created", Scope::Platform, &mut data, &key).expect_err("moved");
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn without_keys_a_sealed_field_is_an_error_and_garbage_is_malformed() {
        let mut data = serde_json::json!({"email": "a@b.c"});
        seal_data("user.created", &mut data, &Mirror(Uuid::from_u128(1)));
        let e = open_data("user.created", Scope::Platform, &mut data, &NoKeys).expect_err("no key");
        assert!(matches!(e, OpenError::NoKey { .. }));
        let mut bad = serde_json::json!({"email": 5});
        let e = open_data("user.created", Scope::Platform, &mut bad, &NoKeys).expect_err("bad");
        assert!(matches!(e, OpenError::Malformed { .. }));
    }
}
