//! The command wire: the seed's camelCase names decode, unknown fields are refused, patches
//! tell `null` (clear) from absent (keep), and the value types refuse bad input.

use serde_json::{Value, json};

use talkwai_domain::agent::AgentCommand;
use talkwai_domain::error::InvalidValue;
use talkwai_domain::member::MemberCommand;
use talkwai_domain::task::TaskCommand;
use talkwai_domain::tenant::TenantCommand;
use talkwai_domain::values::{
    Address, CompanyDomain, Content, Description, Email, JsonObject, Name, Phone, Reason, Subject,
    Timestamp,
};
use talkwai_domain::{Command, ErrorCode};

use crate::fixtures::*;

const TASK: &str = "00000000-0000-0000-0000-000000004001";
const AGENT: &str = "00000000-0000-0000-0000-000000003001";
const MEMBER: &str = "00000000-0000-0000-0000-000000001001";

fn decode(aggregate: &str, action: &str, body: Value) -> Result<Command, String> {
    serde_json::from_value(json!({
        "aggregate": aggregate,
        "command": {"action": action, "body": body},
    }))
    .map_err(|e| e.to_string())
}

#[track_caller]
fn decoded(aggregate: &str, action: &str, body: Value) -> Command {
    decode(aggregate, action, body.clone())
        .unwrap_or_else(|e| panic!("{aggregate}.{action} {body} should decode: {e}"))
}

#[track_caller]
fn refused(aggregate: &str, action: &str, body: Value) -> String {
    match decode(aggregate, action, body.clone()) {
        Ok(c) => panic!("{aggregate}.{action} {body} should be refused, got {c:?}"),
        Err(e) => e,
    }
}

/// A valid body for every command, as a caller would send it.
pub fn every_command_body() -> Vec<(&'static str, &'static str, Value)> {
    let t = "00000000-0000-0000-0000-00000000000a";
    let a = "00000000-0000-0000-0000-000000002001";
    let u = "00000000-0000-0000-0000-000000005001";
    vec![
        (
            "tenant",
            "create",
            json!({"id": t, "name": "Acme", "domain": "acme.com"}),
        ),
        ("tenant", "update", json!({"id": t, "name": "Acme"})),
        (
            "tenant",
            "setStatus",
            json!({"id": t, "status": "suspended", "reason": "r"}),
        ),
        ("tenant", "delete", json!({"id": t})),
        (
            "member",
            "create",
            json!({"id": MEMBER, "tenant": t, "firstName": "Ada", "lastName": "L",
                   "email": "ada@acme.com", "phone": "+15550001111", "role": "owner", "user": u}),
        ),
        (
            "member",
            "update",
            json!({"id": MEMBER, "firstName": "A", "phone": null}),
        ),
        (
            "member",
            "setRole",
            json!({"id": MEMBER, "role": "manager"}),
        ),
        (
            "member",
            "setStatus",
            json!({"id": MEMBER, "status": "inactive"}),
        ),
        ("member", "linkUser", json!({"id": MEMBER, "user": u})),
        ("member", "unlinkUser", json!({"id": MEMBER})),
        ("member", "delete", json!({"id": MEMBER})),
        ("member", "erase", json!({"id": MEMBER})),
        (
            "admin",
            "create",
            json!({"id": a, "firstName": "G", "lastName": "H", "email": "g@talkwai.com",
                   "role": "support", "permissions": "{\"allow\":[]}", "user": u}),
        ),
        ("admin", "update", json!({"id": a, "lastName": "Hopper"})),
        ("admin", "setRole", json!({"id": a, "role": "superadmin"})),
        (
            "admin",
            "setPermissions",
            json!({"id": a, "permissions": "{}"}),
        ),
        ("admin", "setStatus", json!({"id": a, "status": "inactive"})),
        ("admin", "linkUser", json!({"id": a, "user": u})),
        ("admin", "unlinkUser", json!({"id": a})),
        ("admin", "delete", json!({"id": a})),
        ("admin", "erase", json!({"id": a})),
        (
            "agent",
            "create",
            json!({"id": AGENT, "tenant": t, "name": "Bot", "description": "d", "type": "voice",
                   "configuration": "{}", "status": "training"}),
        ),
        ("agent", "update", json!({"id": AGENT, "description": null})),
        (
            "agent",
            "configure",
            json!({"id": AGENT, "configuration": "{\"a\":1}"}),
        ),
        (
            "agent",
            "setStatus",
            json!({"id": AGENT, "status": "active"}),
        ),
        ("agent", "delete", json!({"id": AGENT})),
        (
            "task",
            "create",
            json!({"id": TASK, "tenant": t, "type": "call", "priority": "high",
                   "fromAddress": "+15550001111", "toAddress": "+15550002222",
                   "subject": "s", "content": "c", "metadata": "{}", "scheduledAt": 1,
                   "agent": AGENT, "assignedTo": MEMBER}),
        ),
        (
            "task",
            "update",
            json!({"id": TASK, "type": "email", "subject": null}),
        ),
        ("task", "setMetadata", json!({"id": TASK, "metadata": null})),
        ("task", "linkAgent", json!({"id": TASK, "agent": AGENT})),
        ("task", "unlinkAgent", json!({"id": TASK})),
        ("task", "assign", json!({"id": TASK, "assignedTo": MEMBER})),
        ("task", "unassign", json!({"id": TASK})),
        ("task", "start", json!({"id": TASK})),
        ("task", "complete", json!({"id": TASK})),
        ("task", "fail", json!({"id": TASK, "reason": "busy"})),
        ("task", "cancel", json!({"id": TASK})),
        ("task", "retry", json!({"id": TASK})),
        ("task", "delete", json!({"id": TASK})),
        ("task", "eraseContent", json!({"id": TASK})),
        ("user", "create", json!({"id": u, "email": "u@example.com"})),
        ("user", "update", json!({"id": u, "email": "v@example.com"})),
        ("user", "delete", json!({"id": u})),
        ("user", "erase", json!({"id": u})),
    ]
}

