//! Partition ownership with real processes: a killed owner's tenants move to the survivor with
//! nothing lost or applied twice, and a paused owner that wakes after losing its lease writes
//! nothing it decided before.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::ErrorCode;
use talkwai_eventstore::partition::partition_of;
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_proto::{CommandReply, writer_fence};
use talkwai_testkit::NatsServer;
use tokio::process::{Child, Command};
use uuid::Uuid;

const PLATFORM: &str = "platform-token-ownership";
const PARTITIONS: u32 = 8;
const BUCKET: &str = talkwai_command_service::ownership::BUCKET;

fn spawn_service(url: &str, name: &str) -> Child {
    spawn_with_partitions(url, name, PARTITIONS)
}

fn spawn_with_partitions(url: &str, name: &str, partitions: u32) -> Child {
    common::spawn_process(
        url,
        name,
        PLATFORM,
        &[
            ("TALKWAI_COMMAND_PARTITIONS", partitions.to_string()),
            ("TALKWAI_COMMAND_LEASE_TTL_MS", "1000".to_owned()),
        ],
    )
}

async fn wait_ready(client: &async_nats::Client) {
    common::wait_process_ready(client).await;
}

/// Sends a command once; `None` when no answer came within `timeout`.
async fn send_once(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    id: Uuid,
    timeout: Duration,
) -> Option<CommandReply> {
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", id.to_string().as_str());
    headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
    let payload = serde_json::to_vec(body).expect("json");
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(payload.into())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject.to_owned(), request)
        .await
        .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// Sends a command with the same id until it is accepted (retrying timeouts, "no responders"
