//! The services sign in to a nats-server running `deploy/nats/auth.conf` with the credentials
//! their `TALKWAI_NATS_URL` carries (`nats://<user>:<password>@host:port`, as compose and the
//! k8s secrets set it): the command service serves a command, the notifier opens its stream and
//! buckets. Before, the URL's credentials were ignored and the server refused them.

use std::time::Duration;

use async_nats::HeaderMap;
use talkwai_e2e::auth_config;
use talkwai_testkit::NatsServer;
use talkwai_testkit::wait::wait_for_endpoint_with_headers;
use uuid::Uuid;

const PLATFORM: &str = "platform-token-for-credential-tests";
const SECRET: &str = "jwt-secret-for-credential-tests";

fn url_as(server: &NatsServer, user: &str, password: &str) -> String {
    server
        .url()
        .replacen("nats://", &format!("nats://{user}:{password}@"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sign_in_with_the_credentials_in_their_nats_url() {
    let server = NatsServer::builder()
        .extra_config(auth_config())
        .start()
        .await
        .expect("nats-server with auth.conf");

    let config = talkwai_command_service::Config::for_tests(
        &url_as(&server, "command-service", "command-pw"),
        PLATFORM,
        SECRET,
    );
    let service = tokio::time::timeout(
        Duration::from_secs(30),
        talkwai_command_service::CommandService::build(config),
    )
    .await
    .expect("the command service signs in and opens the stream in time")
    .expect("the command service builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));

    let notifier = tokio::time::timeout(
        Duration::from_secs(30),
        talkwai_notifier::Notifier::build(talkwai_notifier::Config::for_tests(
            &url_as(&server, "notifier", "notifier-pw"),
            PLATFORM,
            SECRET,
        )),
    )
    .await
    .expect("the notifier signs in and opens its buckets in time");
    assert!(
        notifier.is_ok(),
        "the notifier builds: {:?}",
        notifier.err()
    );

    // An operator's command is served by the service that signed in as command-service.
    let operator =
        async_nats::ConnectOptions::with_user_and_password("operator".into(), "operator-pw".into())
            .connect(server.url())
            .await
            .expect("operator connects");
    let tenant = Uuid::new_v4();
    let mut headers = HeaderMap::new();
    headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
    headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
    let reply = wait_for_endpoint_with_headers(
        &operator,
        "talkwai.cmd.platform.tenant.create",
        headers,
        serde_json::to_vec(
            &serde_json::json!({"id": tenant, "name": "Acme", "domain": "acme.com"}),
        )
        .expect("json"),
    )
    .await
    .expect("the command service answers");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json reply");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["events"][0]["type"], "tenant.created");

    let _ = stop.send(());
    let _ = running.await;
}

/// The query service signs in as its own user (`query-service`, no JetStream): it serves
/// queries under that user's permissions, and its readiness asks NATS for nothing its user may
/// not do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_service_signs_in_as_its_own_user() {
    let server = NatsServer::builder()
        .extra_config(auth_config())
        .start()
        .await
        .expect("nats-server with auth.conf");
    // PostgreSQL is not needed to refuse a query without a token: nothing is read.
    let config = talkwai_query::Config::for_tests(
        &url_as(&server, "query-service", "query-pw"),
        "postgres://nobody@127.0.0.1:1/none",
        PLATFORM,
        SECRET,
    );
    let queries = tokio::time::timeout(
        Duration::from_secs(30),
        talkwai_query::QueryServer::build(config),
    )
    .await
    .expect("the query service signs in in time")
    .expect("the query service builds");
    let readiness = queries.readiness();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(queries.run(async {
        let _ = stopped.await;
    }));

    let operator =
        async_nats::ConnectOptions::with_user_and_password("operator".into(), "operator-pw".into())
            .connect(server.url())
            .await
            .expect("operator connects");
    let reply = wait_for_endpoint_with_headers(
        &operator,
        "talkwai.qry.platform",
        HeaderMap::new(),
        b"{\"tenants\": {}}".to_vec(),
    )
    .await
    .expect("the query service answers");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json reply");
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "unauthenticated", "{reply}");
    let checks = readiness.evaluate().await;
    let nats = checks
        .iter()
        .find(|c| c.name == "nats")
        .expect("a nats check");
    assert!(
        nats.ok,
        "connected as query-service (it answered): {checks:?}"
    );
    assert!(
        checks.iter().all(|c| c.name != "jetstream"),
        "no JetStream check for a service that never uses it: {checks:?}"
    );

    let _ = stop.send(());
    running
        .await
        .expect("the query task")
        .expect("the query service stops cleanly");
}
