//! The AsyncAPI 3.0.0 document of the contract, built from the [catalog](crate::schema::catalog).
//!
//! Operations are described from the backbone's side: it receives commands and queries (and
//! replies to them), sends events, guard events, room topics and presence. Message payloads
//! reference the schema files under `proto/schemas/`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::schema::{self, CatalogEntry, MessageKind};
use crate::{headers, samples};

/// AsyncAPI names `schemaFormat` values by media type; our schemas are draft-07.
pub const SCHEMA_FORMAT: &str = "application/schema+json;version=draft-07";

/// The document as ordered top-level sections.
pub fn document(catalog: &[CatalogEntry]) -> Vec<(&'static str, Value)> {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    let examples = examples();
    for entry in catalog {
        messages.insert(entry.id(), message(entry, examples.get(&entry.id())));
    }

    // Replies travel to the requester's inbox.
    let reply_channel = "reply";
    channels.insert(
        reply_channel.to_owned(),
        json!({
            "address": null,
            "title": "command reply",
            "description": "the requester's inbox (NATS request/reply): `{\"ok\": true, ...}` or \
                            `{\"ok\": false, \"error\": {...}}`; rejected replies also set the \
                            NATS services error headers",
            "messages": { "CommandReply": message_ref("CommandReply") },
        }),
    );

    // Commands: one channel and one operation per aggregate and action.
    for entry in catalog.iter().filter(|e| e.kind == MessageKind::Command) {
        let channel = format!("cmd.{}", entry.name);
        channels.insert(
            channel.clone(),
            json!({
                "address": entry.subject,
                "title": entry.name,
                "description": entry.description().unwrap_or_default(),
                "parameters": parameters(&entry.subject),
                "messages": { entry.id(): message_ref(&entry.id()) },
            }),
        );
        operations.insert(
            channel.clone(),
            json!({
                "action": "receive",
                "title": format!("decide {}", entry.name),
                "summary": format!("the command service decides {} and replies", entry.name),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [{ "$ref": format!("#/channels/{channel}/messages/{}", entry.id()) }],
                "reply": {
                    "channel": { "$ref": format!("#/channels/{reply_channel}") },
                    "messages": [{
                        "$ref": format!("#/channels/{reply_channel}/messages/CommandReply")
                    }],
                },
                "tags": [{ "name": "command" }, { "name": entry.aggregate().unwrap_or_default() }],
            }),
        );
    }

    // Events: one channel per aggregate carrying every type and version of that aggregate.
    let mut by_aggregate: BTreeMap<&str, Vec<&CatalogEntry>> = BTreeMap::new();
    for entry in catalog.iter().filter(|e| e.kind == MessageKind::Event) {
        by_aggregate
            .entry(entry.aggregate().unwrap_or_default())
            .or_default()
            .push(entry);
    }
    for (aggregate, entries) in &by_aggregate {
        let channel = format!("evt.{aggregate}");
        let subject = &entries[0].subject;
        let channel_messages: Map<String, Value> = entries
            .iter()
            .map(|e| (e.id(), message_ref(&e.id())))
            .collect();
        channels.insert(
            channel.clone(),
            json!({
                "address": subject,
                "title": format!("{aggregate} events"),
                "description": format!(
                    "the events of one {aggregate} (stream TALKWAI_EVENTS), in order; \
                     written by the command service only"
                ),
                "parameters": parameters(subject),
                "messages": channel_messages,
            }),
        );
        let refs: Vec<Value> = entries
            .iter()
            .map(|e| json!({ "$ref": format!("#/channels/{channel}/messages/{}", e.id()) }))
            .collect();
        operations.insert(
            channel.clone(),
            json!({
                "action": "send",
                "title": format!("append {aggregate} events"),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": refs,
                "tags": [{ "name": "event" }, { "name": aggregate }],
            }),
        );
    }

    // Everything else: one channel and one operation per entry.
    for entry in catalog.iter().filter(|e| {
        !matches!(
            e.kind,
            MessageKind::Command
                | MessageKind::Event
                | MessageKind::Reply
                | MessageKind::Error
                | MessageKind::EventEnvelope
        )
    }) {
        let channel = match entry.kind {
            MessageKind::Guard => "evt.guard".to_owned(),
            MessageKind::Query => "qry".to_owned(),
            MessageKind::Presence if entry.name == "presence" => "room.presence".to_owned(),
            MessageKind::Presence => format!("room.{}", entry.name),
            _ => format!("room.topic.{}", entry.name),
        };
        let action = match entry.kind {
            MessageKind::Query => "receive",
            _ => "send",
        };
        channels.insert(
            channel.clone(),
            json!({
                "address": entry.subject,
                "title": entry.name,
                "description": entry.description().unwrap_or_default(),
                "parameters": parameters(&entry.subject),
                "messages": { entry.id(): message_ref(&entry.id()) },
            }),
        );
        operations.insert(
            channel.clone(),
            json!({
                "action": action,
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [{ "$ref": format!("#/channels/{channel}/messages/{}", entry.id()) }],
                "tags": [{ "name": entry.kind.as_str() }],
            }),
        );
    }

    for channel in channels.values_mut() {
        if let Some(map) = channel.as_object_mut()
            && map.get("parameters").is_some_and(Value::is_null)
        {
            map.remove("parameters");
        }
    }

    vec![
        ("asyncapi", json!("3.0.0")),
        (
            "info",
            json!({
                "title": "TalkwAI event backbone",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Commands, events, replies, queries, room topics and presence of \
                    the TalkwAI backbone over NATS. Generated from the Rust types by \
                    `cargo run -p talkwai-proto --bin talkwai-proto-gen`; do not edit by hand. \
                    Event bodies are `{\"type\", \"version\", \"data\"}`; every version ever \
                    written has a fixture under fixtures/events/.",
            }),
        ),
        ("defaultContentType", json!("application/json")),
        (
            "servers",
            json!({
                "local": {
                    "host": "localhost:4222",
                    "protocol": "nats",
                    "description": "a local nats-server (JetStream enabled)",
                },
                "websocket": {
                    "host": "localhost:8080",
                    "protocol": "ws",
                    "description": "the NATS WebSocket listener browsers use",
                },
            }),
        ),
        ("channels", Value::Object(channels)),
        ("operations", Value::Object(operations)),
        (
            "components",
            json!({
                "parameters": parameter_definitions(),
                "schemas": {
                    "CommandHeaders": command_headers(),
                    "EventHeaders": event_headers(),
                    "ReplyHeaders": reply_headers(),
                },
                "messages": messages,
            }),
        ),
    ]
}

