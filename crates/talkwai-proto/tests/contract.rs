//! The wire contract in `proto/` against the Rust types: the checked-in files equal what the
//! generator renders, every fixture decodes and validates against its schema with a real
//! JSON Schema validator, and every message the Rust code produces validates too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jsonschema::Validator;
use serde_json::{Value, json};
use talkwai_domain::{Command, ErrorCode, Event, EventBody, GuardEvent};
use talkwai_proto::generate::{self, REGENERATE};
use talkwai_proto::schema::{self, CatalogEntry, CommandScope, MessageKind, catalog};
use talkwai_proto::{CommandAccepted, CommandReply, CommandSubject, ErrorBody, decode_command};
use talkwai_proto::{samples, subject};
use uuid::Uuid;

fn proto() -> std::path::PathBuf {
    generate::proto_dir()
}

fn read_json(root: &Path, path: &str) -> Value {
    let text = std::fs::read_to_string(root.join(path))
        .unwrap_or_else(|e| panic!("cannot read proto/{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("proto/{path} is not JSON: {e}"))
}

/// A validator for a checked-in schema file (so the files, not only the catalog, are tested).
fn validator(path: &str) -> Validator {
    let schema = read_json(&proto(), path);
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("proto/{path} is not a valid schema: {e}"))
}

fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate:\n  {}\ninstance: {instance}",
        errors.join("\n  ")
    );
}

fn entries(kind: MessageKind) -> Vec<CatalogEntry> {
    catalog().into_iter().filter(|e| e.kind == kind).collect()
}

fn only(kind: MessageKind) -> CatalogEntry {
    let mut found = entries(kind);
    assert_eq!(found.len(), 1, "expected one {kind:?} entry");
    found.remove(0)
}

const TENANT: &str = "01907c1e-5a3b-7d4e-8f21-3c6a9b0d1e01";

/// The concrete command subject of a catalog entry, for the sample tenant.
fn command_subject(entry: &CatalogEntry) -> CommandSubject {
    let subject = entry.subject_with(&[("tenant", TENANT)]);
    CommandSubject::parse(&subject)
        .unwrap_or_else(|e| panic!("{} has an unparsable subject {subject}: {e}", entry.name))
}

#[test]
fn checked_in_proto_is_up_to_date() {
    let drift = generate::check(&proto()).expect("proto/ is readable");
    let report: Vec<String> = drift.iter().map(ToString::to_string).collect();
    assert!(
        drift.is_empty(),
        "proto/ differs from the Rust types:\n  {}\nrun `{REGENERATE}` and commit the result",
        report.join("\n  ")
    );
}

#[test]
fn every_generated_schema_is_a_valid_draft7_schema() {
    for (path, text) in generate::generated() {
        if !path.ends_with(".json") {
            continue;
        }
        let schema: Value = serde_json::from_str(&text).expect("generated schema is JSON");
        assert_eq!(
            schema["$schema"], "http://json-schema.org/draft-07/schema#",
            "{path} must declare draft-07"
        );
        jsonschema::draft7::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{path} is not a valid draft-07 schema: {e}"));
    }
}

#[test]
fn catalog_covers_exactly_the_domain_commands_with_their_rust_types() {
    let domain = schema::domain_commands();
    let names: BTreeSet<_> = domain.iter().map(|v| v.name.clone()).collect();
    let listed: BTreeSet<_> = entries(MessageKind::Command)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names, listed,
        "the catalog's commands (schema::catalog) must be exactly the domain's command actions"
    );
    assert_eq!(
        names.len(),
        45,
        "commands listed in the brief, tenant.erase and the four subject erasures"
    );
    for variant in domain {
        let entry = schema::command_entry(&variant.name).expect("listed");
        assert_eq!(
            strip_root(&entry.schema),
            variant.payload,
            "catalog type of {} is not the body type the domain decodes",
            variant.name
        );
    }
}

#[test]
fn catalog_covers_exactly_the_domain_events_with_their_rust_types() {
    let domain = schema::domain_events();
    let names: BTreeSet<_> = domain.iter().map(|v| v.name.clone()).collect();
    let current: BTreeSet<_> = entries(MessageKind::Event)
        .into_iter()
        .filter(|e| e.version == Some(talkwai_domain::current_version(&e.name)))
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names, current,
        "the catalog's current events must be exactly the domain's event types"
    );
    for variant in domain {
        let entry = schema::current_event_entry(&variant.name).expect("listed");
        assert_eq!(
            strip_root(&entry.schema),
            variant.payload,
            "catalog type of {} is not the data type the domain decodes",
            variant.name
        );
    }
}

#[test]
fn every_event_type_lists_every_version_from_1_to_its_current_one() {
    let mut listed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for entry in entries(MessageKind::Event) {
        listed
            .entry(entry.name.clone())
            .or_default()
            .push(entry.version.expect("events are versioned"));
    }
    for (event_type, mut versions) in listed {
        versions.sort_unstable();
        let current = talkwai_domain::current_version(&event_type);
        assert_eq!(
            versions,
            (1..=current).collect::<Vec<_>>(),
            "{event_type}: the catalog must keep every version ever written, up to the current \
             one (talkwai_domain::upcast)"
        );
    }
}

/// The root schema of a type as it appears among another schema's definitions.
fn strip_root(schema: &Value) -> Value {
    let mut schema = schema.clone();
    let map = schema.as_object_mut().expect("schema object");
    for key in ["$schema", "title", "definitions"] {
        map.remove(key);
    }
    schema
}

