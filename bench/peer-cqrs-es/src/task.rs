//! The Task aggregate as a cqrs-es [`Aggregate`]: create, start and complete with the semantics
//! of `talkwai_domain::task` for those three commands (the same command bodies, the same checks,
//! the same `task.created` data), so the peer does the work ours does.
//!
//! Copied rather than depended on: the peer builds from crates.io alone and stays still while
//! the product's domain changes. What is not modelled: agent and assignee references (the bench
//! body has none; the peer refuses them rather than accept them unchecked), and the other task
//! commands.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who sends the commands: the tenant (known to exist, like ours after its first read) and the
/// member acting in it.
#[derive(Debug, Clone, Copy)]
pub struct Actor {
    /// The tenant whose subjects the commands address.
    pub tenant: Uuid,
    /// The member sending them (`createdBy`).
    pub member: Uuid,
}

/// A refused command, with the field at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The body is not a valid command.
    #[error("validation: {field}: {message}")]
    Validation {
        /// The field at fault (`body` when the JSON does not parse).
        field: &'static str,
        /// Why.
        message: String,
    },
    /// Create of a task that exists.
    #[error("conflict: task already exists")]
    AlreadyExists,
    /// A command on a task that does not exist.
    #[error("not_found: task")]
    NotFound,
    /// Start or complete in the wrong status.
    #[error("invalid_transition: cannot {action} a task in status {status}")]
    InvalidTransition {
        /// What was asked.
        action: &'static str,
        /// The task's status.
        status: &'static str,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> TaskError {
    TaskError::Validation {
        field,
        message: message.into(),
    }
}

/// A task's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be worked.
    Pending,
    /// Started.
    InProgress,
    /// Done (final).
    Completed,
    /// Failed or cancelled.
    Failed,
}

impl TaskStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// What a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    /// A phone call.
    Call,
    /// An email.
    Email,
    /// Anything else.
    Other,
}

/// A task's priority; `medium` when the command has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskPriority {
    /// Whenever.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Soon.
    High,
    /// Now.
    Urgent,
}

/// `task.create`, as the bench sends it (`payload::create_task_command`), field for field as
/// `talkwai_domain::task::CreateTask`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTask {
    /// The new task's id.
    pub id: Uuid,
    /// Optional, must equal the actor's tenant.
    #[serde(default)]
    pub tenant: Option<Uuid>,
    /// What it is.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Priority; `medium` when absent.
    #[serde(default)]
    pub priority: Option<TaskPriority>,
    /// Phone number or email address.
    pub from_address: String,
    /// Phone number or email address.
    pub to_address: String,
    /// Optional subject, at most 1,000 characters.
    #[serde(default)]
    pub subject: Option<String>,
    /// Optional content, at most 65,536 characters.
    #[serde(default)]
    pub content: Option<String>,
    /// Optional JSON object text, at most 32 KiB.
    #[serde(default)]
    pub metadata: Option<String>,
    /// When it should happen, epoch ms.
    #[serde(default)]
    pub scheduled_at: Option<i64>,
    /// Handling agent: not modelled by the peer, refused.
    #[serde(default)]
    pub agent: Option<Uuid>,
    /// Assignee: not modelled by the peer, refused.
    #[serde(default)]
    pub assigned_to: Option<Uuid>,
}

/// `task.start` / `task.complete` bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ById {
    /// The task.
    pub id: Uuid,
}

/// Commands on a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCommand {
    /// Create (status `pending`); the fields are already checked.
    Create(CreateTask),
    /// `pending → in_progress`.
    Start,
    /// `in_progress → completed`.
    Complete,
}

