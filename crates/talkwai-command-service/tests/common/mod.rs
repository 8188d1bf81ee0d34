//! Shared harness: a real nats-server, the command service in process, and a client. The
//! generic parts (service tasks, waits, command requests, tokens) are `talkwai_testkit`'s.

#![allow(dead_code)]

use serde_json::{Value, json};
use talkwai_command_service::{CommandService, Config};
use talkwai_proto::{CommandAccepted, CommandReply, ErrorBody};
use talkwai_testkit::NatsServer;
use talkwai_testkit::services::{COMMAND_TIMEOUT, ServiceTask, send_command};
use talkwai_testkit::wait;
use uuid::Uuid;

pub const PLATFORM: &str = "platform-token-for-tests";
pub const SECRET: &str = "jwt-secret-for-tests";

/// A running command service (in this process) on a throw-away nats-server.
pub struct Harness {
    pub server: NatsServer,
    pub client: async_nats::Client,
    stops: Vec<ServiceTask>,
}

/// Starts a command service built from `config` in this process and returns once it serves:
/// its readiness (endpoints subscribed, confirmed by the server) passes and a real command
/// endpoint answers `client` (a typed refusal of an empty, unauthenticated request).
pub async fn spawn_command_service(client: &async_nats::Client, config: Config) -> ServiceTask {
    let service = CommandService::build(config).await.expect("service builds");
    let readiness = service.readiness();
    let task = ServiceTask::spawn(|shutdown| async move {
        service.run(shutdown).await.expect("service runs");
    });
    talkwai_testkit::services::wait_ready(&readiness)
        .await
        .unwrap_or_else(|e| panic!("command service did not become ready: {e}"));
    let subject = probe_subject();
    let reply = wait::wait_for_endpoint(client, &subject, "")
        .await
        .unwrap_or_else(|e| panic!("{subject} never answered: {e}"));
    let reply: CommandReply = serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
        panic!(
            "the probe's reply is a CommandReply: {e}: {}",
            String::from_utf8_lossy(&reply.payload)
        )
    });
    assert!(
        reply.into_result().is_err(),
        "an empty unauthenticated command is refused"
    );
    task
}

/// The subject of the endpoint the service subscribes last (so the others are subscribed when
/// it answers on the same connection); the probe is refused without side effects.
pub fn probe_subject() -> String {
    talkwai_testkit::services::command_probe_subject()
}

/// A command-service *binary* (a real process, for kill and pause tests) on `url`, signing in
/// commands with `platform`, named `name`, with `env` on top; killed when dropped.
pub fn spawn_process(
    url: &str,
    name: &str,
    platform: &str,
    env: &[(&str, String)],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_talkwai-command-service"))
        .env("TALKWAI_NATS_URL", url)
        .env("TALKWAI_PLATFORM_TOKEN", platform)
        .env("TALKWAI_JWT_SECRET", "process-secret")
        .env("TALKWAI_INSTANCE", name)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the command service binary")
}

