//! Shared harness: a real nats-server, the command service in this process, and a way to run
//! the built `talkwai` binary against them.

#![allow(dead_code)]

pub mod up;

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use talkwai_command_service::{CommandService, Config};
use talkwai_testkit::NatsServer;
use talkwai_testkit::services::ServiceTask;
use uuid::Uuid;

pub const PLATFORM: &str = "platform-token-for-cli-tests";
pub const SECRET: &str = "jwt-secret-for-cli-tests";

/// Every `TALKWAI_*` variable the binary reads, cleared so the caller's shell cannot leak in.
const TALKWAI_ENV: &[&str] = &[
    "TALKWAI_NATS_URL",
    "TALKWAI_TOKEN",
    "TALKWAI_JWT_SECRET",
    "TALKWAI_JWT_ISSUER",
    "TALKWAI_JWT_AUDIENCE",
    "TALKWAI_POSTGRES_URL",
    "TALKWAI_PLATFORM_TOKEN",
];

/// A `talkwai` command with a clean environment.
pub fn talkwai() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_talkwai"));
    for name in TALKWAI_ENV {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    command.kill_on_drop(true);
    command
}

/// Runs `talkwai <args>` with the environment variables `env` (and no others of its own),
/// waiting at most a minute.
pub async fn run_talkwai(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = talkwai();
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("talkwai {args:?} did not finish within 60s"))
        .unwrap_or_else(|e| panic!("cannot run talkwai {args:?}: {e}"));
    Run::from_output(args, output)
}

/// The outcome of one `talkwai` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(args: &[&str], output: Output) -> Self {
        let run = Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        eprintln!(
            "talkwai {} -> exit {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            run.code,
            run.stdout,
            run.stderr
        );
        run
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// A command service (in this process) on a throw-away nats-server.
pub struct Harness {
    pub server: NatsServer,
    pub client: async_nats::Client,
    stop: Option<ServiceTask>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with_keys(talkwai_keys::KeyArgs::default()).await
    }

    /// The command service with the master key `master` (base64): personal fields sealed.
    pub async fn start_sealed(master: &str) -> Self {
        Self::start_with_keys(talkwai_keys::KeyArgs::with_master(master)).await
    }

    async fn start_with_keys(keys: talkwai_keys::KeyArgs) -> Self {
        let server = NatsServer::start()
            .await
            .unwrap_or_else(|e| panic!("nats-server does not start: {e}"));
        let client = async_nats::connect(server.url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test nats-server: {e}"));
        let config = Config {
            keys,
            ..Config::for_tests(&server.url(), PLATFORM, SECRET)
        };
        let service = CommandService::build(config)
            .await
            .unwrap_or_else(|e| panic!("command service does not build: {e}"));
        let readiness = service.readiness();
        let task = ServiceTask::spawn(|shutdown| async move {
            service
                .run(shutdown)
                .await
                .unwrap_or_else(|e| panic!("command service failed: {e}"));
        });
        // Ready: every command endpoint is subscribed (the server confirmed it).
        talkwai_testkit::services::wait_ready(&readiness)
            .await
            .unwrap_or_else(|e| panic!("the command service never became ready: {e}"));
        Self {
            server,
            client,
            stop: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(task) = self.stop.take() {
            task.stop().await;
        }
    }

    /// Runs `talkwai <args>` against this harness's NATS, with extra environment variables.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let url = self.server.url();
        let mut all = vec![("TALKWAI_NATS_URL", url.as_str())];
        all.extend_from_slice(env);
        run_talkwai(args, &all).await
    }

    /// Runs `talkwai cmd <subject> <body>` with a token.
    pub async fn cmd(&self, subject: &str, body: &Value, token: &str) -> Run {
        let body = body.to_string();
        self.run(&["cmd", subject, &body], &[("TALKWAI_TOKEN", token)])
            .await
    }

    /// Sends a command and expects exit 0.
    pub async fn ok(&self, subject: &str, body: Value, token: &str) -> Value {
        let run = self.cmd(subject, &body, token).await;
        assert_eq!(
            run.code, 0,
            "{subject} {body} was not accepted: {}",
            run.stderr
        );
        run.json()
    }

    pub async fn stream_head(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = js
            .get_stream("TALKWAI_EVENTS")
            .await
            .unwrap_or_else(|e| panic!("event stream missing: {e}"));
        stream
            .info()
            .await
            .unwrap_or_else(|e| panic!("stream info: {e}"))
            .state
            .last_sequence
    }
}

pub fn member_token(user: Uuid, tenant: Uuid) -> String {
    talkwai_testkit::services::member_token(SECRET, user, tenant)
        .unwrap_or_else(|e| panic!("cannot mint a test token: {e}"))
}

/// A tenant with an owner member linked to a user, created through `talkwai cmd`.
pub struct World {
    pub tenant: Uuid,
    pub owner: Uuid,
    pub owner_token: String,
}

pub async fn world(h: &Harness) -> World {
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    let owner = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Acme Corp", "domain": "acme.com"}),
        PLATFORM,
    )
    .await;
    h.ok(
        "platform.user.create",
        json!({"id": user, "email": format!("owner-{user}@acme.com")}),
        PLATFORM,
    )
    .await;
    h.ok(
        &format!("{tenant}.member.create"),
        json!({"id": owner, "firstName": "Olive", "lastName": "Owner",
               "email": format!("olive-{owner}@acme.com"), "role": "owner", "user": user}),
        PLATFORM,
    )
    .await;
    World {
        tenant,
        owner,
        owner_token: member_token(user, tenant),
    }
}

/// A task body for the world's tenant.
pub fn task_body(id: Uuid) -> Value {
    json!({"id": id, "type": "call", "priority": "high", "fromAddress": "+15550001111",
           "toAddress": "+15550002222", "subject": "Renewal"})
}
