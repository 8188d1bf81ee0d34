//! The message catalog: every message of the wire contract with its subject pattern, the Rust
//! type it is decoded into and its JSON Schema. This table is the one place that maps actions
//! and event types to Rust types; `proto/schemas/**`, `proto/asyncapi.yaml` and the contract
//! tests are all derived from it.
//!
//! Schemas are generated with `schemars` as JSON Schema draft-07 (the dialect AsyncAPI 3
//! documents name as `application/schema+json;version=draft-07`), describing what the Rust
//! types *accept* (the deserialize contract).

use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema};
use serde_json::{Value, json};
use talkwai_domain::admin::{
    AdminCreated, AdminPermissionsChanged, AdminRoleChanged, AdminStatusChanged, AdminUpdated,
    CreateAdmin, SetAdminPermissions, SetAdminRole, SetAdminStatus, UpdateAdmin,
};
use talkwai_domain::agent::{
    AgentConfigured, AgentCreated, AgentStatusChanged, AgentUpdated, ConfigureAgent, CreateAgent,
    SetAgentStatus, UpdateAgent,
};
use talkwai_domain::ids::{AdminId, AgentId, MemberId, TaskId, TenantId, UserId};
use talkwai_domain::member::{
    CreateMember, LinkUser, MemberCreated, MemberRoleChanged, MemberStatusChanged, MemberUpdated,
    SetMemberRole, SetMemberStatus, UpdateMember, UserLink,
};
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::task::{
    AssignTask, CompleteTask, CreateTask, EndTask, FailTask, LinkAgent, SetTaskMetadata,
    TaskAgentLinked, TaskAssigned, TaskCompleted, TaskCreated, TaskEnded, TaskFailed,
    TaskMetadataSet, TaskUpdated, UpdateTask,
};
use talkwai_domain::tenant::{
    CreateTenant, EraseTenant, SetTenantStatus, TenantCreated, TenantStatusChanged,
    TenantStatusChangedV1, TenantUpdated, UpdateTenant,
};
use talkwai_domain::user::{UserEmailBody, UserEmailSet};
use talkwai_domain::{Event, EventBody, GuardEvent, current_version};

use crate::envelope::{CommandReply, ErrorBody};
use crate::query::{
    LiveControl, LiveControlReply, LiveUpdate, QueryReply, QueryRequest, SubscribeReply,
};
use crate::room::{
    Notification, PresenceEvent, PresenceReply, PresenceRequest, RoomClosed, SystemAlert,
    TaskActivity, TaskUpdate,
};
use crate::subject;

/// What part of the contract a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    /// A command request body (`talkwai.cmd.*`).
    Command,
    /// The reply to a command.
    Reply,
    /// The error body inside a rejected reply.
    Error,
    /// The data of one event type at one version.
    Event,
    /// The `{"type", "version", "data"}` body every event travels in.
    EventEnvelope,
    /// A uniqueness guard event.
    Guard,
    /// A query request or reply, a live-query update or control message (`talkwai.qry.*`).
    Query,
    /// A room topic message.
    Topic,
    /// A presence message.
    Presence,
    /// The NATS services API (`$SRV.PING|INFO|STATS`) the services answer.
    Service,
}

impl MessageKind {
    /// Lowercase name, used in file paths and AsyncAPI tags.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Reply => "reply",
            Self::Error => "error",
            Self::Event => "event",
            Self::EventEnvelope => "envelope",
            Self::Guard => "guard",
            Self::Query => "query",
            Self::Topic => "topic",
            Self::Presence => "presence",
            Self::Service => "service",
        }
    }
}

/// Whose subject space a command lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandScope {
    /// `talkwai.cmd.{tenant}.<aggregate>.<action>`.
    Tenant,
    /// `talkwai.cmd.platform.<aggregate>.<action>`.
    Platform,
}

/// One message of the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The kind.
    pub kind: MessageKind,
    /// The message name: `task.create` for a command, `task.started` for an event type,
    /// `CommandReply`, `ErrorBody`... for the others.
    pub name: String,
    /// The event version (events only).
    pub version: Option<u32>,
    /// The subject pattern, with `{tenant}`, `{id}`... parameters.
    pub subject: String,
    /// Command scope (commands only).
    pub scope: Option<CommandScope>,
    /// The Rust type the payload is decoded into (`talkwai_domain::task::CreateTask`), or
    /// `None` for messages this crate does not type yet (their schema is hand-written).
    pub rust_type: Option<&'static str>,
    /// What the message does, from the domain enum variant's doc (commands and events).
    pub summary: Option<String>,
    /// The JSON Schema (draft-07) of the payload.
    pub schema: Value,
}

