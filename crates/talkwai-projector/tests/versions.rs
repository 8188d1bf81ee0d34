//! Event versions end to end, against real nats-server and PostgreSQL: a log that mixes
//! `task.completed` / `task.failed` v1 (the golden history's v1 file, published as an earlier
//! command service stored it) with v2 (written by today's command service, on those same tasks
//! and on new ones) projects live into the rows the domain folds from the log, and a rebuild
//! from that log equals the live projection.

mod common;

use std::collections::BTreeMap;

use common::{Stack, random_commands};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_projector::rebuild::{self, RebuildOptions};
use uuid::Uuid;

/// The golden history's tenant and tasks (`proto/fixtures/history/0001-v1.jsonl`).
const TENANT: &str = "0190aaaa-0000-7000-8000-000000000101";
fn history_task(n: u32) -> String {
    format!("0190aaaa-0000-7000-8000-000000000{:03x}", 0x500 + n)
}

/// Publishes every line of the v1 history file as stored (subject, headers, body).
async fn publish_v1_history(stack: &Stack) -> usize {
    let path = talkwai_proto::generate::proto_dir().join("fixtures/history/0001-v1.jsonl");
    let text = std::fs::read_to_string(&path).expect("history file");
    let js = async_nats::jetstream::new(stack.client.clone());
    let mut published = 0;
    for raw in text.lines() {
        let line: Value = serde_json::from_str(raw).expect("history line");
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in line["headers"].as_object().expect("headers") {
            headers.insert(name.as_str(), value.as_str().expect("header text"));
        }
        let subject = line["subject"].as_str().expect("subject").to_owned();
        js.publish_with_headers(subject, headers, line["body"].to_string().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        published += 1;
    }
    published
}

/// How many events of each `type vN` the log holds.
async fn versions_in_log(stack: &Stack) -> BTreeMap<String, usize> {
    let head = stack.store.last_sequence().await.expect("head");
    let mut replay = stack.store.replay(1, vec![]).await.expect("replay");
    let mut counts = BTreeMap::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("message");
        let body: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        if let (Some(ty), Some(version)) = (body["type"].as_str(), body["version"].as_u64()) {
            *counts.entry(format!("{ty} v{version}")).or_insert(0) += 1;
        }
        if message.seq >= head {
            break;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_a_log_mixing_v1_and_v2_equals_the_live_projection() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    assert!(publish_v1_history(&stack).await > 50);

    // Today's command service decides on the v1 histories (read through the upcasters) and
    // writes v2: task 5 was started under v1 and completes with an outcome; task 1 was
    // retried and started under v1 and fails with one; task 4 failed under v1 (no outcome),
    // is retried and completes without one.
    let cmd = |action: &str| format!("talkwai.cmd.{TENANT}.task.{action}");
    let outcome = json!({"summary": "Booked for Tuesday 14:30", "durationSecs": 71.25,
                         "transcriptRef": "transcripts/k5.json"});
    stack
        .ok(
            &cmd("complete"),
            json!({"id": history_task(5), "outcome": outcome}),
        )
        .await;
    stack
        .ok(
            &cmd("fail"),
            json!({"id": history_task(1), "reason": "line busy",
                   "outcome": {"summary": "Busy twice"}}),
        )
        .await;
    stack
        .ok(&cmd("retry"), json!({"id": history_task(4)}))
        .await;
    stack
        .ok(&cmd("start"), json!({"id": history_task(4)}))
        .await;
    stack
        .ok(&cmd("complete"), json!({"id": history_task(4)}))
        .await;
    // A summary over its bound is a typed error naming the field, and nothing is written.
    let new_task = Uuid::new_v4();
    stack
        .ok(
            &cmd("create"),
            json!({"id": new_task, "type": "call", "fromAddress": "+15550001111",
                   "toAddress": "+15550002222"}),
        )
        .await;
    stack.ok(&cmd("start"), json!({"id": new_task})).await;
    let refused = stack
        .send(
            &cmd("complete"),
            json!({"id": new_task, "outcome": {"summary": "x".repeat(4_001)}}),
        )
        .await
        .expect_err("too long");
    assert_eq!(
        refused.field.as_deref(),
        Some("outcome.summary"),
        "{refused:?}"
    );
    // New tasks and random traffic (half of the completions and failures report outcomes).
    random_commands(&stack, 41, 2, 250).await;

    let versions = versions_in_log(&stack).await;
    for mixed in [
        "task.completed v1",
        "task.completed v2",
        "task.failed v1",
        "task.failed v2",
    ] {
        assert!(
            versions.get(mixed).is_some_and(|n| *n > 0),
            "{mixed}: {versions:?}"
        );
    }

    stack.wait_caught_up(&db).await;
    let live = stack.tables(&db).await;
    assert_eq!(
        live,
        stack.model_from_log().await,
        "live rows = the log folded"
    );
    let task5 = &live["tasks"][&history_task(5)];
    assert_eq!(task5["outcome"], outcome, "{task5}");
    assert_eq!(task5["outcome_summary"], "Booked for Tuesday 14:30");
    let task4 = &live["tasks"][&history_task(4)];
    assert_eq!(task4["status"], "completed");
    assert_eq!(task4["outcome"], Value::Null, "{task4}");

    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let report = rebuild::rebuild(
        &pool,
        &stack.store,
        &RebuildOptions {
            bulk_rows: 64,
            ..Default::default()
        },
        &|_| {},
    )
    .await
    .expect("rebuild succeeds");
    assert!(report.swapped, "{report:?}");
    common::assert_parity(&report);
    assert_eq!(stack.tables(&db).await, live, "rebuilt rows = live rows");
    stack.stop().await;
}

/// A database whose generations predate task outcomes gets the two columns from migration 3
/// (no rebuild: their rows keep their values and read `NULL` outcomes), and the views show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3_adds_the_outcome_columns_to_existing_generations() {
    let (_pg, _pool, conn, live) = migrated_database("migrate").await;
    // Back to the layout before migration 3 (so before migration 4 too), with a task in it.
    conn.batch_execute(&format!(
        "DROP VIEW talkwai.tasks;
         ALTER TABLE {live}.tasks DROP COLUMN outcome, DROP COLUMN outcome_summary,
             DROP COLUMN erased;
         DELETE FROM talkwai_meta.migrations WHERE version IN (3, 4);
         CREATE VIEW talkwai.tasks AS SELECT * FROM {live}.tasks;
         INSERT INTO {live}.tasks (id, tenant_id, type, status, priority, from_address,
             to_address, created_at, updated_at, version, last_seq)
         VALUES ('{TENANT}', '{TENANT}', 'call', 'completed', 'low', '+15550001111',
             '+15550002222', 1, 2, 3, 4);"
    ))
    .await
    .expect("old layout");
    talkwai_projector::schema::migrate(&conn)
        .await
        .expect("migration 3");
    let columns = |table: &'static str| {
        let conn = &conn;
        let live = live.clone();
        async move {
            let schema = if table == "view" {
                "talkwai".to_owned()
            } else {
                live
            };
            conn.query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'tasks' ORDER BY ordinal_position",
                &[&schema],
            )
            .await
            .expect("columns")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
        }
    };
    let expected: Vec<String> = talkwai_projector::schema::COLUMNS
        .iter()
        .find(|(t, _)| *t == "tasks")
        .expect("tasks")
        .1
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    assert_eq!(columns("table").await, expected, "{live}.tasks");
    assert_eq!(columns("view").await, expected, "talkwai.tasks");
    let row = conn
        .query_one(
            "SELECT status, outcome IS NULL, outcome_summary IS NULL FROM talkwai.tasks",
            &[],
        )
        .await
        .expect("the old row");
    assert_eq!(row.get::<_, String>(0), "completed");
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
}

