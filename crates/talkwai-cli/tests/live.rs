//! `talkwai query`, `talkwai presence` and `talkwai rooms watch` run as processes against a
//! real nats-server (and PostgreSQL for queries), with the command service, the projector, the
//! query service and the notifier running in this process as each test needs.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Harness, PLATFORM, Run, SECRET, task_body, world};
use serde_json::{Value, json};
use talkwai_auth::TokenVerifier;
use talkwai_testkit::Postgres;
use talkwai_testkit::wait;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use uuid::Uuid;

/// Waits until `service` answers `$SRV.PING` and, for the query and presence services, until
/// a real endpoint answers (`$SRV.PING` answers before the endpoints are subscribed).
async fn wait_for(h: &Harness, service: &str) {
    wait::wait_for_instances(&h.client, service, 1)
        .await
        .unwrap_or_else(|e| panic!("{service} never answered $SRV.PING: {e}"));
    let probe = match service {
        "talkwai-query" => Some(talkwai_testkit::services::QUERY_PROBE_SUBJECT),
        "talkwai-presence" => Some("talkwai.room.probe.probe.presence.get"),
        _ => None,
    };
    if let Some(subject) = probe {
        wait::wait_for_endpoint(&h.client, subject, "")
            .await
            .unwrap_or_else(|e| panic!("{subject} never answered: {e}"));
    }
}

/// The projector and the query service (as `talkwai up` runs them) on a fresh database;
/// returns PostgreSQL, which must outlive the test.
async fn start_queries(h: &Harness) -> Postgres {
    let pg = Postgres::start()
        .await
        .unwrap_or_else(|e| panic!("postgres does not start: {e}"));
    let db = pg
        .create_unique_database("cli_query")
        .await
        .unwrap_or_else(|e| panic!("cannot create a database: {e}"));
    let projector = talkwai_projector::Projector::build(talkwai_projector::Config::for_tests(
        &h.server.url(),
        &db,
    ))
    .await
    .unwrap_or_else(|e| panic!("projector does not build: {e}"));
    let verifier = TokenVerifier::new(
        Some(PLATFORM.to_owned().into()),
        Some(SECRET.to_owned().into()),
        None,
        None,
    );
    let queries = talkwai_query::QueryService::new(projector.pool().clone(), verifier);
    let client = projector.store().client().clone();
    tokio::spawn(async move { queries.run(client, std::future::pending()).await });
    tokio::spawn(async move { projector.run(std::future::pending()).await });
    wait_for(h, "talkwai-query").await;
    pg
}

/// The notifier, with presence entries living `presence_ttl_secs`.
async fn start_notifier(h: &Harness, presence_ttl_secs: u64) {
    let mut config = talkwai_notifier::Config::for_tests(&h.server.url(), PLATFORM, SECRET);
    config.presence_ttl_secs = presence_ttl_secs;
    let notifier = talkwai_notifier::Notifier::build(config)
        .await
        .unwrap_or_else(|e| panic!("notifier does not build: {e}"));
    tokio::spawn(async move { notifier.run(std::future::pending()).await });
    wait_for(h, "talkwai-presence").await;
}

/// A running `talkwai rooms watch`, subscribed (it said so on stderr).
struct Watch {
    child: tokio::process::Child,
    args: Vec<String>,
}

