//! `talkwai cmd`, `events` and `token` run as a process against a real nats-server and the
//! command service in this process.

mod common;

use common::{Harness, PLATFORM, SECRET, task_body, world};
use serde_json::{Value, json};
use talkwai_auth::{Principal, PrincipalKind, TokenVerifier};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn cmd_prints_the_reply_and_exits_zero_when_accepted() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let task = Uuid::new_v4();
    let reply = h
        .ok(
            &format!("talkwai.cmd.{}.task.create", w.tenant),
            task_body(task),
            &w.owner_token,
        )
        .await;
    assert_eq!(reply["ok"], json!(true), "reply: {reply}");
    assert_eq!(reply["id"], json!(task));
    assert_eq!(reply["version"], json!(1));
    assert_eq!(reply["events"][0]["type"], json!("task.created"));
    assert_eq!(reply["events"][0]["data"]["createdBy"], json!(w.owner));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cmd_exits_one_with_the_typed_error_when_rejected() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let subject = format!("{}.task.create", w.tenant);
    let task = Uuid::new_v4();
    h.ok(&subject, task_body(task), &w.owner_token).await;

    // A second create of the same id under a new command id: already_exists.
    let dup = h.cmd(&subject, &task_body(task), &w.owner_token).await;
    assert_eq!(dup.code, 1, "a rejection must exit 1");
    assert_eq!(dup.json()["error"]["code"], json!("already_exists"));
    assert!(
        dup.stderr.contains("already_exists"),
        "stderr must name the code: {}",
        dup.stderr
    );

    // No token at all: unauthenticated.
    let body = task_body(Uuid::new_v4()).to_string();
    let anonymous = h.run(&["cmd", &subject, &body], &[]).await;
    assert_eq!(anonymous.code, 1);
    assert_eq!(anonymous.json()["error"]["code"], json!("unauthenticated"));

    // Invalid input never leaves the process: exit 2.
    let bad_json = h
        .run(
            &["cmd", &subject, "{nope"],
            &[("TALKWAI_TOKEN", &w.owner_token)],
        )
        .await;
    assert_eq!(bad_json.code, 2, "invalid JSON is a usage error");
    let bad_subject = h
        .run(&["cmd", "talkwai.cmd.acme.task.create", "{}"], &[])
        .await;
    assert_eq!(
        bad_subject.code, 2,
        "a subject off the scheme is a usage error"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cmd_with_a_given_command_id_is_applied_once() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let subject = format!("{}.task.create", w.tenant);
    let body = task_body(Uuid::new_v4()).to_string();
    let command_id = Uuid::new_v4().to_string();
    let args = [
        "cmd",
        subject.as_str(),
        body.as_str(),
        "--command-id",
        &command_id,
    ];
    let env = [("TALKWAI_TOKEN", w.owner_token.as_str())];
    let first = h.run(&args, &env).await;
    assert_eq!(first.code, 0);
    let head = h.stream_head().await;
    let again = h.run(&args, &env).await;
    assert_eq!(again.code, 0, "a retried command id gets its first answer");
    assert_eq!(first.json()["seq"], again.json()["seq"]);
    assert_eq!(h.stream_head().await, head, "a retry must not append again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cmd_without_a_service_gives_up_after_bounded_retries() {
    let server = talkwai_testkit::NatsServer::start()
        .await
        .unwrap_or_else(|e| panic!("nats-server does not start: {e}"));
    let tenant = Uuid::new_v4();
    let subject = format!("{tenant}.task.create");
    let body = task_body(Uuid::new_v4()).to_string();
    let args = [
        "cmd",
        subject.as_str(),
        body.as_str(),
        "--attempts",
        "2",
        "--timeout",
        "200ms",
    ];
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", server.url())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 3, "no responder is an operational failure");
    assert!(
        run.stderr.contains("after 2 attempts"),
        "stderr must say how often it tried: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_tail_prints_the_log_up_to_the_head() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let task = Uuid::new_v4();
    let t = w.tenant.to_string();
    h.ok(&format!("{t}.task.create"), task_body(task), &w.owner_token)
        .await;
    h.ok(
        &format!("{t}.task.start"),
        json!({"id": task}),
        &w.owner_token,
    )
    .await;

    let all = h
        .run(&["events", "tail", "--no-follow", "--from-seq", "1"], &[])
        .await;
    assert_eq!(all.code, 0);
    for expected in [
        "tenant.created",
        "user.created",
        "member.created",
        "task.created",
        "task.started",
    ] {
        assert!(
            all.stdout.contains(expected),
            "tail lacks {expected}:\n{}",
            all.stdout
        );
    }
    let head = h.stream_head().await;
    assert!(
        all.stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&head.to_string())),
        "tail must reach the head {head}"
    );

    // One tenant's task events, as JSON lines.
    let tasks = h
        .run(
            &[
                "events", "tail", "--tenant", &t, "--type", "task.*", "--json",
            ],
            &[],
        )
        .await;
    assert_eq!(tasks.code, 0);
    let lines: Vec<Value> = tasks
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types, ["task.created", "task.started"]);
    assert!(lines[1]["data"]["at"].is_number(), "data is the event data");
    assert!(
        lines[0]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("member:"))
    );
    assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        lines[0]["commandId"]
            .as_str()
            .is_some_and(|c| c.parse::<Uuid>().is_ok())
    );

    // The default window is the newest 20 events; --last narrows it. (In the tenant's part
    // of the log: the command service writes partition-owner records on the platform's
    // subjects whenever it takes a partition, which may be after the task started.)
    let last = h
        .run(&["events", "tail", "--tenant", &t, "--last", "1"], &[])
        .await;
    assert_eq!(last.stdout.lines().count(), 1, "--last 1 prints one event");
    assert!(last.stdout.contains("task.started"));

    // A tenant with no events: nothing, and no waiting.
    let other = Uuid::new_v4().to_string();
    let empty = h.run(&["events", "tail", "--tenant", &other], &[]).await;
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_show_prints_the_history_and_the_folded_version() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let t = w.tenant.to_string();
    let task = Uuid::new_v4();
    h.ok(&format!("{t}.task.create"), task_body(task), &w.owner_token)
        .await;
    for action in ["start", "complete"] {
        h.ok(
            &format!("{t}.task.{action}"),
            json!({"id": task}),
            &w.owner_token,
        )
        .await;
    }
    let target = format!("task/{task}");
    let shown = h
        .run(&["events", "show", &target, "--tenant", &t], &[])
        .await;
    assert_eq!(shown.code, 0);
    let order: Vec<usize> = ["task.created", "task.started", "task.completed"]
        .iter()
        .map(|ty| {
            shown
                .stdout
                .find(ty)
                .unwrap_or_else(|| panic!("history lacks {ty}:\n{}", shown.stdout))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "events out of order");
    assert!(
        shown.stdout.contains("version 3 (live)"),
        "the folded version is missing:\n{}",
        shown.stdout
    );

    let json = h
        .run(&["events", "show", &target, "--tenant", &t, "--json"], &[])
        .await
        .json();
    assert_eq!(json["version"], json!(3));
    assert_eq!(json["events"].as_array().map(Vec::len), Some(3));

    // Nothing recorded: exit 1; a task without --tenant: exit 2.
    let unknown = format!("task/{}", Uuid::new_v4());
    assert_eq!(
        h.run(&["events", "show", &unknown, "--tenant", &t], &[])
            .await
            .code,
        1
    );
    assert_eq!(h.run(&["events", "show", &target], &[]).await.code, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_show_reports_a_corrupt_history() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let t = w.tenant.to_string();
    // A task that "starts" without ever being created: written behind the service's back.
    let task = Uuid::new_v4();
    let js = async_nats::jetstream::new(h.client.clone());
    let body = json!({"type": "task.started", "version": 1, "data": {"at": 1}});
    js.publish(
        format!("talkwai.evt.{t}.task.{task}"),
        body.to_string().into(),
    )
    .await
    .unwrap_or_else(|e| panic!("publish: {e}"))
    .await
    .unwrap_or_else(|e| panic!("publish ack: {e}"));
    let target = format!("task/{task}");
    let shown = h
        .run(&["events", "show", &target, "--tenant", &t], &[])
        .await;
    assert_eq!(shown.code, 3, "a corrupt history is an operational failure");
    assert!(
        shown.stdout.contains("task.started"),
        "the event is still listed"
    );
    assert!(
        shown.stderr.contains("corrupt history") && shown.stderr.contains("does not exist"),
        "stderr must say what is wrong: {}",
        shown.stderr
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mint_produces_tokens_the_verifier_accepts() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let user = Uuid::new_v4().to_string();
    let t = w.tenant.to_string();
    let minted = h
        .run(
            &[
                "token", "mint", "--kind", "member", "--sub", &user, "--tenant", &t, "--role",
                "owner", "--ttl", "15m",
            ],
            &[("TALKWAI_JWT_SECRET", SECRET)],
        )
        .await;
    assert_eq!(minted.code, 0);
    assert!(
        !minted.stdout.contains(SECRET),
        "the secret must never be printed"
    );
    let token = minted.stdout.trim();
    let verifier = TokenVerifier::new(
        Some(secrecy::SecretString::from(PLATFORM)),
        Some(secrecy::SecretString::from(SECRET)),
        None,
        None,
    );
    match verifier.verify(token) {
        Ok(Principal::User(claims)) => {
            assert_eq!(claims.kind, PrincipalKind::Member);
            assert_eq!(claims.sub.to_string(), user);
            assert_eq!(claims.tenant.map(|t| t.to_string()), Some(t.clone()));
            assert_eq!(claims.role.as_deref(), Some("owner"));
            let ttl = claims.exp.saturating_sub(talkwai_auth::now_secs());
            assert!((800..=900).contains(&ttl), "ttl of 15m, got {ttl}s");
        }
        other => panic!("the minted token was refused: {other:?}"),
    }

    // The admin kind, and the mistakes that are usage errors.
    let admin = h
        .run(
            &["token", "mint", "--kind", "admin", "--sub", &user],
            &[("TALKWAI_JWT_SECRET", SECRET)],
        )
        .await;
    assert_eq!(admin.code, 0);
    assert!(verifier.verify(admin.stdout.trim()).is_ok());
    let no_secret = h
        .run(&["token", "mint", "--kind", "admin", "--sub", &user], &[])
        .await;
    assert_eq!(no_secret.code, 2);
    assert!(no_secret.stderr.contains("TALKWAI_JWT_SECRET"));
    let no_tenant = h
        .run(
            &["token", "mint", "--kind", "member", "--sub", &user],
            &[("TALKWAI_JWT_SECRET", SECRET)],
        )
        .await;
    assert_eq!(no_tenant.code, 2);
    h.stop().await;
}
