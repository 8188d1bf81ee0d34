//! The active notifier instance that dies holding events does not hold its rooms: with two
//! instances as processes, the active one (the lease holder) is frozen (SIGSTOP) while events
//! flow, then killed (SIGKILL) — or woken up (SIGCONT) after the other took over, so it may
//! publish what it had in hand late. The other instance takes the lease, and every event's
//! `taskUpdates` message still arrives; once repeats are dropped as a client does (a `seq` not
//! above the last taken), the room holds exactly the events, in log order.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::{Harness, PLATFORM, Rooms, SECRET, World, world};
use futures::StreamExt as _;
use serde_json::{Value, json};
use talkwai_notifier::lease::{BUCKET, LEADER_KEY};
use talkwai_testkit::wait;
use uuid::Uuid;

/// The instance name in the lease (its value is `<instance>/<uuid>`), once someone holds it.
async fn holder(h: &Harness) -> Option<String> {
    let js = async_nats::jetstream::new(h.client.clone());
    let kv = js.get_key_value(BUCKET).await.ok()?;
    let value = kv.get(LEADER_KEY).await.ok()??;
    let value = String::from_utf8(value.to_vec()).ok()?;
    value.split_once('/').map(|(name, _)| name.to_owned())
}

/// Waits until `instance` holds the lease.
async fn wait_holder(h: &Harness, instance: &str) {
    wait::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            match holder(h).await {
                Some(name) if name == instance => Ok(()),
                other => Err(format!("the lease is held by {other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{instance} never held the notifier lease: {e}"));
}

/// Creates a task in `w`'s tenant; its `task.created` sequence.
async fn create(h: &Harness, w: &World, n: usize) -> u64 {
    h.ok(
        &format!("talkwai.cmd.{}.task.create", w.tenant),
        json!({"id": Uuid::new_v4(), "type": "call", "priority": "high",
               "fromAddress": "+15550001111", "toAddress": "+15550002222",
               "subject": format!("task {n}")}),
        &w.owner_token,
    )
    .await
    .seq
}

/// The active instance freezes while tasks are created; the other takes over; then the frozen
/// one is killed (`wake: false`) or woken up (`wake: true`) and more tasks follow. Asserts
/// the room got exactly the tasks' events in log order once repeats are dropped.
async fn freeze_the_active_instance(wake: bool) {
    let h = Harness::start().await;
    let w = world(&h).await;
    let mut active = notifier(&h, "notifier-active");
    wait_holder(&h, "notifier-active").await;
    let mut standby = notifier(&h, "notifier-standby");
    wait::wait_for_instances(&h.client, "talkwai-presence", 2)
        .await
        .unwrap_or_else(|e| panic!("two notifiers never served: {e}"));
    let mut rooms = Rooms::subscribe(
        &h.client,
        &format!("talkwai.room.tenant.{}.topic.taskUpdates", w.tenant),
    )
    .await;
    let mut seqs = Vec::new();
    for n in 0..10 {
        seqs.push(create(&h, &w, n).await);
    }
    // Tasks keep coming while it freezes, so it may hold some in hand.
    let writer = {
        let h = &h;
        let w = &w;
        async move {
            let mut seqs = Vec::new();
            for n in 10..40 {
                seqs.push(create(h, w, n).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seqs
        }
    };
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        signal(&active, "STOP");
    };
    let (more, ()) = tokio::join!(writer, freeze);
    seqs.extend(more);
    wait_holder(&h, "notifier-standby").await;
    if wake {
        signal(&active, "CONT");
    } else {
        signal(&active, "KILL");
        let _ = active.wait().await;
    }
    for n in 40..50 {
        seqs.push(create(&h, &w, n).await);
    }
    rooms.take_until(seqs.len(), Duration::from_secs(30)).await;
    let taken: Vec<u64> = rooms
        .taken(&format!(
            "talkwai.room.tenant.{}.topic.taskUpdates",
            w.tenant
        ))
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(
        taken, seqs,
        "the room, repeats dropped: every task.created, in log order ({} repeats dropped)",
        rooms.repeats
    );
    assert_eq!(
        rooms.different, 0,
        "a repeat differs from the message it repeats"
    );
    assert_eq!(
        holder(&h).await.as_deref(),
        Some("notifier-standby"),
        "the standby holds the lease"
    );
    assert!(
        standby.try_wait().expect("wait").is_none(),
        "the standby runs"
    );
    if wake {
        assert!(
            active.try_wait().expect("wait").is_none(),
            "the woken one runs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_notifier_killed_while_frozen_loses_nothing_and_the_standby_takes_over() {
    freeze_the_active_instance(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_active_notifier_that_wakes_after_the_take_over_only_repeats_what_clients_drop() {
    freeze_the_active_instance(true).await;
}

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
    // The frozen one is the active one (it holds the lease), the other stands by.
    let mut frozen = notifier(&h, "notifier-frozen");
    wait_holder(&h, "notifier-frozen").await;
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
    assert_eq!(
        holder(&h).await.as_deref(),
        Some("notifier-other"),
        "the other instance took over"
    );
}
