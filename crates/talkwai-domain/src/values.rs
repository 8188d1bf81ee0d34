//! Validated value types. Each one can only be built through validation, so a value that exists
//! is a valid value; deserialization validates too, so bad input never reaches a decider.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::InvalidValue;

/// Epoch milliseconds (UTC), set by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
}

/// Implements `Deserialize` through `TryFrom<String>` and `Serialize`/`Display`/`as_str`
/// for a validated string newtype.
macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.0))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidValue;

            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
    };
}

/// What [`bounded_text!`] values accept, as a JSON Schema (ECMA-262) pattern: at least one
/// character that is neither whitespace nor a control character, and no control character but
/// tab, newline and carriage return (Rust's `char::is_control` is Unicode category Cc).
pub const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*\
[^\\s\\u0000-\\u001F\\u007F-\\u009F]\
[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$";

/// What [`JsonObject`] accepts, as a JSON Schema pattern: text whose first and last
/// non-whitespace characters are braces (the decoder also parses it and bounds its depth).
pub const JSON_OBJECT_PATTERN: &str = "^[ \\t\\n\\r]*\\{[\\s\\S]*\\}[ \\t\\n\\r]*$";

/// What [`Address`] accepts, as a JSON Schema pattern: a `+` number of 8 to 15 digits (first
/// not zero; spaces, dashes, dots and parentheses allowed between them), or an email address
/// (a local part not starting with `+`, `@`, a dotted domain); surrounding whitespace is trimmed.
pub const ADDRESS_PATTERN: &str = "^\\s*(?:\\+[ ().-]*[1-9](?:[ ().-]*[0-9]){7,14}[ ().-]*\
|[A-Za-z0-9!#$%&'*/=?^_`{|}~.-][A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{0,63}\
@[A-Za-z0-9-]{1,63}(?:\\.[A-Za-z0-9-]{1,63})+\\.?)\\s*$";

/// Declares a trimmed, non-empty text bounded to `$max` characters.
macro_rules! bounded_text {
    ($(#[$meta:meta])* $name:ident, $max:expr, $schema_desc:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_CHARS: usize = $max;

            /// Trims and checks the value: non-empty, at most [`Self::MAX_CHARS`], no control
            /// characters other than newlines and tabs.
            pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    return Err(InvalidValue("must not be empty".into()));
                }
                let chars = trimmed.chars().count();
                if chars > Self::MAX_CHARS {
                    return Err(InvalidValue(format!(
                        "must be at most {} characters, got {chars}",
                        Self::MAX_CHARS
                    )));
                }
                if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
                    return Err(InvalidValue("must not contain control characters".into()));
                }
                Ok(Self(trimmed.to_owned()))
            }
        }

        string_value!($name);

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": crate::values::TEXT_PATTERN,
                    "description": $schema_desc,
                })
            }
        }
    };
}

bounded_text!(
    /// A person's or entity's name: first/last names, tenant and agent names.
    Name,
    200,
    "non-empty name, at most 200 characters"
);
bounded_text!(
    /// A task subject or short description.
    Subject,
    1_000,
    "non-empty text, at most 1000 characters"
);
bounded_text!(
    /// An agent description.
    Description,
    4_000,
    "non-empty text, at most 4000 characters"
);
bounded_text!(
    /// A task's content or body (an email body, a call script...).
    Content,
    65_536,
    "non-empty text, at most 65536 characters"
);
bounded_text!(
    /// A free-text reason given with a status change.
    Reason,
    1_000,
    "non-empty text, at most 1000 characters"
);
bounded_text!(
    /// What an agent reports happened when it completed or failed a task.
    OutcomeSummary,
    4_000,
    "non-empty text, at most 4000 characters"
);
bounded_text!(
    /// Where the transcript of a task's work is kept (a URL, an object key...).
    TranscriptRef,
    2_048,
    "non-empty text, at most 2048 characters"
);

/// How long a task's work took, in seconds: a finite, non-negative number (fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct DurationSecs(f64);

// Sound: `parse` admits finite numbers only, so no NaN ever makes `==` non-reflexive.
impl Eq for DurationSecs {}

impl DurationSecs {
    /// Checks the value: finite and not negative.
    pub fn parse(secs: f64) -> Result<Self, InvalidValue> {
        if !secs.is_finite() {
            return Err(InvalidValue("must be a finite number".into()));
        }
        if secs < 0.0 {
            return Err(InvalidValue(format!("must not be negative, got {secs}")));
        }
        Ok(Self(secs))
    }

    /// The seconds.
    pub const fn secs(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for DurationSecs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = f64::deserialize(d)?;
        Self::parse(raw).map_err(|e| serde::de::Error::custom(e.0))
    }
}

/// An email address, normalized to lowercase.
///
/// Checked pragmatically: one `@`, a non-empty local part of at most 64 bytes without spaces,
/// and a domain that is a valid [`CompanyDomain`]; 254 bytes at most in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    /// Validates and lowercases an email address.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim().to_ascii_lowercase();
        if value.len() > 254 {
            return Err(InvalidValue("email must be at most 254 characters".into()));
        }
        let Some((local, domain)) = value.split_once('@') else {
            return Err(InvalidValue("email must contain '@'".into()));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(InvalidValue(
                "email local part must be 1 to 64 characters".into(),
            ));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(InvalidValue("email local part has misplaced dots".into()));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        if !local_ok {
            return Err(InvalidValue(
                "email local part has invalid characters".into(),
            ));
        }
        let domain = CompanyDomain::parse(domain)
            .map_err(|e| InvalidValue(format!("email domain is invalid: {}", e.0)))?;
        // Rebuild from the normalized domain (no surrounding spaces, no trailing dot): one
        // mailbox, one text, or uniqueness guards keyed by it could be held twice.
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The domain part (after `@`).
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }
}

