//! The `talkwai-projector` binary SIGKILLed again and again while it catches up on a long log:
//! every restart resumes from the checkpoint committed with the rows, and the result equals a
//! clean projection of the same log, row for row, `version` and `last_seq` included (no event
//! applied twice, none skipped).

mod common;

use std::time::Duration;

use common::{Rng, Stack};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::ids::TenantId;
use talkwai_domain::{Event, EventBody};
use talkwai_eventstore::{AppendRequest, AppenderConfig, Outbound, header_map};
use talkwai_proto::Scope;
use talkwai_proto::event::{ActorRef, CommandPart, EventMeta};
use talkwai_testkit::wait::poll_until;
use tokio::process::{Child, Command};
use uuid::Uuid;

const TENANTS: usize = 10;
const TASKS_PER_TENANT: usize = 200;
/// Events per task: created, then updates and metadata changes.
const EVENTS_PER_TASK: usize = 10;

/// One event as the command service writes it: the body through the domain's `Event::encode`
/// and the same headers.
fn outbound(subject: &str, tenant: Uuid, body: Value, part: (usize, usize)) -> Outbound {
    let body: EventBody = serde_json::from_value(body).expect("an event body");
    let event = Event::decode(&body).unwrap_or_else(|e| panic!("{body:?} does not decode: {e}"));
    let body = event.encode();
    let meta = EventMeta {
        part: Some(CommandPart {
            index: u32::try_from(part.0).expect("a part"),
            total: u32::try_from(part.1).expect("parts"),
        }),
        ..EventMeta::lone(
            &body,
            Scope::Tenant(TenantId(tenant)),
            ActorRef::Platform,
            Uuid::new_v4(),
            1_751_360_400_000,
        )
    };
    let h = header_map(meta.to_headers());
    Outbound {
        subject: subject.to_owned(),
        headers: h,
        payload: serde_json::to_vec(&body).expect("json").into(),
        expected_last_subject_seq: None,
    }
}

/// Writes `TENANTS` tenants with `TASKS_PER_TENANT` tasks of `EVENTS_PER_TASK` events each,
/// many appends in flight (the appender groups them); returns the stream head.
async fn write_log(stack: &Stack) -> u64 {
    let appender = stack.store.appender(AppenderConfig::default());
    let at = 1_751_360_400_000i64;
    let mut requests = Vec::new();
    for t in 0..TENANTS {
        let tenant = Uuid::new_v4();
        requests.push(vec![outbound(
            &format!("talkwai.evt.{tenant}.tenant.{tenant}"),
            tenant,
            json!({"type": "tenant.created", "version": 1, "data": {
                "at": at, "name": format!("Tenant {t}"), "domain": null, "status": "active"}}),
            (1, 1),
        )]);
        for k in 0..TASKS_PER_TENANT {
            let task = Uuid::new_v4();
            let subject = format!("talkwai.evt.{tenant}.task.{task}");
            let mut events = vec![outbound(
                &subject,
                tenant,
                json!({"type": "task.created", "version": 1, "data": {
                    "at": at, "type": "call", "status": "pending", "priority": "high",
                    "fromAddress": "+15550001111", "toAddress": "+15550002222",
                    "subject": format!("task {k}"), "content": null, "metadata": null,
                    "scheduledAt": null, "agent": null, "assignedTo": null,
                    "createdBy": null, "createdByAdmin": null}}),
                (1, 1),
            )];
            for n in 1..EVENTS_PER_TASK {
                let at = at + i64::try_from(n).expect("small");
                let body = if n % 2 == 0 {
                    json!({"type": "task.metadataSet", "version": 1, "data": {
                        "at": at, "metadata": format!("{{\"n\":{n}}}")}})
                } else {
                    json!({"type": "task.updated", "version": 1, "data": {
                        "at": at, "subject": format!("task {k} v{n}")}})
                };
                events.push(outbound(&subject, tenant, body, (1, 1)));
            }
            requests.push(events);
        }
    }
    let mut appends = futures::stream::iter(requests.into_iter().map(|messages| {
        let appender = appender.clone();
        async move {
            appender
                .append(AppendRequest {
                    messages,
                    dedupe_id: None,
                    claim_first: false,
                })
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
        }
    }))
    .buffer_unordered(256);
    while appends.next().await.is_some() {}
    stack.store.last_sequence().await.expect("head")
}

