//! A small YAML writer for JSON values, so `proto/asyncapi.yaml` reads as YAML without a YAML
//! dependency. Strings are always double-quoted in JSON syntax (a subset of YAML's
//! double-quoted style), so no value can change meaning (`yes`, `3.0.0`, `#/x`...); keys are
//! written plain when they are simple names. The output is YAML 1.2 and 1.1.

use serde_json::Value;

/// Writes a document whose top-level keys keep the given order.
pub fn document(entries: &[(&str, Value)]) -> String {
    let mut out = String::new();
    for (key, value) in entries {
        entry(key, value, 0, &mut out);
    }
    out
}

/// Writes any value as a YAML document.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    if is_inline(value) {
        out.push_str(&inline(value));
        out.push('\n');
    } else {
        block(value, 0, &mut out);
    }
    out
}

fn entry(key: &str, value: &Value, indent: usize, out: &mut String) {
    out.push_str(&" ".repeat(indent));
    out.push_str(&yaml_key(key));
    out.push(':');
    child(value, indent, out);
}

fn block(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                entry(key, value, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_inline(item) {
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    out.push_str(&inline(item));
                    out.push('\n');
                } else {
                    // Compact form: the item's block with its first indentation replaced by "- ".
                    let mut nested = String::new();
                    block(item, indent + 2, &mut nested);
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    out.push_str(&nested[indent + 2..]);
                }
            }
        }
        scalar => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn child(value: &Value, indent: usize, out: &mut String) {
    if is_inline(value) {
        out.push(' ');
        out.push_str(&inline(value));
        out.push('\n');
    } else {
        out.push('\n');
        block(value, indent + 2, out);
    }
}

fn is_inline(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => true,
    }
}

fn inline(value: &Value) -> String {
    // JSON scalars, `{}` and `[]` are valid YAML flow nodes with the same meaning.
    value.to_string()
}

fn yaml_key(key: &str) -> String {
    const RESERVED: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "<<",
    ];
    let simple = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '-'))
        && !RESERVED.contains(&key.to_ascii_lowercase().as_str());
    if simple {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn writes_nested_blocks_and_quotes_strings() {
        let value = json!({
            "a": { "b": [1, "x", { "c": true, "d": [] }, [2, 3]], "e": {} },
            "on": null,
            "{id}": "3.0.0",
        });
        let expected = "a:\n  b:\n    - 1\n    - \"x\"\n    - c: true\n      d: []\n    - - 2\n      - 3\n  e: {}\n\"on\": null\n\"{id}\": \"3.0.0\"\n";
        assert_eq!(to_string(&value), expected);
    }

    #[test]
    fn keeps_top_level_order() {
        let text = document(&[("z", json!(1)), ("a", json!("multi\nline"))]);
        assert_eq!(text, "z: 1\na: \"multi\\nline\"\n");
    }
}
