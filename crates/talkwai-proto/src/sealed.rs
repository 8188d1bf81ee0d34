//! Sealed (encrypted) personal fields of an event body: the stored shape of sealed data, which
//! fields of which event type are personal, and the two walks over an event's data that seal
//! them before an append and open them after a read.
//!
//! Writers seal every personal field of an event together, as one value (`v2`): the fields are
//! taken out of the event's `data` and one member takes their place,
//! `"$sealed": {"enc": "v2", "key": "<data key id>", "p": [<paths>], "n": "<base64 nonce>",
//! "c": "<base64 ciphertext of the JSON array of their values, in the order of p>"}`. One AEAD,
//! one nonce and one tag per event instead of one per field keep a sealed event small and
//! cheap to write (issue 20's cost target). Events written before `v2` hold one sealed value per
//! field (`v1`): `{"enc": "v1", "key", "n", "c"}` in place of the string; readers open both.
//!
//! The key id is a UUID naming the data subject's key in the key store, looked up under the
//! scope of the event's subject (a tenant, or the platform for `$users` and admins); the event
//! also carries it clear in the `Talkwai-Key` header, so a reader can fetch every key a batch
//! needs before decoding it. The AEAD's associated data binds a ciphertext to its key and event
//! type (and for `v1` its field path: [`aad`], [`aad_v2`]), so a sealed value moved elsewhere
//! does not open.
//!
//! This module does no cryptography: sealing and opening go through the [`Sealer`] and
//! [`Opener`] traits (implemented by `talkwai-keys`), so the contract stays free of keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::subject::Scope;

/// The format tag of a sealed value holding one field (what writers wrote before `v2`).
pub const SEALED_V1: &str = "v1";
/// The format tag of the sealed value holding every personal field of an event.
pub const SEALED_V2: &str = "v2";
/// The member of an event's `data` holding its `v2` sealed value.
pub const SEALED_MEMBER: &str = "$sealed";

/// A sealed value as it is stored in an event body (XChaCha20-Poly1305).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The format: `v1` (one field, in its place) or `v2` (every field, in [`SEALED_MEMBER`]).
    pub enc: String,
    /// The data key's id.
    pub key: Uuid,
    /// `v2`: the paths of the sealed fields, in the order of the values in the ciphertext.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub p: Vec<String>,
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

/// The associated data of a `v1` sealed field: its key, event type and path.
pub fn aad(key: Uuid, event_type: &str, path: &str) -> String {
    format!("talkwai/{SEALED_V1}/{key}/{event_type}/{path}")
}

