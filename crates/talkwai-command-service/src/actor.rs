//! Authentication's second half: a verified principal becomes an [`Actor`] with its current
//! role and status from the log. Users' resolutions (which member or admin entity their link
//! guard points to) are cached and checked against the guard's head on every command.

use std::num::NonZeroUsize;

use lru::LruCache;
use talkwai_auth::{Principal, PrincipalKind};
use talkwai_domain::ids::TenantId;
use talkwai_domain::{Actor, AggregateRef, AggregateState, DomainError, EntityKind, GuardKey};
use talkwai_proto::subject;

use crate::error::ServiceError;
use crate::repo::{HeadsView, Repository, guard_head};

/// Users whose member or admin entity is remembered.
const ACTOR_CACHE: NonZeroUsize = NonZeroUsize::new(65_536).unwrap();

/// Users resolved to their member or admin entity.
pub(crate) struct Actors {
    cache: std::sync::Mutex<LruCache<ActorKey, KnownActor>>,
}

impl Actors {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self {
            cache: std::sync::Mutex::new(LruCache::new(ACTOR_CACHE)),
        }
    }

    /// What resolving `principal` needs read: its user link guard and, when a resolution is
    /// cached, the entity it pointed to. `None` for the platform.
    pub(crate) fn plan(&self, principal: &Principal) -> Option<ActorPlan> {
        let Principal::User(claims) = principal else {
            return None;
        };
        let (guard, key) = match claims.kind {
            PrincipalKind::Admin => (
                GuardKey::UserAdmin(claims.sub),
                ActorKey {
                    user: claims.sub,
                    admin: true,
                    tenant: None,
                },
            ),
            PrincipalKind::Member => (
                GuardKey::UserMember(claims.sub),
                ActorKey {
                    user: claims.sub,
                    admin: false,
                    tenant: claims.tenant,
                },
            ),
        };
        let known = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).copied());
        Some(ActorPlan {
            guard_subject: subject::guard(&guard),
            key,
            known,
        })
    }

    /// Turns a verified principal into an actor with its current role and status from the log,
    /// from the heads read for the command (a second read only when the user's link is new to
    /// this instance or changed).
    pub(crate) async fn resolve(
        &self,
        repo: &Repository,
        principal: &Principal,
        plan: Option<ActorPlan>,
        heads: &HeadsView,
    ) -> Result<Actor, ServiceError> {
        let claims = match principal {
            Principal::Platform => return Ok(Actor::Platform),
            Principal::User(claims) => claims,
        };
        let Some(plan) = plan else {
            return Ok(Actor::Platform);
        };
        let forbidden =
            |message: &str| ServiceError::Domain(DomainError::Forbidden(message.to_owned()));
        let (kind, tenant, unlinked) = match claims.kind {
            PrincipalKind::Admin => (EntityKind::Admin, None, "user is not linked to an admin"),
            PrincipalKind::Member => (
                EntityKind::Member,
                Some(
                    claims
                        .tenant
                        .ok_or_else(|| forbidden("member token without tenant"))?,
                ),
                "user is not linked to a member",
            ),
        };
        let guard = heads.message(&plan.guard_subject);
        let guard_seq = guard.map_or(0, |m| m.seq);
        let entity = match plan.known {
            Some(known) if known.guard_seq == guard_seq => known.entity,
            _ => {
                let Some(owner) = guard_head(&plan.guard_subject, guard)?.owner else {
                    self.forget(&plan.key);
                    return Err(forbidden(unlinked));
                };
                AggregateRef {
                    kind,
                    tenant,
                    id: owner,
                }
            }
        };
        let loaded = match plan.known {
            // Its entity's head was read with the others.
            Some(known) if known.entity == entity => {
                let entity_subject = subject::event(&entity);
                let head = heads.seq(&entity_subject);
                repo.load_at(entity, head, heads.tag(&entity_subject))
                    .await?
            }
            _ => repo.load_current(entity).await?,
        };
        if let Ok(mut actors) = self.cache.lock() {
            actors.put(plan.key, KnownActor { entity, guard_seq });
        }
        match &loaded.state {
            AggregateState::Admin(..) | AggregateState::Member(..) => {
                talkwai_domain::policy::signed_in(claims.sub, &loaded.state)
                    .map_err(ServiceError::Domain)
            }
            _ => Err(forbidden(unlinked)),
        }
    }

    fn forget(&self, key: &ActorKey) {
        if let Ok(mut actors) = self.cache.lock() {
            actors.pop(key);
        }
    }
}

/// Whose resolution is cached: a user, as admin or as member of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ActorKey {
    user: talkwai_domain::ids::UserId,
    admin: bool,
    tenant: Option<TenantId>,
}

/// A user's resolved entity, and the sequence of the link guard it was read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownActor {
    /// The member or admin entity.
    pub(crate) entity: AggregateRef,
    guard_seq: u64,
}

/// The reads resolving one principal needs.
pub(crate) struct ActorPlan {
    /// The user's link guard, read with the command's other heads.
    pub(crate) guard_subject: String,
    key: ActorKey,
    /// The cached resolution, whose entity's head is read with the others.
    pub(crate) known: Option<KnownActor>,
}