/// Example payloads by message id, from the [samples](crate::samples).
fn examples() -> BTreeMap<String, Value> {
    let mut examples: BTreeMap<String, Value> = samples::command_bodies()
        .into_iter()
        .map(|(name, body)| (name.to_owned(), body))
        .collect();
    for event in samples::events() {
        let body = event.encode();
        let id = format!("{}.v{}", body.event_type, body.version);
        examples.insert(id, serde_json::to_value(&body).unwrap_or(Value::Null));
    }
    examples
}

fn message_ref(id: &str) -> Value {
    json!({ "$ref": format!("#/components/messages/{id}") })
}

/// The parameters named in a subject pattern, as references.
fn parameters(subject: &str) -> Value {
    let params = parameter_refs(subject);
    if params.as_object().is_some_and(Map::is_empty) {
        Value::Null
    } else {
        params
    }
}

fn parameter_refs(subject: &str) -> Value {
    let mut params = Map::new();
    for token in subject.split('.') {
        if let Some(name) = token.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            params.insert(
                name.to_owned(),
                json!({ "$ref": format!("#/components/parameters/{name}") }),
            );
        }
    }
    Value::Object(params)
}

fn parameter_definitions() -> Value {
    json!({
        "tenant": {
            "description": "the tenant id (a UUID); `platform` stands for the platform scope",
            "examples": ["0190bc1e-5a3b-7d4e-8f21-3c6a9b0d1e01", "platform"],
        },
        "aggregate": {
            "description": "the aggregate kind",
            "enum": ["tenant", "member", "admin", "agent", "task", "user"],
        },
        "id": {
            "description": "the aggregate's id (a UUID chosen by the caller at creation); \
                            for a tenant it equals the tenant id",
        },
        "action": {
            "description": "the command action, camelCase (`create`, `setStatus`, `linkUser`...)",
        },
        "kind": {
            "description": "the uniqueness guard kind",
            "enum": ["member-email", "admin-email", "user-email", "user-member", "user-admin"],
        },
        "hash": {
            "description": "hex of the first 128 bits of the SHA-256 of the guarded value",
        },
        "roomType": {
            "description": "the room type: `tenant` (id: the tenant id) or `admin` (id: `global`)",
            "enum": ["tenant", "admin"],
        },
        "roomId": {
            "description": "the room id",
        },
        "op": {
            "description": "the presence operation",
            "enum": ["join", "update", "leave", "heartbeat", "get"],
        },
        "memberId": {
            "description": "the member notified",
        },
    })
}

