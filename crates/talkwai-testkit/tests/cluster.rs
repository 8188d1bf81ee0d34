//! Starts a real 3-node nats-server cluster, replicates a stream at R3, kills its leader and
//! restarts it.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use talkwai_testkit::{NatsCluster, TestkitError};

fn report(context: &str, err: &dyn std::error::Error) -> String {
    let mut text = format!("{context}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Publishes with retries: during an election the stream answers nothing for a moment.
async fn publish(js: &jetstream::Context, subject: &str, payload: String) -> u64 {
    talkwai_testkit::wait::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let attempt = async {
            js.publish(subject.to_owned(), payload.clone().into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        async move {
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(ack)) => Ok(ack.sequence),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("timed out".to_owned()),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("publishing to {subject}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_a_stream_and_survive_a_leader_kill() {
    let mut cluster = NatsCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("starting a 3-node cluster", &e)));
    assert_eq!(cluster.len(), 3);
    let urls = cluster.urls();
    assert_eq!(cluster.url_list(), urls.join(","));
    let mut ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "every node has its own client port");
    let meta = cluster
        .meta_leader()
        .await
        .expect("a meta leader after start");
    assert!(meta < 3);

    let client = async_nats::ConnectOptions::new()
        .connect(urls.as_slice())
        .await
        .expect("connect to the cluster");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "CLUSTERED".into(),
        subjects: vec!["clustered.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("create an R3 stream");
    for i in 0..20 {
        publish(&js, "clustered.a", format!("before {i}")).await;
    }
    let leader = cluster
        .wait_for_stream_leader("CLUSTERED")
        .await
        .unwrap_or_else(|e| panic!("{}", report("stream leader", &e)));
    let leader_name = cluster.nodes()[leader].server_name().to_owned();
    assert_eq!(cluster.index_of(&leader_name), Some(leader));

    assert!(matches!(
        cluster.kill(3).await,
        Err(TestkitError::InvalidConfig(_))
    ));
    cluster.kill(leader).await.expect("kill the stream leader");
    assert!(!cluster.is_running(leader));
    let new_leader = cluster
        .wait_for_stream_leader("CLUSTERED")
        .await
        .unwrap_or_else(|e| panic!("{}", report("new stream leader", &e)));
    assert_ne!(new_leader, leader, "a killed node cannot lead");
    let survivor_says = cluster
        .wait_for_meta_leader()
        .await
        .expect("a meta leader of 2");
    assert_ne!(survivor_says, leader);
    // The client reconnects by itself and the stream takes writes with 2 of 3 nodes.
    let seq = publish(&js, "clustered.a", "after the kill".into()).await;
    assert_eq!(seq, 21, "no write lost and none doubled");

    cluster
        .restart(leader)
        .await
        .expect("restart the killed node");
    cluster
        .wait_for_stream_current("CLUSTERED", 3)
        .await
        .unwrap_or_else(|e| panic!("{}", report("restarted replica catches up", &e)));
    cluster
        .wait_for_meta_leader()
        .await
        .unwrap_or_else(|e| panic!("{}", report("meta leader after restart", &e)));

    // The restarted node serves the stream, all 21 messages of it.
    let direct = async_nats::connect(cluster.nodes()[leader].url())
        .await
        .expect("connect to the restarted node");
    let mut stream = jetstream::new(direct)
        .get_stream("CLUSTERED")
        .await
        .expect("stream via the restarted node");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 21);
    assert_eq!(info.config.num_replicas, 3);
}

#[tokio::test]
async fn fewer_than_two_nodes_are_refused() {
    for size in [0, 1] {
        assert!(
            matches!(
                NatsCluster::builder().size(size).start().await,
                Err(TestkitError::InvalidConfig(_))
            ),
            "a cluster of {size} was not refused"
        );
    }
}
