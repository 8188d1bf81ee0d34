//! Shared harness: real nats-server and PostgreSQL, the command service and the projector. The
//! generic parts (service tasks, waits, command requests) are `talkwai_testkit`'s.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_command_service::CommandService;
use talkwai_domain::{AggregateState, Event, EventBody};
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_projector::{Config, Projector};
use talkwai_proto::{CommandAccepted, EventSubject};
use talkwai_testkit::services::{COMMAND_TIMEOUT, ServiceTask, send_command};
use talkwai_testkit::wait;
use talkwai_testkit::{NatsServer, Postgres};
use uuid::Uuid;

pub const PLATFORM: &str = "platform-token-projector-tests";

pub struct Stack {
    pub nats: NatsServer,
    pub pg: Postgres,
    pub db: String,
    pub client: async_nats::Client,
    pub store: EventStore,
    /// The master key the services seal and open personal fields with (none by default).
    pub keys: talkwai_keys::KeyArgs,
    stops: Vec<ServiceTask>,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with_keys(talkwai_keys::KeyArgs::default()).await
    }

    /// [`Stack::start`] with services sealing and opening personal fields with `keys`.
    pub async fn start_with_keys(keys: talkwai_keys::KeyArgs) -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let pg = Postgres::start().await.expect("postgres");
        let db = pg.create_unique_database("proj").await.expect("database");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let store = EventStore::open(client.clone(), &StreamSettings::default())
            .await
            .expect("store");
        let mut stack = Self {
            nats,
            pg,
            db,
            client,
            store,
            keys,
            stops: Vec::new(),
        };
        stack.start_command_service().await;
        stack
    }

    pub async fn start_command_service(&mut self) {
        let config = talkwai_command_service::Config {
            keys: self.keys.clone(),
            ..talkwai_command_service::Config::for_tests(&self.nats.url(), PLATFORM, "secret")
        };
        let service = CommandService::build(config)
            .await
            .expect("command service");
        let readiness = service.readiness();
        self.stops.push(ServiceTask::spawn(|shutdown| async move {
            service.run(shutdown).await.expect("command service runs");
        }));
        // Ready: every command endpoint is subscribed (the server confirmed it).
        talkwai_testkit::services::wait_ready(&readiness)
            .await
            .unwrap_or_else(|e| panic!("command service not ready: {e}"));
    }

    pub fn projector_config(&self, db: &str) -> Config {
        Config {
            keys: self.keys.clone(),
            ..Config::for_tests(&self.nats.url(), db)
        }
    }

    /// Starts a projector on `db` in this process; returns its stop handle.
    pub async fn start_projector(&mut self, config: Config) {
        let projector = Projector::build(config).await.expect("projector builds");
        self.stops.push(ServiceTask::spawn(|shutdown| async move {
            projector.run(shutdown).await.expect("projector runs");
        }));
    }

    pub async fn stop(self) {
        for task in self.stops {
            task.stop().await;
        }
    }

    pub async fn send(
        &self,
        subject: &str,
        body: Value,
    ) -> Result<CommandAccepted, talkwai_proto::ErrorBody> {
        let reply = send_command(
            &self.client,
            subject,
            serde_json::to_vec(&body).expect("json"),
            Some(PLATFORM),
            Some(Uuid::new_v4()),
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        reply.into_result()
    }

    pub async fn ok(&self, subject: &str, body: Value) -> CommandAccepted {
        self.send(subject, body.clone())
            .await
            .unwrap_or_else(|e| panic!("{subject} {body}: {e:?}"))
    }

    pub async fn pg_client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls)
            .await
            .expect("pg connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Waits until the live checkpoint of `db` reaches the stream head.
    pub async fn wait_caught_up(&self, db: &str) -> u64 {
        let head = self.store.last_sequence().await.expect("head");
        let pg = self.pg_client(db).await;
        wait::wait_until(
            Duration::from_secs(60),
            Duration::from_millis(10),
            || async {
                let row = pg
                    .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
                    .await
                    .map_err(|e| e.to_string())?;
                let seq: i64 = row.get(0);
                if u64::try_from(seq).unwrap_or(0) >= head {
                    Ok(head)
                } else {
                    Err(format!("checkpoint at {seq}"))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("projection did not reach the head {head}: {e}"))
    }

    /// Every row of every read model, by table then id, as JSON.
    pub async fn tables(&self, db: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
        let pg = self.pg_client(db).await;
        let mut out = BTreeMap::new();
        for table in talkwai_projector::schema::TABLES {
            let rows = pg
                .query(
                    &format!("SELECT id::text, to_jsonb(t) FROM talkwai.{table} t"),
                    &[],
                )
                .await
                .expect("select");
            out.insert(
                table.to_owned(),
                rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
            );
        }
        out
    }

    /// The read models computed directly from the log: every event folded with the domain's
    /// strict `apply`, each live entity turned into the row a reader should see.
    pub async fn model_from_log(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        let head = self.store.last_sequence().await.expect("head");
        let mut states: BTreeMap<String, (AggregateState, u64)> = BTreeMap::new();
        if head > 0 {
            let mut replay = self.store.replay(1, vec![]).await.expect("replay");
            while let Some(message) = replay.next().await {
                let message = message.expect("message");
                if let Ok(EventSubject::Aggregate(target)) = EventSubject::parse(&message.subject) {
                    let body: EventBody = serde_json::from_slice(&message.payload).expect("body");
                    let event = Event::decode(&body).expect("decodes");
                    let entry = states
                        .entry(message.subject.clone())
                        .or_insert_with(|| (AggregateState::new(target), 0));
                    talkwai_domain::apply(&mut entry.0, &event)
                        .expect("the log is a valid history");
                    entry.1 = message.seq;
                }
                if message.seq >= head {
                    break;
                }
            }
        }
        let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for table in talkwai_projector::schema::TABLES {
            out.insert(table.to_owned(), BTreeMap::new());
        }
        for (state, last_seq) in states.values() {
            if let Some((table, id, row)) = expected_row(state, *last_seq) {
                out.get_mut(table).expect("table").insert(id, row);
            }
        }
        out
    }
}

fn s<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialize")
}

/// The row a live entity should have.
fn expected_row(state: &AggregateState, last_seq: u64) -> Option<(&'static str, String, Value)> {
    let version = state.version();
    Some(match state {
        AggregateState::Tenant(id, st) => {
            let t = st.live()?;
            (
                "tenants",
                id.to_string(),
                json!({"id": id, "name": s(&t.name), "domain": s(&t.domain),
                "status": s(&t.status), "created_at": t.created_at.0, "updated_at": t.updated_at.0,
                "version": version, "last_seq": last_seq}),
            )
        }
        AggregateState::Member(_, id, st) => {
            let m = st.live()?;
            (
                "members",
                id.to_string(),
                json!({"id": id, "tenant_id": m.tenant, "first_name": s(&m.first_name),
                "last_name": s(&m.last_name), "email": s(&m.email), "phone": s(&m.phone), "role": s(&m.role),
                "status": s(&m.status), "user_id": m.user, "created_at": m.created_at.0,
                "updated_at": m.updated_at.0, "version": version, "last_seq": last_seq,
                "erased": m.erased}),
            )
        }
        AggregateState::Admin(id, st) => {
            let a = st.live()?;
            (
                "admins",
                id.to_string(),
                json!({"id": id, "first_name": s(&a.first_name), "last_name": s(&a.last_name),
                "email": s(&a.email), "role": s(&a.role), "permissions": s(&a.permissions), "status": s(&a.status),
                "user_id": a.user, "created_at": a.created_at.0, "updated_at": a.updated_at.0,
                "version": version, "last_seq": last_seq, "erased": a.erased}),
            )
        }
        AggregateState::Agent(_, id, st) => {
            let a = st.live()?;
            (
                "agents",
                id.to_string(),
                json!({"id": id, "tenant_id": a.tenant, "name": s(&a.name),
                "description": s(&a.description), "type": s(&a.agent_type), "configuration": s(&a.configuration),
                "status": s(&a.status), "created_at": a.created_at.0, "updated_at": a.updated_at.0,
                "version": version, "last_seq": last_seq}),
            )
        }
        AggregateState::Task(_, id, st) => {
            let t = st.live()?;
            (
                "tasks",
                id.to_string(),
                json!({"id": id, "tenant_id": t.tenant, "type": s(&t.task_type),
                "status": s(&t.status), "priority": s(&t.priority), "from_address": s(&t.from_address),
                "to_address": s(&t.to_address), "subject": s(&t.subject), "content": s(&t.content),
                "metadata": s(&t.metadata), "scheduled_at": s(&t.scheduled_at), "started_at": s(&t.started_at),
                "completed_at": s(&t.completed_at), "created_at": t.created_at.0, "updated_at": t.updated_at.0,
                "agent_id": t.agent, "assigned_to": t.assigned_to, "created_by": t.created_by,
                "created_by_admin": t.created_by_admin, "version": version, "last_seq": last_seq,
                "outcome": s(&t.outcome), "outcome_summary": t.outcome.as_ref().map(|o| s(&o.summary)),
                "erased": t.erased}),
            )
        }
        AggregateState::User(id, st) => {
            let u = st.live()?;
            (
                "users",
                id.to_string(),
                json!({"id": id, "email": s(&u.email), "created_at": u.created_at.0,
                "updated_at": u.updated_at.0, "version": version, "last_seq": last_seq,
                "erased": u.erased}),
            )
        }
    })
}

/// Asserts that a rebuild's parity check found every table equal (row counts and content).
pub fn assert_parity(report: &talkwai_projector::rebuild::RebuildReport) {
    assert!(
        report
            .parity
            .iter()
            .all(|p| p.same_content && p.live_rows == p.new_rows),
        "{:?}",
        report.parity
    );
}

/// A small deterministic generator (xorshift) so failures replay with the same seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let len = u64::try_from(items.len()).expect("len");
        &items[usize::try_from(self.next() % len).expect("index")]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Sends `count` random commands over `tenants` new tenants (many are refused by the domain:
/// that is part of the point). Returns the number accepted.
pub async fn random_commands(stack: &Stack, seed: u64, tenants: usize, count: usize) -> usize {
    let mut rng = Rng(seed.max(1));
    let mut tenant_ids = Vec::new();
    for i in 0..tenants {
        let t = Uuid::new_v4();
        stack
            .ok(
                "talkwai.cmd.platform.tenant.create",
                json!({"id": t, "name": format!("Tenant {i}")}),
            )
            .await;
        tenant_ids.push(t);
    }
    let mut members: Vec<(Uuid, Uuid)> = Vec::new();
    let mut agents: Vec<(Uuid, Uuid)> = Vec::new();
    let mut tasks: Vec<(Uuid, Uuid)> = Vec::new();
    let mut accepted = 0;
    for i in 0..count {
        let t = *rng.pick(&tenant_ids);
        let roll = rng.next() % 100;
        let (subject, body) = if roll < 10 || members.is_empty() {
            let id = Uuid::new_v4();
            members.push((t, id));
            (
                format!("talkwai.cmd.{t}.member.create"),
                json!({"id": id, "firstName": "M", "lastName": format!("N{i}"),
                "email": format!("m{}@x{}.com", rng.next() % 50, rng.next() % 3), "role": *rng.pick(&["user", "manager", "owner"])}),
            )
        } else if roll < 15 || agents.is_empty() {
            let id = Uuid::new_v4();
            agents.push((t, id));
            (
                format!("talkwai.cmd.{t}.agent.create"),
                json!({"id": id, "name": format!("A{i}"), "type": *rng.pick(&["voice", "chat", "email"])}),
            )
        } else if roll < 40 || tasks.is_empty() {
            let id = Uuid::new_v4();
            tasks.push((t, id));
            let mut body = json!({"id": id, "type": *rng.pick(&["call", "email", "other"]), "fromAddress": "+15550001111",
                "toAddress": "ops@example.com", "priority": *rng.pick(&["low", "medium", "high", "urgent"])});
            if rng.chance(50) {
                body["assignedTo"] = json!(rng.pick(&members).1);
            }
            if rng.chance(50) {
                body["agent"] = json!(rng.pick(&agents).1);
            }
            (format!("talkwai.cmd.{t}.task.create"), body)
        } else if roll < 85 {
            let (tt, task) = *rng.pick(&tasks);
            let action = *rng.pick(&[
                "start",
                "complete",
                "fail",
                "cancel",
                "retry",
                "update",
                "setMetadata",
                "assign",
                "unassign",
                "linkAgent",
                "unlinkAgent",
                "delete",
            ]);
            let body = match action {
                "update" => {
                    json!({"id": task, "subject": format!("s{i}"), "content": if rng.chance(30) { Value::Null } else { json!("line one\n\tindented \\ back\\slash \\N ünï") }})
                }
                "setMetadata" => json!({"id": task, "metadata": format!("{{\"n\":{i}}}")}),
                "assign" => json!({"id": task, "assignedTo": rng.pick(&members).1}),
                "linkAgent" => json!({"id": task, "agent": rng.pick(&agents).1}),
                "complete" | "fail" if rng.chance(50) => {
                    json!({"id": task, "outcome": {"summary": format!("outcome {i}\n\tünï"), "durationSecs": i}})
                }
                _ => json!({"id": task}),
            };
            (format!("talkwai.cmd.{tt}.task.{action}"), body)
        } else if roll < 93 {
            let (mt, member) = *rng.pick(&members);
            let action = *rng.pick(&["update", "setRole", "setStatus", "delete"]);
            let body = match action {
                "update" => {
                    json!({"id": member, "phone": if rng.chance(50) { Value::Null } else { json!("+4930123456") }})
                }
                "setRole" => {
                    json!({"id": member, "role": *rng.pick(&["user", "manager", "owner"])})
                }
                "setStatus" => json!({"id": member, "status": *rng.pick(&["active", "inactive"])}),
                _ => json!({"id": member}),
            };
            (format!("talkwai.cmd.{mt}.member.{action}"), body)
        } else {
            let (at, agent) = *rng.pick(&agents);
            let action = *rng.pick(&["update", "configure", "setStatus", "delete"]);
            let body = match action {
                "update" => json!({"id": agent, "description": format!("d{i}")}),
                "configure" => json!({"id": agent, "configuration": "{\"v\":2}"}),
                "setStatus" => {
                    json!({"id": agent, "status": *rng.pick(&["active", "inactive", "training"])})
                }
                _ => json!({"id": agent}),
            };
            (format!("talkwai.cmd.{at}.agent.{action}"), body)
        };
        if stack.send(&subject, body).await.is_ok() {
            accepted += 1;
        }
    }
    accepted
}
