//! `talkwai up` as a child process: it starts its servers on free ports, seeds the demo once,
//! serves commands, stops on SIGTERM and finds its data again on the next start.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::up::{Up, secrets_json};
use talkwai_cli::demo;
use talkwai_eventstore::{EventStore, StreamSettings};
use uuid::Uuid;

async fn store(nats_url: &str) -> EventStore {
    let client = talkwai_cli::connect(nats_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}"));
    EventStore::open(client, &StreamSettings::default())
        .await
        .unwrap_or_else(|e| panic!("cannot open the event stream: {e}"))
}

/// What commands appended to the log (its head less the command service's own fences, which
/// each start and stop writes).
async fn command_head(nats_url: &str) -> u64 {
    let client = talkwai_cli::connect(nats_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}"));
    talkwai_testkit::services::command_head(&client)
        .await
        .unwrap_or_else(|e| panic!("head: {e}"))
}

/// Polls `talkwai.tasks` for the demo tenant until it holds `at_least` rows; returns their ids.
async fn wait_for_tasks(database_url: &str, at_least: usize) -> Vec<Uuid> {
    let (pg, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {database_url}: {e}"));
    tokio::spawn(connection);
    // The view appears when the projector has created its first generation.
    talkwai_testkit::wait::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            pg.query(
                "SELECT id FROM talkwai.tasks WHERE tenant_id = $1",
                &[&demo::TENANT],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, Uuid>(0))
                    .collect::<Vec<Uuid>>()
            })
            .unwrap_or_default()
        },
        |last| last.len() >= at_least,
    )
    .await
    .unwrap_or_else(|last| {
        panic!("talkwai.tasks never held {at_least} demo rows; last saw {last:?}")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_the_system_and_finds_its_data_again() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let data = parent.path().join("data");

    // First run: fresh data dir, demo seeded.
    let up = Up::start(&data, "first.log").await;
    assert!(
        up.says("seeded now"),
        "first run must seed:\n{}",
        up.banner.join("\n")
    );
    assert!(up.says("postgres://"), "the PostgreSQL URL must be printed");
    let nats_url = up.export("TALKWAI_NATS_URL");
    let token = up.export("TALKWAI_TOKEN");
    let secrets = data.join("secrets.json");
    let mode = std::fs::metadata(&secrets)
        .unwrap_or_else(|e| panic!("{} missing: {e}", secrets.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secrets.json must be private");
    // Sealing is on by default: a master key generated once into the data dir, private.
    let master_file = data.join("master.key");
    assert_eq!(
        up.export("TALKWAI_MASTER_KEY_FILE"),
        master_file.to_string_lossy(),
        "the banner exports the master key file"
    );
    let mode = std::fs::metadata(&master_file)
        .unwrap_or_else(|e| panic!("{} missing: {e}", master_file.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "master.key must be private");
    let master_key = std::fs::read_to_string(&master_file)
        .unwrap_or_else(|e| panic!("{}: {e}", master_file.display()));

    // Watch the demo tenant's taskUpdates room topic (as printed in the banner) before the
    // command, as a dashboard would.
    let updates_subject = format!("talkwai.room.tenant.{}.topic.taskUpdates", demo::TENANT);
    assert!(
        up.says(&updates_subject),
        "the banner must list the demo tenant's taskUpdates subject"
    );
    let watcher = talkwai_cli::connect(&nats_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}"));
    let mut updates = watcher
        .subscribe(updates_subject.clone())
        .await
        .unwrap_or_else(|e| panic!("cannot subscribe to {updates_subject}: {e}"));
    watcher
        .flush()
        .await
        .unwrap_or_else(|e| panic!("cannot flush the subscription: {e}"));

    // A command through NATS with the printed URL and token, by `talkwai cmd`.
    let task = Uuid::new_v4();
    let subject = format!("talkwai.cmd.{}.task.create", demo::TENANT);
    let body = common::task_body(task).to_string();
    let command_id = Uuid::new_v4().to_string();
    let args = [
        "cmd",
        subject.as_str(),
        body.as_str(),
        "--command-id",
        &command_id,
    ];
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", &nats_url)
        .env("TALKWAI_TOKEN", &token)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai cmd: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 0, "the printed token must work: {}", run.stderr);
    let created_seq = run.json()["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in the reply: {}", run.stdout));

    // The notifier in `talkwai up` publishes the task's update to the room.
    let update = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = futures::StreamExt::next(&mut updates).await {
            let body: serde_json::Value = serde_json::from_slice(&message.payload)
                .unwrap_or_else(|e| panic!("taskUpdates message is not JSON: {e}"));
            if body["taskId"] == task.to_string() {
                return body;
            }
        }
        panic!("the taskUpdates subscription ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no taskUpdates message for task {task} within 30s"));
    assert_eq!(update["action"], "created", "{update}");
    assert_eq!(update["status"], "pending", "{update}");
    assert_eq!(update["seq"], created_seq, "{update}");
    drop(updates);
    drop(watcher);

    // The projector runs in `talkwai up`: the demo tenant's tasks (and the one just created)
    // appear in the stable view, and `talkwai projections status` reads it without psql.
    let database_url = up.export("TALKWAI_DATABASE_URL");
    let tasks = wait_for_tasks(&database_url, demo::TASKS.len() + 1).await;
    for id in demo::TASKS.iter().chain([&task]) {
        assert!(
            tasks.contains(id),
            "task {id} missing from talkwai.tasks: {tasks:?}"
        );
    }
    let args = ["projections", "status", "--json"];
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", &nats_url)
        .env("TALKWAI_DATABASE_URL", &database_url)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai projections status: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 0, "projections status: {}", run.stderr);
    assert_eq!(run.json()[0]["state"], "live", "{}", run.stdout);

    // The query API runs in `talkwai up` too: the printed dashboard query, sent by
    // `talkwai query` with the printed token (tenant from its claims), reading its own write.
    assert!(
        up.says(&format!("talkwai rooms watch tenant {}", demo::TENANT)),
        "the banner must show how to watch the demo rooms"
    );
    assert!(
        up.says(&format!(
            "talkwai.room.tenant.{}.topic.taskUpdates",
            demo::TENANT
        )),
        "the banner must list the demo tenant's room subjects"
    );
    let query = up.quoted_after("talkwai query '");
    let min_seq = created_seq.to_string();
    let args = ["query", query.as_str(), "--min-seq", min_seq.as_str()];
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", &nats_url)
        .env("TALKWAI_TOKEN", &token)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai query: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 0, "the printed query must answer: {}", run.stderr);
    let answer = run.json();
    assert_eq!(answer["ok"], true, "{answer}");
    let tenant = &answer["data"]["tenants"][0];
    assert_eq!(tenant["name"], "Acme Corp", "{answer}");
    let queried: Vec<&str> = tenant["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {answer}"))
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    for id in demo::TASKS.iter().chain([&task]) {
        assert!(
            queried.contains(&id.to_string().as_str()),
            "task {id} missing from the query answer: {queried:?}"
        );
    }

    // The query service and the notifier's presence service answer the services API, and
    // `talkwai presence` reads the demo tenant's room.
    let client = talkwai_cli::connect(&nats_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}"));
    for service in ["talkwai-query", "talkwai-presence"] {
        let ping = client.request(format!("$SRV.PING.{service}"), bytes::Bytes::new());
        let pong = tokio::time::timeout(Duration::from_secs(5), ping).await;
        assert!(
            matches!(pong, Ok(Ok(_))),
            "{service} must answer $SRV.PING: {pong:?}"
        );
    }
    let tenant_arg = demo::TENANT.to_string();
    let args = ["presence", "tenant", tenant_arg.as_str(), "--json"];
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", &nats_url)
        .env("TALKWAI_TOKEN", &token)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai presence: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 0, "presence must answer: {}", run.stderr);
    assert_eq!(run.json()["ok"], true, "{}", run.stdout);
    drop(client);

    let events = store(&nats_url).await;
    let head = command_head(&nats_url).await;
    let demo_events = events
        .read_subject(&demo::tenant_subject(), 0)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(demo_events.len(), 1, "the demo tenant is created once");
    // The command's personal fields are sealed in the log (no clear subject in the payload).
    let created = events
        .read_subject(&format!("talkwai.evt.{}.task.{task}", demo::TENANT), 0)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let payload = String::from_utf8_lossy(&created[0].payload).into_owned();
    assert!(
        payload.contains("\"enc\":\"v2\"") && !payload.contains("Renewal"),
        "sealed by default: {payload}"
    );
    drop(events);
    up.terminate().await;

    // Second run on the same dir: same data, nothing seeded again.
    let up = Up::start(&data, "second.log").await;
    assert!(
        up.says("already seeded"),
        "second run must not seed:\n{}",
        up.banner.join("\n")
    );
    assert!(
        up.says("found from an earlier run"),
        "secrets must be reused"
    );
    assert!(
        up.says("reused from an earlier run"),
        "the master key must be reused:\n{}",
        up.banner.join("\n")
    );
    assert_eq!(
        std::fs::read_to_string(&master_file).unwrap_or_else(|e| panic!("master.key: {e}")),
        master_key,
        "the master key file is never rewritten"
    );
    let events = store(&up.export("TALKWAI_NATS_URL")).await;
    assert_eq!(
        command_head(&up.export("TALKWAI_NATS_URL")).await,
        head,
        "the second start must not append anything"
    );
    let task_subject = format!("talkwai.evt.{}.task.{task}", demo::TENANT);
    let history = events
        .read_subject(&task_subject, 0)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(history.len(), 1, "the earlier command's event is kept");
    assert_eq!(
        history[0].header("Talkwai-Command-Id"),
        Some(command_id.as_str())
    );
    // The token printed by the first run still works against the second.
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", up.export("TALKWAI_NATS_URL"))
        .env("TALKWAI_TOKEN", &token)
        .args([
            "cmd",
            &format!("{}.task.start", demo::TENANT),
            &format!("{{\"id\":\"{task}\"}}"),
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai cmd: {e}"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "the reused JWT secret must accept the earlier token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The first run's sealed fields read in clear with the printed master key file.
    let tenant_arg = demo::TENANT.to_string();
    let target = format!("task/{task}");
    let args = [
        "events",
        "show",
        target.as_str(),
        "--tenant",
        &tenant_arg,
        "--json",
    ];
    let output = up
        .cli()
        .env("TALKWAI_NATS_URL", up.export("TALKWAI_NATS_URL"))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai events show: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 0, "events show: {}", run.stderr);
    assert_eq!(
        run.json()["events"][0]["data"]["subject"],
        "Renewal",
        "{}",
        run.stdout
    );
    drop(events);
    up.terminate().await;
}

