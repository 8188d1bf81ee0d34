//! The AsyncAPI 3.0.0 document of the contract, built from the [catalog](crate::schema::catalog).
//!
//! Operations are described from the backbone's side: it receives commands and queries (and
//! replies to them), sends events, guard events, room topics and presence. Message payloads
//! reference the schema files under `proto/schemas/`.
//!
//! [`channel_for`] tells which channel a concrete subject belongs to, so tests can check that
//! every subject the system uses is in the contract.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::schema::{self, CatalogEntry, MessageKind};
use crate::{headers, room, samples, subject};

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
    let reply_messages: Map<String, Value> = catalog
        .iter()
        .filter(|e| e.subject == schema::REPLY_SUBJECT && e.kind != MessageKind::Error)
        .map(|e| (e.id(), message_ref(&e.id())))
        .collect();
    channels.insert(
        reply_channel.to_owned(),
        json!({
            "address": null,
            "title": "reply",
            "description": "the requester's inbox (NATS request/reply; `_INBOX.>` by default): \
                            `{\"ok\": true, ...}` or `{\"ok\": false, \"error\": {...}}`; \
                            rejected command and query replies also set the NATS services \
                            error headers",
            "messages": reply_messages,
        }),
    );
    let reply = |message: &str| {
        json!({
            "channel": { "$ref": format!("#/channels/{reply_channel}") },
            "messages": [{ "$ref": format!("#/channels/{reply_channel}/messages/{message}") }],
        })
    };

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
                "reply": reply("CommandReply"),
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

    query_channels(&mut channels, &mut operations, &reply);
    service_channels(&mut channels, &mut operations, &reply);

    // Rooms and guards: one channel per entry; an operation for what the backbone sends or
    // answers (client topics have none: clients publish them, the backbone never reads them).
    for entry in catalog.iter().filter(|e| {
        matches!(
            e.kind,
            MessageKind::Guard | MessageKind::Topic | MessageKind::Presence
        ) && e.subject != schema::REPLY_SUBJECT
    }) {
        let channel = match entry.kind {
            MessageKind::Guard if entry.name == "CommandRecorded" => "evt.command".to_owned(),
            MessageKind::Guard if entry.name == "WriterFence" => "evt.writerFence".to_owned(),
            MessageKind::Guard if entry.name == "PartitionOwner" => "evt.partitionOwner".to_owned(),
            MessageKind::Guard => "evt.guard".to_owned(),
            MessageKind::Presence if entry.name == "presence" => "room.presence".to_owned(),
            MessageKind::Presence => format!("room.{}", entry.name),
            _ => format!("room.topic.{}", entry.name),
        };
        let mut body = json!({
            "address": entry.subject,
            "title": entry.name,
            "description": entry.description().unwrap_or_default(),
            "parameters": parameters(&entry.subject),
            "messages": { entry.id(): message_ref(&entry.id()) },
        });
        if let Some(publishers) = publishers(entry) {
            body["x-talkwai-publishers"] = json!(publishers);
        }
        channels.insert(channel.clone(), body);
        let message = json!([{ "$ref": format!("#/channels/{channel}/messages/{}", entry.id()) }]);
        let operation = match (entry.kind, entry.name.as_str()) {
            (MessageKind::Presence, "presence") => json!({
                "action": "receive",
                "summary": "the notifier answers presence requests",
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": message,
                "reply": reply("presenceReply"),
                "tags": [{ "name": entry.kind.as_str() }],
            }),
            (MessageKind::Topic, name) if room::is_client_topic(name) => continue,
            _ => json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": message,
                "tags": [{ "name": entry.kind.as_str() }],
            }),
        };
        operations.insert(channel, operation);
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
                    written has a message here (`<type>.v<N>`), a schema under \
                    schemas/events/ and a fixture under fixtures/events/; \
                    fixtures/history/ holds stored messages of every version, read forever.",
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
                    "AuthHeaders": auth_headers(),
                    "EventHeaders": event_headers(),
                    "ReplyHeaders": reply_headers(),
                },
                "messages": messages,
            }),
        ),
    ]
}

