//! Integration tests of the command service against a real nats-server: every seed operation,
//! the task lifecycle, idempotency, conflicts and bad input.

mod common;

use common::{Harness, PLATFORM, World, admin_token, member_token, world};
use serde_json::json;
use talkwai_domain::ErrorCode;
use talkwai_proto::CommandAccepted;
use uuid::Uuid;

#[tokio::test]
async fn seed_operations_work_through_nats() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let t = w.tenant;
    let tok = Some(w.owner_token.as_str());

    // createMember: a second member, then an agent.
    let assignee = Uuid::new_v4();
    let reply = h
        .ok(
            &format!("talkwai.cmd.{t}.member.create"),
            json!({"id": assignee, "tenant": t, "firstName": "Ada", "lastName": "Lovelace",
                   "email": "ada@acme.com", "phone": "+1 555 000 1111", "role": "user"}),
            tok,
        )
        .await;
    assert_eq!(reply.version, 1);
    assert_eq!(reply.events[0].event_type, "member.created");
    assert_eq!(reply.events[0].data["phone"], "+15550001111");
    let agent = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{t}.agent.create"),
        json!({"id": agent, "name": "Vera", "type": "voice", "configuration": "{\"voice\":\"alto\"}"}),
        tok,
    )
    .await;

    // createTask with agent, assignee, creator (the calling member).
    let task = Uuid::new_v4();
    let created = h
        .ok(
            &format!("talkwai.cmd.{t}.task.create"),
            json!({"id": task, "type": "call", "priority": "high", "fromAddress": "+15550001111",
                   "toAddress": "+15550002222", "subject": "Renewal", "agent": agent,
                   "assignedTo": assignee}),
            tok,
        )
        .await;
    let data = &created.events[0].data;
    assert_eq!(data["status"], "pending");
    assert_eq!(data["createdBy"], json!(w.owner));
    assert_eq!(data["assignedTo"], json!(assignee));
    assert!(created.seq > 0);

    // The full lifecycle, with timestamps set by the transitions.
    let cmd = |action: &str| format!("talkwai.cmd.{t}.task.{action}");
    let started = h.ok(&cmd("start"), json!({"id": task}), tok).await;
    assert_eq!(started.events[0].event_type, "task.started");
    let failed = h
        .ok(
            &cmd("fail"),
            json!({"id": task, "reason": "no answer"}),
            tok,
        )
        .await;
    assert_eq!(failed.events[0].event_type, "task.failed");
    h.ok(&cmd("retry"), json!({"id": task}), tok).await;
    h.ok(&cmd("start"), json!({"id": task}), tok).await;
    let done = h.ok(&cmd("complete"), json!({"id": task}), tok).await;
    assert_eq!(done.version, 6);
    let err = h.err(&cmd("start"), json!({"id": task}), tok).await;
    assert_eq!(err.code, ErrorCode::InvalidTransition);

    // Updates, status changes, link/unlink, delete.
    let task2 = Uuid::new_v4();
    h.ok(
        &cmd("create"),
        json!({"id": task2, "type": "email", "fromAddress": "bot@acme.com",
        "toAddress": "client@example.com"}),
        tok,
    )
    .await;
    h.ok(
        &cmd("update"),
        json!({"id": task2, "subject": "Hello", "priority": "urgent"}),
        tok,
    )
    .await;
    h.ok(
        &cmd("setMetadata"),
        json!({"id": task2, "metadata": "{\"thread\":42}"}),
        tok,
    )
    .await;
    h.ok(&cmd("linkAgent"), json!({"id": task2, "agent": agent}), tok)
        .await;
    h.ok(
        &cmd("assign"),
        json!({"id": task2, "assignedTo": assignee}),
        tok,
    )
    .await;
    h.ok(&cmd("unassign"), json!({"id": task2}), tok).await;
    h.ok(&cmd("unlinkAgent"), json!({"id": task2}), tok).await;
    h.ok(&cmd("cancel"), json!({"id": task2}), tok).await;
    let deleted = h.ok(&cmd("delete"), json!({"id": task2}), tok).await;
    assert_eq!(deleted.events[0].event_type, "task.deleted");
    let gone = h.err(&cmd("start"), json!({"id": task2}), tok).await;
    assert_eq!(gone.code, ErrorCode::NotFound);

    h.ok(
        &format!("talkwai.cmd.{t}.member.setRole"),
        json!({"id": assignee, "role": "manager"}),
        tok,
    )
    .await;
    h.ok(
        &format!("talkwai.cmd.{t}.agent.setStatus"),
        json!({"id": agent, "status": "training"}),
        tok,
    )
    .await;
    h.ok(
        &format!("talkwai.cmd.{t}.tenant.update"),
        json!({"id": t, "name": "Acme Inc"}),
        tok,
    )
    .await;
    // Suspension is an admin's call, not an owner's.
    let refused = h
        .err(
            &format!("talkwai.cmd.{t}.tenant.setStatus"),
            json!({"id": t, "status": "suspended"}),
            tok,
        )
        .await;
    assert_eq!(refused.code, ErrorCode::Forbidden);
    h.ok(
        &format!("talkwai.cmd.{t}.tenant.setStatus"),
        json!({"id": t, "status": "suspended"}),
        Some(PLATFORM),
    )
    .await;
    let suspended = h
        .err(
            &cmd("create"),
            json!({"id": Uuid::new_v4(), "type": "other",
        "fromAddress": "a@acme.com", "toAddress": "b@acme.com"}),
            tok,
        )
        .await;
    assert_eq!(suspended.code, ErrorCode::Forbidden);
    h.stop().await;
}

