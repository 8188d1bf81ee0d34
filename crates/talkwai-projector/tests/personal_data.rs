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

/// Every file under `dir` holding `needle` as raw bytes (`"<needle> in <path>"`).
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    talkwai_testkit::scan::files_holding(dir, &[needle.as_bytes()])
}

/// Sends a command as the platform, resending it with the same command id while the service
/// answers `unavailable` (a partition changing hands on a loaded machine), for at most 30 s.
async fn ok(stack: &Stack, subject: &str, body: serde_json::Value) {
    use talkwai_testkit::services::{COMMAND_TIMEOUT, send_command};
    let id = Uuid::new_v4();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let reply = send_command(
            &stack.client,
            subject,
            serde_json::to_vec(&body).expect("json"),
            Some(common::PLATFORM),
            Some(id),
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        match reply.into_result() {
            Ok(_) => return,
            Err(e)
                if e.code == talkwai_domain::ErrorCode::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{subject} {body}: {e:?}"),
        }
    }
}

/// A member and a task of a new tenant, every personal field holding `marker`.
async fn write_marked(stack: &Stack, marker: &str) -> (Uuid, Uuid, Uuid) {
    let (tenant, member, task) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    ok(
        stack,
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Sealed Dental"}),
    )
    .await;
    ok(
        stack,
        &format!("talkwai.cmd.{tenant}.member.create"),
        json!({
            "id": member, "tenant": tenant, "role": "owner",
            "firstName": format!("{marker}first"), "lastName": format!("{marker}last"),
            "email": format!("{marker}@example.com"), "phone": "+15550001111"
        }),
    )
    .await;
    ok(
        stack,
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
        Vec::<String>::new(),
        "a personal value in clear in nats-server's files"
    );

    // A rebuild opens the same fields and matches the live generation.
    let (_, report) = rebuild_opening(&stack, &db).await;
    common::assert_parity(&report);
    stack.stop().await;
}

/// A whole rebuild of `db` opening sealed fields with the stack's keys; the pool and report.
async fn rebuild_opening(
    stack: &Stack,
    db: &str,
) -> (deadpool_postgres::Pool, rebuild::RebuildReport) {
    let pool = talkwai_projector::pool(db, 2).expect("pool");
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
    (pool, report)
}

/// `pg_dump` of the whole database, as text.
fn pg_dump(db: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .arg(format!("--dbname={db}"))
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every message of the log (subject, headers, payload), as `talkwai events export` writes it.
async fn log_dump(stack: &Stack) -> String {
    use futures::StreamExt;
    let head = stack.store.last_sequence().await.expect("head");
    let mut replay = stack.store.replay(1, vec![]).await.expect("replay");
    let mut out = String::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("message");
        out.push_str(&message.subject);
        out.push_str(&format!("{:?}", message.headers));
        out.push_str(&String::from_utf8_lossy(&message.payload));
        out.push('\n');
        if message.seq >= head {
            break;
        }
    }
    out
}

/// The data key of an aggregate's subject (its `Talkwai-Key`).
async fn key_of(stack: &Stack, subject: &str) -> Uuid {
    let messages = stack.store.read_subject(subject, 0).await.expect("history");
    messages
        .iter()
        .find_map(|m| talkwai_proto::event::data_key(|name| m.header(name)))
        .unwrap_or_else(|| panic!("{subject} has a sealed event"))
}

