//! The aggregate-agnostic surface: one [`Command`], [`Event`] and [`AggregateState`] enum over
//! every aggregate, the top-level [`decide`]/[`evolve`] pair, and the versioned event body.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admin::{self, Admin, AdminCommand, AdminEvent};
use crate::agent::{self, Agent, AgentCommand, AgentEvent};
use crate::context::{Context, FactKey};
use crate::error::{DomainError, EntityKind};
use crate::ids::{AdminId, AgentId, MemberId, TaskId, TenantId, UserId};
use crate::member::{self, Member, MemberCommand, MemberEvent};
use crate::policy;
use crate::state::{Decision, EvolveError, State};
use crate::task::{self, Task, TaskCommand, TaskEvent};
use crate::tenant::{self, Tenant, TenantCommand, TenantEvent};
use crate::upcast;
use crate::user::{self, User, UserCommand, UserEvent};

/// Where an aggregate lives: its kind, its tenant (`None` for platform aggregates: admins and
/// users) and its id. Maps one to one onto an event subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AggregateRef {
    /// The aggregate kind.
    pub kind: EntityKind,
    /// The owning tenant; a tenant aggregate's tenant is itself.
    pub tenant: Option<TenantId>,
    /// The entity id.
    pub id: Uuid,
}

/// A command for any aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "aggregate", content = "command", rename_all = "camelCase")]
pub enum Command {
    /// A tenant command.
    Tenant(TenantCommand),
    /// A member command.
    Member(MemberCommand),
    /// An admin command.
    Admin(AdminCommand),
    /// An agent command.
    Agent(AgentCommand),
    /// A task command.
    Task(TaskCommand),
    /// A `$users` command.
    User(UserCommand),
}

impl Command {
    /// The aggregate kind addressed.
    pub fn kind(&self) -> EntityKind {
        match self {
            Self::Tenant(_) => EntityKind::Tenant,
            Self::Member(_) => EntityKind::Member,
            Self::Admin(_) => EntityKind::Admin,
            Self::Agent(_) => EntityKind::Agent,
            Self::Task(_) => EntityKind::Task,
            Self::User(_) => EntityKind::User,
        }
    }

    /// The action as named in subjects (`create`, `setStatus`, `linkUser`...).
    pub fn action(&self) -> &'static str {
        match self {
            Self::Tenant(c) => match c {
                TenantCommand::Create(_) => "create",
                TenantCommand::Update(_) => "update",
                TenantCommand::SetStatus(_) => "setStatus",
                TenantCommand::Delete(_) => "delete",
                TenantCommand::Erase(_) => "erase",
            },
            Self::Member(c) => match c {
                MemberCommand::Create(_) => "create",
                MemberCommand::Update(_) => "update",
                MemberCommand::SetRole(_) => "setRole",
                MemberCommand::SetStatus(_) => "setStatus",
                MemberCommand::LinkUser(_) => "linkUser",
                MemberCommand::UnlinkUser(_) => "unlinkUser",
                MemberCommand::Delete(_) => "delete",
                MemberCommand::Erase(_) => "erase",
            },
            Self::Admin(c) => match c {
                AdminCommand::Create(_) => "create",
                AdminCommand::Update(_) => "update",
                AdminCommand::SetRole(_) => "setRole",
                AdminCommand::SetPermissions(_) => "setPermissions",
                AdminCommand::SetStatus(_) => "setStatus",
                AdminCommand::LinkUser(_) => "linkUser",
                AdminCommand::UnlinkUser(_) => "unlinkUser",
                AdminCommand::Delete(_) => "delete",
                AdminCommand::Erase(_) => "erase",
            },
            Self::Agent(c) => match c {
                AgentCommand::Create(_) => "create",
                AgentCommand::Update(_) => "update",
                AgentCommand::Configure(_) => "configure",
                AgentCommand::SetStatus(_) => "setStatus",
                AgentCommand::Delete(_) => "delete",
            },
            Self::Task(c) => match c {
                TaskCommand::Create(_) => "create",
                TaskCommand::Update(_) => "update",
                TaskCommand::SetMetadata(_) => "setMetadata",
                TaskCommand::LinkAgent(_) => "linkAgent",
                TaskCommand::UnlinkAgent(_) => "unlinkAgent",
                TaskCommand::Assign(_) => "assign",
                TaskCommand::Unassign(_) => "unassign",
                TaskCommand::Start(_) => "start",
                TaskCommand::Complete(_) => "complete",
                TaskCommand::Fail(_) => "fail",
                TaskCommand::Cancel(_) => "cancel",
                TaskCommand::Retry(_) => "retry",
                TaskCommand::Delete(_) => "delete",
                TaskCommand::EraseContent(_) => "eraseContent",
            },
            Self::User(c) => match c {
                UserCommand::Create(_) => "create",
                UserCommand::Update(_) => "update",
                UserCommand::Delete(_) => "delete",
                UserCommand::Erase(_) => "erase",
            },
        }
    }

    /// The permission name, `<aggregate>.<action>` (`task.start`), used by the policy.
    pub fn permission(&self) -> String {
        format!("{}.{}", self.kind(), self.action())
    }

    /// Whether the command is a platform command (`talkwai.cmd.platform.*`): tenant creation,
    /// admins and users.
    pub fn is_platform(&self) -> bool {
        matches!(
            self,
            Self::Tenant(TenantCommand::Create(_)) | Self::Admin(_) | Self::User(_)
        )
    }

    /// The addressed aggregate, given the tenant named in the subject.
    pub fn target(&self, scope: Option<TenantId>) -> AggregateRef {
        let (kind, tenant, id) = match self {
            Self::Tenant(c) => (EntityKind::Tenant, Some(c.id()), c.id().0),
            Self::Member(c) => (EntityKind::Member, scope, c.id().0),
            Self::Admin(c) => (EntityKind::Admin, None, c.id().0),
            Self::Agent(c) => (EntityKind::Agent, scope, c.id().0),
            Self::Task(c) => (EntityKind::Task, scope, c.id().0),
            Self::User(c) => (EntityKind::User, None, c.id().0),
        };
        AggregateRef { kind, tenant, id }
    }

    /// The facts the decider reads besides the target's own state: the scope tenant (always,
    /// for the policy), referenced entities and the uniqueness guards a claim needs.
    pub fn requirements(&self, scope: Option<TenantId>) -> Vec<FactKey> {
        let mut keys = match (self, scope) {
            (Self::Member(c), Some(t)) => c.requirements(t),
            (Self::Agent(c), Some(t)) => c.requirements(t),
            (Self::Task(c), Some(t)) => c.requirements(t),
            (Self::Admin(c), _) => c.requirements(),
            (Self::User(c), _) => c.requirements(),
            (Self::Tenant(_) | Self::Member(_) | Self::Agent(_) | Self::Task(_), _) => Vec::new(),
        };
        if let Some(t) = scope
            && !keys.contains(&FactKey::Tenant(t))
        {
            keys.insert(0, FactKey::Tenant(t));
        }
        keys
    }
}

