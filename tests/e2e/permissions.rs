//! NATS-level defense in depth: a nats-server running `deploy/nats/auth.conf` proves a tenant
//! credential cannot publish an event, use JetStream, or read another tenant's subjects, while
//! the command service's credential may write the log.

use std::time::Duration;

use futures::StreamExt;
use talkwai_e2e::auth_config;
use talkwai_testkit::NatsServer;

const ACME: &str = "a0000000-0000-4000-8000-000000000001";
const OTHER: &str = "b1000000-0000-4000-8000-000000000009";

async fn connect(server: &NatsServer, user: &str, password: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"))
}

/// Subscribes and waits until the server holds the subscription. `flush` only writes the
/// subscription to the socket, so a message published on another connection right after could
/// still reach the server first and be missed (seen under load); a probe published on the same
/// connection is processed after the subscription. The probe goes to a client topic of the
/// tenant's room (every user here may publish it; the service topics are not the tenant's).
async fn subscribed(client: &async_nats::Client, subject: String) -> async_nats::Subscriber {
    let sub = client.subscribe(subject).await.expect("sub");
    let probe_subject = format!("talkwai.room.tenant.{ACME}.topic.probe");
    let mut probes = client.subscribe(probe_subject.clone()).await.expect("sub");
    client
        .publish(probe_subject, "probe".into())
        .await
        .expect("probe");
    let probe = tokio::time::timeout(Duration::from_secs(10), probes.next())
        .await
        .expect("probe delivered")
        .expect("msg");
    assert_eq!(probe.payload, "probe");
    sub
}

async fn head(js: &async_nats::jetstream::Context) -> u64 {
    js.get_stream("TALKWAI_EVENTS")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_credentials_are_fenced_to_their_tenant() {
    let server = NatsServer::builder()
        .extra_config(auth_config())
        .start()
        .await
        .expect("nats-server with auth.conf");
    let operator = connect(&server, "operator", "operator-pw").await;
    let js = async_nats::jetstream::new(operator.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TALKWAI_EVENTS".into(),
        subjects: vec!["talkwai.evt.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");

    // The command service may append to the log.
    let command = connect(&server, "command-service", "command-pw").await;
    let ack = async_nats::jetstream::new(command)
        .publish(format!("talkwai.evt.{ACME}.task.1"), "{}".into())
        .await
        .expect("command service publishes")
        .await;
    assert!(ack.is_ok(), "the command service writes the log: {ack:?}");
    assert_eq!(head(&js).await, 1);

    let tenant = connect(&server, "tenant-acme", "tenant-pw").await;
    // 1. No events, directly or through JetStream's API.
    tenant
        .publish(format!("talkwai.evt.{ACME}.task.2"), "{}".into())
        .await
        .expect("publish is fire and forget");
    let through_js = async_nats::jetstream::new(tenant.clone())
        .publish(format!("talkwai.evt.{ACME}.task.3"), "{}".into())
        .await;
    let acked = match through_js {
        Ok(future) => tokio::time::timeout(Duration::from_secs(2), future)
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false),
        Err(_) => false,
    };
    assert!(!acked, "a tenant credential cannot append an event");
    let info = tenant.request("$JS.API.STREAM.INFO.TALKWAI_EVENTS", "".into());
    assert!(
        !matches!(
            tokio::time::timeout(Duration::from_secs(1), info).await,
            Ok(Ok(_))
        ),
        "no JetStream API"
    );
    tenant.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(head(&js).await, 1, "the log is unchanged");

    // 2. Its own room works; another tenant's room and command subjects are closed.
    let mut own = subscribed(
        &tenant,
        format!("talkwai.room.tenant.{ACME}.topic.taskUpdates"),
    )
    .await;
    let mut foreign = tenant
        .subscribe(format!("talkwai.room.tenant.{OTHER}.topic.taskUpdates"))
        .await
        .expect("sub");
    let mut commands = tenant
        .subscribe(format!("talkwai.cmd.{OTHER}.task.create"))
        .await
        .expect("sub");
    let mut events = tenant.subscribe("talkwai.evt.>").await.expect("sub");
    tenant.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    operator
        .publish(
            format!("talkwai.room.tenant.{ACME}.topic.taskUpdates"),
            "mine".into(),
        )
        .await
        .expect("pub");
    operator
        .publish(
            format!("talkwai.room.tenant.{OTHER}.topic.taskUpdates"),
            "theirs".into(),
        )
        .await
        .expect("pub");
    operator
        .publish(format!("talkwai.cmd.{OTHER}.task.create"), "cmd".into())
        .await
        .expect("pub");
    operator
        .publish(format!("talkwai.evt.{OTHER}.task.9"), "evt".into())
        .await
        .expect("pub");
    operator.flush().await.expect("flush");
    let mine = tokio::time::timeout(Duration::from_secs(10), own.next())
        .await
        .expect("own room delivers")
        .expect("msg");
    assert_eq!(mine.payload, "mine");
    for (name, sub) in [
        ("another tenant's room", &mut foreign),
        ("another tenant's commands", &mut commands),
        ("events", &mut events),
    ] {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), sub.next())
                .await
                .is_err(),
            "{name} must not be readable"
        );
    }
    // 3. It may publish in its own room and send its own commands (requests reach a responder).
    let mut room = subscribed(
        &operator,
        format!("talkwai.room.tenant.{ACME}.topic.custom"),
    )
    .await;
    tenant
        .publish(
            format!("talkwai.room.tenant.{ACME}.topic.custom"),
            "hello".into(),
        )
        .await
        .expect("pub");
    tenant
        .publish(
            format!("talkwai.room.tenant.{OTHER}.topic.custom"),
            "intrusion".into(),
        )
        .await
        .expect("pub");
    tenant.flush().await.expect("flush");
    let got = tokio::time::timeout(Duration::from_secs(10), room.next())
        .await
        .expect("delivered")
        .expect("msg");
    assert_eq!(got.payload, "hello");
}