/// The query API's channels: queries and subscriptions (answered), live updates (sent) and
/// live-query control (answered by the instance holding the subscription).
fn query_channels(
    channels: &mut Map<String, Value>,
    operations: &mut Map<String, Value>,
    reply: &dyn Fn(&str) -> Value,
) {
    let specs = [
        (
            "qry",
            subject::QUERY_PATTERN,
            "query",
            "an InstaQL-shaped query; the tenant scope comes from the caller's token and \
             `platform` (admins) reads every tenant",
            "QueryRequest",
            Some("QueryReply"),
        ),
        (
            "qry.subscribe",
            subject::SUBSCRIBE_PATTERN,
            "live query",
            "subscribes to a query (same body): the reply carries the first answer, the \
             `subject` of its updates and the `control` subject",
            "QueryRequest",
            Some("SubscribeReply"),
        ),
        (
            "qry.live",
            subject::LIVE_QUERY_PATTERN,
            "live query updates",
            "a live query's changed answers, published by the query service after each \
             projection commit that changed the answer",
            "LiveUpdate",
            None,
        ),
        (
            "qry.live.control",
            subject::LIVE_CONTROL_PATTERN,
            "live query control",
            "`{\"op\": \"renew\"}` every `ttlMs`/2 and `{\"op\": \"unsubscribe\"}`; only the \
             instance holding the subscription answers, no answer means it is gone",
            "LiveControl",
            Some("LiveControlReply"),
        ),
    ];
    for (channel, address, title, description, message, answer) in specs {
        channels.insert(
            channel.to_owned(),
            json!({
                "address": address,
                "title": title,
                "description": description,
                "parameters": parameters(address),
                "messages": { message: message_ref(message) },
                "x-talkwai-publishers": match answer {
                    Some(_) => json!(["clients"]),
                    None => json!(["query service"]),
                },
            }),
        );
        let messages = json!([{ "$ref": format!("#/channels/{channel}/messages/{message}") }]);
        let mut operation = json!({
            "action": if answer.is_some() { "receive" } else { "send" },
            "title": title,
            "channel": { "$ref": format!("#/channels/{channel}") },
            "messages": messages,
            "tags": [{ "name": "query" }],
        });
        if let Some(answer) = answer {
            operation["reply"] = reply(answer);
        }
        operations.insert(channel.to_owned(), operation);
    }
}

/// The NATS services API: every service answers discovery requests for all services, its
/// name, and its instance (`talkwai-notifier` sends `$SRV.PING.<service>` to watch them).
fn service_channels(
    channels: &mut Map<String, Value>,
    operations: &mut Map<String, Value>,
    reply: &dyn Fn(&str) -> Value,
) {
    for (channel, address, title) in [
        ("srv", "$SRV.{verb}", "every service"),
        ("srv.service", "$SRV.{verb}.{service}", "one service"),
        (
            "srv.instance",
            "$SRV.{verb}.{service}.{instance}",
            "one instance",
        ),
    ] {
        channels.insert(
            channel.to_owned(),
            json!({
                "address": address,
                "title": format!("services API: {title}"),
                "description": "NATS services API discovery (ADR-32); the request body is empty",
                "parameters": parameters(address),
            }),
        );
        operations.insert(
            channel.to_owned(),
            json!({
                "action": "receive",
                "title": format!("services API: {title}"),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "reply": reply(schema::SERVICE_REPLY),
                "tags": [{ "name": "service" }],
            }),
        );
    }
}

