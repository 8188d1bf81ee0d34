//! Shared harness: a real nats-server, the command service and the notifier in process. The
//! generic parts (service tasks, waits, command requests, tokens) are `talkwai_testkit`'s.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt as _;
use serde_json::{Value, json};
use talkwai_command_service::{CommandService, Config as CommandConfig};
use talkwai_notifier::{Config, Notifier};
use talkwai_proto::CommandAccepted;
use talkwai_testkit::NatsServer;
use talkwai_testkit::services::{COMMAND_TIMEOUT, ServiceTask, send_command};
use talkwai_testkit::wait;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const PLATFORM: &str = "platform-token-for-tests";
pub const SECRET: &str = "jwt-secret-for-tests";

pub struct Harness {
    pub server: NatsServer,
    pub client: async_nats::Client,
    commands: Vec<ServiceTask>,
}

/// Waits until the presence endpoints serve `client`: `$SRV.PING.talkwai-presence` answers and
/// a request on the endpoint the notifier subscribes last (`get`) gets a reply (a typed
/// refusal of an unauthenticated request), not "no responders".
pub async fn wait_presence_ready(client: &async_nats::Client) {
    wait::wait_for_instances(client, "talkwai-presence", 1)
        .await
        .unwrap_or_else(|e| panic!("notifier did not become ready: {e}"));
    let op = talkwai_notifier::presence::OPS
        .last()
        .expect("presence ops");
    let subject = format!("talkwai.room.probe.probe.presence.{op}");
    wait::wait_for_endpoint(client, &subject, "")
        .await
        .unwrap_or_else(|e| panic!("{subject} never answered: {e}"));
}

impl Harness {
    pub async fn start() -> Self {
        let server = NatsServer::start().await.expect("nats-server starts");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut h = Self {
            server,
            client,
            commands: Vec::new(),
        };
        h.add_command_instance("command-0").await;
        h
    }

    pub async fn add_command_instance(&mut self, name: &str) {
        let mut config = CommandConfig::for_tests(&self.server.url(), PLATFORM, SECRET);
        config.instance = name.to_owned();
        let service = CommandService::build(config).await.expect("service builds");
        let readiness = service.readiness();
        self.commands
            .push(ServiceTask::spawn(|shutdown| async move {
                service.run(shutdown).await.expect("service runs");
            }));
        talkwai_testkit::services::wait_ready(&readiness)
            .await
            .unwrap_or_else(|e| panic!("command service did not become ready: {e}"));
        let n = self.commands.len();
        wait::wait_for_instances(&self.client, "talkwai-command", n)
            .await
            .unwrap_or_else(|e| panic!("command service did not become ready: {e}"));
    }

    /// Stops the last command instance added.
    pub async fn stop_command_instance(&mut self) {
        self.commands.pop().expect("an instance").stop().await;
    }

    /// How many instances of a service answer `$SRV.PING`.
    pub async fn ping(&self, service: &str) -> usize {
        wait::ping_count(&self.client, service).await.expect("ping")
    }

    pub fn notifier_config(&self) -> Config {
        Config::for_tests(&self.server.url(), PLATFORM, SECRET)
    }

    /// Starts a notifier in this process; abort the handle to kill it.
    pub async fn start_notifier(&self, config: Config) -> JoinHandle<()> {
        let notifier = Notifier::build(config).await.expect("notifier builds");
        let handle = tokio::spawn(async move {
            notifier
                .run(std::future::pending())
                .await
                .expect("notifier runs");
        });
        wait_presence_ready(&self.client).await;
        handle
    }

    /// Sends a command and expects acceptance.
    pub async fn ok(&self, subject: &str, body: Value, token: &str) -> CommandAccepted {
        let reply = send_command(
            &self.client,
            subject,
            serde_json::to_vec(&body).expect("json"),
            Some(token),
            Some(Uuid::new_v4()),
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        match reply.into_result() {
            Ok(accepted) => accepted,
            Err(error) => panic!("{subject} {body} was refused: {error:?}"),
        }
    }

    /// A presence request.
    pub async fn presence(&self, subject: &str, body: Value, token: &str) -> Value {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request_with_headers(
                subject.to_owned(),
                headers,
                serde_json::to_vec(&body).expect("json").into(),
            ),
        )
        .await
        .expect("presence reply in time")
        .expect("presence request");
        serde_json::from_slice(&reply.payload).expect("json reply")
    }
}

