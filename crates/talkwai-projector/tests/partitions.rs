//! Scale-out: three `talkwai-projector` processes split six partitions through leases on NATS
//! KV. One is SIGKILLed while they catch up on a growing log; the other two take its
//! partitions over and the read models converge to the model computed from the log and to a
//! clean single-instance projection, row for row (`version` = the aggregate's event count and
//! `last_seq` = its last event: no event applied twice or out of order), with the same total of
//! applied events. Then a blue/green rebuild runs against the partitioned projection.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Stack, random_commands};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::{Event, EventBody};
use talkwai_eventstore::{AppendRequest, AppenderConfig, Outbound};
use talkwai_projector::rebuild::{self, RebuildOptions};
use talkwai_testkit::wait::poll_until;
use tokio::process::{Child, Command};
use uuid::Uuid;

const PARTITIONS: u32 = 6;
const LEASE_TTL_MS: u64 = 2000;
const TENANTS: usize = 20;
const TASKS_PER_TENANT: usize = 40;
/// Events per task: created, then updates and metadata changes.
const EVENTS_PER_TASK: usize = 8;

fn outbound(subject: &str, tenant: Uuid, body: Value) -> Outbound {
    let body: EventBody = serde_json::from_value(body).expect("an event body");
    let event = Event::decode(&body).unwrap_or_else(|e| panic!("{body:?} does not decode: {e}"));
    let body = event.encode();
    let h = talkwai_testkit::services::lone_event_headers(&body, tenant, 1_751_360_400_000);
    Outbound {
        subject: subject.to_owned(),
        headers: h,
        payload: serde_json::to_vec(&body).expect("json").into(),
        expected_last_subject_seq: None,
    }
}

/// Appends `TENANTS` tenants with `TASKS_PER_TENANT` tasks of `EVENTS_PER_TASK` events each
/// (one append per task, many in flight); returns the stream head.
async fn write_bulk(stack: &Stack, round: usize) -> u64 {
    let appender = stack.store.appender(AppenderConfig::default());
    let at = 1_751_360_400_000i64;
    let mut requests = Vec::new();
    for t in 0..TENANTS {
        let tenant = Uuid::new_v4();
        requests.push(vec![outbound(
            &format!("talkwai.evt.{tenant}.tenant.{tenant}"),
            tenant,
            json!({"type": "tenant.created", "version": 1, "data": {
                "at": at, "name": format!("Bulk {round}.{t}"), "domain": null, "status": "active"}}),
        )]);
        for k in 0..TASKS_PER_TENANT {
            let task = Uuid::new_v4();
            let subject = format!("talkwai.evt.{tenant}.task.{task}");
            let mut events = vec![outbound(
                &subject,
                tenant,
                json!({"type": "task.created", "version": 1, "data": {
                    "at": at, "type": "call", "status": "pending", "priority": "high",
                    "fromAddress": "+15550001111", "toAddress": "+15550002222",
                    "subject": format!("task {k}"), "content": null, "metadata": null,
                    "scheduledAt": null, "agent": null, "assignedTo": null,
                    "createdBy": null, "createdByAdmin": null}}),
            )];
            for n in 1..EVENTS_PER_TASK {
                let at = at + i64::try_from(n).expect("small");
                let body = if n % 2 == 0 {
                    json!({"type": "task.metadataSet", "version": 1, "data": {
                        "at": at, "metadata": format!("{{\"n\":{n}}}")}})
                } else {
                    json!({"type": "task.updated", "version": 1, "data": {
                        "at": at, "subject": format!("task {k} v{n}")}})
                };
                events.push(outbound(&subject, tenant, body));
            }
            requests.push(events);
        }
    }
    let mut appends = futures::stream::iter(requests.into_iter().map(|messages| {
        let appender = appender.clone();
        async move {
            appender
                .append(AppendRequest {
                    messages,
                    dedupe_id: None,
                    claim_first: false,
                })
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
        }
    }))
    .buffer_unordered(64);
    while appends.next().await.is_some() {}
    stack.store.last_sequence().await.expect("head")
}