impl CatalogEntry {
    /// The message id used in file names and AsyncAPI (`task.create`, `task.started.v1`).
    pub fn id(&self) -> String {
        match self.version {
            Some(v) => format!("{}.v{v}", self.name),
            None => self.name.clone(),
        }
    }

    /// The schema file, relative to `proto/` (`schemas/commands/task.create.json`).
    pub fn schema_path(&self) -> String {
        let dir = match self.kind {
            MessageKind::Command => "commands",
            MessageKind::Event => "events",
            MessageKind::Reply | MessageKind::Error => "replies",
            MessageKind::EventEnvelope | MessageKind::Guard => "envelopes",
            MessageKind::Query => "query",
            MessageKind::Topic | MessageKind::Presence => "rooms",
            MessageKind::Service => "services",
        };
        format!("schemas/{dir}/{}.json", self.id())
    }

    /// The aggregate of a command or event (`task`).
    pub fn aggregate(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Command | MessageKind::Event => {
                self.name.split_once('.').map(|(aggregate, _)| aggregate)
            }
            _ => None,
        }
    }

    /// The action of a command (`create`) or the name of an event (`started`).
    pub fn action(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Command | MessageKind::Event => {
                self.name.split_once('.').map(|(_, action)| action)
            }
            _ => None,
        }
    }

    /// The variant's doc when there is one, else the schema's description (the type's doc).
    pub fn description(&self) -> Option<&str> {
        self.summary
            .as_deref()
            .or_else(|| self.schema.get("description").and_then(Value::as_str))
    }

    /// The subject with its parameters replaced (`{tenant}` → `tenant`...).
    pub fn subject_with(&self, params: &[(&str, &str)]) -> String {
        params
            .iter()
            .fold(self.subject.clone(), |subject, (name, value)| {
                subject.replace(&format!("{{{name}}}"), value)
            })
    }
}

/// The schema generator every schema of the contract is made with: draft-07, deserialize
/// contract (what the Rust decoders accept), with [`UuidPattern`].
pub fn settings() -> SchemaSettings {
    SchemaSettings::draft07().with_transform(UuidPattern)
}

/// Every UUID form the Rust decoder accepts: hyphenated (canonical), simple, braced and URN.
pub const UUID_PATTERN: &str = "^(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\
|[0-9A-Fa-f]{32}\
|\\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\\}\
|urn:uuid:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$";

/// Adds [`UUID_PATTERN`] next to every `"format": "uuid"`: draft-07 defines no `uuid` format,
/// so validators ignore it, and ids would go unchecked.
#[derive(Debug, Clone, Copy)]
pub struct UuidPattern;

impl Transform for UuidPattern {
    fn transform(&mut self, schema: &mut Schema) {
        if schema.get("format").and_then(Value::as_str) == Some("uuid")
            && schema.get("pattern").is_none()
        {
            schema.insert("pattern".into(), UUID_PATTERN.into());
        }
        transform_subschemas(self, schema);
    }
}

