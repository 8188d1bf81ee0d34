//! The event message format, written once: the `Talkwai-*` headers every event, guard and
//! command-record message carries ([`EventMeta`]) and the decoding of a stored event
//! ([`decode_stored`]). The command service writes through it, the projector, the notifier and
//! the command service's own repository read through it, so the copies cannot drift.
//!
//! An event's schema version travels in the `Talkwai-Event-Version` header and in the body's
//! `version`; [`decode_stored`] is the one path from stored bytes to a current event: subject,
//! body, the header checked against the body, then `talkwai_domain::Event::decode`, which
//! upcasts any version ever written to the current one (`talkwai_domain::upcast`).
//!
//! No NATS types: headers go out as `(name, value)` pairs and come in through a getter, so any
//! header map (or a test's table) can carry them.

use std::fmt;

use talkwai_domain::{Actor, AggregateRef, DecodeError as EventDecodeError, Event, EventBody};
use uuid::Uuid;

use crate::headers;
use crate::sealed::{NoKeys, OpenError, Opener, fill_placeholders, open_data};
use crate::subject::{EventSubject, Scope, SubjectError};

/// Who caused an event, as written in `Talkwai-Actor`: `platform`, `member:<id>` or
/// `admin:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorRef {
    /// `platform`.
    Platform,
    /// `member:<id>`.
    Member(Uuid),
    /// `admin:<id>`.
    Admin(Uuid),
}

impl ActorRef {
    /// Parses `member:<id>`, `admin:<id>` or `platform`; anything else (a missing or unreadable
    /// header) is the platform.
    pub fn parse(header: Option<&str>) -> Self {
        let Some((kind, id)) = header.and_then(|h| h.split_once(':')) else {
            return Self::Platform;
        };
        match (kind, id.parse::<Uuid>()) {
            ("member", Ok(id)) => Self::Member(id),
            ("admin", Ok(id)) => Self::Admin(id),
            _ => Self::Platform,
        }
    }

    /// The member or admin id, `None` for the platform.
    pub fn user_id(self) -> Option<Uuid> {
        match self {
            Self::Platform => None,
            Self::Member(id) | Self::Admin(id) => Some(id),
        }
    }
}

impl From<&Actor> for ActorRef {
    fn from(actor: &Actor) -> Self {
        match actor {
            Actor::Platform => Self::Platform,
            Actor::Admin { admin, .. } => Self::Admin(admin.0),
            Actor::Member { member, .. } => Self::Member(member.0),
        }
    }
}

impl fmt::Display for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("platform"),
            Self::Member(id) => write!(f, "member:{id}"),
            Self::Admin(id) => write!(f, "admin:{id}"),
        }
    }
}

/// The position of a message within its command, `Talkwai-Command-Part: <index>/<total>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandPart {
    /// 1-based position.
    pub index: u32,
    /// Messages the command wrote.
    pub total: u32,
}

impl CommandPart {
    /// Parses `<index>/<total>`.
    fn parse(value: &str) -> Option<Self> {
        let (index, total) = value.split_once('/')?;
        Some(Self {
            index: index.parse().ok()?,
            total: total.parse().ok()?,
        })
    }
}

impl fmt::Display for CommandPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// The `Talkwai-*` headers of one message of the log. Every field is optional on the read
/// side (a header that is missing or unreadable is `None`: the log may hold messages written
/// around the command service); the command service writes them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// `Talkwai-Event-Type` (`task.started`; `command.recorded` for command records).
    pub event_type: Option<String>,
    /// `Talkwai-Event-Version`.
    pub version: Option<u32>,
    /// `Talkwai-Tenant`: the scope of the subject the message is written to (a
    /// `tenant.created` on the new tenant's subject names that tenant).
    pub tenant: Option<Scope>,
    /// `Talkwai-Actor`.
    pub actor: Option<ActorRef>,
    /// `Talkwai-Command-Id`.
    pub command_id: Option<Uuid>,
    /// `Talkwai-Occurred-At`, epoch milliseconds.
    pub occurred_at: Option<i64>,
    /// `Talkwai-Command-Part`.
    pub part: Option<CommandPart>,
}

impl EventMeta {
    /// The type, version and scope of a message whose body is `body`, on a subject of
    /// `scope`; the rest unset.
    pub fn for_body(body: &EventBody, scope: Scope) -> Self {
        Self::typed(&body.event_type, body.version, scope)
    }

    /// The type, version and scope of a message; the rest unset.
    pub fn typed(event_type: &str, version: u32, scope: Scope) -> Self {
        Self {
            event_type: Some(event_type.to_owned()),
            version: Some(version),
            tenant: Some(scope),
            ..Self::default()
        }
    }

