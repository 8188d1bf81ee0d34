//! Tasks: calls, emails and other work, each belonging to one tenant forever, optionally handled
//! by an agent, assigned to a member and created by a member or an admin.
//!
//! Lifecycle: `pending → in_progress → completed | failed`, `pending → failed` (cancel),
//! `failed → pending` (retry); `completed` is final. `startedAt` is set by start, `completedAt`
//! by complete, fail and cancel; retry clears both. Complete and fail may carry the outcome an
//! agent reports ([`TaskOutcome`], in `task.completed` / `task.failed` v2); retry clears it.

use serde::{Deserialize, Serialize};

use crate::context::{Actor, Context, FactKey};
use crate::enums::{AgentStatus, MemberStatus, TaskPriority, TaskStatus, TaskType};
use crate::erasure::{ERASED_TEXT, erased_address};
use crate::error::{DomainError, EntityKind};
use crate::ids::{AdminId, AgentId, MemberId, TaskId, TenantId};
use crate::patch;
use crate::state::{ById, Decision, EvolveError, Stamp, State};
use crate::values::{
    Address, Content, DurationSecs, JsonObject, OutcomeSummary, Reason, Subject, Timestamp,
    TranscriptRef,
};

const KIND: EntityKind = EntityKind::Task;

/// A task's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The id.
    pub id: TaskId,
    /// The tenant (`tenantTasks`), fixed at creation.
    pub tenant: TenantId,
    /// What it is.
    pub task_type: TaskType,
    /// Lifecycle status.
    pub status: TaskStatus,
    /// Priority.
    pub priority: TaskPriority,
    /// Phone number or email address.
    pub from_address: Address,
    /// Phone number or email address.
    pub to_address: Address,
    /// Optional subject.
    pub subject: Option<Subject>,
    /// Optional content.
    pub content: Option<Content>,
    /// Optional additional data, a JSON object.
    pub metadata: Option<JsonObject>,
    /// When it should happen.
    pub scheduled_at: Option<Timestamp>,
    /// When it was started (set by `start`).
    pub started_at: Option<Timestamp>,
    /// When it ended (set by `complete`, `fail`, `cancel`).
    pub completed_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// Handling agent (`taskAgent`).
    pub agent: Option<AgentId>,
    /// Assigned member (`taskAssignedMember`).
    pub assigned_to: Option<MemberId>,
    /// Creating member (`taskCreatedByMember`).
    pub created_by: Option<MemberId>,
    /// Creating admin (`taskCreatedByAdmin`).
    pub created_by_admin: Option<AdminId>,
    /// What the agent reported when it completed or failed the task (cleared by retry).
    pub outcome: Option<TaskOutcome>,
    /// Content erased (`task.contentErased`): addresses, subject, content and the outcome's
    /// summary are placeholders, and none of them is written again.
    pub erased: bool,
}

/// What an agent reports when it completes or fails a task: given with `task.complete` /
/// `task.fail`, stored in `task.completed` / `task.failed` from version 2 on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskOutcome {
    /// What happened.
    pub summary: OutcomeSummary,
    /// How long the work took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<DurationSecs>,
    /// Where the transcript of the work is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_ref: Option<TranscriptRef>,
}

/// `task.create`: the seed's `createTask`. `createdBy` comes from the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTask {
    /// The new task's id.
    pub id: TaskId,
    /// The tenant link; optional, must equal the subject's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// What it is.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Priority; `medium` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<TaskPriority>,
    /// Phone number or email address.
    pub from_address: Address,
    /// Phone number or email address.
    pub to_address: Address,
    /// Optional subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// Optional content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional additional data (JSON object text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    /// When it should happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Timestamp>,
    /// Handling agent, of the same tenant and not inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// Assigned member, an active member of the same tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<MemberId>,
}

/// `task.update`: the details group (`null` clears an optional field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTask {
    /// The task.
    pub id: TaskId,
    /// New type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<TaskPriority>,
    /// New from address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_address: Option<Address>,
    /// New to address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_address: Option<Address>,
    /// New subject or `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub subject: Option<Option<Subject>>,
    /// New content or `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub content: Option<Option<Content>>,
    /// New schedule or `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub scheduled_at: Option<Option<Timestamp>>,
}