fn spawn_projector(stack: &Stack, db: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_talkwai-projector"))
        .env("TALKWAI_NATS_URL", stack.nats.url())
        .env("TALKWAI_DATABASE_URL", db)
        .env("TALKWAI_PROJECTOR_PARTITIONS", PARTITIONS.to_string())
        .env("TALKWAI_PROJECTOR_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
        .env("TALKWAI_PROJECTOR_BATCH_SIZE", "100")
        .env("TALKWAI_PROJECTOR_POOL_SIZE", "3")
        .env("TALKWAI_INSTANCE", name)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start talkwai-projector: {e}"))
}

/// The configured instance name of a lease holder (`proj-a-1a2b3c4d` → `proj-a`).
fn name_of(holder: &str) -> &str {
    holder.rsplit_once('-').map_or(holder, |(name, _)| name)
}

/// Lease holders of the current layout, by instance name.
async fn owners(stack: &Stack) -> BTreeMap<String, BTreeSet<u32>> {
    let (leases, _) = talkwai_projector::lease::holders(stack.store.jetstream())
        .await
        .expect("lease holders");
    let mut out: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (slot, holder) in leases {
        if slot.count == PARTITIONS {
            out.entry(name_of(&holder).to_owned())
                .or_default()
                .insert(slot.index);
        }
    }
    out
}

/// Waits until `check` holds for the lease holders; panics with `what` after `within`.
async fn wait_owners(
    stack: &Stack,
    within: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<String, BTreeSet<u32>>) -> bool,
) -> BTreeMap<String, BTreeSet<u32>> {
    poll_until(
        within,
        Duration::from_millis(100),
        || owners(stack),
        |now| check(now),
    )
    .await
    .unwrap_or_else(|now| panic!("{what}: leases are {now:?}"))
}

fn all_held(owners: &BTreeMap<String, BTreeSet<u32>>) -> bool {
    let held: BTreeSet<u32> = owners.values().flatten().copied().collect();
    held.len() == PARTITIONS as usize
        && owners.values().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize
}