#[test]
fn every_event_the_domain_emits_has_a_schema_and_a_fixture() {
    let emitted: BTreeSet<String> = samples::events()
        .iter()
        .map(|e| {
            let body = e.encode();
            assert_eq!(body.event_type, e.type_name());
            format!("{}.v{}", body.event_type, body.version)
        })
        .collect();
    let domain: BTreeSet<String> = schema::domain_events()
        .into_iter()
        .map(|v| format!("{}.v{}", v.name, talkwai_domain::current_version(&v.name)))
        .collect();
    assert_eq!(
        emitted, domain,
        "samples::events() must hold one event of every domain event type"
    );
    for id in &emitted {
        let (event_type, version) = id.rsplit_once(".v").expect("id");
        let version: u32 = version.parse().expect("version");
        let entry = schema::event_entry(event_type, version)
            .unwrap_or_else(|| panic!("{id} has no catalog entry"));
        assert!(
            proto().join(entry.schema_path()).is_file(),
            "{id} has no schema file; run `{REGENERATE}`"
        );
        assert!(
            proto()
                .join(generate::event_fixture_path(event_type, version))
                .is_file(),
            "{id} has no fixture; run `{REGENERATE}` to create it, then commit it"
        );
    }
    // Every version ever written stays in the catalog, with its fixture.
    for entry in entries(MessageKind::Event) {
        let version = entry.version.expect("events are versioned");
        assert!(
            proto()
                .join(generate::event_fixture_path(&entry.name, version))
                .is_file(),
            "{} has no fixture",
            entry.id()
        );
    }
}

#[test]
fn every_event_fixture_decodes_and_validates() {
    let root = proto();
    let files = generate::list_files(&root, generate::EVENT_FIXTURES_DIR).expect("fixtures");
    assert!(
        !files.is_empty(),
        "no event fixtures under proto/fixtures/events"
    );
    let envelope = validator(&only(MessageKind::EventEnvelope).schema_path());
    for path in files {
        let value = read_json(&root, &path);
        assert_valid(&envelope, &value, &path);
        let body: EventBody = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{path} is not an event body: {e}"));
        let expected = generate::event_fixture_path(&body.event_type, body.version);
        assert_eq!(
            path, expected,
            "fixture name must be <type>.v<version>.json"
        );
        let entry = schema::event_entry(&body.event_type, body.version).unwrap_or_else(|| {
            panic!("{path}: no catalog entry for the type and version it holds")
        });
        assert_valid(&validator(&entry.schema_path()), &body.data, &path);

        let event = Event::decode(&body).unwrap_or_else(|e| panic!("{path} does not decode: {e}"));
        let encoded = event.encode();
        assert_eq!(encoded.event_type, body.event_type, "{path}: type changed");
        let current = schema::event_entry(&encoded.event_type, encoded.version)
            .expect("current version is listed");
        assert_valid(
            &validator(&current.schema_path()),
            &encoded.data,
            &format!("{path} re-encoded"),
        );
        if body.version == talkwai_domain::current_version(&body.event_type) {
            assert_eq!(
                encoded, body,
                "{path}: a current-version fixture must re-encode to itself"
            );
        }
    }
}

#[test]
fn every_command_fixture_decodes_and_validates() {
    let root = proto();
    let files = generate::list_files(&root, generate::COMMAND_FIXTURES_DIR).expect("fixtures");
    let mut seen = BTreeSet::new();
    for path in files {
        let name = path
            .strip_prefix(&format!("{}/", generate::COMMAND_FIXTURES_DIR))
            .and_then(|p| p.strip_suffix(".json"))
            .expect("fixture path")
            .to_owned();
        let entry = schema::command_entry(&name)
            .unwrap_or_else(|| panic!("{path}: no command {name} in the catalog"));
        let body = read_json(&root, &path);
        let schema = validator(&entry.schema_path());
        assert_valid(&schema, &body, &path);

        let subject = command_subject(&entry);
        let bytes = serde_json::to_vec(&body).expect("json");
        let command = decode_command(&subject, &bytes)
            .unwrap_or_else(|e| panic!("{path} does not decode on {subject}: {e:?}"));
        assert_eq!(
            command.permission(),
            name,
            "{path} decoded as another command"
        );
        assert_eq!(
            command.is_platform(),
            entry.scope == Some(CommandScope::Platform),
            "{name}: catalog scope disagrees with Command::is_platform"
        );
        let encoded = serde_json::to_value(&command).expect("serialize");
        assert_valid(
            &schema,
            &encoded["command"]["body"],
            &format!("{path} re-encoded"),
        );
        seen.insert(name);
    }
    let all: BTreeSet<_> = entries(MessageKind::Command)
        .into_iter()
        .map(|e| e.name)
        .collect();
    let missing: Vec<_> = all.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "commands without a fixture: {missing:?}; run `{REGENERATE}`"
    );
}

#[test]
fn command_and_event_subjects_follow_the_subject_scheme() {
    let root = proto();
    let tenant: Uuid = TENANT.parse().expect("uuid");
    for entry in entries(MessageKind::Command) {
        let subject = command_subject(&entry);
        let body = read_json(&root, &generate::command_fixture_path(&entry.name));
        let command = decode_command(&subject, &serde_json::to_vec(&body).expect("json"))
            .expect("fixture decodes");
        let target = command.target(subject.scope.tenant());
        // The event subject pattern of the command's aggregate addresses the same aggregate.
        let pattern = schema::event_subject(entry.aggregate().expect("aggregate"));
        let id = target.id.to_string();
        let concrete = pattern
            .replace(
                "{tenant}",
                &target.tenant.map_or(TENANT.to_owned(), |t| t.to_string()),
            )
            .replace("{id}", &id);
        assert_eq!(concrete, subject::event(&target), "{}", entry.name);
        if entry.scope == Some(CommandScope::Tenant) {
            assert_eq!(subject.scope.tenant().map(|t| t.0), Some(tenant));
        }
    }
}

