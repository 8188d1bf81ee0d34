//! What a decider knows besides the aggregate's own state: the clock, the actor, and facts
//! about other aggregates and uniqueness guards that the command service loaded from the log.

use std::collections::HashMap;

use uuid::Uuid;

use crate::admin::Admin;
use crate::agent::Agent;
use crate::enums::{AdminRole, MemberRole};
use crate::guard::GuardKey;
use crate::ids::{AdminId, AgentId, MemberId, TenantId, UserId};
use crate::member::Member;
use crate::tenant::Tenant;
use crate::user::User;
use crate::values::{JsonObject, Timestamp};

/// Who issues a command, resolved from the bearer token and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The platform admin token (like the seed's `INSTANT_ADMIN_TOKEN`): bootstraps tenants and
    /// the first superadmin, and may do anything.
    Platform,
    /// A TalkwAI admin.
    Admin {
        /// The `$users` id of the token.
        user: UserId,
        /// The admin entity linked to that user.
        admin: AdminId,
        /// Current role, from the log.
        role: AdminRole,
        /// Current specific permissions (`{"allow": [...], "deny": [...]}`), from the log.
        permissions: Option<JsonObject>,
        /// Whether the admin is active.
        active: bool,
    },
    /// A member of a client company.
    Member {
        /// The `$users` id of the token.
        user: UserId,
        /// The member entity linked to that user.
        member: MemberId,
        /// The member's tenant.
        tenant: TenantId,
        /// Current role, from the log.
        role: MemberRole,
        /// Whether the member is active.
        active: bool,
    },
}

/// Which fact a command needs loaded before it can be decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FactKey {
    /// A tenant's state.
    Tenant(TenantId),
    /// A member's state (within the command's tenant).
    Member(MemberId),
    /// An agent's state (within the command's tenant).
    Agent(AgentId),
    /// An admin's state.
    Admin(AdminId),
    /// A `$users` identity's state.
    User(UserId),
    /// Who holds a uniqueness guard.
    Guard(GuardKey),
}

/// Facts about other aggregates, keyed by id. A missing entry means "does not exist (or was
/// deleted)", which is also what a cross-tenant reference looks like: the command service only
/// loads references from the command's own tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Live tenants.
    pub tenants: HashMap<TenantId, Tenant>,
    /// Live members of the command's tenant.
    pub members: HashMap<MemberId, Member>,
    /// Live agents of the command's tenant.
    pub agents: HashMap<AgentId, Agent>,
    /// Live admins.
    pub admins: HashMap<AdminId, Admin>,
    /// Live users.
    pub users: HashMap<UserId, User>,
    /// Current owner of each loaded guard (`None`: free).
    pub guards: HashMap<GuardKey, Option<Uuid>>,
}

impl Facts {
    /// Who holds `key`; a guard that was not loaded counts as free.
    pub fn guard_owner(&self, key: &GuardKey) -> Option<Uuid> {
        self.guards.get(key).copied().flatten()
    }
}

/// Everything a decider may read besides the aggregate state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The server's clock, epoch milliseconds; stamps every event.
    pub now: Timestamp,
    /// Who is acting.
    pub actor: &'a Actor,
    /// The tenant named in the command's subject (`None` for platform commands).
    pub tenant: Option<TenantId>,
    /// Loaded facts about other aggregates and guards.
    pub facts: &'a Facts,
    /// A fresh random value the caller draws for each decision (a suspension's erasure token
    /// is made of it): deciders stay pure and never draw randomness themselves.
    pub nonce: Uuid,
}
