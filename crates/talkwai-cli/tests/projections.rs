//! `talkwai projections ...` run as a process against a real nats-server and PostgreSQL, with
//! the command service and the projector running in this process.

mod common;

use std::time::Duration;

use common::{Harness, Run, task_body, world};
use serde_json::json;
use talkwai_testkit::Postgres;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The harness plus PostgreSQL and a projector on a fresh database.
struct Projected {
    h: Harness,
    _pg: Postgres,
    db: String,
    pg: tokio_postgres::Client,
    stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Projected {
    async fn start() -> Self {
        let h = Harness::start().await;
        let pg = Postgres::start()
            .await
            .unwrap_or_else(|e| panic!("postgres does not start: {e}"));
        let db = pg
            .create_unique_database("cli")
            .await
            .unwrap_or_else(|e| panic!("cannot create a database: {e}"));
        let config = talkwai_projector::Config::for_tests(&h.server.url(), &db);
        let projector = talkwai_projector::Projector::build(config)
            .await
            .unwrap_or_else(|e| panic!("projector does not build: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            projector
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap_or_else(|e| panic!("projector failed: {e}"));
        });
        let (client, connection) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {db}: {e}"));
        tokio::spawn(connection);
        Self {
            h,
            _pg: pg,
            db,
            pg: client,
            stop: Some((tx, handle)),
        }
    }

    async fn projections(&self, args: &[&str]) -> Run {
        let mut all = vec!["projections"];
        all.extend_from_slice(args);
        self.h
            .run(&all, &[("TALKWAI_DATABASE_URL", self.db.as_str())])
            .await
    }

    async fn checkpoint(&self) -> Option<u64> {
        let row = self
            .pg
            .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
            .await
            .ok()?;
        u64::try_from(row.get::<_, i64>(0)).ok()
    }

    /// Waits until the live checkpoint reaches the stream head.
    async fn caught_up(&self) -> u64 {
        let head = self.h.stream_head().await;
        talkwai_testkit::wait::wait_until(
            Duration::from_secs(30),
            Duration::from_millis(10),
            || async { self.checkpoint().await.is_some_and(|c| c >= head) },
        )
        .await
        .unwrap_or_else(|e| panic!("the projection never reached the head {head}: {e}"));
        head
    }

    async fn stop(mut self) {
        if let Some((tx, handle)) = self.stop.take() {
            let _ = tx.send(());
            let _ = handle.await;
        }
        self.h.stop().await;
    }
}

/// Creates `n` tasks in the world's tenant.
async fn tasks(p: &Projected, tenant: Uuid, token: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = Uuid::new_v4();
        p.h.ok(&format!("{tenant}.task.create"), task_body(id), token)
            .await;
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_live_generation_caught_up() {
    let p = Projected::start().await;
    let w = world(&p.h).await;
    tasks(&p, w.tenant, &w.owner_token, 3).await;
    let head = p.caught_up().await;

    let run = p.projections(&["status", "--json", "--rate"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let status = run.json();
    let live = &status[0];
    assert_eq!(live["generation"], json!(1));
    assert_eq!(live["schema"], json!("talkwai_g1"));
    assert_eq!(live["state"], json!("live"));
    assert_eq!(live["checkpoint"], json!(head));
    assert_eq!(live["head"], json!(head));
    assert_eq!(live["lag_events"], json!(0));
    assert_eq!(live["dead_letters"], json!(0));
    assert_eq!(live["stopped"], json!(null));
    assert!(live["applied"].as_u64().is_some_and(|a| a >= 1), "{live}");
    assert_eq!(
        live["apply_rate"],
        json!(0.0),
        "nothing arrives while sampling"
    );

    let text = p.projections(&["status"]).await;
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("talkwai_g1") && text.stdout.contains("live"));

    // No database: a usage error, not a crash.
    let none = p.h.run(&["projections", "status"], &[]).await;
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(none.stderr.contains("TALKWAI_DATABASE_URL"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_event_is_listed_and_retry_skip_moves_past_it() {
    let p = Projected::start().await;
    let w = world(&p.h).await;
    p.caught_up().await;

    // A `task.started` for a task that never existed, written behind the service's back.
    let ghost = Uuid::new_v4();
    let subject = format!("talkwai.evt.{}.task.{ghost}", w.tenant);
    let headers = talkwai_eventstore::header_map(
        talkwai_proto::EventMeta {
            event_type: Some("task.started".into()),
            version: Some(1),
            ..Default::default()
        }
        .to_headers(),
    );
    let body = json!({"type": "task.started", "version": 1, "data": {"at": 1_751_360_820_000i64}});
    let js = async_nats::jetstream::new(p.h.client.clone());
    let poison_seq = js
        .publish_with_headers(subject.clone(), headers, body.to_string().into())
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"))
        .await
        .unwrap_or_else(|e| panic!("publish ack: {e}"))
        .sequence;

    // The projection stops on it; status says why.
    let stopped = talkwai_testkit::wait::wait_until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            let run = p.projections(&["status", "--json"]).await;
            run.json()[0]["stopped"].as_str().map(str::to_owned)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the projection never stopped: {e}"));
    assert!(stopped.contains(&poison_seq.to_string()), "{stopped}");

    let run = p.projections(&["dead-letters", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let letters = run.json();
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["seq"], json!(poison_seq));
    assert_eq!(letters[0]["subject"], json!(subject));
    assert_eq!(letters[0]["event_type"], json!("task.started"));
    assert_eq!(letters[0]["status"], json!("open"));
    let text = p.projections(&["dead-letters"]).await;
    assert!(text.stdout.contains(&subject), "{}", text.stdout);

    // Commands keep being accepted; the projection waits behind the poison event.
    let after = tasks(&p, w.tenant, &w.owner_token, 1).await;
    let run = p.projections(&["retry", "--skip"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("skips event"), "{}", run.stdout);
    p.caught_up().await;
    let found =
        p.pg.query_opt("SELECT 1 FROM talkwai.tasks WHERE id = $1", &[&after[0]])
            .await
            .unwrap_or_else(|e| panic!("select: {e}"));
    assert!(found.is_some(), "the projection resumed after the skip");
    let letters = p.projections(&["dead-letters", "--json"]).await.json();
    assert_eq!(letters[0]["status"], json!("skipped"));
    let status = p.projections(&["status", "--json"]).await.json();
    assert_eq!(status[0]["stopped"], json!(null));
    assert_eq!(status[0]["lag_events"], json!(0));
    // A second retry finds nothing stopped.
    let again = p.projections(&["retry"]).await;
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("not stopped"), "{}", again.stdout);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_rollback_drop_and_replay() {
    let p = Projected::start().await;
    let w = world(&p.h).await;
    let ids = tasks(&p, w.tenant, &w.owner_token, 5).await;
    let early = p.caught_up().await;
    tasks(&p, w.tenant, &w.owner_token, 3).await;
    p.caught_up().await;

    // Damage the live generation: the rebuild's parity check must catch it and exit 1.
    p.pg.execute(
        "UPDATE talkwai_g1.tasks SET subject = 'damaged' WHERE id = $1",
        &[&ids[0]],
    )
    .await
    .unwrap_or_else(|e| panic!("damage: {e}"));
    let failed = p.projections(&["rebuild", "--batch-size", "2"]).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stdout.contains("DIFFERS"), "{}", failed.stdout);
    assert!(
        failed.stderr.contains("parity check failed"),
        "{}",
        failed.stderr
    );

    // Forced, the rebuilt (correct) generation is swapped in.
    let run = p
        .projections(&["rebuild", "--force", "--batch-size", "2"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("is live, replacing generation 1"),
        "{}",
        run.stdout
    );
    let subject: Option<String> =
        p.pg.query_one(
            "SELECT subject FROM talkwai.tasks WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap_or_else(|e| panic!("select: {e}"))
        .get(0);
    assert_eq!(
        subject.as_deref(),
        Some("Renewal"),
        "the rebuild repaired the row"
    );
    let status = p.projections(&["status", "--json"]).await.json();
    let live: Vec<_> = status
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{status}");
    assert_eq!(live[0]["generation"], json!(3), "{status}");

    // An undamaged rebuild passes parity without --force.
    let clean = p.projections(&["rebuild"]).await;
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(!clean.stdout.contains("DIFFERS"), "{}", clean.stdout);

    // Rollback returns to generation 3; the projector follows and keeps it current.
    let run = p.projections(&["rollback"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("generation 3 is live again (was 4)"),
        "{}",
        run.stdout
    );
    tasks(&p, w.tenant, &w.owner_token, 1).await;
    p.caught_up().await;

    // Drop: the failed building generation and the rolled-back one go; the live one stays.
    for generation in ["2", "4", "1"] {
        let run = p.projections(&["drop", generation]).await;
        assert_eq!(run.code, 0, "drop {generation}: {}", run.stderr);
    }
    let refused = p.projections(&["drop", "3"]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("live generation cannot be dropped"));
    let missing = p.projections(&["drop", "99"]).await;
    assert_eq!(missing.code, 1);

    // Replay to a sequence: a snapshot with exactly the tasks of then.
    let until = early.to_string();
    let run = p
        .projections(&["replay", "--until-seq", &until, "--into", "audit_early"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("through sequence {early}")),
        "{}",
        run.stdout
    );
    let count: i64 =
        p.pg.query_one("SELECT count(*) FROM audit_early.tasks", &[])
            .await
            .unwrap_or_else(|e| panic!("snapshot: {e}"))
            .get(0);
    assert_eq!(
        count, 5,
        "the snapshot holds the tasks as of sequence {early}"
    );

    // Replay to a time: now includes everything.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("format: {e}"));
    let run = p
        .projections(&["replay", "--until-time", &now, "--into", "audit_now"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let count: i64 =
        p.pg.query_one("SELECT count(*) FROM audit_now.tasks", &[])
            .await
            .unwrap_or_else(|e| panic!("snapshot: {e}"))
            .get(0);
    assert_eq!(count, 9);
    let bad = p
        .projections(&["replay", "--until-time", "yesterday", "--into", "x"])
        .await;
    assert_eq!(bad.code, 2);
    let neither = p.projections(&["replay", "--into", "x"]).await;
    assert_eq!(neither.code, 2);
    p.stop().await;
}