fn accepted_reply() -> CommandReply {
    let events: Vec<EventBody> = samples::events()
        .iter()
        .filter(|e| matches!(e, Event::Task(_)))
        .map(Event::encode)
        .collect();
    CommandReply::accepted(CommandAccepted {
        id: samples::TASK,
        version: events.len() as u64,
        events,
        seq: 4_211,
        erasure: None,
    })
}

#[test]
fn replies_and_every_error_code_validate() {
    let reply_entry = only(MessageKind::Reply);
    let reply = validator(&reply_entry.schema_path());
    let error = validator(&only(MessageKind::Error).schema_path());

    let accepted = serde_json::to_value(accepted_reply()).expect("serialize");
    assert_eq!(accepted["ok"], true);
    assert_valid(&reply, &accepted, "accepted reply");
    let noop = serde_json::to_value(CommandReply::accepted(CommandAccepted {
        id: samples::TASK,
        version: 3,
        events: Vec::new(),
        seq: 17,
        erasure: None,
    }))
    .expect("serialize");
    assert_valid(&reply, &noop, "no-op reply");
    let erased = serde_json::to_value(CommandReply::accepted(CommandAccepted {
        id: samples::MEMBER,
        version: 4,
        events: Vec::new(),
        seq: 18,
        erasure: Some(talkwai_proto::ErasureReport {
            key_destroyed: false,
            clear_in_log: true,
        }),
    }))
    .expect("serialize");
    assert_eq!(erased["erasure"]["clearInLog"], true);
    assert_valid(&reply, &erased, "erasure reply");

    for code in ErrorCode::ALL {
        for body in [
            ErrorBody::new(code, "something went wrong"),
            ErrorBody::new(code, "something went wrong").with_field("assignedTo"),
        ] {
            let value = serde_json::to_value(&body).expect("serialize");
            assert_eq!(value["code"], code.as_str());
            assert_valid(&error, &value, &format!("error body {code}"));
            let rejected = serde_json::to_value(CommandReply::rejected(body)).expect("json");
            assert_valid(&reply, &rejected, &format!("rejected reply {code}"));
            let back: CommandReply = serde_json::from_value(rejected).expect("decodes");
            assert!(back.into_result().is_err());
        }
    }

    // The schema tells the two shapes apart and knows the codes.
    assert!(!reply.is_valid(
        &json!({ "ok": false, "id": samples::TASK, "version": 1, "events": [], "seq": 1 })
    ));
    assert!(
        !reply.is_valid(&json!({ "ok": true, "error": { "code": "conflict", "message": "x" } }))
    );
    assert!(!error.is_valid(&json!({ "code": "teapot", "message": "x" })));
    assert!(!error.is_valid(&json!({ "code": "conflict", "message": "x", "extra": 1 })));
}

#[test]
fn real_decoding_errors_validate_as_error_bodies() {
    let error = validator(&only(MessageKind::Error).schema_path());
    let entry = schema::command_entry("task.create").expect("listed");
    let subject = command_subject(&entry);
    let bad_bodies: [&[u8]; 5] = [
        b"not json",
        b"[]",
        br#"{"id": "01907c1e-5a3b-7d4e-8f21-3c6a9b0d5e06", "type": "fax"}"#,
        br#"{"id": "01907c1e-5a3b-7d4e-8f21-3c6a9b0d5e06", "surprise": 1}"#,
        &[b' '; talkwai_proto::envelope::MAX_COMMAND_BYTES + 1],
    ];
    for body in bad_bodies {
        let err = decode_command(&subject, body).expect_err("rejected");
        let value = serde_json::to_value(&err).expect("serialize");
        assert_valid(&error, &value, "decoding error");
    }
}

#[test]
fn schemas_accept_null_where_rust_accepts_null() {
    // Nullable patches: `null` clears, absent keeps. Both Rust and the schema accept both.
    let cases = [
        ("tenant.update", json!({ "id": TENANT, "domain": null })),
        (
            "member.update",
            json!({ "id": samples::MEMBER, "phone": null }),
        ),
        (
            "agent.update",
            json!({ "id": samples::AGENT, "description": null }),
        ),
        (
            "task.update",
            json!({ "id": samples::TASK, "subject": null, "content": null, "scheduledAt": null }),
        ),
        (
            "task.setMetadata",
            json!({ "id": samples::TASK, "metadata": null }),
        ),
        // Plain optional fields accept `null` as absent.
        (
            "task.create",
            json!({
                "id": samples::TASK, "type": "email", "fromAddress": "desk@acme-dental.com",
                "toAddress": "patient@example.org", "priority": null, "agent": null,
            }),
        ),
    ];
    for (name, body) in cases {
        let entry = schema::command_entry(name).expect("listed");
        assert_valid(&validator(&entry.schema_path()), &body, name);
        decode_command(
            &command_subject(&entry),
            &serde_json::to_vec(&body).expect("json"),
        )
        .unwrap_or_else(|e| panic!("{name} with null does not decode: {e:?}"));
    }
    // Events that record a cleared field carry `null`.
    for event in samples::events() {
        let body = event.encode();
        let entry = schema::event_entry(&body.event_type, body.version).expect("listed");
        assert_valid(
            &validator(&entry.schema_path()),
            &body.data,
            &body.event_type,
        );
    }
}