/// `task.setMetadata`: replaces the metadata (`null` clears it). Allowed in every status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetTaskMetadata {
    /// The task.
    pub id: TaskId,
    /// New metadata (JSON object text) or `null`.
    pub metadata: Option<JsonObject>,
}

/// `task.linkAgent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkAgent {
    /// The task.
    pub id: TaskId,
    /// The agent.
    pub agent: AgentId,
}

/// `task.assign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignTask {
    /// The task.
    pub id: TaskId,
    /// The member.
    pub assigned_to: MemberId,
}

/// `task.complete`, with what the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteTask {
    /// The task.
    pub id: TaskId,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TaskOutcome>,
}

/// `task.fail`, with an optional reason and what the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailTask {
    /// The task.
    pub id: TaskId,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TaskOutcome>,
}

/// `task.cancel`, with an optional reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndTask {
    /// The task.
    pub id: TaskId,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// Commands on a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", content = "body", rename_all = "camelCase")]
pub enum TaskCommand {
    /// Create (status `pending`).
    Create(CreateTask),
    /// Change details.
    Update(UpdateTask),
    /// Replace metadata.
    SetMetadata(SetTaskMetadata),
    /// Link an agent (replaces the current one).
    LinkAgent(LinkAgent),
    /// Unlink the agent.
    UnlinkAgent(ById<TaskId>),
    /// Assign to a member (replaces the current assignee).
    Assign(AssignTask),
    /// Remove the assignee.
    Unassign(ById<TaskId>),
    /// `pending → in_progress`.
    Start(ById<TaskId>),
    /// `in_progress → completed`.
    Complete(CompleteTask),
    /// `in_progress → failed`.
    Fail(FailTask),
    /// `pending → failed`.
    Cancel(EndTask),
    /// `failed → pending`.
    Retry(ById<TaskId>),
    /// Delete.
    Delete(ById<TaskId>),
    /// Erase its personal content (addresses, subject, content, outcome summary): its key is
    /// destroyed; status, links and timestamps stay.
    EraseContent(ById<TaskId>),
}

impl TaskCommand {
    /// The addressed task.
    pub fn id(&self) -> TaskId {
        match self {
            Self::Create(c) => c.id,
            Self::Update(c) => c.id,
            Self::SetMetadata(c) => c.id,
            Self::LinkAgent(c) => c.id,
            Self::Assign(c) => c.id,
            Self::Complete(c) => c.id,
            Self::Fail(c) => c.id,
            Self::Cancel(c) => c.id,
            Self::UnlinkAgent(c)
            | Self::Unassign(c)
            | Self::Start(c)
            | Self::Retry(c)
            | Self::Delete(c)
            | Self::EraseContent(c) => c.id,
        }
    }

    /// Facts the decider needs besides the task's own state.
    pub fn requirements(&self, tenant: TenantId) -> Vec<FactKey> {
        let mut keys = vec![FactKey::Tenant(tenant)];
        match self {
            Self::Create(c) => {
                keys.extend(c.agent.map(FactKey::Agent));
                keys.extend(c.assigned_to.map(FactKey::Member));
            }
            Self::LinkAgent(c) => keys.push(FactKey::Agent(c.agent)),
            Self::Assign(c) => keys.push(FactKey::Member(c.assigned_to)),
            _ => {}
        }
        keys
    }
}

/// `task.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskCreated {
    /// What it is.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Initial status (always `pending` today).
    pub status: TaskStatus,
    /// Priority.
    pub priority: TaskPriority,
    /// From.
    pub from_address: Address,
    /// To.
    pub to_address: Address,
    /// Subject.
    #[serde(default)]
    pub subject: Option<Subject>,
    /// Content.
    #[serde(default)]
    pub content: Option<Content>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<JsonObject>,
    /// Schedule.
    #[serde(default)]
    pub scheduled_at: Option<Timestamp>,
    /// Agent.
    #[serde(default)]
    pub agent: Option<AgentId>,
    /// Assignee.
    #[serde(default)]
    pub assigned_to: Option<MemberId>,
    /// Creating member.
    #[serde(default)]
    pub created_by: Option<MemberId>,
    /// Creating admin.
    #[serde(default)]
    pub created_by_admin: Option<AdminId>,
    /// When.
    pub at: Timestamp,
}

