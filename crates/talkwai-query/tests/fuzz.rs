//! Property targets over query decoding: arbitrary bytes, arbitrary InstaQL-shaped JSON (known
//! namespaces, links, parameters and operators mixed with noise), cursors, deep nesting and
//! huge strings or arrays, parsed for members and admins. The parser must never panic and must
//! refuse with a typed `validation_failed` or `forbidden` error.
//!
//! Cases per target: `TALKWAI_FUZZ_CASES` (default 2,000).
//! `TALKWAI_FUZZ_CASES=100000 cargo test --release -p talkwai-query --test fuzz` is the long run.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Map, Value, json};
use talkwai_domain::ErrorCode;
use talkwai_query::parse::{encode_cursor, known_params};
use talkwai_query::service::MAX_QUERY_BYTES;
use talkwai_query::{Audience, parse};

fn cases() -> u32 {
    std::env::var("TALKWAI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Huge inputs cost ~1 ms a case: a twentieth of the cases.
fn huge_config() -> Config {
    Config {
        cases: (cases() / 20).max(20),
        ..config()
    }
}

/// The service's path from bytes: size cap, JSON, then the parser for both audiences.
fn check_bytes(body: &[u8]) -> Result<(), TestCaseError> {
    if body.len() > MAX_QUERY_BYTES {
        return Ok(());
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        check(&value)?;
    }
    Ok(())
}

fn check(value: &Value) -> Result<(), TestCaseError> {
    for audience in [Audience::Member, Audience::Admin] {
        if let Err(error) = parse(value, audience) {
            prop_assert!(
                matches!(
                    error.code,
                    ErrorCode::ValidationFailed | ErrorCode::Forbidden
                ),
                "unexpected code {:?}: {}",
                error.code,
                error.message
            );
            prop_assert!(!error.message.is_empty());
        }
    }
    Ok(())
}

const NAMESPACES: &[&str] = &["tenants", "members", "agents", "tasks", "admins", "$users"];
const LINKS: &[&str] = &[
    "tenant",
    "members",
    "agents",
    "tasks",
    "agent",
    "assignedTo",
    "createdBy",
    "createdByAdmin",
    "createdTasks",
    "user",
    "member",
    "admin",
];
const FIELDS: &[&str] = &[
    "id",
    "status",
    "createdAt",
    "updatedAt",
    "name",
    "email",
    "type",
    "priority",
    "role",
    "assignedTo.id",
    "agent.type",
    "agent.status",
    "firstName",
    "subject",
    "colour",
];
const OPERATORS: &[&str] = &[
    "$in", "$not", "$isNull", "$gt", "$gte", "$lt", "$lte", "$like", "$ilike", "$nope",
];

fn word(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(words).prop_map(str::to_owned),
        1 => ".{0,10}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        proptest::sample::select(vec!["pending", "active", "desc", "asc", "count", "%a%", ""])
            .prop_map(|s| Value::String(s.to_owned())),
        Just(Value::String(uuid::Uuid::new_v4().to_string())),
        (any::<i64>(), ".{0,8}").prop_map(|(n, s)| {
            Value::String(encode_cursor(&json!([n, s]), &uuid::Uuid::nil()))
        }),
        "[A-Za-z0-9_-]{0,40}".prop_map(Value::String),
    ]
}

fn condition() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar(),
        (word(OPERATORS), proptest::collection::vec(scalar(), 0..4))
            .prop_map(|(op, vs)| json!({ op: vs })),
        (word(OPERATORS), scalar()).prop_map(|(op, v)| json!({ op: v })),
    ];
    let filter = proptest::collection::btree_map(word(FIELDS), leaf, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()));
    filter.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"and": v})),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"or": v})),
            inner,
        ]
    })
}

fn params() -> impl Strategy<Value = Value> {
    let known: Vec<&'static str> = known_params().to_vec();
    let value = prop_oneof![
        condition(),
        scalar(),
        (
            word(FIELDS),
            proptest::sample::select(vec!["asc", "desc", "up"])
        )
            .prop_map(|(f, d)| json!({ f: d })),
        proptest::collection::vec(word(FIELDS).prop_map(Value::String), 0..4)
            .prop_map(Value::Array),
        (-5i64..2_000).prop_map(Value::from),
    ];
    proptest::collection::btree_map(
        prop_oneof![4 => proptest::sample::select(known).prop_map(str::to_owned), 1 => ".{0,6}"],
        value,
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn level() -> impl Strategy<Value = Value> {
    let leaf = proptest::option::of(params()).prop_map(|p| match p {
        Some(p) => json!({ "$": p }),
        None => json!({}),
    });
    leaf.prop_recursive(6, 48, 3, |inner| {
        (
            proptest::option::of(params()),
            proptest::collection::btree_map(word(LINKS), inner, 0..3),
        )
            .prop_map(|(p, links)| {
                let mut map: Map<String, Value> = links.into_iter().collect();
                if let Some(p) = p {
                    map.insert("$".into(), p);
                }
                Value::Object(map)
            })
    })
}

fn query() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => proptest::collection::btree_map(word(NAMESPACES), level(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => scalar(),
        1 => proptest::collection::vec(scalar(), 0..3).prop_map(Value::Array),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_bytes(&body)?;
    }

    #[test]
    fn instaql_shaped_json(q in query()) {
        check(&q)?;
        // And the same through the wire path.
        check_bytes(&serde_json::to_vec(&q).expect("json"))?;
    }

    #[test]
    fn deeply_nested(depth in 1usize..20_000, kind in 0u8..3, closed in any::<bool>()) {
        let (open, close) = match kind {
            0 => ("{\"tasks\":", "}"),
            1 => ("{\"and\":[", "]}"),
            _ => ("[", "]"),
        };
        let mut body = String::from("{\"tasks\":{\"$\":{\"where\":");
        body.push_str(&open.repeat(depth));
        body.push_str("{}");
        if closed {
            body.push_str(&close.repeat(depth));
            body.push_str("}}}");
        }
        check_bytes(body.as_bytes())?;
        // Link chains past the depth limit, built directly.
        let mut chain = json!({});
        for i in 0..(depth % 64) {
            chain = if i % 2 == 0 { json!({ "agent": chain }) } else { json!({ "tasks": chain }) };
        }
        check(&json!({ "tasks": chain }))?;
    }

    #[test]
    fn invalid_utf8(
        garbage in proptest::collection::vec(proptest::sample::select(vec![0x80u8, 0xc0, 0xed, 0xf5, 0xff]), 1..6),
        at in any::<prop::sample::Index>(),
    ) {
        let mut bytes = br#"{"tasks": {"$": {"where": {"subject": "renewal"}}}}"#.to_vec();
        let position = at.index(bytes.len() + 1);
        bytes.splice(position..position, garbage);
        check_bytes(&bytes)?;
    }
}

proptest! {
    #![proptest_config(huge_config())]

    #[test]
    fn huge_strings_and_arrays(len in prop_oneof![0usize..1_000, 10_000usize..20_000, 100_000usize..200_000], which in 0u8..4) {
        let q = match which {
            0 => json!({"tasks": {"$": {"where": {"id": {"$in": vec![Value::from("x"); len]}}}}}),
            1 => json!({"tasks": {"$": {"where": {"subject": {"$like": "%".repeat(len)}}}}}),
            2 => json!({"tasks": {"$": {"after": "A".repeat(len)}}}),
            _ => json!({"tasks": {"$": {"fields": vec![Value::from("id"); len]}}}),
        };
        check(&q)?;
        check_bytes(&serde_json::to_vec(&q).expect("json"))?;
    }
}
