//! The projector against real nats-server and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Stack, random_commands};
use serde_json::json;
use talkwai_testkit::wait::poll_until;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_equal_the_model_computed_from_the_log() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    for seed in [7, 4242] {
        let accepted = random_commands(&stack, seed, 3, 250).await;
        assert!(accepted > 100, "enough commands were accepted ({accepted})");
        stack.wait_caught_up(&db).await;
        let tables = stack.tables(&db).await;
        let model = stack.model_from_log().await;
        for (table, rows) in &model {
            assert_eq!(
                &tables[table], rows,
                "table {table} equals the model from the log (seed {seed})"
            );
        }
        assert!(!model["tasks"].is_empty());
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_started_late_catches_up_from_the_beginning() {
    let mut stack = Stack::start().await;
    random_commands(&stack, 99, 2, 150).await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    stack.wait_caught_up(&db).await;
    assert_eq!(stack.tables(&db).await, stack.model_from_log().await);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_the_projector_converges() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    random_commands(&stack, 11, 2, 80).await;
    stack.wait_caught_up(&db).await;
    stack.pg.kill().await.expect("kill postgres");
    random_commands(&stack, 12, 2, 80).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.pg.restart().await.expect("restart postgres");
    random_commands(&stack, 13, 1, 40).await;
    stack.wait_caught_up(&db).await;
    assert_eq!(stack.tables(&db).await, stack.model_from_log().await);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_the_projection_until_retried() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    let tenant = Uuid::new_v4();
    stack
        .ok(
            "talkwai.cmd.platform.tenant.create",
            json!({"id": tenant, "name": "Poisoned"}),
        )
        .await;
    stack.start_projector(stack.projector_config(&db)).await;
    stack.wait_caught_up(&db).await;

    let mut alerts = stack
        .client
        .subscribe("talkwai.room.admin.global.topic.systemAlerts")
        .await
        .expect("subscribe to admin alerts");
    stack.client.flush().await.expect("flush");

    // An event no projector can apply: a start of a task that has no row (written around the
    // command service, as a buggy or foreign writer could).
    let ghost = Uuid::new_v4();
    let headers = talkwai_eventstore::header_map(
        talkwai_proto::EventMeta {
            event_type: Some("task.started".into()),
            ..Default::default()
        }
        .to_headers(),
    );
    let ack = async_nats::jetstream::new(stack.client.clone())
        .publish_with_headers(
            format!("talkwai.evt.{tenant}.task.{ghost}"),
            headers,
            r#"{"type":"task.started","version":1,"data":{"at":1}}"#.into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    let poison_seq = ack.sequence;
    let later = stack
        .ok(
            "talkwai.cmd.platform.tenant.create",
            json!({"id": Uuid::new_v4(), "name": "After"}),
        )
        .await;

    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let conn = pool.get().await.expect("conn");
    let letters = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            talkwai_projector::dead_letters::dead_letters(&conn, false)
                .await
                .expect("dead letters")
        },
        |letters| !letters.is_empty(),
    )
    .await
    .unwrap_or_else(|last| last.unwrap_or_default());
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_eq!(letters[0].seq, i64::try_from(poison_seq).expect("seq"));
    assert_eq!(letters[0].status, "open");
    assert!(
        letters[0].error.contains("has no row"),
        "{}",
        letters[0].error
    );
    // Admins hear about it in their room.
    let alert = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut alerts),
    )
    .await
    .expect("a dead-letter alert in time")
    .expect("alert");
    let alert: serde_json::Value = serde_json::from_slice(&alert.payload).expect("alert json");
    assert_eq!(alert["kind"], "deadLetter", "{alert}");
    assert_eq!(alert["seq"], json!(poison_seq));
    assert_eq!(alert["tenantId"], json!(tenant));
    assert_eq!(alert["details"]["stopped"], json!(true));
    let checkpoint = talkwai_projector::status::live_checkpoint(&conn)
        .await
        .expect("checkpoint");
    assert_eq!(
        checkpoint,
        poison_seq - 1,
        "stopped right before the poison event"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        talkwai_projector::status::live_checkpoint(&conn)
            .await
            .expect("cp"),
        poison_seq - 1
    );

    // Retrying without a fix stops again at the same event.
    let mut conn = conn;
    let retry = talkwai_projector::dead_letters::retry(&mut conn, false)
        .await
        .expect("retry");
    assert_eq!(
        retry.stopped_at,
        Some(i64::try_from(poison_seq).expect("seq"))
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let letters = talkwai_projector::dead_letters::dead_letters(&conn, false)
        .await
        .expect("dead letters");
    assert_eq!(letters[0].status, "open");
    assert_eq!(
        talkwai_projector::status::live_checkpoint(&conn)
            .await
            .expect("cp"),
        poison_seq - 1
    );

    // Skipping it resumes the projection.
    talkwai_projector::dead_letters::retry(&mut conn, true)
        .await
        .expect("skip");
    assert!(
        talkwai_projector::status::wait_for(&conn, later.seq, Duration::from_secs(10))
            .await
            .expect("wait")
    );
    let letters = talkwai_projector::dead_letters::dead_letters(&conn, false)
        .await
        .expect("dead letters");
    assert_eq!(letters[0].status, "skipped");
    stack.stop().await;
}
