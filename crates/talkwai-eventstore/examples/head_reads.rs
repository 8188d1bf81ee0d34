//! How long reading the heads of a command's subjects takes on a large log.
//!
//! Starts a throw-away nats-server, writes two "fact" subjects (a tenant, a member) and then
//! `N` events on new subjects (default 1,000,000, ~1 KB each), then one recent event, and
//! times 200 sequential reads of the three heads two ways:
//!
//! - one `multi_last` batched direct get (what `last_of_subjects` sent before 2026-12-04), sent
//!   raw here as the baseline;
//! - [`EventStore::last_of_subjects`]: one last-by-subject direct get per subject, in flight
//!   together.
//!
//! Run: `cargo run --release -p talkwai-eventstore --example head_reads -- 1000000`.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use talkwai_eventstore::{AppendRequest, AppenderConfig, EventStore, Outbound, StreamSettings};

const READS: u32 = 200;

fn event(subject: String) -> Outbound {
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Event-Type", "probe.written");
    Outbound {
        subject,
        headers,
        payload: vec![b'x'; 900].into(),
        expected_last_subject_seq: None,
    }
}

/// One raw `multi_last` request; returns how many messages answered.
async fn multi_last(client: &async_nats::Client, subjects: &[String]) -> usize {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    let body = serde_json::json!({ "multi_last": subjects, "batch": subjects.len() });
    client
        .publish_with_reply(
            "$JS.API.DIRECT.GET.TALKWAI_EVENTS",
            inbox,
            serde_json::to_vec(&body).expect("json").into(),
        )
        .await
        .expect("publish");
    let mut found = 0;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), replies.next()).await
    {
        if message.status.is_some() {
            break;
        }
        found += 1;
    }
    found
}

async fn time(label: &str, mut read: impl AsyncFnMut() -> usize, expected: usize) {
    let started = Instant::now();
    for _ in 0..READS {
        assert_eq!(read().await, expected, "{label}: every head is found");
    }
    println!("{label:<45} {:>10.3?} per read", started.elapsed() / READS);
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let server = talkwai_testkit::NatsServer::start()
        .await
        .expect("nats-server starts");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("stream");
    let appender = store.appender(AppenderConfig::default());
    let facts = ["talkwai.evt.t.tenant.old", "talkwai.evt.t.member.old"].map(String::from);
    let request = |subjects: Vec<String>| AppendRequest {
        messages: subjects.into_iter().map(event).collect(),
        dedupe_id: None,
        claim_first: false,
    };
    appender
        .append(request(facts.to_vec()))
        .await
        .expect("facts");
    let started = Instant::now();
    let mut writes = FuturesUnordered::new();
    for batch in 0..events.div_ceil(1000) {
        let subjects = (0..1000)
            .map(|i| format!("talkwai.evt.t.task.b{batch}i{i}"))
            .collect();
        writes.push(appender.append(request(subjects)));
        if writes.len() >= 8 {
            writes.next().await.map(|r| r.expect("append"));
        }
    }
    while let Some(result) = writes.next().await {
        result.expect("append");
    }
    let recent = "talkwai.evt.t.task.recent".to_owned();
    appender
        .append(request(vec![recent.clone()]))
        .await
        .expect("recent");
    println!("wrote {events} events in {:.1?}", started.elapsed());
    let all = [facts[0].clone(), facts[1].clone(), recent];
    for round in 1..=2 {
        println!("round {round}");
        time(
            "  multi_last, 2 old + 1 recent (raw)",
            async || multi_last(&client, &all).await,
            3,
        )
        .await;
        time(
            "  multi_last, 2 old (raw)",
            async || multi_last(&client, &all[..2]).await,
            2,
        )
        .await;
        time(
            "  last_of_subjects, 2 old + 1 recent",
            async || store.last_of_subjects(&all).await.expect("read").len(),
            3,
        )
        .await;
    }
}
