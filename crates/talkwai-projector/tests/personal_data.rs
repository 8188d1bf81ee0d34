//! Personal data sealed at rest, end to end on real nats-server and PostgreSQL: the command
//! service seals members' and tasks' personal fields with keys from `TALKWAI_KEYS`, nothing of
//! them reaches the server's files in clear, and the projector (live and rebuilt) opens them
//! into the read models.

mod common;

use common::Stack;
use serde_json::json;
use talkwai_keys::{KeyArgs, MasterKey};
use talkwai_projector::rebuild::{self, RebuildOptions};
use uuid::Uuid;

/// Every file under `dir` holding `needle` as raw bytes.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// A member and a task of a new tenant, every personal field holding `marker`.
async fn write_marked(stack: &Stack, marker: &str) -> (Uuid, Uuid, Uuid) {
    let (tenant, member, task) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    stack
        .ok(
            "talkwai.cmd.platform.tenant.create",
            json!({"id": tenant, "name": "Sealed Dental"}),
        )
        .await;
    stack
        .ok(
            &format!("talkwai.cmd.{tenant}.member.create"),
            json!({
                "id": member, "tenant": tenant, "role": "owner",
                "firstName": format!("{marker}first"), "lastName": format!("{marker}last"),
                "email": format!("{marker}@example.com"), "phone": "+15550001111"
            }),
        )
        .await;
    stack
        .ok(
            &format!("talkwai.cmd.{tenant}.task.create"),
            json!({
                "id": task, "tenant": tenant, "type": "call", "priority": "high",
                "assignedTo": member,
                "subject": format!("{marker}subject"), "content": format!("{marker}content"),
                "fromAddress": format!("{marker}from@example.com"),
                "toAddress": format!("{marker}to@example.com")
            }),
        )
        .await;
    (tenant, member, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_are_sealed_at_rest_and_open_in_the_read_models() {
    let (_, master) = MasterKey::generate();
    let mut stack = Stack::start_with_keys(KeyArgs::with_master(&master)).await;
    let db = stack.db.clone();
    let marker = format!("mk{}", Uuid::new_v4().simple());
    let (_, member, task) = write_marked(&stack, &marker).await;
    stack.start_projector(stack.projector_config(&db)).await;
    stack.wait_caught_up(&db).await;

    let pg = stack.pg_client(&db).await;
    let row = pg
        .query_one(
            "SELECT first_name, email FROM talkwai.members WHERE id = $1",
            &[&member],
        )
        .await
        .expect("member row");
    assert_eq!(row.get::<_, String>(0), format!("{marker}first"));
    assert_eq!(row.get::<_, String>(1), format!("{marker}@example.com"));
    let row = pg
        .query_one(
            "SELECT subject, content FROM talkwai.tasks WHERE id = $1",
            &[&task],
        )
        .await
        .expect("task row");
    assert_eq!(row.get::<_, String>(0), format!("{marker}subject"));
    assert_eq!(row.get::<_, String>(1), format!("{marker}content"));
    // The event log never holds them: every file of the server's store is clear of it.
    assert_eq!(
        files_holding(stack.nats.store_dir(), &marker),
        Vec::<std::path::PathBuf>::new(),
        "a personal value in clear in nats-server's files"
    );

    // A rebuild opens the same fields and matches the live generation.
    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let js = async_nats::jetstream::new(stack.client.clone());
    let keys = stack.keys.open(&js, 1).await.expect("key store");
    let report = rebuild::rebuild(
        &pool,
        &stack.store,
        &RebuildOptions {
            keys,
            ..RebuildOptions::default()
        },
        &|_| {},
    )
    .await
    .expect("rebuild");
    common::assert_parity(&report);
    stack.stop().await;
}
