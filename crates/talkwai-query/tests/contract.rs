//! The query API against the wire contract, with real servers: every reply the query service
//! sends (answers, refusals, subscriptions, live updates, control replies) validates against
//! its schema in `proto/schemas/query/`, reads back into the `talkwai_proto::query` types, and
//! travels on a subject of an AsyncAPI channel.

use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use jsonschema::Validator;
use serde_json::{Value, json};
use talkwai_auth::TokenVerifier;
use talkwai_command_service::CommandService;
use talkwai_projector::Projector;
use talkwai_proto::asyncapi::channel_for;
use talkwai_proto::query::{LiveControlReply, LiveUpdate, QueryReply, SubscribeReply};
use talkwai_query::QueryService;
use talkwai_testkit::{NatsServer, Postgres};
use uuid::Uuid;

const PLATFORM: &str = "platform-token-contract-tests";

fn validator(name: &str) -> Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../proto/schemas/query")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

/// Validates `instance` against the schema `name` and reads it into `T`.
fn conforms<T: serde::de::DeserializeOwned>(name: &str, instance: &Value) -> T {
    let errors: Vec<String> = validator(name)
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "a real {name} does not validate:\n  {}\ninstance: {instance}",
        errors.join("\n  ")
    );
    serde_json::from_value(instance.clone())
        .unwrap_or_else(|e| panic!("a real {name} does not read into its Rust type: {e}"))
}

async fn request(client: &async_nats::Client, subject: &str, body: Value, command: bool) -> Value {
    assert!(
        channel_for(subject).is_some(),
        "{subject} is not a channel of proto/asyncapi.yaml"
    );
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

async fn create_task(client: &async_nats::Client, tenant: Uuid) -> u64 {
    let reply = request(
        client,
        &format!("talkwai.cmd.{tenant}.task.create"),
        json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111",
               "toAddress": "+15550002222", "subject": "Renewal"}),
        true,
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply["seq"].as_u64().expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_query_replies_and_live_messages_follow_the_contract() {
    let nats = NatsServer::start().await.expect("nats");
    let pg = Postgres::start().await.expect("pg");
    let db = pg.create_unique_database("contract").await.expect("db");
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
    let queries = QueryService::new(pool, verifier);
    let qc = client.clone();
    tokio::spawn(async move { queries.run(qc, std::future::pending()).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let query = client.request("$SRV.PING.talkwai-query", "".into()).await;
        let command = client.request("$SRV.PING.talkwai-command", "".into()).await;
        if query.is_ok() && command.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "services did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tenant = Uuid::new_v4();
    let created = request(
        &client,
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Contract"}),
        true,
    )
    .await;
    assert_eq!(created["ok"], true, "{created}");
    let mut seq = 0;
    for _ in 0..3 {
        seq = create_task(&client, tenant).await;
    }

    // Answers: the seed's dashboard query (with nested cursor paging, so rows carry
    // `$pageInfo`), a count, the wrapped form with minSeq, on the tenant and platform subjects.
    let dashboard = json!({"tenants": {"$": {"where": {"id": tenant}},
        "members": {"$": {"where": {"status": "active"}}},
        "agents": {},
        "tasks": {"$": {"order": {"createdAt": "desc"}, "first": 2}, "agent": {}, "assignedTo": {}}}});
    let bodies = [
        json!({"query": dashboard, "minSeq": seq}),
        json!({"tasks": {"$": {"order": {"createdAt": "desc"}, "first": 2}, "tenant": {}}}),
        json!({"tasks": {"$": {"aggregate": "count"}}, "agents": {"$": {"limit": 1, "offset": 1}}}),
    ];
    let mut answered = 0;
    for body in &bodies {
        for scope in [tenant.to_string(), "platform".to_owned()] {
            let reply = request(
                &client,
                &format!("talkwai.qry.{scope}"),
                body.clone(),
                false,
            )
            .await;
            assert_eq!(reply["ok"], true, "{reply}");
            conforms::<QueryReply>("QueryReply", &reply);
            answered += 1;
        }
    }
    assert_eq!(answered, 6);
    let nested = request(
        &client,
        &format!("talkwai.qry.{tenant}"),
        json!({"query": dashboard, "minSeq": seq}),
        false,
    )
    .await;
    assert!(
        nested["data"]["tenants"][0]["$pageInfo"]["tasks"].is_object(),
        "the sample exercises nested page facts: {nested}"
    );

    // Refusals: a bad query, a bad body, a missing token.
    for body in [
        json!({"tasks": {"$": {"where": {"colour": "red"}}}}),
        json!({"query": {"tasks": {}}, "minSeq": "soon"}),
        json!([]),
    ] {
        let reply = request(&client, &format!("talkwai.qry.{tenant}"), body, false).await;
        assert_eq!(reply["ok"], false, "{reply}");
        conforms::<QueryReply>("QueryReply", &reply);
    }
    let anonymous = client
        .request(format!("talkwai.qry.{tenant}"), "{\"tasks\": {}}".into())
        .await
        .expect("reply");
    let anonymous: Value = serde_json::from_slice(&anonymous.payload).expect("json");
    assert_eq!(anonymous["error"]["code"], "unauthenticated");
    conforms::<QueryReply>("QueryReply", &anonymous);

    // A live query: the subscribe reply, an update, the control replies.
    let subscribed = request(
        &client,
        &format!("talkwai.qry.{tenant}.subscribe"),
        json!({"tasks": {"$": {"order": {"createdAt": "desc"}, "first": 10}, "agent": {}}}),
        false,
    )
    .await;
    let SubscribeReply::Subscribed { subscribed, .. } =
        conforms::<SubscribeReply>("SubscribeReply", &subscribed)
    else {
        panic!("subscription refused: {subscribed}");
    };
    assert_eq!(channel_for(&subscribed.subject), Some("qry.live"));
    assert_eq!(channel_for(&subscribed.control), Some("qry.live.control"));
    let mut updates = client
        .subscribe(subscribed.subject.clone())
        .await
        .expect("subscribe to updates");
    let written = create_task(&client, tenant).await;
    let update = tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update in time")
        .expect("update");
    let update: Value = serde_json::from_slice(&update.payload).expect("json");
    let LiveUpdate::Answer(update) = conforms::<LiveUpdate>("LiveUpdate", &update) else {
        panic!("an answer, not a refusal: {update}");
    };
    assert_eq!(update.subscription, subscribed.subscription);
    assert!(update.seq >= written);

    let refused = request(&client, &subscribed.control, json!({"op": "pause"}), false).await;
    assert_eq!(refused["ok"], false, "{refused}");
    conforms::<LiveControlReply>("LiveControlReply", &refused);
    for op in ["renew", "unsubscribe"] {
        let reply = request(&client, &subscribed.control, json!({ "op": op }), false).await;
        assert_eq!(reply["ok"], true, "{op}: {reply}");
        conforms::<LiveControlReply>("LiveControlReply", &reply);
    }
    let refused = request(
        &client,
        &format!("talkwai.qry.{tenant}.subscribe"),
        json!({"tasks": {"$": {"limit": 5000}}}),
        false,
    )
    .await;
    assert_eq!(refused["ok"], false, "{refused}");
    conforms::<SubscribeReply>("SubscribeReply", &refused);
}
