//! `talkwai events export` and `talkwai events import`: a log exported from one nats-server and
//! imported into a fresh one holds the same messages (subjects, headers, payloads) at the same
//! sequences; an import refuses a stream that already holds events; a one-tenant export
//! imports as that tenant's per-subject histories, renumbered consecutively.
//!
//! With sealing on, an export carries the wrapped keys (key lines first): imported into a fresh
//! nats-server, the CLI with the same master key reads the clear values; a key destroyed
//! before the export stays erased; restoring an older backup brings no destroyed key back; a
//! second restore is a no-op and a different key under a known name is refused.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Harness, Run, talkwai, task_body, world};
use futures::StreamExt;
use serde_json::json;
use talkwai_eventstore::{EventStore, StoredMessage, StreamSettings};
use talkwai_testkit::NatsServer;
use uuid::Uuid;

/// Every message of the event stream on `url`, in order.
async fn log(url: &str) -> Vec<StoredMessage> {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let store = EventStore::open(client, &StreamSettings::default())
        .await
        .unwrap_or_else(|e| panic!("open the stream on {url}: {e}"));
    let head = store.last_sequence().await.expect("stream head");
    let mut out = Vec::new();
    if head == 0 {
        return out;
    }
    let mut replay = store.replay(1, Vec::new()).await.expect("replay");
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), replay.next())
        .await
        .expect("replay stalls")
    {
        let message = message.expect("replayed message");
        let done = message.seq >= head;
        out.push(message);
        if done {
            break;
        }
    }
    out
}

/// Headers as sorted lists, without the server's write-control headers an import does not
/// replay (`Nats-Msg-Id`, `Nats-Batch-*`).
fn headers(message: &StoredMessage) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::<String, Vec<String>>::new();
    for (name, values) in message.headers.iter() {
        let name = name.to_string();
        let lower = name.to_ascii_lowercase();
        if lower == "nats-msg-id" || lower.starts_with("nats-batch-") {
            continue;
        }
        out.entry(name)
            .or_default()
            .extend(values.iter().map(|v| v.as_str().to_owned()));
    }
    out
}

/// Runs `talkwai <args>` against `url` with `input` as stdin.
async fn run_with_stdin(url: &str, args: &[&str], input: &std::path::Path) -> Run {
    run_with_stdin_env(url, args, input, &[]).await
}

