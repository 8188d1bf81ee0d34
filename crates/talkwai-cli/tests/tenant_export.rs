//! `talkwai tenant export` as a process against a real nats-server and the command service in
//! this process: one tenant's whole story, and nothing of another's.

mod common;

use common::{Harness, PLATFORM, task_body, world};
use serde_json::{Value, json};
use uuid::Uuid;

/// Every string in `value`, recursively.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn ids(rows: &Value) -> Vec<&str> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not a list of rows: {rows}"))
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_holds_everything_of_one_tenant_and_nothing_of_another() {
    let h = Harness::start().await;
    let a = world(&h).await;
    let b = world(&h).await;
    let agent = Uuid::new_v4();
    h.ok(
        &format!("{}.agent.create", a.tenant),
        json!({"id": agent, "name": "Reception", "type": "voice",
               "configuration": "{\"voice\":\"alloy\"}"}),
        &a.owner_token,
    )
    .await;
    let (kept, deleted) = (Uuid::new_v4(), Uuid::new_v4());
    for task in [kept, deleted] {
        let mut body = task_body(task);
        body["agent"] = json!(agent);
        body["assignedTo"] = json!(a.owner);
        h.ok(&format!("{}.task.create", a.tenant), body, &a.owner_token)
            .await;
    }
    h.ok(
        &format!("{}.task.delete", a.tenant),
        json!({"id": deleted}),
        &a.owner_token,
    )
    .await;
    let b_task = Uuid::new_v4();
    h.ok(
        &format!("{}.task.create", b.tenant),
        task_body(b_task),
        &b.owner_token,
    )
    .await;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let out = dir.path().join("a.json");
    let out_arg = out.to_string_lossy().into_owned();
    let tenant_arg = a.tenant.to_string();
    let run = h
        .run(
            &[
                "tenant",
                "export",
                "--tenant",
                &tenant_arg,
                "--out",
                &out_arg,
            ],
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "export failed: {}", run.stderr);
    assert!(run.stdout.is_empty(), "--out writes nothing on stdout");
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{out_arg}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}"));

    assert_eq!(doc["format"], "talkwai.tenant-export", "{doc}");
    assert_eq!(doc["formatVersion"], 1);
    assert_eq!(doc["tenantId"], json!(a.tenant));
    assert_eq!(doc["erased"], false);
    assert_eq!(doc["tenant"]["id"], json!(a.tenant));
    assert_eq!(doc["tenant"]["name"], "Acme Corp");
    assert_eq!(ids(&doc["members"]), [a.owner.to_string()]);
    assert_eq!(doc["members"][0]["first_name"], "Olive");
    assert_eq!(ids(&doc["agents"]), [agent.to_string()]);
    // A deleted task has no row; its events are listed.
    assert_eq!(ids(&doc["tasks"]), [kept.to_string()]);
    // The $users identity the owner links to (a platform fact that is the member's).
    let users = doc["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{doc}");
    assert_eq!(users[0]["id"], doc["members"][0]["user_id"]);
    assert!(
        users[0]["email"]
            .as_str()
            .is_some_and(|e| e.starts_with("owner-")),
        "{doc}"
    );
    let links = doc["links"].as_array().expect("links");
    for (rel, to) in [("agent", agent), ("assignedTo", a.owner)] {
        assert!(
            links.iter().any(|l| l["from"]["id"] == json!(kept)
                && l["rel"] == rel
                && l["to"]["id"] == json!(to)),
            "no {rel} link of task {kept}: {links:?}"
        );
    }
    // Every event of the tenant, in log order, in the current version.
    let events = doc["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "tenant.created",
            "member.created",
            "agent.created",
            "task.created",
            "task.created",
            "task.deleted"
        ],
        "{doc}"
    );
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert!(doc["throughSeq"].as_u64() >= seqs.last().copied());
    for event in events {
        let subject = event["subject"].as_str().unwrap_or_default();
        assert!(
            subject.starts_with(&format!("talkwai.evt.{}.", a.tenant)),
            "{event}"
        );
        assert!(event["data"].is_object(), "{event}");
    }

    // Nothing of tenant B anywhere in the document.
    let mut all = Vec::new();
    strings(&doc, &mut all);
    for other in [b.tenant, b.owner, b_task] {
        let other = other.to_string();
        assert!(
            !all.iter().any(|s| s.contains(&other)),
            "tenant B's {other} leaked into A's export"
        );
    }

    // Stdout without --out: the same document (but for its time of export).
    let run = h
        .run(&["tenant", "export", "--tenant", &tenant_arg], &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut again = run.json();
    again["exportedAt"] = doc["exportedAt"].clone();
    assert_eq!(again, doc);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn export_of_a_tenant_the_log_does_not_hold_is_refused() {
    let h = Harness::start().await;
    // The stream exists (something was written) but holds nothing of this tenant.
    h.ok(
        "talkwai.cmd.platform.tenant.create",
        json!({"id": Uuid::new_v4(), "name": "Other"}),
        PLATFORM,
    )
    .await;
    let missing = Uuid::new_v4().to_string();
    let run = h
        .run(&["tenant", "export", "--tenant", &missing], &[])
        .await;
    assert_eq!(run.code, 1, "not found is a refusal: {}", run.stderr);
    assert!(run.stderr.contains("holds no event"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let run = h
        .run(&["tenant", "export", "--tenant", "not-a-uuid"], &[])
        .await;
    assert_eq!(run.code, 2, "a bad id is a usage error: {}", run.stderr);
    h.stop().await;
}