/// and `unavailable`), at most for a minute; the accepted stream sequence.
async fn send_until_accepted(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    id: Uuid,
) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(reply) = send_once(client, subject, body, id, Duration::from_secs(3)).await {
            match reply.into_result() {
                Ok(accepted) => return accepted.seq,
                Err(e) if e.code == ErrorCode::Unavailable => {}
                Err(e) => panic!("command {id} refused: {e:?}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "command {id} was not accepted within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Who holds the partition leases (of a layout of `count`), and the live instances.
async fn holders(client: &async_nats::Client, count: u32) -> (HashMap<u32, String>, Vec<String>) {
    let js = async_nats::jetstream::new(client.clone());
    let (leases, live) = talkwai_eventstore::lease::holders(&js, BUCKET)
        .await
        .expect("lease holders");
    (
        leases
            .into_iter()
            .filter(|(slot, _)| slot.count == count)
            .map(|(slot, holder)| (slot.index, holder))
            .collect(),
        live,
    )
}

/// Waits (deadline one minute, pause 100 ms) until `condition` holds for the lease holders.
async fn wait_for_holders(
    client: &async_nats::Client,
    count: u32,
    what: &str,
    condition: impl Fn(&HashMap<u32, String>, &[String]) -> bool,
) -> (HashMap<u32, String>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (leases, live) = holders(client, count).await;
        if condition(&leases, &live) {
            return (leases, live);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within a minute (leases {leases:?}, live {live:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_tenant(client: &async_nats::Client) -> Uuid {
    let tenant = Uuid::new_v4();
    send_until_accepted(
        client,
        "talkwai.cmd.platform.tenant.create",
        &json!({"id": tenant, "name": "Owned Co"}),
        Uuid::new_v4(),
    )
    .await;
    tenant
}

fn task_body(tag: &str) -> Value {
    json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111",
           "toAddress": "+15550002222", "subject": tag})
}

/// The subjects of every message of command `id` in the log, in order.
async fn logged_subjects(client: &async_nats::Client, id: Uuid) -> Vec<String> {
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let head = store.last_sequence().await.expect("head");
    let mut replay = store.replay(1, vec![]).await.expect("replay");
    let mut out = Vec::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("message");
        if message.header("Talkwai-Command-Id") == Some(id.to_string().as_str()) {
            out.push(message.subject.clone());
        }
        if message.seq >= head {
            break;
        }
    }
    out
}

/// Every command record in the log: its command id and stream sequence (a command appends one
/// record, whoever writes it).
async fn records(client: &async_nats::Client) -> HashMap<Uuid, Vec<u64>> {
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let head = store.last_sequence().await.expect("head");
    let mut replay = store.replay(1, vec![]).await.expect("replay");
    let mut out: HashMap<Uuid, Vec<u64>> = HashMap::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("message");
        if message.subject.contains(".guard.command.")
            && let Some(id) = message
                .header("Talkwai-Command-Id")
                .and_then(|v| v.parse().ok())
        {
            out.entry(id).or_default().push(message.seq);
        }
        if message.seq >= head {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_tenants_move_to_the_survivor_with_nothing_lost_or_applied_twice() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut first = spawn_service(&server.url(), "owner-a");
    wait_ready(&client).await;
    let _second = spawn_service(&server.url(), "owner-b");
    // Both hold a share of the partitions.
    let (leases, _) = wait_for_holders(
        &client,
        PARTITIONS,
        "two instances share the partitions",
        |l, live| {
            live.len() == 2
                && l.len() == PARTITIONS as usize
                && l.values().collect::<std::collections::HashSet<_>>().len() == 2
        },
    )
    .await;
    let mut tenants = Vec::new();
    for _ in 0..8 {
        tenants.push(create_tenant(&client).await);
    }

    // 16 callers create tasks in every tenant, each retrying its command with the same id
    // until it is accepted, while the first instance is killed.
    let acked: Arc<tokio::sync::Mutex<Vec<Uuid>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut callers = Vec::new();
    for caller in 0..16 {
        let client = client.clone();
        let acked = Arc::clone(&acked);
        let running = Arc::clone(&running);
        let tenants = tenants.clone();
        callers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let tenant = tenants[(caller + i) % tenants.len()];
                let id = Uuid::new_v4();
                let subject = format!("talkwai.cmd.{tenant}.task.create");
                send_until_accepted(&client, &subject, &task_body(&format!("{caller}/{i}")), id)
                    .await;
                acked.lock().await.push(id);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    let victim: Vec<&String> = leases.values().collect();
    // The survivor takes every partition over.
    let (after, _) = wait_for_holders(
        &client,
        PARTITIONS,
        "the survivor holds every partition",
        |l, live| {
            live.len() == 1
                && l.len() == PARTITIONS as usize
                && l.values().collect::<std::collections::HashSet<_>>().len() == 1
        },
    )
    .await;
    let survivor = after.values().next().expect("a holder").clone();
    assert!(
        victim.contains(&&survivor),
        "the survivor held partitions before"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 100, "load ran: {} commands", acked.len());

    // Every acknowledged command is in the log exactly once.
    let records = records(&client).await;
    for id in &acked {
        let found = records.get(id).map_or(0, Vec::len);
        assert_eq!(found, 1, "command {id} is in the log {found} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_lost_its_lease_writes_nothing_it_decided_before() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    // One partition: once the successor holds it, fair shares never give it back, so
    // whatever the woken owner then writes would have been decided under its lost lease.
    let owner = spawn_with_partitions(&server.url(), "paused-a", 1);
    wait_ready(&client).await;
    let (leases, _) = wait_for_holders(
        &client,
        1,
        "the first instance holds the partition",
        |l, _| l.len() == 1,
    )
    .await;
    let a = leases.values().next().expect("holder").clone();
    let tenant = create_tenant(&client).await;
    let partition = partition_of(&format!("talkwai.cmd.{tenant}.task.create"), 1);
    let forward = talkwai_command_service::route::forward_subject(&a);

    // Load sent to the owner only (its forward subject), so nobody else ever sees these ids:
    // some in hand when it is paused, more arriving while it is paused.
    let pid = owner.id().expect("pid");
    let mut bodies: HashMap<Uuid, Value> = HashMap::new();
    let in_hand: Vec<_> = (0..200)
        .map(|i| {
            let (id, body, reply) =
                send_only_to(&client, &forward, tenant, &format!("in hand {i}"));
            bodies.insert(id, body);
            (id, reply)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    signal(pid, "STOP").await;
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let arriving: Vec<_> = (0..50)
        .map(|i| {
            let (id, _, reply) = send_only_to(&client, &forward, tenant, &format!("arriving {i}"));
            (id, reply)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused_at = store.last_sequence().await.expect("head");
    let _successor = spawn_with_partitions(&server.url(), "successor-b", 1);
    wait_for_holders(
        &client,
        1,
        "the successor holds the paused owner's partition",
        |l, _| l.get(&partition).is_some_and(|holder| *holder != a),
    )
    .await;
    // The successor writes for the tenant.
    let id = Uuid::new_v4();
    let seq = send_until_accepted(
        &client,
        &format!("talkwai.cmd.{tenant}.task.create"),
        &task_body("successor"),
        id,
    )
    .await;
    assert!(seq > paused_at);

    // The paused owner wakes up. Every command that reached it while paused is refused as
    // retryable, and none is in the log; each command it had in hand is either accepted and
    // in the log once, or refused and not in the log.
    signal(pid, "CONT").await;
    let mut answers = Vec::new();
    for (id, reply) in arriving {
        answers.push((id, false, reply.await.expect("request task")));
    }
    for (id, reply) in in_hand {
        answers.push((id, true, reply.await.expect("request task")));
    }
    // The successor fenced the paused owner in the log before deciding: from that bump on,
    // no batch of the owner's lands. What may still land is one request written alone (a
    // lone write is fenced in process only; one write is in flight at a time).
    let fence = store
        .read_subject(&writer_fence::fence_subject(&a), 0)
        .await
        .expect("fence");
    let bump = fence
        .iter()
        .find(|m| writer_fence::Fence::decode(&m.payload).is_some_and(|f| f.by.is_some()))
        .unwrap_or_else(|| panic!("the successor did not fence {a}: {fence:?}"));
    let ours: std::collections::HashSet<Uuid> = answers.iter().map(|(id, _, _)| *id).collect();
    let head = store.last_sequence().await.expect("head");
    let mut replay = store.replay(bump.seq + 1, vec![]).await.expect("replay");
    let mut after_takeover = std::collections::HashSet::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("message");
        let command = message
            .header("Talkwai-Command-Id")
            .and_then(|v| v.parse::<Uuid>().ok());
        if let Some(command) = command.filter(|c| ours.contains(c)) {
            assert_eq!(
                message.header("Nats-Batch-Id"),
                None,
                "a batch of the fenced owner landed after the takeover: {} at {}",
                message.subject,
                message.seq
            );
            after_takeover.insert(command);
        }
        if message.seq >= head {
            break;
        }
    }
    assert!(
        after_takeover.len() <= 1,
        "{} commands of the fenced owner landed after the takeover",
        after_takeover.len()
    );
    let records = records(&client).await;
    let (mut refused, mut accepted, mut late) = (0, 0, 0);
    let mut lone_claims = Vec::new();
    for (id, was_in_hand, reply) in answers {
        let reply =
            reply.unwrap_or_else(|| panic!("command {id} got no answer after the owner woke"));
        let logged = records.get(&id).map_or(0, Vec::len);
        match reply.into_result() {
            Ok(ok) => {
                assert!(
                    was_in_hand,
                    "command {id} arrived while paused, yet was written at {}",
                    ok.seq
                );
                assert_eq!(
                    logged, 1,
                    "accepted command {id} is in the log {logged} times"
                );
                accepted += 1;
                if ok.seq > paused_at {
                    late += 1;
                }
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
                if was_in_hand && logged == 1 {
                    // Its claim (part 1, written alone first) landed and its events were
                    // fenced off: the one partial command the design allows, completed by a
                    // resend (below).
                    lone_claims.push(id);
                } else if e.retry_after_ms.is_some() || !was_in_hand {
                    // Refused before writing (the partition moved): nothing of it landed.
                    assert_eq!(logged, 0, "refused command {id} is in the log");
                } else {
                    // A write in hand whose outcome is unknown (a read or an ack timed out
                    // across the pause): at most once, and a retry with its id finds it.
                    assert!(logged <= 1, "command {id} is in the log {logged} times");
                }
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 50,
        "every command that arrived while paused was refused"
    );
    assert_eq!(records.get(&id).map(Vec::len), Some(1));
    // A claim left alone: nothing but its record is in the log, and a resend with its id
    // completes it (the successor appends its events) without a second record.
    assert!(lone_claims.len() <= 1, "lone claims: {lone_claims:?}");
    for claim in &lone_claims {
        assert_eq!(
            logged_subjects(&client, *claim).await.len(),
            1,
            "refused command {claim} left more than its claim in the log"
        );
        // The same body: a command id names one command.
        let body = bodies.get(claim).expect("sent in hand");
        send_until_accepted(
            &client,
            &format!("talkwai.cmd.{tenant}.task.create"),
            body,
            *claim,
        )
        .await;
        let parts = logged_subjects(&client, *claim).await;
        assert!(parts.len() > 1, "the resend completes {claim}: {parts:?}");
        assert_eq!(
            parts
                .iter()
                .filter(|s| s.contains(".guard.command."))
                .count(),
            1,
            "one record for {claim}: {parts:?}"
        );
    }
    eprintln!(
        "paused owner: {accepted} accepted ({late} of them after the pause, sent before it, \
         {} after the takeover, written alone), {refused} refused ({} a claim alone, completed \
         by a resend)",
        after_takeover.len(),
        lone_claims.len()
    );
}

/// Sends a task.create for `tenant` to one instance's forward subject (as another instance
/// would), so no other instance ever sees its command id; its id, its body and the reply, if
/// any within 90 s.
fn send_only_to(
    client: &async_nats::Client,
    forward: &str,
    tenant: Uuid,
    tag: &str,
) -> (Uuid, Value, tokio::task::JoinHandle<Option<CommandReply>>) {
    let client = client.clone();
    let id = Uuid::new_v4();
    let subject = forward.to_owned();
    let body = task_body(tag);
    let sent = body.clone();
    let task = tokio::spawn(async move {
        let mut headers = HeaderMap::new();
        headers.insert("Talkwai-Command-Id", id.to_string().as_str());
        headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
        headers.insert(
            talkwai_command_service::route::FORWARDED_SUBJECT,
            format!("talkwai.cmd.{tenant}.task.create").as_str(),
        );
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(serde_json::to_vec(&body).expect("json").into())
            .timeout(Some(Duration::from_secs(90)));
        let reply = client.send_request(subject, request).await.ok()?;
        serde_json::from_slice::<CommandReply>(&reply.payload).ok()
    });
    (id, sent, task)
}

async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}