/// The value after `label` on the banner line starting with `talkwai up: <label>`.
fn banner_value(up: &Up, label: &str) -> String {
    let prefix = format!("talkwai up: {label}");
    up.banner
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", up.banner.join("\n")))
}

/// Connects with `options` to `url`, or says why not (no retries: a refusal is final).
async fn try_connect(
    options: async_nats::ConnectOptions,
    url: &str,
) -> Result<async_nats::Client, String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        options
            .connection_timeout(Duration::from_secs(5))
            .connect(url),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// A member token's NATS sign-in: the token, and its own reply-inbox prefix.
fn member_login(token: &str, user: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_token(token.to_owned())
        .custom_inbox_prefix(format!("_INBOX.{user}"))
}

/// Subscribes and proves the subscription is in place with a probe from `prober` (which must
/// be allowed to publish there).
async fn subscribed(
    client: &async_nats::Client,
    prober: &async_nats::Client,
    subject: &str,
) -> async_nats::Subscriber {
    let mut sub = client
        .subscribe(subject.to_owned())
        .await
        .unwrap_or_else(|e| panic!("subscribe {subject}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        prober
            .publish(subject.to_owned(), "probe".into())
            .await
            .unwrap_or_else(|e| panic!("probe {subject}: {e}"));
        match tokio::time::timeout(
            Duration::from_millis(200),
            futures::StreamExt::next(&mut sub),
        )
        .await
        {
            Ok(Some(m)) if m.payload == "probe" => return sub,
            _ if std::time::Instant::now() < deadline => {}
            other => panic!("the probe on {subject} never arrived: {other:?}"),
        }
    }
}

/// Nothing but late probes of [`subscribed`] arrives on `sub` within half a second (a probe
/// repeated while the first was still in flight can land after the subscription was proven).
async fn silent(sub: &mut async_nats::Subscriber, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        match tokio::time::timeout_at(deadline, futures::StreamExt::next(sub)).await {
            Err(_) => return,
            Ok(Some(m)) if m.payload == "probe" => {}
            got => panic!("{what} must not get through: {got:?}"),
        }
    }
}