/// Per-partition checkpoints of the live generation.
async fn partition_checkpoints(pg: &tokio_postgres::Client) -> Vec<(u32, u64)> {
    let schema: String = pg
        .query_one(
            "SELECT schema_name FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await
        .expect("live generation")
        .get(0);
    pg.query(
        &format!("SELECT part, last_seq FROM {schema}.checkpoint ORDER BY part"),
        &[],
    )
    .await
    .expect("checkpoints")
    .into_iter()
    .map(|r| {
        (
            u32::try_from(r.get::<_, i32>(0)).expect("part"),
            u64::try_from(r.get::<_, i64>(1)).expect("seq"),
        )
    })
    .collect()
}

async fn applied(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one("SELECT applied FROM talkwai.checkpoint", &[])
        .await
        .expect("checkpoint view")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_split_partitions_and_take_over_a_killed_ones() {
    let started = Instant::now();
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    let pg = stack.pg_client(&db).await;
    // Platform events (users of members), deletes and links through the command service.
    random_commands(&stack, 31, 3, 150).await;

    let mut children: BTreeMap<&str, Child> = ["proj-a", "proj-b", "proj-c"]
        .into_iter()
        .map(|name| (name, spawn_projector(&stack, &db, name)))
        .collect();
    let balanced = wait_owners(
        &stack,
        Duration::from_secs(20),
        "three instances share the partitions two by two",
        |o| all_held(o) && o.len() == 3 && o.values().all(|p| p.len() == 2),
    )
    .await;
    eprintln!("balanced after {:?}: {balanced:?}", started.elapsed());
    stack.wait_caught_up(&db).await;
    assert_eq!(
        partition_checkpoints(&pg).await.len(),
        PARTITIONS as usize,
        "the checkpoint was re-laid out into one row per partition"
    );

    // A long catch-up for everyone; kill C while its partitions are half way.
    let head = write_bulk(&stack, 1).await;
    let victim = "proj-c";
    let victim_parts = balanced[victim].clone();
    let resumed = stack.store.last_sequence().await.expect("head") / 4;
    let mine_of = |cps: &[(u32, u64)]| -> Vec<u64> {
        cps.iter()
            .filter(|(p, _)| victim_parts.contains(p))
            .map(|(_, s)| *s)
            .collect()
    };
    let cps = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(2),
        || partition_checkpoints(&pg),
        |cps| mine_of(cps).iter().all(|s| *s > resumed),
    )
    .await
    .unwrap_or_else(|cps| panic!("no catch-up progress: {cps:?}"));
    assert!(
        mine_of(&cps).iter().any(|s| *s < head),
        "{victim} finished its catch-up before it could be killed: {cps:?} of {head}"
    );
    let mut child = children.remove(victim).expect("victim");
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("reaped");
    assert!(!status.success(), "killed, not exited: {status}");
    let killed_at = Instant::now();
    eprintln!(
        "killed {victim} (partitions {victim_parts:?}) at checkpoints {:?} of {head}",
        partition_checkpoints(&pg).await
    );

    // Keep feeding while its leases expire.
    let feeding = {
        let more = write_bulk(&stack, 2);
        let commands = random_commands(&stack, 32, 2, 120);
        tokio::join!(more, commands)
    };
    assert!(feeding.1 > 30, "commands were accepted while failing over");
    let taken = wait_owners(
        &stack,
        Duration::from_secs(15),
        "the survivors take the killed instance's partitions over",
        |o| all_held(o) && !o.contains_key(victim),
    )
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("taken over after {takeover:?}: {taken:?}");
    assert!(
        taken.values().all(|p| p.len() == 3),
        "the survivors hold three each: {taken:?}"
    );
    for part in &victim_parts {
        assert!(
            taken.values().any(|p| p.contains(part)),
            "partition {part} of {victim} was taken over"
        );
    }

    let head = stack.wait_caught_up(&db).await;
    let cps = partition_checkpoints(&pg).await;
    assert!(
        cps.iter().all(|(_, s)| *s >= head),
        "every partition reached the head {head}: {cps:?}"
    );
    // Status shows each partition with its owner.
    let conn = talkwai_projector::pool(&db, 1)
        .expect("pool")
        .get()
        .await
        .expect("conn");
    let statuses = talkwai_projector::status::status(&conn, &stack.store)
        .await
        .expect("status");
    let live = statuses
        .iter()
        .find(|s| s.state == "live")
        .expect("a live generation");
    assert_eq!(live.partitions.len(), PARTITIONS as usize);
    for p in &live.partitions {
        let owner = p.owner.as_deref().expect("every partition has an owner");
        assert_ne!(name_of(owner), victim, "{p:?}");
        assert_eq!(p.of, PARTITIONS);
        assert_eq!(p.lag_events, 0);
    }

    // Converged: equal to the model computed from the log (version = events of the aggregate,
    // last_seq = its last event) and to a clean single-instance projection.
    let tables = stack.tables(&db).await;
    let model = stack.model_from_log().await;
    assert_eq!(
        tables["tasks"].len(),
        model["tasks"].len(),
        "every task is there"
    );
    for (table, rows) in &model {
        for (id, row) in rows {
            assert_eq!(tables[table].get(id), Some(row), "{table} {id}");
        }
        assert_eq!(
            &tables[table], rows,
            "{table} equals the model from the log"
        );
    }
    let clean = stack
        .pg
        .create_unique_database("clean")
        .await
        .expect("database");
    stack.start_projector(stack.projector_config(&clean)).await;
    stack.wait_caught_up(&clean).await;
    let clean_pg = stack.pg_client(&clean).await;
    assert_eq!(stack.tables(&clean).await, tables);
    assert_eq!(
        applied(&pg).await,
        applied(&clean_pg).await,
        "as many events applied as by one clean instance: none twice"
    );

    // A blue/green rebuild against the running partitioned projection: the live partitions
    // are equalized, parity verified at one sequence, the views swapped; the survivors lay the
    // new generation out in partitions and go on.
    let pool = talkwai_projector::pool(&db, 2).expect("pool");
    let report = rebuild::rebuild(&pool, &stack.store, &RebuildOptions::default(), &|_| {})
        .await
        .expect("rebuild with partitions");
    assert!(report.swapped, "{report:?}");
    random_commands(&stack, 33, 1, 60).await;
    stack.wait_caught_up(&db).await;
    assert_eq!(
        partition_checkpoints(&pg).await.len(),
        PARTITIONS as usize,
        "the rebuilt generation is partitioned too"
    );
    assert_eq!(stack.tables(&db).await, stack.model_from_log().await);

    for (_, mut child) in children {
        child.start_kill().expect("SIGKILL");
        let _ = child.wait().await;
    }
    eprintln!("whole test took {:?}", started.elapsed());
    stack.stop().await;
}

/// A database written by a projector from before partitions (one `checkpoint` row with `id = 1`,
/// one stop per generation) migrates to partition 0 of a 1-partition layout, keeps its
/// checkpoint, applied count and stop, and the view answers as before; migrating again is a
/// no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_checkpoint_database_migrates_to_partition_zero() {
    let pg = talkwai_testkit::Postgres::start().await.expect("postgres");
    let db = pg.create_unique_database("old").await.expect("database");
    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let conn = pool.get().await.expect("conn");
    conn.batch_execute(
        "CREATE SCHEMA talkwai_meta; CREATE SCHEMA talkwai;
         CREATE TABLE talkwai_meta.migrations (
            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO talkwai_meta.migrations (version) VALUES (1);
         CREATE TABLE talkwai_meta.generations (
            generation integer PRIMARY KEY, schema_name text NOT NULL UNIQUE,
            state text NOT NULL, tenant uuid, until_seq bigint,
            created_at timestamptz NOT NULL DEFAULT now(), swapped_at timestamptz);
         CREATE TABLE talkwai_meta.dead_letters (
            id bigserial PRIMARY KEY, generation integer NOT NULL, seq bigint NOT NULL,
            subject text NOT NULL, event_type text, error text NOT NULL, payload text NOT NULL,
            status text NOT NULL DEFAULT 'open', created_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz, UNIQUE (generation, seq));
         CREATE TABLE talkwai_meta.projector_state (
            generation integer PRIMARY KEY, stopped_at_seq bigint, stopped_reason text,
            updated_at timestamptz NOT NULL DEFAULT now());
         CREATE SCHEMA talkwai_g1;
         CREATE TABLE talkwai_g1.checkpoint (
            id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1), last_seq bigint NOT NULL,
            last_event_at bigint NOT NULL DEFAULT 0, applied bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO talkwai_g1.checkpoint (last_seq, applied) VALUES (42, 40);
         INSERT INTO talkwai_meta.generations (generation, schema_name, state)
            VALUES (1, 'talkwai_g1', 'live');
         CREATE VIEW talkwai.checkpoint AS SELECT * FROM talkwai_g1.checkpoint;
         INSERT INTO talkwai_meta.projector_state (generation, stopped_at_seq, stopped_reason)
            VALUES (1, 43, 'event 43: poison');",
    )
    .await
    .expect("the old layout");
    for round in 0..2 {
        talkwai_projector::schema::migrate(&conn)
            .await
            .unwrap_or_else(|e| panic!("migration round {round}: {e:?}"));
        let row = conn
            .query_one(
                "SELECT part, partitions, last_seq, applied FROM talkwai_g1.checkpoint",
                &[],
            )
            .await
            .expect("partitioned checkpoint");
        assert_eq!(
            (
                row.get::<_, i32>(0),
                row.get::<_, i32>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3)
            ),
            (0, 1, 42, 40),
            "round {round}"
        );
        let view = conn
            .query_one(
                "SELECT last_seq, applied, partitions FROM talkwai.checkpoint",
                &[],
            )
            .await
            .expect("the view");
        assert_eq!(
            (
                view.get::<_, i64>(0),
                view.get::<_, i64>(1),
                view.get::<_, i32>(2)
            ),
            (42, 40, 1)
        );
        let stop = conn
            .query_one(
                "SELECT part, stopped_at_seq FROM talkwai_meta.projector_state WHERE generation = 1",
                &[],
            )
            .await
            .expect("the stop survives");
        assert_eq!((stop.get::<_, i32>(0), stop.get::<_, i64>(1)), (0, 43));
    }
    // The new primary key allows one stop per partition.
    conn.execute(
        "INSERT INTO talkwai_meta.projector_state (generation, part, stopped_at_seq) VALUES (1, 1, 50)",
        &[],
    )
    .await
    .expect("a second partition's stop");
}

