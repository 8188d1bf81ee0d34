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
        claim_first: false,
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
        claim_first: false,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_head_reads_are_never_older_than_the_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use talkwai_eventstore::HeadReader;

    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let subjects: Vec<String> = (0..8)
        .map(|i| format!("talkwai.evt.platform.user.h{i}"))
        .collect();
    // What each subject's acknowledged head is at least, as the writer learns it.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (subjects, acked, writing) =
            (subjects.clone(), Arc::clone(&acked), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut last = [0u64; 8];
            let mut n = 0usize;
            while writing.load(Ordering::Relaxed) {
                let i = n % 8;
                let ack = appender
                    .append(request(vec![message(
                        &subjects[i],
                        &n.to_string(),
                        last[i],
                    )]))
                    .await
                    .expect("append");
                last[i] = ack.last_seq;
                acked[i].store(ack.last_seq, Ordering::SeqCst);
                n += 1;
            }
            n
        })
    };
    let reader = HeadReader::start(store.clone(), 2);
    let mut readers = Vec::new();
    for r in 0..32usize {
        let (reader, subjects, acked) = (reader.clone(), subjects.clone(), Arc::clone(&acked));
        readers.push(tokio::spawn(async move {
            for k in 0..25usize {
                // Two subjects of the eight, plus one that never has a message.
                let (a, b) = ((r + k) % 8, (r * 3 + k) % 8);
                let floor_a = acked[a].load(Ordering::SeqCst);
                let floor_b = acked[b].load(Ordering::SeqCst);
                let asked = vec![
                    subjects[a].clone(),
                    subjects[b].clone(),
                    "talkwai.evt.platform.user.never".to_owned(),
                ];
                let heads = reader.read(asked).await.expect("read");
                for (i, floor) in [(a, floor_a), (b, floor_b)] {
                    let seq = heads.get(&subjects[i]).map_or(0, |m| m.seq);
                    assert!(
                        seq >= floor,
                        "{}: head {seq} older than {floor}, acked before the call",
                        subjects[i]
                    );
                    if let Some(m) = heads.get(&subjects[i]) {
                        assert_eq!(m.subject, subjects[i]);
                    }
                }
                assert!(!heads.contains_key("talkwai.evt.platform.user.never"));
            }
        }));
    }
    for reader in readers {
        reader.await.expect("reader");
    }
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 0, "the writer appended while the readers read");
    // And a read after the writer stopped sees every last acknowledged head exactly.
    let heads = reader.read(subjects.clone()).await.expect("read");
    for (i, subject) in subjects.iter().enumerate() {
        let acked = acked[i].load(Ordering::SeqCst);
        assert_eq!(heads.get(subject).map_or(0, |m| m.seq), acked, "{subject}");
    }
}

#[tokio::test]
async fn a_failed_fence_writes_nothing_and_spares_the_rest_of_its_group() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig {
        max_in_flight: 1,
        ..Default::default()
    });
    // Alone: a failed fence writes nothing, a passing one writes.
    let fenced = appender
        .append_fenced(
            request(vec![message("talkwai.evt.platform.user.f0", "no", 0)]),
            std::sync::Arc::new(|| false),
        )
        .await;
    assert!(matches!(fenced, Err(AppendError::Fenced)), "{fenced:?}");
    assert_eq!(store.last_sequence().await.expect("head"), 0);
    appender
        .append_fenced(
            request(vec![message("talkwai.evt.platform.user.f0", "yes", 0)]),
            std::sync::Arc::new(|| true),
        )
        .await
        .expect("a passing fence writes");
    assert_eq!(store.last_sequence().await.expect("head"), 1);

    // In a group: the fenced requests fail, the others land (one message each).
    let mut tasks = Vec::new();
    for i in 0..100 {
        let appender: Appender = appender.clone();
        tasks.push(tokio::spawn(async move {
            let subject = format!("talkwai.evt.platform.user.g{i}");
            let open = i % 3 != 0;
            appender
                .append_fenced(
                    request(vec![message(&subject, "e", 0)]),
                    std::sync::Arc::new(move || open),
                )
                .await
        }));
    }
    let (mut written, mut fenced) = (0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.expect("join") {
            Ok(_) => {
                assert!(i % 3 != 0, "request {i} was fenced but written");
                written += 1;
            }
            Err(AppendError::Fenced) => {
                assert!(i % 3 == 0, "request {i} was open but fenced");
                fenced += 1;
            }
            Err(other) => panic!("request {i}: {other}"),
        }
    }
    assert_eq!((written, fenced), (66, 34));
    assert_eq!(store.last_sequence().await.expect("head"), 1 + 66);
}

