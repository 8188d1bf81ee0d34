//! Property targets over command decoding: arbitrary bytes, arbitrary JSON, mutated sample
//! bodies, deep nesting, invalid UTF-8 and huge strings or arrays, for every action. Decoding
//! must never panic and must refuse with a typed error (`validation_failed` or
//! `payload_too_large`, with a message).
//!
//! Cases per target: `TALKWAI_FUZZ_CASES` (default 2,000; the CI run stays within seconds).
//! `TALKWAI_FUZZ_CASES=100000 cargo test --release -p talkwai-proto --test fuzz` is the long run.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Map, Value, json};
use talkwai_domain::ErrorCode;
use talkwai_proto::envelope::MAX_COMMAND_BYTES;
use talkwai_proto::{CommandSubject, decode_command, samples};

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

/// Every `<aggregate>.<action>` with its sample body, plus a few unknown actions.
fn actions() -> Vec<(String, Value)> {
    let mut all: Vec<(String, Value)> = samples::command_bodies()
        .into_iter()
        .map(|(name, body)| (name.to_owned(), body))
        .collect();
    for unknown in ["task.explode", "tenant.", "member.CREATE"] {
        all.push((unknown.to_owned(), json!({})));
    }
    all
}

fn subject(action: &str) -> CommandSubject {
    let scope = if action.starts_with("admin.") || action.starts_with("user.") {
        "platform".to_owned()
    } else {
        samples::TENANT.to_string()
    };
    let text = format!("talkwai.cmd.{scope}.{action}");
    CommandSubject::parse(&text)
        .or_else(|_| CommandSubject::parse(&format!("talkwai.cmd.{scope}.task.explode")))
        .expect("the fallback subject parses")
}

/// Decodes and checks the result is a command or a typed refusal.
fn check(action: &str, body: &[u8]) -> Result<(), TestCaseError> {
    match decode_command(&subject(action), body) {
        Ok(_) => {
            prop_assert!(body.len() <= MAX_COMMAND_BYTES);
        }
        Err(error) => {
            prop_assert!(
                matches!(
                    error.code,
                    ErrorCode::ValidationFailed | ErrorCode::PayloadTooLarge
                ),
                "{action}: unexpected code {:?}",
                error.code
            );
            prop_assert!(!error.message.is_empty());
            prop_assert_eq!(
                error.code == ErrorCode::PayloadTooLarge,
                body.len() > MAX_COMMAND_BYTES,
                "{}: {}",
                action,
                error.message
            );
        }
    }
    Ok(())
}

/// Field names the decoders know, so arbitrary objects reach field-level decoding.
fn known_keys() -> Vec<String> {
    let mut keys = std::collections::BTreeSet::new();
    for (_, body) in samples::command_bodies() {
        if let Value::Object(map) = body {
            keys.extend(map.keys().cloned());
        }
    }
    keys.into_iter().collect()
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(known_keys()),
        1 => ".{0,12}",
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String(samples::TASK.to_string())),
        proptest::sample::select(vec![
            "pending",
            "active",
            "suspended",
            "call",
            "email",
            "high",
            "owner",
            "user",
            "manager",
            "superadmin",
            "support",
            "",
            " ",
            "null",
            "{}",
            "-1",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(arb_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_action() -> impl Strategy<Value = (String, Value)> {
    proptest::sample::select(actions())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes((action, _) in arb_action(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&action, &body)?;
    }

    #[test]
    fn arbitrary_json((action, _) in arb_action(), body in arb_json()) {
        check(&action, &serde_json::to_vec(&body).expect("json"))?;
    }

    #[test]
    fn mutated_sample_bodies(
        (action, sample) in arb_action(),
        edits in proptest::collection::vec((arb_key(), proptest::option::of(arb_json())), 1..4),
    ) {
        let mut body = sample;
        if let Value::Object(map) = &mut body {
            for (key, value) in edits {
                match value {
                    Some(value) => { map.insert(key, value); }
                    None => { map.remove(&key); }
                }
            }
        }
        check(&action, &serde_json::to_vec(&body).expect("json"))?;
    }

    #[test]
    fn deeply_nested(
        (action, _) in arb_action(),
        depth in 1usize..20_000,
        object in any::<bool>(),
        closed in any::<bool>(),
    ) {
        let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        let mut body = String::from("{\"id\":");
        body.push_str(&open.repeat(depth));
        body.push('1');
        if closed {
            body.push_str(&close.repeat(depth));
            body.push('}');
        }
        check(&action, body.as_bytes())?;
    }

    #[test]
    fn invalid_utf8_in_strings(
        (action, sample) in arb_action(),
        garbage in proptest::collection::vec(
            proptest::sample::select(vec![0x80u8, 0xbf, 0xc0, 0xc1, 0xe0, 0xed, 0xf4, 0xf5, 0xff, 0xfe]),
            1..6,
        ),
        at in any::<prop::sample::Index>(),
    ) {
        let mut bytes = serde_json::to_vec(&sample).expect("json");
        // Inside a string value when the body has one, else anywhere.
        let quotes: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'"').map(|(i, _)| i + 1).collect();
        let position = if quotes.is_empty() { at.index(bytes.len() + 1) } else { quotes[at.index(quotes.len())] };
        bytes.splice(position..position, garbage);
        check(&action, &bytes)?;
    }

}

#[test]
fn every_sample_body_decodes() {
    for (action, body) in samples::command_bodies() {
        let bytes = serde_json::to_vec(&body).expect("json");
        if let Err(e) = decode_command(&subject(action), &bytes) {
            panic!("{action} sample refused: {e:?}");
        }
    }
}

proptest! {
    #![proptest_config(huge_config())]

    #[test]
    fn huge_strings_and_arrays(
        (action, sample) in arb_action(),
        key in arb_key(),
        len in prop_oneof![0usize..1_000, 60_000usize..70_000, 100_000usize..300_000],
        array in any::<bool>(),
    ) {
        let value = if array {
            Value::Array(vec![Value::from(7); len / 2])
        } else {
            Value::String("x".repeat(len))
        };
        let mut body = sample;
        if let Value::Object(map) = &mut body {
            map.insert(key, value);
        }
        check(&action, &serde_json::to_vec(&body).expect("json"))?;
    }
}
