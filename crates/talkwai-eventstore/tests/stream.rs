//! Stream setup against real servers: replica counts on a single node and on a 3-node cluster,
//! that opening the stream with default settings never changes its replication, and which
//! replica answers the reads a command decides on.

use futures::StreamExt as _;
use talkwai_eventstore::{
    AppendRequest, AppenderConfig, EventStore, Outbound, StreamSettings, server_urls,
};
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

/// Opens the stream with `settings`, retrying while a cluster settles: on a loaded machine a
/// freshly started cluster (or one scaling a stream) can time out a stream create or update.
async fn open_settled(client: &async_nats::Client, settings: &StreamSettings) -> EventStore {
    talkwai_testkit::wait::wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(500),
        || EventStore::open(client.clone(), settings),
    )
    .await
    .unwrap_or_else(|e| panic!("open at R{}: {e}", settings.replicas))
}

/// A single node with the stream opened at default settings.
async fn single_node() -> (NatsServer, async_nats::Client, EventStore) {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("open creates the stream");
    (server, client, store)
}

#[tokio::test]
async fn default_settings_create_one_replica_on_a_single_node() {
    let (_server, client, store) = single_node().await;
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
    let store = open_settled(
        &client,
        &StreamSettings {
            replicas: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(store.replicas(), 3);
    assert_eq!(stream_replicas(&client).await, 3);

    // A reader (projector, tool, test) opening with defaults keeps R3.
    let reader = open_settled(&client, &StreamSettings::default()).await;
    assert_eq!(reader.replicas(), 3);
    assert_eq!(stream_replicas(&client).await, 3);

    // An explicit count still changes it (scaling down and up again).
    for replicas in [1, 3] {
        let store = open_settled(
            &client,
            &StreamSettings {
                replicas,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(store.replicas(), replicas);
        assert_eq!(stream_replicas(&client).await, replicas);
    }
    cluster
        .wait_for_stream_current("TALKWAI_EVENTS", 3)
        .await
        .expect("3 current replicas after scaling up");
}

/// Counts the requests seen on `subject` until none has come for 300 ms.
async fn requests_seen(sub: &mut async_nats::Subscriber) -> usize {
    let mut seen = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), sub.next()).await
    {
        seen += 1;
    }
    seen
}

/// Appends one message on each of `subjects`; returns their sequences.
async fn append_each(store: &EventStore, subjects: &[&str]) -> Vec<u64> {
    let appender = store.appender(AppenderConfig::default());
    let mut seqs = Vec::new();
    for subject in subjects {
        let ack = appender
            .append(AppendRequest {
                messages: vec![Outbound {
                    subject: (*subject).to_owned(),
                    headers: async_nats::HeaderMap::new(),
                    payload: "{}".into(),
                    expected_last_subject_seq: None,
                }],
                dedupe_id: None,
                claim_first: false,
            })
            .await
            .expect("append");
        seqs.push(ack.last_seq);
    }
    seqs
}

/// Reads heads and a history while watching the JetStream API subjects; returns how many
/// requests went to the leader-only get and how many to direct gets.
async fn reads_by_route(store: &EventStore, watcher: &async_nats::Client) -> (usize, usize) {
    let (a, b) = ("talkwai.evt.t.member.a", "talkwai.evt.t.tenant.b");
    let seqs = append_each(store, &[a, b, a]).await;
    let mut leader = watcher
        .subscribe("$JS.API.STREAM.MSG.GET.TALKWAI_EVENTS")
        .await
        .expect("subscribe");
    let mut direct = watcher
        .subscribe("$JS.API.DIRECT.GET.TALKWAI_EVENTS.>")
        .await
        .expect("subscribe");
    // `flush` only writes the subscriptions out; a probe through the server proves they are in
    // place before the reads start (a connection's operations are processed in order).
    let mut probe = watcher.subscribe("probe").await.expect("subscribe");
    watcher.publish("probe", "".into()).await.expect("probe");
    tokio::time::timeout(std::time::Duration::from_secs(10), probe.next())
        .await
        .expect("the watcher's subscriptions are in place");
    let subjects = [
        a.to_owned(),
        b.to_owned(),
        "talkwai.evt.t.agent.none".to_owned(),
    ];
    for _ in 0..5 {
        let heads = store.last_of_subjects(&subjects).await.expect("heads");
        assert_eq!(heads.len(), 2, "the subject with no message has no head");
        assert_eq!(heads[a].seq, seqs[2]);
        assert_eq!(heads[b].seq, seqs[1]);
    }
    let history = store
        .read_subject_through(a, 0, seqs[2])
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [seqs[0], seqs[2]]
    );
    (
        requests_seen(&mut leader).await,
        requests_seen(&mut direct).await,
    )
}

#[tokio::test]
async fn a_single_node_serves_heads_with_direct_gets() {
    let (server, _client, store) = single_node().await;
    let watcher = async_nats::connect(server.url()).await.expect("connect");
    let (leader, direct) = reads_by_route(&store, &watcher).await;
    assert_eq!((leader, direct), (0, 15), "5 reads of 3 heads, all direct");
}

/// Any replica answers direct gets, and a follower may not have applied what the leader just
/// acknowledged; the heads a command decides on must include it, so they come from the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_serves_heads_from_its_leader() {
    let cluster = NatsCluster::start().await.expect("3-node cluster");
    // Both connections on one node, so the watcher's interest is known there before the reads
    // (interest travels to the other nodes asynchronously).
    let urls = cluster.url_list();
    let node = server_urls(&urls)[0].to_owned();
    let client = async_nats::connect(node.as_str())
        .await
        .expect("connect to a node");
    // A freshly started cluster may still be settling (seen on a loaded machine): retry.
    let settings = StreamSettings {
        replicas: 3,
        ..Default::default()
    };
    let store = open_settled(&client, &settings).await;
    let watcher = async_nats::connect(node.as_str())
        .await
        .expect("connect to the same node");
    let (leader, direct) = reads_by_route(&store, &watcher).await;
    assert_eq!(
        (leader, direct),
        (15, 0),
        "5 reads of 3 heads, all at the leader"
    );
}

/// A history that ends before the head it was read for is completed from the leader; when the
/// leader has nothing more either, it is an error, never a silently short history.
#[tokio::test]
async fn a_history_short_of_its_head_is_never_returned() {
    let (_server, _client, store) = single_node().await;
    let subject = "talkwai.evt.t.member.a";
    let seqs = append_each(&store, &[subject, subject]).await;
    let short = store
        .read_subject_through(subject, 0, seqs[1] + 5)
        .await
        .expect_err("the log has nothing up to that head");
    assert!(
        matches!(&short, talkwai_eventstore::StoreError::Protocol(m) if m.contains("ends at")),
        "{short}"
    );
}