/// A member token signs in to NATS at `url` and its `task.create` in tenant `tenant` is
/// accepted.
async fn signs_in_and_creates_a_task(
    token: &str,
    user: &str,
    url: &str,
    tenant: impl std::fmt::Display,
    what: &str,
) {
    let client = try_connect(member_login(token, user), url)
        .await
        .unwrap_or_else(|e| panic!("the {what} token signs in to NATS: {e}"));
    let reply = command(
        &client,
        format!("talkwai.cmd.{tenant}.task.create"),
        token,
        common::task_body(Uuid::new_v4()),
    )
    .await
    .unwrap_or_else(|e| panic!("the {what} token's command gets a reply: {e}"));
    assert_eq!(reply["ok"], true, "{reply}");
}

/// A command request with a bearer token; the reply's JSON, or why there was none.
async fn command(
    client: &async_nats::Client,
    subject: String,
    token: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
    let request = client.request_with_headers(subject, headers, body.to_string().into());
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload).map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no reply".into()),
    }
}

/// A `talkwai up` with a WebSocket listener, and what the NATS tests read from its banner.
struct Listening {
    /// Holds the data dir (removed on drop).
    _parent: tempfile::TempDir,
    /// `up`'s data dir.
    data: std::path::PathBuf,
    up: Up,
    /// The operator's URL (with its password).
    nats_url: String,
    /// The demo owner's member token.
    token: String,
    ws_url: String,
    /// The client port, without credentials.
    tcp_url: String,
    /// A connection as the operator.
    operator: async_nats::Client,
}

