//! YAML rendering of JSON values for `proto/asyncapi.yaml`, through `serde_norway` (a kept
//! fork of `serde_yaml`): it quotes every string that would read as another type (`yes`,
//! `3.0`, `null`, `~`...), so no value changes meaning, and its output depends only on the
//! value (maps keep their order), so regenerating is byte-stable.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// Top-level entries serialized as one map in the order given.
struct Ordered<'a>(&'a [(&'a str, Value)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Writes a document whose top-level keys keep the given order.
pub fn document(entries: &[(&str, Value)]) -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&Ordered(entries))
}

/// Writes any value as a YAML document.
pub fn to_string(value: &Value) -> Result<String, serde_norway::Error> {
    serde_norway::to_string(value)
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
            "yes": ["yes", "no", "~", "null", "1.5", "#/x", "multi\nline"],
        });
        let text = to_string(&value).expect("renders");
        // Read back, it is the same value: no string became a boolean, null or number.
        let back: Value = serde_norway::from_str(&text).expect("parses");
        assert_eq!(back, value);
        assert!(text.contains("a:\n  b:\n  - 1\n"), "block style:\n{text}");
    }

    #[test]
    fn keeps_top_level_order() {
        let text = document(&[("z", json!(1)), ("a", json!("multi\nline"))]).expect("renders");
        assert!(text.starts_with("z: 1\na: "), "order kept:\n{text}");
        let back: Value = serde_norway::from_str(&text).expect("parses");
        assert_eq!(back, json!({"z": 1, "a": "multi\nline"}));
    }
}