impl TaskCommand {
    /// Decodes and checks a command body for `action` (`create`, `start`, `complete`) as the
    /// command service does before deciding; returns the addressed task and the command.
    pub fn parse(action: &str, body: &[u8]) -> Result<(Uuid, Self), TaskError> {
        let bad_body = |e: serde_json::Error| invalid("body", e.to_string());
        match action {
            "create" => {
                let mut create: CreateTask = serde_json::from_slice(body).map_err(bad_body)?;
                create.from_address = address(&create.from_address, "fromAddress")?;
                create.to_address = address(&create.to_address, "toAddress")?;
                create.subject = create
                    .subject
                    .map(|s| bounded(&s, 1_000, "subject"))
                    .transpose()?;
                create.content = create
                    .content
                    .map(|s| bounded(&s, 65_536, "content"))
                    .transpose()?;
                if let Some(metadata) = &create.metadata {
                    json_object(metadata)?;
                }
                if create.agent.is_some() {
                    return Err(invalid("agent", "agents are not modelled by the peer"));
                }
                if create.assigned_to.is_some() {
                    return Err(invalid(
                        "assignedTo",
                        "assignees are not modelled by the peer",
                    ));
                }
                Ok((create.id, Self::Create(create)))
            }
            "start" | "complete" => {
                let ById { id } = serde_json::from_slice(body).map_err(bad_body)?;
                let command = if action == "start" {
                    Self::Start
                } else {
                    Self::Complete
                };
                Ok((id, command))
            }
            other => Err(invalid("action", format!("unknown task action {other:?}"))),
        }
    }
}