pub fn member_token(user: Uuid, tenant: Uuid) -> String {
    talkwai_testkit::services::member_token(SECRET, user, tenant).expect("mint")
}

pub fn admin_token(user: Uuid) -> String {
    talkwai_testkit::services::admin_token(SECRET, user).expect("mint")
}

/// A tenant with an owner member linked to a user.
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
        json!({"id": tenant, "name": "Acme Corp"}),
        PLATFORM,
    )
    .await;
    let (owner, owner_user) = member(h, tenant, "owner").await;
    World {
        tenant,
        owner_user,
        owner,
        owner_token: member_token(owner_user, tenant),
    }
}

/// A fresh `$users` identity.
pub async fn user(h: &Harness) -> Uuid {
    let user = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": format!("u-{user}@example.com")}),
        PLATFORM,
    )
    .await;
    user
}

/// A member linked to a fresh user: (member id, user id).
pub async fn member(h: &Harness, tenant: Uuid, role: &str) -> (Uuid, Uuid) {
    let user = user(h).await;
    let member = Uuid::new_v4();
    h.ok(
        &format!("talkwai.cmd.{tenant}.member.create"),
        json!({"id": member, "firstName": "Mia", "lastName": "Member",
               "email": format!("m-{member}@example.com"), "role": role, "user": user}),
        PLATFORM,
    )
    .await;
    (member, user)
}

/// Receives JSON messages until `n` arrived or `timeout` passed.
pub async fn collect(sub: &mut async_nats::Subscriber, n: usize, timeout: Duration) -> Vec<Value> {
    wait::collect(sub, n, timeout)
        .await
        .into_iter()
        .map(|message| serde_json::from_slice(&message.payload).expect("json"))
        .collect()
}

/// Room messages as a client takes them: per subject, a message whose `seq` is not above the
/// last one taken is a repeat and dropped (the rule of README "Delivery").
pub struct Rooms {
    sub: async_nats::Subscriber,
    last: HashMap<String, u64>,
    taken: HashMap<String, Vec<(u64, Value)>>,
    /// Messages dropped as repeats.
    pub repeats: usize,
    /// Repeats whose body differs from the message taken with that `seq` (must stay 0).
    pub different: usize,
    count: usize,
}

impl Rooms {
    /// Subscribes to `subjects` (a wildcard may cover many rooms).
    pub async fn subscribe(client: &async_nats::Client, subjects: &str) -> Self {
        Self {
            sub: client
                .subscribe(subjects.to_owned())
                .await
                .expect("subscribe"),
            last: HashMap::new(),
            taken: HashMap::new(),
            repeats: 0,
            different: 0,
            count: 0,
        }
    }

    /// Receives until `total` messages were taken or `within` passed.
    pub async fn take_until(&mut self, total: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.count < total {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.sub.next()).await else {
                return;
            };
            let Ok(value) = serde_json::from_slice::<Value>(&message.payload) else {
                continue;
            };
            let Some(seq) = value["seq"].as_u64() else {
                continue;
            };
            let subject = message.subject.to_string();
            let last = self.last.entry(subject.clone()).or_insert(0);
            let taken = self.taken.entry(subject).or_default();
            if seq <= *last {
                self.repeats += 1;
                if taken.iter().any(|(s, v)| *s == seq && *v != value) {
                    self.different += 1;
                }
                continue;
            }
            *last = seq;
            taken.push((seq, value));
            self.count += 1;
        }
    }

    /// What was taken on `subject`, in arrival order.
    pub fn taken(&self, subject: &str) -> &[(u64, Value)] {
        self.taken.get(subject).map_or(&[], Vec::as_slice)
    }
}
