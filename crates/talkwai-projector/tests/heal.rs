//! Healing: a `talkwai-projector` process keeps projecting across a nats-server restart without
//! being restarted itself (the partitioned one recreates its in-memory lease bucket and claims
//! its partitions again), and its `/livez` fails while it can make no progress.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Stack, random_commands};
use serde_json::json;
use talkwai_domain::{Event, EventBody};
use talkwai_eventstore::{AppendRequest, AppenderConfig, Outbound};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use uuid::Uuid;

const LEASE_TTL_MS: u64 = 1000;
const LIVENESS_SECS: u64 = 3;

/// `GET path` over HTTP/1.0: the status code and the whole response.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    let status = body.split(' ').nth(1)?.parse().ok()?;
    Some((status, body))
}

/// Waits until `path` answers `status`; panics with the last answer after `within`.
async fn wait_status(port: u16, path: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < within {
        last = get(port, path).await;
        if last.as_ref().is_some_and(|(s, _)| *s == status) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not answer {status} within {within:?}: {last:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn_projector(stack: &Stack, partitions: u32, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_talkwai-projector"))
        .env("TALKWAI_NATS_URL", stack.nats.url())
        .env("TALKWAI_DATABASE_URL", &stack.db)
        .env("TALKWAI_PROJECTOR_PARTITIONS", partitions.to_string())
        .env("TALKWAI_PROJECTOR_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
        .env("TALKWAI_PROJECTOR_LIVENESS_SECS", LIVENESS_SECS.to_string())
        .env("TALKWAI_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("TALKWAI_INSTANCE", "healer")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start talkwai-projector: {e}"))
}

/// Appends a `tenant.created` event for a new tenant straight to the log; returns the tenant.
async fn append_tenant(stack: &Stack) -> Uuid {
    let tenant = Uuid::new_v4();
    let body: EventBody = serde_json::from_value(json!({"type": "tenant.created", "version": 1,
        "data": {"at": 1_751_360_400_000i64, "name": "Healed", "domain": null, "status": "active"}}))
    .expect("an event body");
    let body = Event::decode(&body).expect("decodes").encode();
    let h = talkwai_testkit::services::lone_event_headers(&body, tenant, 1_751_360_400_000);
    let appender = stack.store.appender(AppenderConfig::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let appended = appender
            .append(AppendRequest {
                messages: vec![Outbound {
                    subject: format!("talkwai.evt.{tenant}.tenant.{tenant}"),
                    headers: h.clone(),
                    payload: serde_json::to_vec(&body).expect("json").into(),
                    expected_last_subject_seq: None,
                }],
                dedupe_id: None,
                claim_first: false,
            })
            .await;
        match appended {
            Ok(_) => return tenant,
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot append: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until `tenant` is projected; returns how long it took.
async fn wait_projected(pg: &tokio_postgres::Client, tenant: Uuid, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let found: i64 = pg
            .query_one(
                "SELECT count(*) FROM talkwai.tenants WHERE id = $1",
                &[&tenant],
            )
            .await
            .expect("select")
            .get(0);
        if found == 1 {
            return started.elapsed();
        }
        let checkpoint: Option<i64> = pg
            .query_opt("SELECT last_seq FROM talkwai.checkpoint", &[])
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        assert!(
            started.elapsed() < within,
            "tenant {tenant} not projected within {within:?}; checkpoint {checkpoint:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn projects_again_after_a_nats_restart(partitions: u32) {
    let mut stack = Stack::start().await;
    random_commands(&stack, 7, 1, 20).await;
    let port = free_port();
    let _projector = spawn_projector(&stack, partitions, port);
    stack.wait_caught_up(&stack.db.clone()).await;
    let pg = stack.pg_client(&stack.db.clone()).await;
    let before = append_tenant(&stack).await;
    wait_projected(&pg, before, Duration::from_secs(20)).await;
    wait_status(port, "/livez", 200, Duration::from_secs(5)).await;

    stack.nats.restart().await.expect("nats-server restarts");
    let restarted = Instant::now();
    if partitions > 1 {
        // The lease bucket went with the restart: the projector recreates it and claims again.
        let deadline = restarted + Duration::from_secs(30);
        loop {
            let held = talkwai_projector::lease::holders(stack.store.jetstream()).await;
            if let Ok((leases, live)) = &held
                && leases.len() == partitions as usize
                && live.len() == 1
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the partitions were not leased again: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("leased again {:?} after the restart", restarted.elapsed());
    }
    let after = append_tenant(&stack).await;
    let took = wait_projected(&pg, after, Duration::from_secs(30)).await;
    eprintln!(
        "{partitions} partition(s): projected again {:?} after the restart ({took:?} after the append)",
        restarted.elapsed()
    );
    // A later event too: projection goes on, it did not just catch up once.
    let later = append_tenant(&stack).await;
    wait_projected(&pg, later, Duration::from_secs(10)).await;
    wait_status(port, "/livez", 200, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_projector_projects_again_after_a_nats_restart() {
    projects_again_after_a_nats_restart(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpartitioned_projector_projects_again_after_a_nats_restart() {
    projects_again_after_a_nats_restart(1).await;
}

async fn liveness_fails_while_it_cannot_progress(partitions: u32) {
    let mut stack = Stack::start().await;
    let port = free_port();
    let _projector = spawn_projector(&stack, partitions, port);
    stack.wait_caught_up(&stack.db.clone()).await;
    wait_status(port, "/livez", 200, Duration::from_secs(10)).await;

    stack.nats.stop().await.expect("nats-server stops");
    let failed = wait_status(port, "/livez", 503, Duration::from_secs(30)).await;
    let (_, body) = get(port, "/livez").await.expect("an answer");
    assert!(body.contains("no progress"), "{body}");
    assert!(
        failed >= Duration::from_secs(LIVENESS_SECS - 1),
        "live for the grace period first ({failed:?})"
    );
    eprintln!("{partitions} partition(s): /livez failed {failed:?} after nats-server stopped");

    stack
        .nats
        .restart()
        .await
        .expect("nats-server starts again");
    wait_status(port, "/livez", 200, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_projectors_liveness_fails_while_its_lease_rounds_fail() {
    liveness_fails_while_it_cannot_progress(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpartitioned_projectors_liveness_fails_while_its_apply_loop_fails() {
    liveness_fails_while_it_cannot_progress(1).await;
}
