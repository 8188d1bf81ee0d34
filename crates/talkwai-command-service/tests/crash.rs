//! Crash safety: SIGKILL the command service (a real process) under load, restart it, and check
//! that every acknowledged command is in the log and no command is there in part.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_proto::CommandReply;
use talkwai_testkit::NatsServer;
use tokio::process::Child;
use uuid::Uuid;

const PLATFORM: &str = "platform-token-crash";

fn spawn_service(url: &str, name: &str) -> Child {
    common::spawn_process(url, name, PLATFORM, &[])
}

async fn wait_ready(client: &async_nats::Client) {
    common::wait_process_ready(client).await;
}

async fn send(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    id: Uuid,
) -> Option<CommandReply> {
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", id.to_string().as_str());
    headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
    let payload = serde_json::to_vec(body).expect("json");
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_headers(subject.to_owned(), headers, payload.into()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_command() {
    let server = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut service = spawn_service(&server.url(), "crash-1");
    wait_ready(&client).await;

    let tenant = Uuid::new_v4();
    let created = send(
        &client,
        "talkwai.cmd.platform.tenant.create",
        &json!({"id": tenant, "name": "Crash Test Dummies"}),
        Uuid::new_v4(),
    )
    .await
    .expect("reply");
    created.into_result().expect("tenant created");

    // 32 callers send create-task commands (each with a member email too, so some commands
    // carry guard messages) until the service dies under them.
    let acked: Arc<tokio::sync::Mutex<Vec<(Uuid, Uuid, u64)>>> = Arc::default();
    let sent: Arc<tokio::sync::Mutex<Vec<(Uuid, String, Value)>>> = Arc::default();
    let mut callers = Vec::new();
    for caller in 0..32 {
        let client = client.clone();
        let acked = Arc::clone(&acked);
        let sent = Arc::clone(&sent);
        callers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let id = Uuid::new_v4();
                let entity = Uuid::new_v4();
                let (subject, body) = if i % 3 == 0 {
                    (
                        format!("talkwai.cmd.{tenant}.member.create"),
                        json!({"id": entity, "firstName": "Load", "lastName": format!("Caller {caller}"),
                               "email": format!("c{caller}-{i}@crash.test"), "role": "user"}),
                    )
                } else {
                    (
                        format!("talkwai.cmd.{tenant}.task.create"),
                        json!({"id": entity, "type": "call", "fromAddress": "+15550001111",
                               "toAddress": "+15550002222", "subject": format!("load {caller}/{i}")}),
                    )
                };
                sent.lock().await.push((id, subject.clone(), body.clone()));
                match send(&client, &subject, &body, id).await {
                    Some(reply) => match reply.into_result() {
                        Ok(ok) => acked.lock().await.push((id, entity, ok.seq)),
                        Err(e) => panic!("unexpected rejection under load: {e:?}"),
                    },
                    None => return, // the service is gone
                }
            }
        }));
    }
    // Let load build up, then kill without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.start_kill().expect("SIGKILL");
    let _ = service.wait().await;
    for caller in callers {
        let _ = caller.await;
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 50,
        "load was running when the service died ({} acked)",
        acked.len()
    );

    // Every acknowledged command is in the log, under its command id, exactly once.
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("store");
    let head = store.last_sequence().await.expect("head");
    let mut replay = store.replay(1, vec![]).await.expect("replay");
    let mut parts: HashMap<String, BTreeMap<usize, usize>> = HashMap::new();
    let mut commands_seen: HashMap<String, u64> = HashMap::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("message");
        if let Some(id) = message.header("Talkwai-Command-Id") {
            commands_seen.insert(id.to_owned(), message.seq);
            if let Some((i, n)) = message
                .header("Talkwai-Command-Part")
                .and_then(|p| p.split_once('/'))
            {
                let (i, n) = (i.parse().expect("part"), n.parse().expect("parts"));
                parts.entry(id.to_owned()).or_default().insert(i, n);
            }
        }
        if message.seq >= head {
            break;
        }
    }
    for (id, _, seq) in &acked {
        let seen = commands_seen.get(&id.to_string());
        assert!(
            seen.is_some(),
            "acknowledged command {id} (seq {seq}) is missing from the log"
        );
    }
    // A command written alone is its record (the claim, part 1) first, then its events in one
    // atomic write (`AppendRequest::claim_first`): a kill between the two leaves the claim
    // alone, never acknowledged, and a resend with the same id writes the events. Anything else
    // in part is a torn command.
    let acked_ids: HashSet<String> = acked.iter().map(|(id, ..)| id.to_string()).collect();
    let mut claimed_only: HashSet<String> = HashSet::new();
    for (id, got) in &parts {
        let n = *got.values().next().expect("a part");
        let indices: Vec<usize> = got.keys().copied().collect();
        if n > 1 && indices == [1] && !acked_ids.contains(id) {
            claimed_only.insert(id.clone());
            continue;
        }
        assert_eq!(
            indices,
            (1..=n).collect::<Vec<_>>(),
            "command {id} is in the log in part"
        );
    }

    // After a restart, re-sending every command (acked or not) with its id is idempotent.
    let _service = spawn_service(&server.url(), "crash-2");
    wait_ready(&client).await;
    let head_before = store.last_sequence().await.expect("head");
    let sent = sent.lock().await.clone();
    let mut new_appends = 0;
    for (id, subject, body) in &sent {
        let reply = send(&client, subject, body, *id)
            .await
            .expect("reply after restart");
        let ok = reply.into_result().expect("resend accepted");
        if !commands_seen.contains_key(&id.to_string()) || claimed_only.contains(&id.to_string()) {
            new_appends += ok.events.len();
        } else {
            assert!(
                ok.seq <= head_before,
                "an already-logged command was appended again"
            );
        }
    }
    let head_after = store.last_sequence().await.expect("head");
    assert!(head_after >= head_before + new_appends as u64);
}