/// Waits until a real command endpoint of a service process answers (`$SRV.PING` answers
/// before the endpoints are subscribed).
pub async fn wait_process_ready(client: &async_nats::Client) {
    let subject = probe_subject();
    wait::wait_for_endpoint(client, &subject, "")
        .await
        .unwrap_or_else(|e| panic!("command service did not become ready: {e}"));
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_instances(1).await
    }

    pub async fn start_instances(n: usize) -> Self {
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut harness = Self {
            server,
            client,
            stops: Vec::new(),
        };
        for i in 0..n {
            harness.add_instance(&format!("command-{i}")).await;
        }
        harness
    }

    pub async fn add_instance(&mut self, name: &str) {
        let mut config = Config::for_tests(&self.server.url(), PLATFORM, SECRET);
        config.instance = name.to_owned();
        let task = spawn_command_service(&self.client, config).await;
        self.stops.push(task);
        let n = self.stops.len();
        wait::wait_for_instances(&self.client, "talkwai-command", n)
            .await
            .unwrap_or_else(|e| panic!("{n} command instances do not answer $SRV.PING: {e}"));
    }

    /// Stops the oldest running instance (gracefully); the others keep serving.
    pub async fn stop_oldest(&mut self) {
        self.stops.remove(0).stop().await;
    }

    pub async fn stop(self) {
        for task in self.stops {
            task.stop().await;
        }
    }

    /// Sends a command with a fresh command id.
    pub async fn send(&self, subject: &str, body: Value, token: Option<&str>) -> CommandReply {
        self.send_with_id(subject, body, token, Uuid::new_v4())
            .await
    }

    pub async fn send_with_id(
        &self,
        subject: &str,
        body: Value,
        token: Option<&str>,
        command_id: Uuid,
    ) -> CommandReply {
        self.send_raw(
            subject,
            serde_json::to_vec(&body).expect("json"),
            token,
            Some(command_id),
        )
        .await
    }

    pub async fn send_raw(
        &self,
        subject: &str,
        body: Vec<u8>,
        token: Option<&str>,
        command_id: Option<Uuid>,
    ) -> CommandReply {
        send_command(
            &self.client,
            subject,
            body,
            token,
            command_id,
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends and expects acceptance.
    pub async fn ok(&self, subject: &str, body: Value, token: Option<&str>) -> CommandAccepted {
        match self.send(subject, body.clone(), token).await.into_result() {
            Ok(accepted) => accepted,
            Err(error) => panic!("{subject} {body} was refused: {error:?}"),
        }
    }

    /// Sends and expects a rejection.
    pub async fn err(&self, subject: &str, body: Value, token: Option<&str>) -> ErrorBody {
        match self.send(subject, body.clone(), token).await.into_result() {
            Ok(accepted) => panic!("{subject} {body} was accepted: {accepted:?}"),
            Err(error) => error,
        }
    }

    /// How many messages commands appended so far (the head less the instances' fences).
    pub async fn stream_head(&self) -> u64 {
        talkwai_testkit::services::command_head(&self.client)
            .await
            .unwrap_or_else(|e| panic!("head: {e}"))
    }

    /// Every message of one subject: (event type, command id).
    pub async fn history(&self, subject: &str) -> Vec<(String, String)> {
        let js = async_nats::jetstream::new(self.client.clone());
        let store = talkwai_eventstore::EventStore::open(self.client.clone(), &Default::default())
            .await
            .expect("store");
        let _ = js;
        store
            .read_subject(subject, 0)
            .await
            .expect("read")
            .into_iter()
            .map(|m| {
                let meta = talkwai_proto::EventMeta::from_headers(|name| m.header(name));
                (
                    meta.event_type.unwrap_or_default(),
                    meta.command_id.map(|id| id.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }
}

pub fn member_token(user: Uuid, tenant: Uuid) -> String {
    talkwai_testkit::services::member_token(SECRET, user, tenant).expect("mint")
}

pub fn admin_token(user: Uuid) -> String {
    talkwai_testkit::services::admin_token(SECRET, user).expect("mint")
}

/// A tenant with an owner member linked to a user, ready for member-token commands.
pub struct World {
    pub tenant: Uuid,
    pub owner_user: Uuid,
    pub owner: Uuid,
    pub owner_token: String,
}

pub async fn world(h: &Harness) -> World {
    let tenant = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.tenant.create",
        json!({"id": tenant, "name": "Acme Corp", "domain": "acme.com"}),
        Some(PLATFORM),
    )
    .await;
    let owner_user = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.user.create",
        json!({"id": owner_user, "email": format!("owner-{owner_user}@acme.com")}),
        Some(PLATFORM),
    )
    .await;
    let owner = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{tenant}.member.create"),
        json!({"id": owner, "firstName": "Olive", "lastName": "Owner",
               "email": format!("olive-{owner}@acme.com"), "role": "owner", "user": owner_user}),
        Some(PLATFORM),
    )
    .await;
    World {
        tenant,
        owner_user,
        owner,
        owner_token: member_token(owner_user, tenant),
    }
}