impl Listening {
    async fn start(log_name: &str) -> Self {
        let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let data = parent.path().join("data");
        let up = Up::start_with(&data, log_name, &["--ws-port", "0"]).await;
        let nats_url = up.export("TALKWAI_NATS_URL");
        let token = up.export("TALKWAI_TOKEN");
        let ws_url = banner_value(&up, "websocket");
        let plain = talkwai_cli::plain_servers(&nats_url);
        let tcp_url = plain[0].clone();
        assert!(!tcp_url.contains('@'), "{tcp_url}");
        let operator = talkwai_cli::connect(&nats_url)
            .await
            .unwrap_or_else(|e| panic!("the printed operator URL connects: {e}"));
        Self {
            _parent: parent,
            data,
            up,
            nats_url,
            token,
            ws_url,
            tcp_url,
            operator,
        }
    }
}

/// Item 4 of issue 15: `up` runs production's NATS users and permissions. Anonymous and
/// forged-token clients are refused on TCP and WebSocket; a tenant-A token is fenced to tenant
/// A (no tenant B room, commands or events, no JetStream), while its own room and commands work.
/// Item 5: `token mint --member` resolves the member's `$users` link from the log.
#[tokio::test(flavor = "multi_thread")]
async fn up_fences_nats_like_production_and_mints_member_tokens() {
    let Listening {
        _parent,
        data,
        up,
        nats_url,
        token,
        ws_url,
        tcp_url,
        operator,
    } = Listening::start("fence.log").await;

    // Anonymous and forged: refused on both listeners.
    let forged = talkwai_cli::token::mint(
        &talkwai_cli::token::TokenSpec {
            kind: talkwai_auth::PrincipalKind::Member,
            sub: demo::OWNER_USER,
            tenant: Some(demo::TENANT),
            role: None,
            ttl: Duration::from_secs(600),
            issuer: None,
            audience: None,
        },
        &secrecy::SecretString::from("not-the-secret"),
    )
    .unwrap_or_else(|e| panic!("mint: {e}"));
    for url in [&tcp_url, &ws_url] {
        let anonymous = try_connect(async_nats::ConnectOptions::new(), url).await;
        assert!(
            anonymous.is_err(),
            "an anonymous client on {url} must be refused"
        );
        let wrong_password = try_connect(
            async_nats::ConnectOptions::with_user_and_password("operator".into(), "guess".into()),
            url,
        )
        .await;
        assert!(
            wrong_password.is_err(),
            "a wrong password on {url} must be refused"
        );
        let forged = try_connect(async_nats::ConnectOptions::with_token(forged.clone()), url).await;
        assert!(forged.is_err(), "a forged token on {url} must be refused");
    }

    let a = demo::TENANT;
    let b = Uuid::new_v4();
    let js = async_nats::jetstream::new(operator.clone());
    let head = |js: async_nats::jetstream::Context| async move {
        js.get_stream("TALKWAI_EVENTS")
            .await
            .unwrap_or_else(|e| panic!("stream: {e}"))
            .info()
            .await
            .unwrap_or_else(|e| panic!("info: {e}"))
            .state
            .last_sequence
    };
    for url in [&tcp_url, &ws_url] {
        let owner_user = demo::OWNER_USER.to_string();
        let tenant = try_connect(member_login(&token, &owner_user), url)
            .await
            .unwrap_or_else(|e| panic!("a tenant token on {url} connects: {e}"));

        // Reading: its own room arrives; B's room, B's commands, events and B's live queries
        // do not.
        let mut own = subscribed(
            &tenant,
            &operator,
            &format!("talkwai.room.tenant.{a}.topic.taskUpdates"),
        )
        .await;
        let mut foreign = Vec::new();
        for subject in [
            format!("talkwai.room.tenant.{b}.topic.taskUpdates"),
            format!("talkwai.room.tenant.{b}.presence.events"),
            format!("talkwai.cmd.{b}.task.create"),
            format!("talkwai.evt.{b}.task.{}", Uuid::new_v4()),
            format!("talkwai.qry.{b}.live.x"),
        ] {
            let sub = tenant
                .subscribe(subject.clone())
                .await
                .unwrap_or_else(|e| panic!("subscribe: {e}"));
            foreign.push((subject, sub));
        }
        let mut all_events = tenant
            .subscribe("talkwai.evt.>")
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        // Other clients' replies (command replies carry events, query replies data).
        let mut all_inboxes = tenant
            .subscribe("_INBOX.>")
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        // Let the server answer the subscriptions (or refuse them) before publishing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (subject, _) in &foreign {
            operator
                .publish(subject.clone(), "secret".into())
                .await
                .unwrap_or_else(|e| panic!("publish: {e}"));
        }
        operator
            .publish(format!("_INBOX.{}.reply", Uuid::new_v4()), "secret".into())
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        operator
            .publish(
                format!("talkwai.room.tenant.{a}.topic.taskUpdates"),
                "mine".into(),
            )
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        let mine =
            tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut own))
                .await
                .unwrap_or_else(|_| panic!("the own room delivers on {url}"));
        assert_eq!(mine.map(|m| m.payload), Some("mine".into()));
        for (subject, sub) in &mut foreign {
            silent(sub, &format!("{subject} to a tenant-A client on {url}")).await;
        }
        silent(
            &mut all_events,
            &format!("talkwai.evt.> to a tenant-A client on {url}"),
        )
        .await;
        silent(
            &mut all_inboxes,
            &format!("another client's inbox to a tenant-A client on {url}"),
        )
        .await;

        // Writing: nothing into B's room or commands, no forged events, no JetStream.
        let mut b_room = subscribed(
            &operator,
            &operator,
            &format!("talkwai.room.tenant.{b}.topic.taskUpdates"),
        )
        .await;
        let mut b_commands = subscribed(
            &operator,
            &operator,
            &format!("talkwai.cmd.{b}.task.create"),
        )
        .await;
        let before = head(js.clone()).await;
        tenant
            .publish(
                format!("talkwai.room.tenant.{b}.topic.taskUpdates"),
                r#"{"taskId":"forged","action":"completed"}"#.into(),
            )
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        tenant
            .publish(format!("talkwai.cmd.{b}.task.create"), "{}".into())
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        tenant
            .publish(
                format!("talkwai.evt.{a}.task.{}", Uuid::new_v4()),
                "{}".into(),
            )
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        silent(
            &mut b_room,
            &format!("a tenant-A publish into B's room on {url}"),
        )
        .await;
        silent(
            &mut b_commands,
            &format!("a tenant-A command to B on {url}"),
        )
        .await;
        let info = tenant.request("$JS.API.STREAM.INFO.TALKWAI_EVENTS", "".into());
        assert!(
            !matches!(
                tokio::time::timeout(Duration::from_secs(2), info).await,
                Ok(Ok(_))
            ),
            "no JetStream API for a tenant client on {url}"
        );
        assert_eq!(
            head(js.clone()).await,
            before,
            "no event appended through {url}"
        );
        let refused = command(
            &tenant,
            format!("talkwai.cmd.{b}.task.create"),
            &token,
            common::task_body(Uuid::new_v4()),
        )
        .await;
        assert!(
            refused.is_err(),
            "a command to tenant B gets no reply on {url}: {refused:?}"
        );

        // Its own commands work (replies come back through its inbox).
        let reply = command(
            &tenant,
            format!("talkwai.cmd.{a}.task.create"),
            &token,
            common::task_body(Uuid::new_v4()),
        )
        .await
        .unwrap_or_else(|e| panic!("an own command on {url} gets a reply: {e}"));
        assert_eq!(reply["ok"], true, "{reply}");
    }

    // Item 5: one step from a member id to a working token.
    let secret = secrets_json(&data)["jwtSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("no jwtSecret"))
        .to_owned();
    let owner = demo::OWNER.to_string();
    let args = ["token", "mint", "--member", owner.as_str()];
    // The member's history is sealed (`up` seals by default): the printed master key file
    // opens it.
    let output = up
        .cli()
        .env("TALKWAI_NATS_URL", &nats_url)
        .env("TALKWAI_JWT_SECRET", &secret)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai token mint: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(run.code, 0, "token mint --member: {}", run.stderr);
    let minted = run.stdout.trim().to_owned();
    let verifier = talkwai_auth::TokenVerifier::new(
        None,
        Some(secrecy::SecretString::from(secret.clone())),
        None,
        None,
    );
    match verifier.verify(&minted) {
        Ok(talkwai_auth::Principal::User(claims)) => {
            assert_eq!(
                claims.sub.0,
                demo::OWNER_USER,
                "sub is the member's $users link"
            );
            assert_eq!(claims.tenant.map(|t| t.0), Some(demo::TENANT));
            assert_eq!(claims.role.as_deref(), Some("owner"));
        }
        other => panic!("the minted token does not verify: {other:?}"),
    }
    signs_in_and_creates_a_task(
        &minted,
        &demo::OWNER_USER.to_string(),
        &tcp_url,
        a,
        "minted",
    )
    .await;

    // A member without a `$users` link, and one that does not exist: clear refusals.
    let manager = demo::MANAGER.to_string();
    for (member, expected) in [(manager.as_str(), "no $users link"), (owner.as_str(), "")] {
        let tenant_b = b.to_string();
        let mut args = vec!["token", "mint", "--member", member];
        if expected.is_empty() {
            args.extend(["--tenant", tenant_b.as_str()]);
        }
        let output = up
            .cli()
            .env("TALKWAI_NATS_URL", &nats_url)
            .env("TALKWAI_JWT_SECRET", &secret)
            .args(&args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run talkwai token mint: {e}"));
        let run = common::Run::from_output(&args, output);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "no token printed: {}", run.stdout);
        let expected = if expected.is_empty() {
            "has no events in tenant"
        } else {
            expected
        };
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }

    // `member invite`: identity, member and token in one go; the token acts at once.
    let platform = secrets_json(&data)["platformToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no platformToken"))
        .to_owned();
    let tenant_a = a.to_string();
    let env = [
        ("TALKWAI_NATS_URL", nats_url.as_str()),
        ("TALKWAI_JWT_SECRET", secret.as_str()),
        ("TALKWAI_TOKEN", platform.as_str()),
    ];
    let (args, run) = run_invite(&up, &env, &tenant_a, "ivy@acme.com", "Ivy", "manager").await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(run.code, 0, "member invite: {}", run.stderr);
    let invited = run.json();
    let invited_token = invited["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {invited}"))
        .to_owned();
    match verifier.verify(&invited_token) {
        Ok(talkwai_auth::Principal::User(claims)) => {
            assert_eq!(claims.sub.0.to_string(), invited["user"], "{invited}");
            assert_eq!(claims.role.as_deref(), Some("manager"));
        }
        other => panic!("the invite's token does not verify: {other:?}"),
    }
    signs_in_and_creates_a_task(
        &invited_token,
        invited["user"].as_str().unwrap_or_default(),
        &ws_url,
        a,
        "invited (over WebSocket)",
    )
    .await;
    // The same email again: refused (the identity's email is taken), exit 1.
    let output = common::talkwai()
        .env("TALKWAI_NATS_URL", &nats_url)
        .env("TALKWAI_JWT_SECRET", &secret)
        .env("TALKWAI_TOKEN", &platform)
        .args(&args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai member invite: {e}"));
    let run = common::Run::from_output(&args, output);
    assert_eq!(
        run.code, 1,
        "a second invite of the same email: {}",
        run.stderr
    );
    assert!(run.stderr.contains("already_exists"), "{}", run.stderr);

    drop(operator);
    up.terminate().await;
}

