//! Agents: TalkwAI's AIs (voice, chat, email), each belonging to one tenant forever.

use serde::{Deserialize, Serialize};

use crate::context::{Context, FactKey};
use crate::enums::{AgentStatus, AgentType};
use crate::error::{DomainError, EntityKind};
use crate::ids::{AgentId, TenantId};
use crate::patch;
use crate::state::{ById, Decision, EvolveError, Stamp, State};
use crate::values::{Description, JsonObject, Name, Timestamp};

const KIND: EntityKind = EntityKind::Agent;

/// An agent's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The id.
    pub id: AgentId,
    /// The tenant (`tenantAgents`), fixed at creation.
    pub tenant: TenantId,
    /// Display name.
    pub name: Name,
    /// Optional description.
    pub description: Option<Description>,
    /// Channel; fixed at creation.
    pub agent_type: AgentType,
    /// Settings, a JSON object.
    pub configuration: JsonObject,
    /// Status.
    pub status: AgentStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
}

/// `agent.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgent {
    /// The new agent's id.
    pub id: AgentId,
    /// The tenant link; optional, must equal the subject's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Display name.
    pub name: Name,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    /// Channel.
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    /// Settings (JSON object text); `{}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<JsonObject>,
    /// Initial status; `active` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
}

/// `agent.update`: name and description (`null` clears the description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAgent {
    /// The agent.
    pub id: AgentId,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// New description, or `null` to clear it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub description: Option<Option<Description>>,
}

/// `agent.configure`: replaces the configuration object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureAgent {
    /// The agent.
    pub id: AgentId,
    /// New settings (JSON object text).
    pub configuration: JsonObject,
}

/// `agent.setStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetAgentStatus {
    /// The agent.
    pub id: AgentId,
    /// The new status.
    pub status: AgentStatus,
}

/// Commands on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", content = "body", rename_all = "camelCase")]
pub enum AgentCommand {
    /// Create.
    Create(CreateAgent),
    /// Change name or description.
    Update(UpdateAgent),
    /// Replace the configuration.
    Configure(ConfigureAgent),
    /// Change status.
    SetStatus(SetAgentStatus),
    /// Delete.
    Delete(ById<AgentId>),
}

impl AgentCommand {
    /// The addressed agent.
    pub fn id(&self) -> AgentId {
        match self {
            Self::Create(c) => c.id,
            Self::Update(c) => c.id,
            Self::Configure(c) => c.id,
            Self::SetStatus(c) => c.id,
            Self::Delete(c) => c.id,
        }
    }

    /// Facts the decider needs besides the agent's own state.
    pub fn requirements(&self, tenant: TenantId) -> Vec<FactKey> {
        vec![FactKey::Tenant(tenant)]
    }
}

/// `agent.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentCreated {
    /// Display name.
    pub name: Name,
    /// Description.
    #[serde(default)]
    pub description: Option<Description>,
    /// Channel.
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    /// Settings.
    pub configuration: JsonObject,
    /// Initial status.
    pub status: AgentStatus,
    /// When.
    pub at: Timestamp,
}

/// `agent.updated` v1: only changed fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentUpdated {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// New description (`null`: cleared).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub description: Option<Option<Description>>,
    /// When.
    pub at: Timestamp,
}

/// `agent.configured` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfigured {
    /// New settings.
    pub configuration: JsonObject,
    /// When.
    pub at: Timestamp,
}

/// `agent.statusChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentStatusChanged {
    /// New status.
    pub status: AgentStatus,
    /// When.
    pub at: Timestamp,
}

/// Events of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data")]
pub enum AgentEvent {
    /// Created.
    #[serde(rename = "agent.created")]
    Created(AgentCreated),
    /// Name or description changed.
    #[serde(rename = "agent.updated")]
    Updated(AgentUpdated),
    /// Configuration replaced.
    #[serde(rename = "agent.configured")]
    Configured(AgentConfigured),
    /// Status changed.
    #[serde(rename = "agent.statusChanged")]
    StatusChanged(AgentStatusChanged),
    /// Deleted.
    #[serde(rename = "agent.deleted")]
    Deleted(Stamp),
}

/// Decides an agent command.
pub fn decide(
    state: &State<Agent>,
    command: AgentCommand,
    ctx: &Context<'_>,
) -> Result<Decision<AgentEvent>, DomainError> {
    let tenant = ctx
        .tenant
        .ok_or_else(|| DomainError::validation("tenant", "agents live in a tenant's subjects"))?;
    if !ctx.facts.tenants.contains_key(&tenant) {
        return Err(DomainError::NotFound {
            entity: EntityKind::Tenant,
            field: Some("tenant"),
        });
    }
    let at = ctx.now;
    match command {
        AgentCommand::Create(c) => {
            state.require_absent(KIND)?;
            if c.tenant.is_some_and(|t| t != tenant) {
                return Err(DomainError::validation(
                    "tenant",
                    "must equal the tenant in the subject",
                ));
            }
            Ok(Decision::events(vec![AgentEvent::Created(AgentCreated {
                name: c.name,
                description: c.description,
                agent_type: c.agent_type,
                configuration: c.configuration.unwrap_or_else(JsonObject::empty),
                status: c.status.unwrap_or(AgentStatus::Active),
                at,
            })]))
        }
        AgentCommand::Update(c) => {
            let agent = state.require_live(KIND)?;
            let name = patch::diff(&agent.name, c.name);
            let description = patch::diff_nullable(&agent.description, c.description);
            if name.is_none() && description.is_none() {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![AgentEvent::Updated(AgentUpdated {
                name,
                description,
                at,
            })]))
        }
        AgentCommand::Configure(c) => {
            let agent = state.require_live(KIND)?;
            if agent.configuration == c.configuration {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![AgentEvent::Configured(
                AgentConfigured {
                    configuration: c.configuration,
                    at,
                },
            )]))
        }
        AgentCommand::SetStatus(c) => {
            let agent = state.require_live(KIND)?;
            if agent.status == c.status {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![AgentEvent::StatusChanged(
                AgentStatusChanged {
                    status: c.status,
                    at,
                },
            )]))
        }
        AgentCommand::Delete(_) => {
            state.require_live(KIND)?;
            Ok(Decision::events(vec![AgentEvent::Deleted(Stamp { at })]))
        }
    }
}

/// Applies an agent event strictly.
pub fn apply(
    state: &mut State<Agent>,
    id: AgentId,
    tenant: TenantId,
    event: &AgentEvent,
) -> Result<(), EvolveError> {
    match event {
        AgentEvent::Created(e) => state.create(
            KIND,
            Agent {
                id,
                tenant,
                name: e.name.clone(),
                description: e.description.clone(),
                agent_type: e.agent_type,
                configuration: e.configuration.clone(),
                status: e.status,
                created_at: e.at,
                updated_at: e.at,
            },
        ),
        AgentEvent::Updated(e) => state.mutate_live(KIND, |a| {
            patch::set(&mut a.name, &e.name);
            patch::apply(&mut a.description, &e.description);
            a.updated_at = e.at;
            Ok(())
        }),
        AgentEvent::Configured(e) => state.mutate_live(KIND, |a| {
            a.configuration = e.configuration.clone();
            a.updated_at = e.at;
            Ok(())
        }),
        AgentEvent::StatusChanged(e) => state.mutate_live(KIND, |a| {
            a.status = e.status;
            a.updated_at = e.at;
            Ok(())
        }),
        AgentEvent::Deleted(_) => state.delete(KIND),
    }
}
