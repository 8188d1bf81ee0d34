//! What the sign-in check costs a presence request ([`talkwai_notifier::signin`]).
//!
//! Starts a throw-away nats-server and the command service in process, creates a tenant and an
//! owner member linked to a user, and times `join` and `heartbeat` through two presence
//! services over the same bucket and log, interleaved so both see the same machine:
//!
//! - `unchecked`: the token and the erased-tenant read only (before the check existed);
//! - `checked`: the same plus the sign-in check, its verdict cached (the common case);
//! - `first sight`: a join through a fresh service each time (the verdict not cached: the
//!   entity's history read and folded).
//!
//! Each request is answered by `PresenceService::handle` in process (no hop to the service
//! through NATS; every read and write of the bucket and the log is a real request to
//! nats-server). Run: `cargo run --release -p talkwai-notifier --example presence_cost -- 2000`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use common::{Harness, PLATFORM, SECRET, world};
use secrecy::SecretString;
use talkwai_auth::AuthArgs;
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_notifier::presence::{self, PresenceService};

/// Latencies of one kind of request.
#[derive(Default)]
struct Timings(Vec<Duration>);

impl Timings {
    fn quantile(&mut self, q: f64) -> Duration {
        self.0.sort_unstable();
        let at = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0.get(at).copied().unwrap_or_default()
    }

    fn line(&mut self, name: &str, baseline: Option<Duration>) {
        let (p50, p90, p99) = (self.quantile(0.5), self.quantile(0.9), self.quantile(0.99));
        let ratio = baseline.map_or_else(String::new, |b| {
            format!(
                " ({:.2}× unchecked p50)",
                p50.as_secs_f64() / b.as_secs_f64()
            )
        });
        println!(
            "{name:<22} n={:<5} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms{ratio}",
            self.0.len(),
            p50.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
    }
}

/// Times one request; panics unless it was answered `ok`.
async fn timed(
    service: &PresenceService,
    subject: &str,
    headers: &HeaderMap,
    body: &[u8],
    into: &mut Timings,
) {
    let started = Instant::now();
    let reply = service.handle(subject, Some(headers), body).await;
    into.0.push(started.elapsed());
    assert!(reply.ok, "{subject}: {:?}", reply.error);
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(2000, |n| n.parse().expect("rounds: a number"));
    // A nats-server, the command service, a tenant and its owner member linked to a user.
    let h = Harness::start().await;
    let w = world(&h).await;
    let client = h.client.clone();
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let kv = presence::bucket(store.jetstream(), 1)
        .await
        .expect("bucket");
    let auth = AuthArgs::with_secrets(SecretString::from(PLATFORM), SecretString::from(SECRET));
    let build = || {
        PresenceService::new(
            client.clone(),
            kv.clone(),
            auth.verifier().expect("verifier"),
            Duration::from_secs(60),
        )
        .closing_erased_rooms(store.clone())
    };
    let unchecked = build();
    let checked = build().signing_in(store.clone());
    let mut headers = HeaderMap::new();
    headers.insert(
        "Authorization",
        format!("Bearer {}", w.owner_token).as_str(),
    );
    let room = |op: &str| format!("talkwai.room.tenant.{}.presence.{op}", w.tenant);
    let (join, heartbeat) = (room("join"), room("heartbeat"));
    let body = |session: &str| serde_json::json!({"sessionId": session}).to_string();

    // join, checked join, heartbeat, checked heartbeat; then the first 50 rounds (warm-up).
    let mut timings: [Timings; 5] = Default::default();
    let mut first_joins = Timings::default();
    let (a, b) = (body("cost-a"), body("cost-b"));
    let requests = [
        (&unchecked, &join, &a),
        (&checked, &join, &b),
        (&unchecked, &heartbeat, &a),
        (&checked, &heartbeat, &b),
    ];
    for round in 0..rounds + 50 {
        for (i, (service, subject, body)) in requests.iter().enumerate() {
            let into = if round < 50 { 4 } else { i };
            timed(
                service,
                subject,
                &headers,
                body.as_bytes(),
                &mut timings[into],
            )
            .await;
        }
        if round >= 50 && round % 10 == 0 {
            let fresh = build().signing_in(store.clone());
            timed(&fresh, &join, &headers, b.as_bytes(), &mut first_joins).await;
        }
    }
    let [
        mut joins,
        mut checked_joins,
        mut beats,
        mut checked_beats,
        _,
    ] = timings;
    let base_join = joins.quantile(0.5);
    let base_beat = beats.quantile(0.5);
    joins.line("join unchecked", None);
    checked_joins.line("join checked", Some(base_join));
    first_joins.line("join first sight", Some(base_join));
    beats.line("heartbeat unchecked", None);
    checked_beats.line("heartbeat checked", Some(base_beat));
}