/// The schema of `T`, as a standalone document.
pub fn schema_of<T: JsonSchema>() -> Value {
    settings()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

fn command<T: JsonSchema>(scope: CommandScope, name: &str) -> CatalogEntry {
    let (aggregate, action) = name.split_once('.').unwrap_or((name, ""));
    let subject = match scope {
        CommandScope::Tenant => format!("talkwai.cmd.{{tenant}}.{aggregate}.{action}"),
        CommandScope::Platform => format!("talkwai.cmd.platform.{aggregate}.{action}"),
    };
    CatalogEntry {
        kind: MessageKind::Command,
        name: name.to_owned(),
        version: None,
        subject,
        scope: Some(scope),
        rust_type: Some(std::any::type_name::<T>()),
        summary: None,
        schema: schema_of::<T>(),
    }
}

/// The event subject pattern of an aggregate kind.
pub fn event_subject(aggregate: &str) -> String {
    match aggregate {
        "admin" | "user" => format!("talkwai.evt.platform.{aggregate}.{{id}}"),
        _ => format!("talkwai.evt.{{tenant}}.{aggregate}.{{id}}"),
    }
}

fn event<T: JsonSchema>(name: &str, version: u32) -> CatalogEntry {
    let aggregate = name.split_once('.').map_or(name, |(a, _)| a);
    CatalogEntry {
        kind: MessageKind::Event,
        name: name.to_owned(),
        version: Some(version),
        subject: event_subject(aggregate),
        scope: None,
        rust_type: Some(std::any::type_name::<T>()),
        summary: None,
        schema: schema_of::<T>(),
    }
}

fn other<T: JsonSchema>(kind: MessageKind, name: &str, subject: &str) -> CatalogEntry {
    CatalogEntry {
        kind,
        name: name.to_owned(),
        version: None,
        subject: subject.to_owned(),
        scope: None,
        rust_type: Some(std::any::type_name::<T>()),
        summary: None,
        schema: schema_of::<T>(),
    }
}

fn untyped(kind: MessageKind, name: &str, subject: &str, schema: Value) -> CatalogEntry {
    CatalogEntry {
        kind,
        name: name.to_owned(),
        version: None,
        subject: subject.to_owned(),
        scope: None,
        rust_type: None,
        summary: None,
        schema,
    }
}

/// The reply subject: the requester's inbox.
pub const REPLY_SUBJECT: &str = "_INBOX.>";

/// The catalog name of the NATS services API responses.
pub const SERVICE_REPLY: &str = "ServiceApiReply";

/// The NATS services (`$SRV`) names the backbone registers.
pub const SERVICE_NAMES: [&str; 3] = ["talkwai-command", "talkwai-query", "talkwai-presence"];

/// The catalog name of client topics (any topic name that is not a service topic).
pub const CLIENT_TOPIC: &str = "clientTopic";

/// Every message of the contract, commands first, in a stable order.
///
/// Adding a command action or an event type (or version) to the domain means adding a line
/// here; the contract tests fail until it is done.
pub fn catalog() -> Vec<CatalogEntry> {
    use CommandScope::{Platform, Tenant};
    let mut entries = vec![
        // tenants: creation is a platform command, the rest lives in the tenant's subjects
        command::<CreateTenant>(Platform, "tenant.create"),
        command::<UpdateTenant>(Tenant, "tenant.update"),
        command::<SetTenantStatus>(Tenant, "tenant.setStatus"),
        command::<ById<TenantId>>(Tenant, "tenant.delete"),
        command::<EraseTenant>(Tenant, "tenant.erase"),
        // members
        command::<CreateMember>(Tenant, "member.create"),
        command::<UpdateMember>(Tenant, "member.update"),
        command::<SetMemberRole>(Tenant, "member.setRole"),
        command::<SetMemberStatus>(Tenant, "member.setStatus"),
        command::<LinkUser<MemberId>>(Tenant, "member.linkUser"),
        command::<ById<MemberId>>(Tenant, "member.unlinkUser"),
        command::<ById<MemberId>>(Tenant, "member.delete"),
        command::<ById<MemberId>>(Tenant, "member.erase"),
        // admins (platform)
        command::<CreateAdmin>(Platform, "admin.create"),
        command::<UpdateAdmin>(Platform, "admin.update"),
        command::<SetAdminRole>(Platform, "admin.setRole"),
        command::<SetAdminPermissions>(Platform, "admin.setPermissions"),
        command::<SetAdminStatus>(Platform, "admin.setStatus"),
        command::<LinkUser<AdminId>>(Platform, "admin.linkUser"),
        command::<ById<AdminId>>(Platform, "admin.unlinkUser"),
        command::<ById<AdminId>>(Platform, "admin.delete"),
        command::<ById<AdminId>>(Platform, "admin.erase"),
        // agents
        command::<CreateAgent>(Tenant, "agent.create"),
        command::<UpdateAgent>(Tenant, "agent.update"),
        command::<ConfigureAgent>(Tenant, "agent.configure"),
        command::<SetAgentStatus>(Tenant, "agent.setStatus"),
        command::<ById<AgentId>>(Tenant, "agent.delete"),
        // tasks
        command::<CreateTask>(Tenant, "task.create"),
        command::<UpdateTask>(Tenant, "task.update"),
        command::<SetTaskMetadata>(Tenant, "task.setMetadata"),
        command::<LinkAgent>(Tenant, "task.linkAgent"),
        command::<ById<TaskId>>(Tenant, "task.unlinkAgent"),
        command::<AssignTask>(Tenant, "task.assign"),
        command::<ById<TaskId>>(Tenant, "task.unassign"),
        command::<ById<TaskId>>(Tenant, "task.start"),
        command::<CompleteTask>(Tenant, "task.complete"),
        command::<FailTask>(Tenant, "task.fail"),
        command::<EndTask>(Tenant, "task.cancel"),
        command::<ById<TaskId>>(Tenant, "task.retry"),
        command::<ById<TaskId>>(Tenant, "task.delete"),
        command::<ById<TaskId>>(Tenant, "task.eraseContent"),
        // $users (platform)
        command::<UserEmailBody>(Platform, "user.create"),
        command::<UserEmailBody>(Platform, "user.update"),
        command::<ById<UserId>>(Platform, "user.delete"),
        command::<ById<UserId>>(Platform, "user.erase"),
        // replies
        other::<CommandReply>(MessageKind::Reply, "CommandReply", REPLY_SUBJECT),
        other::<ErrorBody>(MessageKind::Error, "ErrorBody", REPLY_SUBJECT),
        // events: one line per type and version ever written
        other::<EventBody>(
            MessageKind::EventEnvelope,
            "EventBody",
            "talkwai.evt.{tenant}.{aggregate}.{id}",
        ),
    ];
    // Never remove a line: the log keeps every version ever written, and each keeps its schema.
    let v1 = 1;
    entries.extend([
        event::<TenantCreated>("tenant.created", v1),
        event::<TenantUpdated>("tenant.updated", v1),
        event::<TenantStatusChangedV1>("tenant.statusChanged", v1),
        event::<TenantStatusChanged>("tenant.statusChanged", 2),
        event::<Stamp>("tenant.deleted", v1),
        event::<Stamp>("tenant.erased", v1),
        event::<MemberCreated>("member.created", v1),
        event::<MemberUpdated>("member.updated", v1),
        event::<MemberRoleChanged>("member.roleChanged", v1),
        event::<MemberStatusChanged>("member.statusChanged", v1),
        event::<UserLink>("member.userLinked", v1),
        event::<UserLink>("member.userUnlinked", v1),
        event::<Stamp>("member.deleted", v1),
        event::<AdminCreated>("admin.created", v1),
        event::<AdminUpdated>("admin.updated", v1),
        event::<AdminRoleChanged>("admin.roleChanged", v1),
        event::<AdminPermissionsChanged>("admin.permissionsChanged", v1),
        event::<AdminStatusChanged>("admin.statusChanged", v1),
        event::<UserLink>("admin.userLinked", v1),
        event::<UserLink>("admin.userUnlinked", v1),
        event::<Stamp>("admin.deleted", v1),
        event::<AgentCreated>("agent.created", v1),
        event::<AgentUpdated>("agent.updated", v1),
        event::<AgentConfigured>("agent.configured", v1),
        event::<AgentStatusChanged>("agent.statusChanged", v1),
        event::<Stamp>("agent.deleted", v1),
        event::<TaskCreated>("task.created", v1),
        event::<TaskUpdated>("task.updated", v1),
        event::<TaskMetadataSet>("task.metadataSet", v1),
        event::<TaskAgentLinked>("task.agentLinked", v1),
        event::<Stamp>("task.agentUnlinked", v1),
        event::<TaskAssigned>("task.assigned", v1),
        event::<Stamp>("task.unassigned", v1),
        event::<Stamp>("task.started", v1),
        event::<Stamp>("task.completed", v1),
        event::<TaskCompleted>("task.completed", 2),
        event::<TaskEnded>("task.failed", v1),
        event::<TaskFailed>("task.failed", 2),
        event::<TaskEnded>("task.cancelled", v1),
        event::<Stamp>("task.retried", v1),
        event::<Stamp>("task.deleted", v1),
        event::<UserEmailSet>("user.created", v1),
        event::<UserEmailSet>("user.updated", v1),
        event::<Stamp>("user.deleted", v1),
        // Erasure of one data subject's personal data (its key destroyed).
        event::<Stamp>("member.erased", v1),
        event::<Stamp>("admin.erased", v1),
        event::<Stamp>("user.erased", v1),
        event::<Stamp>("task.contentErased", v1),
    ]);
    entries.extend([
        other::<GuardEvent>(
            MessageKind::Guard,
            "GuardEvent",
            "talkwai.evt.{tenant}.guard.{kind}.{hash}",
        ),
        other::<crate::command_record::CommandRecorded>(
            MessageKind::Guard,
            "CommandRecorded",
            "talkwai.evt.{tenant}.guard.command.{commandId}",
        ),
        CatalogEntry {
            summary: Some(
                "a command-service instance's fence: a mark ending each batch it writes for \
                 commands decided under a partition lease, expected at its previous mark; a bump \
                 (`by`, `partition`) from an instance that took one of its partitions over, after \
                 which its batches are refused"
                    .to_owned(),
            ),
            ..other::<crate::writer_fence::WriterFence>(
                MessageKind::Guard,
                "WriterFence",
                "talkwai.evt.platform.guard.writer-fence.{writer}",
            )
        },
        CatalogEntry {
            summary: Some(
                "the instance that last took a command-service partition over (`by`): whom the \
                 next one to take it bumps"
                    .to_owned(),
            ),
            ..other::<crate::writer_fence::PartitionOwner>(
                MessageKind::Guard,
                "PartitionOwner",
                "talkwai.evt.platform.guard.partition-owner.{partition}",
            )
        },
        // queries and live queries
        other::<QueryRequest>(MessageKind::Query, "QueryRequest", subject::QUERY_PATTERN),
        other::<QueryReply>(MessageKind::Query, "QueryReply", REPLY_SUBJECT),
        other::<SubscribeReply>(MessageKind::Query, "SubscribeReply", REPLY_SUBJECT),
        other::<LiveUpdate>(
            MessageKind::Query,
            "LiveUpdate",
            subject::LIVE_QUERY_PATTERN,
        ),
        other::<LiveControl>(
            MessageKind::Query,
            "LiveControl",
            subject::LIVE_CONTROL_PATTERN,
        ),
        other::<LiveControlReply>(MessageKind::Query, "LiveControlReply", REPLY_SUBJECT),
        // rooms
        other::<TaskUpdate>(
            MessageKind::Topic,
            "taskUpdates",
            "talkwai.room.{roomType}.{roomId}.topic.taskUpdates",
        ),
        other::<Notification>(
            MessageKind::Topic,
            "notifications",
            "talkwai.room.{roomType}.{roomId}.topic.notifications.{memberId}",
        ),
        other::<SystemAlert>(
            MessageKind::Topic,
            "systemAlerts",
            "talkwai.room.{roomType}.{roomId}.topic.systemAlerts",
        ),
        other::<RoomClosed>(
            MessageKind::Topic,
            "roomClosed",
            "talkwai.room.{roomType}.{roomId}.topic.roomClosed",
        ),
        other::<TaskActivity>(
            MessageKind::Topic,
            "taskActivity",
            "talkwai.room.{roomType}.{roomId}.topic.taskActivity",
        ),
        untyped(
            MessageKind::Topic,
            CLIENT_TOPIC,
            "talkwai.room.{roomType}.{roomId}.topic.{topic}",
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "title": "ClientTopic",
                "description": "a message of a client topic: any JSON the room's clients agree \
                    on; the backbone neither publishes nor reads it",
            }),
        ),
        other::<PresenceRequest>(
            MessageKind::Presence,
            "presence",
            "talkwai.room.{roomType}.{roomId}.presence.{op}",
        ),
        other::<PresenceReply>(MessageKind::Presence, "presenceReply", REPLY_SUBJECT),
        other::<PresenceEvent>(
            MessageKind::Presence,
            "presenceEvents",
            "talkwai.room.{roomType}.{roomId}.presence.events",
        ),
    ]);
    entries.push(untyped(
        MessageKind::Service,
        SERVICE_REPLY,
        REPLY_SUBJECT,
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "ServiceApiReply",
            "description": "a NATS services API response (ADR-32): `io.nats.micro.v1.ping_response`, \
                `info_response` (endpoints and their subjects) or `stats_response` (request, \
                error and latency counts per endpoint)",
            "type": "object",
            "properties": {
                "type": { "type": "string", "pattern": "^io\\.nats\\.micro\\.v1\\.(ping|info|stats)_response$" },
                "name": { "type": "string" },
                "id": { "type": "string" },
                "version": { "type": "string" },
            },
            "required": ["type", "name", "id", "version"],
        }),
    ));
    let commands = domain_commands();
    let events = domain_events();
    for entry in &mut entries {
        let variants = match entry.kind {
            MessageKind::Command => &commands,
            MessageKind::Event => &events,
            _ => continue,
        };
        entry.summary = variants
            .iter()
            .find(|v| v.name == entry.name)
            .and_then(|v| v.doc.clone());
    }
    entries
}

