//! Integration tests of the event store against a real nats-server (JetStream, sync always).

use async_nats::HeaderMap;
use futures::StreamExt;
use talkwai_eventstore::{
    AppendError, AppendRequest, Appender, AppenderConfig, EventStore, Outbound, StreamSettings,
};
use talkwai_testkit::NatsServer;

async fn setup() -> (NatsServer, EventStore) {
    let server = NatsServer::start().await.expect("nats-server starts");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let store = EventStore::open(client, &StreamSettings::default())
        .await
        .expect("stream");
    (server, store)
}

fn message(subject: &str, body: &str, expected: u64) -> Outbound {
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Event-Type", "test.event");
    Outbound {
        subject: subject.to_owned(),
        headers,
        payload: body.to_owned().into(),
        expected_last_subject_seq: Some(expected),
    }
}

fn request(messages: Vec<Outbound>) -> AppendRequest {
    AppendRequest {
        messages,
        dedupe_id: None,
    }
}

#[tokio::test]
async fn stream_is_configured_as_the_log_of_record() {
    let (_server, store) = setup().await;
    let mut stream = store
        .jetstream()
        .get_stream("TALKWAI_EVENTS")
        .await
        .expect("stream");
    let config = stream.info().await.expect("info").config.clone();
    assert!(config.deny_delete && config.deny_purge && config.allow_direct);
    assert!(config.allow_atomic_publish);
    assert_eq!(
        config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(config.max_age, std::time::Duration::ZERO);
    // Opening again updates in place.
    let again = EventStore::open(store.client().clone(), &StreamSettings::default()).await;
    assert!(again.is_ok());
}

#[tokio::test]
async fn append_checks_expected_subject_sequence() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let subject = "talkwai.evt.platform.user.a";
    let first = appender
        .append(request(vec![message(subject, "1", 0)]))
        .await
        .expect("first");
    assert_eq!(first.first_seq, 1);
    let stale = appender
        .append(request(vec![message(subject, "2", 0)]))
        .await;
    assert!(
        matches!(stale, Err(AppendError::Conflict(_))),
        "got {stale:?}"
    );
    let second = appender
        .append(request(vec![message(subject, "2", 1)]))
        .await
        .expect("second");
    assert_eq!(second.last_seq, 2);
    let history = store.read_subject(subject, 0).await.expect("read");
    let bodies: Vec<_> = history.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(bodies, vec!["1", "2"]);
    assert_eq!(history[0].header("Talkwai-Event-Type"), Some("test.event"));
    assert!(history[0].stored_at_ms > 0);
}

#[tokio::test]
async fn multi_message_append_is_all_or_nothing() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let a = "talkwai.evt.platform.user.a";
    let guard = "talkwai.evt.platform.guard.user-email.x";
    appender
        .append(request(vec![message(guard, "held", 0)]))
        .await
        .expect("guard");
    // The second message's expectation is stale: nothing of the request may land.
    let refused = appender
        .append(request(vec![
            message(a, "event", 0),
            message(guard, "claim", 0),
        ]))
        .await;
    assert!(
        matches!(refused, Err(AppendError::Conflict(_))),
        "got {refused:?}"
    );
    assert!(store.read_subject(a, 0).await.expect("read").is_empty());
    let ok = appender
        .append(request(vec![
            message(a, "event", 0),
            message(guard, "claim", 1),
        ]))
        .await
        .expect("atomic append");
    assert_eq!((ok.first_seq, ok.last_seq), (2, 3));
}

/// JetStream checks the expected subject sequence before the duplicate window, so a retried
/// single publish is refused as a conflict (and stored once); the command service answers such
/// retries from the command id recorded in the aggregate's history.
#[tokio::test]
async fn a_retried_single_publish_is_stored_once() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let subject = "talkwai.evt.platform.user.d";
    let req = AppendRequest {
        messages: vec![message(subject, "x", 0)],
        dedupe_id: Some("cmd-1".into()),
    };
    let first = appender.append(req.clone()).await.expect("first");
    assert_eq!(first.last_seq, 1);
    let again = appender.append(req).await;
    assert!(
        matches!(again, Err(AppendError::Conflict(_))),
        "got {again:?}"
    );
    let history = store.read_subject(subject, 0).await.expect("read");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].header("Nats-Msg-Id"), Some("cmd-1"));
}

#[tokio::test]
async fn concurrent_appends_are_grouped_and_a_conflict_fails_only_its_request() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig {
        max_in_flight: 1,
        ..Default::default()
    });
    // 200 requests on distinct subjects plus one stale request, all in flight at once.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let appender: Appender = appender.clone();
        tasks.push(tokio::spawn(async move {
            let subject = format!("talkwai.evt.platform.user.s{i}");
            appender
                .append(request(vec![message(&subject, "e", 0)]))
                .await
        }));
    }
    let stale = appender.clone();
    let stale = tokio::spawn(async move {
        stale
            .append(request(vec![message(
                "talkwai.evt.platform.user.s7",
                "late",
                5,
            )]))
            .await
    });
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("join").expect("append").last_seq);
    }
    assert!(matches!(
        stale.await.expect("join"),
        Err(AppendError::Conflict(_))
    ));
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "every append has its own sequence");
    assert_eq!(store.last_sequence().await.expect("head"), 200);
}

#[tokio::test]
async fn last_of_subjects_reads_many_heads_at_once() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    for (subject, n) in [
        ("talkwai.evt.platform.user.a", 3),
        ("talkwai.evt.platform.user.b", 1),
    ] {
        for i in 0..n {
            appender
                .append(request(vec![message(subject, &i.to_string(), i)]))
                .await
                .expect("append");
        }
    }
    let subjects = vec![
        "talkwai.evt.platform.user.a".to_owned(),
        "talkwai.evt.platform.user.b".to_owned(),
        "talkwai.evt.platform.user.none".to_owned(),
    ];
    let heads = store.last_of_subjects(&subjects).await.expect("multi last");
    assert_eq!(heads.len(), 2);
    assert_eq!(heads["talkwai.evt.platform.user.a"].payload, "2");
    assert_eq!(heads["talkwai.evt.platform.user.b"].seq, 4);
    let one = store
        .last_of_subject("talkwai.evt.platform.user.none")
        .await
        .expect("single");
    assert!(one.is_none());
}

#[tokio::test]
async fn long_histories_are_read_across_batches() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let subject = "talkwai.evt.platform.user.long";
    for i in 0..1200u64 {
        appender
            .append(request(vec![message(subject, &i.to_string(), i)]))
            .await
            .expect("append");
    }
    let history = store.read_subject(subject, 0).await.expect("read");
    assert_eq!(history.len(), 1200);
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
    let tail = store.read_subject(subject, 1190).await.expect("read tail");
    assert_eq!(tail.len(), 10);
}

#[tokio::test]
async fn replay_delivers_the_log_in_order_with_filters() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let (mut even, mut odd) = (0, 0);
    for i in 0..10u64 {
        let (subject, last) = if i % 2 == 0 {
            ("talkwai.evt.platform.user.even", &mut even)
        } else {
            ("talkwai.evt.platform.user.odd", &mut odd)
        };
        let ack = appender
            .append(request(vec![message(subject, &i.to_string(), *last)]))
            .await
            .expect("append");
        *last = ack.last_seq;
    }
    let replay = store
        .replay(3, vec!["talkwai.evt.platform.user.even".into()])
        .await
        .expect("replay");
    let got: Vec<_> = replay
        .take(3)
        .map(|m| m.expect("message").seq)
        .collect()
        .await;
    assert_eq!(got, vec![3, 5, 7]);
}