#[test]
fn every_command_decodes_names_its_permission_and_round_trips() {
    let all = every_command_body();
    assert_eq!(all.len(), 4 + 8 + 9 + 5 + 14 + 4);
    for (aggregate, action, body) in all {
        let command = decoded(aggregate, action, body);
        assert_eq!(command.kind().as_str(), aggregate);
        assert_eq!(command.action(), action);
        assert_eq!(command.permission(), format!("{aggregate}.{action}"));
        let text = serde_json::to_string(&command).expect("serializes");
        let back: Command = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, command, "{text}");
    }
}

#[test]
fn every_command_refuses_unknown_fields() {
    for (aggregate, action, mut body) in every_command_body() {
        body.as_object_mut()
            .expect("object body")
            .insert("bogus".into(), json!(1));
        let e = refused(aggregate, action, body);
        assert!(
            e.contains("unknown field `bogus`"),
            "{aggregate}.{action}: {e}"
        );
    }
}

#[test]
fn snake_case_and_server_owned_fields_are_refused() {
    refused(
        "member",
        "update",
        json!({"id": MEMBER, "first_name": "Ada"}),
    );
    refused(
        "task",
        "create",
        json!({"id": TASK, "type": "call", "from_address": "+15550001111",
               "toAddress": "+15550002222"}),
    );
    // createdBy comes from the caller's identity, never from the body
    let e = refused(
        "task",
        "create",
        json!({"id": TASK, "type": "call", "fromAddress": "+15550001111",
               "toAddress": "+15550002222", "createdBy": MEMBER}),
    );
    assert!(e.contains("createdBy"), "{e}");
    for field in ["status", "startedAt", "completedAt", "createdAt"] {
        let mut body = json!({"id": TASK, "type": "call", "fromAddress": "+15550001111",
                              "toAddress": "+15550002222"});
        body[field] = json!(1);
        refused("task", "create", body);
    }
    refused("task", "nuke", json!({"id": TASK}));
    refused("widget", "create", json!({"id": TASK}));
}

#[test]
fn the_seed_create_task_example_decodes() {
    let Command::Task(TaskCommand::Create(c)) = decoded(
        "task",
        "create",
        json!({"id": TASK, "type": "call", "priority": "high",
               "fromAddress": "+15550001111", "toAddress": "+15550002222",
               "subject": "...", "agent": AGENT, "assignedTo": MEMBER, "scheduledAt": 42}),
    ) else {
        panic!("not a task create")
    };
    assert_eq!(c.id, task_id(1));
    assert_eq!(c.agent, Some(agent_id(1)));
    assert_eq!(c.assigned_to, Some(member_id(1)));
    assert_eq!(c.scheduled_at, Some(Timestamp(42)));
    assert_eq!(c.from_address.as_str(), "+15550001111");
    let Command::Member(MemberCommand::Create(m)) = decoded(
        "member",
        "create",
        json!({"id": MEMBER, "firstName": " Ada ", "lastName": "Lovelace",
               "email": "ADA@Acme.com", "role": "user"}),
    ) else {
        panic!("not a member create")
    };
    assert_eq!(m.first_name.as_str(), "Ada");
    assert_eq!(m.email.as_str(), "ada@acme.com");
    assert_eq!((m.phone, m.user, m.tenant), (None, None, None));
}

