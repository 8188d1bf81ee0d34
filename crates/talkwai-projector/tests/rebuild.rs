//! Blue/green rebuilds, rollbacks, tenant rebuilds and point-in-time replays, against real
//! nats-server and PostgreSQL, with commands arriving and readers reading throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Stack, random_commands};
use talkwai_projector::rebuild::{self, RebuildOptions, Until};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_swaps_atomically_with_parity() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    random_commands(&stack, 21, 3, 300).await;
    stack.wait_caught_up(&db).await;

    // A reader that queries the views in a loop and must never fail or see a partial
    // generation (a generation's row counts only grow while commands only create tenants).
    let reading = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let pg = stack.pg_client(&db).await;
        let reading = Arc::clone(&reading);
        let reads = Arc::clone(&reads);
        tokio::spawn(async move {
            let mut last_tenants = 0i64;
            while reading.load(Ordering::Relaxed) {
                let row = pg
                    .query_one(
                        "SELECT (SELECT count(*) FROM talkwai.tenants), (SELECT count(*) FROM talkwai.tasks),
                                (SELECT last_seq FROM talkwai.checkpoint)",
                        &[],
                    )
                    .await
                    .expect("the views always answer");
                let tenants: i64 = row.get(0);
                assert!(
                    tenants >= last_tenants,
                    "tenants went from {last_tenants} to {tenants}: a partial generation"
                );
                last_tenants = tenants;
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Commands keep arriving during the rebuild (tenant creations only, see the reader).
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let client = stack.client.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
                headers.insert(
                    "Authorization",
                    format!("Bearer {}", common::PLATFORM).as_str(),
                );
                let body = serde_json::json!({"id": Uuid::new_v4(), "name": format!("During {n}")});
                let _ = client
                    .request_with_headers(
                        "talkwai.cmd.platform.tenant.create",
                        headers,
                        body.to_string().into(),
                    )
                    .await;
                n += 1;
            }
            n
        })
    };
    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let progress_calls = AtomicU64::new(0);
    let report = rebuild::rebuild(
        &pool,
        &stack.store,
        &RebuildOptions {
            batch_size: 100,
            // A small bulk window: rows flushed are read back, replaced and re-copied.
            bulk_rows: 40,
            ..Default::default()
        },
        &|_| {
            progress_calls.fetch_add(1, Ordering::Relaxed);
        },
    )
    .await
    .expect("rebuild succeeds");
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 0, "commands arrived during the rebuild");
    assert!(report.swapped);
    assert_eq!(report.previous, Some(1));
    common::assert_parity(&report);
    assert!(progress_calls.load(Ordering::Relaxed) > 0);

    // The projector follows the swap and keeps the new generation current.
    random_commands(&stack, 22, 1, 50).await;
    stack.wait_caught_up(&db).await;
    reading.store(false, Ordering::Relaxed);
    reader.await.expect("reader never failed");
    assert!(reads.load(Ordering::Relaxed) > 10);
    assert_eq!(stack.tables(&db).await, stack.model_from_log().await);
    let pg = stack.pg_client(&db).await;
    let live: String = pg
        .query_one(
            "SELECT schema_name FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await
        .expect("live")
        .get(0);
    assert_eq!(live, report.schema);

    // Rollback points the views at the previous generation, which catches up again.
    let (from, to) = rebuild::rollback(&pool).await.expect("rollback");
    assert_eq!((from, to), (report.generation, 1));
    random_commands(&stack, 23, 1, 20).await;
    stack.wait_caught_up(&db).await;
    assert_eq!(stack.tables(&db).await, stack.model_from_log().await);
    // The retired generation can be dropped; the live one cannot.
    rebuild::drop_generation(&pool, report.generation)
        .await
        .expect("drop retired");
    assert!(rebuild::drop_generation(&pool, 1).await.is_err());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_rebuild_repairs_only_that_tenants_rows() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    random_commands(&stack, 31, 2, 200).await;
    stack.wait_caught_up(&db).await;
    let pg = stack.pg_client(&db).await;
    let tenant: Uuid = pg
        .query_one("SELECT id FROM talkwai.tenants ORDER BY id LIMIT 1", &[])
        .await
        .expect("tenant")
        .get(0);
    // Damage the tenant's rows behind the projector's back.
    pg.execute(
        "UPDATE talkwai_g1.tasks SET subject = 'corrupted' WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .expect("damage");
    pg.execute(
        "DELETE FROM talkwai_g1.members WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .expect("damage");
    assert_ne!(stack.tables(&db).await, stack.model_from_log().await);
    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let options = RebuildOptions {
        tenant: Some(tenant.into()),
        force: true,
        ..Default::default()
    };
    let report = rebuild::rebuild(&pool, &stack.store, &options, &|_| {})
        .await
        .expect("tenant rebuild");
    assert!(report.swapped);
    assert!(
        report.parity.iter().any(|p| !p.same_content),
        "the damage was detected"
    );
    assert_eq!(
        stack.tables(&db).await,
        stack.model_from_log().await,
        "the tenant's rows are repaired"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_to_a_sequence_builds_a_snapshot_as_of_then() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    random_commands(&stack, 41, 2, 100).await;
    let then = stack.store.last_sequence().await.expect("head");
    let model_then = stack.model_from_log().await;
    random_commands(&stack, 42, 2, 100).await;
    stack.start_projector(stack.projector_config(&db)).await;
    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let (_, upto) = rebuild::replay_until(
        &pool,
        &stack.store,
        None,
        Until::Seq(then),
        "audit_then",
        &|_| {},
    )
    .await
    .expect("replay");
    assert_eq!(upto, then);
    let pg = stack.pg_client(&db).await;
    for table in talkwai_projector::schema::TABLES {
        let rows = pg
            .query(
                &format!("SELECT id::text, to_jsonb(t) FROM audit_then.{table} t"),
                &[],
            )
            .await
            .expect("snapshot table");
        let rows: std::collections::BTreeMap<String, serde_json::Value> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(&rows, &model_then[table], "{table} as of sequence {then}");
    }
    stack.stop().await;
}