#[test]
fn schemas_reject_what_rust_rejects() {
    let cases = [
        (
            "task.create",
            json!({ "id": samples::TASK, "type": "call", "fromAddress": "+15550001111" }),
        ),
        (
            "task.create",
            json!({
                "id": samples::TASK, "type": "fax", "fromAddress": "+15550001111",
                "toAddress": "+15550002222",
            }),
        ),
        (
            "task.start",
            json!({ "id": samples::TASK, "createdBy": samples::MEMBER }),
        ),
        (
            "member.create",
            json!({
                "id": samples::MEMBER, "firstName": "", "lastName": "Doe",
                "email": "jane@acme-dental.com", "role": "owner",
            }),
        ),
        (
            "member.setRole",
            json!({ "id": samples::MEMBER, "role": "emperor" }),
        ),
        (
            "tenant.create",
            json!({ "id": "not-a-uuid", "name": "Acme" }),
        ),
        (
            "admin.setPermissions",
            json!({ "id": samples::ADMIN, "permissions": null }),
        ),
    ];
    for (name, body) in cases {
        let entry = schema::command_entry(name).expect("listed");
        assert!(
            !validator(&entry.schema_path()).is_valid(&body),
            "{name}: schema accepts {body}"
        );
        assert!(
            decode_command(
                &command_subject(&entry),
                &serde_json::to_vec(&body).expect("json")
            )
            .is_err(),
            "{name}: Rust accepts {body}"
        );
    }
}

#[test]
fn guard_events_validate() {
    let guard = entries(MessageKind::Guard)
        .into_iter()
        .find(|e| e.name == "GuardEvent")
        .expect("the guard event entry");
    let guard = validator(&guard.schema_path());
    for event in samples::guard_events() {
        let value = serde_json::to_value(event).expect("serialize");
        assert_valid(&guard, &value, "guard event");
        let back: GuardEvent = serde_json::from_value(value).expect("decodes");
        assert_eq!(back, event);
    }
}

#[test]
fn asyncapi_names_every_subject_and_message() {
    let text = std::fs::read_to_string(proto().join(generate::ASYNCAPI_FILE)).expect("asyncapi");
    // The AsyncAPI version comes first and reads as the string "3.0.0" (never a number), and
    // the file reads back as exactly the document rendered from the catalog.
    assert!(text.starts_with("asyncapi: "));
    let parsed: Value = serde_norway::from_str(&text).expect("asyncapi.yaml parses as YAML");
    assert_eq!(parsed["asyncapi"], Value::String("3.0.0".into()));
    let rendered: serde_json::Map<String, Value> = talkwai_proto::asyncapi::document(&catalog())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(parsed, Value::Object(rendered));
    // The document is built from the catalog; check it against the catalog and the headers.
    let document: BTreeMap<&str, Value> = talkwai_proto::asyncapi::document(&catalog())
        .into_iter()
        .collect();
    let channels = document["channels"].as_object().expect("channels");
    let addresses: BTreeSet<&str> = channels
        .values()
        .filter_map(|c| c["address"].as_str())
        .collect();
    let messages = document["components"]["messages"]
        .as_object()
        .expect("messages");
    for entry in catalog() {
        assert!(
            messages.contains_key(&entry.id()),
            "no message {}",
            entry.id()
        );
        if entry.subject != schema::REPLY_SUBJECT {
            assert!(
                addresses.contains(entry.subject.as_str())
                    || entry.kind == MessageKind::EventEnvelope,
                "no channel for {}",
                entry.subject
            );
        }
        let reference = &messages[&entry.id()]["payload"]["schema"];
        let text = reference.to_string();
        assert!(
            text.contains(&format!("./{}", entry.schema_path())),
            "{} does not reference its schema file",
            entry.id()
        );
    }
    for expected in [
        "talkwai.cmd.{tenant}.task.create",
        "talkwai.cmd.platform.tenant.create",
        "talkwai.evt.{tenant}.task.{id}",
        "talkwai.evt.platform.admin.{id}",
        "talkwai.evt.{tenant}.guard.{kind}.{hash}",
        "talkwai.qry.{tenant}",
        "talkwai.qry.{tenant}.subscribe",
        "talkwai.qry.{tenant}.live.{subscription}",
        "talkwai.qry.{tenant}.live.{subscription}.ctl",
        "talkwai.room.{roomType}.{roomId}.topic.taskUpdates",
        "talkwai.room.{roomType}.{roomId}.topic.taskActivity",
        "talkwai.room.{roomType}.{roomId}.topic.{topic}",
        "talkwai.room.{roomType}.{roomId}.topic.notifications.{memberId}",
        "talkwai.room.{roomType}.{roomId}.topic.systemAlerts",
        "talkwai.room.{roomType}.{roomId}.presence.{op}",
        "talkwai.room.{roomType}.{roomId}.presence.events",
    ] {
        assert!(addresses.contains(expected), "no channel {expected}");
    }
    for header in [
        talkwai_proto::headers::COMMAND_ID,
        talkwai_proto::headers::AUTHORIZATION,
        talkwai_proto::headers::TRACEPARENT,
        talkwai_proto::headers::EVENT_TYPE,
        talkwai_proto::headers::EVENT_VERSION,
        talkwai_proto::headers::TENANT,
        talkwai_proto::headers::ACTOR,
        talkwai_proto::headers::OCCURRED_AT,
        talkwai_proto::headers::NATS_SERVICE_ERROR_CODE,
    ] {
        assert!(
            text.contains(&format!("{header}:")),
            "header {header} missing"
        );
    }
    // Every parameter used in an address is declared on its channel and in components.
    let params = document["components"]["parameters"]
        .as_object()
        .expect("parameters");
    for (id, channel) in channels {
        let Some(address) = channel["address"].as_str() else {
            continue;
        };
        for token in address.split('.') {
            if let Some(name) = token.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                assert!(
                    params.contains_key(name),
                    "{id}: parameter {name} undeclared"
                );
                assert!(
                    channel["parameters"].get(name).is_some(),
                    "{id}: parameter {name} not on the channel"
                );
            }
        }
    }
}

