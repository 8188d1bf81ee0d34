//! A notifier instance that dies holding an event does not hold its rooms: with two instances
//! as processes, one is frozen (SIGSTOP) while events flow, so the consumer hands it an event it
//! never acks, then killed (SIGKILL). Every event's `taskUpdates` message still arrives, within
//! seconds (an ack wait of 1 s, not the 30 s it used to be), in log order once repeats are
//! dropped by `seq`.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::{Harness, PLATFORM, SECRET, world};
use futures::StreamExt as _;
use serde_json::{Value, json};
use talkwai_testkit::wait;
use uuid::Uuid;

fn notifier(h: &Harness, instance: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_talkwai-notifier"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TALKWAI_NATS_URL", h.server.url())
        .env("TALKWAI_PLATFORM_TOKEN", PLATFORM)
        .env("TALKWAI_JWT_SECRET", SECRET)
        .env("TALKWAI_INSTANCE", instance)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the notifier starts")
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_keep_flowing_when_a_notifier_instance_dies_holding_an_event() {
    let h = Harness::start().await;
    let w = world(&h).await;
    let mut frozen = notifier(&h, "notifier-frozen");
    let _other = notifier(&h, "notifier-other");
    wait::wait_for_instances(&h.client, "talkwai-presence", 2)
        .await
        .unwrap_or_else(|e| panic!("two notifiers never served: {e}"));

    let room = format!("talkwai.room.tenant.{}.topic.taskUpdates", w.tenant);
    let mut sub = h.client.subscribe(room).await.expect("subscribe");
    // The subscription is in place once a probe through it comes back.
    let probe = format!("talkwai.room.tenant.{}.topic.taskUpdates", w.tenant);
    wait::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let client = h.client.clone();
        let probe = probe.clone();
        async move {
            client
                .publish(probe, b"{\"probe\":true}".as_slice().into())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
    .expect("probe published");
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the probe comes back")
        .expect("subscription open");
    assert!(first.payload.starts_with(b"{\"probe\""));

    // One instance freezes: the events handed to it are held, unacked.
    signal(&frozen, "STOP");
    let create = |n: usize| {
        let token = w.owner_token.clone();
        let tenant = w.tenant;
        let h = &h;
        async move {
            let id = Uuid::new_v4();
            h.ok(
                &format!("talkwai.cmd.{tenant}.task.create"),
                json!({"id": id, "type": "call", "priority": "high",
                       "fromAddress": "+15550001111", "toAddress": "+15550002222",
                       "subject": format!("task {n}")}),
                &token,
            )
            .await;
            id
        }
    };
    let mut created = Vec::new();
    for n in 0..20 {
        created.push(create(n).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It dies without acking; then more events come.
    signal(&frozen, "KILL");
    let _ = frozen.wait().await;
    for n in 20..30 {
        created.push(create(n).await);
    }

    let wanted: BTreeSet<String> = created.iter().map(ToString::to_string).collect();
    let mut seen_seqs = BTreeSet::new();
    let mut order = Vec::new();
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < wanted.len() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let Ok(value) = serde_json::from_slice::<Value>(&message.payload) else {
            continue;
        };
        let (Some(task), Some(seq)) = (value["taskId"].as_str(), value["seq"].as_u64()) else {
            continue;
        };
        // Repeats carry the same seq and are dropped, as clients do.
        if seen_seqs.insert(seq) {
            order.push(seq);
            got.insert(task.to_owned());
        }
    }
    let missing: Vec<_> = wanted.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} task.created never reached the room within 10 s: {missing:?}",
        missing.len(),
        wanted.len()
    );
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "room messages arrive in log order");
}
