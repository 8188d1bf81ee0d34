//! Order per room under parallelism: many tenants' task lifecycles, interleaved in the log,
//! some as a backlog the notifier starts on and some while it runs, with four partitions and
//! small batches. After dropping repeats as a client does (a `seq` not above the last taken on
//! that subject), every tenant room receives exactly its events, in log order, each with the
//! status its event leads to.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Harness, Rooms};
use serde_json::json;
use talkwai_domain::{Event, EventBody};
use talkwai_proto::headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use tokio::task::JoinSet;
use uuid::Uuid;

const TENANTS: usize = 12;
const TASKS: usize = 8;
/// created, started, completed.
const STEPS: [(&str, &str); 3] = [
    ("created", "pending"),
    ("started", "in_progress"),
    ("completed", "completed"),
];

/// The body of step `step` of a task.
fn body(step: usize) -> EventBody {
    let at = 1_751_360_400_000i64;
    let value = match step {
        0 => json!({"type": "task.created", "version": 1, "data": {
            "at": at, "type": "call", "status": "pending", "priority": "high",
            "fromAddress": "+15550001111", "toAddress": "+15550002222", "subject": "order",
            "content": null, "metadata": null, "scheduledAt": null, "agent": null,
            "assignedTo": null, "createdBy": null, "createdByAdmin": null}}),
        1 => json!({"type": "task.started", "version": 1, "data": {"at": at}}),
        _ => json!({"type": "task.completed", "version": 1, "data": {"at": at}}),
    };
    let body: EventBody = serde_json::from_value(value).expect("an event body");
    Event::decode(&body).expect("decodes").encode()
}

/// Appends `rounds` of steps for every task of `tenant`, task after task in each round (so
/// the tenant's tasks interleave), as the command service does (the expected last subject
/// sequence included); returns each appended event's (sequence, task, step).
async fn lifecycle(
    js: async_nats::jetstream::Context,
    tenant: Uuid,
    tasks: Vec<Uuid>,
    rounds: std::ops::Range<usize>,
    mut last: HashMap<Uuid, u64>,
) -> (Uuid, Vec<(u64, Uuid, usize)>, HashMap<Uuid, u64>) {
    let mut appended = Vec::new();
    for step in rounds {
        for task in &tasks {
            let body = body(step);
            let mut headers = talkwai_testkit::services::lone_event_headers(
                &body,
                tenant,
                talkwai_notifier::events::now_ms(),
            );
            let expected = last.get(task).copied().unwrap_or(0);
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            let ack = js
                .publish_with_headers(
                    format!("talkwai.evt.{tenant}.task.{task}"),
                    headers,
                    serde_json::to_vec(&body).expect("json").into(),
                )
                .await
                .expect("publish")
                .await
                .expect("appended");
            last.insert(*task, ack.sequence);
            appended.push((ack.sequence, *task, step));
        }
    }
    (tenant, appended, last)
}

/// Runs `rounds` of every tenant's lifecycles at once.
async fn append_all(
    h: &Harness,
    worlds: &[(Uuid, Vec<Uuid>)],
    rounds: std::ops::Range<usize>,
    last: &mut HashMap<Uuid, HashMap<Uuid, u64>>,
    log: &mut BTreeMap<Uuid, Vec<(u64, Uuid, usize)>>,
) {
    let js = async_nats::jetstream::new(h.client.clone());
    let mut writers = JoinSet::new();
    for (tenant, tasks) in worlds {
        writers.spawn(lifecycle(
            js.clone(),
            *tenant,
            tasks.clone(),
            rounds.clone(),
            last.remove(tenant).unwrap_or_default(),
        ));
    }
    while let Some(done) = writers.join_next().await {
        let (tenant, appended, seen) = done.expect("writer");
        log.entry(tenant).or_default().extend(appended);
        last.insert(tenant, seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_room_gets_its_events_in_log_order_with_tenants_in_parallel() {
    let h = Harness::start().await;
    let worlds: Vec<(Uuid, Vec<Uuid>)> = (0..TENANTS)
        .map(|_| (Uuid::new_v4(), (0..TASKS).map(|_| Uuid::new_v4()).collect()))
        .collect();
    let mut rooms = Rooms::subscribe(&h.client, "talkwai.room.tenant.*.topic.taskUpdates").await;

    // A backlog (creates and starts), then the notifier, then the completions while it runs.
    let mut last = HashMap::new();
    let mut log = BTreeMap::new();
    append_all(&h, &worlds, 0..2, &mut last, &mut log).await;
    let mut config = h.notifier_config();
    config.workers = 4;
    config.max_ack_pending = 32;
    let _notifier = h.start_notifier(config).await;
    append_all(&h, &worlds, 2..3, &mut last, &mut log).await;

    let expected: BTreeMap<Uuid, Vec<u64>> = log
        .iter()
        .map(|(tenant, events)| {
            let mut seqs: Vec<u64> = events.iter().map(|(seq, _, _)| *seq).collect();
            seqs.sort_unstable();
            (*tenant, seqs)
        })
        .collect();
    let total: usize = expected.values().map(Vec::len).sum();
    rooms.take_until(total, Duration::from_secs(60)).await;

    assert_eq!(
        rooms.different, 0,
        "a repeat differs from the message it repeats"
    );
    for (tenant, events) in &log {
        let taken = rooms.taken(&format!("talkwai.room.tenant.{tenant}.topic.taskUpdates"));
        let seqs: Vec<u64> = taken.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            &seqs, &expected[tenant],
            "room of tenant {tenant}: what a client takes is its events, all, in log order"
        );
        let by_seq: HashMap<u64, &(u64, Uuid, usize)> = events.iter().map(|e| (e.0, e)).collect();
        for (seq, update) in taken {
            let (_, task, step) = by_seq
                .get(seq)
                .unwrap_or_else(|| panic!("seq {seq} in the room of {tenant} is not its event"));
            let (action, status) = STEPS[*step];
            assert_eq!(update["taskId"], json!(task), "{update}");
            assert_eq!(update["action"], action, "{update}");
            assert_eq!(update["status"], status, "{update}");
        }
    }
}