/// `task.updated` v1: only changed fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskUpdated {
    /// New type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<TaskPriority>,
    /// New from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_address: Option<Address>,
    /// New to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_address: Option<Address>,
    /// New subject (`null`: cleared).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub subject: Option<Option<Subject>>,
    /// New content (`null`: cleared).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub content: Option<Option<Content>>,
    /// New schedule (`null`: cleared).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub scheduled_at: Option<Option<Timestamp>>,
    /// When.
    pub at: Timestamp,
}

impl TaskUpdated {
    fn is_empty(&self) -> bool {
        self.task_type.is_none()
            && self.priority.is_none()
            && self.from_address.is_none()
            && self.to_address.is_none()
            && self.subject.is_none()
            && self.content.is_none()
            && self.scheduled_at.is_none()
    }
}

/// `task.metadataSet` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskMetadataSet {
    /// New metadata (`null`: cleared).
    pub metadata: Option<JsonObject>,
    /// When.
    pub at: Timestamp,
}

/// `task.agentLinked` v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskAgentLinked {
    /// The agent.
    pub agent: AgentId,
    /// When.
    pub at: Timestamp,
}

/// `task.assigned` v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskAssigned {
    /// The new assignee.
    pub assigned_to: MemberId,
    /// The previous assignee, if any.
    #[serde(default)]
    pub previous: Option<MemberId>,
    /// When.
    pub at: Timestamp,
}

/// `task.cancelled` v1, and `task.failed` v1 (read today through its upcaster to v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskEnded {
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// When (also `completedAt`).
    pub at: Timestamp,
}

/// `task.completed` v2: v1 held only `at` and is read as v2 with no outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskCompleted {
    /// What the agent reported (`null`: nothing, as in every v1 event).
    #[serde(default)]
    pub outcome: Option<TaskOutcome>,
    /// When (also `completedAt`).
    pub at: Timestamp,
}

/// `task.failed` v2: v1 held `reason` and `at` and is read as v2 with no outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskFailed {
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// What the agent reported (`null`: nothing, as in every v1 event).
    #[serde(default)]
    pub outcome: Option<TaskOutcome>,
    /// When (also `completedAt`).
    pub at: Timestamp,
}

/// Upcaster `task.completed` v1 → v2: the v1 data (a [`Stamp`]) read strictly, with no outcome.
pub fn upcast_completed_v1(
    data: serde_json::Value,
) -> Result<serde_json::Value, serde_json::Error> {
    let v1: Stamp = serde_json::from_value(data)?;
    serde_json::to_value(TaskCompleted {
        outcome: None,
        at: v1.at,
    })
}

/// Upcaster `task.failed` v1 → v2: the v1 data (a [`TaskEnded`]) read strictly, with no
/// outcome.
pub fn upcast_failed_v1(data: serde_json::Value) -> Result<serde_json::Value, serde_json::Error> {
    let v1: TaskEnded = serde_json::from_value(data)?;
    serde_json::to_value(TaskFailed {
        reason: v1.reason,
        outcome: None,
        at: v1.at,
    })
}