#[tokio::test]
async fn admins_create_tasks_and_are_recorded_as_creators() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let user = Uuid::new_v4();
    let admin = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": "root@talkwai.ai"}),
        Some(PLATFORM),
    )
    .await;
    h.ok(
        "talkwai.cmd.platform.admin.create",
        json!({"id": admin, "firstName": "Sam", "lastName": "Super", "email": "sam@talkwai.ai",
               "role": "superadmin", "user": user}),
        Some(PLATFORM),
    )
    .await;
    let token = admin_token(user);
    let task = Uuid::new_v4();
    let reply = h
        .ok(
            &format!("talkwai.cmd.{}.task.create", w.tenant),
            json!({"id": task, "type": "other", "fromAddress": "ops@talkwai.ai", "toAddress": "+4930123456"}),
            Some(&token),
        )
        .await;
    assert_eq!(reply.events[0].data["createdByAdmin"], json!(admin));
    assert_eq!(reply.events[0].data["createdBy"], serde_json::Value::Null);
    // Admin emails are unique across the platform.
    let dup = h
        .err(
            "talkwai.cmd.platform.admin.create",
            json!({"id": Uuid::new_v4(), "firstName": "S", "lastName": "S", "email": "SAM@talkwai.ai", "role": "support"}),
            Some(PLATFORM),
        )
        .await;
    assert_eq!(
        (dup.code, dup.field.as_deref()),
        (ErrorCode::AlreadyExists, Some("email"))
    );
    h.stop().await;
}

/// Creates a new task with a known command id: its subject, body, command id and outcome.
async fn create_task_with_id(
    h: &Harness,
    w: &World,
) -> (String, serde_json::Value, Uuid, CommandAccepted) {
    let subject = format!("talkwai.cmd.{}.task.create", w.tenant);
    let body = json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"});
    let id = Uuid::new_v4();
    let first = h
        .send_with_id(&subject, body.clone(), Some(&w.owner_token), id)
        .await
        .into_result()
        .expect("created");
    (subject, body, id, first)
}

#[tokio::test]
async fn a_command_sent_three_times_appends_once() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let (subject, body, id, first) = create_task_with_id(&h, &w).await;
    let head = h.stream_head().await;
    for _ in 0..2 {
        let again = h
            .send_with_id(&subject, body.clone(), Some(&w.owner_token), id)
            .await
            .into_result();
        assert_eq!(again.expect("retry answers the original outcome"), first);
    }
    assert_eq!(h.stream_head().await, head, "retries append nothing");
    // Also from an instance that never saw it (cold cache), as after the duplicate window.
    let mut h = h;
    h.add_instance("late-instance").await;
    for _ in 0..4 {
        let again = h
            .send_with_id(&subject, body.clone(), Some(&w.owner_token), id)
            .await
            .into_result();
        assert_eq!(again.expect("original outcome"), first);
    }
    assert_eq!(h.stream_head().await, head);
    h.stop().await;
}