#[test]
fn every_local_reference_in_asyncapi_resolves() {
    let document: Value = Value::Object(
        talkwai_proto::asyncapi::document(&catalog())
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    );
    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(refs.len() > 100);
    for reference in refs {
        if let Some(pointer) = reference.strip_prefix('#') {
            let escaped: Vec<String> = pointer.split('/').map(|p| p.replace('~', "~0")).collect();
            assert!(
                document.pointer(&escaped.join("/")).is_some(),
                "unresolved {reference}"
            );
        } else {
            let path = reference.strip_prefix("./").expect("relative file ref");
            assert!(proto().join(path).is_file(), "missing file {reference}");
        }
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    // Examples hold payloads, not references.
                    ("examples", _) => {}
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_command_the_domain_decodes_round_trips_through_the_catalog_subject() {
    for (name, body) in samples::command_bodies() {
        let entry = schema::command_entry(name).expect("sample names a listed command");
        let command: Command = decode_command(
            &command_subject(&entry),
            &serde_json::to_vec(&body).expect("json"),
        )
        .unwrap_or_else(|e| panic!("sample {name} does not decode: {e:?}"));
        assert_eq!(command.action(), entry.action().expect("action"));
    }
}

#[test]
fn id_schemas_accept_every_uuid_form_rust_accepts_and_nothing_else() {
    let entry = schema::command_entry("task.start").expect("listed");
    let schema = validator(&entry.schema_path());
    let subject = command_subject(&entry);
    let id = samples::TASK;
    let accepted = [
        id.hyphenated().to_string(),
        id.hyphenated().to_string().to_uppercase(),
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
    ];
    for form in accepted {
        let body = json!({ "id": form });
        assert_valid(&schema, &body, &form);
        decode_command(&subject, &serde_json::to_vec(&body).expect("json"))
            .unwrap_or_else(|e| panic!("{form} does not decode: {e:?}"));
    }
    for form in [
        "",
        "42",
        "01907c1e-5a3b-7d4e-8f21",
        "01907c1e5a3b7d4e8f213c6a9b0d5e06ff",
    ] {
        let body = json!({ "id": form });
        assert!(!schema.is_valid(&body), "schema accepts id {form:?}");
        assert!(
            decode_command(&subject, &serde_json::to_vec(&body).expect("json")).is_err(),
            "Rust accepts id {form:?}"
        );
    }
}

/// Guard events are written as `{"type", "version", "data"}` bodies like aggregate events; their
/// fixtures are kept forever and must decode.
#[test]
fn guard_fixtures_decode_forever() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/fixtures/guards");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("proto/fixtures/guards") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let body: talkwai_domain::EventBody = serde_json::from_str(&text).expect("an event body");
        let event = talkwai_domain::GuardEvent::decode(&body)
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
        assert_eq!(
            event.encode(),
            body,
            "{} re-encodes to itself",
            path.display()
        );
        seen += 1;
    }
    assert_eq!(seen, 2, "a fixture for guard.claimed and guard.released");
}

// ---- every subject is a channel -------------------------------------------------------------

/// The subjects the `talkwai_proto::subject` functions build, with the channel each must be.
#[test]
fn every_subject_function_builds_a_subject_of_its_channel() {
    use talkwai_domain::{AggregateRef, EntityKind, GuardKey};
    use talkwai_proto::asyncapi::channel_for;
    use talkwai_proto::subject::{self as s, Scope};

    let tenant = Scope::parse(TENANT).expect("tenant");
    let id = samples::TASK;
    let member = samples::MEMBER.to_string();
    let mut cases = vec![
        (
            s::command(tenant, EntityKind::Task, "create"),
            "cmd.task.create",
        ),
        (
            s::command(Scope::Platform, EntityKind::Tenant, "create"),
            "cmd.tenant.create",
        ),
        (
            s::command(Scope::Platform, EntityKind::User, "delete"),
            "cmd.user.delete",
        ),
        (
            s::event(&AggregateRef {
                kind: EntityKind::Task,
                tenant: tenant.tenant(),
                id,
            }),
            "evt.task",
        ),
        (
            s::event(&AggregateRef {
                kind: EntityKind::Admin,
                tenant: None,
                id,
            }),
            "evt.admin",
        ),
        (
            s::guard(&GuardKey::UserEmail(
                talkwai_domain::values::Email::parse("jane@acme-dental.com").expect("email"),
            )),
            "evt.guard",
        ),
        (s::query(tenant), "qry"),
        (s::query(Scope::Platform), "qry"),
        (s::subscribe(tenant), "qry.subscribe"),
        (s::live_query(TENANT, id), "qry.live"),
        (s::live_control("platform", id), "qry.live.control"),
        (
            s::room_topic("tenant", TENANT, "taskUpdates"),
            "room.topic.taskUpdates",
        ),
        (
            s::room_topic("tenant", TENANT, &format!("notifications.{member}")),
            "room.topic.notifications",
        ),
        (
            s::room_topic("admin", "global", "systemAlerts"),
            "room.topic.systemAlerts",
        ),
        (
            s::room_topic("tenant", TENANT, "taskActivity"),
            "room.topic.taskActivity",
        ),
        (
            s::room_topic("tenant", TENANT, "cursors"),
            "room.topic.clientTopic",
        ),
        (
            s::room_presence("tenant", TENANT, "events"),
            "room.presenceEvents",
        ),
        ("_INBOX.abc.def".to_owned(), "reply"),
        ("$SRV.PING".to_owned(), "srv"),
        ("$SRV.INFO.talkwai-query".to_owned(), "srv.service"),
        ("$SRV.STATS.talkwai-command.Xy12".to_owned(), "srv.instance"),
    ];
    for op in ["join", "update", "leave", "heartbeat", "get"] {
        cases.push((s::room_presence("admin", "global", op), "room.presence"));
    }
    for (subject, channel) in cases {
        assert_eq!(
            channel_for(&subject),
            Some(channel),
            "{subject} must be a subject of channel {channel}"
        );
    }
    // What the services subscribe (the endpoints' wildcards, once literals in their crates)
    // reaches exactly its channel.
    let endpoints = [
        (
            s::command_endpoint(EntityKind::Task, "create"),
            "cmd.task.create",
        ),
        (s::QUERY_ENDPOINT.to_owned(), "qry"),
        (s::SUBSCRIBE_ENDPOINT.to_owned(), "qry.subscribe"),
        (s::LIVE_CONTROL_ENDPOINT.to_owned(), "qry.live.control"),
        (s::presence_endpoint("join"), "room.presence"),
    ];
    for (filter, channel) in endpoints {
        assert_eq!(
            talkwai_proto::asyncapi::channels_matching_filter(&filter),
            [channel],
            "{filter} must subscribe channel {channel}"
        );
    }
    // Subjects outside the contract, and service topics under a client topic's name, are not.
    for subject in [
        "$JS.API.STREAM.INFO.TALKWAI_EVENTS",
        "$KV.TALKWAI_PRESENCE.tenant.x.y",
    ] {
        assert!(talkwai_proto::asyncapi::is_nats_internal(subject));
        assert_eq!(channel_for(subject), None);
    }
    assert!(!talkwai_proto::asyncapi::is_nats_internal("$SRV.PING"));
    for subject in [
        "talkwai.cmd.nope.task.create",
        "talkwai.evt.platform.task.not-a-uuid",
        "talkwai.room.tenant.x.topic.notifications",
        "talkwai.room.moon.x.topic.cursors",
        "talkwai.room.tenant.x.presence.dance",
        "talkwai.qry.platform.live",
        "talkwai.other",
        "$SRV.PING.someone-else",
        "$SRV.DANCE",
    ] {
        assert_eq!(
            channel_for(subject),
            None,
            "{subject} is not in the contract"
        );
    }
}

