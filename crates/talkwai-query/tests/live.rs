//! Live queries against real servers: fresh answers after each change, within 100 ms of the
//! projection commit; renewals, unsubscribes and expiry of dead subscribers.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_auth::TokenVerifier;
use talkwai_command_service::CommandService;
use talkwai_projector::Projector;
use talkwai_proto::CommandReply;
use talkwai_query::QueryService;
use talkwai_testkit::{NatsServer, Postgres};
use uuid::Uuid;

const PLATFORM: &str = "platform-token-live-tests";

async fn request(client: &async_nats::Client, subject: &str, body: Value, command: bool) -> Value {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
    if command {
        headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
    }
    let reply = client
        .request_with_headers(subject.to_owned(), headers, body.to_string().into())
        .await
        .expect("request");
    serde_json::from_slice(&reply.payload).expect("json reply")
}

/// Whether a renewal on `control` goes unanswered (no instance holds the subscription).
async fn unanswered(client: &async_nats::Client, control: &str) -> bool {
    let renew = client.request(
        control.to_owned(),
        json!({"op": "renew"}).to_string().into(),
    );
    !matches!(
        tokio::time::timeout(Duration::from_millis(500), renew).await,
        Ok(Ok(_))
    )
}

/// Real servers, the command service, the projector and a query service (shaped by `with`,
/// given the database URL) in this process, their endpoints answering.
struct Stack {
    _nats: NatsServer,
    _pg: Postgres,
    client: async_nats::Client,
    registry: std::sync::Arc<talkwai_query::live::Registry>,
}

impl Stack {
    async fn start(name: &str, with: impl FnOnce(QueryService, String) -> QueryService) -> Self {
        let nats = NatsServer::start().await.expect("nats");
        let pg = Postgres::start().await.expect("pg");
        let db = pg.create_unique_database(name).await.expect("db");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let service = CommandService::build(talkwai_command_service::Config::for_tests(
            &nats.url(),
            PLATFORM,
            "s",
        ))
        .await
        .expect("command service");
        tokio::spawn(async move { service.run(std::future::pending()).await });
        let projector = Projector::build(talkwai_projector::Config::for_tests(&nats.url(), &db))
            .await
            .expect("projector");
        let pool = projector.pool().clone();
        tokio::spawn(async move { projector.run(std::future::pending()).await });
        let verifier = TokenVerifier::new(Some(PLATFORM.to_owned().into()), None, None, None);
        let queries = with(QueryService::new(pool, verifier), db);
        let registry = queries.live_queries();
        let qc = client.clone();
        tokio::spawn(async move { queries.run(qc, std::future::pending()).await });
        // Real endpoints answer (`$SRV.PING` answers before they are subscribed).
        talkwai_testkit::services::wait_for_commands(&client)
            .await
            .expect("command endpoints answer");
        talkwai_testkit::services::wait_for_queries(&client)
            .await
            .expect("query endpoints answer");
        Self {
            _nats: nats,
            _pg: pg,
            client,
            registry,
        }
    }

