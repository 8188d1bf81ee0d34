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
    assert_eq!(names.len(), 40, "commands listed in the brief");
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
        .filter(|e| e.version == Some(Event::CURRENT_VERSION))
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names, current,
        "the catalog's current events must be exactly the domain's event types"
    );
    for variant in domain {
        let entry = schema::event_entry(&variant.name, Event::CURRENT_VERSION).expect("listed");
        assert_eq!(
            strip_root(&entry.schema),
            variant.payload,
            "catalog type of {} is not the data type the domain decodes",
            variant.name
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
        .map(|v| format!("{}.v{}", v.name, Event::CURRENT_VERSION))
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
        if body.version == Event::CURRENT_VERSION {
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
    }))
    .expect("serialize");
    assert_valid(&reply, &noop, "no-op reply");

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
    let guard = validator(&only(MessageKind::Guard).schema_path());
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
    assert!(text.starts_with("asyncapi: \"3.0.0\"\n"));
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
        if !matches!(entry.kind, MessageKind::Reply | MessageKind::Error) {
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
        "talkwai.room.{roomType}.{roomId}.topic.taskUpdates",
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
