//! Operations: the notifier's `/metrics` count room messages by topic and presence requests,
//! presence peers are counted per room type, and `/readyz` answers.

mod common;

use std::time::Duration;

use common::{Harness, collect, world};
use serde_json::json;
use talkwai_notifier::{Notifier, ops};
use talkwai_telemetry::ops::serve_ops;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// `GET path` over HTTP/1.0: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to the ops endpoint {addr}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write the request");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .expect("read the response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    (status, text)
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_by_topic_presence_requests_and_peers() {
    let h = Harness::start().await;
    let notifier = Notifier::build(h.notifier_config())
        .await
        .expect("notifier builds");
    let ops_server = serve_ops("127.0.0.1:0".parse().expect("addr"), notifier.readiness())
        .await
        .expect("ops endpoint");
    let addr = ops_server.local_addr();
    let _running = tokio::spawn(notifier.run(std::future::pending::<()>()));
    common::wait_presence_ready(&h.client).await;
    let w = world(&h).await;
    let t = w.tenant;
    let mut updates = h
        .client
        .subscribe(format!("talkwai.room.tenant.{t}.topic.taskUpdates"))
        .await
        .expect("sub");
    h.ok(
        &format!("talkwai.cmd.{t}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111",
               "toAddress": "+15550002222"}),
        &w.owner_token,
    )
    .await;
    assert_eq!(
        collect(&mut updates, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    let join = h
        .presence(
            &format!("talkwai.room.tenant.{t}.presence.join"),
            json!({"sessionId": "ops-1", "data": {}}),
            &w.owner_token,
        )
        .await;
    assert_eq!(join["ok"], true, "{join}");
    let refused = h
        .presence(
            &format!("talkwai.room.tenant.{t}.presence.join"),
            json!({"sessionId": "ops-2", "data": {}}),
            "forged",
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");

    // Peers are counted per room type from the bucket (the gauge does it every 10 s).
    let js = async_nats::jetstream::new(h.client.clone());
    let peers = ops::count_peers(&js).await.expect("count peers");
    assert_eq!(peers.get("tenant"), Some(&1), "{peers:?}");
    assert_eq!(peers.get("admin"), Some(&0), "{peers:?}");
    let left = h
        .presence(
            &format!("talkwai.room.tenant.{t}.presence.leave"),
            json!({"sessionId": "ops-1"}),
            &w.owner_token,
        )
        .await;
    assert_eq!(left["ok"], true, "{left}");
    let peers = ops::count_peers(&js).await.expect("count peers");
    assert_eq!(
        peers.get("tenant"),
        Some(&0),
        "a left peer is gone: {peers:?}"
    );

    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        sample(
            &metrics,
            "talkwai_notifier_messages_total{topic=\"taskUpdates\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "talkwai_notifier_events_total{outcome=\"notified\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "talkwai_notifier_delivery_lag_seconds_count").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "talkwai_presence_requests_total{op=\"join\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "talkwai_presence_requests_total{op=\"join\",outcome=\"unauthenticated\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("talkwai_presence_peers{room_type=\"tenant\"}"),
        "the peers gauge is exported: {metrics}"
    );
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, "/livez").await.0, 200);
}