/// Every `talkwai.` and `$SRV.` subject literal in the services' and tools' sources (before
/// their test modules) is in the contract: concrete ones have a channel, wildcard filters and `format!`
/// templates (`{...}` taken as one token, or as the rest when last) overlap at least one.
#[test]
fn every_subject_literal_in_the_crates_is_a_channel() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = BTreeMap::new();
    for dir in std::fs::read_dir(&crates).expect("crates/") {
        let dir = dir.expect("entry").path();
        if dir.ends_with("talkwai-proto") || !dir.join("src").is_dir() {
            continue; // talkwai-proto's own builders are checked through its functions above
        }
        for file in generate::list_files(&dir, "src").expect("sources") {
            if !file.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(dir.join(&file)).expect("source");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for literal in subject_literals(code) {
                found.insert(literal, format!("{}/{file}", dir.display()));
            }
        }
    }
    assert!(
        found.len() > 15,
        "the scan finds the crates' subjects: {found:?}"
    );
    // Wildcard filters and templates of several placeholders are found (the query service's
    // own moved to `talkwai_proto::subject`, checked above).
    for expected in [
        "talkwai.evt.*.task.*",
        "talkwai.room.{room_type}.{room_id}.topic.>",
        "$SRV.PING.{name}",
    ] {
        assert!(found.contains_key(expected), "scan misses {expected}");
    }
    let mut missing = Vec::new();
    for (literal, file) in &found {
        // A prefix (`"talkwai.qry."` in a `strip_prefix`) stands for every subject under it.
        let literal = if literal.ends_with('.') {
            format!("{literal}>")
        } else {
            literal.clone()
        };
        let covered = if literal.contains(['{', '*', '>']) {
            let tokens: Vec<&str> = literal.split('.').collect();
            let last = tokens.len() - 1;
            let filter: Vec<&str> = tokens
                .iter()
                .enumerate()
                .map(|(i, t)| match (t.contains('{'), i == last) {
                    (true, true) => ">",
                    (true, false) => "*",
                    _ => t,
                })
                .collect();
            !talkwai_proto::asyncapi::channels_matching_filter(&filter.join(".")).is_empty()
        } else {
            talkwai_proto::asyncapi::channel_for(&literal).is_some()
        };
        if !covered {
            missing.push(format!("{literal} ({file})"));
        }
    }
    assert!(
        missing.is_empty(),
        "subjects used in the crates but missing from proto/asyncapi.yaml:\n  {}",
        missing.join("\n  ")
    );
}

/// The `"talkwai.<cmd|evt|qry|room>..."` and `"$SRV..."` string literals of a source.
fn subject_literals(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (start, _) in code.match_indices("\"$SRV.") {
        let rest = &code[start + 1..];
        if let Some(end) = rest.find('"') {
            found.push(rest[..end].to_owned());
        }
    }
    for (start, _) in code.match_indices("\"talkwai.") {
        let rest = &code[start + 1..];
        let Some(end) = rest.find('"') else { continue };
        let literal = &rest[..end];
        let kind = literal.split('.').nth(1).unwrap_or_default();
        if matches!(kind, "cmd" | "evt" | "qry" | "room") && !literal.contains(' ') {
            found.push(literal.to_owned());
        }
    }
    found
}

// ---- queries --------------------------------------------------------------------------------