/// The proof of erasure: a member and a task written with unique markers are readable; once
/// their keys are destroyed and the read models rebuilt (the old generation dropped), no marker
/// is left in nats-server's files, in a `pg_dump` of the whole database, or in the log as an
/// export writes it; the rebuilt rows hold NULL with the `erased` marker (never a placeholder),
/// and the rest of the tenant stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_keys_leave_no_marker_in_the_log_the_database_or_an_export() {
    let (_, master) = MasterKey::generate();
    let mut stack = Stack::start_with_keys(KeyArgs::with_master(&master)).await;
    let db = stack.db.clone();
    let marker = format!("mk{}", Uuid::new_v4().simple());
    let kept = format!("kp{}", Uuid::new_v4().simple());
    let (tenant, member, task) = write_marked(&stack, &marker).await;
    let (_, other_member, _) = write_marked(&stack, &kept).await;
    stack.start_projector(stack.projector_config(&db)).await;
    stack.wait_caught_up(&db).await;
    let dump = pg_dump(&db);
    assert!(
        dump.contains(&format!("{marker}first")) && dump.contains(&format!("{marker}content")),
        "the markers are readable before the erasure (the scan can fail)"
    );

    let js = async_nats::jetstream::new(stack.client.clone());
    let keys = stack.keys.open(&js, 1).await.expect("key store");
    let store = keys.clone().expect("a master key is configured");
    let scope = talkwai_proto::Scope::Tenant(tenant.into());
    for subject in [
        format!("talkwai.evt.{tenant}.member.{member}"),
        format!("talkwai.evt.{tenant}.task.{task}"),
    ] {
        let key = key_of(&stack, &subject).await;
        store.destroy(scope, key).await.expect("destroys");
    }

    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let report = rebuild::rebuild(
        &pool,
        &stack.store,
        &RebuildOptions {
            keys,
            force: true,
            ..RebuildOptions::default()
        },
        &|_| {},
    )
    .await
    .expect("rebuild");
    assert!(report.swapped, "the rebuilt generation is live");
    let previous = report
        .previous
        .expect("a whole rebuild replaces a generation");
    rebuild::drop_generation(&pool, previous)
        .await
        .expect("the old generation is dropped");

    let pg = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .map(|(client, conn)| {
            tokio::spawn(conn);
            client
        })
        .expect("pg");
    let row = pg
        .query_one(
            "SELECT first_name, email, phone FROM talkwai.members WHERE id = $1",
            &[&member],
        )
        .await
        .expect("the erased member keeps its row");
    // Erased fields are NULL with the row's marker, never a placeholder.
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(erased(&pg, "members", member).await);
    let row = pg
        .query_one(
            "SELECT assigned_to, subject FROM talkwai.tasks WHERE id = $1",
            &[&task],
        )
        .await
        .expect("the erased task keeps its row");
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(member), "links stay");
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert!(erased(&pg, "tasks", task).await);
    let row = pg
        .query_one(
            "SELECT first_name FROM talkwai.members WHERE id = $1",
            &[&other_member],
        )
        .await
        .expect("another member");
    assert_eq!(row.get::<_, String>(0), format!("{kept}first"), "untouched");
    assert!(!erased(&pg, "members", other_member).await);

    assert_no_marker(&stack, &db, &marker).await;
    stack.stop().await;
}

/// The row's `erased` marker.
async fn erased(pg: &tokio_postgres::Client, table: &str, id: Uuid) -> bool {
    pg.query_one(
        &format!("SELECT erased FROM talkwai.{table} WHERE id = $1"),
        &[&id],
    )
    .await
    .unwrap_or_else(|e| panic!("{table} {id}: {e}"))
    .get(0)
}

/// No trace of `marker` (nor of the values [`write_marked`] built from it) in a `pg_dump` of
/// the whole database, in the log's messages or in nats-server's files.
async fn assert_no_marker(stack: &Stack, db: &str, marker: &str) {
    let dump = pg_dump(db);
    let log = log_dump(stack).await;
    for needle in [
        format!("{marker}first"),
        format!("{marker}last"),
        format!("{marker}@example.com"),
        format!("{marker}subject"),
        format!("{marker}content"),
        format!("{marker}from"),
        format!("{marker}to"),
        marker.to_owned(),
    ] {
        assert!(!dump.contains(&needle), "{needle} in pg_dump");
        assert!(!log.contains(&needle), "{needle} in the log's messages");
        assert_eq!(
            files_holding(stack.nats.store_dir(), &needle),
            Vec::<String>::new(),
            "{needle} in nats-server's files"
        );
    }
}

