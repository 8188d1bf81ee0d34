//! Healing: the notifier recreates its in-memory presence bucket and its consumers when they
//! are gone (a nats-server restart, a consumer deleted by hand), without being restarted, and
//! reports not-ready while they are missing.

mod common;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use common::{Harness, collect, world};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::{Event, EventBody};
use talkwai_eventstore::{AppendRequest, AppenderConfig, EventStore, Outbound, StreamSettings};
use talkwai_notifier::heal::Upkeep;
use talkwai_notifier::{Notifier, announce, events, presence};
use uuid::Uuid;

/// A presence request; `None` when no reply came (the service is not reachable yet).
async fn try_presence(h: &Harness, subject: &str, body: Value, token: &str) -> Option<Value> {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        h.client.request_with_headers(
            subject.to_owned(),
            headers,
            serde_json::to_vec(&body).expect("json").into(),
        ),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// Receives presence events until one for `session` with `op` arrives; panics after `within`.
async fn wait_announced(
    sub: &mut async_nats::Subscriber,
    session: &str,
    op: &str,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(message)) => {
                let event: Value = serde_json::from_slice(&message.payload).expect("json");
                if event["sessionId"] == session && event["op"] == op {
                    return;
                }
                seen.push(event);
            }
            _ => panic!("no {op} of {session} announced within {within:?}; saw {seen:?}"),
        }
    }
}