/// Trimmed, non-empty, at most `max` characters, no control characters but newlines and tabs.
fn bounded(raw: &str, max: usize, field: &'static str) -> Result<String, TaskError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > max {
        return Err(invalid(
            field,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// An E.164 phone number (`+`, 8 to 15 digits, the first not zero; spaces, dashes, dots and
/// parentheses dropped) or an email address (lowercased; a dotted domain of valid labels).
fn address(raw: &str, field: &'static str) -> Result<String, TaskError> {
    let trimmed = raw.trim();
    if trimmed.starts_with('+') {
        let compact: String = trimmed
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = &compact[1..];
        let ok = (8..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        return if ok {
            Ok(compact)
        } else {
            Err(invalid(field, "phone must be '+' and 8 to 15 digits"))
        };
    }
    let value = trimmed.to_ascii_lowercase();
    let Some((local, domain)) = value.split_once('@') else {
        return Err(invalid(
            field,
            "must be an E.164 phone number or an email address",
        ));
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let domain = domain.trim_end_matches('.');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    if value.len() > 254 || !local_ok || !domain_ok {
        return Err(invalid(field, "invalid email address"));
    }
    Ok(format!("{local}@{domain}"))
}

/// JSON object text of at most 32 KiB.
fn json_object(raw: &str) -> Result<(), TaskError> {
    if raw.len() > 32 * 1024 {
        return Err(invalid("metadata", "must be at most 32768 bytes"));
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(invalid("metadata", "must be a JSON object")),
    }
}

/// `task.created` v1: the data `talkwai_domain::task::TaskCreated` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCreated {
    /// What it is.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Always `pending`.
    pub status: TaskStatus,
    /// Priority.
    pub priority: TaskPriority,
    /// From.
    pub from_address: String,
    /// To.
    pub to_address: String,
    /// Subject.
    pub subject: Option<String>,
    /// Content.
    pub content: Option<String>,
    /// Metadata.
    pub metadata: Option<String>,
    /// Schedule.
    pub scheduled_at: Option<i64>,
    /// Agent (always none here).
    pub agent: Option<Uuid>,
    /// Assignee (always none here).
    pub assigned_to: Option<Uuid>,
    /// Creating member.
    pub created_by: Option<Uuid>,
    /// Creating admin (always none here).
    pub created_by_admin: Option<Uuid>,
    /// When, epoch ms.
    pub at: i64,
}

/// `task.started` / `task.completed` v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// When, epoch ms.
    pub at: i64,
}

/// Events of a task, stored as `{"type": ..., "data": ...}` like ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TaskEvent {
    /// Created, `pending`.
    #[serde(rename = "task.created")]
    Created(TaskCreated),
    /// `pending → in_progress`.
    #[serde(rename = "task.started")]
    Started(Stamp),
    /// `in_progress → completed`.
    #[serde(rename = "task.completed")]
    Completed(Stamp),
}

impl DomainEvent for TaskEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "task.created",
            Self::Started(_) => "task.started",
            Self::Completed(_) => "task.completed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// A task's state, folded from its events; `None` before it is created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The created task's data and its later changes.
    pub state: Option<TaskState>,
}

/// A created task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// The data it was created with.
    pub created: TaskCreated,
    /// Lifecycle status.
    pub status: TaskStatus,
    /// Set by start.
    pub started_at: Option<i64>,
    /// Set by complete.
    pub completed_at: Option<i64>,
    /// Time of the last change.
    pub updated_at: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Task {
    /// The decision, without I/O: the events `command` produces in this state, or why not.
    pub fn decide(&self, command: TaskCommand, actor: &Actor) -> Result<TaskEvent, TaskError> {
        let at = now_ms();
        match (command, &self.state) {
            (TaskCommand::Create(_), Some(_)) => Err(TaskError::AlreadyExists),
            (TaskCommand::Create(c), None) => {
                if c.tenant.is_some_and(|t| t != actor.tenant) {
                    return Err(invalid("tenant", "must equal the tenant in the subject"));
                }
                Ok(TaskEvent::Created(TaskCreated {
                    task_type: c.task_type,
                    status: TaskStatus::Pending,
                    priority: c.priority.unwrap_or_default(),
                    from_address: c.from_address,
                    to_address: c.to_address,
                    subject: c.subject,
                    content: c.content,
                    metadata: c.metadata,
                    scheduled_at: c.scheduled_at,
                    agent: None,
                    assigned_to: None,
                    created_by: Some(actor.member),
                    created_by_admin: None,
                    at,
                }))
            }
            (TaskCommand::Start | TaskCommand::Complete, None) => Err(TaskError::NotFound),
            (TaskCommand::Start, Some(task)) => match task.status {
                TaskStatus::Pending => Ok(TaskEvent::Started(Stamp { at })),
                status => Err(TaskError::InvalidTransition {
                    action: "start",
                    status: status.as_str(),
                }),
            },
            (TaskCommand::Complete, Some(task)) => match task.status {
                TaskStatus::InProgress => Ok(TaskEvent::Completed(Stamp { at })),
                status => Err(TaskError::InvalidTransition {
                    action: "complete",
                    status: status.as_str(),
                }),
            },
        }
    }
}

impl Aggregate for Task {
    const TYPE: &'static str = "task";
    type Command = TaskCommand;
    type Event = TaskEvent;
    type Error = TaskError;
    type Services = Actor;

    async fn handle(
        &mut self,
        command: Self::Command,
        actor: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command, actor)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TaskEvent::Created(created) => {
                self.state = Some(TaskState {
                    status: created.status,
                    started_at: None,
                    completed_at: None,
                    updated_at: created.at,
                    created,
                });
            }
            TaskEvent::Started(Stamp { at }) => {
                if let Some(task) = self.state.as_mut() {
                    task.status = TaskStatus::InProgress;
                    task.started_at = Some(at);
                    task.updated_at = at;
                }
            }
            TaskEvent::Completed(Stamp { at }) => {
                if let Some(task) = self.state.as_mut() {
                    task.status = TaskStatus::Completed;
                    task.completed_at = Some(at);
                    task.updated_at = at;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"call","priority":"high","fromAddress":"+15550001111","toAddress":"+15550002222","subject":"Confirm Tuesday appointment","content":"Call the patient to confirm the 2:30 pm cleaning."}"#;

    fn actor() -> Actor {
        Actor {
            tenant: Uuid::new_v4(),
            member: Uuid::new_v4(),
        }
    }

    fn given(events: Vec<TaskEvent>) -> Task {
        let mut task = Task::default();
        for event in events {
            task.apply(event);
        }
        task
    }

    fn created(actor: &Actor) -> TaskEvent {
        let (_, command) = TaskCommand::parse("create", BODY.as_bytes()).expect("the bench body");
        Task::default().decide(command, actor).expect("created")
    }

    #[test]
    fn the_bench_body_creates_a_pending_task_by_the_member() {
        let actor = actor();
        let TaskEvent::Created(event) = created(&actor) else {
            panic!("not a task.created");
        };
        assert_eq!(event.status, TaskStatus::Pending);
        assert_eq!(event.priority, TaskPriority::High);
        assert_eq!(event.created_by, Some(actor.member));
        assert_eq!(event.from_address, "+15550001111");
    }

    #[test]
    fn create_twice_is_a_conflict() {
        let actor = actor();
        let task = given(vec![created(&actor)]);
        let (_, command) = TaskCommand::parse("create", BODY.as_bytes()).expect("the bench body");
        assert_eq!(task.decide(command, &actor), Err(TaskError::AlreadyExists));
    }

    #[test]
    fn start_then_complete_and_not_the_other_way() {
        let actor = actor();
        let pending = given(vec![created(&actor)]);
        assert!(matches!(
            pending.decide(TaskCommand::Complete, &actor),
            Err(TaskError::InvalidTransition {
                action: "complete",
                status: "pending"
            })
        ));
        let started = pending
            .decide(TaskCommand::Start, &actor)
            .expect("start a pending task");
        let in_progress = given(vec![created(&actor), started.clone()]);
        let completed = in_progress
            .decide(TaskCommand::Complete, &actor)
            .expect("complete a started task");
        let done = given(vec![created(&actor), started, completed]);
        assert!(matches!(
            done.decide(TaskCommand::Start, &actor),
            Err(TaskError::InvalidTransition {
                action: "start",
                ..
            })
        ));
        assert_eq!(
            Task::default().decide(TaskCommand::Start, &actor),
            Err(TaskError::NotFound)
        );
    }

    #[test]
    fn bad_bodies_name_their_field() {
        let cases = [
            (
                r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"call","fromAddress":"555","toAddress":"+15550002222"}"#,
                "fromAddress",
            ),
            (
                r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"call","fromAddress":"+15550001111","toAddress":"a@b"}"#,
                "toAddress",
            ),
            (
                r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"call","fromAddress":"+15550001111","toAddress":"+15550002222","subject":"  "}"#,
                "subject",
            ),
            (
                r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"call","fromAddress":"+15550001111","toAddress":"+15550002222","metadata":"[1]"}"#,
                "metadata",
            ),
            (
                r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"fax","fromAddress":"+15550001111","toAddress":"+15550002222"}"#,
                "body",
            ),
            (
                r#"{"id":"0193a5c8-7a2b-7cc0-8d4e-1f2a3b4c5d6e","type":"call","fromAddress":"+15550001111","toAddress":"+15550002222","extra":1}"#,
                "body",
            ),
        ];
        for (body, field) in cases {
            match TaskCommand::parse("create", body.as_bytes()) {
                Err(TaskError::Validation { field: got, .. }) => assert_eq!(got, field, "{body}"),
                other => panic!("{body}: expected a validation error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn another_tenant_in_the_body_is_refused() {
        let actor = actor();
        let body = format!(
            r#"{{"id":"{}","tenant":"{}","type":"email","fromAddress":"a@example.com","toAddress":"B@Example.com"}}"#,
            Uuid::new_v4(),
            Uuid::new_v4()
        );
        let (_, command) = TaskCommand::parse("create", body.as_bytes()).expect("valid body");
        assert!(matches!(
            Task::default().decide(command, &actor),
            Err(TaskError::Validation {
                field: "tenant",
                ..
            })
        ));
    }
}
