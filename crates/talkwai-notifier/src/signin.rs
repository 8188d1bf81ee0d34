//! Who a presence request signs in as: the member or admin the token's user is linked to, as
//! the log says it is now, decided by the command service's rule
//! ([`policy::signed_in`], [`Actor::require_active`](talkwai_domain::Actor::require_active)). A
//! deleted, erased or inactive member or admin is `forbidden`, and so is a member token whose
//! user is linked to no member of its tenant. An admin token whose user was never linked to an
//! admin is let in: dev tokens (`talkwai up`'s demo admin view) name an admin user with no admin
//! entity; one whose link was released (its admin deleted or unlinked) is refused.
//!
//! Read from the log on every check, so no instance needs to have seen an `…erased` event. A
//! bounded cache keeps each user's verdict with the head (last sequence) it was decided at: of
//! its entity's subject when the user is linked, else of its link guard. One last-by-subject
//! read of that head, in flight with the request's other reads, confirms it; a new event there
//! (an erasure, a status change, an unlink or a deletion, a new link) sends the check back to the
//! log: the guard, then the entity's history, folded in memory without opening a sealed field
//! (the rule needs none, so no key is read). The entity's head is enough while the user is
//! linked: its link guard can only be let go by a command of that entity, whose events are
//! appended in the same atomic batch as the release.

use std::num::NonZeroUsize;

use lru::LruCache;
use talkwai_auth::{Claims, PrincipalKind};
use talkwai_domain::ids::{TenantId, UserId};
use talkwai_domain::{AggregateRef, AggregateState, EntityKind, EventBody, GuardEvent, GuardKey};
use talkwai_domain::{ErrorCode, policy};
use talkwai_eventstore::{EventStore, Heads, StoredMessage};
use talkwai_proto::ErrorBody;
use talkwai_proto::event::decode_stored_with;
use talkwai_proto::sealed::{OpenError, Opened, Opener, Sealed};
use talkwai_proto::subject::{self, Scope};
use uuid::Uuid;

/// Users whose verdict is remembered (about 150 bytes each).
const CAPACITY: NonZeroUsize = NonZeroUsize::new(65_536).unwrap();

/// Checks the member or admin behind a verified token against the log.
#[derive(Debug)]
pub struct SignIns {
    log: EventStore,
    /// Each user's last verdict and the head it was decided at.
    known: std::sync::Mutex<LruCache<Who, Known>>,
}

/// Whose verdict is cached: a user, as admin or as member of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Who {
    user: UserId,
    admin: bool,
    tenant: Option<TenantId>,
}

/// A verdict and what it was decided from.
#[derive(Debug, Clone)]
struct Known {
    /// The entity the guard pointed to (`None`: no link).
    entity: Option<AggregateRef>,
    /// The last sequence of the entity's subject, or without an entity of the link guard's
    /// (0: empty).
    seq: u64,
    verdict: Result<(), ErrorBody>,
}

/// The subject whose head confirms a cached verdict (see the module doc).
fn watched(guard: &str, entity: Option<AggregateRef>) -> String {
    entity.map_or_else(|| guard.to_owned(), |e| subject::event(&e))
}

/// What one check reads, planned before the read so it joins the request's other reads.
#[derive(Debug)]
pub struct Check {
    who: Who,
    guard: String,
    known: Option<Known>,
}

impl Check {
    /// The subjects whose heads the check needs: the one that confirms the cached verdict, or
    /// the user's link guard when none is cached.
    pub fn subjects(&self) -> Vec<String> {
        vec![watched(
            &self.guard,
            self.known.as_ref().and_then(|k| k.entity),
        )]
    }
}

/// What a user's link guard says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Never claimed: the user was never linked.
    Never,
    /// Released: the user was linked, and is no more (its entity deleted, or unlinked).
    Released,
    /// Held by this entity.
    To(Uuid),
}