/// Who may publish on a room channel (enforced by the NATS permissions in
/// `deploy/nats/auth.conf`).
fn publishers(entry: &CatalogEntry) -> Option<Vec<&'static str>> {
    match (entry.kind, entry.name.as_str()) {
        (MessageKind::Topic, room::SYSTEM_ALERTS) => Some(vec!["notifier", "projector"]),
        (MessageKind::Topic, name) if room::is_client_topic(name) => Some(vec!["clients"]),
        (MessageKind::Topic, _) | (MessageKind::Presence, "presenceEvents") => {
            Some(vec!["notifier"])
        }
        (MessageKind::Presence, _) => Some(vec!["clients"]),
        (MessageKind::Guard, _) => Some(vec!["command service"]),
        _ => None,
    }
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
        "commandId": {
            "description": "the command's `Talkwai-Command-Id`, as 32 hex digits (a UUID without dashes)",
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
        "verb": {
            "description": "the services API request",
            "enum": ["PING", "INFO", "STATS"],
        },
        "service": {
            "description": "a service name",
            "enum": schema::SERVICE_NAMES,
        },
        "instance": {
            "description": "a service instance's id (from `PING` or `INFO`)",
        },
        "writer": {
            "description": "a command-service instance's id in its partition lease bucket \
                            (`<name>-<8 hex digits>`)",
        },
        "partition": {
            "description": "a command-service partition, `<count>-<index>`",
        },
        "subscription": {
            "description": "a live query's subscription id (a UUID), from the subscribe reply",
        },
        "topic": {
            "description": "a client topic's name (`[A-Za-z0-9_-]+`): any name but the service \
                            topics `taskUpdates`, `notifications`, `systemAlerts` and `roomClosed`",
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

fn auth_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            headers::AUTHORIZATION: {
                "type": "string", "pattern": "^Bearer .+$",
                "description": "`Bearer <token>`: the platform token or a member's or admin's JWT",
            },
            headers::TRACEPARENT: header("W3C trace context"),
            headers::TRACESTATE: header("W3C trace state"),
        },
        "required": [headers::AUTHORIZATION],
    })
}

fn event_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            headers::EVENT_TYPE: header("the event type (`task.started`)"),
            headers::EVENT_VERSION: {
                "type": "string",
                "pattern": "^[1-9][0-9]*$",
                "description": "the version of the event type's data (decimal), per type, equal \
                    to the body's `version`: where an event's schema version lives on the wire. \
                    Writers write the type's current version; readers upcast every older one \
                    and refuse a newer one (`unknown version`). Each event message below names \
                    its version in `x-talkwai-event-version`",
            },
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
    let headers = match (entry.kind, entry.name.as_str()) {
        (MessageKind::Command, _) => Some("CommandHeaders"),
        (MessageKind::Query, "QueryRequest") | (MessageKind::Presence, "presence") => {
            Some("AuthHeaders")
        }
        (MessageKind::Event | MessageKind::Guard, _) => Some("EventHeaders"),
        (MessageKind::Reply, _) | (MessageKind::Query, "QueryReply" | "SubscribeReply") => {
            Some("ReplyHeaders")
        }
        _ => None,
    };
    if let Some(name) = headers {
        let shared = json!({ "$ref": format!("#/components/schemas/{name}") });
        let headers = match (entry.kind, entry.version) {
            // An event's version header holds exactly the version of its message.
            (MessageKind::Event, Some(version)) => json!({ "allOf": [shared, {
                "type": "object",
                "properties": { headers::EVENT_VERSION: { "const": version.to_string() } },
            }] }),
            _ => shared,
        };
        message.insert("headers".into(), headers);
    }
    if let (MessageKind::Event, Some(version)) = (entry.kind, entry.version) {
        let current = talkwai_domain::current_version(&entry.name);
        let status = if version == current {
            "current: what writers write"
        } else {
            "superseded: stored events of this version are upcast to the current one on read"
        };
        message.insert(
            "x-talkwai-event-version".into(),
            json!({ "version": version, "current": current, "status": status }),
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

/// The channels that have an address, as `(channel id, address)`, in document order.
pub fn channel_addresses() -> &'static [(String, String)] {
    static CHANNELS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
        document(&schema::catalog())
            .into_iter()
            .find(|(key, _)| *key == "channels")
            .and_then(|(_, channels)| channels.as_object().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(id, channel)| {
                let address = channel["address"].as_str()?.to_owned();
                Some((id, address))
            })
            .collect()
    });
    &CHANNELS
}