/// Events of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data")]
pub enum TaskEvent {
    /// Created, `pending`.
    #[serde(rename = "task.created")]
    Created(TaskCreated),
    /// Details changed.
    #[serde(rename = "task.updated")]
    Updated(TaskUpdated),
    /// Metadata replaced.
    #[serde(rename = "task.metadataSet")]
    MetadataSet(TaskMetadataSet),
    /// Agent linked.
    #[serde(rename = "task.agentLinked")]
    AgentLinked(TaskAgentLinked),
    /// Agent unlinked.
    #[serde(rename = "task.agentUnlinked")]
    AgentUnlinked(Stamp),
    /// Assigned to a member.
    #[serde(rename = "task.assigned")]
    Assigned(TaskAssigned),
    /// Assignee removed.
    #[serde(rename = "task.unassigned")]
    Unassigned(Stamp),
    /// `pending → in_progress`; `at` is `startedAt`.
    #[serde(rename = "task.started")]
    Started(Stamp),
    /// `in_progress → completed`; `at` is `completedAt`.
    #[serde(rename = "task.completed")]
    Completed(TaskCompleted),
    /// `in_progress → failed`.
    #[serde(rename = "task.failed")]
    Failed(TaskFailed),
    /// `pending → failed`.
    #[serde(rename = "task.cancelled")]
    Cancelled(TaskEnded),
    /// `failed → pending`.
    #[serde(rename = "task.retried")]
    Retried(Stamp),
    /// Deleted.
    #[serde(rename = "task.deleted")]
    Deleted(Stamp),
    /// Personal content erased (its key destroyed): from here on every reader shows its
    /// addresses, subject, content and outcome summary as erased.
    #[serde(rename = "task.contentErased")]
    ContentErased(Stamp),
}

impl TaskEvent {
    /// The wire type name (`task.started`...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "task.created",
            Self::Updated(_) => "task.updated",
            Self::MetadataSet(_) => "task.metadataSet",
            Self::AgentLinked(_) => "task.agentLinked",
            Self::AgentUnlinked(_) => "task.agentUnlinked",
            Self::Assigned(_) => "task.assigned",
            Self::Unassigned(_) => "task.unassigned",
            Self::Started(_) => "task.started",
            Self::Completed(_) => "task.completed",
            Self::Failed(_) => "task.failed",
            Self::Cancelled(_) => "task.cancelled",
            Self::Retried(_) => "task.retried",
            Self::Deleted(_) => "task.deleted",
            Self::ContentErased(_) => "task.contentErased",
        }
    }
}

fn check_agent(agent: AgentId, ctx: &Context<'_>) -> Result<(), DomainError> {
    let Some(found) = ctx.facts.agents.get(&agent) else {
        return Err(DomainError::NotFound {
            entity: EntityKind::Agent,
            field: Some("agent"),
        });
    };
    if Some(found.tenant) != ctx.tenant {
        return Err(DomainError::NotFound {
            entity: EntityKind::Agent,
            field: Some("agent"),
        });
    }
    if found.status == AgentStatus::Inactive {
        return Err(DomainError::InvalidReference {
            field: "agent",
            message: "agent is inactive".into(),
        });
    }
    Ok(())
}

fn check_assignee(member: MemberId, ctx: &Context<'_>) -> Result<(), DomainError> {
    let Some(found) = ctx.facts.members.get(&member) else {
        return Err(DomainError::NotFound {
            entity: EntityKind::Member,
            field: Some("assignedTo"),
        });
    };
    if Some(found.tenant) != ctx.tenant {
        return Err(DomainError::NotFound {
            entity: EntityKind::Member,
            field: Some("assignedTo"),
        });
    }
    if found.erased {
        return Err(DomainError::InvalidReference {
            field: "assignedTo",
            message: "member was erased".into(),
        });
    }
    if found.status != MemberStatus::Active {
        return Err(DomainError::InvalidReference {
            field: "assignedTo",
            message: "member is inactive".into(),
        });
    }
    Ok(())
}

fn transition_error(task: &Task, action: &'static str) -> DomainError {
    DomainError::InvalidTransition {
        entity: KIND,
        action,
        status: task.status.as_str(),
    }
}

fn require_not_completed(task: &Task, action: &'static str) -> Result<(), DomainError> {
    if task.status == TaskStatus::Completed {
        Err(transition_error(task, action))
    } else {
        Ok(())
    }
}

