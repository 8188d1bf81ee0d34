//! A command id names one command, for ever: a resend answers the original outcome byte for
//! byte and appends nothing; the same id with another subject or body is refused with
//! `command_id_reused`, within the stream's duplicate window and after it, after a restart and
//! on another instance. Subjects no endpoint serves are answered with `unknown_command`.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::{Harness, PLATFORM, World, world};
use serde_json::{Value, json};
use talkwai_domain::ErrorCode;
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_proto::{CommandReply, ErrorBody};
use uuid::Uuid;

/// The stream's `Nats-Msg-Id` window in these tests: short, so "after the window" is quick.
const WINDOW: Duration = Duration::from_secs(1);

/// A harness whose stream remembers `Nats-Msg-Id`s for [`WINDOW`] only.
async fn start(instances: usize) -> Harness {
    let h = Harness::start_instances(instances).await;
    let settings = StreamSettings {
        duplicate_window: Some(WINDOW),
        ..StreamSettings::default()
    };
    EventStore::open(h.client.clone(), &settings)
        .await
        .expect("stream takes the short window");
    h
}

/// Sends raw and returns the reply's bytes as they came.
async fn send_bytes(h: &Harness, subject: &str, body: &Value, token: &str, id: Uuid) -> Bytes {
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", id.to_string().as_str());
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        h.client.request_with_headers(
            subject.to_owned(),
            headers,
            serde_json::to_vec(body).expect("json").into(),
        ),
    )
    .await
    .expect("reply in time")
    .expect("request");
    reply.payload
}

fn refusal(bytes: &Bytes) -> ErrorBody {
    match serde_json::from_slice::<CommandReply>(bytes)
        .expect("a CommandReply")
        .into_result()
    {
        Ok(accepted) => panic!("accepted: {accepted:?}"),
        Err(error) => error,
    }
}

fn assert_reused(bytes: &Bytes) {
    let error = refusal(bytes);
    assert_eq!(error.code, ErrorCode::CommandIdReused, "{error:?}");
    assert_eq!(error.field.as_deref(), Some("Talkwai-Command-Id"));
    assert!(
        error.message.contains("new command id"),
        "says what to do: {}",
        error.message
    );
}