/// Creates skip reading their target when the instance does not hold it (the append expects
/// an empty subject); an existing aggregate must still be found.
#[tokio::test]
async fn creates_on_a_cold_instance_find_what_the_log_already_holds() {
    let mut h = Harness::start().await;
    let w = world(&h).await;
    let (subject, body, id, first) = create_task_with_id(&h, &w).await;
    let head = h.stream_head().await;
    // Another command reusing the id, on an instance that never saw the task.
    h.add_instance("cold-1").await;
    h.stop_oldest().await;
    let reused = h.err(&subject, body.clone(), Some(&w.owner_token)).await;
    assert_eq!(reused.code, ErrorCode::AlreadyExists, "{reused:?}");
    // The same command again, on another cold instance: the original outcome.
    h.add_instance("cold-2").await;
    h.stop_oldest().await;
    let again = h
        .send_with_id(&subject, body, Some(&w.owner_token), id)
        .await
        .into_result();
    assert_eq!(again.expect("original outcome"), first);
    assert_eq!(h.stream_head().await, head, "nothing appended");
    h.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_conflicting_commands_keep_a_valid_lifecycle() {
    let h = Harness::start_instances(2).await;
    let w = world(&h).await;
    let t = w.tenant;
    let task = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{t}.task.create"),
        json!({"id": task, "type": "call",
        "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
        Some(&w.owner_token),
    )
    .await;
    let actions = ["start", "complete", "fail", "cancel", "retry"];
    let mut handles = Vec::new();
    let h = std::sync::Arc::new(h);
    for i in 0..50 {
        let h = std::sync::Arc::clone(&h);
        let token = w.owner_token.clone();
        let action = actions[i % actions.len()];
        handles.push(tokio::spawn(async move {
            let reply = h
                .send(
                    &format!("talkwai.cmd.{t}.task.{action}"),
                    json!({"id": task}),
                    Some(&token),
                )
                .await;
            (action, reply.into_result())
        }));
    }
    let mut accepted = 0;
    for handle in handles {
        let (action, result) = handle.await.expect("join");
        match result {
            Ok(reply) => {
                assert_eq!(reply.events.len(), 1, "{action} appends one event");
                accepted += 1;
            }
            Err(e) => assert_eq!(e.code, ErrorCode::InvalidTransition, "{action}: {e:?}"),
        }
    }
    let history = h.history(&format!("talkwai.evt.{t}.task.{task}")).await;
    assert_eq!(
        history.len(),
        accepted + 1,
        "every accepted command appended exactly once"
    );
    // Replaying the history through the strict lifecycle accepts every step.
    let mut status = "pending";
    for (event, _) in &history[1..] {
        status = match (status, event.as_str()) {
            ("pending", "task.started") => "in_progress",
            ("pending", "task.cancelled") => "failed",
            ("in_progress", "task.completed") => "completed",
            ("in_progress", "task.failed") => "failed",
            ("failed", "task.retried") => "pending",
            (from, ev) => panic!("invalid lifecycle step {ev} from {from}"),
        };
    }
    let ids: std::collections::HashSet<_> = history.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), history.len(), "no command appended twice");
    std::sync::Arc::into_inner(h)
        .expect("sole owner")
        .stop()
        .await;
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_appends_nothing() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let t = w.tenant;
    let tok = Some(w.owner_token.as_str());
    let head = h.stream_head().await;
    let subject = format!("talkwai.cmd.{t}.task.create");
    let valid = json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"});

    let malformed = h
        .send_raw(&subject, b"{not json".to_vec(), tok, Some(Uuid::new_v4()))
        .await;
    assert_eq!(
        malformed.into_result().expect_err("malformed").code,
        ErrorCode::ValidationFailed
    );

    let mut unknown = valid.clone();
    unknown["colour"] = json!("red");
    let e = h.err(&subject, unknown, tok).await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::ValidationFailed, Some("colour"))
    );

    let mut wrong_enum = valid.clone();
    wrong_enum["type"] = json!("fax");
    let e = h.err(&subject, wrong_enum, tok).await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::ValidationFailed, Some("type"))
    );

    let mut bad_address = valid.clone();
    bad_address["toAddress"] = json!("555-0101");
    let e = h.err(&subject, bad_address, tok).await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::ValidationFailed, Some("toAddress"))
    );

    let mut oversized = valid.clone();
    oversized["content"] = json!("x".repeat(70 * 1024));
    let e = h.err(&subject, oversized, tok).await;
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);

    let e = h
        .send(&subject, valid.clone(), None)
        .await
        .into_result()
        .expect_err("no token");
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    let e = h
        .send(&subject, valid.clone(), Some("forged"))
        .await
        .into_result()
        .expect_err("bad token");
    assert_eq!(e.code, ErrorCode::Unauthenticated);

    let e = h
        .send_raw(
            &subject,
            serde_json::to_vec(&valid).expect("json"),
            tok,
            None,
        )
        .await;
    assert_eq!(
        e.into_result().expect_err("no command id").field.as_deref(),
        Some("Talkwai-Command-Id")
    );

    let unknown_tenant = Uuid::new_v4();
    let e = h
        .err(
            &format!("talkwai.cmd.{unknown_tenant}.task.create"),
            valid.clone(),
            Some(PLATFORM),
        )
        .await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::NotFound, Some("tenant"))
    );

    assert_eq!(
        h.stream_head().await,
        head,
        "no refused command appended anything"
    );

    // A member of tenant A naming tenant B in the subject.
    let other = world(&h).await;
    let e = h
        .err(
            &format!("talkwai.cmd.{}.task.create", other.tenant),
            valid.clone(),
            tok,
        )
        .await;
    assert_eq!(e.code, ErrorCode::Forbidden);

    // A cross-tenant link: an agent of tenant B used in tenant A.
    let foreign_agent = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{}.agent.create", other.tenant),
        json!({"id": foreign_agent, "name": "B-bot", "type": "chat"}),
        Some(&other.owner_token),
    )
    .await;
    let mut cross = valid.clone();
    cross["agent"] = json!(foreign_agent);
    let before = h.stream_head().await;
    let e = h.err(&subject, cross, tok).await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::NotFound, Some("agent"))
    );
    let e = h
        .err(
            &format!("talkwai.cmd.{t}.task.assign"),
            json!({"id": Uuid::new_v4(), "assignedTo": other.owner}),
            tok,
        )
        .await;
    assert_eq!(e.code, ErrorCode::NotFound);

    let e = h
        .err(
            &format!("talkwai.cmd.{t}.tenant.create"),
            json!({"id": Uuid::new_v4(), "name": "X"}),
            Some(PLATFORM),
        )
        .await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::ValidationFailed, Some("subject"))
    );
    let e = h
        .err("talkwai.cmd.not-a-tenant.task.create", valid.clone(), tok)
        .await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::ValidationFailed, Some("tenant"))
    );

    assert_eq!(
        h.stream_head().await,
        before,
        "no refused command appended anything"
    );
    h.stop().await;
}

