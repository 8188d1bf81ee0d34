//! Shared harness: a real nats-server, the command service and the notifier in process.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_auth::{Claims, PrincipalKind};
use talkwai_command_service::{CommandService, Config as CommandConfig};
use talkwai_notifier::{Config, Notifier};
use talkwai_proto::CommandAccepted;
use talkwai_testkit::NatsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const PLATFORM: &str = "platform-token-for-tests";
pub const SECRET: &str = "jwt-secret-for-tests";

pub struct Harness {
    pub server: NatsServer,
    pub client: async_nats::Client,
    commands: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
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
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            service
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("service runs");
        });
        self.commands.push((tx, handle));
        for _ in 0..100 {
            if self.ping("talkwai-command").await >= self.commands.len() {
                return;
            }
        }
        panic!("command service did not become ready");
    }

    /// Stops the last command instance added.
    pub async fn stop_command_instance(&mut self) {
        let (tx, handle) = self.commands.pop().expect("an instance");
        let _ = tx.send(());
        let _ = handle.await;
    }

    /// How many instances of a service answer `$SRV.PING`.
    pub async fn ping(&self, service: &str) -> usize {
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(inbox.clone()).await.expect("sub");
        self.client
            .publish_with_reply(format!("$SRV.PING.{service}"), inbox, "".into())
            .await
            .expect("ping");
        let mut seen = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            seen += 1;
        }
        seen
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
        for _ in 0..100 {
            if self.ping("talkwai-presence").await >= 1 {
                return handle;
            }
        }
        panic!("notifier did not become ready");
    }

    /// Sends a command and expects acceptance.
    pub async fn ok(&self, subject: &str, body: Value, token: &str) -> CommandAccepted {
        let mut headers = HeaderMap::new();
        headers.insert("Talkwai-Command-Id", Uuid::new_v4().to_string().as_str());
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            self.client.request_with_headers(
                subject.to_owned(),
                headers,
                serde_json::to_vec(&body).expect("json").into(),
            ),
        )
        .await
        .expect("reply in time")
        .expect("request");
        let reply: talkwai_proto::CommandReply =
            serde_json::from_slice(&reply.payload).expect("a command reply");
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
    token(user, PrincipalKind::Member, Some(tenant))
}

pub fn admin_token(user: Uuid) -> String {
    token(user, PrincipalKind::Admin, None)
}

fn token(user: Uuid, kind: PrincipalKind, tenant: Option<Uuid>) -> String {
    let claims = Claims {
        sub: user.into(),
        kind,
        tenant: tenant.map(Into::into),
        role: None,
        exp: talkwai_auth::now_secs() + 3600,
        nbf: None,
        iss: None,
        aud: None,
    };
    talkwai_auth::mint(&claims, &secrecy::SecretString::from(SECRET)).expect("mint")
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

/// A member linked to a fresh user: (member id, user id).
pub async fn member(h: &Harness, tenant: Uuid, role: &str) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    h.ok(
        "talkwai.cmd.platform.user.create",
        json!({"id": user, "email": format!("u-{user}@example.com")}),
        PLATFORM,
    )
    .await;
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
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(message)) => out.push(serde_json::from_slice(&message.payload).expect("json")),
            _ => break,
        }
    }
    out
}