#[test]
fn query_requests_need_only_authorization() {
    let document: BTreeMap<&str, Value> = talkwai_proto::asyncapi::document(&catalog())
        .into_iter()
        .collect();
    let messages = &document["components"]["messages"];
    let schemas = &document["components"]["schemas"];
    for message in ["QueryRequest", "presence"] {
        let headers = messages[message]["headers"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{message} has headers"));
        let name = headers.rsplit('/').next().expect("name");
        assert_eq!(
            schemas[name]["required"],
            json!([talkwai_proto::headers::AUTHORIZATION]),
            "{message}: only Authorization is required"
        );
    }
    assert_eq!(
        schemas["CommandHeaders"]["required"],
        json!([
            talkwai_proto::headers::COMMAND_ID,
            talkwai_proto::headers::AUTHORIZATION
        ])
    );
    // Every operation that answers has a reply message in the reply channel.
    for (channel, reply) in [
        ("qry", "QueryReply"),
        ("qry.subscribe", "SubscribeReply"),
        ("qry.live.control", "LiveControlReply"),
        ("room.presence", "presenceReply"),
        ("cmd.task.create", "CommandReply"),
    ] {
        assert_eq!(
            document["operations"][channel]["reply"]["messages"][0]["$ref"],
            json!(format!("#/channels/reply/messages/{reply}")),
            "{channel} replies with {reply}"
        );
    }
}

fn query_validator(name: &str) -> Validator {
    validator(&format!("schemas/query/{name}.json"))
}

#[test]
fn query_schemas_describe_requests_replies_and_live_messages() {
    let request = query_validator("QueryRequest");
    let dashboard = json!({"tenants": {"$": {"where": {"id": TENANT}},
        "members": {"$": {"where": {"status": "active"}}},
        "agents": {},
        "tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}, "agent": {}, "assignedTo": {}}}});
    for body in [
        dashboard.clone(),
        json!({"query": dashboard, "minSeq": 42}),
        json!({"tasks": {"$": {"where": {"and": [{"tenant.id": TENANT}, {"status": "pending"}]},
            "first": 10, "after": "abc", "fields": ["id", "status"]}}}),
        json!({"tasks": {"$": {"aggregate": "count"}}}),
    ] {
        assert_valid(&request, &body, "query");
        let typed: talkwai_proto::query::QueryRequest =
            serde_json::from_value(body.clone()).expect("the Rust type reads it");
        assert_eq!(serde_json::to_value(typed).expect("json"), body);
    }
    for body in [
        json!([]),
        json!({}),
        json!({"tasks": []}),
        json!({"tasks": {"$": null}}),
        json!({"tasks": {"$": {"colour": "red"}}}),
        json!({"tasks": {"$": {"order": {"createdAt": "sideways"}}}}),
        json!({"tasks": {"$": {"order": {"createdAt": "asc", "id": "asc"}}}}),
        json!({"tasks": {"$": {"limit": -1}}}),
        json!({"tasks": {"$": {"limit": null}}}),
        json!({"tasks": {"$": {"aggregate": "sum"}}}),
        json!({"query": {"tasks": {}}, "minSeq": -1}),
        json!({"query": {"tasks": {}}, "extra": 1}),
    ] {
        assert!(!request.is_valid(&body), "schema accepts query {body}");
    }

    let page = json!({"startCursor": "a", "endCursor": "b", "hasNextPage": true, "hasPreviousPage": false});
    let data = json!({"tasks": [{"id": samples::TASK, "status": "pending", "agent": null,
        "assignedTo": {"id": samples::MEMBER}}], "members": {"count": 3}});
    let reply = query_validator("QueryReply");
    assert_valid(
        &reply,
        &json!({"ok": true, "data": data, "pageInfo": {"tasks": page}, "seq": 7}),
        "query reply",
    );
    assert_valid(
        &reply,
        &json!({"ok": false, "error": {"code": "validation_failed", "message": "x", "field": "tasks.$.where.colour"}}),
        "refused query",
    );
    assert!(!reply.is_valid(&json!({"ok": true, "data": data, "seq": 7})));
    assert!(!reply.is_valid(
        &json!({"ok": true, "data": {}, "pageInfo": {}, "seq": 7, "subscription": samples::TASK})
    ));
    assert!(!reply.is_valid(&json!({"ok": true, "data": {"tasks": 1}, "pageInfo": {}, "seq": 7})));

    let subscribe = query_validator("SubscribeReply");
    let subscribed = json!({"ok": true, "subscription": samples::TASK,
        "subject": format!("talkwai.qry.{TENANT}.live.{}", samples::TASK),
        "control": format!("talkwai.qry.{TENANT}.live.{}.ctl", samples::TASK),
        "ttlMs": 30000, "data": data, "pageInfo": {"tasks": page}, "seq": 7});
    assert_valid(&subscribe, &subscribed, "subscribe reply");
    let mut no_control = subscribed.clone();
    no_control
        .as_object_mut()
        .expect("object")
        .remove("control");
    assert!(!subscribe.is_valid(&no_control));

    let update = query_validator("LiveUpdate");
    assert_valid(
        &update,
        &json!({"subscription": samples::TASK, "ok": true, "data": data, "pageInfo": {}, "seq": 8}),
        "live update",
    );
    assert_valid(
        &update,
        &json!({"subscription": samples::TASK, "ok": false, "seq": 9,
                "error": {"code": "too_many_rows", "message": "over the cap", "field": "tasks"}}),
        "live refusal",
    );
    assert!(
        !update.is_valid(
            &json!({"subscription": samples::TASK, "data": data, "pageInfo": {}, "seq": 8})
        ),
        "ok is required"
    );
    let control = query_validator("LiveControl");
    assert_valid(&control, &json!({"op": "renew"}), "renew");
    assert_valid(&control, &json!({"op": "unsubscribe"}), "unsubscribe");
    assert!(!control.is_valid(&json!({"op": "pause"})));
    let control_reply = query_validator("LiveControlReply");
    assert_valid(
        &control_reply,
        &json!({"ok": true, "ttlMs": 30000}),
        "renewed",
    );
    assert_valid(&control_reply, &json!({"ok": true}), "unsubscribed");
}

// ---- room topics ----------------------------------------------------------------------------

#[test]
fn service_topics_carry_seq_and_clients_publish_task_activity() {
    use talkwai_proto::room;

    // The seed's `notifyTaskUpdate` body: a client message, not a notifier `taskUpdates` one.
    let seed = json!({"taskId": samples::TASK, "action": "started", "userId": samples::USER,
        "timestamp": 1_751_360_400_000_i64});
    let task_updates = validator("schemas/rooms/taskUpdates.json");
    assert!(
        !task_updates.is_valid(&seed),
        "taskUpdates are the notifier's, with seq"
    );
    assert_valid(
        &validator("schemas/rooms/taskActivity.json"),
        &seed,
        "the seed's task update on taskActivity",
    );
    let activity: room::TaskActivity = serde_json::from_value(seed).expect("typed");
    assert_eq!(activity.action, "started");
    assert!(
        !validator("schemas/rooms/taskActivity.json").is_valid(&json!({"taskId": samples::TASK,
        "action": "", "userId": samples::USER, "timestamp": 1}))
    );

    for topic in ["taskUpdates", "notifications", "systemAlerts"] {
        assert!(!room::is_client_topic(topic), "{topic} is a service topic");
    }
    assert!(!room::is_client_topic(&format!(
        "notifications.{}",
        samples::MEMBER
    )));
    for topic in ["taskActivity", "cursors", "typing"] {
        assert!(room::is_client_topic(topic), "{topic} is a client topic");
    }

    // The document says who publishes each room channel.
    let document: BTreeMap<&str, Value> = talkwai_proto::asyncapi::document(&catalog())
        .into_iter()
        .collect();
    for (channel, publishers) in [
        ("room.topic.taskUpdates", json!(["notifier"])),
        ("room.topic.notifications", json!(["notifier"])),
        ("room.topic.systemAlerts", json!(["notifier", "projector"])),
        ("room.presenceEvents", json!(["notifier"])),
        ("room.topic.taskActivity", json!(["clients"])),
        ("room.topic.clientTopic", json!(["clients"])),
    ] {
        assert_eq!(
            document["channels"][channel]["x-talkwai-publishers"], publishers,
            "{channel}"
        );
    }
}

// ---- schemas refuse what the decoder refuses ------------------------------------------------

/// Values the decoder refuses that JSON Schema can describe: the schema refuses them too.
#[test]
fn schemas_refuse_the_values_the_decoder_refuses() {
    let task = samples::TASK.to_string();
    let with = |name: &str, body: Value| (name.to_owned(), body);
    let mut cases = Vec::new();
    for text in ["[1,2]", "42", "\"x\"", "null", "", "  ", "{", "true"] {
        cases.push(with(
            "task.setMetadata",
            json!({ "id": task, "metadata": text }),
        ));
        cases.push(with(
            "agent.configure",
            json!({ "id": samples::AGENT, "configuration": text }),
        ));
        cases.push(with(
            "admin.setPermissions",
            json!({ "id": samples::ADMIN, "permissions": text }),
        ));
    }
    for name in ["   ", "\t\n", "Jane\u{0}Doe", "\u{7}", "x\u{1b}[31m"] {
        cases.push(with(
            "member.update",
            json!({ "id": samples::MEMBER, "firstName": name }),
        ));
    }
    for reason in ["", " ", "bad\u{8}"] {
        cases.push(with("task.fail", json!({ "id": task, "reason": reason })));
    }
    for address in [
        "nobody",
        "+1",
        "+0155500011",
        "+1555abc0000",
        "@acme.com",
        "jane@",
        "jane@localhost",
        "+jane@acme.com",
        "a@b@acme.com",
    ] {
        cases.push(with(
            "task.create",
            json!({ "id": task, "type": "call", "fromAddress": address, "toAddress": "+15550002222" }),
        ));
    }
    for (name, body) in &cases {
        let entry = schema::command_entry(name).expect("listed");
        assert!(
            !validator(&entry.schema_path()).is_valid(body),
            "{name}: schema accepts {body}"
        );
        assert!(
            decode_command(
                &command_subject(&entry),
                &serde_json::to_vec(body).expect("json")
            )
            .is_err(),
            "{name}: the decoder accepts {body}"
        );
    }
    // What the decoder accepts, the schema accepts (around the same edges).
    let accepted = [
        with(
            "task.setMetadata",
            json!({ "id": task, "metadata": " {\"a\": [1, 2]}\n" }),
        ),
        with(
            "admin.setPermissions",
            json!({ "id": samples::ADMIN, "permissions": "{}" }),
        ),
        with(
            "member.update",
            json!({ "id": samples::MEMBER, "firstName": " Zoë\tAnn " }),
        ),
        with(
            "task.create",
            json!({ "id": task, "type": "email", "fromAddress": " Desk.Team+x@Acme-Dental.com ",
                    "toAddress": "+1 (555) 000-2222" }),
        ),
    ];
    for (name, body) in &accepted {
        let entry = schema::command_entry(name).expect("listed");
        assert_valid(&validator(&entry.schema_path()), body, name);
        decode_command(
            &command_subject(&entry),
            &serde_json::to_vec(body).expect("json"),
        )
        .unwrap_or_else(|e| panic!("{name}: the decoder refuses {body}: {e:?}"));
    }
}
