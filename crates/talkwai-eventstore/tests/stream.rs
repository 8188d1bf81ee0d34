//! Stream setup against real servers: replica counts on a single node and on a 3-node cluster,
//! and that opening the stream with default settings never changes its replication.

use talkwai_eventstore::{EventStore, StreamSettings, server_urls};
use talkwai_testkit::{NatsCluster, NatsServer};

async fn stream_replicas(client: &async_nats::Client) -> usize {
    async_nats::jetstream::new(client.clone())
        .get_stream("TALKWAI_EVENTS")
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("stream info")
        .config
        .num_replicas
}

#[tokio::test]
async fn default_settings_create_one_replica_on_a_single_node() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("open creates the stream");
    assert_eq!(store.replicas(), 1);
    assert_eq!(stream_replicas(&client).await, 1);

    // Asking for 3 replicas of a single node is refused by the server, not ignored.
    let refused = EventStore::open(
        client.clone(),
        &StreamSettings {
            replicas: 3,
            ..Default::default()
        },
    )
    .await;
    assert!(refused.is_err(), "a single node accepted R3");
    assert_eq!(stream_replicas(&client).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_keeps_its_replicas_when_opened_with_defaults() {
    let cluster = NatsCluster::start().await.expect("3-node cluster");
    let client = async_nats::ConnectOptions::new()
        .connect(server_urls(&cluster.url_list()))
        .await
        .expect("connect to the cluster");
    let store = EventStore::open(
        client.clone(),
        &StreamSettings {
            replicas: 3,
            ..Default::default()
        },
    )
    .await
    .expect("open creates the stream at R3");
    assert_eq!(store.replicas(), 3);
    assert_eq!(stream_replicas(&client).await, 3);

    // A reader (projector, tool, test) opening with defaults keeps R3.
    let reader = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("open with defaults");
    assert_eq!(reader.replicas(), 3);
    assert_eq!(stream_replicas(&client).await, 3);

    // An explicit count still changes it (scaling down and up again).
    for replicas in [1, 3] {
        let store = EventStore::open(
            client.clone(),
            &StreamSettings {
                replicas,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("open at R{replicas}: {e}"));
        assert_eq!(store.replicas(), replicas);
        assert_eq!(stream_replicas(&client).await, replicas);
    }
    cluster
        .wait_for_stream_current("TALKWAI_EVENTS", 3)
        .await
        .expect("3 current replicas after scaling up");
}
