//! The serving loop against a real nats-server: endpoints answer as soon as `start` returns,
//! a request in hand at shutdown is still answered, and once `stop` returns no request is
//! routed to the service any more.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use talkwai_service::{Endpoints, Handler, Registration};
use talkwai_testkit::NatsServer;
use tokio::sync::{mpsc, oneshot};

/// Echoes the payload; `slow` takes 300 ms and says when it started.
struct Echo(mpsc::Sender<()>);

impl Handler for Echo {
    async fn handle(&self, message: &Message) -> (Bytes, HeaderMap) {
        if message.payload.as_ref() == b"slow" {
            let _ = self.0.send(()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut headers = HeaderMap::new();
        headers.insert("Echo", "yes");
        (message.payload.clone(), headers)
    }
}

const REGISTRATION: Registration<'static> = Registration {
    name: "talkwai-echo",
    version: "0.1.0",
    description: "echoes",
    queue_group: "talkwai-echo",
};

#[tokio::test]
async fn serves_from_start_drains_at_shutdown_and_is_gone_after_stop() {
    let nats = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let mut endpoints = Endpoints::start(
        &client,
        REGISTRATION,
        vec![("echo".to_owned(), "test.echo".to_owned())],
    )
    .await
    .expect("registered and confirmed");
    let (started, mut slow_started) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let in_flight = endpoints
            .serve(Arc::new(Echo(started)), 4, async {
                let _ = stopped.await;
            })
            .await;
        let in_hand = in_flight.len();
        endpoints.stop().await;
        (in_hand, in_flight.drain(Some(Duration::from_secs(5))).await)
    });

    // No wait: `start` returned once the server held the subscription.
    let reply = client
        .request("test.echo", "hi".into())
        .await
        .expect("answered at once");
    assert_eq!(reply.payload.as_ref(), b"hi");
    assert_eq!(
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get("Echo"))
            .map(|v| v.as_str()),
        Some("yes"),
        "the handler's headers are sent"
    );

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.request("test.echo", "slow".into()).await }
    });
    tokio::time::timeout(Duration::from_secs(10), slow_started.recv())
        .await
        .expect("the slow request reaches the handler");
    let _ = stop.send(());
    let (in_hand, drained) = server.await.expect("the server task");
    assert_eq!(in_hand, 1, "the slow request was in hand at shutdown");
    assert!(drained, "and finished within the grace");
    let slow = slow
        .await
        .expect("task")
        .expect("the request in hand is answered");
    assert_eq!(slow.payload.as_ref(), b"slow");

    let gone = client
        .request("test.echo", "hi".into())
        .await
        .expect_err("nobody serves after stop");
    assert_eq!(
        gone.kind(),
        async_nats::client::RequestErrorKind::NoResponders,
        "{gone}"
    );
}
