//! Operations: `/metrics` counts commands by action and outcome, `/readyz` follows NATS, and the
//! services API (`$SRV.PING/INFO/STATS`) answers for the command endpoints.

mod common;

use std::time::Duration;

use common::{Harness, PLATFORM, SECRET};
use serde_json::{Value, json};
use talkwai_command_service::{CommandService, Config};
use talkwai_telemetry::ops::serve_ops;
use talkwai_testkit::services::{ServiceTask, send_command};
use talkwai_testkit::wait::{PAUSE, wait_until};
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
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// The value of the sample `name{labels}` (labels as rendered, e.g. `{a="b",c="d"}`).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/readyz` until it answers `status`, for up to `within`.
async fn wait_ready_status(addr: std::net::SocketAddr, status: u16, within: Duration) -> String {
    wait_until(within, Duration::from_millis(200), || async move {
        let (got, body) = get(addr, "/readyz").await;
        if got == status {
            Ok(body)
        } else {
            Err(format!("{got}: {body}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("/readyz never answered {status} within {within:?}: {e}"))
}

async fn srv(client: &async_nats::Client, verb: &str) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(format!("$SRV.{verb}.talkwai-command"), "".into()),
    )
    .await
    .unwrap_or_else(|_| panic!("$SRV.{verb} timed out"))
    .unwrap_or_else(|e| panic!("$SRV.{verb}: {e}"));
    serde_json::from_slice(&reply.payload).expect("services API replies are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_readiness_follows_nats_and_the_services_api_answers() {
    let mut h = Harness::start_instances(0).await;
    let service = CommandService::build(Config::for_tests(&h.server.url(), PLATFORM, SECRET))
        .await
        .expect("service builds");
    let ops = serve_ops("127.0.0.1:0".parse().expect("addr"), service.readiness())
        .await
        .expect("ops endpoint");
    let addr = ops.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run(async {
        let _ = stop_rx.await;
    }));

    assert_eq!(get(addr, "/livez").await.0, 200);
    wait_ready_status(addr, 200, Duration::from_secs(10)).await;
    assert_eq!(get(addr, "/nope").await.0, 404);

    // Two accepted creates, then a second create of the same id (already_exists) and one with
    // a forged token (unauthenticated).
    let tenant = Uuid::new_v4();
    let subject = "talkwai.cmd.platform.tenant.create";
    // Ready means every command endpoint is subscribed (the server confirmed it): the first
    // command is answered, no retry (a `$SRV.PING` answer did not mean that).
    h.ok(
        subject,
        json!({"id": tenant, "name": "Ops"}),
        Some(PLATFORM),
    )
    .await;
    h.ok(
        subject,
        json!({"id": Uuid::new_v4(), "name": "Ops 2"}),
        Some(PLATFORM),
    )
    .await;
    h.err(
        subject,
        json!({"id": tenant, "name": "Ops"}),
        Some(PLATFORM),
    )
    .await;
    h.err(
        subject,
        json!({"id": tenant, "name": "Ops"}),
        Some("forged"),
    )
    .await;

    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &metrics,
            "talkwai_commands_total{action=\"tenant.create\",outcome=\"accepted\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "talkwai_commands_total{action=\"tenant.create\",outcome=\"already_exists\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "talkwai_commands_total{action=\"tenant.create\",outcome=\"unauthenticated\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "talkwai_command_duration_seconds_count{action=\"tenant.create\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "talkwai_command_append_seconds_count").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "talkwai_append_group_commands_count").is_some_and(|n| n >= 2.0),
        "group commits are measured: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "talkwai_commands_in_flight"),
        Some(0.0),
        "{metrics}"
    );

    // The services API answers for the command endpoints.
    let info = srv(&h.client, "INFO").await;
    assert_eq!(info["name"], "talkwai-command", "{info}");
    let endpoints = info["endpoints"].as_array().expect("endpoints");
    assert!(
        endpoints
            .iter()
            .any(|e| e["subject"] == "talkwai.cmd.*.tenant.create"),
        "{info}"
    );
    let stats = srv(&h.client, "STATS").await;
    let create = stats["endpoints"]
        .as_array()
        .expect("endpoint stats")
        .iter()
        .find(|e| e["name"] == "tenant_create")
        .unwrap_or_else(|| panic!("no tenant_create stats: {stats}"));
    assert_eq!(create["num_requests"], 4, "{stats}");
    assert_eq!(srv(&h.client, "PING").await["name"], "talkwai-command");

    // NATS goes away: not ready (still alive); it comes back: ready again.
    h.server.stop().await.expect("stop nats");
    let body = wait_ready_status(addr, 503, Duration::from_secs(15)).await;
    assert!(body.contains("\"ready\":false"), "{body}");
    assert_eq!(get(addr, "/livez").await.0, 200, "alive without NATS");
    h.server.restart().await.expect("restart nats");
    let body = wait_ready_status(addr, 200, Duration::from_secs(30)).await;
    assert!(
        body.contains("\"name\":\"jetstream\",\"ok\":true"),
        "{body}"
    );

    let _ = stop_tx.send(());
    running
        .await
        .expect("service task")
        .expect("service stops cleanly");
    drop(ops);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_passes_only_once_every_command_endpoint_is_subscribed() {
    let h = Harness::start_instances(0).await;
    let service = CommandService::build(Config::for_tests(&h.server.url(), PLATFORM, SECRET))
        .await
        .expect("service builds");
    let readiness = service.readiness();
    let before = readiness.evaluate().await;
    assert!(
        before.iter().any(|c| c.name == "endpoints" && !c.ok),
        "not ready before the endpoints serve: {before:?}"
    );
    let task = ServiceTask::spawn(|shutdown| async move {
        service.run(shutdown).await.expect("service runs");
    });
    wait_until(Duration::from_secs(30), PAUSE, || async {
        let checks = readiness.evaluate().await;
        if checks.iter().all(|c| c.ok) {
            Ok(())
        } else {
            Err(format!("{checks:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("never ready: {e}"));
    // Ready: every command endpoint answers its first request (a typed refusal of an empty,
    // unauthenticated command), none says "no responders".
    for (kind, actions) in talkwai_domain::ACTIONS {
        for action in *actions {
            let subject = format!("talkwai.cmd.platform.{kind}.{action}");
            let reply = send_command(&h.client, &subject, "", None, None, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("ready, yet {e}"));
            assert!(reply.into_result().is_err(), "{subject}: refused");
        }
    }
    task.stop().await;
    let after = readiness.evaluate().await;
    assert!(
        after.iter().any(|c| c.name == "endpoints" && !c.ok),
        "not ready once stopped: {after:?}"
    );
    h.stop().await;
}
