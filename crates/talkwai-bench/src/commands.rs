//! Commands through the real command service, in this process, on the bench's nats-server:
//! create-task with 1, 64 and 512 callers, start then complete with 64, and the same load
//! with the group commit off and with other writer settings.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use bytes::Bytes;
use secrecy::SecretString;
use talkwai_auth::{Claims, PrincipalKind};
use talkwai_command_service::{CommandService, Config};
use talkwai_proto::{CommandAccepted, CommandReply, headers};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::drive::{self, Budget, Op};
use crate::payload::create_task_command;
use crate::report::Row;

/// The platform token of the in-process service.
pub const PLATFORM: &str = "bench-platform-token";
/// The JWT secret of the in-process service.
pub const SECRET: &str = "bench-jwt-secret";
/// How long a caller waits for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The writer settings of one service instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `Config::group_commit`.
    pub group_commit: bool,
    /// `Config::writes_in_flight`.
    pub writes_in_flight: usize,
    /// `Config::partitions` (0: no ownership, every command reads its heads).
    pub partitions: u32,
    /// Personal fields sealed with a master key (`Config::keys`; off: written in clear).
    pub sealed: bool,
}

impl ServiceSettings {
    /// The label used in scenario names.
    pub fn label(self) -> String {
        let sealed = if self.sealed { " sealed=true" } else { "" };
        format!(
            "group_commit={} writes_in_flight={} partitions={}{sealed}",
            self.group_commit, self.writes_in_flight, self.partitions
        )
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        let config = Config::for_tests("", "", "");
        Self {
            group_commit: config.group_commit,
            writes_in_flight: config.writes_in_flight,
            partitions: config.partitions,
            sealed: false,
        }
    }
}

/// A command service running in this process.
pub struct RunningService {
    /// How full its writes are.
    pub groups: Arc<talkwai_eventstore::GroupStats>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Builds and starts an instance with `settings`, and waits until it answers pings.
    pub async fn start(
        url: &str,
        client: &async_nats::Client,
        settings: ServiceSettings,
    ) -> anyhow::Result<Self> {
        let mut config = Config::for_tests(url, PLATFORM, SECRET);
        config.group_commit = settings.group_commit;
        config.writes_in_flight = settings.writes_in_flight;
        config.partitions = settings.partitions;
        if settings.sealed {
            // One master key per process: instances started one after another share the key
            // bucket, whose tenant keys the first one wrapped.
            static MASTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let master = MASTER.get_or_init(|| talkwai_keys::MasterKey::generate().1);
            config.keys = talkwai_keys::KeyArgs::with_master(master);
        }
        // The production default, so every task of a run stays cached like in production.
        config.cache_capacity = 100_000;
        config.instance = format!("bench-{}", Uuid::new_v4().simple());
        let service = CommandService::build(config)
            .await
            .context("building the command service")?;
        let groups = service.group_stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .map_err(anyhow::Error::from)
        });
        wait_ready(client).await?;
        Ok(Self { groups, stop, task })
    }

    /// Runs `measure` and notes the mean number of commands per durable write it caused.
    pub async fn with_groups(&self, measure: impl Future<Output = Row>) -> Row {
        let (writes, requests) = self.groups.snapshot();
        let row = measure.await;
        let (writes_after, requests_after) = self.groups.snapshot();
        let writes = writes_after.saturating_sub(writes);
        if writes == 0 {
            return row;
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = requests_after.saturating_sub(requests) as f64 / writes as f64;
        row.remark(format!("{mean:.1} commands per write"))
    }

    /// Stops taking commands and waits for the instance to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("command service task")?
    }
}