/// An event of any aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Event {
    /// A tenant event.
    Tenant(TenantEvent),
    /// A member event.
    Member(MemberEvent),
    /// An admin event.
    Admin(AdminEvent),
    /// An agent event.
    Agent(AgentEvent),
    /// A task event.
    Task(TaskEvent),
    /// A `$users` event.
    User(UserEvent),
}

/// The wire body of one event: `{"type", "version", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The event type, `<aggregate>.<name>` (`task.started`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version of the data's shape, per event type; also in the `Talkwai-Event-Version`
    /// header.
    pub version: u32,
    /// The payload.
    pub data: serde_json::Value,
}

/// Why an event body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The type names no known aggregate or event.
    #[error("unknown event type {0}")]
    UnknownType(String),
    /// The version is newer than this code (or was never written).
    #[error("unknown version {version} of event type {event_type}")]
    UnknownVersion {
        /// The type.
        event_type: String,
        /// The version.
        version: u32,
    },
    /// The data does not match the type's shape.
    #[error("invalid data for {event_type}: {message}")]
    InvalidData {
        /// The type.
        event_type: String,
        /// The decoder's message.
        message: String,
    },
}

impl Event {
    /// The aggregate kind the event belongs to.
    pub fn kind(&self) -> EntityKind {
        match self {
            Self::Tenant(_) => EntityKind::Tenant,
            Self::Member(_) => EntityKind::Member,
            Self::Admin(_) => EntityKind::Admin,
            Self::Agent(_) => EntityKind::Agent,
            Self::Task(_) => EntityKind::Task,
            Self::User(_) => EntityKind::User,
        }
    }

    /// Encodes the event as its wire body.
    pub fn encode(&self) -> EventBody {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let event_type = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned();
        let data = value
            .get("data")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        EventBody {
            version: upcast::current_version(&event_type),
            event_type,
            data,
        }
    }

    /// The wire type name (`task.started`).
    pub fn type_name(&self) -> String {
        self.encode().event_type
    }

    /// The version writers write for this event's type (see [`upcast`]).
    pub fn version(&self) -> u32 {
        self.encode().version
    }