string_value!(Email);

/// A DNS domain name such as `acme.com`, normalized to lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompanyDomain(String);

impl CompanyDomain {
    /// Validates a hostname: at least two labels, each 1–63 of `[a-z0-9-]` not starting or
    /// ending with `-`, 253 characters at most, and a non-numeric top-level label.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if value.is_empty() || value.len() > 253 {
            return Err(InvalidValue("domain must be 1 to 253 characters".into()));
        }
        let labels: Vec<&str> = value.split('.').collect();
        if labels.len() < 2 {
            return Err(InvalidValue("domain must have at least two labels".into()));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(InvalidValue(format!("invalid domain label '{label}'")));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(InvalidValue("top-level label must not be numeric".into()));
        }
        Ok(Self(value))
    }
}

string_value!(CompanyDomain);

/// A phone number in E.164 form: `+` then 8 to 15 digits, the first not zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Validates an E.164 number. Spaces, dashes, dots and parentheses are removed first.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let Some(digits) = compact.strip_prefix('+') else {
            return Err(InvalidValue(
                "phone must be in E.164 form, starting with '+'".into(),
            ));
        };
        let ok = (8..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if !ok {
            return Err(InvalidValue(
                "phone must be in E.164 form: '+' and 8 to 15 digits, not starting with 0".into(),
            ));
        }
        Ok(Self(compact))
    }
}

string_value!(Phone);

/// A task's `fromAddress`/`toAddress`: an E.164 phone number or an email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A phone number (calls, SMS).
    Phone(Phone),
    /// An email address.
    Email(Email),
}

impl Address {
    /// Parses a phone number if the value starts with `+`, else an email address.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let trimmed = raw.trim();
        if trimmed.starts_with('+') {
            Phone::parse(trimmed).map(Self::Phone)
        } else if trimmed.contains('@') {
            Email::parse(trimmed).map(Self::Email)
        } else {
            Err(InvalidValue(
                "must be an E.164 phone number (+15550001111) or an email address".into(),
            ))
        }
    }

    /// The normalized text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Phone(p) => p.as_str(),
            Self::Email(e) => e.as_str(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.0))
    }
}

/// A JSON string field (`permissions`, `configuration`, `metadata`) that must hold a JSON object.
///
/// Kept as the caller's text (the seed stores these as strings) after checking that it parses
/// to an object, is at most [`JsonObject::MAX_BYTES`] and nests at most
/// [`JsonObject::MAX_DEPTH`] levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonObject(String);

impl JsonObject {
    /// Largest accepted text, in bytes.
    pub const MAX_BYTES: usize = 32 * 1024;
    /// Deepest accepted nesting of arrays and objects.
    pub const MAX_DEPTH: usize = 16;

    /// Validates that `raw` is a JSON object within the size and depth bounds.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.len() > Self::MAX_BYTES {
            return Err(InvalidValue(format!(
                "must be at most {} bytes of JSON, got {}",
                Self::MAX_BYTES,
                raw.len()
            )));
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| InvalidValue(format!("must be a JSON object: {e}")))?;
        if !value.is_object() {
            return Err(InvalidValue("must be a JSON object".into()));
        }
        if depth(&value) > Self::MAX_DEPTH {
            return Err(InvalidValue(format!(
                "must nest at most {} levels",
                Self::MAX_DEPTH
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// An empty object, `{}`.
    pub fn empty() -> Self {
        Self("{}".to_owned())
    }

    /// The parsed value (always an object).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
    }
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

string_value!(JsonObject);

/// Hand-written schemas for the validated strings that are not bounded texts.
#[cfg(feature = "schema")]
mod schema {
    use super::*;
    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
    use std::borrow::Cow;

    macro_rules! string_schema {
        ($name:ident, $schema:tt) => {
            impl JsonSchema for $name {
                fn schema_name() -> Cow<'static, str> {
                    stringify!($name).into()
                }

                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    json_schema!($schema)
                }
            }
        };
    }

    string_schema!(Email, {
        "type": "string", "format": "email", "maxLength": 254,
        "description": "email address; stored lowercase"
    });
    string_schema!(CompanyDomain, {
        "type": "string", "maxLength": 253,
        "pattern": "^[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63})+\\.?$",
        "description": "DNS domain name such as acme.com"
    });
    string_schema!(Phone, {
        "type": "string", "pattern": "^\\+[1-9][0-9 ().-]{7,30}$",
        "description": "E.164 phone number; separators are removed"
    });
    string_schema!(Address, {
        "type": "string", "maxLength": 254, "pattern": ADDRESS_PATTERN,
        "description": "E.164 phone number (starting with +) or email address"
    });
    string_schema!(DurationSecs, {
        "type": "number", "minimum": 0,
        "description": "seconds, a non-negative number"
    });
    string_schema!(JsonObject, {
        "type": "string", "maxLength": 32768, "pattern": JSON_OBJECT_PATTERN,
        "description": "text holding a JSON object (the seed stores these fields as JSON strings)"
    });
}