#[test]
fn patches_tell_null_from_absent() {
    let task = |body: Value| match decoded("task", "update", body) {
        Command::Task(TaskCommand::Update(u)) => u,
        other => panic!("{other:?}"),
    };
    let absent = task(json!({"id": TASK}));
    assert_eq!(
        (absent.subject, absent.content, absent.scheduled_at),
        (None, None, None)
    );
    let nulls = task(json!({"id": TASK, "subject": null, "content": null, "scheduledAt": null}));
    assert_eq!(
        (nulls.subject, nulls.content, nulls.scheduled_at),
        (Some(None), Some(None), Some(None))
    );
    let set = task(json!({"id": TASK, "subject": "s", "scheduledAt": 5}));
    assert_eq!(set.subject, Some(Some(subject("s"))));
    assert_eq!(set.scheduled_at, Some(Some(Timestamp(5))));

    let Command::Member(MemberCommand::Update(m)) =
        decoded("member", "update", json!({"id": MEMBER, "phone": null}))
    else {
        panic!("not a member update")
    };
    assert_eq!(m.phone, Some(None));
    let Command::Member(MemberCommand::Update(m)) =
        decoded("member", "update", json!({"id": MEMBER}))
    else {
        panic!("not a member update")
    };
    assert_eq!(m.phone, None);
    let Command::Agent(AgentCommand::Update(a)) =
        decoded("agent", "update", json!({"id": AGENT, "description": null}))
    else {
        panic!("not an agent update")
    };
    assert_eq!(a.description, Some(None));
    let tenant = "00000000-0000-0000-0000-00000000000a";
    let Command::Tenant(TenantCommand::Update(t)) =
        decoded("tenant", "update", json!({"id": tenant, "domain": null}))
    else {
        panic!("not a tenant update")
    };
    assert_eq!(t.domain, Some(None));
    // setMetadata's `metadata` is not a patch: null clears it, and (serde's default for an
    // `Option` field) so does an absent one
    for body in [json!({"id": TASK, "metadata": null}), json!({"id": TASK})] {
        let Command::Task(TaskCommand::SetMetadata(m)) = decoded("task", "setMetadata", body)
        else {
            panic!("not a setMetadata")
        };
        assert_eq!(m.metadata, None);
    }
}

#[test]
fn invalid_values_are_refused_in_bodies() {
    let cases = [
        ("member", json!({"email": "not-an-email"})),
        ("member", json!({"email": "a@b"})),
        ("member", json!({"phone": "5550001111"})),
        ("member", json!({"phone": "+0123456789"})),
        ("member", json!({"firstName": "   "})),
        ("member", json!({"lastName": "x".repeat(201)})),
        ("task", json!({"fromAddress": "nowhere"})),
        ("task", json!({"toAddress": "+1"})),
        ("task", json!({"subject": ""})),
        ("task", json!({"type": "fax"})),
        ("task", json!({"priority": "asap"})),
        ("task", json!({"scheduledAt": "tomorrow"})),
    ];
    for (aggregate, patch) in cases {
        let mut body = json!({"id": if aggregate == "task" { TASK } else { MEMBER }});
        for (k, v) in patch.as_object().expect("object") {
            body[k] = v.clone();
        }
        refused(aggregate, "update", body);
    }
    for text in ["[1]", "\"s\"", "1", "null", "{", "{\"a\":1} x"] {
        refused("task", "setMetadata", json!({"id": TASK, "metadata": text}));
    }
    // the JSON field must be a string holding an object, not an object
    refused("task", "setMetadata", json!({"id": TASK, "metadata": {}}));
}

#[track_caller]
fn rejects<T: std::fmt::Debug>(result: Result<T, InvalidValue>, what: &str) {
    match result {
        Ok(v) => panic!("{what} should be refused, got {v:?}"),
        Err(e) => {
            assert!(!e.0.is_empty() && !e.0.ends_with('.'), "{e:?}");
            let err = e.at("field");
            assert_eq!(err.code(), ErrorCode::ValidationFailed);
            assert_eq!(err.field(), Some("field"));
        }
    }
}

#[test]
fn emails() {
    for bad in [
        "",
        "plain",
        "@acme.com",
        "ada@",
        "ada@acme",
        "ada@@acme.com",
        "a da@acme.com",
        ".ada@acme.com",
        "ada.@acme.com",
        "a..da@acme.com",
        "ada@-acme.com",
        "ada@acme..com",
        "ada@acme.123",
        "ada@ac_me.com",
        "ada@acme.com@x.com",
    ] {
        rejects(Email::parse(bad), bad);
    }
    let long_local = format!("{}@acme.com", "a".repeat(65));
    rejects(Email::parse(&long_local), "65-char local part");
    let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(63).repeat(4));
    rejects(Email::parse(&long), "over 254 characters");
    assert_eq!(email(" Ada@ACME.com ").as_str(), "ada@acme.com");
    assert_eq!(email("ada+tag@mail.acme.com").domain(), "mail.acme.com");
}

