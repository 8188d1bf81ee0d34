//! The query API over NATS against real nats-server and PostgreSQL, with known data written
//! through the command service and projected by the projector.

use std::time::Duration;

use async_nats::HeaderMap;
use serde_json::{Value, json};
use talkwai_auth::{Claims, PrincipalKind, TokenVerifier};
use talkwai_command_service::CommandService;
use talkwai_projector::Projector;
use talkwai_proto::{CommandAccepted, CommandReply};
use talkwai_query::QueryService;
use talkwai_testkit::{NatsServer, Postgres};
use uuid::Uuid;

const PLATFORM: &str = "platform-token-query-tests";
const SECRET: &str = "query-tests-secret";

/// A task of tenant A: (id, createdAt, status, assignee, agent).
type TaskRow = (Uuid, i64, String, Option<Uuid>, Option<Uuid>);

struct World {
    _nats: NatsServer,
    _pg: Postgres,
    client: async_nats::Client,
    a: Uuid,
    b: Uuid,
    a_token: String,
    b_token: String,
    /// Tenant A's tasks: (id, createdAt, status, assignee, agent), in creation order.
    tasks: Vec<TaskRow>,
    members: Vec<Uuid>,
    agents: Vec<(Uuid, &'static str)>,
}

async fn send(
    client: &async_nats::Client,
    subject: &str,
    body: Value,
    token: &str,
) -> CommandAccepted {
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let reply = client
        .request_with_headers(subject.to_owned(), headers, body.to_string().into())
        .await
        .expect("request");
    let reply: CommandReply = serde_json::from_slice(&reply.payload).expect("reply");
    reply
        .into_result()
        .unwrap_or_else(|e| panic!("{subject} {body}: {e:?}"))
}

fn token(user: Uuid, tenant: Uuid) -> String {
    let claims = Claims {
        sub: user.into(),
        kind: PrincipalKind::Member,
        tenant: Some(tenant.into()),
        role: None,
        exp: talkwai_auth::now_secs() + 3600,
        nbf: None,
        iss: None,
        aud: None,
    };
    talkwai_auth::mint(&claims, &secrecy::SecretString::from(SECRET)).expect("mint")
}

async fn tenant_with_owner(client: &async_nats::Client, name: &str) -> (Uuid, String) {
    let tenant = Uuid::new_v4();
    send(
        client,
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": name}),
        PLATFORM,
    )
    .await;
    let user = Uuid::new_v4();
    send(
        client,
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": format!("{user}@owners.test")}),
        PLATFORM,
    )
    .await;
    send(
        client,
        &format!("talkwai.cmd.{tenant}.member.create"),
        json!({"id": Uuid::new_v4(), "firstName": "Owner", "lastName": name, "email": format!("owner@{}.test", name.to_lowercase()),
               "role": "owner", "user": user}),
        PLATFORM,
    )
    .await;
    (tenant, token(user, tenant))
}

async fn start(tasks_in_a: usize) -> World {
    start_capped(tasks_in_a, None).await
}

/// [`start`] with the query service's row cap set to `max_rows` (`None`: its default).
async fn start_capped(tasks_in_a: usize, max_rows: Option<usize>) -> World {
    start_with(tasks_in_a, max_rows, None).await
}

/// [`start_capped`]; with `own_pool` the query service gets a pool of its own of that many
/// connections and follows the projector's change feed, as the binary does (else it shares
/// the projector's pool and polls).
async fn start_with(tasks_in_a: usize, max_rows: Option<usize>, own_pool: Option<usize>) -> World {
    let nats = NatsServer::start().await.expect("nats");
    let pg = Postgres::start().await.expect("pg");
    let db = pg.create_unique_database("query").await.expect("db");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let service = CommandService::build(talkwai_command_service::Config::for_tests(
        &nats.url(),
        PLATFORM,
        SECRET,
    ))
    .await
    .expect("command service");
    tokio::spawn(async move { service.run(std::future::pending()).await });
    let projector = Projector::build(talkwai_projector::Config::for_tests(&nats.url(), &db))
        .await
        .expect("projector");
    let pool = projector.pool().clone();
    tokio::spawn(async move { projector.run(std::future::pending()).await });
    let verifier = TokenVerifier::new(
        Some(PLATFORM.to_owned().into()),
        Some(SECRET.to_owned().into()),
        None,
        None,
    );
    let mut queries = match own_pool {
        None => QueryService::new(pool, verifier),
        Some(size) => {
            let mut config = deadpool_postgres::Config::new();
            config.url = Some(db.clone());
            config.pool = Some(deadpool_postgres::PoolConfig::new(size));
            let own = config
                .create_pool(
                    Some(deadpool_postgres::Runtime::Tokio1),
                    tokio_postgres::NoTls,
                )
                .expect("query pool");
            QueryService::new(own, verifier).with_change_feed(db.clone())
        }
    };
    if let Some(max_rows) = max_rows {
        queries = queries.with_max_rows(max_rows);
    }
    let qc = client.clone();
    tokio::spawn(async move { queries.run(qc, std::future::pending()).await });
    // Real endpoints answer (`$SRV.PING` answers before they are subscribed).
    talkwai_testkit::services::wait_for_commands(&client)
        .await
        .expect("command endpoints answer");
    talkwai_testkit::services::wait_for_queries(&client)
        .await
        .expect("query endpoints answer");
    let (a, a_token) = tenant_with_owner(&client, "Acme").await;
    let (b, b_token) = tenant_with_owner(&client, "Bravo").await;
    let mut members = Vec::new();
    for (i, status) in ["active", "active", "inactive"].iter().enumerate() {
        let id = Uuid::new_v4();
        send(&client, &format!("talkwai.cmd.{a}.member.create"),
            json!({"id": id, "firstName": "M", "lastName": format!("{i}"), "email": format!("m{i}@acme.test"), "role": "user"}), PLATFORM).await;
        members.push(id);
        if *status == "inactive" {
            send(
                &client,
                &format!("talkwai.cmd.{a}.member.setStatus"),
                json!({"id": id, "status": "inactive"}),
                PLATFORM,
            )
            .await;
        }
    }
    let mut agents = Vec::new();
    for kind in ["voice", "email"] {
        let id = Uuid::new_v4();
        send(
            &client,
            &format!("talkwai.cmd.{a}.agent.create"),
            json!({"id": id, "name": kind, "type": kind}),
            PLATFORM,
        )
        .await;
        agents.push((id, kind));
    }
    // A task in tenant B, assigned to B's... nothing: it must never show in A's answers.
    send(&client, &format!("talkwai.cmd.{b}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550009999", "toAddress": "+15550008888"}), PLATFORM).await;
    let mut tasks = Vec::new();
    for i in 0..tasks_in_a {
        let id = Uuid::new_v4();
        let assignee = (i % 3 != 2).then(|| members[i % 2]);
        let agent = (i % 2 == 0).then(|| agents[i % 4 / 2].0);
        let mut body = json!({"id": id, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222", "subject": format!("task {i}")});
        if let Some(m) = assignee {
            body["assignedTo"] = json!(m);
        }
        if let Some(g) = agent {
            body["agent"] = json!(g);
        }
        let reply = send(
            &client,
            &format!("talkwai.cmd.{a}.task.create"),
            body,
            PLATFORM,
        )
        .await;
        let created_at = reply.events[0].data["at"].as_i64().expect("at");
        let mut status = "pending".to_owned();
        if i % 4 == 1 {
            send(
                &client,
                &format!("talkwai.cmd.{a}.task.start"),
                json!({"id": id}),
                PLATFORM,
            )
            .await;
            status = "in_progress".into();
        }
        tasks.push((id, created_at, status, assignee, agent));
    }
    World {
        _nats: nats,
        _pg: pg,
        client,
        a,
        b,
        a_token,
        b_token,
        tasks,
        members,
        agents,
    }
}

impl World {
    async fn query_on(&self, subject: &str, token: &str, body: Value) -> Value {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = self
            .client
            .request_with_headers(subject.to_owned(), headers, body.to_string().into())
            .await
            .expect("query request");
        serde_json::from_slice(&reply.payload).expect("query reply is JSON")
    }

    /// A member of tenant A asks, after waiting for every write so far.
    async fn ask(&self, query: Value) -> Value {
        let reply = self.query_as(&self.a_token, &query).await;
        assert_eq!(reply["ok"], true, "query failed: {reply}");
        reply
    }

    async fn error(&self, query: Value) -> Value {
        let reply = self.query_as(&self.a_token, &query).await;
        assert_eq!(reply["ok"], false, "query should fail: {reply}");
        reply["error"].clone()
    }

    /// `token`'s answer to `query` on tenant A, after waiting for every write so far.
    async fn query_as(&self, token: &str, query: &Value) -> Value {
        let head = self.head().await;
        self.query_on(
            &format!("talkwai.qry.{}", self.a),
            token,
            json!({"query": query, "minSeq": head}),
        )
        .await
    }

    /// `token`'s live subscription to `query` on tenant A (the reply, ok or not).
    async fn subscribe_as(&self, token: &str, query: &Value) -> Value {
        self.query_on(
            &format!("talkwai.qry.{}.subscribe", self.a),
            token,
            query.clone(),
        )
        .await
    }

    /// The updates of a live subscription (`subscribed` is its reply).
    async fn live_updates(&self, subscribed: &Value) -> async_nats::Subscriber {
        let subject = subscribed["subject"].as_str().expect("live subject");
        self.client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe")
    }

    async fn head(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        js.get_stream("TALKWAI_EVENTS")
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .last_sequence
    }

    /// Tenant A's task ids, newest first (createdAt desc, id desc), optionally filtered.
    fn newest(&self, keep: impl Fn(&TaskRow) -> bool) -> Vec<String> {
        let mut tasks: Vec<_> = self.tasks.iter().filter(|t| keep(t)).collect();
        tasks.sort_by_key(|t| std::cmp::Reverse((t.1, t.0)));
        tasks.iter().map(|t| t.0.to_string()).collect()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_queries_answer_as_the_note_expects() {
    let w = start(30).await;
    // 1. The tenant dashboard: active members, agents, the 20 newest tasks with agent and assignee.
    let reply = w
        .ask(json!({"tenants": {"$": {"where": {"id": w.a}},
            "members": {"$": {"where": {"status": "active"}}},
            "agents": {},
            "tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}, "agent": {}, "assignedTo": {}}}}))
        .await;
    let tenants = reply["data"]["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 1);
    let tenant = &tenants[0];
    assert_eq!(tenant["name"], "Acme");
    assert_eq!(
        tenant["members"].as_array().expect("members").len(),
        3,
        "owner + two active members"
    );
    assert!(
        tenant["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["status"] == "active")
    );
    assert_eq!(tenant["agents"].as_array().expect("agents").len(), 2);
    let tasks = &tenant["tasks"];
    assert_eq!(
        ids(tasks),
        w.newest(|_| true)[..20].to_vec(),
        "the 20 newest, newest first"
    );
    for task in tasks.as_array().expect("tasks") {
        let source = w
            .tasks
            .iter()
            .find(|t| t.0.to_string() == task["id"])
            .expect("known task");
        assert_eq!(
            task["assignedTo"]["id"].as_str().map(str::to_owned),
            source.3.map(|m| m.to_string())
        );
        assert_eq!(
            task["agent"]["id"].as_str().map(str::to_owned),
            source.4.map(|g| g.to_string())
        );
        assert_eq!(task["status"], source.2.as_str());
        assert!(
            task.get("tenant_id").is_none(),
            "rows speak the seed's names only"
        );
    }

    // 2. Tasks for a member, with tenant and agent.
    let member = w.members[0];
    let reply = w
        .ask(json!({"tasks": {"$": {"where": {"assignedTo.id": member}, "order": {"createdAt": "desc"}}, "tenant": {}, "agent": {}}}))
        .await;
    let list = &reply["data"]["tasks"];
    assert_eq!(ids(list), w.newest(|t| t.3 == Some(member)));
    assert!(
        list.as_array()
            .expect("tasks")
            .iter()
            .all(|t| t["tenant"]["id"] == json!(w.a))
    );

    // 3. Pending tasks of the tenant, newest first.
    let reply = w
        .ask(json!({"tasks": {"$": {"where": {"and": [{"tenant.id": w.a}, {"status": "pending"}]}, "order": {"createdAt": "desc"}},
            "agent": {}, "assignedTo": {}}}))
        .await;
    assert_eq!(ids(&reply["data"]["tasks"]), w.newest(|t| t.2 == "pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_filter_like_instaql() {
    let w = start(12).await;
    let all = |keep: &dyn Fn(&TaskRow) -> bool| {
        let mut v = w.newest(keep);
        v.sort();
        v
    };
    let sorted = |v: &Value| {
        let mut v = ids(v);
        v.sort();
        v
    };
    let voice = w.agents[0].0;
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"status": {"$in": ["in_progress"]}}),
            all(&|t| t.2 == "in_progress"),
        ),
        (
            json!({"assignedTo": {"$isNull": true}}),
            all(&|t| t.3.is_none()),
        ),
        (
            json!({"assignedTo.id": {"$not": w.members[0]}}),
            all(&|t| t.3 != Some(w.members[0])),
        ),
        (json!({"agent.type": "voice"}), all(&|t| t.4 == Some(voice))),
        (
            json!({"or": [{"status": "in_progress"}, {"assignedTo": {"$isNull": true}}]}),
            all(&|t| t.2 == "in_progress" || t.3.is_none()),
        ),
        (
            json!({"createdAt": {"$gte": w.tasks[5].1}}),
            all(&|t| t.1 >= w.tasks[5].1),
        ),
        (
            json!({"createdAt": {"$lt": w.tasks[5].1}}),
            all(&|t| t.1 < w.tasks[5].1),
        ),
        (
            json!({"assignedTo.email": {"$ilike": "M0@%"}}),
            all(&|t| t.3 == Some(w.members[0])),
        ),
        (json!({"assignedTo.email": {"$like": "M0@%"}}), vec![]),
        // Values that look like SQL are only values.
        (json!({"status": "pending' OR '1'='1"}), vec![]),
        (
            json!({"subject": "x\"); DROP TABLE talkwai_g1.tasks; --"}),
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        let reply = w
            .ask(json!({"tasks": {"$": {"where": filter.clone(), "limit": 1000}}}))
            .await;
        assert_eq!(sorted(&reply["data"]["tasks"]), expected, "where {filter}");
    }
    // A where on a nested level filters only that level.
    let reply = w.ask(json!({"tenants": {"tasks": {"$": {"where": {"status": "in_progress"}, "limit": 1000}}}})).await;
    let tenant = &reply["data"]["tenants"][0];
    assert_eq!(sorted(&tenant["tasks"]), all(&|t| t.2 == "in_progress"));
    // Counts.
    let reply = w
        .ask(json!({"tasks": {"$": {"aggregate": "count", "where": {"status": "pending"}}}}))
        .await;
    assert_eq!(
        reply["data"]["tasks"]["count"],
        json!(w.tasks.iter().filter(|t| t.2 == "pending").count())
    );
    let reply = w
        .ask(json!({"tenants": {"tasks": {"$": {"aggregate": "count"}}}}))
        .await;
    assert_eq!(
        reply["data"]["tenants"][0]["tasks"]["count"],
        json!(w.tasks.len())
    );
    // Field selection.
    let reply = w
        .ask(json!({"tasks": {"$": {"fields": ["status"], "limit": 1}}}))
        .await;
    let keys: Vec<&String> = reply["data"]["tasks"][0]
        .as_object()
        .expect("row")
        .keys()
        .collect();
    assert_eq!(keys.len(), 2, "id and status: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_typed_errors() {
    let w = start(1).await;
    let cases = [
        (json!({"widgets": {}}), "widgets"),
        (
            json!({"tasks": {"$": {"where": {"colour": "red"}}}}),
            "tasks.$.where.colour",
        ),
        (
            json!({"tasks": {"$": {"where": {"status": {"$regex": "x"}}}}}),
            "tasks.$.where.status.$regex",
        ),
        (json!({"tasks": {"owner": {}}}), "tasks.owner"),
        (
            json!({"tasks": {"$": {"order": {"subject": "asc"}}}}),
            "tasks.$.order",
        ),
        (
            json!({"tasks": {"$": {"where": {"subject": {"$gt": "a"}}}}}),
            "tasks.$.where.subject.$gt",
        ),
        (json!({"tasks": {"$": {"limit": 100000}}}), "tasks.$.limit"),
        (
            json!({"tasks": {"$": {"where": {"createdAt": "yesterday"}}}}),
            "tasks.$.where.createdAt",
        ),
        (
            json!({"tasks": {"$": {"after": "not-a-cursor"}}}),
            "tasks.$.after",
        ),
        (
            json!({"tenants": {"tasks": {"agent": {"tasks": {"agent": {"tasks": {}}}}}}}),
            "tenants.tasks.agent.tasks.agent",
        ),
    ];
    for (query, field) in cases {
        let error = w.error(query.clone()).await;
        assert_eq!(error["code"], "validation_failed", "{query}: {error}");
        assert_eq!(error["field"], field, "{query}: {error}");
    }
    // Admin-only data is refused to members.
    for query in [
        json!({"admins": {}}),
        json!({"$users": {}}),
        json!({"tasks": {"createdByAdmin": {}}}),
    ] {
        assert_eq!(w.error(query.clone()).await["code"], "forbidden", "{query}");
    }
    let reply = w
        .query_on(
            &format!("talkwai.qry.{}", w.a),
            "forged",
            json!({"tasks": {}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_by_construction() {
    let w = start(5).await;
    let head = w.head().await;
    // Another tenant's subject.
    let reply = w
        .query_on(
            &format!("talkwai.qry.{}", w.b),
            &w.a_token,
            json!({"tasks": {}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "forbidden");
    let reply = w
        .query_on("talkwai.qry.platform", &w.a_token, json!({"tasks": {}}))
        .await;
    assert_eq!(reply["error"]["code"], "forbidden");
    // Naming the other tenant in filters and paths yields nothing.
    for query in [
        json!({"tenants": {"$": {"where": {"id": w.b}}}}),
        json!({"tasks": {"$": {"where": {"tenant.id": w.b}}}}),
        json!({"members": {"$": {"where": {"tenant.name": "Bravo"}}}}),
        json!({"agents": {"$": {"where": {"tasks.tenant.id": w.b}}}}),
    ] {
        let reply = w
            .query_on(
                &format!("talkwai.qry.{}", w.a),
                &w.a_token,
                json!({"query": query, "minSeq": head}),
            )
            .await;
        let data = reply["data"].as_object().expect("data");
        for (_, rows) in data {
            assert_eq!(
                rows.as_array().map(Vec::len),
                Some(0),
                "{query} leaked: {reply}"
            );
        }
    }
    // Everything tenant A sees belongs to tenant A, at every level.
    let reply = w
        .query_on(&format!("talkwai.qry.{}", w.a), &w.a_token,
            json!({"query": {"tenants": {"tasks": {"tenant": {}, "assignedTo": {"tenant": {}}}, "members": {"tenant": {}}}}, "minSeq": head}))
        .await;
    let text = reply["data"].to_string();
    assert!(
        !text.contains(&w.b.to_string()),
        "tenant B appears in A's answer"
    );
    assert!(text.contains(&w.a.to_string()));
    // Tenant B sees only its own task.
    let reply = w
        .query_on(
            &format!("talkwai.qry.{}", w.b),
            &w.b_token,
            json!({"query": {"tasks": {}}, "minSeq": head}),
        )
        .await;
    assert_eq!(reply["data"]["tasks"].as_array().map(Vec::len), Some(1));
    // The platform token sees every tenant.
    let reply = w
        .query_on(
            "talkwai.qry.platform",
            PLATFORM,
            json!({"query": {"tenants": {}}, "minSeq": head}),
        )
        .await;
    assert_eq!(reply["data"]["tenants"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pagination_walks_a_thousand_tasks_both_ways() {
    let w = start(0).await;
    // 1,000 tasks in tenant A, sent concurrently.
    let mut handles = Vec::new();
    for chunk in 0..10 {
        let client = w.client.clone();
        let a = w.a;
        handles.push(tokio::spawn(async move {
            for i in 0..100 {
                send(&client, &format!("talkwai.cmd.{a}.task.create"),
                    json!({"id": Uuid::new_v4(), "type": "other", "fromAddress": "a@acme.test", "toAddress": "b@acme.test", "subject": format!("{chunk}-{i}")}), PLATFORM).await;
            }
        }));
    }
    for h in handles {
        h.await.expect("writer");
    }
    let expected: Vec<String> = {
        let reply = w
            .ask(json!({"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 1000}}}))
            .await;
        ids(&reply["data"]["tasks"])
    };
    assert_eq!(expected.len(), 1000);
    // Forwards.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut params = json!({"order": {"createdAt": "desc"}, "first": 90});
        if let Some(cursor) = &after {
            params["after"] = json!(cursor);
        }
        let reply = w.ask(json!({"tasks": {"$": params}})).await;
        seen.extend(ids(&reply["data"]["tasks"]));
        let info = &reply["pageInfo"]["tasks"];
        assert_eq!(info["hasPreviousPage"], after.is_some());
        if info["hasNextPage"] == false {
            break;
        }
        after = info["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, expected, "forwards: no gaps, no repeats");
    // Backwards from the end.
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut params = json!({"order": {"createdAt": "desc"}, "last": 70});
        if let Some(cursor) = &before {
            params["before"] = json!(cursor);
        }
        let reply = w.ask(json!({"tasks": {"$": params}})).await;
        let page = ids(&reply["data"]["tasks"]);
        let info = &reply["pageInfo"]["tasks"];
        pages.push(page);
        if info["hasPreviousPage"] == false {
            break;
        }
        before = info["startCursor"].as_str().map(str::to_owned);
    }
    let backwards: Vec<String> = pages.into_iter().rev().flatten().collect();
    assert_eq!(backwards, expected, "backwards: no gaps, no repeats");
    // Nested levels honor cursors per parent too.
    let reply = w
        .ask(json!({"tenants": {"tasks": {"$": {"order": {"createdAt": "desc"}, "first": 25}}}}))
        .await;
    let tenant = &reply["data"]["tenants"][0];
    assert_eq!(ids(&tenant["tasks"]), expected[..25].to_vec());
    assert_eq!(tenant["$pageInfo"]["tasks"]["hasNextPage"], true);
    let cursor = tenant["$pageInfo"]["tasks"]["endCursor"].clone();
    let reply = w.ask(json!({"tenants": {"tasks": {"$": {"order": {"createdAt": "desc"}, "first": 25, "after": cursor}}}})).await;
    assert_eq!(
        ids(&reply["data"]["tenants"][0]["tasks"]),
        expected[25..50].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_min_seq_reads_its_own_write() {
    let w = start(0).await;
    for _ in 0..20 {
        let id = Uuid::new_v4();
        let reply = send(&w.client, &format!("talkwai.cmd.{}.task.create", w.a),
            json!({"id": id, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), &w.a_token).await;
        let answer = w
            .query_on(
                &format!("talkwai.qry.{}", w.a),
                &w.a_token,
                json!({"query": {"tasks": {"$": {"where": {"id": id}}}}, "minSeq": reply.seq}),
            )
            .await;
        assert_eq!(answer["data"]["tasks"][0]["id"], json!(id), "{answer}");
        assert!(answer["seq"].as_u64().expect("seq") >= reply.seq);
    }
}

/// Queries waiting for a `minSeq` the read models have not reached hold no connection: with a
/// pool of one, a query without `minSeq` sent after them is answered while they still wait,
/// and they are answered once the read models reach their sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_waiting_for_min_seq_leave_the_connections_to_others() {
    let w = start_with(1, None, Some(1)).await;
    // Everything written so far is projected (the member's grant among it).
    w.ask(json!({"tasks": {}})).await;
    let head = w.head().await;
    let subject = format!("talkwai.qry.{}", w.a);
    // Not written yet: the next command's event.
    let ahead = json!({"query": {"tasks": {}}, "minSeq": head + 1});
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let client = w.client.clone();
            let (subject, token, body) = (subject.clone(), w.a_token.clone(), ahead.clone());
            tokio::spawn(async move {
                let mut headers = HeaderMap::new();
                headers.insert("Authorization", format!("Bearer {token}").as_str());
                let reply = client
                    .request_with_headers(subject, headers, body.to_string().into())
                    .await
                    .expect("query request");
                serde_json::from_slice::<Value>(&reply.payload).expect("JSON")
            })
        })
        .collect();
    let answer = w
        .query_on(&subject, &w.a_token, json!({"query": {"tasks": {}}}))
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["data"]["tasks"].as_array().map(Vec::len), Some(1));
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the queries waiting for sequence {} were answered before it was written",
        head + 1
    );
    let id = Uuid::new_v4();
    let reply = send(&w.client, &format!("talkwai.cmd.{}.task.create", w.a),
        json!({"id": id, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), &w.a_token).await;
    // Its command record comes first, then its event: either reaches the waiters' sequence.
    assert!(reply.seq > head);
    for waiter in waiting {
        let answer = waiter.await.expect("waiter");
        assert_eq!(answer["ok"], true, "{answer}");
        assert!(answer["seq"].as_u64().expect("seq") > head, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_member_is_refused_at_once_and_its_live_query_ends() {
    use futures::StreamExt;
    let w = start(2).await;
    let user = Uuid::new_v4();
    send(
        &w.client,
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": format!("{user}@acme.test")}),
        PLATFORM,
    )
    .await;
    let member = Uuid::new_v4();
    send(&w.client, &format!("talkwai.cmd.{}.member.create", w.a),
        json!({"id": member, "firstName": "Dee", "lastName": "Activated", "email": "dee@acme.test", "role": "user", "user": user}),
        PLATFORM).await;
    let member_token = token(user, w.a);
    let tasks = json!({"tasks": {}});
    let reply = w.query_as(&member_token, &tasks).await;
    assert_eq!(reply["ok"], true, "an active member reads: {reply}");
    let subscribed = w.subscribe_as(&member_token, &tasks).await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");
    let mut updates = w.live_updates(&subscribed).await;
    // The owner's live query on the same data: the control that updates do flow.
    let owners = w.subscribe_as(&w.a_token, &tasks).await;
    assert_eq!(owners["ok"], true, "{owners}");
    let mut owner_updates = w.live_updates(&owners).await;

    send(
        &w.client,
        &format!("talkwai.cmd.{}.member.setStatus", w.a),
        json!({"id": member, "status": "inactive"}),
        PLATFORM,
    )
    .await;
    let reply = w.query_as(&member_token, &tasks).await;
    assert_eq!(
        reply["ok"], false,
        "a deactivated member is refused: {reply}"
    );
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
    let reply = w.subscribe_as(&member_token, &tasks).await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");

    // A new task changes both answers: only the owner hears of it.
    send(&w.client, &format!("talkwai.cmd.{}.task.create", w.a),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
        PLATFORM).await;
    let update = tokio::time::timeout(Duration::from_secs(10), owner_updates.next())
        .await
        .expect("the owner's live query is updated")
        .expect("update");
    let update: Value = serde_json::from_slice(&update.payload).expect("JSON");
    assert_eq!(update["data"]["tasks"].as_array().map(Vec::len), Some(3));
    // The owner's update was published after the member's refresh was refused (both are
    // evaluated in one pass, at the same checkpoint); nothing is queued for the member.
    let leaked = tokio::time::timeout(Duration::from_millis(500), updates.next()).await;
    assert!(
        leaked.is_err(),
        "a deactivated member got a live update: {leaked:?}"
    );
}

/// A new call task in tenant A (pending, no assignee, no agent).
async fn new_task(w: &World) -> Uuid {
    let id = Uuid::new_v4();
    send(&w.client, &format!("talkwai.cmd.{}.task.create", w.a),
        json!({"id": id, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), PLATFORM).await;
    id
}

/// The ids of every page of `params` on tenant A's `tasks`, following `first`/`after` cursors.
async fn walk_pages(w: &World, params: Value) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut params = params.clone();
        if let Some(cursor) = &after {
            params["after"] = json!(cursor);
        }
        let reply = w.ask(json!({"tasks": {"$": params}})).await;
        pages.push(ids(&reply["data"]["tasks"]));
        let info = &reply["pageInfo"]["tasks"];
        if info["hasNextPage"] == false {
            return pages;
        }
        assert!(pages.len() < 100, "pages never end: {info}");
        after = info["endCursor"].as_str().map(str::to_owned);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_limit_returns_every_row_at_every_level() {
    // 140 tasks, every fourth started: 105 pending.
    let w = start(140).await;
    let pending = w.newest(|t| t.2 == "pending");
    assert_eq!(pending.len(), 105);

    // The seed's "all pending tasks" query, as the seed sends it: no limit.
    let reply = w
        .ask(json!({"tasks": {"$": {"where": {"and": [{"tenant.id": w.a}, {"status": "pending"}]}, "order": {"createdAt": "desc"}},
            "agent": {}, "assignedTo": {}}}))
        .await;
    let tasks = &reply["data"]["tasks"];
    assert_eq!(ids(tasks).len(), 105, "no silent cut");
    assert_eq!(ids(tasks), pending, "every pending task, newest first");
    assert_eq!(
        reply["pageInfo"]["tasks"]["hasNextPage"], false,
        "{}",
        reply["pageInfo"]
    );
    for task in tasks.as_array().expect("tasks") {
        let source = w
            .tasks
            .iter()
            .find(|t| t.0.to_string() == task["id"])
            .expect("known task");
        assert_eq!(
            task["agent"]["id"].as_str().map(str::to_owned),
            source.4.map(|g| g.to_string()),
            "links resolve on every row"
        );
    }

    // Without `order`: createdAt ascending (oldest first), still every row.
    let reply = w.ask(json!({"tasks": {}})).await;
    let mut oldest_first = w.newest(|_| true);
    oldest_first.reverse();
    assert_eq!(ids(&reply["data"]["tasks"]), oldest_first);

    // A nested link without limit: every linked row, per parent.
    let reply = w
        .ask(json!({"tenants": {"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}}}},
            "members": {"tasks": {"$": {"order": {"createdAt": "desc"}}}}}))
        .await;
    assert_eq!(ids(&reply["data"]["tenants"][0]["tasks"]), pending);
    for member in reply["data"]["members"].as_array().expect("members") {
        let id: Uuid = member["id"].as_str().expect("id").parse().expect("uuid");
        assert_eq!(
            ids(&member["tasks"]),
            w.newest(|t| t.3 == Some(id)),
            "tasks of member {id}"
        );
    }
    let assigned = |m: Uuid| w.tasks.iter().filter(|t| t.3 == Some(m)).count();
    assert!(
        assigned(w.members[0]) > 40 && assigned(w.members[1]) > 40,
        "several parents, each with a long list"
    );

    // Paging still works: `first`/`after` cursors and `limit`/`offset` walk the same rows.
    let pages = walk_pages(
        &w,
        json!({"where": {"status": "pending"}, "order": {"createdAt": "desc"}, "first": 40}),
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![40, 40, 25]
    );
    assert_eq!(pages.concat(), pending, "cursor pages: no gaps, no repeats");
    let mut by_offset = Vec::new();
    for offset in [0, 40, 80] {
        let reply = w
            .ask(json!({"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}, "limit": 40, "offset": offset}}}))
            .await;
        assert_eq!(
            reply["pageInfo"]["tasks"]["hasNextPage"],
            offset < 80,
            "offset {offset}"
        );
        by_offset.extend(ids(&reply["data"]["tasks"]));
    }
    assert_eq!(by_offset, pending, "offset pages: no gaps, no repeats");
    // `after` alone: every row after the cursor.
    let first = w
        .ask(json!({"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}, "first": 5}}}))
        .await;
    let cursor = first["pageInfo"]["tasks"]["endCursor"].clone();
    let rest = w
        .ask(json!({"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}, "after": cursor}}}))
        .await;
    assert_eq!(ids(&rest["data"]["tasks"]), pending[5..].to_vec());
    assert_eq!(rest["pageInfo"]["tasks"]["hasNextPage"], false);
    assert_eq!(rest["pageInfo"]["tasks"]["hasPreviousPage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_row_cap_is_refused_with_too_many_rows() {
    use futures::StreamExt;
    const CAP: usize = 50;
    // 60 tasks, every fourth started: 45 pending.
    let w = start_capped(60, Some(CAP)).await;
    let refused = |error: &Value, field: &str| {
        assert_eq!(error["code"], "too_many_rows", "{error}");
        assert_eq!(error["field"], field, "{error}");
        let message = error["message"].as_str().expect("message");
        assert!(
            message.contains(&format!("more than {CAP} rows")),
            "{message}"
        );
        assert!(
            message.contains("\"first\"")
                && message.contains("\"after\"")
                && message.contains("endCursor"),
            "the message says how to page: {message}"
        );
    };
    // Over the cap at the root, in a nested link, and through one-links: refused, never cut.
    refused(&w.error(json!({"tasks": {}})).await, "tasks");
    refused(
        &w.error(json!({"tenants": {"tasks": {}}})).await,
        "tenants.tasks",
    );
    refused(
        &w.error(json!({"tenants": {"tasks": {"$": {"first": CAP}}}}))
            .await,
        "tenants.tasks",
    );
    let error = w
        .error(json!({"tasks": {"$": {"limit": 46}, "agent": {}, "assignedTo": {}, "tenant": {}}}))
        .await;
    assert_eq!(
        error["code"], "too_many_rows",
        "46 tasks + 2 agents + 2 members + 1 tenant: {error}"
    );
    assert!(
        error["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("tasks.")),
        "{error}"
    );
    // The wire status of the error.
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {}", w.a_token).as_str());
    let reply = w
        .client
        .request_with_headers(
            format!("talkwai.qry.{}", w.a),
            headers,
            json!({"tasks": {}}).to_string().into(),
        )
        .await
        .expect("query");
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned());
    assert_eq!(code.as_deref(), Some("422"));

    // Up to the cap, all levels together, is answered.
    let reply = w.ask(json!({"tasks": {"$": {"first": CAP}}})).await;
    assert_eq!(ids(&reply["data"]["tasks"]).len(), CAP);
    assert_eq!(reply["pageInfo"]["tasks"]["hasNextPage"], true);
    let reply = w
        .ask(json!({"tenants": {"tasks": {"$": {"limit": CAP - 1}}}}))
        .await;
    assert_eq!(ids(&reply["data"]["tenants"][0]["tasks"]).len(), CAP - 1);
    let reply = w
        .ask(json!({"tasks": {"$": {"limit": 45}, "agent": {}, "assignedTo": {}, "tenant": {}}}))
        .await;
    assert_eq!(ids(&reply["data"]["tasks"]).len(), 45);
    // Paging walks past the cap.
    let pages = walk_pages(&w, json!({"order": {"createdAt": "desc"}, "first": 25})).await;
    assert_eq!(
        pages.concat(),
        w.newest(|_| true),
        "every task, page by page"
    );

    // Live queries obey the same rule: refused over the cap...
    let subscribed = w.subscribe_as(&w.a_token, &json!({"tasks": {}})).await;
    refused(&subscribed["error"], "tasks");
    // ...and a live answer that grows past it says so instead of going stale or being cut,
    // then answers again once it fits.
    let pending_query = json!({"tasks": {"$": {"where": {"status": "pending"}}}});
    let subscribed = w.subscribe_as(&w.a_token, &pending_query).await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");
    assert_eq!(ids(&subscribed["data"]["tasks"]).len(), 45);
    let mut updates = w.live_updates(&subscribed).await;
    let mut last = None;
    for _ in 0..(CAP + 1 - 45) {
        last = Some(new_task(&w).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut next_update = async || -> Value {
        let message = tokio::time::timeout_at(deadline, updates.next())
            .await
            .expect("a live update in time")
            .expect("update");
        serde_json::from_slice(&message.payload).expect("JSON")
    };
    let over = loop {
        let update = next_update().await;
        if update["ok"] == false {
            break update;
        }
        assert_eq!(update["ok"], true, "{update}");
        assert!(ids(&update["data"]["tasks"]).len() <= CAP, "{update}");
    };
    refused(&over["error"], "tasks");
    assert!(over.get("data").is_none(), "no cut answer: {over}");
    let cancelled = last.expect("a task was created");
    send(
        &w.client,
        &format!("talkwai.cmd.{}.task.cancel", w.a),
        json!({"id": cancelled}),
        PLATFORM,
    )
    .await;
    let back = next_update().await;
    assert_eq!(back["ok"], true, "{back}");
    assert_eq!(ids(&back["data"]["tasks"]).len(), CAP, "{back}");
}

/// A task's outcome (`task.complete` / `task.fail` v2) is selectable as an object and
/// filterable by presence and by its summary's text; other conditions on the object are
/// refused with the offending path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_outcome_is_selectable_and_filterable() {
    let w = start(0).await;
    let cmd = |action: &str| format!("talkwai.cmd.{}.task.{action}", w.a);
    let booked = json!({"summary": "Booked for Tuesday 14:30", "durationSecs": 71.5,
                        "transcriptRef": "transcripts/t1.json"});
    let (done, failed, bare, open) = (
        new_task(&w).await,
        new_task(&w).await,
        new_task(&w).await,
        new_task(&w).await,
    );
    for id in [done, failed, bare] {
        send(&w.client, &cmd("start"), json!({"id": id}), PLATFORM).await;
    }
    send(
        &w.client,
        &cmd("complete"),
        json!({"id": done, "outcome": booked}),
        PLATFORM,
    )
    .await;
    send(&w.client, &cmd("fail"),
        json!({"id": failed, "reason": "no answer", "outcome": {"summary": "Voicemail, no message"}}),
        PLATFORM).await;
    send(&w.client, &cmd("complete"), json!({"id": bare}), PLATFORM).await;

    let reply = w
        .ask(json!({"tasks": {"$": {"fields": ["outcome", "outcomeSummary"], "where": {"id": done}}}}))
        .await;
    let row = &reply["data"]["tasks"][0];
    assert_eq!(row["outcome"], booked, "{reply}");
    assert_eq!(row["outcomeSummary"], "Booked for Tuesday 14:30");
    let reply = w
        .ask(json!({"tasks": {"$": {"where": {"id": open}}}}))
        .await;
    assert_eq!(reply["data"]["tasks"][0]["outcome"], Value::Null, "{reply}");

    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v.iter().map(Uuid::to_string).collect::<Vec<_>>()
    };
    let cases = [
        (
            json!({"outcome": {"$isNull": false}}),
            sorted(vec![done, failed]),
        ),
        (
            json!({"outcome": {"$isNull": true}}),
            sorted(vec![bare, open]),
        ),
        (
            json!({"outcomeSummary": {"$ilike": "%tuesday%"}}),
            sorted(vec![done]),
        ),
        (
            json!({"outcomeSummary": "Voicemail, no message"}),
            sorted(vec![failed]),
        ),
        (
            json!({"and": [{"status": "completed"}, {"outcome": {"$isNull": true}}]}),
            sorted(vec![bare]),
        ),
    ];
    for (filter, expected) in cases {
        let reply = w
            .ask(json!({"tasks": {"$": {"where": filter.clone()}}}))
            .await;
        let mut found = ids(&reply["data"]["tasks"]);
        found.sort();
        assert_eq!(found, expected, "where {filter}");
    }
    for (filter, field) in [
        (json!({"outcome": "Booked"}), "tasks.$.where.outcome"),
        (
            json!({"outcome": {"$in": ["x"]}}),
            "tasks.$.where.outcome.$in",
        ),
        (
            json!({"outcome": {"$like": "%"}}),
            "tasks.$.where.outcome.$like",
        ),
    ] {
        let error = w
            .error(json!({"tasks": {"$": {"where": filter.clone()}}}))
            .await;
        assert_eq!(error["code"], "validation_failed", "{filter}: {error}");
        assert_eq!(error["field"], field, "{filter}: {error}");
    }
}

/// What a client sees after each erase command: the query answer holds `null` for every
/// personal field with `erased: true` (filterable), the live query's next answer the same, the
/// task keeps its links; and the erased member's token no longer signs in, to commands or
/// queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_subjects_read_as_null_with_the_marker_and_an_erased_member_cannot_sign_in() {
    let w = start(0).await;
    let (user, member, task) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    send(
        &w.client,
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": "erin@erasure.test"}),
        PLATFORM,
    )
    .await;
    send(
        &w.client,
        &format!("talkwai.cmd.{}.member.create", w.a),
        json!({"id": member, "firstName": "Erin", "lastName": "Eye", "email": "erin@acme.test",
               "phone": "+15550001234", "role": "user", "user": user}),
        PLATFORM,
    )
    .await;
    let member_token = token(user, w.a);
    send(
        &w.client,
        &format!("talkwai.cmd.{}.task.create", w.a),
        json!({"id": task, "type": "call", "fromAddress": "+15550001234", "toAddress": "erin@acme.test",
               "subject": "Lens fitting", "content": "Call Erin", "assignedTo": member}),
        &member_token,
    )
    .await;
    let members = json!({"members": {"$": {"where": {"id": member}}}});
    let tasks = json!({"tasks": {"$": {"where": {"id": task}}, "assignedTo": {}}});
    let before = w.query_as(&member_token, &tasks).await;
    assert_eq!(
        before["data"]["tasks"][0]["subject"], "Lens fitting",
        "{before}"
    );
    assert_eq!(before["data"]["tasks"][0]["erased"], false);

    // A live query of the member and one of the task, as the tenant's owner.
    let member_live = w.subscribe_as(&w.a_token, &members).await;
    assert_eq!(member_live["data"]["members"][0]["firstName"], "Erin");
    let mut member_updates = w.live_updates(&member_live).await;
    let task_live = w.subscribe_as(&w.a_token, &tasks).await;
    let mut task_updates = w.live_updates(&task_live).await;

    // The owner erases the member and the task's content; the platform the identity.
    let erased = send(
        &w.client,
        &format!("talkwai.cmd.{}.member.erase", w.a),
        json!({"id": member}),
        &w.a_token,
    )
    .await;
    assert_eq!(erased.events[0].event_type, "member.erased");
    send(
        &w.client,
        &format!("talkwai.cmd.{}.task.eraseContent", w.a),
        json!({"id": task}),
        &w.a_token,
    )
    .await;
    send(
        &w.client,
        "talkwai.cmd.platform.user.erase",
        json!({"id": user}),
        PLATFORM,
    )
    .await;

    // Live: the next answers carry the nulls and the marker.
    let live_member = first_erased(&mut member_updates, "members").await;
    let live_task = first_erased(&mut task_updates, "tasks").await;
    for field in ["firstName", "lastName", "email", "phone"] {
        assert_eq!(live_member[field], Value::Null, "live member {field}");
    }
    for field in [
        "fromAddress",
        "toAddress",
        "subject",
        "content",
        "outcomeSummary",
    ] {
        assert_eq!(live_task[field], Value::Null, "live task {field}");
    }
    assert_eq!(live_task["assignedTo"]["id"], json!(member), "links stay");

    // Query answers: the same, and `erased` filters.
    let answer = w
        .ask(json!({"members": {"$": {"where": {"erased": true}}}}))
        .await;
    let rows = answer["data"]["members"].as_array().expect("members");
    assert_eq!(rows.len(), 1, "{answer}");
    assert_eq!(rows[0]["id"], json!(member));
    assert_eq!(rows[0]["firstName"], Value::Null);
    assert_eq!(rows[0]["role"], "user", "what is not personal stays");
    let answer = w.ask(tasks.clone()).await;
    let row = &answer["data"]["tasks"][0];
    assert_eq!(row["erased"], true);
    assert_eq!(row["content"], Value::Null);
    assert_eq!(row["status"], "pending");
    assert_eq!(row["assignedTo"]["id"], json!(member));
    assert_eq!(row["assignedTo"]["erased"], true);
    let users = w
        .query_on(
            "talkwai.qry.platform",
            PLATFORM,
            json!({"query": {"$users": {"$": {"where": {"id": user}}}}, "minSeq": w.head().await}),
        )
        .await;
    assert_eq!(users["data"]["$users"][0]["email"], Value::Null, "{users}");
    assert_eq!(users["data"]["$users"][0]["erased"], true);
    let bad = w
        .error(json!({"members": {"$": {"where": {"erased": "yes"}}}}))
        .await;
    assert_eq!(bad["code"], "validation_failed", "{bad}");

    // The erased member's token signs in nowhere.
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
    headers.insert("Authorization", format!("Bearer {member_token}").as_str());
    let reply = w
        .client
        .request_with_headers(
            format!("talkwai.cmd.{}.task.start", w.a),
            headers,
            json!({"id": task}).to_string().into(),
        )
        .await
        .expect("request");
    let reply: CommandReply = serde_json::from_slice(&reply.payload).expect("reply");
    let refused = reply
        .into_result()
        .expect_err("an erased member may not act");
    assert_eq!(refused.code, talkwai_domain::ErrorCode::Forbidden);
    assert!(refused.message.contains("erased"), "{}", refused.message);
    let refused = w.query_as(&member_token, &tasks).await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "forbidden");
}

/// The first row of the first live answer whose first `namespace` row is marked erased.
async fn first_erased(updates: &mut async_nats::Subscriber, namespace: &str) -> Value {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let update = tokio::time::timeout_at(deadline, updates.next())
            .await
            .expect("a live update before the deadline")
            .expect("update");
        let body: Value = serde_json::from_slice(&update.payload).expect("json");
        if body["data"][namespace][0]["erased"] == true {
            return body["data"][namespace][0].clone();
        }
    }
}
