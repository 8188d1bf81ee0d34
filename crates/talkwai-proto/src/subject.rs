//! The subject scheme. Tenant ids sit in subjects so NATS permissions can fence a tenant's
//! credentials to its own subjects and consumers can filter or partition by tenant.
//!
//! | subject | what |
//! |---|---|
//! | `talkwai.cmd.<tenant>.<aggregate>.<action>` | tenant commands |
//! | `talkwai.cmd.platform.<aggregate>.<action>` | platform commands |
//! | `talkwai.evt.<tenant>.<aggregate>.<id>` | one aggregate's events |
//! | `talkwai.evt.platform.<aggregate>.<id>` | admin and user events |
//! | `talkwai.evt.<tenant\|platform>.guard.<kind>.<hash>` | uniqueness guards |
//! | `talkwai.qry.<tenant>` / `talkwai.qry.platform` | queries |
//! | `talkwai.qry.<scope>.subscribe` | live-query subscriptions |
//! | `talkwai.qry.<scope>.live.<id>` | a live query's changed answers |
//! | `talkwai.qry.<scope>.live.<id>.ctl` | a live query's `renew` / `unsubscribe` |
//! | `talkwai.room.<type>.<id>.topic.<name>` | room topics |
//! | `talkwai.room.<type>.<id>.presence.<op>` | presence |

use std::fmt;

use sha2::{Digest, Sha256};
use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, EntityKind, GuardKey};
use uuid::Uuid;

/// Root token of every subject.
pub const ROOT: &str = "talkwai";
/// The JetStream stream holding the event log.
pub const EVENT_STREAM: &str = "TALKWAI_EVENTS";
/// Every event subject (the stream's subject filter).
pub const ALL_EVENTS: &str = "talkwai.evt.>";
/// Every command subject.
pub const ALL_COMMANDS: &str = "talkwai.cmd.>";
/// The token that stands for the platform in place of a tenant id.
pub const PLATFORM: &str = "platform";

/// Whose subject space a subject lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Platform-wide (admins, users, tenant creation).
    Platform,
    /// One tenant.
    Tenant(TenantId),
}

impl Scope {
    /// The tenant, if tenant-scoped.
    pub fn tenant(self) -> Option<TenantId> {
        match self {
            Self::Platform => None,
            Self::Tenant(t) => Some(t),
        }
    }

    /// Parses a scope token: `platform` or a tenant UUID.
    pub fn parse(token: &str) -> Result<Self, SubjectError> {
        if token == PLATFORM {
            return Ok(Self::Platform);
        }
        token
            .parse::<Uuid>()
            .map(|id| Self::Tenant(TenantId(id)))
            .map_err(|_| SubjectError::InvalidScope(token.to_owned()))
    }

    fn from_option(tenant: Option<TenantId>) -> Self {
        tenant.map_or(Self::Platform, Self::Tenant)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str(PLATFORM),
            Self::Tenant(t) => write!(f, "{t}"),
        }
    }
}

/// A subject that does not follow the scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Wrong number of tokens or wrong prefix.
    #[error("subject {0} does not follow the scheme")]
    Malformed(String),
    /// The scope token is neither `platform` nor a UUID.
    #[error("invalid tenant {0}: expected a UUID or 'platform'")]
    InvalidScope(String),
    /// The aggregate token names no aggregate.
    #[error("unknown aggregate {0}")]
    UnknownAggregate(String),
    /// The id token is not a UUID.
    #[error("invalid id {0}: expected a UUID")]
    InvalidId(String),
}

/// Parses an aggregate token (`task`, `member`...).
pub fn parse_kind(token: &str) -> Result<EntityKind, SubjectError> {
    Ok(match token {
        "tenant" => EntityKind::Tenant,
        "member" => EntityKind::Member,
        "admin" => EntityKind::Admin,
        "agent" => EntityKind::Agent,
        "task" => EntityKind::Task,
        "user" => EntityKind::User,
        other => return Err(SubjectError::UnknownAggregate(other.to_owned())),
    })
}

/// `talkwai.cmd.<scope>.<aggregate>.<action>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSubject {
    /// Platform or tenant.
    pub scope: Scope,
    /// The aggregate kind.
    pub aggregate: EntityKind,
    /// The action (`create`, `start`...).
    pub action: String,
}

impl CommandSubject {
    /// Parses a command subject.
    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        let Some([scope, aggregate, action]) = Self::tokens(subject) else {
            return Err(SubjectError::Malformed(subject.to_owned()));
        };
        Ok(Self {
            scope: Scope::parse(scope)?,
            aggregate: parse_kind(aggregate)?,
            action: action.to_owned(),
        })
    }
}