/// Equal addresses must normalize to one text, or uniqueness guards (keyed by the text) could be
/// held twice for one mailbox. Each variant names the same mailbox, so it is accepted (not
/// merely refused, which would let the test pass without checking anything) as that text.
#[test]
fn email_normal_form_is_canonical() {
    for variant in ["ada@acme.com.", "ada@ acme.com", "ADA@Acme.Com."] {
        let parsed = Email::parse(variant)
            .unwrap_or_else(|e| panic!("{variant:?} names ada@acme.com, yet is refused: {e:?}"));
        assert_eq!(parsed, email("ada@acme.com"), "{variant:?}");
    }
}

#[test]
fn phones_and_addresses() {
    for bad in [
        "",
        "5550001111",
        "+",
        "+1234567",
        "+1234567890123456",
        "+0555000111",
        "+1555abc1111",
        "++15550001111",
    ] {
        rejects(Phone::parse(bad), bad);
        rejects(Address::parse(bad), bad);
    }
    assert_eq!(phone("+1 (555) 000-1111").as_str(), "+15550001111");
    assert_eq!(phone("+49.30.123456").as_str(), "+4930123456");
    for bad in ["nowhere", "ada@", "+1", "  "] {
        rejects(Address::parse(bad), bad);
    }
    assert!(matches!(addr("+15550001111"), Address::Phone(_)));
    assert!(matches!(addr("Ada@Acme.com"), Address::Email(_)));
    assert_eq!(addr("Ada@Acme.com").as_str(), "ada@acme.com");
}

#[test]
fn bounded_texts() {
    rejects(Name::parse(""), "empty");
    rejects(Name::parse(" \t\n "), "blank");
    rejects(Name::parse("a\u{0}b"), "control char");
    rejects(Name::parse(&"x".repeat(Name::MAX_CHARS + 1)), "long name");
    assert_eq!(
        name(&"é".repeat(Name::MAX_CHARS)).as_str().chars().count(),
        200
    );
    assert_eq!(name("  Ada  ").as_str(), "Ada");
    rejects(
        Subject::parse(&"x".repeat(Subject::MAX_CHARS + 1)),
        "long subject",
    );
    rejects(
        Description::parse(&"x".repeat(Description::MAX_CHARS + 1)),
        "long description",
    );
    rejects(
        Content::parse(&"x".repeat(Content::MAX_CHARS + 1)),
        "long content",
    );
    rejects(
        Reason::parse(&"x".repeat(Reason::MAX_CHARS + 1)),
        "long reason",
    );
    assert!(Content::parse("line 1\nline 2\ttab").is_ok());
}

#[test]
fn domains() {
    for bad in [
        "",
        "acme",
        "-acme.com",
        "acme-.com",
        "ac me.com",
        "acme.42",
        "a..com",
    ] {
        rejects(CompanyDomain::parse(bad), bad);
    }
    rejects(
        CompanyDomain::parse(&format!("{}.com", "a".repeat(64))),
        "64-char label",
    );
    assert_eq!(domain("ACME.com.").as_str(), "acme.com");
}

#[test]
fn json_objects() {
    for bad in ["", "[]", "1", "\"{}\"", "null", "{", "{\"a\":}", "{} {}"] {
        rejects(JsonObject::parse(bad), bad);
    }
    let at_limit = format!(
        "{}{}",
        "{\"a\":".repeat(JsonObject::MAX_DEPTH),
        "}".repeat(JsonObject::MAX_DEPTH)
    );
    let at_limit = at_limit.replacen("{\"a\":}", "{\"a\":1}", 1);
    assert!(JsonObject::parse(&at_limit).is_ok(), "{at_limit}");
    let too_deep = format!(
        "{}1{}",
        "{\"a\":".repeat(JsonObject::MAX_DEPTH + 1),
        "}".repeat(JsonObject::MAX_DEPTH + 1)
    );
    rejects(JsonObject::parse(&too_deep), "17 levels");
    let very_deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    rejects(
        JsonObject::parse(&format!("{{\"a\":{very_deep}}}")),
        "5000 levels",
    );
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(JsonObject::MAX_BYTES));
    rejects(JsonObject::parse(&big), "over 32 KiB");
    let fits = format!(
        "{{\"a\":\"{}\"}}",
        "x".repeat(JsonObject::MAX_BYTES - "{\"a\":\"\"}".len())
    );
    assert!(JsonObject::parse(&fits).is_ok());
    assert_eq!(JsonObject::empty().value(), json!({}));
    assert_eq!(
        json(r#"{"a":[1,{"b":2}]}"#).value(),
        json!({"a":[1,{"b":2}]})
    );
}