/// The personal columns of a member, a task and a user, NULL or not, with their markers.
async fn personal_rows(
    pg: &tokio_postgres::Client,
    member: Uuid,
    task: Uuid,
    user: Uuid,
) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    for (sql, id) in [
        (
            "SELECT first_name, erased FROM talkwai.members WHERE id = $1",
            member,
        ),
        (
            "SELECT last_name, erased FROM talkwai.members WHERE id = $1",
            member,
        ),
        (
            "SELECT email, erased FROM talkwai.members WHERE id = $1",
            member,
        ),
        (
            "SELECT phone, erased FROM talkwai.members WHERE id = $1",
            member,
        ),
        (
            "SELECT from_address, erased FROM talkwai.tasks WHERE id = $1",
            task,
        ),
        (
            "SELECT to_address, erased FROM talkwai.tasks WHERE id = $1",
            task,
        ),
        (
            "SELECT subject, erased FROM talkwai.tasks WHERE id = $1",
            task,
        ),
        (
            "SELECT content, erased FROM talkwai.tasks WHERE id = $1",
            task,
        ),
        (
            "SELECT outcome_summary, erased FROM talkwai.tasks WHERE id = $1",
            task,
        ),
        (
            "SELECT outcome->>'summary', erased FROM talkwai.tasks WHERE id = $1",
            task,
        ),
        (
            "SELECT email, erased FROM talkwai.users WHERE id = $1",
            user,
        ),
    ] {
        let row = pg
            .query_one(sql, &[&id])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        out.push((sql.to_owned(), row.get(0), row.get(1)));
    }
    out
}

/// The proof of erasure through the commands: a member (with its `$users` identity) and a task
/// (with a reported outcome) written with unique markers are erased by `member.erase`,
/// `user.erase` and `task.eraseContent`; the live read models show NULL and `erased` at once,
/// so does a rebuild (the old generation dropped), and no marker is left in nats-server's
/// files, a `pg_dump` of the whole database or the log; ids, links and statuses stay, and a
/// resent erasure is answered the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_erase_commands_leave_no_marker_in_the_log_the_database_or_an_export() {
    let (_, master) = MasterKey::generate();
    let mut stack = Stack::start_with_keys(KeyArgs::with_master(&master)).await;
    let db = stack.db.clone();
    let marker = format!("mk{}", Uuid::new_v4().simple());
    let kept = format!("kp{}", Uuid::new_v4().simple());
    let (tenant, member, task) = write_marked(&stack, &marker).await;
    let (_, other_member, other_task) = write_marked(&stack, &kept).await;
    let user = Uuid::new_v4();
    ok(
        &stack,
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": format!("{marker}user@example.com")}),
    )
    .await;
    ok(
        &stack,
        &format!("talkwai.cmd.{tenant}.member.linkUser"),
        json!({"id": member, "user": user}),
    )
    .await;
    ok(
        &stack,
        &format!("talkwai.cmd.{tenant}.task.start"),
        json!({"id": task}),
    )
    .await;
    ok(
        &stack,
        &format!("talkwai.cmd.{tenant}.task.complete"),
        json!({"id": task, "outcome": {"summary": format!("{marker}summary"), "durationSecs": 12}}),
    )
    .await;
    stack.start_projector(stack.projector_config(&db)).await;
    stack.wait_caught_up(&db).await;
    let pg = stack.pg_client(&db).await;
    let before = personal_rows(&pg, member, task, user).await;
    for (sql, value, erased) in &before {
        assert!(!erased, "{sql}: not erased yet");
        if !sql.contains("phone") {
            assert!(
                value.as_deref().is_some_and(|v| v.contains(&marker)),
                "{sql}: {value:?} holds the marker before the erasure (the scan can fail)"
            );
        }
    }

    // Erased through the commands; each reply says the key is destroyed and nothing was clear.
    let erasures = [
        (format!("talkwai.cmd.{tenant}.member.erase"), member),
        (format!("talkwai.cmd.{tenant}.task.eraseContent"), task),
        ("talkwai.cmd.platform.user.erase".to_owned(), user),
    ];
    for (subject, id) in &erasures {
        let accepted = stack.ok(subject, json!({"id": id})).await;
        assert_eq!(accepted.events.len(), 1, "{subject}");
        assert!(
            accepted.events[0].event_type.ends_with("rased"),
            "{subject}"
        );
        assert_eq!(
            accepted.erasure,
            Some(talkwai_proto::ErasureReport {
                key_destroyed: true,
                clear_in_log: false,
            }),
            "{subject}"
        );
        // Again: nothing more is appended, the key is (still) destroyed.
        let again = stack.ok(subject, json!({"id": id})).await;
        assert!(again.events.is_empty(), "{subject} a second time");
        assert_eq!(again.erasure.map(|e| e.key_destroyed), Some(true));
    }
    // What is personal can no longer be written about them.
    let refused = stack
        .send(
            &format!("talkwai.cmd.{tenant}.member.update"),
            json!({"id": member, "firstName": "Again"}),
        )
        .await
        .expect_err("an erased member takes no new name");
    assert_eq!(refused.code, talkwai_domain::ErrorCode::InvalidTransition);

    // The live read models, scrubbed in the transaction that applied the events.
    stack.wait_caught_up(&db).await;
    for (sql, value, erased) in personal_rows(&pg, member, task, user).await {
        assert_eq!(value, None, "{sql}");
        assert!(erased, "{sql}");
    }
    let row = pg
        .query_one(
            "SELECT t.assigned_to, t.status, m.user_id FROM talkwai.tasks t
             JOIN talkwai.members m ON m.id = t.assigned_to WHERE t.id = $1",
            &[&task],
        )
        .await
        .expect("the task and its assignee keep their rows");
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(member), "links stay");
    assert_eq!(row.get::<_, String>(1), "completed");
    assert_eq!(row.get::<_, Option<Uuid>>(2), Some(user));
    for (table, id) in [("members", other_member), ("tasks", other_task)] {
        assert!(!erased(&pg, table, id).await, "{table} of another subject");
    }

    // Rebuilt from the log, the old generation dropped: the same, and nothing left anywhere.
    let (pool, report) = rebuild_opening(&stack, &db).await;
    common::assert_parity(&report);
    let previous = report
        .previous
        .expect("a whole rebuild replaces a generation");
    rebuild::drop_generation(&pool, previous)
        .await
        .expect("the old generation is dropped");
    for (sql, value, erased) in personal_rows(&pg, member, task, user).await {
        assert_eq!(value, None, "rebuilt: {sql}");
        assert!(erased, "rebuilt: {sql}");
    }
    assert_no_marker(&stack, &db, &marker).await;
    stack.stop().await;
}