impl CommandSubject {
    /// The scope, aggregate and action tokens of `talkwai.cmd.<scope>.<aggregate>.<action>`,
    /// unchecked (a non-empty action), or `None` for another shape.
    pub fn tokens(subject: &str) -> Option<[&str; 3]> {
        let mut tokens = subject.split('.');
        let (Some(ROOT), Some("cmd"), Some(scope), Some(aggregate), Some(action), None) = (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) else {
            return None;
        };
        (!action.is_empty()).then_some([scope, aggregate, action])
    }
}

impl fmt::Display for CommandSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ROOT}.cmd.{}.{}.{}",
            self.scope, self.aggregate, self.action
        )
    }
}

/// The command subject for a tenant (or platform) aggregate action.
pub fn command(scope: Scope, aggregate: EntityKind, action: &str) -> String {
    format!("{ROOT}.cmd.{scope}.{aggregate}.{action}")
}

/// What the command service subscribes for one aggregate action, in every scope
/// (`talkwai.cmd.*.<aggregate>.<action>`).
pub fn command_endpoint(aggregate: EntityKind, action: &str) -> String {
    format!("{ROOT}.cmd.*.{aggregate}.{action}")
}

/// The event subject of one aggregate.
pub fn event(target: &AggregateRef) -> String {
    format!(
        "{ROOT}.evt.{}.{}.{}",
        Scope::from_option(target.tenant),
        target.kind,
        target.id
    )
}

/// Every event of one tenant (`talkwai.evt.<tenant>.>`).
pub fn tenant_events(scope: Scope) -> String {
    format!("{ROOT}.evt.{scope}.>")
}

/// The subject of a uniqueness guard. The guarded value is hashed (SHA-256, 128 bits kept) so
/// emails never appear in subjects and any value fits in a token.
pub fn guard(key: &GuardKey) -> String {
    let digest = Sha256::digest(key.value().as_bytes());
    let hash: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{ROOT}.evt.{}.guard.{}.{hash}",
        Scope::from_option(key.tenant()),
        key.kind()
    )
}

/// What an event subject addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSubject {
    /// An aggregate's events.
    Aggregate(AggregateRef),
    /// A uniqueness guard.
    Guard {
        /// Platform or tenant.
        scope: Scope,
        /// The guard kind (`member-email`...).
        kind: String,
        /// The hashed value.
        hash: String,
    },
}

impl EventSubject {
    /// Parses an event subject.
    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens.as_slice() {
            [ROOT, "evt", scope, "guard", kind, hash] => Ok(Self::Guard {
                scope: Scope::parse(scope)?,
                kind: (*kind).to_owned(),
                hash: (*hash).to_owned(),
            }),
            [ROOT, "evt", scope, aggregate, id] => {
                let scope = Scope::parse(scope)?;
                let kind = parse_kind(aggregate)?;
                let id: Uuid = id
                    .parse()
                    .map_err(|_| SubjectError::InvalidId((*id).to_owned()))?;
                let tenant = match (kind, scope) {
                    (EntityKind::Admin | EntityKind::User, _) => None,
                    (_, scope) => scope.tenant(),
                };
                Ok(Self::Aggregate(AggregateRef { kind, tenant, id }))
            }
            _ => Err(SubjectError::Malformed(subject.to_owned())),
        }
    }
}

/// The query subject of a scope.
pub fn query(scope: Scope) -> String {
    format!("{ROOT}.qry.{scope}")
}

/// Query requests (AsyncAPI address).
pub const QUERY_PATTERN: &str = "talkwai.qry.{tenant}";
/// Live-query subscribe requests (AsyncAPI address).
pub const SUBSCRIBE_PATTERN: &str = "talkwai.qry.{tenant}.subscribe";
/// Live-query updates (AsyncAPI address).
pub const LIVE_QUERY_PATTERN: &str = "talkwai.qry.{tenant}.live.{subscription}";
/// Live-query control requests (AsyncAPI address).
pub const LIVE_CONTROL_PATTERN: &str = "talkwai.qry.{tenant}.live.{subscription}.ctl";

/// What the query service subscribes for queries, in every scope (`talkwai.qry.*`).
pub const QUERY_ENDPOINT: &str = "talkwai.qry.*";
/// What the query service subscribes for live-query subscriptions (`talkwai.qry.*.subscribe`).
pub const SUBSCRIBE_ENDPOINT: &str = "talkwai.qry.*.subscribe";
/// What every query service instance subscribes for live-query controls
/// (`talkwai.qry.*.live.*.ctl`; only the instance holding the subscription answers).
pub const LIVE_CONTROL_ENDPOINT: &str = "talkwai.qry.*.live.*.ctl";

