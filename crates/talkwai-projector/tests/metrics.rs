//! The projector binary exports its checkpoint, lag and apply counters as Prometheus metrics,
//! and answers `/livez` and `/readyz` on the same address.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Stack, random_commands};
use talkwai_testkit::wait::poll_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

async fn scrape(port: u16) -> Option<String> {
    get(port, "/metrics").await.map(|(_, body)| body)
}

fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_checkpoint_lag_and_apply_counters() {
    let stack = Stack::start().await;
    random_commands(&stack, 5, 1, 60).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_talkwai-projector"))
        .env("TALKWAI_NATS_URL", stack.nats.url())
        .env("TALKWAI_DATABASE_URL", &stack.db)
        .env("TALKWAI_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn projector");
    let head = stack.wait_caught_up(&stack.db).await;
    let last = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { scrape(port).await.unwrap_or_default() },
        |last| {
            value(last, "talkwai_projector_checkpoint") == Some(head as f64)
                && value(last, "talkwai_projector_lag_events") == Some(0.0)
        },
    )
    .await
    .unwrap_or_else(|last| last.unwrap_or_default());
    assert_eq!(
        value(&last, "talkwai_projector_checkpoint"),
        Some(head as f64),
        "{last}"
    );
    assert_eq!(
        value(&last, "talkwai_projector_lag_events"),
        Some(0.0),
        "{last}"
    );
    assert!(
        value(&last, "talkwai_projector_events_applied_total").is_some_and(|v| v > 0.0),
        "{last}"
    );
    assert_eq!(
        value(&last, "talkwai_projector_dead_letters_open"),
        Some(0.0),
        "{last}"
    );
    let live = get(port, "/livez").await;
    assert_eq!(live.map(|(status, _)| status), Some(200), "/livez");
    let ready = get(port, "/readyz").await.expect("/readyz answers");
    assert_eq!(ready.0, 200, "caught up, so ready: {}", ready.1);
    for check in ["nats", "jetstream", "postgres", "projection"] {
        assert!(
            ready
                .1
                .contains(&format!("\"name\":\"{check}\",\"ok\":true")),
            "{check} passes: {}",
            ready.1
        );
    }
    child.start_kill().expect("stop");
    let _ = child.wait().await;
    stack.stop().await;
}