#[tokio::test]
async fn member_emails_are_unique_per_tenant_under_races() {
    let h = std::sync::Arc::new(Harness::start_instances(2).await);
    let w = world(&h).await;
    let mut handles = Vec::new();
    for _ in 0..20 {
        let h = std::sync::Arc::clone(&h);
        let t = w.tenant;
        handles.push(tokio::spawn(async move {
            h.send(
                &format!("talkwai.cmd.{t}.member.create"),
                json!({"id": Uuid::new_v4(), "firstName": "Twin", "lastName": "Racer",
                       "email": "twin@acme.com", "role": "user"}),
                Some(PLATFORM),
            )
            .await
            .into_result()
        }));
    }
    let mut winners = 0;
    for handle in handles {
        match handle.await.expect("join") {
            Ok(_) => winners += 1,
            Err(e) => assert_eq!(
                (e.code, e.field.as_deref()),
                (ErrorCode::AlreadyExists, Some("email"))
            ),
        }
    }
    assert_eq!(winners, 1, "exactly one member gets the email");
    // The same email is fine in another tenant, and free again after the holder is deleted.
    let other = world(&h).await;
    h.ok(
        &format!("talkwai.cmd.{}.member.create", other.tenant),
        json!({"id": Uuid::new_v4(), "firstName": "Twin", "lastName": "Racer",
               "email": "twin@acme.com", "role": "user"}),
        Some(PLATFORM),
    )
    .await;
    let user = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": "u@acme.com"}),
        Some(PLATFORM),
    )
    .await;
    let m1 = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{}.member.create", w.tenant),
        json!({"id": m1, "firstName": "A", "lastName": "B",
        "email": "ab@acme.com", "role": "user", "user": user}),
        Some(PLATFORM),
    )
    .await;
    let e = h
        .err(
            &format!("talkwai.cmd.{}.member.create", w.tenant),
            json!({"id": Uuid::new_v4(), "firstName": "C", "lastName": "D",
        "email": "cd@acme.com", "role": "user", "user": user}),
            Some(PLATFORM),
        )
        .await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::AlreadyExists, Some("user"))
    );
    h.ok(
        &format!("talkwai.cmd.{}.member.delete", w.tenant),
        json!({"id": m1}),
        Some(PLATFORM),
    )
    .await;
    h.ok(
        &format!("talkwai.cmd.{}.member.create", w.tenant),
        json!({"id": Uuid::new_v4(), "firstName": "C", "lastName": "D",
        "email": "ab@acme.com", "role": "user", "user": user}),
        Some(PLATFORM),
    )
    .await;
    let _ = member_token(user, w.tenant);
    std::sync::Arc::into_inner(h)
        .expect("sole owner")
        .stop()
        .await;
}