/// A database whose generations predate erasure gets migration 4 in place: the personal
/// columns of members, admins, tasks and users become nullable, each gets `erased` (false for
/// the rows that exist, which keep their values), and the views show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_4_makes_personal_columns_nullable_and_adds_erased_in_place() {
    let (_pg, _pool, conn, live) = migrated_database("migrate4").await;
    let tables = ["members", "admins", "tasks", "users"];
    // Back to the layout before migration 4, with a member in it.
    let mut old = String::from("DELETE FROM talkwai_meta.migrations WHERE version = 4;");
    for table in tables {
        old.push_str(&format!(
            "DROP VIEW talkwai.{table}; ALTER TABLE {live}.{table} DROP COLUMN erased;
             CREATE VIEW talkwai.{table} AS SELECT * FROM {live}.{table};"
        ));
    }
    old.push_str(&format!(
        "ALTER TABLE {live}.members ALTER COLUMN email SET NOT NULL;
         INSERT INTO {live}.members (id, tenant_id, first_name, last_name, email, role, status,
             created_at, updated_at, version, last_seq)
         VALUES ('{TENANT}', '{TENANT}', 'Ada', 'L', 'ada@acme.com', 'owner', 'active', 1, 2, 3, 4);"
    ));
    conn.batch_execute(&old).await.expect("old layout");
    talkwai_projector::schema::migrate(&conn)
        .await
        .expect("migration 4");
    for table in tables {
        let expected: Vec<String> = talkwai_projector::schema::COLUMNS
            .iter()
            .find(|(t, _)| *t == table)
            .expect("table")
            .1
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        for schema in [live.as_str(), "talkwai"] {
            let columns: Vec<String> = conn
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                    &[&schema, &table],
                )
                .await
                .expect("columns")
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(columns, expected, "{schema}.{table}");
        }
    }
    let row = conn
        .query_one("SELECT email, erased FROM talkwai.members", &[])
        .await
        .expect("the old row");
    assert_eq!(row.get::<_, String>(0), "ada@acme.com");
    assert!(!row.get::<_, bool>(1));
    conn.batch_execute(&format!(
        "UPDATE {live}.members SET first_name = NULL, last_name = NULL, email = NULL, erased = true"
    ))
    .await
    .expect("an erased member's row fits");
}