/// Runs `talkwai <args>` against `url` with `input` as stdin and the variables `env`.
async fn run_with_stdin_env(
    url: &str,
    args: &[&str],
    input: &std::path::Path,
    env: &[(&str, &str)],
) -> Run {
    let stdin =
        std::fs::File::open(input).unwrap_or_else(|e| panic!("open {}: {e}", input.display()));
    let mut command = talkwai();
    command.env("TALKWAI_NATS_URL", url);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        command.args(args).stdin(Stdio::from(stdin)).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("talkwai {args:?} did not finish within 60s"))
    .unwrap_or_else(|e| panic!("cannot run talkwai {args:?}: {e}"));
    Run::from_output(args, output)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_log_imports_into_an_empty_stream_unchanged() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let other = world(&h).await;
    let t = w.tenant.to_string();
    let task = Uuid::new_v4();
    h.ok(&format!("{t}.task.create"), task_body(task), &w.owner_token)
        .await;
    // One command with a caller's trace context: its events carry `traceparent`.
    let mut request = async_nats::HeaderMap::new();
    request.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
    request.insert(
        "Authorization",
        format!("Bearer {}", w.owner_token).as_str(),
    );
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    request.insert("traceparent", traceparent);
    let reply = h
        .client
        .request_with_headers(
            format!("talkwai.cmd.{t}.task.start"),
            request,
            json!({"id": task}).to_string().into(),
        )
        .await
        .expect("task.start answered");
    assert!(
        String::from_utf8_lossy(&reply.payload).contains("\"ok\":true"),
        "{}",
        String::from_utf8_lossy(&reply.payload)
    );
    let other_task = Uuid::new_v4();
    h.ok(
        &format!("{}.task.create", other.tenant),
        task_body(other_task),
        &other.owner_token,
    )
    .await;
    let original = log(&h.server.url()).await;
    assert!(
        original.len() >= 8,
        "a log worth exporting: {}",
        original.len()
    );
    assert!(
        original
            .iter()
            .any(|m| m.header("traceparent") == Some(traceparent)),
        "the traced command's event carries traceparent"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let all = dir.path().join("all.jsonl");
    let export = h.run(&["events", "export"], &[]).await;
    assert_eq!(export.code, 0, "export: {}", export.stderr);
    assert_eq!(export.stdout.lines().count(), original.len());
    assert!(
        export
            .stderr
            .contains(&format!("exported {} events", original.len())),
        "{}",
        export.stderr
    );
    std::fs::write(&all, &export.stdout).expect("write the export");
    let first: serde_json::Value =
        serde_json::from_str(export.stdout.lines().next().expect("a line")).expect("JSON line");
    assert_eq!(first["seq"], 1);
    assert!(first["payload"].is_object(), "payloads are JSON: {first}");
    assert!(first["headers"]["Talkwai-Event-Type"].is_array(), "{first}");

    // Into a fresh server: the same messages at the same sequences.
    let fresh = NatsServer::start().await.expect("fresh nats-server");
    let import = run_with_stdin(&fresh.url(), &["events", "import"], &all).await;
    assert_eq!(import.code, 0, "import: {}", import.stderr);
    let imported = log(&fresh.url()).await;
    assert_eq!(imported.len(), original.len());
    for (a, b) in original.iter().zip(&imported) {
        assert_eq!(a.seq, b.seq, "sequences are kept by a complete export");
        assert_eq!(a.subject, b.subject, "seq {}", a.seq);
        assert_eq!(a.payload, b.payload, "seq {} payload", a.seq);
        assert_eq!(headers(a), headers(b), "seq {} headers", a.seq);
    }
    assert!(
        imported
            .iter()
            .any(|m| m.header("traceparent") == Some(traceparent))
    );

    // A second import into the now non-empty stream is refused and changes nothing.
    let again = run_with_stdin(&fresh.url(), &["events", "import"], &all).await;
    assert_eq!(again.code, 2, "refused: {}", again.stderr);
    assert!(again.stderr.contains("empty stream"), "{}", again.stderr);
    assert_eq!(log(&fresh.url()).await.len(), original.len());

    // One tenant: its per-subject histories, renumbered from 1 without gaps.
    let one = dir.path().join("tenant.jsonl");
    let export = h.run(&["events", "export", "--tenant", &t], &[]).await;
    assert_eq!(export.code, 0, "tenant export: {}", export.stderr);
    std::fs::write(&one, &export.stdout).expect("write the tenant export");
    let third = NatsServer::start().await.expect("third nats-server");
    let import = run_with_stdin(&third.url(), &["events", "import"], &one).await;
    assert_eq!(import.code, 0, "tenant import: {}", import.stderr);
    let scoped: Vec<&StoredMessage> = original
        .iter()
        .filter(|m| m.subject.starts_with(&format!("talkwai.evt.{t}.")))
        .collect();
    let imported = log(&third.url()).await;
    assert_eq!(imported.len(), scoped.len());
    assert!(
        imported
            .iter()
            .enumerate()
            .all(|(i, m)| m.seq == i as u64 + 1),
        "consecutive sequences"
    );
    let by_subject = |messages: Vec<&StoredMessage>| {
        let mut out = BTreeMap::<String, Vec<(Vec<u8>, BTreeMap<String, Vec<String>>)>>::new();
        for m in messages {
            let mut h = headers(m);
            // Renumbered: the expected subject sequence follows the new stream.
            h.remove("Nats-Expected-Last-Subject-Sequence");
            out.entry(m.subject.clone())
                .or_default()
                .push((m.payload.to_vec(), h));
        }
        out
    };
    assert_eq!(by_subject(scoped), by_subject(imported.iter().collect()));
    assert!(
        !imported
            .iter()
            .any(|m| m.subject.contains(&other.tenant.to_string())),
        "only the exported tenant"
    );
    h.stop().await;
}

/// The data key of the first event on `subject`: (scope token, key id).
async fn key_of(h: &Harness, subject: &str) -> (String, Uuid) {
    let store = EventStore::open(h.client.clone(), &StreamSettings::default())
        .await
        .expect("open the stream");
    let messages = store.read_subject(subject, 0).await.expect("read");
    let first = messages.first().expect("an event");
    let (scope, key) = talkwai_proto::event::sealed_key(&first.subject, |n| first.header(n))
        .unwrap_or_else(|| panic!("{subject} is not sealed"));
    (scope.to_string(), key)
}