/// Waits until a command service lists every command endpoint in `$SRV.INFO` (the service answers
/// pings before its endpoints are all registered).
pub async fn wait_ready(client: &async_nats::Client) -> anyhow::Result<()> {
    let expected: usize = talkwai_domain::ACTIONS.iter().map(|(_, a)| a.len()).sum();
    let subject = format!("$SRV.INFO.{}", talkwai_command_service::SERVICE_NAME);
    for _ in 0..200 {
        let reply = tokio::time::timeout(
            Duration::from_millis(500),
            client.request(subject.clone(), Bytes::new()),
        )
        .await;
        if let Ok(Ok(reply)) = reply {
            let info: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            let endpoints = info
                .get("endpoints")
                .and_then(|e| e.as_array())
                .map_or(0, Vec::len);
            if endpoints >= expected {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the command service did not register its endpoints")
}

/// A tenant with an owner member linked to a user, and the member's token.
#[derive(Debug, Clone)]
pub struct World {
    /// The tenant.
    pub tenant: Uuid,
    /// `Authorization` header value of the owner.
    pub bearer: Arc<str>,
}

/// Creates the tenant, the user and the owner member with the platform token.
pub async fn world(client: &async_nats::Client) -> anyhow::Result<World> {
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    let member = Uuid::new_v4();
    let platform = format!("Bearer {PLATFORM}");
    let setup = [
        (
            "talkwai.cmd.platform.tenant.create".to_owned(),
            serde_json::json!({"id": tenant, "name": "Bench Corp", "domain": "bench.example"}),
        ),
        (
            "talkwai.cmd.platform.user.create".to_owned(),
            serde_json::json!({"id": user, "email": format!("owner-{user}@bench.example")}),
        ),
        (
            format!("talkwai.cmd.{tenant}.member.create"),
            serde_json::json!({"id": member, "firstName": "Olive", "lastName": "Owner",
                "email": format!("olive-{member}@bench.example"), "role": "owner", "user": user}),
        ),
    ];
    for (subject, body) in setup {
        send(
            client,
            subject.clone(),
            Bytes::from(serde_json::to_vec(&body)?),
            &platform,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{subject}: {e}"))?;
    }
    let claims = Claims {
        sub: user.into(),
        kind: PrincipalKind::Member,
        tenant: Some(tenant.into()),
        role: None,
        exp: talkwai_auth::now_secs() + 24 * 3600,
        nbf: None,
        iss: None,
        aud: None,
    };
    let token = talkwai_auth::mint(&claims, &SecretString::from(SECRET))
        .map_err(|e| anyhow::anyhow!("minting the member token: {e}"))?;
    Ok(World {
        tenant,
        bearer: Arc::from(format!("Bearer {token}")),
    })
}

/// Sends one command with a fresh command id; `Ok` only when it was accepted.
pub async fn send(
    client: &async_nats::Client,
    subject: String,
    body: Bytes,
    bearer: &str,
) -> Result<CommandAccepted, String> {
    let mut map = HeaderMap::new();
    map.insert(headers::COMMAND_ID, Uuid::new_v4().to_string().as_str());
    map.insert(headers::AUTHORIZATION, bearer);
    let reply = tokio::time::timeout(
        REPLY_TIMEOUT,
        client.request_with_headers(subject, map, body),
    )
    .await
    .map_err(|_| "no reply in time".to_owned())?
    .map_err(|e| e.to_string())?;
    let reply: CommandReply = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
    reply
        .into_result()
        .map_err(|e| format!("{}: {}", e.code, e.message))
}

/// Create-task commands (a new task each) from `callers` concurrent callers.
pub async fn create_tasks(
    client: &async_nats::Client,
    world: &World,
    callers: usize,
    budget: Budget,
    settings: ServiceSettings,
    group: &str,
) -> Row {
    let measured = drive::run(callers, budget, create_op(client, world)).await;
    let scenario = if settings == ServiceSettings::default() {
        "create-task".to_owned()
    } else {
        format!("create-task, {}", settings.label())
    };
    Row::new(group, &scenario, callers, "command", &measured).note(settings.label())
}

/// One create-task command for a new task, accepted or not.
pub fn create_op(client: &async_nats::Client, world: &World) -> Op {
    let client = client.clone();
    let subject: Arc<str> = Arc::from(format!("talkwai.cmd.{}.task.create", world.tenant));
    let bearer = Arc::clone(&world.bearer);
    Arc::new(move |_, _| {
        let client = client.clone();
        let subject = subject.to_string();
        let bearer = Arc::clone(&bearer);
        Box::pin(async move {
            send(
                &client,
                subject,
                create_task_command(Uuid::new_v4()),
                &bearer,
            )
            .await
            .map(|_| ())
        })
    })
}

/// Creates `per_caller` tasks for each of `callers` callers (not measured), then each caller
/// starts and completes its own tasks: `start t1, complete t1, start t2...`.
pub async fn start_complete(
    client: &async_nats::Client,
    world: &World,
    callers: usize,
    per_caller: u64,
    settings: ServiceSettings,
) -> anyhow::Result<Row> {
    let tasks: Arc<Vec<Vec<Uuid>>> = Arc::new(
        (0..callers)
            .map(|_| (0..per_caller).map(|_| Uuid::new_v4()).collect())
            .collect(),
    );
    let create_subject: Arc<str> = Arc::from(format!("talkwai.cmd.{}.task.create", world.tenant));
    let bearer = Arc::clone(&world.bearer);
    let prepare: Op = {
        let client = client.clone();
        let tasks = Arc::clone(&tasks);
        let subject = Arc::clone(&create_subject);
        let bearer = Arc::clone(&bearer);
        Arc::new(move |caller, index| {
            let client = client.clone();
            let task = tasks[caller][usize::try_from(index).unwrap_or(usize::MAX)];
            let subject = subject.to_string();
            let bearer = Arc::clone(&bearer);
            Box::pin(async move {
                send(&client, subject, create_task_command(task), &bearer)
                    .await
                    .map(|_| ())
            })
        })
    };
    let prepared = drive::run(
        callers,
        Budget::per_caller(per_caller, Duration::from_secs(600)),
        prepare,
    )
    .await;
    if prepared.errors > 0 {
        bail!(
            "creating the tasks to start and complete failed {} times: {:?}",
            prepared.errors,
            prepared.first_error
        );
    }
    let tenant = world.tenant;
    let transition: Op = {
        let client = client.clone();
        let tasks = Arc::clone(&tasks);
        Arc::new(move |caller, index| {
            let client = client.clone();
            let task = tasks[caller][usize::try_from(index / 2).unwrap_or(usize::MAX)];
            let action = if index % 2 == 0 { "start" } else { "complete" };
            let subject = format!("talkwai.cmd.{tenant}.task.{action}");
            let bearer = Arc::clone(&bearer);
            Box::pin(async move {
                let body = Bytes::from(
                    serde_json::to_vec(&serde_json::json!({"id": task})).unwrap_or_default(),
                );
                send(&client, subject, body, &bearer).await.map(|_| ())
            })
        })
    };
    let measured = drive::run(
        callers,
        Budget::per_caller(per_caller * 2, Duration::from_secs(600)),
        transition,
    )
    .await;
    Ok(Row::new(
        "commands",
        "start-task + complete-task",
        callers,
        "command",
        &measured,
    )
    .note(format!("{}; own tasks per caller", settings.label())))
}

/// Warms the instance up (connections, caches of the actor) without measuring.
pub async fn warm_up(client: &async_nats::Client, world: &World, budget: Budget) {
    let _ = drive::run(16, budget, create_op(client, world)).await;
}

/// Size of one stored `task.created` event written by the service (body bytes, header
/// bytes as `name: value` lines).
pub async fn stored_event_size(
    store: &talkwai_eventstore::EventStore,
    world: &World,
    client: &async_nats::Client,
) -> anyhow::Result<(usize, usize)> {
    let task = Uuid::new_v4();
    send(
        client,
        format!("talkwai.cmd.{}.task.create", world.tenant),
        create_task_command(task),
        &world.bearer,
    )
    .await
    .map_err(|e| anyhow::anyhow!("create-task: {e}"))?;
    let messages = store
        .read_subject(&format!("talkwai.evt.{}.task.{task}", world.tenant), 0)
        .await?;
    let Some(message) = messages.first() else {
        bail!("the created task has no event");
    };
    Ok((message.payload.len(), message.stored_header_bytes()))
}