/// A fresh database, migrated, with its live generation: the server (keep it), the pool, a
/// connection and the generation's schema.
async fn migrated_database(
    name: &str,
) -> (
    talkwai_testkit::Postgres,
    deadpool_postgres::Pool,
    deadpool_postgres::Object,
    String,
) {
    let pg = talkwai_testkit::Postgres::start().await.expect("postgres");
    let db = pg.create_unique_database(name).await.expect("db");
    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let mut conn = pool.get().await.expect("conn");
    talkwai_projector::schema::migrate(&conn)
        .await
        .expect("migrate");
    let (_, live) = talkwai_projector::schema::live_generation(&mut conn)
        .await
        .expect("generation");
    (pg, pool, conn, live)
}

/// Migration 5 turns the page indexes of existing generations, `(…, created_at DESC, id)`,
/// into `(…, created_at, id)`, which serve a page in either direction; new generations are
/// made with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_5_orders_the_page_indexes_in_one_direction() {
    let (_pg, _pool, conn, live) = migrated_database("migrate5").await;
    let page_indexes = |schema: String| {
        let conn = &conn;
        async move {
            conn.query(
                "SELECT indexname::text, indexdef FROM pg_indexes
                 WHERE schemaname = $1 AND indexdef LIKE '%created_at%id%'
                   AND tablename IN ('members', 'agents', 'tasks') ORDER BY indexname",
                &[&schema],
            )
            .await
            .expect("indexes")
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
        }
    };
    let made = page_indexes(live.clone()).await;
    assert_eq!(made.len(), 5, "{made:?}");
    assert!(
        made.iter().all(|(_, def)| !def.contains("DESC")),
        "{made:?}"
    );
    // Back to the layout before migration 5.
    conn.batch_execute(&format!(
        "DROP INDEX {live}.members_tenant_id_created_at_id_idx,
             {live}.agents_tenant_id_created_at_id_idx, {live}.tasks_tenant_id_created_at_id_idx,
             {live}.tasks_tenant_id_status_created_at_id_idx,
             {live}.tasks_assigned_to_created_at_id_idx;
         CREATE INDEX ON {live}.members (tenant_id, created_at DESC, id);
         CREATE INDEX ON {live}.agents (tenant_id, created_at DESC, id);
         CREATE INDEX ON {live}.tasks (tenant_id, created_at DESC, id);
         CREATE INDEX ON {live}.tasks (tenant_id, status, created_at DESC, id);
         CREATE INDEX ON {live}.tasks (assigned_to, created_at DESC, id);
         DELETE FROM talkwai_meta.migrations WHERE version = 5;"
    ))
    .await
    .expect("old layout");
    let old = page_indexes(live.clone()).await;
    assert_eq!(old.len(), 5, "{old:?}");
    assert!(old.iter().all(|(_, def)| def.contains("DESC")), "{old:?}");
    talkwai_projector::schema::migrate(&conn)
        .await
        .expect("migration 5");
    assert_eq!(
        page_indexes(live).await,
        made,
        "as a new generation makes them"
    );
}