/// Decides a task command.
pub fn decide(
    state: &State<Task>,
    command: TaskCommand,
    ctx: &Context<'_>,
) -> Result<Decision<TaskEvent>, DomainError> {
    let tenant = ctx
        .tenant
        .ok_or_else(|| DomainError::validation("tenant", "tasks live in a tenant's subjects"))?;
    if !ctx.facts.tenants.contains_key(&tenant) {
        return Err(DomainError::NotFound {
            entity: EntityKind::Tenant,
            field: Some("tenant"),
        });
    }
    let at = ctx.now;
    let one = |event| Ok(Decision::events(vec![event]));
    match command {
        TaskCommand::Create(c) => {
            state.require_absent(KIND)?;
            if c.tenant.is_some_and(|t| t != tenant) {
                return Err(DomainError::validation(
                    "tenant",
                    "must equal the tenant in the subject",
                ));
            }
            if let Some(agent) = c.agent {
                check_agent(agent, ctx)?;
            }
            if let Some(member) = c.assigned_to {
                check_assignee(member, ctx)?;
            }
            let (created_by, created_by_admin) = match ctx.actor {
                Actor::Member { member, .. } => (Some(*member), None),
                Actor::Admin { admin, .. } => (None, Some(*admin)),
                Actor::Platform => (None, None),
            };
            one(TaskEvent::Created(TaskCreated {
                task_type: c.task_type,
                status: TaskStatus::Pending,
                priority: c.priority.unwrap_or_default(),
                from_address: c.from_address,
                to_address: c.to_address,
                subject: c.subject,
                content: c.content,
                metadata: c.metadata,
                scheduled_at: c.scheduled_at,
                agent: c.agent,
                assigned_to: c.assigned_to,
                created_by,
                created_by_admin,
                at,
            }))
        }
        TaskCommand::Update(c) => {
            let task = state.require_live(KIND)?;
            require_not_completed(task, "update")?;
            if task.erased {
                let personal = [
                    ("fromAddress", c.from_address.is_some()),
                    ("toAddress", c.to_address.is_some()),
                    ("subject", c.subject.is_some()),
                    ("content", c.content.is_some()),
                ];
                if let Some((field, _)) = personal.iter().find(|(_, given)| *given) {
                    return Err(erased_content(field));
                }
            }
            let event = TaskUpdated {
                task_type: patch::diff(&task.task_type, c.task_type),
                priority: patch::diff(&task.priority, c.priority),
                from_address: patch::diff(&task.from_address, c.from_address),
                to_address: patch::diff(&task.to_address, c.to_address),
                subject: patch::diff_nullable(&task.subject, c.subject),
                content: patch::diff_nullable(&task.content, c.content),
                scheduled_at: patch::diff_nullable(&task.scheduled_at, c.scheduled_at),
                at,
            };
            if event.is_empty() {
                return Ok(Decision::none());
            }
            one(TaskEvent::Updated(event))
        }
        TaskCommand::SetMetadata(c) => {
            let task = state.require_live(KIND)?;
            if task.metadata == c.metadata {
                return Ok(Decision::none());
            }
            one(TaskEvent::MetadataSet(TaskMetadataSet {
                metadata: c.metadata,
                at,
            }))
        }
        TaskCommand::LinkAgent(c) => {
            let task = state.require_live(KIND)?;
            require_not_completed(task, "link an agent to")?;
            check_agent(c.agent, ctx)?;
            if task.agent == Some(c.agent) {
                return Ok(Decision::none());
            }
            one(TaskEvent::AgentLinked(TaskAgentLinked {
                agent: c.agent,
                at,
            }))
        }
        TaskCommand::UnlinkAgent(_) => {
            let task = state.require_live(KIND)?;
            require_not_completed(task, "unlink the agent of")?;
            if task.agent.is_none() {
                return Ok(Decision::none());
            }
            one(TaskEvent::AgentUnlinked(Stamp { at }))
        }
        TaskCommand::Assign(c) => {
            let task = state.require_live(KIND)?;
            require_not_completed(task, "assign")?;
            check_assignee(c.assigned_to, ctx)?;
            if task.assigned_to == Some(c.assigned_to) {
                return Ok(Decision::none());
            }
            one(TaskEvent::Assigned(TaskAssigned {
                assigned_to: c.assigned_to,
                previous: task.assigned_to,
                at,
            }))
        }
        TaskCommand::Unassign(_) => {
            let task = state.require_live(KIND)?;
            require_not_completed(task, "unassign")?;
            if task.assigned_to.is_none() {
                return Ok(Decision::none());
            }
            one(TaskEvent::Unassigned(Stamp { at }))
        }
        TaskCommand::Start(_) => {
            let task = state.require_live(KIND)?;
            match task.status {
                TaskStatus::Pending => one(TaskEvent::Started(Stamp { at })),
                _ => Err(transition_error(task, "start")),
            }
        }
        TaskCommand::Complete(c) => {
            let task = state.require_live(KIND)?;
            if task.erased && c.outcome.is_some() {
                return Err(erased_content("outcome"));
            }
            match task.status {
                TaskStatus::InProgress => one(TaskEvent::Completed(TaskCompleted {
                    outcome: c.outcome,
                    at,
                })),
                _ => Err(transition_error(task, "complete")),
            }
        }
        TaskCommand::Fail(c) => {
            let task = state.require_live(KIND)?;
            if task.erased && c.outcome.is_some() {
                return Err(erased_content("outcome"));
            }
            match task.status {
                TaskStatus::InProgress => one(TaskEvent::Failed(TaskFailed {
                    reason: c.reason,
                    outcome: c.outcome,
                    at,
                })),
                _ => Err(transition_error(task, "fail")),
            }
        }
        TaskCommand::Cancel(c) => {
            let task = state.require_live(KIND)?;
            match task.status {
                TaskStatus::Pending => one(TaskEvent::Cancelled(TaskEnded {
                    reason: c.reason,
                    at,
                })),
                _ => Err(transition_error(task, "cancel")),
            }
        }
        TaskCommand::Retry(_) => {
            let task = state.require_live(KIND)?;
            match task.status {
                TaskStatus::Failed => one(TaskEvent::Retried(Stamp { at })),
                _ => Err(transition_error(task, "retry")),
            }
        }
        TaskCommand::Delete(_) => {
            state.require_live(KIND)?;
            one(TaskEvent::Deleted(Stamp { at }))
        }
        TaskCommand::EraseContent(_) => {
            let task = state.require_live(KIND)?;
            // Idempotent: erasing again appends nothing (the service still destroys the key).
            if task.erased {
                return Ok(Decision::none());
            }
            one(TaskEvent::ContentErased(Stamp { at }))
        }
    }
}