/// Without a master key nothing is sealed: an erasure destroys no key and says so (the log
/// keeps the values in clear), yet every read model shows the subject erased from the event on,
/// live and rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_of_data_written_in_clear_says_so_and_still_scrubs_the_read_models() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    let marker = format!("mk{}", Uuid::new_v4().simple());
    let (tenant, member, task) = write_marked(&stack, &marker).await;
    stack.start_projector(stack.projector_config(&db)).await;
    for (subject, id) in [
        (format!("talkwai.cmd.{tenant}.member.erase"), member),
        (format!("talkwai.cmd.{tenant}.task.eraseContent"), task),
    ] {
        let accepted = stack.ok(&subject, json!({"id": id})).await;
        assert_eq!(
            accepted.erasure,
            Some(talkwai_proto::ErasureReport {
                key_destroyed: false,
                clear_in_log: true,
            }),
            "{subject}"
        );
    }
    stack.wait_caught_up(&db).await;
    let pg = stack.pg_client(&db).await;
    let check = |generation: &'static str| {
        let pg = &pg;
        async move {
            let row = pg
                .query_one(
                    "SELECT m.first_name, m.email, m.erased, t.content, t.from_address, t.erased
                     FROM talkwai.members m JOIN talkwai.tasks t ON t.assigned_to = m.id
                     WHERE m.id = $1",
                    &[&member],
                )
                .await
                .expect("rows");
            assert_eq!(row.get::<_, Option<String>>(0), None, "{generation}");
            assert_eq!(row.get::<_, Option<String>>(1), None, "{generation}");
            assert!(row.get::<_, bool>(2), "{generation}");
            assert_eq!(row.get::<_, Option<String>>(3), None, "{generation}");
            assert_eq!(row.get::<_, Option<String>>(4), None, "{generation}");
            assert!(row.get::<_, bool>(5), "{generation}");
        }
    };
    check("live").await;
    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let report = rebuild::rebuild(&pool, &stack.store, &RebuildOptions::default(), &|_| {})
        .await
        .expect("rebuild");
    common::assert_parity(&report);
    check("rebuilt").await;
    // What the reply warned of: the log still holds the values.
    assert!(log_dump(&stack).await.contains(&format!("{marker}first")));
    stack.stop().await;
}