/// `talkwai member invite` of `name` (`email`, `role`) into `tenant`, with `env`: its
/// arguments and what it did.
async fn run_invite(
    up: &Up,
    env: &[(&str, &str)],
    tenant: &str,
    email: &str,
    name: &str,
    role: &str,
) -> (Vec<String>, common::Run) {
    let args: Vec<String> = [
        "member",
        "invite",
        "--tenant",
        tenant,
        "--email",
        email,
        "--first-name",
        name,
        "--last-name",
        "Invited",
        "--role",
        role,
    ]
    .map(str::to_owned)
    .into();
    let output = up
        .cli()
        .envs(env.iter().copied())
        .args(&args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run talkwai member invite: {e}"));
    let run =
        common::Run::from_output(&args.iter().map(String::as_str).collect::<Vec<_>>(), output);
    (args, run)
}

/// A new member `name` (role `user`) invited into `tenant`: (member id, `$users` id, token).
async fn invite(
    up: &Up,
    env: &[(&str, &str)],
    tenant: &str,
    name: &str,
) -> (String, String, String) {
    let email = format!(
        "{}-{}@acme.com",
        name.to_lowercase(),
        Uuid::new_v4().simple()
    );
    let (_, run) = run_invite(up, env, tenant, &email, name, "user").await;
    assert_eq!(run.code, 0, "member invite {name}: {}", run.stderr);
    let invited = run.json();
    let field = |key: &str| {
        invited[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {invited}"))
            .to_owned()
    };
    (field("member"), field("user"), field("token"))
}

/// Issue 20, "a member who was erased can no longer sign in", for rooms: `up`'s auth callout
/// refuses a token whose member the log says is erased or inactive (their room topics are plain
/// NATS), lets a reactivated one in again, and keeps letting in the other members of the
/// tenant and an admin never linked to an admin entity (dev tokens).
#[tokio::test(flavor = "multi_thread")]
async fn up_refuses_the_tokens_of_erased_and_inactive_members() {
    let Listening {
        _parent,
        data,
        up,
        nats_url,
        token: owner_token,
        ws_url,
        tcp_url,
        operator,
    } = Listening::start("callout.log").await;
    let secrets = secrets_json(&data);
    let text = |key: &str| {
        secrets[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in secrets.json"))
            .to_owned()
    };
    let (secret, platform) = (text("jwtSecret"), text("platformToken"));
    let a = demo::TENANT.to_string();
    let env = [
        ("TALKWAI_NATS_URL", nats_url.as_str()),
        ("TALKWAI_JWT_SECRET", secret.as_str()),
        ("TALKWAI_TOKEN", platform.as_str()),
    ];
    let (erin, erin_user, erin_token) = invite(&up, &env, &a, "Erin").await;
    let (ivy, ivy_user, ivy_token) = invite(&up, &env, &a, "Ivy").await;
    let topic = format!("talkwai.room.tenant.{a}.topic.taskActivity");
    let member_command = |action: &str, body: serde_json::Value| {
        let subject = format!("talkwai.cmd.{a}.member.{action}");
        let (operator, platform) = (operator.clone(), platform.clone());
        async move {
            let reply = command(&operator, subject.clone(), &platform, body)
                .await
                .unwrap_or_else(|e| panic!("{subject} gets a reply: {e}"));
            assert_eq!(reply["ok"], true, "{subject}: {reply}");
        }
    };
    // Signs in with `token` at `url` and proves a subscription to the tenant's room topic.
    let room_reader = |token: String, user: String, url: String| {
        let (operator, topic) = (operator.clone(), topic.clone());
        async move {
            let client = try_connect(member_login(&token, &user), &url)
                .await
                .unwrap_or_else(|e| panic!("{user} signs in at {url}: {e}"));
            drop(subscribed(&client, &operator, &topic).await);
        }
    };
    let refused = |token: String, user: String, url: String| async move {
        let refused = try_connect(member_login(&token, &user), &url).await;
        assert!(refused.is_err(), "{user} at {url} must be refused");
    };

    // Both sign in and read the room while they are active members (their verdicts cached).
    for url in [&tcp_url, &ws_url] {
        room_reader(erin_token.clone(), erin_user.clone(), url.clone()).await;
        room_reader(ivy_token.clone(), ivy_user.clone(), url.clone()).await;
    }

    member_command("erase", serde_json::json!({"id": erin})).await;
    member_command(
        "setStatus",
        serde_json::json!({"id": ivy, "status": "inactive"}),
    )
    .await;
    for url in [&tcp_url, &ws_url] {
        refused(erin_token.clone(), erin_user.clone(), url.clone()).await;
        refused(ivy_token.clone(), ivy_user.clone(), url.clone()).await;
    }
    // The callout says why (nats-server tells the client only "authorization violation").
    let log = std::fs::read_to_string(&up.log).unwrap_or_else(|e| panic!("up's log: {e}"));
    for reason in [
        talkwai_domain::policy::ERASED_ACTOR,
        "forbidden: member is inactive",
    ] {
        assert!(log.contains(reason), "the callout logs {reason:?}:\n{log}");
    }

    // The other members of the tenant still sign in and read the room, Ivy again once active.
    member_command(
        "setStatus",
        serde_json::json!({"id": ivy, "status": "active"}),
    )
    .await;
    for url in [&tcp_url, &ws_url] {
        room_reader(ivy_token.clone(), ivy_user.clone(), url.clone()).await;
        room_reader(
            owner_token.clone(),
            demo::OWNER_USER.to_string(),
            url.clone(),
        )
        .await;
    }
    // An admin token whose user was never linked to an admin (as `up`'s demo admin) gets in.
    let admin_token = talkwai_cli::token::mint(
        &talkwai_cli::token::TokenSpec {
            kind: talkwai_auth::PrincipalKind::Admin,
            sub: Uuid::new_v4(),
            tenant: None,
            role: Some("support".into()),
            ttl: Duration::from_secs(600),
            issuer: None,
            audience: None,
        },
        &secrecy::SecretString::from(secret.clone()),
    )
    .unwrap_or_else(|e| panic!("mint: {e}"));
    let admin = try_connect(
        async_nats::ConnectOptions::with_token(admin_token),
        &tcp_url,
    )
    .await
    .unwrap_or_else(|e| panic!("a never-linked admin signs in: {e}"));
    drop(subscribed(&admin, &operator, &topic).await);

    drop((admin, operator));
    up.terminate().await;
}

/// Item 7 of issue 15: `kill -9` of `up` takes its servers with it, and the next `up` on the
/// same data dir is ready with the same data (the demo not seeded again).
#[tokio::test(flavor = "multi_thread")]
async fn up_comes_back_after_sigkill() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let data = parent.path().join("data");
    let mut up = Up::start(&data, "killed.log").await;
    assert!(up.says("seeded now"));
    let nats_url = up.export("TALKWAI_NATS_URL");
    let head = command_head(&nats_url).await;
    let nats_pid: u32 = std::fs::read_to_string(data.join("nats/nats-server.pid"))
        .unwrap_or_else(|e| panic!("nats pid file: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("nats pid: {e}"));
    let postmaster = std::fs::read_to_string(data.join("postgres/postmaster.pid"))
        .unwrap_or_else(|e| panic!("postmaster.pid: {e}"));
    let pg_pid: u32 = postmaster
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("postmaster.pid: {postmaster}"));
    assert!(talkwai_cli::guard::alive(nats_pid) && talkwai_cli::guard::alive(pg_pid));

    up.child
        .start_kill()
        .unwrap_or_else(|e| panic!("SIGKILL talkwai up: {e}"));
    let _ = up.child.wait().await;
    drop(up);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (talkwai_cli::guard::alive(nats_pid) || talkwai_cli::guard::alive(pg_pid))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !talkwai_cli::guard::alive(nats_pid),
        "nats-server must die with talkwai up"
    );
    assert!(
        !talkwai_cli::guard::alive(pg_pid),
        "postgresql must die with talkwai up"
    );

    let up = Up::start(&data, "after-kill.log").await;
    assert!(
        up.says("already seeded"),
        "the restart must find the demo and not seed it again:\n{}",
        up.banner.join("\n")
    );
    let events = store(&up.export("TALKWAI_NATS_URL")).await;
    assert_eq!(
        command_head(&up.export("TALKWAI_NATS_URL")).await,
        head,
        "same log, nothing appended"
    );
    let database_url = up.export("TALKWAI_DATABASE_URL");
    let tasks = wait_for_tasks(&database_url, demo::TASKS.len()).await;
    assert_eq!(
        tasks.len(),
        demo::TASKS.len(),
        "same read models: {tasks:?}"
    );
    drop(events);
    up.terminate().await;
}

/// Item 7: a server left running by a killed `up` (here: started by hand on the data dir,
/// without a guardian) is recognised by its pid file and stopped, and `up` starts.
#[tokio::test(flavor = "multi_thread")]
async fn up_stops_leftover_servers_of_its_data_dir() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let data = parent.path().join("data");
    // A first run creates the data dir, then its servers are left behind: `up` killed while
    // its guardians were killed too (SIGKILL to the whole process group).
    let mut up = Up::start(&data, "first.log").await;
    let up_pid = up.child.id().unwrap_or_else(|| panic!("pid"));
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("kill -9 $(pgrep -f talkwai-up-guardian -P {up_pid}) {up_pid}"),
        ])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success());
    let _ = up.child.wait().await;
    drop(up);
    let postmaster = std::fs::read_to_string(data.join("postgres/postmaster.pid"))
        .unwrap_or_else(|e| panic!("postmaster.pid must be left behind: {e}"));
    let pg_pid: u32 = postmaster
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("postmaster.pid: {postmaster}"));
    assert!(
        talkwai_cli::guard::alive(pg_pid),
        "the leftover postmaster still runs"
    );
    let nats_pid: u32 = std::fs::read_to_string(data.join("nats/nats-server.pid"))
        .unwrap_or_else(|e| panic!("the nats pid file must be left behind: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("nats pid: {e}"));
    assert!(
        talkwai_cli::guard::alive(nats_pid),
        "the leftover nats-server still runs"
    );

    let up = Up::start(&data, "second.log").await;
    assert!(up.says("already seeded"), "{}", up.banner.join("\n"));
    assert!(
        !talkwai_cli::guard::alive(pg_pid),
        "the leftover postmaster was stopped"
    );
    assert!(
        !talkwai_cli::guard::alive(nats_pid),
        "the leftover nats-server was stopped"
    );
    up.terminate().await;
}