/// The associated data of an event's `v2` sealed value: its key and event type (the paths are
/// inside: the value is the whole set).
pub fn aad_v2(key: Uuid, event_type: &str) -> String {
    format!("talkwai/{SEALED_V2}/{key}/{event_type}")
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

/// The object holding the last part of `path` in `data`, and that part.
fn parent_mut<'a, 'p>(
    data: &'a mut Value,
    path: &'p str,
) -> Option<(&'a mut serde_json::Map<String, Value>, &'p str)> {
    let (parent, leaf) = match path.rsplit_once('.') {
        Some((parent, leaf)) => (field_mut(data, parent)?, leaf),
        None => (data, path),
    };
    Some((parent.as_object_mut()?, leaf))
}

/// Seals every personal string field of `data` (an event of `event_type`) with `sealer`, as
/// one `v2` value in [`SEALED_MEMBER`] (the fields leave `data`). Returns whether any field
/// was sealed. Absent and `null` fields stay as they are.
pub fn seal_data(event_type: &str, data: &mut Value, sealer: &dyn Sealer) -> bool {
    let mut paths = Vec::new();
    let mut values = Vec::new();
    for path in personal_fields(event_type) {
        if let Some((parent, leaf)) = parent_mut(data, path)
            && parent.get(leaf).is_some_and(Value::is_string)
            && let Some(value) = parent.remove(leaf)
        {
            paths.push((*path).to_owned());
            values.push(value);
        }
    }
    let Some(object) = data.as_object_mut().filter(|_| !paths.is_empty()) else {
        return false;
    };
    let plain = Value::Array(values).to_string();
    let mut sealed = sealer.seal(&aad_v2(sealer.key_id(), event_type), &plain);
    sealed.enc = SEALED_V2.to_owned();
    sealed.p = paths;
    object.insert(
        SEALED_MEMBER.to_owned(),
        serde_json::to_value(sealed).unwrap_or(Value::Null),
    );
    true
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

/// The key id of the sealed data of `data` (its `v2` value, or its first `v1` field), if any.
pub fn sealed_key(event_type: &str, data: &Value) -> Option<Uuid> {
    if let Some(sealed) = data.get(SEALED_MEMBER) {
        return Sealed::deserialize(sealed).ok().map(|s| s.key);
    }
    personal_fields(event_type).iter().find_map(|path| {
        let mut at = data;
        for part in path.split('.') {
            at = at.as_object()?.get(part)?;
        }
        Sealed::deserialize(at).ok().map(|s| s.key)
    })
}

/// Opens the `v2` sealed value of `data` (when it has one) in place: its fields go back where
/// they were, or become `null` (named in `erased`) when the key was destroyed.
fn open_v2(
    event_type: &str,
    scope: Scope,
    data: &mut Value,
    opener: &dyn Opener,
    erased: &mut Vec<&'static str>,
) -> Result<(), OpenError> {
    let malformed = || OpenError::Malformed {
        path: SEALED_MEMBER.to_owned(),
    };
    let Some(value) = data.as_object_mut().and_then(|o| o.remove(SEALED_MEMBER)) else {
        return Ok(());
    };
    let sealed = Sealed::deserialize(&value).map_err(|_| malformed())?;
    let fields = personal_fields(event_type);
    let paths: Vec<&'static str> = sealed
        .p
        .iter()
        .map(|p| fields.iter().find(|f| **f == p.as_str()).copied())
        .collect::<Option<_>>()
        .filter(|paths: &Vec<_>| sealed.enc == SEALED_V2 && !paths.is_empty())
        .ok_or_else(malformed)?;
    let values = match opener.open(scope, &sealed, &aad_v2(sealed.key, event_type))? {
        Opened::Plain(plain) => serde_json::from_str::<Vec<Value>>(&plain)
            .ok()
            .filter(|v| v.len() == paths.len())
            .ok_or_else(malformed)?,
        Opened::Erased => {
            erased.extend(&paths);
            vec![Value::Null; paths.len()]
        }
    };
    for (path, value) in paths.into_iter().zip(values) {
        let (parent, leaf) = parent_mut(data, path).ok_or_else(malformed)?;
        parent.insert(leaf.to_owned(), value);
    }
    Ok(())
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
    open_v2(event_type, scope, data, opener, &mut erased)?;
    // `v1`: one sealed value per field, in its place.
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
                p: Vec::new(),
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

    /// What a writer before `v2` stored: one `v1` value in place of each personal string.
    fn seal_v1(event_type: &str, data: &mut Value, key: &Mirror) {
        for path in personal_fields(event_type) {
            if let Some(value) = field_mut(data, path)
                && let Value::String(plain) = value
            {
                let sealed = key.seal(&aad(key.0, event_type, path), plain);
                *value = serde_json::to_value(sealed).expect("json");
            }
        }
    }

    #[test]
    fn seals_every_personal_string_as_one_value_and_opens_them_back() {
        let key = Mirror(Uuid::from_u128(7));
        let plain = serde_json::json!({
            "at": 1, "email": "a@b.c", "firstName": "Ann", "phone": null, "role": "owner",
            "outcome": {"summary": "done", "durationSecs": 3.0}
        });
        let mut data = plain.clone();
        assert!(seal_data("member.created", &mut data, &key));
        assert_eq!(data["role"], "owner");
        assert_eq!(data["phone"], Value::Null);
        assert!(data.get("email").is_none() && data.get("firstName").is_none());
        assert_eq!(data[SEALED_MEMBER]["enc"], SEALED_V2);
        assert_eq!(
            data[SEALED_MEMBER]["p"],
            serde_json::json!(["firstName", "email"])
        );
        assert_eq!(sealed_key("member.created", &data), Some(key.0));
        let erased = open_data("member.created", Scope::Platform, &mut data, &key).expect("opens");
        assert!(erased.is_empty());
        assert_eq!(data, plain);

        let done = serde_json::json!({"at": 1, "outcome": {"summary": "done"}});
        let mut task = done.clone();
        assert!(seal_data("task.completed", &mut task, &key));
        assert_eq!(task["outcome"], serde_json::json!({}));
        assert_eq!(
            task[SEALED_MEMBER]["p"],
            serde_json::json!(["outcome.summary"])
        );
        assert!(!seal_data("task.started", &mut task, &key));
        open_data("task.completed", Scope::Platform, &mut task, &key).expect("opens");
        assert_eq!(task, done);

        let mut nothing = serde_json::json!({"at": 1, "phone": null});
        assert!(!seal_data("member.updated", &mut nothing, &key));
        assert!(nothing.get(SEALED_MEMBER).is_none());
    }

    #[test]
    fn fields_sealed_one_by_one_before_v2_still_open() {
        let key = Mirror(Uuid::from_u128(7));
        let plain = serde_json::json!({"at": 1, "email": "a@b.c", "lastName": "Lee"});
        let mut data = plain.clone();
        seal_v1("member.created", &mut data, &key);
        assert_eq!(data["email"]["enc"], SEALED_V1);
        assert_eq!(sealed_key("member.created", &data), Some(key.0));
        let erased = open_data("member.created", Scope::Platform, &mut data, &key).expect("opens");
        assert!(erased.is_empty());
        assert_eq!(data, plain);

        let mut gone = plain.clone();
        seal_v1("member.created", &mut gone, &key);
        let erased = open_data(
            "member.created",
            Scope::Platform,
            &mut gone,
            &Mirror(Uuid::from_u128(8)),
        )
        .expect("erased is not an error");
        assert_eq!(erased, vec!["lastName", "email"]);
        assert_eq!(gone["email"], Value::Null);
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
        assert_eq!(data, serde_json::json!({"email": null}));
    }

    #[test]
    fn sealed_data_moved_to_another_field_or_event_type_does_not_open() {
        let key = Mirror(Uuid::from_u128(1));
        let mut data = serde_json::json!({"firstName": "Ann", "lastName": "Lee"});
        seal_v1("member.created", &mut data, &key);
        let first = data["firstName"].clone();
        data["lastName"] = first;
        let e = open_data("member.created", Scope::Platform, &mut data, &key).expect_err("moved");
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");

        let mut member = serde_json::json!({"firstName": "Ann", "lastName": "Lee"});
        seal_data("member.created", &mut member, &key);
        let e = open_data("admin.created", Scope::Platform, &mut member, &key).expect_err("moved");
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn without_keys_sealed_data_is_an_error_and_garbage_is_malformed() {
        let mut data = serde_json::json!({"email": "a@b.c"});
        seal_data("user.created", &mut data, &Mirror(Uuid::from_u128(1)));
        let e = open_data("user.created", Scope::Platform, &mut data, &NoKeys).expect_err("no key");
        assert!(matches!(e, OpenError::NoKey { .. }));
        let mut bad = serde_json::json!({"email": 5});
        let e = open_data("user.created", Scope::Platform, &mut bad, &NoKeys).expect_err("bad");
        assert!(matches!(e, OpenError::Malformed { .. }));
        // A path that is not a personal field of the type, or values that do not match.
        let key = Mirror(Uuid::from_u128(1));
        for (paths, plain) in [(vec!["role"], "[\"x\"]"), (vec!["email"], "[1, 2]")] {
            let sealed = Sealed {
                enc: SEALED_V2.into(),
                key: key.0,
                p: paths.into_iter().map(str::to_owned).collect(),
                n: aad_v2(key.0, "user.created"),
                c: plain.chars().rev().collect(),
            };
            let mut data = serde_json::json!({ SEALED_MEMBER: sealed });
            let e =
                open_data("user.created", Scope::Platform, &mut data, &key).expect_err("malformed");
            assert!(matches!(e, OpenError::Malformed { .. }), "{e:?}");
        }
    }
}
