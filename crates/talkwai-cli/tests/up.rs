//! `talkwai up` as a child process: it starts its servers on free ports, seeds the demo once,
//! serves commands, stops on SIGTERM and finds its data again on the next start.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use talkwai_cli::demo;
use talkwai_cli::up::READY_LINE;
use talkwai_eventstore::{EventStore, StreamSettings};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use uuid::Uuid;

/// A running `talkwai up`.
struct Up {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// What it printed up to its ready line.
    banner: Vec<String>,
    log: std::path::PathBuf,
}

impl Up {
    async fn start(data: &Path, log_name: &str) -> Self {
        let log = data.with_file_name(log_name);
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let data_arg = data.to_string_lossy().into_owned();
        let mut child = common::talkwai()
            .args([
                "up",
                "--data-dir",
                &data_arg,
                "--nats-port",
                "0",
                "--postgres-port",
                "0",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start talkwai up: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("talkwai up has no stdout pipe"));
        let mut up = Self {
            child,
            stdout: BufReader::new(stdout).lines(),
            banner: Vec::new(),
            log,
        };
        let ready = tokio::time::timeout(Duration::from_secs(180), async {
            while let Ok(Some(line)) = up.stdout.next_line().await {
                let done = line.starts_with(READY_LINE);
                up.banner.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            panic!(
                "talkwai up did not print {READY_LINE:?} (timed out: {}); stdout:\n{}\nstderr:\n{}",
                ready.is_err(),
                up.banner.join("\n"),
                std::fs::read_to_string(&up.log).unwrap_or_default()
            );
        }
        up
    }

    /// The value of `export NAME=<value>` in the banner.
    fn export(&self, name: &str) -> String {
        let prefix = format!("export {name}=");
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.banner.join("\n")))
    }

    /// The single-quoted text after `start` on the banner line holding it
    /// (`talkwai query '<json>'` gives the JSON).
    fn quoted_after(&self, start: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| {
                let rest = &l[l.find(start)? + start.len()..];
                Some(rest[..rest.find('\'')?].to_owned())
            })
            .unwrap_or_else(|| panic!("no `{start}...'` in:\n{}", self.banner.join("\n")))
    }

    fn says(&self, text: &str) -> bool {
        self.banner.iter().any(|l| l.contains(text))
    }

    /// SIGTERM, then waits for a clean exit and the "stopped" line.
    async fn terminate(mut self) {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("talkwai up already exited"));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -TERM {pid} failed");
        let mut rest = Vec::new();
        let exited = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                rest.push(line);
            }
            self.child.wait().await
        })
        .await;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match exited {
            Ok(Ok(status)) => assert!(
                status.success(),
                "talkwai up exited with {status} after SIGTERM; stderr:\n{log}"
            ),
            Ok(Err(e)) => panic!("waiting for talkwai up: {e}"),
            Err(_) => panic!("talkwai up did not stop within 90s of SIGTERM; stderr:\n{log}"),
        }
        assert!(
            rest.iter().any(|l| l.contains("stopped; data kept")),
            "no stop line after SIGTERM: {rest:?}"
        );
    }
}

async fn store(nats_url: &str) -> EventStore {
    let client = async_nats::connect(nats_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}"));
    EventStore::open(client, &StreamSettings::default())
        .await
        .unwrap_or_else(|e| panic!("cannot open the event stream: {e}"))
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

    // Watch the demo tenant's taskUpdates room topic (as printed in the banner) before the
    // command, as a dashboard would.
    let updates_subject = format!("talkwai.room.tenant.{}.topic.taskUpdates", demo::TENANT);
    assert!(
        up.says(&updates_subject),
        "the banner must list the demo tenant's taskUpdates subject"
    );
    let watcher = async_nats::connect(&nats_url)
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
    let client = async_nats::connect(&nats_url)
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
    let head = events
        .last_sequence()
        .await
        .unwrap_or_else(|e| panic!("stream head: {e}"));
    let demo_events = events
        .read_subject(&demo::tenant_subject(), 0)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(demo_events.len(), 1, "the demo tenant is created once");
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
    let events = store(&up.export("TALKWAI_NATS_URL")).await;
    assert_eq!(
        events
            .last_sequence()
            .await
            .unwrap_or_else(|e| panic!("head: {e}")),
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
    drop(events);
    up.terminate().await;
}