fn create_body(task: Uuid) -> Value {
    json!({"id": task, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"})
}

/// Creates a task with a fresh command id.
async fn create_task(h: &Harness, w: &World) -> Uuid {
    let task = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{}.task.create", w.tenant),
        create_body(task),
        Some(&w.owner_token),
    )
    .await;
    task
}

/// Event types on one aggregate's subject.
async fn event_types(h: &Harness, tenant: Uuid, task: Uuid) -> Vec<String> {
    h.history(&format!("talkwai.evt.{tenant}.task.{task}"))
        .await
        .into_iter()
        .map(|(event_type, _)| event_type)
        .collect()
}

#[tokio::test]
async fn create_then_create_with_the_same_id_is_refused_within_and_after_the_window() {
    let h = start(1).await;
    let w = world(&h).await;
    let subject = format!("talkwai.cmd.{}.task.create", w.tenant);
    let id = Uuid::new_v4();
    let (x, y, z) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let first = send_bytes(&h, &subject, &create_body(x), &w.owner_token, id).await;
    assert!(
        serde_json::from_slice::<CommandReply>(&first)
            .expect("reply")
            .into_result()
            .is_ok()
    );
    let head = h.stream_head().await;

    // Within the window: another body under the same id.
    assert_reused(&send_bytes(&h, &subject, &create_body(y), &w.owner_token, id).await);
    // The resend of the original: the same bytes.
    assert_eq!(
        send_bytes(&h, &subject, &create_body(x), &w.owner_token, id).await,
        first
    );
    assert_eq!(h.stream_head().await, head, "nothing appended");

    // After the window, the server no longer remembers the id; the log does.
    tokio::time::sleep(WINDOW + Duration::from_millis(500)).await;
    assert_reused(&send_bytes(&h, &subject, &create_body(z), &w.owner_token, id).await);
    assert_eq!(
        send_bytes(&h, &subject, &create_body(x), &w.owner_token, id).await,
        first
    );
    assert_eq!(h.stream_head().await, head, "nothing appended");
    assert!(event_types(&h, w.tenant, y).await.is_empty());
    assert!(event_types(&h, w.tenant, z).await.is_empty());
    assert_eq!(event_types(&h, w.tenant, x).await, ["task.created"]);
    h.stop().await;
}

#[tokio::test]
async fn start_then_start_of_another_task_with_the_same_id_is_refused() {
    let h = start(1).await;
    let w = world(&h).await;
    let (x, y) = (create_task(&h, &w).await, create_task(&h, &w).await);
    let subject = format!("talkwai.cmd.{}.task.start", w.tenant);
    let id = Uuid::new_v4();
    let first = send_bytes(&h, &subject, &json!({"id": x}), &w.owner_token, id).await;
    let head = h.stream_head().await;
    assert_reused(&send_bytes(&h, &subject, &json!({"id": y}), &w.owner_token, id).await);
    tokio::time::sleep(WINDOW + Duration::from_millis(500)).await;
    assert_reused(&send_bytes(&h, &subject, &json!({"id": y}), &w.owner_token, id).await);
    assert_eq!(
        send_bytes(&h, &subject, &json!({"id": x}), &w.owner_token, id).await,
        first
    );
    assert_eq!(h.stream_head().await, head, "nothing appended");
    assert_eq!(
        event_types(&h, w.tenant, y).await,
        ["task.created"],
        "y stays pending"
    );
    assert_eq!(
        event_types(&h, w.tenant, x).await,
        ["task.created", "task.started"]
    );
    h.stop().await;
}

#[tokio::test]
async fn an_id_of_a_create_cannot_name_a_start_nor_the_other_way_round() {
    let h = start(1).await;
    let w = world(&h).await;
    let t = w.tenant;
    // create, then start of the same task under the create's id.
    let task = Uuid::new_v4();
    let id = Uuid::new_v4();
    send_bytes(
        &h,
        &format!("talkwai.cmd.{t}.task.create"),
        &create_body(task),
        &w.owner_token,
        id,
    )
    .await;
    let start = format!("talkwai.cmd.{t}.task.start");
    assert_reused(&send_bytes(&h, &start, &json!({"id": task}), &w.owner_token, id).await);
    assert_eq!(event_types(&h, t, task).await, ["task.created"]);

    // start, then a create under the start's id.
    let other = create_task(&h, &w).await;
    let id = Uuid::new_v4();
    send_bytes(&h, &start, &json!({"id": other}), &w.owner_token, id).await;
    let fresh = Uuid::new_v4();
    assert_reused(
        &send_bytes(
            &h,
            &format!("talkwai.cmd.{t}.task.create"),
            &create_body(fresh),
            &w.owner_token,
            id,
        )
        .await,
    );
    assert!(event_types(&h, t, fresh).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_reused_id_is_refused_after_a_restart_and_on_another_instance() {
    let mut h = start(1).await;
    let w = world(&h).await;
    let subject = format!("talkwai.cmd.{}.task.create", w.tenant);
    let id = Uuid::new_v4();
    let x = Uuid::new_v4();
    let first = send_bytes(&h, &subject, &create_body(x), &w.owner_token, id).await;
    let head = h.stream_head().await;
    // Two fresh instances replace the one that served it: none has it in memory.
    h.add_instance("fresh-1").await;
    h.add_instance("fresh-2").await;
    h.stop_oldest().await;
    for _ in 0..4 {
        assert_reused(
            &send_bytes(
                &h,
                &subject,
                &create_body(Uuid::new_v4()),
                &w.owner_token,
                id,
            )
            .await,
        );
        assert_eq!(
            send_bytes(&h, &subject, &create_body(x), &w.owner_token, id).await,
            first,
            "the original outcome, byte for byte"
        );
    }
    assert_eq!(h.stream_head().await, head, "nothing appended");
    h.stop().await;
}

#[tokio::test]
async fn concurrent_resends_and_reuses_land_one_command() {
    let h = std::sync::Arc::new(start(2).await);
    let w = world(&h).await;
    let subject = format!("talkwai.cmd.{}.task.create", w.tenant);
    let id = Uuid::new_v4();
    let tasks: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let head = h.stream_head().await;
    let mut sends = Vec::new();
    for i in 0..16 {
        let (h, subject, token) = (
            std::sync::Arc::clone(&h),
            subject.clone(),
            w.owner_token.clone(),
        );
        let task = tasks[i % tasks.len()];
        sends.push(tokio::spawn(async move {
            (
                task,
                send_bytes(&h, &subject, &create_body(task), &token, id).await,
            )
        }));
    }
    let mut accepted = Vec::new();
    for send in sends {
        let (task, bytes) = send.await.expect("send");
        match serde_json::from_slice::<CommandReply>(&bytes)
            .expect("reply")
            .into_result()
        {
            Ok(_) => accepted.push((task, bytes)),
            Err(error) => assert_eq!(error.code, ErrorCode::CommandIdReused, "{error:?}"),
        }
    }
    let (winner, bytes) = accepted.first().cloned().expect("one command landed");
    assert!(accepted.iter().all(|(t, b)| *t == winner && *b == bytes));
    let mut landed = 0;
    for task in &tasks {
        landed += event_types(&h, w.tenant, *task).await.len();
    }
    assert_eq!(landed, 1, "exactly one task.created");
    // The event and the command's record (and no guard for tasks).
    assert_eq!(h.stream_head().await, head + 2);
    std::sync::Arc::into_inner(h)
        .expect("one owner")
        .stop()
        .await;
}

#[tokio::test]
async fn unknown_subjects_get_unknown_command_not_silence() {
    let h = start(2).await;
    let w = world(&h).await;
    let t = w.tenant;
    for subject in [
        format!("talkwai.cmd.{t}.task.explode"),
        format!("talkwai.cmd.{t}.widget.create"),
        "talkwai.cmd.platform.user.fly".to_owned(),
        format!("talkwai.cmd.{t}.task"),
        format!("talkwai.cmd.{t}.task.create.extra"),
    ] {
        let bytes = send_bytes(&h, &subject, &json!({}), &w.owner_token, Uuid::new_v4()).await;
        let error = refusal(&bytes);
        assert_eq!(
            error.code,
            ErrorCode::UnknownCommand,
            "{subject}: {error:?}"
        );
        assert_eq!(error.field.as_deref(), Some("subject"));
        assert!(error.message.contains(&subject), "{}", error.message);
    }
    // Known subjects are still answered by their endpoint (one reply, the real outcome).
    let task = create_task(&h, &w).await;
    let started = h
        .ok(
            &format!("talkwai.cmd.{t}.task.start"),
            json!({"id": task}),
            Some(&w.owner_token),
        )
        .await;
    assert_eq!(started.events[0].event_type, "task.started");
    h.stop().await;
}

#[tokio::test]
async fn event_headers_name_the_scope_of_their_subject() {
    let h = start(1).await;
    let tenant = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Acme", "domain": "acme.com"}),
        Some(PLATFORM),
    )
    .await;
    let store = EventStore::open(h.client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let messages = store
        .read_subject(&format!("talkwai.evt.{tenant}.>"), 0)
        .await
        .expect("read");
    assert!(!messages.is_empty());
    for message in &messages {
        let scope = message.subject.split('.').nth(2).expect("scope token");
        assert_eq!(
            message.header("Talkwai-Tenant"),
            Some(scope),
            "{}",
            message.subject
        );
    }
    let platform = store
        .read_subject("talkwai.evt.platform.>", 0)
        .await
        .expect("read");
    for message in &platform {
        assert_eq!(message.header("Talkwai-Tenant"), Some("platform"));
    }
    h.stop().await;
}

/// A record whose events never landed (the process died between the claim and its events, or
/// the events lost a race): a resend of that command completes it, once; another body is
/// still refused.
#[tokio::test]
async fn a_claim_without_its_events_is_completed_by_the_resend() {
    let h = start(1).await;
    let w = world(&h).await;
    let subject = format!("talkwai.cmd.{}.task.create", w.tenant);
    let id = Uuid::new_v4();
    let task = Uuid::new_v4();
    let body = create_body(task);
    let target = format!("talkwai.evt.{}.task.{task}", w.tenant);
    let record = talkwai_proto::command_record::CommandRecord {
        command: subject.clone(),
        fingerprint: talkwai_proto::command_record::fingerprint(
            &subject,
            &serde_json::to_vec(&body).expect("json"),
        ),
        target: target.clone(),
        events: 1,
        version: 1,
        seq: None,
    };
    let scope = talkwai_proto::Scope::Tenant(talkwai_domain::ids::TenantId(w.tenant));
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", id.to_string().as_str());
    headers.insert("Talkwai-Command-Part", "1/2");
    let js = async_nats::jetstream::new(h.client.clone());
    js.publish_with_headers(
        talkwai_proto::command_record::subject(scope, id),
        headers,
        record.encode().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("the claim lands");
    let head = h.stream_head().await;

    assert_reused(
        &send_bytes(
            &h,
            &subject,
            &create_body(Uuid::new_v4()),
            &w.owner_token,
            id,
        )
        .await,
    );
    let first = send_bytes(&h, &subject, &body, &w.owner_token, id).await;
    let accepted = serde_json::from_slice::<CommandReply>(&first)
        .expect("reply")
        .into_result()
        .expect("the claimed command is carried out");
    assert_eq!(accepted.events[0].event_type, "task.created");
    assert_eq!(
        h.stream_head().await,
        head + 1,
        "its event only, no second record"
    );
    assert_eq!(event_types(&h, w.tenant, task).await, ["task.created"]);
    assert_eq!(
        send_bytes(&h, &subject, &body, &w.owner_token, id).await,
        first
    );
    assert_eq!(h.stream_head().await, head + 1);
    h.stop().await;
}