/// The server stores a batch's control headers with each of its messages, forever: the batch
/// id is kept short (a UUID would take 32 bytes per message).
#[tokio::test]
async fn batched_messages_store_a_short_batch_id() {
    let (_server, store) = setup().await;
    let appender = store.appender(AppenderConfig::default());
    let (a, b) = ("talkwai.evt.platform.user.a", "talkwai.evt.platform.user.b");
    appender
        .append(request(vec![message(a, "1", 0), message(b, "2", 0)]))
        .await
        .expect("batch");
    let first = store.read_subject(a, 0).await.expect("read a");
    let second = store.read_subject(b, 0).await.expect("read b");
    let id = first[0].header("Nats-Batch-Id").expect("batch id stored");
    assert!(id.len() <= 15, "batch id {id:?}");
    assert_eq!(second[0].header("Nats-Batch-Id"), Some(id));
    assert_eq!(second[0].header("Nats-Batch-Commit"), Some("1"));
}

/// Sends `n` fenced one-message requests at once (their fences pass), on subjects
/// `<prefix><i>`; the outcome of each.
async fn fenced_burst(
    appender: &Appender,
    prefix: &str,
    n: usize,
) -> Vec<(String, Result<talkwai_eventstore::AppendAck, AppendError>)> {
    let sends = (0..n).map(|i| {
        let subject = format!("{prefix}{i}");
        async move {
            let result = appender
                .append_fenced(
                    request(vec![message(&subject, "e", 0)]),
                    std::sync::Arc::new(|| true),
                )
                .await;
            (subject, result)
        }
    });
    futures::future::join_all(sends).await
}

/// A writer fenced in the log: once another appended a bump on its fence subject, every
/// group it sends fails as a whole in the server, although its own fences still pass (as for a
/// process that resumes after a pause with writes in its connection's buffer); it is told, its
/// requests are answered `Fenced` and none of them is in the log; its next groups land again.
#[tokio::test]
async fn a_bumped_log_fence_refuses_the_writers_groups() {
    let (_server, store) = setup().await;
    let fence_subject = "talkwai.evt.platform.guard.writer-fence.w1";
    let told = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let appender = store
        .fenced_appender(
            AppenderConfig::default(),
            talkwai_eventstore::LogFence {
                subject: fence_subject.to_owned(),
                mark: "mark".into(),
                mark_headers: HeaderMap::new(),
                on_fenced: Box::new({
                    let told = std::sync::Arc::clone(&told);
                    move |bumps| {
                        told.fetch_add(bumps.len(), std::sync::atomic::Ordering::SeqCst);
                    }
                }),
            },
        )
        .await
        .expect("fenced appender");
    for outcome in fenced_burst(&appender, "talkwai.evt.platform.user.a", 30).await {
        outcome.1.expect("written before any bump");
    }
    let marks = store.read_subject(fence_subject, 0).await.expect("marks");
    assert!(!marks.is_empty(), "30 requests at once formed no group");
    assert!(marks.iter().all(|m| m.payload == "mark"));

    // Another instance takes a partition over: it bumps the fence.
    let other = store.appender(AppenderConfig::default());
    let mut bump = message(fence_subject, "bump", 0);
    bump.expected_last_subject_seq = None;
    other.append(request(vec![bump])).await.expect("bump");

    let outcomes = fenced_burst(&appender, "talkwai.evt.platform.user.b", 30).await;
    let mut fenced = 0;
    for (subject, outcome) in &outcomes {
        let stored = store.read_subject(subject, 0).await.expect("read");
        match outcome {
            Ok(_) => assert_eq!(stored.len(), 1, "{subject} acknowledged"),
            Err(AppendError::Fenced) => {
                fenced += 1;
                assert!(stored.is_empty(), "{subject} was fenced but is in the log");
            }
            Err(other) => panic!("{subject}: {other}"),
        }
    }
    assert!(fenced > 0, "no group was refused by the bumped fence");
    assert_eq!(told.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The writer knows the bump now: its groups land again.
    for outcome in fenced_burst(&appender, "talkwai.evt.platform.user.c", 30).await {
        outcome.1.expect("written after the fence was read");
    }
    let after = store.read_subject(fence_subject, 0).await.expect("marks");
    assert!(after.len() > marks.len() + 1, "the new groups carry marks");
}