fn header(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn command_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            headers::COMMAND_ID: {
                "type": "string", "format": "uuid", "pattern": schema::UUID_PATTERN,
                "description": "idempotency key of the command, a UUID chosen by the caller",
            },
            headers::AUTHORIZATION: {
                "type": "string", "pattern": "^Bearer .+$",
                "description": "`Bearer <jwt>`",
            },
            headers::TRACEPARENT: header("W3C trace context"),
            headers::TRACESTATE: header("W3C trace state"),
        },
        "required": [headers::COMMAND_ID, headers::AUTHORIZATION],
    })
}

fn event_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            headers::EVENT_TYPE: header("the event type (`task.started`)"),
            headers::EVENT_VERSION: header("the event version (decimal)"),
            headers::TENANT: header("the tenant id, or `platform`"),
            headers::ACTOR: header("who caused the event: `platform`, `admin:<id>`, `member:<id>`"),
            headers::COMMAND_ID: header("the id of the command that wrote the event"),
            headers::OCCURRED_AT: header("when it happened, epoch milliseconds (decimal)"),
            headers::COMMAND_PART: header("position of the event within its command (`1/3`)"),
            headers::TRACEPARENT: header("W3C trace context"),
            headers::TRACESTATE: header("W3C trace state"),
            headers::NATS_MSG_ID: header("JetStream deduplication id, derived from the command id"),
            headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE: header(
                "JetStream optimistic concurrency: the aggregate's last sequence (0 for a create)"
            ),
        },
        "required": [
            headers::EVENT_TYPE,
            headers::EVENT_VERSION,
            headers::TENANT,
            headers::ACTOR,
            headers::COMMAND_ID,
            headers::OCCURRED_AT,
        ],
    })
}

fn reply_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            headers::NATS_SERVICE_ERROR: header("NATS services API error text (rejections only)"),
            headers::NATS_SERVICE_ERROR_CODE: header(
                "NATS services API error code, HTTP-like (400, 404, 409...)"
            ),
        },
    })
}

fn file_ref(entry: &CatalogEntry) -> Value {
    json!({ "$ref": format!("./{}", entry.schema_path()) })
}

fn message(entry: &CatalogEntry, example: Option<&Value>) -> Value {
    let mut message = Map::new();
    message.insert("name".into(), json!(entry.id()));
    message.insert("title".into(), json!(entry.name));
    if let Some(description) = entry.description() {
        message.insert("summary".into(), json!(description));
    }
    message.insert("contentType".into(), json!("application/json"));
    let headers = match entry.kind {
        MessageKind::Command | MessageKind::Query => Some("CommandHeaders"),
        MessageKind::Event | MessageKind::Guard => Some("EventHeaders"),
        MessageKind::Reply => Some("ReplyHeaders"),
        _ => None,
    };
    if let Some(name) = headers {
        message.insert(
            "headers".into(),
            json!({ "$ref": format!("#/components/schemas/{name}") }),
        );
    }
    let schema = match (entry.kind, entry.version) {
        // An event travels in the envelope: `{"type": <name>, "version": <n>, "data": <schema>}`.
        (MessageKind::Event, Some(version)) => json!({
            "type": "object",
            "properties": {
                "type": { "const": entry.name },
                "version": { "const": version },
                "data": file_ref(entry),
            },
            "required": ["type", "version", "data"],
            "additionalProperties": false,
        }),
        _ => file_ref(entry),
    };
    message.insert(
        "payload".into(),
        json!({ "schemaFormat": SCHEMA_FORMAT, "schema": schema }),
    );
    if let Some(rust_type) = entry.rust_type {
        message.insert("x-rust-type".into(), json!(rust_type));
    }
    if let Some(payload) = example {
        message.insert(
            "examples".into(),
            json!([{ "name": entry.id(), "payload": payload }]),
        );
    }
    message.insert("tags".into(), json!([{ "name": entry.kind.as_str() }]));
    Value::Object(message)
}
