//! Renders `proto/` from the catalog: the schema files and the AsyncAPI document (regenerated,
//! owned by the generator), and the fixtures (created when missing, never rewritten).
//!
//! Run `cargo run -p talkwai-proto --bin talkwai-proto-gen` to write them; the contract tests
//! fail when the checked-in files differ from what this module renders.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::schema::{MessageKind, catalog};
use crate::{asyncapi, samples, yaml};

/// The command that regenerates `proto/`.
pub const REGENERATE: &str = "cargo run -p talkwai-proto --bin talkwai-proto-gen";

/// The directory under `proto/` whose every file is generated.
pub const SCHEMAS_DIR: &str = "schemas";
/// The AsyncAPI document, relative to `proto/`.
pub const ASYNCAPI_FILE: &str = "asyncapi.yaml";
/// Event fixtures, relative to `proto/`.
pub const EVENT_FIXTURES_DIR: &str = "fixtures/events";
/// Command fixtures, relative to `proto/`.
pub const COMMAND_FIXTURES_DIR: &str = "fixtures/commands";

/// The `proto/` directory of this repository.
pub fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

/// Pretty JSON with a final newline, the form of every JSON file in `proto/`.
pub fn json_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Every generated file (schemas and AsyncAPI), by path relative to `proto/`.
pub fn generated() -> BTreeMap<String, String> {
    let catalog = catalog();
    let mut files: BTreeMap<String, String> = catalog
        .iter()
        .map(|entry| (entry.schema_path(), json_text(&entry.schema)))
        .collect();
    files.insert(
        ASYNCAPI_FILE.to_owned(),
        // Rendering JSON values cannot fail; should it, the contract test shows why.
        yaml::document(&asyncapi::document(&catalog))
            .unwrap_or_else(|e| format!("# cannot render the AsyncAPI document: {e}\n")),
    );
    files
}

/// The fixture the generator creates for each message that has none, by path relative to
/// `proto/`: one event body per event type and version, one body per command action.
pub fn sample_fixtures() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for event in samples::events() {
        let body = event.encode();
        let path = format!(
            "{EVENT_FIXTURES_DIR}/{}.v{}.json",
            body.event_type, body.version
        );
        let value = serde_json::to_value(&body).unwrap_or(Value::Null);
        files.insert(path, json_text(&value));
    }
    for (name, body) in samples::command_bodies() {
        files.insert(
            format!("{COMMAND_FIXTURES_DIR}/{name}.json"),
            json_text(&body),
        );
    }
    files
}

/// The fixture path of an event type and version, relative to `proto/`.
pub fn event_fixture_path(event_type: &str, version: u32) -> String {
    format!("{EVENT_FIXTURES_DIR}/{event_type}.v{version}.json")
}

/// The fixture path of a command, relative to `proto/`.
pub fn command_fixture_path(name: &str) -> String {
    format!("{COMMAND_FIXTURES_DIR}/{name}.json")
}

/// A difference between `proto/` and what the generator renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A generated file is not checked in.
    Missing(String),
    /// A checked-in generated file differs.
    Differs(String),
    /// A file under `schemas/` that the catalog does not produce.
    Extra(String),
    /// A message of the catalog has no fixture.
    MissingFixture(String),
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(path) => write!(f, "missing: proto/{path}"),
            Self::Differs(path) => write!(f, "out of date: proto/{path}"),
            Self::Extra(path) => write!(f, "not generated (stale?): proto/{path}"),
            Self::MissingFixture(path) => write!(f, "missing fixture: proto/{path}"),
        }
    }
}

/// Files under `dir` (relative to `root`), recursively, as `/`-separated relative paths.
pub fn list_files(root: &Path, dir: &str) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![root.join(dir)];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                found.push(parts.join("/"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Compares `root` (a `proto/` directory) with what the generator renders.
pub fn check(root: &Path) -> io::Result<Vec<Drift>> {
    let mut drift = Vec::new();
    let generated = generated();
    for (path, contents) in &generated {
        match std::fs::read_to_string(root.join(path)) {
            Ok(existing) if existing == *contents => {}
            Ok(_) => drift.push(Drift::Differs(path.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                drift.push(Drift::Missing(path.clone()));
            }
            Err(e) => return Err(e),
        }
    }
    for path in list_files(root, SCHEMAS_DIR)? {
        if !generated.contains_key(&path) {
            drift.push(Drift::Extra(path));
        }
    }
    for entry in catalog() {
        let path = match (entry.kind, entry.version) {
            (MessageKind::Event, Some(version)) => event_fixture_path(&entry.name, version),
            (MessageKind::Command, _) => command_fixture_path(&entry.name),
            _ => continue,
        };
        if !root.join(&path).is_file() {
            drift.push(Drift::MissingFixture(path));
        }
    }
    Ok(drift)
}

/// What [`write()`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Generated files written because they were missing or differed.
    pub updated: Vec<String>,
    /// Stale files removed from `schemas/`.
    pub removed: Vec<String>,
    /// Fixtures created because they were missing.
    pub fixtures_created: Vec<String>,
}

/// Writes the generated files into `root` (a `proto/` directory), removes stale schema files
/// and creates missing fixtures. Existing fixtures are never touched.
pub fn write(root: &Path) -> io::Result<Written> {
    let mut written = Written::default();
    let generated = generated();
    for (path, contents) in &generated {
        let target = root.join(path);
        if std::fs::read_to_string(&target).ok().as_deref() == Some(contents.as_str()) {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, contents)?;
        written.updated.push(path.clone());
    }
    for path in list_files(root, SCHEMAS_DIR)? {
        if !generated.contains_key(&path) {
            std::fs::remove_file(root.join(&path))?;
            written.removed.push(path);
        }
    }
    for (path, contents) in sample_fixtures() {
        let target = root.join(&path);
        if target.exists() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, contents)?;
        written.fixtures_created.push(path);
    }
    Ok(written)
}
