//! The `talkwai-query-service` binary as deployed: configured by its `TALKWAI_*` variables, it
//! is not ready before the projector created the views and ready after, answers queries on
//! NATS, serves `/livez` and `/metrics`, and stops cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use async_nats::HeaderMap;
use talkwai_testkit::wait::poll_until;
use talkwai_testkit::{NatsServer, Postgres, http_get};

const PLATFORM: &str = "platform-token-for-the-process-test";
const SECRET: &str = "jwt-secret-for-the-process-test";

/// Polls `/readyz` until its status is `status` (20 s); the last answer.
async fn readyz_until(port: u16, status: u16) -> (u16, String) {
    poll_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            http_get(port, "/readyz")
                .await
                .unwrap_or((0, String::new()))
        },
        |(got, _)| *got == status,
    )
    .await
    .unwrap_or_else(|last| last.unwrap_or((0, String::new())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_queries_health_and_metrics_and_stops_on_sigterm() {
    let nats = NatsServer::start().await.expect("nats-server");
    let pg = Postgres::start().await.expect("postgres");
    let db = pg.create_unique_database("process").await.expect("db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_talkwai-query-service"))
        .env("TALKWAI_NATS_URL", nats.url())
        .env("TALKWAI_DATABASE_URL", &db)
        .env("TALKWAI_PLATFORM_TOKEN", PLATFORM)
        .env("TALKWAI_JWT_SECRET", SECRET)
        .env("TALKWAI_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the query service");

    // No views yet: not ready, and it says why.
    let (status, body) = readyz_until(port, 503).await;
    assert_eq!(status, 503, "not ready before the views exist: {body}");
    assert!(
        body.contains("\"name\":\"read_models\",\"ok\":false"),
        "{body}"
    );
    assert!(body.contains("\"name\":\"nats\",\"ok\":true"), "{body}");
    assert!(!body.contains("jetstream"), "no JetStream check: {body}");

    // The projector creates them (and keeps them current).
    let projector =
        talkwai_projector::Projector::build(talkwai_projector::Config::for_tests(&nats.url(), &db))
            .await
            .expect("projector");
    let projecting = tokio::spawn(async move { projector.run(std::future::pending()).await });
    let (status, body) = readyz_until(port, 200).await;
    assert_eq!(status, 200, "ready once the views exist: {body}");
    for check in ["nats", "postgres", "read_models"] {
        assert!(
            body.contains(&format!("\"name\":\"{check}\",\"ok\":true")),
            "{check} passes: {body}"
        );
    }

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
    let reply = talkwai_testkit::wait::wait_for_endpoint_with_headers(
        &client,
        "talkwai.qry.platform",
        headers,
        b"{\"tenants\": {}}".to_vec(),
    )
    .await
    .expect("the process answers queries");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["data"]["tenants"], serde_json::json!([]), "{reply}");

    let live = http_get(port, "/livez").await;
    assert_eq!(live.map(|(status, _)| status), Some(200), "/livez");
    let metrics = http_get(port, "/metrics").await.expect("/metrics").1;
    assert!(
        metrics.contains("talkwai_queries_total{kind=\"query\",outcome=\"ok\"} 1"),
        "{metrics}"
    );

    let pid = child.id().expect("running");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let exited = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops within 20 s of SIGTERM")
        .expect("exit status");
    assert!(exited.success(), "a clean stop: {exited}");
    projecting.abort();
}