    fn registry(&self) -> std::sync::Arc<talkwai_query::live::Registry> {
        std::sync::Arc::clone(&self.registry)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_queries_follow_changes_and_expire() {
    let stack = Stack::start("live", |queries, _| {
        queries.with_live_ttl(Duration::from_millis(1500))
    })
    .await;
    let client = stack.client.clone();
    let tenant = Uuid::new_v4();
    let created = request(
        &client,
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Live"}),
        true,
    )
    .await;
    let seq = created["seq"].as_u64().expect("seq");

    let subscribed = request(
        &client,
        &format!("talkwai.qry.{tenant}.subscribe"),
        json!({"query": {"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}}}}, "minSeq": seq}),
        false,
    )
    .await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");
    assert_eq!(subscribed["data"]["tasks"], json!([]));
    let live_subject = subscribed["subject"].as_str().expect("subject").to_owned();
    let control = subscribed["control"].as_str().expect("control").to_owned();
    let mut updates = client
        .subscribe(live_subject)
        .await
        .expect("subscribe to updates");

    // A new pending task shows up, quickly.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let task = Uuid::new_v4();
        let reply: CommandReply = serde_json::from_value(
            request(&client, &format!("talkwai.cmd.{tenant}.task.create"),
                json!({"id": task, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), true).await,
        )
        .expect("reply");
        let accepted = reply.into_result().expect("accepted");
        let sent = Instant::now();
        let update = tokio::time::timeout(Duration::from_secs(5), updates.next())
            .await
            .expect("an update in time")
            .expect("update");
        latencies.push(sent.elapsed());
        let body: Value = serde_json::from_slice(&update.payload).expect("json");
        assert_eq!(body["data"]["tasks"].as_array().map(Vec::len), Some(i + 1));
        assert_eq!(body["data"]["tasks"][0]["id"], json!(task));
        assert!(body["seq"].as_u64().expect("seq") >= accepted.seq);
    }
    latencies.sort();
    eprintln!("live query latencies from command reply to update: {latencies:?}");

    // A change that does not change the answer publishes nothing.
    request(
        &client,
        &format!("talkwai.cmd.{tenant}.agent.create"),
        json!({"id": Uuid::new_v4(), "name": "A", "type": "chat"}),
        true,
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(400), updates.next())
            .await
            .is_err(),
        "no update for an unrelated change"
    );

    // Renewing keeps it alive past the TTL; unsubscribing stops it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let renewed = request(&client, &control, json!({"op": "renew"}), false).await;
        assert_eq!(renewed["ok"], true);
    }
    request(&client, &format!("talkwai.cmd.{tenant}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), true).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(3), updates.next())
            .await
            .is_ok(),
        "still live after renewals"
    );
    let gone = request(&client, &control, json!({"op": "unsubscribe"}), false).await;
    assert_eq!(gone["ok"], true);
    request(&client, &format!("talkwai.cmd.{tenant}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), true).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), updates.next())
            .await
            .is_err(),
        "no update after unsubscribe"
    );
    assert!(
        unanswered(&client, &control).await,
        "nobody holds it any more"
    );

    // A subscriber that never renews is dropped after the TTL.
    let second = request(
        &client,
        &format!("talkwai.qry.{tenant}.subscribe"),
        json!({"tasks": {}}),
        false,
    )
    .await;
    let control = second["control"].as_str().expect("control").to_owned();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    request(&client, &format!("talkwai.cmd.{tenant}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}), true).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(unanswered(&client, &control).await, "expired");
}

/// Creates a pending task in `tenant`; returns its reply's seq.
async fn create_task(client: &async_nats::Client, tenant: Uuid) -> u64 {
    let reply = request(
        client,
        &format!("talkwai.cmd.{tenant}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
        true,
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply["seq"].as_u64().expect("seq")
}

/// Waits for the update of `updates` whose task count is `n`.
async fn wait_for_count(updates: &mut async_nats::Subscriber, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let update = tokio::time::timeout_at(deadline, updates.next())
            .await
            .unwrap_or_else(|_| panic!("no update with {n} tasks in time"))
            .expect("update");
        let body: Value = serde_json::from_slice(&update.payload).expect("json");
        if body["data"]["tasks"].as_array().map(Vec::len) == Some(n) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_writes_never_re_evaluate_another_tenants_live_queries() {
    let stack = Stack::start("isolation", |queries, db| queries.with_change_feed(db)).await;
    let registry = stack.registry();
    let client = stack.client.clone();

    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut seq = 0;
    for (tenant, name) in [(a, "A"), (b, "B")] {
        let created = request(
            &client,
            "talkwai.cmd.platform.tenant.create",
            json!({"id": tenant, "name": name}),
            true,
        )
        .await;
        seq = created["seq"].as_u64().expect("seq");
    }
    let (a_id, mut a_updates) = subscribe(&client, a, json!({"tasks": {}}), seq).await;
    let (_, mut b_updates) = subscribe(&client, b, json!({"tasks": {}}), seq).await;
    // A new subscription is evaluated once more right after it starts (a change may have
    // committed in between); wait for that to settle.
    let settled = settled(&registry, a_id).await;

    // B gets busy: 20 tasks, each seen by B's live query.
    for n in 1..=20 {
        create_task(&client, b).await;
        wait_for_count(&mut b_updates, n).await;
    }
    assert_eq!(
        registry.evaluations(a_id),
        Some(settled),
        "B's writes re-evaluated A's live query"
    );

    // A's own write does reach A.
    create_task(&client, a).await;
    wait_for_count(&mut a_updates, 1).await;
    assert!(registry.evaluations(a_id).is_some_and(|n| n > settled));
}

/// Subscribes to `query` in `tenant` (once the read models reached `seq`); returns the id and
/// the updates.
async fn subscribe(
    client: &async_nats::Client,
    tenant: Uuid,
    query: Value,
    seq: u64,
) -> (Uuid, async_nats::Subscriber) {
    let subscribed = request(
        client,
        &format!("talkwai.qry.{tenant}.subscribe"),
        json!({"query": query, "minSeq": seq}),
        false,
    )
    .await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");
    let id: Uuid = subscribed["subscription"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("subscription id");
    let updates = client
        .subscribe(subscribed["subject"].as_str().expect("subject").to_owned())
        .await
        .expect("subscribe to updates");
    (id, updates)
}

/// Waits until subscription `id` was evaluated again at least once; returns the count.
async fn settled(registry: &talkwai_query::live::Registry, id: Uuid) -> u64 {
    talkwai_testkit::wait::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let n = registry.evaluations(id).filter(|n| *n >= 1);
        async move { n.ok_or("not yet") }
    })
    .await
    .expect("the first evaluation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_table_a_live_query_does_not_read_never_re_evaluate_it_and_a_burst_ends_on_the_latest_answer()
 {
    let interval = Duration::from_millis(200);
    let stack = Stack::start("tables", |queries, db| {
        queries.with_change_feed(db).with_live_interval(interval)
    })
    .await;
    let registry = stack.registry();
    let client = stack.client.clone();
    let tenant = Uuid::new_v4();
    let created = request(
        &client,
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Tables"}),
        true,
    )
    .await;
    let seq = created["seq"].as_u64().expect("seq");
    let (agents_id, mut agents_updates) =
        subscribe(&client, tenant, json!({"agents": {}}), seq).await;
    let (tasks_id, mut tasks_updates) = subscribe(&client, tenant, json!({"tasks": {}}), seq).await;
    let agents_settled = settled(&registry, agents_id).await;
    settled(&registry, tasks_id).await;

    // The tenant's task writes reach its task dashboard, never its agent dashboard.
    for n in 1..=5 {
        create_task(&client, tenant).await;
        wait_for_count(&mut tasks_updates, n).await;
    }
    assert_eq!(
        registry.evaluations(agents_id),
        Some(agents_settled),
        "task writes re-evaluated a live query that reads only agents"
    );
    // An agent write does reach it.
    let agent = request(
        &client,
        &format!("talkwai.cmd.{tenant}.agent.create"),
        json!({"id": Uuid::new_v4(), "name": "A", "type": "chat"}),
        true,
    )
    .await;
    assert_eq!(agent["ok"], true, "{agent}");
    let update = tokio::time::timeout(Duration::from_secs(10), agents_updates.next())
        .await
        .expect("the agent dashboard's update")
        .expect("update");
    let body: Value = serde_json::from_slice(&update.payload).expect("json");
    assert_eq!(body["data"]["agents"].as_array().map(Vec::len), Some(1));
    assert!(
        registry
            .evaluations(agents_id)
            .is_some_and(|n| n > agents_settled)
    );

    // A burst of 20 writes: the dashboard is evaluated at most once per interval, and the
    // last update holds the last write.
    let before = registry.evaluations(tasks_id).expect("held");
    let started = Instant::now();
    let burst = (0..20).map(|_| create_task(&client, tenant));
    futures::future::join_all(burst).await;
    wait_for_count(&mut tasks_updates, 25).await;
    let elapsed = started.elapsed();
    let evaluations = registry.evaluations(tasks_id).expect("held") - before;
    let most = elapsed.as_millis() / interval.as_millis() + 2;
    assert!(
        u128::from(evaluations) <= most,
        "{evaluations} evaluations in {elapsed:?}: more than one per {interval:?}"
    );
    assert!(
        tokio::time::timeout(interval * 3, tasks_updates.next())
            .await
            .is_err(),
        "an update after the one holding the latest answer"
    );
}

/// The live queries one event marks are evaluated together, in one snapshot: each still gets
/// its own answer, and one that grows past the row cap (its error answer) spoils none of the
/// others, which keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_queries_evaluated_together_each_get_their_own_answer() {
    let stack = Stack::start("together", |queries, db| {
        queries.with_change_feed(db).with_max_rows(3)
    })
    .await;
    let client = stack.client.clone();
    let tenant = Uuid::new_v4();
    let created = request(
        &client,
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Together"}),
        true,
    )
    .await;
    let seq = created["seq"].as_u64().expect("seq");
    // Five subscriptions a task event marks at once: every task (over the cap of 3 from the
    // fourth task on: one error answer), pages of 1 and 2 newest, the pending ones (page of
    // 2), and a count.
    let shapes = [
        json!({"tasks": {}}),
        json!({"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 1}}}),
        json!({"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 2}}}),
        json!({"tasks": {"$": {"where": {"status": "pending"}, "order": {"createdAt": "desc"}, "limit": 2}}}),
        json!({"tasks": {"$": {"aggregate": "count"}}}),
    ];
    let mut subscribed = Vec::new();
    for shape in &shapes {
        subscribed.push(subscribe(&client, tenant, shape.clone(), seq).await.1);
    }
    let mut newest = Vec::new();
    for n in 1..=5u64 {
        let seq = create_task(&client, tenant).await;
        let task = request(
            &client,
            &format!("talkwai.qry.{tenant}"),
            json!({"query": {"tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 1}}}, "minSeq": seq}),
            false,
        )
        .await["data"]["tasks"][0]["id"]
            .clone();
        newest.insert(0, task);
        // Each subscription's latest update reaching this task's seq says what it alone
        // would answer.
        for (k, updates) in subscribed.iter_mut().enumerate() {
            if k == 0 && n > 4 {
                // Past the cap it said so once; the same error is not published again.
                continue;
            }
            let body = update_reaching(updates, seq).await;
            match k {
                0 if n > 3 => {
                    assert_eq!(body["ok"], false, "{body}");
                    assert_eq!(body["error"]["code"], "too_many_rows", "{body}");
                }
                0 => assert_eq!(
                    body["data"]["tasks"].as_array().map(Vec::len),
                    Some(n as usize)
                ),
                1..=3 => {
                    let size = if k == 1 { 1 } else { 2 };
                    let ids: Vec<Value> = body["data"]["tasks"]
                        .as_array()
                        .expect("tasks")
                        .iter()
                        .map(|t| t["id"].clone())
                        .collect();
                    let want: Vec<Value> = newest.iter().take(size).cloned().collect();
                    assert_eq!(ids, want, "subscription {k} after {n} tasks: {body}");
                }
                _ => assert_eq!(body["data"]["tasks"]["count"], json!(n), "{body}"),
            }
        }
    }
}

/// The first update of `updates` whose `seq` reaches `seq` (earlier ones are skipped).
async fn update_reaching(updates: &mut async_nats::Subscriber, seq: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let update = tokio::time::timeout_at(deadline, updates.next())
            .await
            .unwrap_or_else(|_| panic!("no update reaching {seq} in time"))
            .expect("update");
        let body: Value = serde_json::from_slice(&update.payload).expect("json");
        if body["seq"].as_u64().is_some_and(|at| at >= seq) {
            return body;
        }
    }
}
