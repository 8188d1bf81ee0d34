//! The notifier against a real nats-server, with the command service in process.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_task_lifecycle_is_notified_once_per_event_in_order_in_its_tenant_only() {
    let h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await;
    let a = world(&h).await;
    let b = world(&h).await;
    let (assignee, _) = member(&h, a.tenant, "user").await;
    let mut updates = h
        .client
        .subscribe(format!(
            "talkwai.room.tenant.{}.topic.taskUpdates",
            a.tenant
        ))
        .await
        .expect("sub");
    let mut other = h
        .client
        .subscribe(format!("talkwai.room.tenant.{}.topic.>", b.tenant))
        .await
        .expect("sub");
    let mut inbox = h
        .client
        .subscribe(format!(
            "talkwai.room.tenant.{}.topic.notifications.{assignee}",
            a.tenant
        ))
        .await
        .expect("sub");

    let t = a.tenant;
    let task = Uuid::new_v4();
    let tok = a.owner_token.as_str();
    let mut seqs = vec![
        h.ok(
            &format!("talkwai.cmd.{t}.task.create"),
            json!({"id": task, "type": "call", "fromAddress": "+15550001111",
                   "toAddress": "+15550002222", "assignedTo": assignee}),
            tok,
        )
        .await
        .seq,
    ];
    for (action, body) in [
        ("start", json!({"id": task})),
        ("fail", json!({"id": task, "reason": "no answer"})),
        ("retry", json!({"id": task})),
        ("update", json!({"id": task, "subject": "Call back"})),
        ("start", json!({"id": task})),
        ("complete", json!({"id": task})),
    ] {
        seqs.push(
            h.ok(&format!("talkwai.cmd.{t}.task.{action}"), body, tok)
                .await
                .seq,
        );
    }

    let got = collect(&mut updates, 7, WAIT).await;
    let extra = collect(&mut updates, 1, Duration::from_millis(500)).await;
    assert!(extra.is_empty(), "one message per event: {extra:?}");
    let summary: Vec<(String, Value)> = got
        .iter()
        .map(|u| {
            (
                u["action"].as_str().expect("action").to_owned(),
                u["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("created".into(), json!("pending")),
            ("started".into(), json!("in_progress")),
            ("failed".into(), json!("failed")),
            ("retried".into(), json!("pending")),
            ("updated".into(), json!("pending")),
            ("started".into(), json!("in_progress")),
            ("completed".into(), json!("completed")),
        ]
    );
    let got_seqs: Vec<u64> = got
        .iter()
        .map(|u| u["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got_seqs, seqs, "in log order, with the event's sequence");
    for u in &got {
        assert_eq!(u["taskId"], json!(task));
        assert_eq!(u["userId"], json!(a.owner), "the acting member");
        assert!(u["timestamp"].as_i64().expect("timestamp") > 0);
    }
    let notes = collect(&mut inbox, 2, Duration::from_secs(2)).await;
    assert_eq!(
        notes.len(),
        1,
        "only the assignment concerns the assignee: {notes:?}"
    );
    assert_eq!(notes[0]["kind"], "taskAssigned");
    assert_eq!(notes[0]["taskId"], json!(task));
    assert_eq!(notes[0]["memberId"], json!(assignee));
    assert!(
        collect(&mut other, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "another tenant's room hears nothing"
    );
}

#[tokio::test]
async fn the_creator_is_notified_when_someone_else_completes_or_fails_their_task() {
    let h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await;
    let a = world(&h).await;
    let (manager, manager_user) = member(&h, a.tenant, "manager").await;
    let manager_token = member_token(manager_user, a.tenant);
    let t = a.tenant;
    let mut inbox = h
        .client
        .subscribe(format!(
            "talkwai.room.tenant.{t}.topic.notifications.{}",
            a.owner
        ))
        .await
        .expect("sub");
    let mut manager_inbox = h
        .client
        .subscribe(format!(
            "talkwai.room.tenant.{t}.topic.notifications.{manager}"
        ))
        .await
        .expect("sub");
    let task = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{t}.task.create"),
        json!({"id": task, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
        &a.owner_token,
    )
    .await;
    h.ok(
        &format!("talkwai.cmd.{t}.task.assign"),
        json!({"id": task, "assignedTo": manager}),
        &a.owner_token,
    )
    .await;
    h.ok(
        &format!("talkwai.cmd.{t}.task.start"),
        json!({"id": task}),
        &manager_token,
    )
    .await;
    h.ok(
        &format!("talkwai.cmd.{t}.task.fail"),
        json!({"id": task, "reason": "busy"}),
        &manager_token,
    )
    .await;
    let assigned = collect(&mut manager_inbox, 1, WAIT).await;
    assert_eq!(assigned[0]["kind"], "taskAssigned");
    let failed = collect(&mut inbox, 1, WAIT).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["kind"], "taskFailed");
    assert_eq!(failed[0]["reason"], "busy");
    assert_eq!(failed[0]["userId"], json!(manager));
}

#[tokio::test]
async fn a_killed_notifier_restarted_mid_stream_loses_nothing_and_repeats_are_detectable() {
    let h = Harness::start().await;
    let a = world(&h).await;
    let t = a.tenant;
    let mut updates = h
        .client
        .subscribe(format!("talkwai.room.tenant.{t}.topic.taskUpdates"))
        .await
        .expect("sub");
    let first = h.start_notifier(h.notifier_config()).await;

    // Writes keep going while the notifier is killed and restarted.
    let writer = {
        let client = h.client.clone();
        let token = a.owner_token.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..120 {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
                headers.insert("Authorization", format!("Bearer {token}").as_str());
                let body = json!({"id": Uuid::new_v4(), "type": "call",
                    "fromAddress": "+15550001111", "toAddress": "+15550002222"});
                let reply = client
                    .request_with_headers(
                        format!("talkwai.cmd.{t}.task.create"),
                        headers,
                        serde_json::to_vec(&body).expect("json").into(),
                    )
                    .await
                    .expect("request");
                let reply: Value = serde_json::from_slice(&reply.payload).expect("json");
                seqs.push(reply["seq"].as_u64().expect("accepted"));
            }
            seqs
        })
    };
    let before = collect(&mut updates, 30, WAIT).await;
    assert_eq!(before.len(), 30);
    first.abort();
    let _ = first.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _second = h.start_notifier(h.notifier_config()).await;
    let expected: Vec<u64> = writer.await.expect("writer");

    let mut got: Vec<Value> = before;
    let seen_all = |got: &[Value]| {
        let seen: BTreeSet<u64> = got.iter().filter_map(|u| u["seq"].as_u64()).collect();
        expected.iter().all(|s| seen.contains(s))
    };
    // Until every expected update arrived, for at most 30 s (each receive waits up to 1 s, a
    // pause after an empty one); the assertions below say what is missing.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while !seen_all(&got) {
            let more = collect(&mut updates, 1, Duration::from_secs(1)).await;
            if more.is_empty() {
                tokio::time::sleep(talkwai_testkit::wait::PAUSE).await;
            }
            got.extend(more);
        }
    })
    .await;
    got.extend(collect(&mut updates, 10, Duration::from_millis(500)).await);
    let seqs: Vec<u64> = got
        .iter()
        .map(|u| u["seq"].as_u64().expect("seq"))
        .collect();
    let seen: BTreeSet<u64> = seqs.iter().copied().collect();
    for s in &expected {
        assert!(seen.contains(s), "event {s} was never notified");
    }
    // The documented guarantee: at-least-once in log order; a repeat is the same message
    // again (same seq, same body), and only the one in flight at the kill can repeat.
    let mut repeats = 0;
    for pair in got.windows(2) {
        let (x, y) = (pair[0]["seq"].as_u64(), pair[1]["seq"].as_u64());
        assert!(x <= y, "out of order: {x:?} then {y:?}");
        if x == y {
            assert_eq!(pair[0], pair[1], "a repeat is identical");
            repeats += 1;
        }
    }
    assert!(repeats <= 1, "{repeats} repeats");
    assert_eq!(seqs.len() - repeats, expected.len());
}