/// Waits until every readiness check passes; panics with the checks after `within`.
async fn wait_ready(readiness: &talkwai_telemetry::ops::Readiness, within: Duration) {
    let started = Instant::now();
    loop {
        let checks = readiness.evaluate().await;
        if checks.iter().all(|c| c.ok) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "not ready within {within:?}: {checks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends a `task.created` event in `tenant` straight to the log.
async fn append_task(store: &EventStore, tenant: Uuid) -> Uuid {
    let task = Uuid::new_v4();
    let body: EventBody = serde_json::from_value(json!({"type": "task.created", "version": 1,
        "data": {"at": 1_751_360_400_000i64, "type": "call", "status": "pending",
            "priority": "high", "fromAddress": "+15550001111", "toAddress": "+15550002222",
            "subject": "healed", "content": null, "metadata": null, "scheduledAt": null,
            "agent": null, "assignedTo": null, "createdBy": null, "createdByAdmin": null}}))
    .expect("an event body");
    let body = Event::decode(&body).expect("decodes").encode();
    let h = talkwai_testkit::services::lone_event_headers(
        &body,
        tenant,
        talkwai_notifier::events::now_ms(),
    );
    let appender = store.appender(AppenderConfig::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let appended = appender
            .append(AppendRequest {
                messages: vec![Outbound {
                    subject: format!("talkwai.evt.{tenant}.task.{task}"),
                    headers: h.clone(),
                    payload: serde_json::to_vec(&body).expect("json").into(),
                    expected_last_subject_seq: None,
                }],
                dedupe_id: None,
                claim_first: false,
            })
            .await;
        match appended {
            Ok(_) => return task,
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot append: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_notifications_work_again_after_a_nats_restart() {
    let mut h = Harness::start().await;
    let w = world(&h).await;
    let t = w.tenant;
    let room = |op: &str| format!("talkwai.room.tenant.{t}.presence.{op}");
    let notifier = Notifier::build(h.notifier_config())
        .await
        .expect("notifier builds");
    let readiness = notifier.readiness();
    let _running = tokio::spawn(notifier.run(std::future::pending::<()>()));
    wait_ready(&readiness, Duration::from_secs(10)).await;
    let mut announced = h.client.subscribe(room("events")).await.expect("subscribe");
    let mut updates = h
        .client
        .subscribe(format!("talkwai.room.tenant.{t}.topic.taskUpdates"))
        .await
        .expect("subscribe");
    let join = try_presence(
        &h,
        &room("join"),
        json!({"sessionId": "before"}),
        &w.owner_token,
    )
    .await
    .expect("a reply");
    assert_eq!(join["ok"], true, "{join}");
    wait_announced(&mut announced, "before", "join", Duration::from_secs(10)).await;

    h.server.restart().await.expect("nats-server restarts");
    let restarted = Instant::now();

    // The first join that reaches the notifier works: the bucket is recreated on the way.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut replies = Vec::new();
    loop {
        let reply = try_presence(
            &h,
            &room("join"),
            json!({"sessionId": "after"}),
            &w.owner_token,
        )
        .await;
        if reply.as_ref().is_some_and(|r| r["ok"] == true) {
            break;
        }
        replies.push(reply);
        assert!(
            Instant::now() < deadline,
            "join never worked again after the restart: {replies:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "join works again {:?} after the restart ({} failed tries: {replies:?})",
        restarted.elapsed(),
        replies.len()
    );
    assert!(
        replies
            .iter()
            .flatten()
            .all(|r| r["error"]["code"] != "unavailable"),
        "a request that reached the notifier healed the bucket instead of answering unavailable: {replies:?}"
    );
    wait_announced(&mut announced, "after", "join", Duration::from_secs(10)).await;
    let update = try_presence(
        &h,
        &room("update"),
        json!({"sessionId": "after", "data": {"typing": true}}),
        &w.owner_token,
    )
    .await
    .expect("a reply");
    assert_eq!(update["ok"], true, "{update}");
    wait_announced(&mut announced, "after", "update", Duration::from_secs(10)).await;
    // The session from before the restart went with the bucket: join again.
    let lost = try_presence(
        &h,
        &room("heartbeat"),
        json!({"sessionId": "before"}),
        &w.owner_token,
    )
    .await
    .expect("a reply");
    assert_eq!(lost["error"]["code"], "not_found", "{lost}");
    let peers = try_presence(&h, &room("get"), json!({}), &w.owner_token)
        .await
        .expect("a reply");
    assert_eq!(peers["peers"].as_array().map(Vec::len), Some(1), "{peers}");

    // The event consumer (file storage) survived: new events are still notified.
    let store = EventStore::open(h.client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let task = append_task(&store, t).await;
    let got = collect(&mut updates, 1, Duration::from_secs(15)).await;
    assert_eq!(
        got.first().map(|u| u["taskId"].clone()),
        Some(json!(task)),
        "{got:?}"
    );
    wait_ready(&readiness, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_bucket_or_a_consumer_is_missing() {
    let h = Harness::start().await;
    let config = h.notifier_config();
    let store = EventStore::open(h.client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let upkeep = Upkeep::new(store.clone(), config);
    let failing = |checks: &[talkwai_telemetry::ops::Check]| -> Vec<&'static str> {
        checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    };
    assert_eq!(
        failing(&upkeep.checks().await),
        ["presence", "events"],
        "nothing created yet"
    );
    upkeep.ensure_presence().await.expect("presence created");
    upkeep
        .ensure_events()
        .await
        .expect("event consumer created");
    assert!(failing(&upkeep.checks().await).is_empty());

    // The bucket goes (as with a nats-server restart): not ready until recreated.
    let js = store.jetstream();
    js.delete_stream(format!("KV_{}", presence::BUCKET))
        .await
        .expect("delete the bucket");
    let checks = upkeep.checks().await;
    assert_eq!(failing(&checks), ["presence"], "{checks:?}");
    upkeep.ensure_presence().await.expect("presence recreated");
    assert!(failing(&upkeep.checks().await).is_empty());
    let bucket = js
        .get_stream(format!("KV_{}", presence::BUCKET))
        .await
        .expect("the bucket");
    bucket
        .consumer_info(announce::CONSUMER)
        .await
        .expect("the announcer consumer is back");

    // The event consumer goes: not ready until recreated.
    js.get_stream(store.stream_name())
        .await
        .expect("event stream")
        .delete_consumer(events::CONSUMER)
        .await
        .expect("delete the consumer");
    assert_eq!(failing(&upkeep.checks().await), ["events"]);
    upkeep
        .ensure_events()
        .await
        .expect("event consumer recreated");
    assert!(failing(&upkeep.checks().await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_notifier_recreates_consumers_deleted_under_it() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let t = w.tenant;
    let notifier = Notifier::build(h.notifier_config())
        .await
        .expect("notifier builds");
    let readiness = notifier.readiness();
    let _running = tokio::spawn(notifier.run(std::future::pending::<()>()));
    wait_ready(&readiness, Duration::from_secs(10)).await;
    let mut announced = h
        .client
        .subscribe(format!("talkwai.room.tenant.{t}.presence.events"))
        .await
        .expect("subscribe");
    let mut updates = h
        .client
        .subscribe(format!("talkwai.room.tenant.{t}.topic.taskUpdates"))
        .await
        .expect("subscribe");
    let js = async_nats::jetstream::new(h.client.clone());
    let store = EventStore::open(h.client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    js.get_stream(store.stream_name())
        .await
        .expect("event stream")
        .delete_consumer(events::CONSUMER)
        .await
        .expect("delete the event consumer");
    js.get_stream(format!("KV_{}", presence::BUCKET))
        .await
        .expect("bucket")
        .delete_consumer(announce::CONSUMER)
        .await
        .expect("delete the announcer consumer");
    wait_ready(&readiness, Duration::from_secs(15)).await;

    let task = append_task(&store, t).await;
    let got = collect(&mut updates, 1, Duration::from_secs(15)).await;
    assert_eq!(
        got.first().map(|u| u["taskId"].clone()),
        Some(json!(task)),
        "{got:?}"
    );
    let join = try_presence(
        &h,
        &format!("talkwai.room.tenant.{t}.presence.join"),
        json!({"sessionId": "s1"}),
        &w.owner_token,
    )
    .await
    .expect("a reply");
    assert_eq!(join["ok"], true, "{join}");
    wait_announced(&mut announced, "s1", "join", Duration::from_secs(10)).await;
}

/// Waits until every liveness check is `live`; returns how long it took, panics after `within`.
async fn wait_live(
    liveness: &talkwai_telemetry::ops::Liveness,
    live: bool,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let checks = liveness.evaluate();
        if checks.iter().all(|c| c.ok) == live {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "liveness not {live} within {within:?}: {checks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_fails_while_the_notifier_cannot_read_and_returns_when_it_can() {
    let mut h = Harness::start().await;
    let mut config = h.notifier_config();
    config.liveness_secs = 2;
    let notifier = Notifier::build(config).await.expect("notifier builds");
    let liveness = notifier.liveness();
    let readiness = notifier.readiness();
    let _running = tokio::spawn(notifier.run(std::future::pending::<()>()));
    wait_ready(&readiness, Duration::from_secs(10)).await;
    assert_eq!(
        liveness
            .evaluate()
            .iter()
            .map(|c| (c.name, c.ok))
            .collect::<Vec<_>>(),
        [("events", true), ("presence", true)]
    );

    h.server.stop().await.expect("nats-server stops");
    let failed = wait_live(&liveness, false, Duration::from_secs(20)).await;
    assert!(
        failed >= Duration::from_secs(1),
        "live for the grace period first ({failed:?})"
    );
    h.server.restart().await.expect("nats-server starts again");
    wait_live(&liveness, true, Duration::from_secs(20)).await;
    // No presence request came: the announcer found its consumer gone and recreated it.
    wait_ready(&readiness, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_request_that_finds_the_bucket_gone_recreates_it_and_succeeds() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let config = h.notifier_config();
    let store = EventStore::open(h.client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let upkeep = Upkeep::new(store.clone(), config);
    upkeep.ensure_presence().await.expect("presence created");
    let js = store.jetstream();
    let kv = js
        .get_key_value(presence::BUCKET)
        .await
        .expect("the bucket");
    let verifier = talkwai_auth::TokenVerifier::new(
        None,
        Some(secrecy::SecretString::from(common::SECRET)),
        None,
        None,
    );
    let service =
        presence::PresenceService::new(h.client.clone(), kv, verifier, Duration::from_secs(5));
    let healing = presence::PresenceService::new(
        h.client.clone(),
        js.get_key_value(presence::BUCKET)
            .await
            .expect("the bucket"),
        talkwai_auth::TokenVerifier::new(
            None,
            Some(secrecy::SecretString::from(common::SECRET)),
            None,
            None,
        ),
        Duration::from_secs(5),
    )
    .healing(upkeep.clone());
    let subject = format!("talkwai.room.tenant.{}.presence.join", w.tenant);
    let mut headers = HeaderMap::new();
    headers.insert(
        "Authorization",
        format!("Bearer {}", w.owner_token).as_str(),
    );
    let body = serde_json::to_vec(&json!({"sessionId": "s1"})).expect("json");

    js.delete_stream(format!("KV_{}", presence::BUCKET))
        .await
        .expect("delete the bucket");
    let plain = service.handle(&subject, Some(&headers), &body).await;
    assert_eq!(
        plain.error.as_ref().map(|e| e.code),
        Some(talkwai_domain::ErrorCode::Unavailable),
        "without upkeep the request fails: {plain:?}"
    );
    let healed = healing.handle(&subject, Some(&headers), &body).await;
    assert!(healed.ok, "{healed:?}");
    assert_eq!(healed.peers.as_ref().map(Vec::len), Some(1), "{healed:?}");
    assert!(
        upkeep
            .checks()
            .await
            .iter()
            .any(|c| c.name == "presence" && c.ok),
        "the bucket and the announcer consumer are back"
    );
}