    /// Decodes a wire body of any version ever written: its data is first upcast to the
    /// type's current version ([`upcast::upcast`], the one place versions are handled), then
    /// read as the current shape. A version newer than this code is
    /// [`DecodeError::UnknownVersion`].
    pub fn decode(body: &EventBody) -> Result<Self, DecodeError> {
        let ty = body.event_type.as_str();
        let (aggregate, _) = ty
            .split_once('.')
            .ok_or_else(|| DecodeError::UnknownType(ty.into()))?;
        let data = upcast::upcast(body)?;
        match aggregate {
            "tenant" => decode_as(ty, &data).map(Self::Tenant),
            "member" => decode_as(ty, &data).map(Self::Member),
            "admin" => decode_as(ty, &data).map(Self::Admin),
            "agent" => decode_as(ty, &data).map(Self::Agent),
            "task" => decode_as(ty, &data).map(Self::Task),
            "user" => decode_as(ty, &data).map(Self::User),
            _ => Err(DecodeError::UnknownType(ty.into())),
        }
    }
}

/// Decodes `{"type": ty, "data": data}` as one aggregate's event enum. An error is
/// [`DecodeError::UnknownType`] only when the type itself is unknown: a probe with `null` data
/// (which holds no nested enum value) tells a bad tag from a bad enum value inside the data,
/// whose serde error reads the same ("unknown variant ...").
fn decode_as<T: serde::de::DeserializeOwned>(
    ty: &str,
    data: &serde_json::Value,
) -> Result<T, DecodeError> {
    let tagged = |data: &serde_json::Value| serde_json::json!({ "type": ty, "data": data });
    serde_json::from_value(tagged(data)).map_err(|e| {
        let probe = serde_json::from_value::<T>(tagged(&serde_json::Value::Null));
        match probe {
            Err(p) if p.to_string().starts_with("unknown variant") => {
                DecodeError::UnknownType(ty.into())
            }
            _ => DecodeError::InvalidData {
                event_type: ty.into(),
                message: e.to_string(),
            },
        }
    })
}

/// The state of any aggregate, with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateState {
    /// A tenant.
    Tenant(TenantId, State<Tenant>),
    /// A member of a tenant.
    Member(TenantId, MemberId, State<Member>),
    /// An admin.
    Admin(AdminId, State<Admin>),
    /// An agent of a tenant.
    Agent(TenantId, AgentId, State<Agent>),
    /// A task of a tenant.
    Task(TenantId, TaskId, State<Task>),
    /// A `$users` identity.
    User(UserId, State<User>),
}

impl AggregateState {
    /// The empty state of the aggregate at `target`. Tenant-scoped kinds without a tenant get
    /// the nil tenant (they will refuse every command).
    pub fn new(target: AggregateRef) -> Self {
        let tenant = target.tenant.unwrap_or(TenantId(Uuid::nil()));
        match target.kind {
            EntityKind::Tenant => Self::Tenant(TenantId(target.id), State::default()),
            EntityKind::Member => Self::Member(tenant, MemberId(target.id), State::default()),
            EntityKind::Admin => Self::Admin(AdminId(target.id), State::default()),
            EntityKind::Agent => Self::Agent(tenant, AgentId(target.id), State::default()),
            EntityKind::Task => Self::Task(tenant, TaskId(target.id), State::default()),
            EntityKind::User => Self::User(UserId(target.id), State::default()),
        }
    }

    /// The aggregate's address.
    pub fn target(&self) -> AggregateRef {
        let (kind, tenant, id) = match self {
            Self::Tenant(id, _) => (EntityKind::Tenant, Some(*id), id.0),
            Self::Member(t, id, _) => (EntityKind::Member, Some(*t), id.0),
            Self::Admin(id, _) => (EntityKind::Admin, None, id.0),
            Self::Agent(t, id, _) => (EntityKind::Agent, Some(*t), id.0),
            Self::Task(t, id, _) => (EntityKind::Task, Some(*t), id.0),
            Self::User(id, _) => (EntityKind::User, None, id.0),
        };
        AggregateRef { kind, tenant, id }
    }

    /// Number of events applied.
    pub fn version(&self) -> u64 {
        match self {
            Self::Tenant(_, s) => s.version,
            Self::Member(_, _, s) => s.version,
            Self::Admin(_, s) => s.version,
            Self::Agent(_, _, s) => s.version,
            Self::Task(_, _, s) => s.version,
            Self::User(_, s) => s.version,
        }
    }

    /// Whether the entity is live (created and not deleted).
    pub fn is_live(&self) -> bool {
        match self {
            Self::Tenant(_, s) => s.live().is_some(),
            Self::Member(_, _, s) => s.live().is_some(),
            Self::Admin(_, s) => s.live().is_some(),
            Self::Agent(_, _, s) => s.live().is_some(),
            Self::Task(_, _, s) => s.live().is_some(),
            Self::User(_, s) => s.live().is_some(),
        }
    }
}