    /// The headers of a command's only message (part `1/1`): `body` on a subject of `scope`,
    /// by `actor`, at `occurred_at`. What benchmarks and tests writing around the command
    /// service use.
    pub fn lone(
        body: &EventBody,
        scope: Scope,
        actor: ActorRef,
        command_id: Uuid,
        occurred_at: i64,
    ) -> Self {
        Self {
            actor: Some(actor),
            command_id: Some(command_id),
            occurred_at: Some(occurred_at),
            part: Some(CommandPart { index: 1, total: 1 }),
            ..Self::for_body(body, scope)
        }
    }

    /// The headers, as `(name, value)` pairs in a fixed order; unset fields are left out.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(7);
        if let Some(v) = &self.event_type {
            out.push((headers::EVENT_TYPE, v.clone()));
        }
        if let Some(v) = self.version {
            out.push((headers::EVENT_VERSION, v.to_string()));
        }
        if let Some(v) = self.tenant {
            out.push((headers::TENANT, v.to_string()));
        }
        if let Some(v) = self.actor {
            out.push((headers::ACTOR, v.to_string()));
        }
        if let Some(v) = self.command_id {
            out.push((headers::COMMAND_ID, v.to_string()));
        }
        if let Some(v) = self.occurred_at {
            out.push((headers::OCCURRED_AT, v.to_string()));
        }
        if let Some(v) = self.part {
            out.push((headers::COMMAND_PART, v.to_string()));
        }
        out
    }

    /// Reads the headers through `get` (a header's value by name). A missing header is
    /// `None`; so is an unreadable one, except `Talkwai-Actor`, which readers have always
    /// taken for the platform when they cannot read it (see [`ActorRef::parse`]).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            event_type: get(headers::EVENT_TYPE).map(str::to_owned),
            version: get(headers::EVENT_VERSION).and_then(|v| v.parse().ok()),
            tenant: get(headers::TENANT).and_then(|v| Scope::parse(v).ok()),
            actor: get(headers::ACTOR).map(|v| ActorRef::parse(Some(v))),
            command_id: get(headers::COMMAND_ID).and_then(|v| v.parse().ok()),
            occurred_at: get(headers::OCCURRED_AT).and_then(|v| v.parse().ok()),
            part: get(headers::COMMAND_PART).and_then(CommandPart::parse),
        }
    }
}

/// One event of an aggregate as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The aggregate its subject names.
    pub target: AggregateRef,
    /// Its headers.
    pub meta: EventMeta,
    /// Its body as stored (at the version it was written in; `event` is the current shape),
    /// with its sealed personal fields opened (an erased one is `null`).
    pub body: EventBody,
    /// The body decoded.
    pub event: Event,
    /// The personal fields whose key was destroyed (paths into `data`; empty: none).
    pub erased: Vec<&'static str>,
}

/// Why a stored message is not a readable event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The subject does not follow the scheme.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// The body is not an event body (`{"type", "version", "data"}`).
    #[error(transparent)]
    Body(#[from] serde_json::Error),
    /// The body names an unknown type or version, or its data does not fit the type.
    #[error(transparent)]
    Event(#[from] EventDecodeError),
    /// A sealed personal field could not be opened (no key in hand, or a corrupt value).
    #[error(transparent)]
    Sealed(#[from] OpenError),
    /// The `Talkwai-Event-Version` header names another version than the body: the message was
    /// not written by this format, and reading it as either version could misread it.
    #[error("event version header {header} disagrees with body version {body}")]
    VersionMismatch {
        /// The header's version.
        header: u32,
        /// The body's version.
        body: u32,
    },
}

/// Decodes a message of the log that holds no sealed field (or fails with
/// [`DecodeError::Sealed`]): [`decode_stored_with`] and no key.
pub fn decode_stored<'a>(
    subject: &str,
    headers: impl Fn(&str) -> Option<&'a str>,
    payload: &[u8],
) -> Result<Option<StoredEvent>, DecodeError> {
    decode_stored_with(subject, headers, payload, &NoKeys)
}

/// Decodes a message of the log: `Ok(None)` for a subject that is not an aggregate's (a guard).
/// The steps, in order: the subject is checked before the body is read; the body is parsed;
/// its version is checked against the `Talkwai-Event-Version` header (when there is one); its
/// sealed personal fields are opened with `keys` (`crate::sealed`: a destroyed key makes the
/// field `null` and names it in [`StoredEvent::erased`]; where the type requires the field, the
/// decoded event carries `crate::sealed::placeholder` instead), so upcasters always see the plain
/// data of their version; the data is upcast from the stored version to the current one and
/// read as the current event (`Event::decode`).
pub fn decode_stored_with<'a>(
    subject: &str,
    headers: impl Fn(&str) -> Option<&'a str>,
    payload: &[u8],
    keys: &dyn Opener,
) -> Result<Option<StoredEvent>, DecodeError> {
    let EventSubject::Aggregate(target) = EventSubject::parse(subject)? else {
        return Ok(None);
    };
    let meta = EventMeta::from_headers(headers);
    let mut body: EventBody = serde_json::from_slice(payload)?;
    if let Some(header) = meta.version
        && header != body.version
    {
        return Err(DecodeError::VersionMismatch {
            header,
            body: body.version,
        });
    }
    let scope = target.tenant.map_or(Scope::Platform, Scope::Tenant);
    let erased = open_data(&body.event_type, scope, &mut body.data, keys)?;
    let event = match Event::decode(&body) {
        Ok(event) => event,
        // An erased field the type requires: the domain reads its placeholder.
        Err(_) if !erased.is_empty() => {
            let mut filled = body.clone();
            fill_placeholders(&mut filled.data, &erased);
            Event::decode(&filled)?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some(StoredEvent {
        target,
        meta,
        body,
        event,
        erased,
    }))
}

/// The data key named by a message's `Talkwai-Key` header (the key its sealed fields use).
pub fn data_key<'a>(headers: impl Fn(&str) -> Option<&'a str>) -> Option<Uuid> {
    headers(headers::KEY).and_then(|v| v.parse().ok())
}