/// With partitions, a poison event stops only its own partition: other tenants' partitions go
/// on, the view's checkpoint stays before the poison (read-your-writes never skips it), and
/// `retry --skip` moves that partition past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_only_its_partition() {
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    let mut config = stack.projector_config(&db);
    config.partitions = 2;
    config.lease_ttl_ms = 2000;
    stack.start_projector(config).await;
    let subject_of = |t: Uuid| format!("talkwai.evt.{t}.task.x");
    let poisoned = Uuid::new_v4();
    let other = std::iter::repeat_with(Uuid::new_v4)
        .find(|t| {
            talkwai_projector::partition::partition_of(&subject_of(*t), 2)
                != talkwai_projector::partition::partition_of(&subject_of(poisoned), 2)
        })
        .expect("a tenant in the other partition");
    let poisoned_part = talkwai_projector::partition::partition_of(&subject_of(poisoned), 2);
    for (t, name) in [(poisoned, "Poisoned"), (other, "Other")] {
        stack
            .ok(
                "talkwai.cmd.platform.tenant.create",
                json!({"id": t, "name": name}),
            )
            .await;
    }
    stack.wait_caught_up(&db).await;

    let headers = talkwai_eventstore::header_map(
        talkwai_proto::EventMeta {
            event_type: Some("task.started".into()),
            ..Default::default()
        }
        .to_headers(),
    );
    let poison_seq = async_nats::jetstream::new(stack.client.clone())
        .publish_with_headers(
            format!("talkwai.evt.{poisoned}.task.{}", Uuid::new_v4()),
            headers,
            r#"{"type":"task.started","version":1,"data":{"at":1}}"#.into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack")
        .sequence;
    let later = stack
        .ok(
            &format!("talkwai.cmd.{other}.agent.create"),
            json!({"id": Uuid::new_v4(), "name": "After", "type": "voice"}),
        )
        .await;

    let pg = stack.pg_client(&db).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let cps = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(20),
        || partition_checkpoints(&pg),
        |cps| {
            cps.iter()
                .find(|(p, _)| *p != poisoned_part)
                .is_some_and(|c| c.1 >= later.seq)
        },
    )
    .await
    .unwrap_or_else(|cps| panic!("the other partition did not go on: {cps:?}"));
    let stopped = cps.iter().find(|(p, _)| *p == poisoned_part).map(|c| c.1);
    assert_eq!(
        stopped,
        Some(poison_seq - 1),
        "the poisoned partition stopped right before the poison: {cps:?}"
    );
    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let mut conn = pool.get().await.expect("conn");
    assert_eq!(
        talkwai_projector::status::live_checkpoint(&conn)
            .await
            .expect("view"),
        poison_seq - 1,
        "the view stays before the poison event"
    );
    // The poisoned partition's checkpoint sits right before the poison as soon as it applied
    // the event before it; the dead letter comes when it reaches the poison itself.
    let letters = poll_until(
        deadline.saturating_duration_since(Instant::now()),
        Duration::from_millis(20),
        || async {
            talkwai_projector::dead_letters::dead_letters(&conn, false)
                .await
                .expect("dead letters")
        },
        |letters| !letters.is_empty(),
    )
    .await
    .unwrap_or_else(|last| last.unwrap_or_default());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].seq, i64::try_from(poison_seq).expect("seq"));

    let retry = talkwai_projector::dead_letters::retry(&mut conn, true)
        .await
        .expect("retry --skip");
    assert_eq!(
        retry.stopped_at,
        Some(i64::try_from(poison_seq).expect("seq"))
    );
    assert!(
        talkwai_projector::status::wait_for(&conn, later.seq, Duration::from_secs(10))
            .await
            .expect("wait"),
        "every partition passes the skipped event"
    );
    stack.stop().await;
}