/// The scope token of a query subject (`talkwai.qry.<scope>`), unchecked; `None` for another
/// shape.
pub fn query_scope(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(ROOT)?
        .strip_prefix(".qry.")
        .filter(|scope| !scope.contains('.'))
}

/// Whether a subject arriving at the query service is a live-query subscription (ends with
/// `.subscribe`) rather than a query.
pub fn is_subscribe(subject: &str) -> bool {
    subject.ends_with(".subscribe")
}

/// The scope token of a subscribe subject (`talkwai.qry.<scope>.subscribe`), unchecked; `None`
/// for another shape.
pub fn subscribe_scope(subject: &str) -> Option<&str> {
    subject.strip_suffix(".subscribe").and_then(query_scope)
}

/// The subscription id of a live-query control subject (`talkwai.qry.<scope>.live.<id>.ctl`);
/// `None` for another shape or an id that is not a UUID.
pub fn live_control_id(subject: &str) -> Option<Uuid> {
    match subject.split('.').collect::<Vec<_>>().as_slice() {
        [ROOT, "qry", _, "live", id, "ctl"] => id.parse().ok(),
        _ => None,
    }
}

/// The live-query subscribe subject of a scope (`talkwai.qry.<scope>.subscribe`).
pub fn subscribe(scope: Scope) -> String {
    format!("{ROOT}.qry.{scope}.subscribe")
}

/// Where a live query's changed answers are published (`talkwai.qry.<scope>.live.<id>`).
pub fn live_query(scope: &str, subscription: Uuid) -> String {
    format!("{ROOT}.qry.{scope}.live.{subscription}")
}

/// A live query's control subject (`talkwai.qry.<scope>.live.<id>.ctl`).
pub fn live_control(scope: &str, subscription: Uuid) -> String {
    format!("{ROOT}.qry.{scope}.live.{subscription}.ctl")
}

/// A room topic subject (`talkwai.room.tenant.<id>.topic.taskUpdates`).
pub fn room_topic(room_type: &str, room_id: &str, topic: &str) -> String {
    format!("{ROOT}.room.{room_type}.{room_id}.topic.{topic}")
}

/// A room presence subject (`talkwai.room.tenant.<id>.presence.<op>`).
pub fn room_presence(room_type: &str, room_id: &str, op: &str) -> String {
    format!("{ROOT}.room.{room_type}.{room_id}.presence.{op}")
}

/// What the notifier subscribes for one presence operation, in every room
/// (`talkwai.room.*.*.presence.<op>`).
pub fn presence_endpoint(op: &str) -> String {
    format!("{ROOT}.room.*.*.presence.{op}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_subjects_name_their_scope_and_subscription() {
        let tenant = Uuid::new_v4();
        let scope = Scope::Tenant(TenantId(tenant));
        assert_eq!(
            query_scope(&query(scope)),
            Some(tenant.to_string().as_str())
        );
        assert_eq!(query_scope(&query(Scope::Platform)), Some(PLATFORM));
        assert_eq!(
            query_scope(&subscribe(scope)),
            None,
            "a subscribe is no query"
        );
        assert_eq!(subscribe_scope(&subscribe(Scope::Platform)), Some(PLATFORM));
        assert_eq!(subscribe_scope(&query(scope)), None);
        let id = Uuid::new_v4();
        let scope_token = tenant.to_string();
        assert_eq!(live_control_id(&live_control(&scope_token, id)), Some(id));
        assert_eq!(live_control_id(&live_query(&scope_token, id)), None);
        assert_eq!(
            live_control_id(&format!("talkwai.qry.{scope_token}.live.nope.ctl")),
            None
        );
    }

    #[test]
    fn endpoints_are_the_wildcards_of_their_subjects() {
        assert_eq!(
            command_endpoint(EntityKind::Task, "create"),
            "talkwai.cmd.*.task.create"
        );
        assert_eq!(presence_endpoint("join"), "talkwai.room.*.*.presence.join");
        for (endpoint, subject) in [
            (QUERY_ENDPOINT, query(Scope::Platform)),
            (SUBSCRIBE_ENDPOINT, subscribe(Scope::Platform)),
            (LIVE_CONTROL_ENDPOINT, live_control(PLATFORM, Uuid::nil())),
        ] {
            let tokens: Vec<&str> = endpoint.split('.').collect();
            let concrete: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), concrete.len(), "{endpoint} vs {subject}");
            assert!(
                tokens
                    .iter()
                    .zip(&concrete)
                    .all(|(t, c)| *t == "*" || t == c),
                "{endpoint} matches {subject}"
            );
        }
    }
}