/// A variant of the domain's `Command` or `Event` enum, read from the enum's own schema: what
/// the domain can decode, independent of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainVariant {
    /// `task.create` or `task.started`.
    pub name: String,
    /// The variant's doc comment.
    pub doc: Option<String>,
    /// The payload schema (`body` of a command, `data` of an event), resolved from the enum's
    /// definitions, without `title`.
    pub payload: Value,
}

/// Every command the domain decodes (from the schema of [`talkwai_domain::Command`]).
pub fn domain_commands() -> Vec<DomainVariant> {
    let root = schema_of::<talkwai_domain::Command>();
    let mut found = Vec::new();
    for aggregate in variants(&root, &root) {
        let Some(name) = const_of(&aggregate, "aggregate") else {
            continue;
        };
        let command = resolve(&root, prop(&aggregate, "command"));
        for action in variants(&root, &command) {
            if let Some(action_name) = const_of(&action, "action") {
                found.push(DomainVariant {
                    name: format!("{name}.{action_name}"),
                    doc: doc(&action),
                    payload: resolve(&root, prop(&action, "body")),
                });
            }
        }
    }
    found
}

/// Every event type the domain decodes (from the schema of [`talkwai_domain::Event`]).
pub fn domain_events() -> Vec<DomainVariant> {
    let root = schema_of::<Event>();
    let mut found = Vec::new();
    for aggregate in variants(&root, &root) {
        for event in variants(&root, &aggregate) {
            if let Some(name) = const_of(&event, "type") {
                found.push(DomainVariant {
                    name,
                    doc: doc(&event),
                    payload: resolve(&root, prop(&event, "data")),
                });
            }
        }
    }
    found
}