/// The refusal of personal content for a task whose content was erased: `validation_failed`
/// on `field`.
fn erased_content(field: &str) -> DomainError {
    DomainError::validation(
        field,
        "the task's content was erased: nothing personal is written about it again",
    )
}

fn step(
    task: &mut Task,
    from: TaskStatus,
    to: TaskStatus,
    event: &'static str,
    at: Timestamp,
) -> Result<(), EvolveError> {
    if task.status != from {
        return Err(EvolveError::Transition {
            entity: KIND,
            from: task.status.as_str(),
            event,
        });
    }
    task.status = to;
    task.updated_at = at;
    Ok(())
}

/// Applies a task event strictly.
pub fn apply(
    state: &mut State<Task>,
    id: TaskId,
    tenant: TenantId,
    event: &TaskEvent,
) -> Result<(), EvolveError> {
    let name = event.type_name();
    match event {
        TaskEvent::Created(e) => state.create(
            KIND,
            Task {
                id,
                tenant,
                task_type: e.task_type,
                status: e.status,
                priority: e.priority,
                from_address: e.from_address.clone(),
                to_address: e.to_address.clone(),
                subject: e.subject.clone(),
                content: e.content.clone(),
                metadata: e.metadata.clone(),
                scheduled_at: e.scheduled_at,
                started_at: None,
                completed_at: None,
                created_at: e.at,
                updated_at: e.at,
                agent: e.agent,
                assigned_to: e.assigned_to,
                created_by: e.created_by,
                created_by_admin: e.created_by_admin,
                outcome: None,
                erased: false,
            },
        ),
        TaskEvent::Updated(e) => state.mutate_live(KIND, |t| {
            if t.status == TaskStatus::Completed {
                return Err(EvolveError::Transition {
                    entity: KIND,
                    from: "completed",
                    event: name,
                });
            }
            patch::set(&mut t.task_type, &e.task_type);
            patch::set(&mut t.priority, &e.priority);
            patch::set(&mut t.from_address, &e.from_address);
            patch::set(&mut t.to_address, &e.to_address);
            patch::apply(&mut t.subject, &e.subject);
            patch::apply(&mut t.content, &e.content);
            patch::apply(&mut t.scheduled_at, &e.scheduled_at);
            t.updated_at = e.at;
            Ok(())
        }),
        TaskEvent::MetadataSet(e) => state.mutate_live(KIND, |t| {
            t.metadata.clone_from(&e.metadata);
            t.updated_at = e.at;
            Ok(())
        }),
        TaskEvent::AgentLinked(TaskAgentLinked { agent, at }) => state.mutate_live(KIND, |t| {
            if t.status == TaskStatus::Completed {
                return Err(EvolveError::Transition {
                    entity: KIND,
                    from: "completed",
                    event: name,
                });
            }
            t.agent = Some(*agent);
            t.updated_at = *at;
            Ok(())
        }),
        TaskEvent::Assigned(TaskAssigned {
            assigned_to, at, ..
        }) => state.mutate_live(KIND, |t| {
            if t.status == TaskStatus::Completed {
                return Err(EvolveError::Transition {
                    entity: KIND,
                    from: "completed",
                    event: name,
                });
            }
            t.assigned_to = Some(*assigned_to);
            t.updated_at = *at;
            Ok(())
        }),
        TaskEvent::AgentUnlinked(Stamp { at }) | TaskEvent::Unassigned(Stamp { at }) => {
            let agent = matches!(event, TaskEvent::AgentUnlinked(_));
            state.mutate_live(KIND, |t| {
                if t.status == TaskStatus::Completed {
                    return Err(EvolveError::Transition {
                        entity: KIND,
                        from: "completed",
                        event: name,
                    });
                }
                if agent {
                    t.agent = None;
                } else {
                    t.assigned_to = None;
                }
                t.updated_at = *at;
                Ok(())
            })
        }
        TaskEvent::Started(Stamp { at }) => state.mutate_live(KIND, |t| {
            step(t, TaskStatus::Pending, TaskStatus::InProgress, name, *at)?;
            t.started_at = Some(*at);
            Ok(())
        }),
        TaskEvent::Completed(TaskCompleted { outcome, at }) => state.mutate_live(KIND, |t| {
            step(t, TaskStatus::InProgress, TaskStatus::Completed, name, *at)?;
            t.completed_at = Some(*at);
            t.outcome.clone_from(outcome);
            Ok(())
        }),
        TaskEvent::Failed(TaskFailed { outcome, at, .. }) => state.mutate_live(KIND, |t| {
            step(t, TaskStatus::InProgress, TaskStatus::Failed, name, *at)?;
            t.completed_at = Some(*at);
            t.outcome.clone_from(outcome);
            Ok(())
        }),
        TaskEvent::Cancelled(TaskEnded { at, .. }) => state.mutate_live(KIND, |t| {
            step(t, TaskStatus::Pending, TaskStatus::Failed, name, *at)?;
            t.completed_at = Some(*at);
            Ok(())
        }),
        TaskEvent::Retried(Stamp { at }) => state.mutate_live(KIND, |t| {
            step(t, TaskStatus::Failed, TaskStatus::Pending, name, *at)?;
            t.started_at = None;
            t.completed_at = None;
            t.outcome = None;
            Ok(())
        }),
        TaskEvent::Deleted(_) => state.delete(KIND),
        TaskEvent::ContentErased(Stamp { at }) => state.mutate_live(KIND, |t| {
            t.from_address = erased_address();
            t.to_address = erased_address();
            t.subject = None;
            t.content = None;
            if let Some(outcome) = &mut t.outcome {
                outcome.summary =
                    OutcomeSummary::parse(ERASED_TEXT).expect("the placeholder is a valid summary");
            }
            t.erased = true;
            t.updated_at = *at;
            Ok(())
        }),
    }
}