/// The guard's holder from its subject's head.
fn link_of(head: Option<&StoredMessage>) -> Result<Link, ErrorBody> {
    let Some(head) = head else {
        return Ok(Link::Never);
    };
    let corrupt = |e: String| {
        ErrorBody::new(
            ErrorCode::Internal,
            format!("{}: unreadable link guard: {e}", head.subject),
        )
    };
    let body: EventBody =
        serde_json::from_slice(&head.payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(
        match GuardEvent::decode(&body).map_err(|e| corrupt(e.to_string()))? {
            GuardEvent::Claimed { owner, .. } => Link::To(owner),
            GuardEvent::Released { .. } => Link::Released,
        },
    )
}

/// The verdict on a user with no entity to fold: an admin never linked is let in (dev tokens),
/// anyone else is refused as the command service refuses them.
fn unlinked(admin: bool, link: Link) -> Result<(), ErrorBody> {
    let refuse = |message: &str| Err(ErrorBody::new(ErrorCode::Forbidden, message));
    match (admin, link) {
        (true, Link::Never) => Ok(()),
        (true, _) => refuse("user is not linked to an admin"),
        (false, _) => refuse("user is not linked to a member"),
    }
}

/// Reads no sealed field: the sign-in rule needs none, so each reads as erased (the domain
/// then holds its placeholder) and no key is fetched.
struct Unread;

impl Opener for Unread {
    fn open(&self, _scope: Scope, _sealed: &Sealed, _aad: &str) -> Result<Opened, OpenError> {
        Ok(Opened::Erased)
    }
}

/// Folds `entity`'s history and applies the rule: the actor `user` signs in as, active. The
/// entity must also still link to `user` (its guard was read before its history: an unlink in
/// between shows here), so the verdict depends on the entity's history alone and its head is
/// enough to confirm it.
fn verdict(
    user: UserId,
    entity: AggregateRef,
    messages: &[StoredMessage],
) -> Result<(), ErrorBody> {
    let internal = |message: String| ErrorBody::new(ErrorCode::Internal, message);
    let mut state = AggregateState::new(entity);
    for message in messages {
        let stored = decode_stored_with(
            &message.subject,
            |name| message.header(name),
            &message.payload,
            &Unread,
        )
        .map_err(|e| internal(format!("{} at {}: {e}", message.subject, message.seq)))?;
        if let Some(stored) = stored {
            talkwai_domain::apply(&mut state, &stored.event)
                .map_err(|e| internal(format!("{} at {}: {e}", message.subject, message.seq)))?;
        }
    }
    let actor = policy::signed_in(user, &state)?;
    let linked = match &state {
        AggregateState::Admin(_, admin) => admin.live().and_then(|a| a.user),
        AggregateState::Member(_, _, member) => member.live().and_then(|m| m.user),
        _ => None,
    };
    if linked != Some(user) {
        return unlinked(entity.kind == EntityKind::Admin, Link::Released);
    }
    actor.require_active()?;
    Ok(())
}

impl SignIns {
    /// Checks read from `log`.
    pub fn new(log: EventStore) -> Self {
        Self {
            log,
            known: std::sync::Mutex::new(LruCache::new(CAPACITY)),
        }
    }

    /// The log it reads.
    pub fn log(&self) -> &EventStore {
        &self.log
    }

    /// Plans the check of `claims`.
    pub fn plan(&self, claims: &Claims) -> Check {
        let admin = claims.kind == PrincipalKind::Admin;
        let who = Who {
            user: claims.sub,
            admin,
            tenant: if admin { None } else { claims.tenant },
        };
        let guard = if admin {
            GuardKey::UserAdmin(claims.sub)
        } else {
            GuardKey::UserMember(claims.sub)
        };
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|mut known| known.get(&who).cloned());
        Check {
            who,
            guard: subject::guard(&guard),
            known,
        }
    }

    /// Decides `check` from `heads` (which hold at least [`Check::subjects`], read after the
    /// check was planned): the cached verdict while its head stays, else read again.
    pub async fn decide(&self, check: Check, heads: &Heads) -> Result<(), ErrorBody> {
        let head = |subject: &str| heads.get(subject).map_or(0, |m| m.seq);
        let cached_entity = check.known.as_ref().and_then(|k| k.entity);
        if let Some(known) = &check.known
            && head(&watched(&check.guard, known.entity)) == known.seq
        {
            return known.verdict.clone();
        }
        let unavailable = |e: talkwai_eventstore::StoreError| {
            ErrorBody::new(ErrorCode::Unavailable, e.to_string())
        };
        // The guard's head was read unless the cached verdict watched its entity instead.
        let guard = match cached_entity {
            None => heads.get(&check.guard).cloned(),
            Some(_) => self
                .log
                .last_of_subject(&check.guard)
                .await
                .map_err(unavailable)?,
        };
        let Who {
            user,
            admin,
            tenant,
        } = check.who;
        let (entity, seq, verdict) = match link_of(guard.as_ref())? {
            Link::To(id) => {
                let (kind, tenant) = if admin {
                    (EntityKind::Admin, None)
                } else {
                    (EntityKind::Member, tenant)
                };
                let entity = AggregateRef { kind, tenant, id };
                let entity_subject = subject::event(&entity);
                // Its head was read already when the cached verdict watched it.
                let head = if cached_entity == Some(entity) {
                    heads.get(&entity_subject).map(|m| m.seq)
                } else {
                    self.log
                        .last_of_subject(&entity_subject)
                        .await
                        .map_err(unavailable)?
                        .map(|m| m.seq)
                };
                let messages = match head {
                    Some(head) => self
                        .log
                        .read_subject_through(&entity_subject, 0, head)
                        .await
                        .map_err(unavailable)?,
                    None => Vec::new(),
                };
                let seq = messages.last().map_or(0, |m| m.seq);
                (Some(entity), seq, verdict(user, entity, &messages))
            }
            link => (None, guard.map_or(0, |m| m.seq), unlinked(admin, link)),
        };
        // An internal error (an unreadable history) is not remembered: the next check reads again.
        if verdict
            .as_ref()
            .err()
            .is_none_or(|e| e.code == ErrorCode::Forbidden)
            && let Ok(mut known) = self.known.lock()
        {
            known.put(
                check.who,
                Known {
                    entity,
                    seq,
                    verdict: verdict.clone(),
                },
            );
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use talkwai_domain::Event;
    use talkwai_domain::enums::{MemberRole, MemberStatus};
    use talkwai_domain::member::{MemberCreated, MemberEvent, MemberStatusChanged, UserLink};
    use talkwai_domain::state::Stamp;
    use talkwai_domain::values::{Email, Name, Timestamp};

    use super::*;

    fn guard_head(event: &GuardEvent) -> StoredMessage {
        let body = serde_json::to_value(event).expect("guard event");
        StoredMessage {
            seq: 7,
            subject: "talkwai.evt.platform.guard.user-member.x".into(),
            headers: async_nats::HeaderMap::new(),
            payload: Bytes::from(
                serde_json::to_vec(&serde_json::json!({
                    "type": body["type"], "version": GuardEvent::CURRENT_VERSION, "data": body["data"],
                }))
                .expect("json"),
            ),
            stored_at_ms: 0,
        }
    }

    #[test]
    fn a_link_guard_says_never_released_or_its_holder() {
        let owner = Uuid::from_u128(5);
        assert_eq!(link_of(None).expect("empty"), Link::Never);
        let claimed = guard_head(&GuardEvent::Claimed {
            owner,
            at: Timestamp(0),
        });
        assert_eq!(link_of(Some(&claimed)).expect("claimed"), Link::To(owner));
        let released = guard_head(&GuardEvent::Released {
            owner,
            at: Timestamp(0),
        });
        assert_eq!(link_of(Some(&released)).expect("released"), Link::Released);
        let mut garbage = claimed;
        garbage.payload = Bytes::from_static(b"{");
        assert_eq!(
            link_of(Some(&garbage)).expect_err("corrupt").code,
            ErrorCode::Internal
        );
    }

    #[test]
    fn given_no_link_only_a_never_linked_admin_gets_in() {
        assert!(unlinked(true, Link::Never).is_ok());
        for (admin, link) in [
            (true, Link::Released),
            (false, Link::Never),
            (false, Link::Released),
        ] {
            assert_eq!(
                unlinked(admin, link).expect_err("refused").code,
                ErrorCode::Forbidden,
                "admin {admin}, {link:?}"
            );
        }
    }

    #[test]
    fn given_an_empty_subject_the_member_is_not_of_this_tenant() {
        let entity = AggregateRef {
            kind: EntityKind::Member,
            tenant: Some(TenantId(Uuid::from_u128(1))),
            id: Uuid::from_u128(2),
        };
        let refused = verdict(UserId(Uuid::from_u128(3)), entity, &[]).expect_err("refused");
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert_eq!(refused.message, "user is not a member of this tenant");
    }

    /// A stored message of `entity` holding `event`; `sealed` replaces its `firstName` by a
    /// sealed value no key opens here.
    fn stored(entity: &AggregateRef, seq: u64, event: MemberEvent, sealed: bool) -> StoredMessage {
        let mut body = Event::Member(event).encode();
        if sealed {
            body.data["firstName"] = serde_json::json!({"enc": "v1", "key": Uuid::from_u128(9),
                "n": "AAAA", "c": "AAAA"});
        }
        StoredMessage {
            seq,
            subject: subject::event(entity),
            headers: async_nats::HeaderMap::new(),
            payload: Bytes::from(serde_json::to_vec(&body).expect("json")),
            stored_at_ms: 0,
        }
    }

    #[test]
    fn given_a_members_history_the_verdict_is_the_command_services() {
        let (tenant, user) = (TenantId(Uuid::from_u128(1)), UserId(Uuid::from_u128(3)));
        let entity = AggregateRef {
            kind: EntityKind::Member,
            tenant: Some(tenant),
            id: Uuid::from_u128(2),
        };
        let at = Timestamp(1);
        // Created with a sealed name (no key here: the fold reads its placeholder).
        let created = stored(
            &entity,
            1,
            MemberEvent::Created(MemberCreated {
                first_name: Name::parse("Mia").expect("name"),
                last_name: Name::parse("Member").expect("name"),
                email: Email::parse("mia@example.com").expect("email"),
                phone: None,
                role: MemberRole::User,
                status: MemberStatus::Active,
                user: Some(user),
                at,
            }),
            true,
        );
        let status = |seq, status| {
            stored(
                &entity,
                seq,
                MemberEvent::StatusChanged(MemberStatusChanged { status, at }),
                false,
            )
        };
        let inactive = status(2, MemberStatus::Inactive);
        let active = status(3, MemberStatus::Active);
        let erased = stored(&entity, 4, MemberEvent::Erased(Stamp { at }), false);
        let unlinked = stored(
            &entity,
            4,
            MemberEvent::UserUnlinked(UserLink { user, at }),
            false,
        );
        let refused = |history: &[StoredMessage]| {
            let error = verdict(user, entity, history).expect_err("refused");
            assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
            error.message
        };
        assert_eq!(
            verdict(user, entity, std::slice::from_ref(&created)),
            Ok(())
        );
        assert_eq!(
            refused(&[created.clone(), inactive.clone()]),
            "member is inactive"
        );
        assert_eq!(
            verdict(
                user,
                entity,
                &[created.clone(), inactive.clone(), active.clone()]
            ),
            Ok(())
        );
        assert_eq!(
            refused(&[created.clone(), inactive, active.clone(), erased]),
            policy::ERASED_ACTOR
        );
        // Unlinked after its guard was read: the history says so.
        assert_eq!(
            refused(&[created, status(2, MemberStatus::Inactive), active, unlinked]),
            "user is not linked to a member"
        );
    }

    #[test]
    fn a_verdict_is_confirmed_by_its_entity_head_or_without_one_by_the_guard() {
        let guard = "talkwai.evt.platform.guard.user-member.x";
        assert_eq!(watched(guard, None), guard);
        let entity = AggregateRef {
            kind: EntityKind::Member,
            tenant: Some(TenantId(Uuid::from_u128(1))),
            id: Uuid::from_u128(2),
        };
        assert_eq!(watched(guard, Some(entity)), subject::event(&entity));
        let check = Check {
            who: Who {
                user: UserId(Uuid::from_u128(3)),
                admin: false,
                tenant: entity.tenant,
            },
            guard: guard.to_owned(),
            known: None,
        };
        assert_eq!(
            check.subjects(),
            [guard.to_owned()],
            "first sight: the guard"
        );
        let check = Check {
            known: Some(Known {
                entity: Some(entity),
                seq: 9,
                verdict: Ok(()),
            }),
            ..check
        };
        assert_eq!(
            check.subjects(),
            [subject::event(&entity)],
            "linked: the entity"
        );
    }
}