/// The key a reader must hold to open a message on `subject`: its subject's scope and its
/// `Talkwai-Key` (`None`: the message holds no sealed field, or is not an aggregate's).
pub fn sealed_key<'a>(
    subject: &str,
    headers: impl Fn(&str) -> Option<&'a str>,
) -> Option<(Scope, Uuid)> {
    let key = data_key(headers)?;
    match EventSubject::parse(subject).ok()? {
        EventSubject::Aggregate(target) => {
            Some((target.tenant.map_or(Scope::Platform, Scope::Tenant), key))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_header_parses() {
        let id = Uuid::from_u128(5);
        assert_eq!(
            ActorRef::parse(Some(&format!("admin:{id}"))),
            ActorRef::Admin(id)
        );
        assert_eq!(ActorRef::parse(Some("platform")), ActorRef::Platform);
        assert_eq!(ActorRef::parse(None), ActorRef::Platform);
        assert_eq!(ActorRef::parse(Some("member:nope")), ActorRef::Platform);
    }

    /// Seals with a fixed key id; opens nothing (every key destroyed).
    struct Shredded;

    impl crate::sealed::Sealer for Shredded {
        fn key_id(&self) -> Uuid {
            Uuid::from_u128(9)
        }
        fn seal(&self, _aad: &str, plain: &str) -> crate::sealed::Sealed {
            crate::sealed::Sealed {
                enc: crate::sealed::SEALED_V1.into(),
                key: self.key_id(),
                p: Vec::new(),
                n: String::new(),
                c: plain.len().to_string(),
            }
        }
    }

    impl Opener for Shredded {
        fn open(
            &self,
            _: Scope,
            _: &crate::sealed::Sealed,
            _: &str,
        ) -> Result<crate::sealed::Opened, OpenError> {
            Ok(crate::sealed::Opened::Erased)
        }
    }

    #[test]
    fn an_erased_event_reads_as_null_for_readers_and_a_placeholder_for_the_domain() {
        let tenant = Uuid::from_u128(1);
        let member = Uuid::from_u128(2);
        let mut data = serde_json::json!({
            "at": 1, "email": "jane@example.com", "firstName": "Jane", "lastName": "Doe",
            "phone": "+15550001111", "role": "owner", "status": "active", "user": null
        });
        crate::sealed::seal_data("member.created", &mut data, &Shredded);
        let payload = serde_json::to_vec(&serde_json::json!({
            "type": "member.created", "version": 1, "data": data
        }))
        .expect("json");
        let subject = format!("talkwai.evt.{tenant}.member.{member}");
        let stored = decode_stored_with(&subject, |_| None, &payload, &Shredded)
            .expect("an erased event decodes")
            .expect("an aggregate's");
        assert_eq!(
            stored.erased,
            vec!["firstName", "lastName", "email", "phone"]
        );
        assert_eq!(stored.body.data["email"], serde_json::Value::Null);
        let Event::Member(talkwai_domain::member::MemberEvent::Created(created)) = &stored.event
        else {
            panic!("a member.created: {:?}", stored.event);
        };
        assert_eq!(created.email.as_str(), crate::sealed::ERASED_ADDRESS);
        let without_keys = decode_stored(&subject, |_| None, &payload).expect_err("no keys");
        assert!(
            matches!(without_keys, DecodeError::Sealed(_)),
            "{without_keys}"
        );
    }

    #[test]
    fn unreadable_headers_read_as_missing() {
        let table = [
            (headers::EVENT_VERSION, "one"),
            (headers::TENANT, "nobody"),
            (headers::ACTOR, "robot:7"),
            (headers::COMMAND_ID, "not-a-uuid"),
            (headers::OCCURRED_AT, "yesterday"),
            (headers::COMMAND_PART, "1 of 3"),
        ];
        let meta =
            EventMeta::from_headers(|name| table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v));
        assert_eq!(
            meta,
            EventMeta {
                actor: Some(ActorRef::Platform),
                ..EventMeta::default()
            }
        );
    }
}