/// What a stored event costs in headers, written in a group: every header is kept with the
/// message for ever. The budget is the contract's `Talkwai-*` headers (type, version, tenant,
/// actor, command id, time, part: 295 bytes for a member's `task.created`) plus the server's
/// batch controls (a short batch id, the position, the expected sequence, the commit mark).
#[tokio::test]
async fn a_task_created_in_a_group_stores_at_most_its_header_budget() {
    const BUDGET: usize = 440;
    let h = std::sync::Arc::new(Harness::start().await);
    let w = world(&h).await;
    let t = w.tenant;
    let handles: Vec<_> = (0..48)
        .map(|_| {
            let h = std::sync::Arc::clone(&h);
            let token = w.owner_token.clone();
            tokio::spawn(async move {
                let task = Uuid::new_v4();
                h.ok(
                    &format!("talkwai.cmd.{t}.task.create"),
                    json!({"id": task, "type": "call",
                           "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
                    Some(&token),
                )
                .await;
                task
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for handle in handles {
        tasks.push(handle.await.expect("sender"));
    }
    let store = talkwai_eventstore::EventStore::open(h.client.clone(), &Default::default())
        .await
        .expect("store");
    let (mut grouped, mut largest) = (0, 0);
    for task in tasks {
        let stored = store
            .read_subject(&format!("talkwai.evt.{t}.task.{task}"), 0)
            .await
            .expect("read");
        let created = stored.first().expect("task.created stored");
        let bytes = created.stored_header_bytes();
        if created.header("Nats-Batch-Id").is_some() {
            grouped += 1;
            largest = largest.max(bytes);
        }
    }
    println!("{grouped} of 48 task.created written in groups; largest header block {largest} B");
    assert!(grouped > 0, "48 concurrent creates formed no group");
    assert!(largest <= BUDGET, "{largest} bytes of headers > {BUDGET}");
    if let Ok(h) = std::sync::Arc::try_unwrap(h) {
        h.stop().await;
    }
}