/// The key lines of an export, in order.
fn key_lines(export: &str) -> Vec<serde_json::Value> {
    export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|l| l.get("key").is_some())
        .collect()
}

/// The wrapped key `key` as the key line `name` of an export holds it (`None`: no such line,
/// or its slot there is empty: destroyed).
fn wrapped_in(export: &str, name: &str, key: Uuid) -> Option<String> {
    let line = key_lines(export)
        .into_iter()
        .find(|l| l["key"]["name"] == json!(name))?;
    let value = STANDARD.decode(line["key"]["value"].as_str()?).ok()?;
    talkwai_keys::stored_slot(name, &value, key)
}

/// Writes the key lines of an export to `path` in the `talkwai keys export` format; how many.
fn write_keys(path: &std::path::Path, export: &str) -> usize {
    let lines: Vec<String> = key_lines(export)
        .iter()
        .map(|l| l["key"].to_string())
        .collect();
    std::fs::write(path, lines.join("\n")).expect("write the keys");
    lines.len()
}

/// `talkwai events show <target> --json` on `url` with `master`: the first event's data.
async fn shown(url: &str, master: &str, target: &str, tenant: &str) -> serde_json::Value {
    let run = common::run_talkwai(
        &["events", "show", target, "--tenant", tenant, "--json"],
        &[("TALKWAI_NATS_URL", url), ("TALKWAI_MASTER_KEY", master)],
    )
    .await;
    assert_eq!(run.code, 0, "events show {target}: {}", run.stderr);
    run.json()["events"][0]["data"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_carries_the_wrapped_keys_and_never_a_destroyed_one() {
    let (_, master) = talkwai_keys::MasterKey::generate();
    let h = Harness::start_sealed(&master).await;
    let w = world(&h).await;
    let t = w.tenant.to_string();
    let (kept, gone) = (Uuid::new_v4(), Uuid::new_v4());
    let kept_subject = format!("Kept {kept}");
    let gone_subject = format!("Gone {gone}");
    for (task, subject) in [(kept, &kept_subject), (gone, &gone_subject)] {
        let mut body = task_body(task);
        body["subject"] = json!(subject);
        h.ok(&format!("{t}.task.create"), body, &w.owner_token)
            .await;
    }
    let (scope, gone_key) = key_of(&h, &format!("talkwai.evt.{t}.task.{gone}")).await;
    let (_, kept_key) = key_of(&h, &format!("talkwai.evt.{t}.task.{kept}")).await;
    // Keys live in blocks: the entry holding each, and its wrapped bytes there.
    let in_scope = talkwai_proto::Scope::parse(&scope).expect("a scope");
    let gone_name = talkwai_keys::entry_name(in_scope, gone_key);
    let kept_name = talkwai_keys::entry_name(in_scope, kept_key);
    let (owner_name, owner_key) = {
        let (_, key) = key_of(&h, &format!("talkwai.evt.{t}.member.{}", w.owner)).await;
        (talkwai_keys::entry_name(in_scope, key), key)
    };
    let dir = tempfile::tempdir().expect("temp dir");

    // Before the erasure: the export holds the keys (no master key needed), first.
    let before = h.run(&["events", "export"], &[]).await;
    assert_eq!(before.code, 0, "export: {}", before.stderr);
    let first: serde_json::Value =
        serde_json::from_str(before.stdout.lines().next().expect("a line")).expect("JSON");
    assert!(first.get("key").is_some(), "key lines come first: {first}");
    let names: Vec<String> = key_lines(&before.stdout)
        .iter()
        .map(|l| l["key"]["name"].as_str().expect("a name").to_owned())
        .collect();
    for name in [&format!("tenant.{t}"), &kept_name, &gone_name, &owner_name] {
        assert!(names.contains(name), "{name} in {names:?}");
    }
    assert!(
        !before.stdout.contains(&kept_subject),
        "the export holds sealed values only"
    );
    assert!(wrapped_in(&before.stdout, &gone_name, gone_key).is_some());
    let older = dir.path().join("before.jsonl");
    std::fs::write(&older, &before.stdout).expect("write");

    // One subject is erased; the next export has its events but not its key.
    let destroyed = h
        .run(
            &[
                "keys",
                "destroy",
                "--scope",
                &scope,
                "--key",
                &gone_key.to_string(),
            ],
            &[("TALKWAI_MASTER_KEY", &master)],
        )
        .await;
    assert_eq!(destroyed.code, 0, "{}", destroyed.stderr);
    let after = h.run(&["events", "export"], &[]).await;
    assert_eq!(after.code, 0, "export: {}", after.stderr);
    assert!(
        after.stderr.contains("personal-data keys"),
        "{}",
        after.stderr
    );
    assert_eq!(
        wrapped_in(&after.stdout, &gone_name, gone_key),
        None,
        "a destroyed key is not exported"
    );
    let kept_wrapped = wrapped_in(&after.stdout, &kept_name, kept_key).expect("kept exported");
    let backup = dir.path().join("after.jsonl");
    std::fs::write(&backup, &after.stdout).expect("write");

    // Into a fresh nats-server: the CLI with the same master key reads the clear values, and
    // the erased subject stays erased.
    let fresh = NatsServer::start().await.expect("fresh nats-server");
    let import = run_with_stdin(&fresh.url(), &["events", "import"], &backup).await;
    assert_eq!(import.code, 0, "import: {}", import.stderr);
    assert!(import.stderr.contains(" restored"), "{}", import.stderr);
    let url = fresh.url();
    let data = shown(&url, &master, &format!("task/{kept}"), &t).await;
    assert_eq!(data["subject"], json!(kept_subject), "{data}");
    let data = shown(&url, &master, &format!("member/{}", w.owner), &t).await;
    assert_eq!(data["firstName"], "Olive", "{data}");
    let data = shown(&url, &master, &format!("task/{gone}"), &t).await;
    assert_eq!(data["subject"], serde_json::Value::Null, "{data}");
    assert!(
        data["erased"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("subject"))),
        "{data}"
    );

    // Restoring the same keys again changes nothing; a different key under a known name is
    // refused with a typed error and leaves the one there.
    let keys_only = dir.path().join("keys.jsonl");
    let count = write_keys(&keys_only, &after.stdout);
    let master_env = [("TALKWAI_MASTER_KEY", master.as_str())];
    let again = run_with_stdin_env(&url, &["keys", "import"], &keys_only, &master_env).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains(&format!("restored 0 of {count} keys")),
        "{}",
        again.stdout
    );
    // The kept task's slot holding the owner's key instead.
    let owner_wrapped = wrapped_in(&after.stdout, &owner_name, owner_key).expect("owner's key");
    let kept_line = key_lines(&after.stdout)
        .into_iter()
        .find(|l| l["key"]["name"] == json!(kept_name))
        .expect("the kept key's line");
    let mut block: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(kept_line["key"]["value"].as_str().expect("a value"))
            .expect("base64"),
    )
    .expect("a block");
    for slot in block["keys"].as_array_mut().expect("slots") {
        if *slot == json!(kept_wrapped) {
            *slot = json!(owner_wrapped);
        }
    }
    let forged = dir.path().join("forged.jsonl");
    std::fs::write(
        &forged,
        json!({"name": kept_name, "value": STANDARD.encode(block.to_string())}).to_string(),
    )
    .expect("write");
    let conflict = run_with_stdin_env(&url, &["keys", "import"], &forged, &master_env).await;
    assert_eq!(conflict.code, 2, "refused: {}", conflict.stderr);
    assert!(
        conflict.stderr.contains("different key"),
        "{}",
        conflict.stderr
    );
    let data = shown(&url, &master, &format!("task/{kept}"), &t).await;
    assert_eq!(
        data["subject"],
        json!(kept_subject),
        "the key there is kept"
    );

    // The backup taken before the erasure, restored where the key was destroyed, does not
    // bring it back.
    let older_keys = dir.path().join("older-keys.jsonl");
    write_keys(&older_keys, &before.stdout);
    let origin = h.server.url();
    let restore = run_with_stdin_env(&origin, &["keys", "import"], &older_keys, &master_env).await;
    assert_eq!(restore.code, 0, "{}", restore.stderr);
    assert!(
        restore.stdout.contains("1 destroyed here stay destroyed"),
        "{}",
        restore.stdout
    );
    let data = shown(&origin, &master, &format!("task/{gone}"), &t).await;
    assert_eq!(data["subject"], serde_json::Value::Null, "{data}");
    h.stop().await;
}