impl Watch {
    async fn start(h: &Harness, args: &[&str]) -> Self {
        let mut all = vec!["rooms", "watch"];
        all.extend_from_slice(args);
        let mut child = common::talkwai()
            .env("TALKWAI_NATS_URL", h.server.url())
            .args(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start talkwai rooms watch: {e}"));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("no stderr pipe"));
        let mut lines = BufReader::new(stderr).lines();
        let subscribed = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("watching") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            subscribed,
            Ok(true),
            "talkwai {all:?} never said it was watching"
        );
        Self {
            child,
            args: all.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Waits for the process to exit on its own (`--count`); returns what it printed.
    async fn finish(self) -> Run {
        let output = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("talkwai {:?} did not exit within 60s", self.args))
            .unwrap_or_else(|e| panic!("waiting for talkwai {:?}: {e}", self.args));
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Run::from_output(&args, output)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn query_prints_the_answer_and_exits_one_when_refused() {
    let h = Harness::start().await;
    let _pg = start_queries(&h).await;
    let w = world(&h).await;
    let task = Uuid::new_v4();
    let created = h
        .ok(
            &format!("{}.task.create", w.tenant),
            task_body(task),
            &w.owner_token,
        )
        .await;
    let seq = created["seq"].as_u64().unwrap_or_else(|| panic!("no seq"));
    let token = [("TALKWAI_TOKEN", w.owner_token.as_str())];

    // A member token picks its tenant's subject; --min-seq reads the write just made.
    let query = json!({"tasks": {"$": {"where": {"id": task}}}}).to_string();
    let min_seq = seq.to_string();
    let run = h
        .run(&["query", &query, "--min-seq", &min_seq], &token)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer = run.json();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["data"]["tasks"][0]["id"], json!(task), "{answer}");
    assert_eq!(answer["data"]["tasks"][0]["status"], "pending", "{answer}");
    assert!(answer["seq"].as_u64() >= Some(seq), "{answer}");

    // `@file` bodies, and the request form with its own minSeq.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("query.json");
    let request = json!({"query": {"tenants": {"tasks": {}}}, "minSeq": seq});
    std::fs::write(&file, request.to_string()).unwrap_or_else(|e| panic!("write: {e}"));
    let at_file = format!("@{}", file.display());
    let run = h.run(&["query", &at_file], &token).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer = run.json();
    assert_eq!(answer["data"]["tenants"][0]["id"], json!(w.tenant));
    assert_eq!(answer["data"]["tenants"][0]["tasks"][0]["id"], json!(task));

    // A typed refusal prints the reply and exits 1 with the code on stderr.
    let run = h.run(&["query", r#"{"nope": {}}"#], &token).await;
    assert_eq!(run.code, 1, "a refused query exits 1");
    assert_eq!(run.json()["ok"], false);
    assert_eq!(run.json()["error"]["code"], "validation_failed");
    assert!(
        run.stderr.contains("query refused") && run.stderr.contains("validation_failed"),
        "stderr must name the code: {}",
        run.stderr
    );

    // Another tenant's data is forbidden to a member.
    let other = Uuid::new_v4().to_string();
    let run = h
        .run(&["query", r#"{"tasks": {}}"#, "--tenant", &other], &token)
        .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["error"]["code"], "forbidden", "{}", run.stdout);

    // The platform token has no tenant claim: --tenant is required (usage, exit 2), and
    // `--tenant platform` reads every tenant.
    let platform = [("TALKWAI_TOKEN", PLATFORM)];
    let run = h.run(&["query", r#"{"tenants": {}}"#], &platform).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = h
        .run(
            &["query", r#"{"tenants": {}}"#, "--tenant", "platform"],
            &platform,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ids: Vec<Value> = run.json()["data"]["tenants"]
        .as_array()
        .map(|ts| ts.iter().map(|t| t["id"].clone()).collect())
        .unwrap_or_default();
    assert!(ids.contains(&json!(w.tenant)), "{ids:?}");

    // No token: unauthenticated.
    let tenant = w.tenant.to_string();
    let run = h
        .run(&["query", r#"{"tasks": {}}"#, "--tenant", &tenant], &[])
        .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["error"]["code"], "unauthenticated");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_watch_prints_the_task_updates_of_a_created_and_started_task() {
    let h = Harness::start().await;
    let w = world(&h).await;
    start_notifier(&h, 15).await;
    let tenant = w.tenant.to_string();
    let watch = Watch::start(&h, &["tenant", &tenant, "--count", "2", "--json"]).await;

    let task = Uuid::new_v4();
    let subject = format!("{tenant}.task");
    h.ok(
        &format!("{subject}.create"),
        task_body(task),
        &w.owner_token,
    )
    .await;
    h.ok(
        &format!("{subject}.start"),
        json!({"id": task}),
        &w.owner_token,
    )
    .await;

    let run = watch.finish().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "--count 2 prints two lines: {}", run.stdout);
    for (line, (action, status)) in lines
        .iter()
        .zip([("created", "pending"), ("started", "in_progress")])
    {
        assert_eq!(line["subject"], "topic.taskUpdates", "{line}");
        assert_eq!(line["data"]["taskId"], json!(task), "{line}");
        assert_eq!(line["data"]["action"], action, "{line}");
        assert_eq!(line["data"]["status"], status, "{line}");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    // Rooms off the scheme are usage errors.
    let run = h.run(&["rooms", "watch", "tenant", "acme"], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_lists_a_joined_peer() {
    let h = Harness::start().await;
    let w = world(&h).await;
    start_notifier(&h, 60).await;
    let tenant = w.tenant.to_string();
    let token = [("TALKWAI_TOKEN", w.owner_token.as_str())];

    let run = h.run(&["presence", "tenant", &tenant], &token).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("no peers"), "{}", run.stdout);

    // The join is announced on the room's presence events (text lines this time).
    let watch = Watch::start(&h, &["tenant", &tenant, "--count", "1"]).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Authorization",
        format!("Bearer {}", w.owner_token).as_str(),
    );
    let reply = h
        .client
        .request_with_headers(
            format!("talkwai.room.tenant.{tenant}.presence.join"),
            headers,
            json!({"sessionId": "tab-1", "data": {"page": "dashboard"}})
                .to_string()
                .into(),
        )
        .await
        .unwrap_or_else(|e| panic!("presence join: {e}"));
    let reply: Value =
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("join reply: {e}"));
    assert_eq!(reply["ok"], true, "{reply}");

    let run = h.run(&["presence", "tenant", &tenant], &token).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("1 peer in tenant"), "{}", run.stdout);
    let peer = run
        .stdout
        .lines()
        .find(|l| l.starts_with("tab-1"))
        .unwrap_or_else(|| panic!("no line for tab-1: {}", run.stdout));
    assert!(
        peer.contains("member") && peer.contains(r#"{"page":"dashboard"}"#),
        "{peer}"
    );

    let run = h
        .run(&["presence", "tenant", &tenant, "--json"], &token)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["peers"][0]["sessionId"], "tab-1");
    assert_eq!(run.json()["peers"][0]["data"]["page"], "dashboard");

    let announced = watch.finish().await;
    assert_eq!(announced.code, 0, "{}", announced.stderr);
    let line = announced.stdout.trim();
    assert!(
        line.contains("  presence.events  ") && line.contains(r#""sessionId":"tab-1""#),
        "{line}"
    );

    // A member of another tenant is refused (exit 1); a bad room is a usage error.
    let other = Uuid::new_v4().to_string();
    let run = h.run(&["presence", "tenant", &other], &token).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("presence refused") && run.stderr.contains("forbidden"),
        "{}",
        run.stderr
    );
    let run = h.run(&["presence", "admin", "elsewhere"], &token).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    h.stop().await;
}
