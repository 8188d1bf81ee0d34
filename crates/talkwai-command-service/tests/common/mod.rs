//! Shared harness: a real nats-server, the command service in process, and a client.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::HeaderMap;
use serde_json::{Value, json};
use talkwai_auth::{Claims, PrincipalKind};
use talkwai_command_service::{CommandService, Config};
use talkwai_proto::{CommandAccepted, CommandReply, ErrorBody};
use talkwai_testkit::NatsServer;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const PLATFORM: &str = "platform-token-for-tests";
pub const SECRET: &str = "jwt-secret-for-tests";

/// A running command service (in this process) on a throw-away nats-server.
pub struct Harness {
    pub server: NatsServer,
    pub client: async_nats::Client,
    stops: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
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
        self.stops.push((tx, handle));
        self.wait_ready(self.stops.len()).await;
    }

    /// Waits until `n` instances answer `$SRV.PING.talkwai-command`.
    async fn wait_ready(&self, n: usize) {
        for _ in 0..200 {
            let inbox = self.client.new_inbox();
            let mut sub = self.client.subscribe(inbox.clone()).await.expect("sub");
            self.client
                .publish_with_reply("$SRV.PING.talkwai-command", inbox, "".into())
                .await
                .expect("ping");
            let mut seen = 0;
            while let Ok(Some(_)) = tokio::time::timeout(
                Duration::from_millis(100),
                futures::StreamExt::next(&mut sub),
            )
            .await
            {
                seen += 1;
            }
            if seen >= n {
                return;
            }
        }
        panic!("command service did not become ready");
    }

    /// Stops the oldest running instance (gracefully); the others keep serving.
    pub async fn stop_oldest(&mut self) {
        let (tx, handle) = self.stops.remove(0);
        let _ = tx.send(());
        let _ = handle.await;
    }

    pub async fn stop(self) {
        for (tx, handle) in self.stops {
            let _ = tx.send(());
            let _ = handle.await;
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
        let mut headers = HeaderMap::new();
        if let Some(id) = command_id {
            headers.insert("Talkwai-Command-Id", id.to_string().as_str());
        }
        if let Some(token) = token {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
        }
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            self.client
                .request_with_headers(subject.to_owned(), headers, body.into()),
        )
        .await
        .expect("reply in time")
        .expect("request");
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "reply is a CommandReply: {e}: {}",
                String::from_utf8_lossy(&reply.payload)
            )
        })
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

    pub async fn stream_head(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = js.get_stream("TALKWAI_EVENTS").await.expect("stream");
        stream.info().await.expect("info").state.last_sequence
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
                (
                    m.header("Talkwai-Event-Type")
                        .unwrap_or_default()
                        .to_owned(),
                    m.header("Talkwai-Command-Id")
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
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