fn prop<'a>(schema: &'a Value, name: &str) -> &'a Value {
    &schema["properties"][name]
}

fn doc(schema: &Value) -> Option<String> {
    schema["description"].as_str().map(str::to_owned)
}

fn const_of(schema: &Value, name: &str) -> Option<String> {
    let property = prop(schema, name);
    property["const"]
        .as_str()
        .or_else(|| property["enum"][0].as_str())
        .map(str::to_owned)
}

/// Follows a local `#/definitions/x` reference (directly or under a one-element `allOf`).
fn resolve(root: &Value, schema: &Value) -> Value {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference.and_then(|r| r.strip_prefix("#/definitions/")) {
        Some(name) => resolve(root, &root["definitions"][name]),
        None => {
            let mut schema = schema.clone();
            if let Some(map) = schema.as_object_mut() {
                map.remove("title");
            }
            schema
        }
    }
}

/// The `oneOf`/`anyOf` alternatives of a (possibly referenced) enum schema, resolved.
fn variants(root: &Value, schema: &Value) -> Vec<Value> {
    let schema = resolve(root, schema);
    let list = schema["oneOf"]
        .as_array()
        .or_else(|| schema["anyOf"].as_array())
        .cloned()
        .unwrap_or_default();
    list.iter().map(|v| resolve(root, v)).collect()
}

/// The entry of a command (`task.create`).
pub fn command_entry(name: &str) -> Option<CatalogEntry> {
    catalog()
        .into_iter()
        .find(|e| e.kind == MessageKind::Command && e.name == name)
}

/// The entry of an event type at the version writers write today.
pub fn current_event_entry(event_type: &str) -> Option<CatalogEntry> {
    event_entry(event_type, current_version(event_type))
}

/// The entry of an event type at a version.
pub fn event_entry(event_type: &str, version: u32) -> Option<CatalogEntry> {
    catalog().into_iter().find(|e| {
        e.kind == MessageKind::Event && e.name == event_type && e.version == Some(version)
    })
}
