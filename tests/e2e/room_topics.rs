//! Who may publish each room topic, enforced by `deploy/nats/auth.conf` on a real nats-server:
//! the service topics (`taskUpdates`, `notifications.<member>`, `systemAlerts`) and
//! `presence.events` only by the services that own them, client topics (`taskActivity`, any
//! other name) by a tenant's credential in its own room. The publishers match the
//! `x-talkwai-publishers` of each channel in `proto/asyncapi.yaml`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use talkwai_e2e::auth_config;
use talkwai_proto::asyncapi::channel_for;
use talkwai_testkit::NatsServer;

const ACME: &str = "a0000000-0000-4000-8000-000000000001";
const MEMBER: &str = "a0000000-0000-4000-8000-0000000000aa";

async fn connect(server: &NatsServer, user: &str, password: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"))
}

/// Publishes `subjects` in order on `client`, then a `done` marker on `marker` (which `client`
/// may publish). Messages of one connection arrive in order, so once the marker is seen every
/// publish before it that the server let through has been delivered too.
async fn publish_all(client: &async_nats::Client, subjects: &[String], marker: &str) {
    for subject in subjects {
        client
            .publish(subject.clone(), "{}".into())
            .await
            .expect("publish is fire and forget");
    }
    client
        .publish(marker.to_owned(), "done".into())
        .await
        .expect("marker");
}

/// The subjects delivered to `sub` up to and including `marker`.
async fn delivered_until(sub: &mut async_nats::Subscriber, marker: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("marker {marker} not delivered; got {seen:?}"))
            .expect("subscription open");
        if message.subject.as_str() == marker {
            return seen;
        }
        seen.insert(message.subject.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_topics_are_published_only_by_their_publishers() {
    let server = NatsServer::builder()
        .extra_config(auth_config())
        .start()
        .await
        .expect("nats-server with auth.conf");
    let operator = connect(&server, "operator", "operator-pw").await;
    let mut tenant_room = operator
        .subscribe(format!("talkwai.room.tenant.{ACME}.>"))
        .await
        .expect("sub");
    let mut admin_room = operator
        .subscribe("talkwai.room.admin.global.>")
        .await
        .expect("sub");
    // The subscriptions are in place once a probe on the same connection comes back.
    let probe = format!("talkwai.room.tenant.{ACME}.topic.probe");
    publish_all(&operator, &[], &probe).await;
    assert!(delivered_until(&mut tenant_room, &probe).await.is_empty());
    let probe = "talkwai.room.admin.global.topic.probe";
    publish_all(&operator, &[], probe).await;
    assert!(delivered_until(&mut admin_room, probe).await.is_empty());

    let room = |suffix: &str| format!("talkwai.room.tenant.{ACME}.{suffix}");
    let service_topics = [
        room("topic.taskUpdates"),
        room(&format!("topic.notifications.{MEMBER}")),
        room("presence.events"),
    ];
    let client_topics = [room("topic.taskActivity"), room("topic.cursors")];
    for subject in service_topics.iter().chain(&client_topics) {
        assert!(
            channel_for(subject).is_some(),
            "{subject} is in the contract"
        );
    }

    // A tenant credential: client topics pass, the service topics of its own room do not.
    let tenant = connect(&server, "tenant-acme", "tenant-pw").await;
    let mut attempts: Vec<String> = service_topics.to_vec();
    attempts.extend(client_topics.iter().cloned());
    attempts.push(room("topic.notifications"));
    let marker = room("topic.tenantDone");
    publish_all(&tenant, &attempts, &marker).await;
    let got = delivered_until(&mut tenant_room, &marker).await;
    let expected: BTreeSet<String> = client_topics.iter().cloned().collect();
    assert_eq!(
        got, expected,
        "a tenant credential publishes client topics only"
    );
    let alerts = "talkwai.room.admin.global.topic.systemAlerts".to_owned();
    let marker = room("topic.tenantDone2");
    publish_all(&tenant, std::slice::from_ref(&alerts), &marker).await;
    delivered_until(&mut tenant_room, &marker).await;

    // The notifier publishes the service topics and presence events; the projector (dead
    // letters) and the notifier the admin room's system alerts.
    let notifier = connect(&server, "notifier", "notifier-pw").await;
    let last = service_topics.last().expect("one").clone();
    publish_all(&notifier, &service_topics[..2], &last).await;
    let got = delivered_until(&mut tenant_room, &last).await;
    assert_eq!(
        got,
        service_topics[..2].iter().cloned().collect::<BTreeSet<_>>(),
        "the notifier publishes taskUpdates and notifications"
    );
    for (user, password) in [("projector", "projector-pw"), ("notifier", "notifier-pw")] {
        let service = connect(&server, user, password).await;
        service
            .publish(alerts.clone(), "{}".into())
            .await
            .expect("publish");
        let message = tokio::time::timeout(Duration::from_secs(10), admin_room.next())
            .await
            .unwrap_or_else(|_| panic!("{user} may publish systemAlerts"))
            .expect("open");
        assert_eq!(message.subject.as_str(), alerts, "{user}");
    }
    // The tenant's systemAlerts attempt above never reached the admin room.
    let probe = "talkwai.room.admin.global.topic.probe";
    publish_all(&operator, &[], probe).await;
    assert!(
        delivered_until(&mut admin_room, probe).await.is_empty(),
        "a tenant credential cannot raise a system alert"
    );
}