/// Decides a command against the target aggregate's state: checks the policy, then asks the
/// aggregate's decider. Pure: no I/O, no clock but `ctx.now`.
pub fn decide(
    state: &AggregateState,
    command: Command,
    ctx: &Context<'_>,
) -> Result<Decision<Event>, DomainError> {
    if state.target() != command.target(ctx.tenant) {
        return Err(DomainError::validation(
            "id",
            "command does not address this aggregate",
        ));
    }
    // An erased tenant refuses everything addressed to it, whoever asks.
    if let Some(scope) = ctx.tenant
        && let Some(tenant) = ctx.facts.tenants.get(&scope)
    {
        tenant.require_not_erased()?;
    }
    policy::authorize(ctx.actor, &command, state, ctx)?;
    match (state, command) {
        (AggregateState::Tenant(_, s), Command::Tenant(c)) => {
            tenant::decide(s, c, ctx).map(|d| d.map(Event::Tenant))
        }
        (AggregateState::Member(_, _, s), Command::Member(c)) => {
            member::decide(s, c, ctx).map(|d| d.map(Event::Member))
        }
        (AggregateState::Admin(_, s), Command::Admin(c)) => {
            admin::decide(s, c, ctx).map(|d| d.map(Event::Admin))
        }
        (AggregateState::Agent(_, _, s), Command::Agent(c)) => {
            agent::decide(s, c, ctx).map(|d| d.map(Event::Agent))
        }
        (AggregateState::Task(_, _, s), Command::Task(c)) => {
            task::decide(s, c, ctx).map(|d| d.map(Event::Task))
        }
        (AggregateState::User(_, s), Command::User(c)) => {
            user::decide(s, c, ctx).map(|d| d.map(Event::User))
        }
        _ => Err(DomainError::validation(
            "id",
            "command does not address this aggregate",
        )),
    }
}

/// Applies an event strictly: refuses (and leaves the state unchanged) an event that cannot
/// follow it. Readers of the log use this to surface corruption.
pub fn apply(state: &mut AggregateState, event: &Event) -> Result<(), EvolveError> {
    match (state, event) {
        (AggregateState::Tenant(id, s), Event::Tenant(e)) => tenant::apply(s, *id, e),
        (AggregateState::Member(t, id, s), Event::Member(e)) => member::apply(s, *id, *t, e),
        (AggregateState::Admin(id, s), Event::Admin(e)) => admin::apply(s, *id, e),
        (AggregateState::Agent(t, id, s), Event::Agent(e)) => agent::apply(s, *id, *t, e),
        (AggregateState::Task(t, id, s), Event::Task(e)) => task::apply(s, *id, *t, e),
        (AggregateState::User(id, s), Event::User(e)) => user::apply(s, *id, e),
        (state, event) => Err(EvolveError::WrongAggregate {
            event: event.kind(),
            state: state.target().kind,
        }),
    }
}

/// Folds one event into the state. Total: an event that cannot follow the state leaves it
/// unchanged (use [`apply`] to detect that).
pub fn evolve(mut state: AggregateState, event: &Event) -> AggregateState {
    // The strict form already leaves the state untouched on error.
    let _ignored = apply(&mut state, event);
    state
}

/// Every command action, by aggregate, as named in subjects (`talkwai.cmd.<t>.<aggregate>.<action>`).
/// Tests check that each one decodes into a command and that no command is missing.
pub const ACTIONS: &[(EntityKind, &[&str])] = &[
    (
        EntityKind::Tenant,
        &["create", "update", "setStatus", "delete", "erase"],
    ),
    (
        EntityKind::Member,
        &[
            "create",
            "update",
            "setRole",
            "setStatus",
            "linkUser",
            "unlinkUser",
            "delete",
            "erase",
        ],
    ),
    (
        EntityKind::Admin,
        &[
            "create",
            "update",
            "setRole",
            "setPermissions",
            "setStatus",
            "linkUser",
            "unlinkUser",
            "delete",
            "erase",
        ],
    ),
    (
        EntityKind::Agent,
        &["create", "update", "configure", "setStatus", "delete"],
    ),
    (
        EntityKind::Task,
        &[
            "create",
            "update",
            "setMetadata",
            "linkAgent",
            "unlinkAgent",
            "assign",
            "unassign",
            "start",
            "complete",
            "fail",
            "cancel",
            "retry",
            "delete",
            "eraseContent",
        ],
    ),
    (EntityKind::User, &["create", "update", "delete", "erase"]),
];