#[tokio::test]
async fn presence_joins_updates_lists_and_expires_dead_peers_within_the_ttl() {
    let h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await; // TTL 2 s
    let a = world(&h).await;
    let b = world(&h).await;
    let t = a.tenant;
    let (_, other_user) = member(&h, t, "user").await;
    let alice = a.owner_token.clone();
    let bob = member_token(other_user, t);
    let room = |op: &str| format!("talkwai.room.tenant.{t}.presence.{op}");
    let mut events = h.client.subscribe(room("events")).await.expect("sub");

    let joined = h
        .presence(
            &room("join"),
            json!({"sessionId": "alice-1", "data": {"page": "tasks"}}),
            &alice,
        )
        .await;
    assert_eq!(joined["ok"], true, "{joined}");
    assert_eq!(joined["peer"]["userId"], json!(a.owner_user));
    let joined = h
        .presence(
            &room("join"),
            json!({"sessionId": "bob-1", "data": {"page": "home"}}),
            &bob,
        )
        .await;
    assert_eq!(joined["peers"].as_array().expect("peers").len(), 2);
    let updated = h
        .presence(
            &room("update"),
            json!({"sessionId": "alice-1", "data": {"typing": true}}),
            &alice,
        )
        .await;
    assert_eq!(
        updated["peer"]["data"],
        json!({"page": "tasks", "typing": true})
    );

    // Nobody touches another user's session; another tenant's member cannot join.
    let stolen = h
        .presence(&room("leave"), json!({"sessionId": "alice-1"}), &bob)
        .await;
    assert_eq!(stolen["error"]["code"], "forbidden", "{stolen}");
    let foreign = h
        .presence(&room("join"), json!({"sessionId": "eve-1"}), &b.owner_token)
        .await;
    assert_eq!(foreign["error"]["code"], "forbidden", "{foreign}");
    let platform = h.presence(&room("get"), json!({}), PLATFORM).await;
    assert_eq!(platform["ok"], false);
    let too_deep = h
        .presence(
            &room("update"),
            json!({"sessionId": "alice-1", "data": {"a": {"b": {"c": {"d": {}}}}}}),
            &alice,
        )
        .await;
    assert_eq!(too_deep["error"]["code"], "validation_failed", "{too_deep}");

    // Alice heartbeats, Bob goes silent: Bob leaves by expiry within the TTL (plus slack).
    let started = tokio::time::Instant::now();
    let bob_gone = talkwai_testkit::wait::wait_until(
        Duration::from_secs(8),
        Duration::from_millis(500),
        || async {
            let beat = h
                .presence(&room("heartbeat"), json!({"sessionId": "alice-1"}), &alice)
                .await;
            assert_eq!(beat["ok"], true, "{beat}");
            let peers = h.presence(&room("get"), json!({}), &alice).await;
            let ids: Vec<&str> = peers["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .map(|p| p["sessionId"].as_str().expect("id"))
                .collect();
            (ids == ["alice-1"]).then(|| started.elapsed())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("bob expired: {e}"));
    assert!(bob_gone < Duration::from_secs(5), "gone after {bob_gone:?}");

    let announced = collect(&mut events, 4, WAIT).await;
    let ops: Vec<(String, String, Value)> = announced
        .iter()
        .map(|e| {
            (
                e["op"].as_str().expect("op").to_owned(),
                e["sessionId"].as_str().expect("session").to_owned(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("join".into(), "alice-1".into(), Value::Null),
            ("join".into(), "bob-1".into(), Value::Null),
            ("update".into(), "alice-1".into(), Value::Null),
            ("leave".into(), "bob-1".into(), json!("expired")),
        ]
    );
    let left = h
        .presence(&room("leave"), json!({"sessionId": "alice-1"}), &alice)
        .await;
    assert_eq!(left["ok"], true, "{left}");
    let last = collect(&mut events, 1, WAIT).await;
    assert_eq!(last[0]["op"], "leave");
    assert_eq!(last[0]["reason"], "left");
    assert!(
        collect(&mut events, 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "heartbeats are not announced"
    );

    // Admins may join the admin room, members may not.
    let admin = admin_token(Uuid::new_v4());
    let admin_join = h
        .presence(
            "talkwai.room.admin.global.presence.join",
            json!({"sessionId": "ops"}),
            &admin,
        )
        .await;
    assert_eq!(admin_join["ok"], true, "{admin_join}");
    let member_admin = h
        .presence(
            "talkwai.room.admin.global.presence.join",
            json!({"sessionId": "m"}),
            &alice,
        )
        .await;
    assert_eq!(member_admin["error"]["code"], "forbidden");
}

#[tokio::test]
async fn suspensions_failure_spikes_and_vanished_instances_raise_system_alerts() {
    let mut h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await; // spike: 3 failures / 60 s
    let mut alerts = h
        .client
        .subscribe("talkwai.room.admin.global.topic.systemAlerts")
        .await
        .expect("sub");
    let a = world(&h).await;
    let t = a.tenant;
    for _ in 0..3 {
        let task = Uuid::new_v4();
        h.ok(
            &format!("talkwai.cmd.{t}.task.create"),
            json!({"id": task, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
            &a.owner_token,
        )
        .await;
        h.ok(
            &format!("talkwai.cmd.{t}.task.start"),
            json!({"id": task}),
            &a.owner_token,
        )
        .await;
        h.ok(
            &format!("talkwai.cmd.{t}.task.fail"),
            json!({"id": task}),
            &a.owner_token,
        )
        .await;
    }
    let spike = collect(&mut alerts, 1, WAIT).await;
    assert_eq!(spike[0]["kind"], "taskFailureSpike", "{spike:?}");
    assert_eq!(spike[0]["tenantId"], json!(t));
    assert_eq!(spike[0]["details"]["failures"], 3);

    h.ok(
        &format!("talkwai.cmd.{t}.tenant.setStatus"),
        json!({"id": t, "status": "suspended", "reason": "unpaid"}),
        PLATFORM,
    )
    .await;
    let suspended = collect(&mut alerts, 1, WAIT).await;
    assert_eq!(suspended[0]["kind"], "tenantSuspended", "{suspended:?}");
    assert_eq!(suspended[0]["tenantId"], json!(t));
    assert_eq!(suspended[0]["details"]["reason"], "unpaid");
    assert!(suspended[0]["seq"].as_u64().is_some());

    // A second command instance is seen, then stops answering.
    h.add_command_instance("command-1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.stop_command_instance().await;
    let gone = collect(&mut alerts, 1, WAIT).await;
    assert_eq!(gone[0]["kind"], "serviceInstanceGone", "{gone:?}");
    assert_eq!(gone[0]["details"]["service"], "talkwai-command");
}

/// `task.eraseContent` is announced in the tenant room as `contentErased` (a client showing
/// the task reads it again and gets `null` with `erased: true`); no room message ever carried
/// the erased content.
#[tokio::test]
async fn an_erased_task_content_is_announced_in_its_tenant_room() {
    let h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await;
    let a = world(&h).await;
    let mut room = h
        .client
        .subscribe(format!("talkwai.room.tenant.{}.topic.>", a.tenant))
        .await
        .expect("sub");
    let (t, task, tok) = (a.tenant, Uuid::new_v4(), a.owner_token.as_str());
    let marker = format!("mk{}", Uuid::new_v4().simple());
    h.ok(
        &format!("talkwai.cmd.{t}.task.create"),
        json!({"id": task, "type": "call", "fromAddress": "+15550001111",
               "toAddress": "+15550002222", "subject": marker, "content": marker}),
        tok,
    )
    .await;
    let erased = h
        .ok(
            &format!("talkwai.cmd.{t}.task.eraseContent"),
            json!({"id": task}),
            tok,
        )
        .await;
    let got = collect(&mut room, 2, WAIT).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["action"], "created");
    assert_eq!(got[1]["action"], "contentErased");
    assert_eq!(got[1]["taskId"], json!(task));
    assert_eq!(got[1]["status"], "pending", "the task keeps its status");
    assert_eq!(got[1]["userId"], json!(a.owner));
    assert_eq!(got[1]["seq"], json!(erased.seq));
    for message in &got {
        assert!(!message.to_string().contains(&marker), "{message}");
    }
}