/// The reply channel's id; replies go to the requester's inbox (`_INBOX.` by default).
pub const REPLY_CHANNEL: &str = "reply";

/// The id of the AsyncAPI channel a concrete subject belongs to, or `None` when the contract
/// does not describe it.
///
/// A channel matches when the subject has as many tokens as its address, literal tokens are
/// equal and each parameter accepts its token (ids are UUIDs, `{tenant}` is a UUID or
/// `platform`, enumerated parameters take their values, `{topic}` is a client topic). When
/// several match, the one with the most literal tokens wins (`topic.taskUpdates` over
/// `topic.{topic}`). `_INBOX.` subjects are the reply channel.
pub fn channel_for(subject: &str) -> Option<&'static str> {
    if subject.starts_with("_INBOX.") {
        return Some(REPLY_CHANNEL);
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens
        .iter()
        .any(|t| t.is_empty() || *t == "*" || *t == ">")
    {
        return None;
    }
    channel_addresses()
        .iter()
        .filter_map(|(id, address)| {
            let pattern: Vec<&str> = address.split('.').collect();
            if pattern.len() != tokens.len() {
                return None;
            }
            let mut literals = 0;
            for (expected, token) in pattern.iter().zip(&tokens) {
                match parameter_name(expected) {
                    Some(name) if parameter_accepts(name, token) => {}
                    Some(_) => return None,
                    None if expected == token => literals += 1,
                    None => return None,
                }
            }
            Some((literals, id.as_str()))
        })
        .max_by_key(|(literals, _)| *literals)
        .map(|(_, id)| id)
}

/// Whether a subject is NATS's own machinery that services use as storage or plumbing rather
/// than a message of the contract: JetStream's API and acks (`$JS.`), key-value buckets
/// (`$KV.`, the presence and lease buckets), object stores (`$O.`) and the system account
/// (`$SYS.`). A check that every subject seen on the wire has a channel skips these.
pub fn is_nats_internal(subject: &str) -> bool {
    ["$JS.", "$JSC.", "$KV.", "$O.", "$SYS."]
        .iter()
        .any(|prefix| subject.starts_with(prefix))
}

/// The channels a NATS subject filter (with `*` and `>` wildcards, as subscriptions and stream
/// filters use) can receive messages of.
pub fn channels_matching_filter(filter: &str) -> Vec<&'static str> {
    let filter: Vec<&str> = filter.split('.').collect();
    channel_addresses()
        .iter()
        .filter(|(_, address)| {
            let pattern: Vec<&str> = address.split('.').collect();
            filter_overlaps(&filter, &pattern)
        })
        .map(|(id, _)| id.as_str())
        .collect()
}

fn filter_overlaps(filter: &[&str], pattern: &[&str]) -> bool {
    match (filter.split_first(), pattern.split_first()) {
        (Some((&">", _)), Some(_)) => true,
        (Some((token, filter)), Some((expected, pattern))) => {
            let matches = *token == "*"
                || match parameter_name(expected) {
                    Some(name) => parameter_accepts(name, token),
                    None => expected == token,
                };
            matches && filter_overlaps(filter, pattern)
        }
        (None, None) => true,
        _ => false,
    }
}

fn parameter_name(token: &str) -> Option<&str> {
    token.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
}

/// Whether a subject token is a valid value of an address parameter.
fn parameter_accepts(name: &str, token: &str) -> bool {
    static DEFINITIONS: LazyLock<Value> = LazyLock::new(parameter_definitions);
    if token.is_empty() || token == "*" || token == ">" {
        return false;
    }
    if let Some(values) = DEFINITIONS[name]["enum"].as_array() {
        return values.iter().any(|v| v.as_str() == Some(token));
    }
    match name {
        "tenant" => token == crate::subject::PLATFORM || token.parse::<Uuid>().is_ok(),
        "id" | "subscription" | "memberId" => token.parse::<Uuid>().is_ok(),
        "commandId" => token.len() == 32 && token.parse::<Uuid>().is_ok(),
        "hash" => token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "topic" => {
            room::is_client_topic(token)
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        }
        _ => true,
    }
}