fn spawn_projector(stack: &Stack, db: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_talkwai-projector"))
        .env("TALKWAI_NATS_URL", stack.nats.url())
        .env("TALKWAI_DATABASE_URL", db)
        .env("TALKWAI_PROJECTOR_BATCH_SIZE", "200")
        .env("TALKWAI_INSTANCE", "projector-kill-test")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start talkwai-projector: {e}"))
}

async fn checkpoint(pg: &tokio_postgres::Client) -> u64 {
    // The view does not exist until the first run has created generation 1.
    pg.query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
        .await
        .map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

async fn applied(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one("SELECT applied FROM talkwai.checkpoint", &[])
        .await
        .expect("checkpoint row")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_projector_resumes_without_losing_or_repeating_an_event() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    let head = write_log(&stack).await;
    let expected_events = TENANTS * (1 + TASKS_PER_TENANT * EVENTS_PER_TASK);
    assert_eq!(
        talkwai_testkit::services::command_head(stack.store.client())
            .await
            .unwrap_or_else(|e| panic!("head: {e}")),
        u64::try_from(expected_events).expect("fits"),
        "the whole log was written (besides the command service's fences)"
    );

    let pg = stack.pg_client(&db).await;
    let mut rng = Rng(0x5eed_cafe);
    let mut child = spawn_projector(&stack, &db);
    let mut kills = Vec::new();
    let mut last = 0u64;
    let kill_count = 4 + usize::from(rng.chance(50));
    while kills.len() < kill_count {
        // Let it get somewhere (a few batches past where it resumed), then kill it anywhere:
        // mid-batch, mid-commit, between a commit and its ack.
        let resumed = checkpoint(&pg).await;
        let advance = 400 + rng.next() % 2500;
        poll_until(
            Duration::from_secs(60),
            Duration::from_millis(1),
            || checkpoint(&pg),
            |now| *now >= resumed + advance || *now >= head,
        )
        .await
        .unwrap_or_else(|now| panic!("no progress past {now:?} after restart {}", kills.len()));
        tokio::time::sleep(Duration::from_millis(rng.next() % 15)).await;
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.expect("reaped");
        assert!(!status.success(), "killed, not exited: {status}");
        let at = checkpoint(&pg).await;
        assert!(at >= last, "the checkpoint went back from {last} to {at}");
        assert!(
            at < head,
            "killed at {at} of {head}: the log is too short for {kill_count} kills during catch-up"
        );
        last = at;
        kills.push(at);
        child = spawn_projector(&stack, &db);
    }
    eprintln!("killed at checkpoints {kills:?} of {head}");
    assert_eq!(stack.wait_caught_up(&db).await, head);
    assert_eq!(
        checkpoint(&pg).await,
        head,
        "the checkpoint equals the head"
    );
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;

    // A clean projection of the same log, by the in-process projector, into another database.
    let clean = stack
        .pg
        .create_unique_database("clean")
        .await
        .expect("database");
    stack.start_projector(stack.projector_config(&clean)).await;
    stack.wait_caught_up(&clean).await;
    let clean_pg = stack.pg_client(&clean).await;
    let crashed_tables = stack.tables(&db).await;
    let clean_tables = stack.tables(&clean).await;
    assert_eq!(
        crashed_tables["tasks"].len(),
        TENANTS * TASKS_PER_TENANT,
        "every task is there"
    );
    for (table, rows) in &clean_tables {
        let crashed = &crashed_tables[table];
        assert_eq!(crashed.len(), rows.len(), "{table}: row counts differ");
        for (id, row) in rows {
            assert_eq!(
                crashed.get(id),
                Some(row),
                "{table} {id} differs after the crashes"
            );
        }
    }
    assert_eq!(crashed_tables, clean_tables);
    assert_eq!(
        applied(&pg).await,
        applied(&clean_pg).await,
        "applied counts differ: an event was applied twice or skipped"
    );
    assert_eq!(
        applied(&pg).await,
        i64::try_from(expected_events).expect("fits")
    );
    assert_eq!(crashed_tables, stack.model_from_log().await);
    stack.stop().await;
}
