//! The golden history (`proto/fixtures/history/*.jsonl`): stored messages (subject, headers,
//! body) of every event type at every version ever written, appended to and never edited. The
//! tests read it as the log is read, fold it into domain state and into the read models of a
//! real PostgreSQL through the projector's apply path, and compare both with the committed
//! `proto/fixtures/history/expected.json`. An event type or version without a line in the
//! history fails here, loudly.
//!
//! Sealed events (`0005-sealed.jsonl` on) are opened with the key lines under `keys/` (the
//! bucket's entries as a backup holds them: wrapped) and `keys/master.key`, a master key made
//! for this fixture alone: every sealed format ever written (`v1` field by field, `v2` one
//! value per event; keys stored alone and in blocks; a destroyed key) must keep opening.
//!
//! After a reviewed change of what the history folds into (a new line appended, a new column),
//! rewrite the expectation with `TALKWAI_BLESS_HISTORY=1 cargo nextest run -p
//! talkwai-projector --test golden_history` and commit it with the change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};
use talkwai_domain::{AggregateState, apply};
use talkwai_eventstore::StoredMessage;
use talkwai_keys::{Keyring, MasterKey};
use talkwai_projector::apply::{PoisonPolicy, apply_batch_with};
use talkwai_projector::schema::{self, TABLES};
use talkwai_proto::event::decode_stored_with;
use talkwai_proto::schema::{MessageKind, catalog};
use talkwai_testkit::Postgres;

/// One line of the history.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    subject: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

fn history_dir() -> PathBuf {
    talkwai_proto::generate::proto_dir().join("fixtures/history")
}

/// The `*.jsonl` files of `dir`, in name order.
fn jsonl_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Every line of every history file, in file-name order: (file:line, line).
fn history() -> Vec<(String, Line)> {
    let dir = history_dir();
    let files = jsonl_files(&dir);
    assert!(!files.is_empty(), "no history under {}", dir.display());
    let mut lines = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).expect("history file");
        for (n, raw) in text.lines().enumerate() {
            let line: Line = serde_json::from_str(raw)
                .unwrap_or_else(|e| panic!("{name}:{}: not a stored message: {e}", n + 1));
            lines.push((format!("{name}:{}", n + 1), line));
        }
    }
    lines
}

/// Every key the history's sealed events use, opened with the fixture's master key.
fn keyring() -> Keyring {
    let dir = history_dir().join("keys");
    let master = std::fs::read_to_string(dir.join("master.key")).expect("the fixture's master key");
    let master = MasterKey::from_base64(&master).expect("a master key");
    let mut entries = Vec::new();
    for file in jsonl_files(&dir) {
        let text = std::fs::read_to_string(&file).expect("key lines");
        for raw in text.lines() {
            let line: talkwai_keys::backup::KeyLine =
                serde_json::from_str(raw).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            entries.push(line.entry().expect("a key line"));
        }
    }
    Keyring::from_entries(&[master], &entries).expect("the fixture's keys open")
}

fn payload(line: &Line) -> Vec<u8> {
    serde_json::to_vec(&line.body).expect("body serializes")
}

#[test]
fn every_event_type_at_every_version_ever_written_is_in_the_history() {
    let written: BTreeSet<(String, u32)> = history()
        .iter()
        .filter_map(|(_, line)| {
            let ty = line.body["type"].as_str()?.to_owned();
            let version = u32::try_from(line.body["version"].as_u64()?).ok()?;
            Some((ty, version))
        })
        .collect();
    let missing: Vec<String> = catalog()
        .into_iter()
        .filter(|e| e.kind == MessageKind::Event)
        .filter_map(|e| {
            let version = e.version?;
            (!written.contains(&(e.name.clone(), version))).then(|| e.id())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "\n\nthe golden history has no stored message of {missing:?}.\nAppend a new file \
         proto/fixtures/history/<NNNN>-<what>.jsonl (never edit the existing ones) with \
         messages of these types and versions, as the command service writes them, then \
         re-bless the expectation (see crates/talkwai-projector/tests/golden_history.rs).\n\n"
    );
}

/// The history folded into domain state with the strict `apply`, one line per aggregate.
fn folded_state(lines: &[(String, Line)]) -> Vec<String> {
    let mut states: BTreeMap<String, AggregateState> = BTreeMap::new();
    let keys = keyring();
    for (at, line) in lines {
        let stored = decode_stored_with(
            &line.subject,
            |name| line.headers.get(name).map(String::as_str),
            &payload(line),
            &keys,
        )
        .unwrap_or_else(|e| panic!("{at}: does not decode: {e}"));
        let Some(stored) = stored else { continue };
        let key = format!("{} {}", stored.target.kind, stored.target.id);
        let state = states
            .entry(key)
            .or_insert_with(|| AggregateState::new(stored.target));
        apply(state, &stored.event).unwrap_or_else(|e| panic!("{at}: does not apply: {e}"));
    }
    states
        .into_iter()
        .map(|(key, state)| format!("{key}: {state:?}"))
        .collect()
}

/// The history applied to a fresh generation through `apply_batch`; every view's rows by id.
async fn projected_rows(lines: &[(String, Line)]) -> BTreeMap<String, Vec<Value>> {
    let pg = Postgres::start().await.expect("postgres");
    let db = pg.create_unique_database("history").await.expect("db");
    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let mut conn = pool.get().await.expect("conn");
    schema::migrate(&conn).await.expect("migrate");
    let (generation, live) = schema::live_generation(&mut conn)
        .await
        .expect("generation");
    let messages: Vec<StoredMessage> = lines
        .iter()
        .zip(1..)
        .map(|((_, line), seq)| {
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in &line.headers {
                headers.insert(name.as_str(), value.as_str());
            }
            StoredMessage {
                seq,
                subject: line.subject.clone(),
                headers,
                payload: payload(line).into(),
                stored_at_ms: 0,
            }
        })
        .collect();
    let tx = conn.transaction().await.expect("transaction");
    let outcome = apply_batch_with(
        &tx,
        &live,
        generation,
        &messages,
        PoisonPolicy::Stop,
        None,
        &keyring(),
    )
    .await
    .expect("apply");
    assert_eq!(outcome.stopped_at, None, "every line applies");
    tx.commit().await.expect("commit");
    let mut rows = BTreeMap::new();
    for table in TABLES {
        let found = conn
            .query(
                &format!(
                    "SELECT row_to_json(t)::text FROM {}.{table} t ORDER BY id",
                    schema::VIEWS
                ),
                &[],
            )
            .await
            .expect("rows");
        let found: Vec<Value> = found
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).expect("row json"))
            .collect();
        rows.insert(table.to_owned(), found);
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_folds_into_the_expected_state_and_read_model_rows() {
    let lines = history();
    let actual = json!({
        "state": folded_state(&lines),
        "rows": projected_rows(&lines).await,
    });
    let path = history_dir().join("expected.json");
    if std::env::var_os("TALKWAI_BLESS_HISTORY").is_some() {
        let text = serde_json::to_string_pretty(&actual).expect("json") + "\n";
        std::fs::write(&path, text).expect("write expected.json");
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (bless it, see the module doc)", path.display())),
    )
    .expect("expected.json parses");
    assert_eq!(
        expected["state"], actual["state"],
        "the domain state folded from the golden history changed"
    );
    for table in TABLES {
        assert_eq!(
            expected["rows"][table], actual["rows"][table],
            "the {table} rows projected from the golden history changed"
        );
    }
    assert_eq!(expected, actual);
}
