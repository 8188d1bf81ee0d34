//! Scale-out and fail-over with real processes on loopback.
//!
//! - A 3-node NATS cluster with the event stream at R3: the stream leader is SIGKILLed while
//!   `talkwai-command-service` processes take create-task commands from 8 callers. Callers
//!   retry on a timeout or `unavailable` with the same command id. Every acknowledged command
//!   is in the log exactly once and no command is there in part; the services reconnect by
//!   themselves; the projector's view converges to the log.
//! - Three `talkwai-command-service` processes in one queue group under load: every request
//!   gets exactly one reply, the load reaches all three, and SIGKILLing one of them loses no
//!   acknowledged command.
//!
//! - The personal-data key bucket on the same cluster: R3 like the stream; with its leader
//!   SIGKILLed, sealed commands (a new tenant's first key included) still succeed and every
//!   sealed value still opens; a key destroyed meanwhile is gone on every node once the killed
//!   node is back (no node answers it, no node's files hold its wrapped bytes).
//!
//! Replies are collected on one wildcard subscription so the test counts how many replies each
//! request got (a plain `request` would only see the first).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{HeaderMap, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::ErrorCode;
use talkwai_eventstore::{EventStore, StreamSettings, server_urls};
use talkwai_keys::{KeyStore, KeyStoreConfig, MasterKey, keyring_of};
use talkwai_proto::Scope;
use talkwai_proto::event::sealed_key;
use talkwai_proto::sealed::open_data;
use talkwai_proto::{CommandAccepted, CommandReply};
use talkwai_testkit::scan::files_holding;
use talkwai_testkit::wait;
use talkwai_testkit::{NatsCluster, NatsServer, Postgres};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

const PLATFORM: &str = "platform-token-cluster";
const STREAM: &str = "TALKWAI_EVENTS";
/// How long one attempt waits for its reply before the caller retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command may take across all its attempts (a leader election included).
const COMMAND_DEADLINE: Duration = Duration::from_secs(45);

fn spawn_service(urls: &str, name: &str, replicas: usize) -> Child {
    service_command(urls, name, replicas)
        .spawn()
        .expect("spawn the command service binary")
}

fn service_command(urls: &str, name: &str, replicas: usize) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_talkwai-command-service"));
    command
        .env("TALKWAI_NATS_URL", urls)
        .env("TALKWAI_STREAM_REPLICAS", replicas.to_string())
        .env("TALKWAI_PLATFORM_TOKEN", PLATFORM)
        .env("TALKWAI_JWT_SECRET", "cluster-secret")
        .env("TALKWAI_INSTANCE", name)
        .env("TALKWAI_RATE_LIMIT_PER_TENANT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

async fn connect(urls: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .name("cluster-test")
        .connect(server_urls(urls))
        .await
        .unwrap_or_else(|e| panic!("connect to {urls}: {e}"))
}

/// The `$SRV.STATS.talkwai-command` answer of every instance that replies within 1 s.
async fn service_stats(client: &async_nats::Client) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply("$SRV.STATS.talkwai-command", inbox, "".into())
        .await
        .expect("stats request");
    let mut answers = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
        if let Ok(value) = serde_json::from_slice::<Value>(&message.payload) {
            answers.push(value);
        }
    }
    answers
}

/// Waits until `n` instances answer `$SRV.STATS.talkwai-command`.
async fn wait_instances(client: &async_nats::Client, n: usize) {
    wait::wait_until(Duration::from_secs(60), wait::PAUSE, || async {
        let seen = service_stats(client).await.len();
        if seen >= n {
            Ok(())
        } else {
            Err(format!("{seen} of {n} command service instances answered"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Requests answered by one instance, by endpoint, from its stats.
fn requests_of(stats: &Value, endpoint: &str) -> u64 {
    stats["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == endpoint)
        .filter_map(|e| e["num_requests"].as_u64())
        .sum()
}

/// Sends commands and counts the replies of every attempt on one wildcard subscription.
#[derive(Clone)]
struct Driver {
    client: async_nats::Client,
    /// Reply subjects are `<prefix>.<attempt id>`.
    prefix: String,
    /// Attempts waiting for their first reply.
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<CommandReply>>>>,
    /// Service replies received per reply subject (no-responders statuses not counted).
    replies: Arc<Mutex<HashMap<String, u32>>>,
    /// Commands accepted so far.
    acked: Arc<AtomicUsize>,
    /// Attempts that got no reply in time, and attempts refused with a retryable code.
    timeouts: Arc<AtomicUsize>,
    retryable: Arc<AtomicUsize>,
}

/// What a caller recorded for one acknowledged command.
#[derive(Debug, Clone)]
struct Acked {
    command: Uuid,
    task: Uuid,
    accepted: CommandAccepted,
}

impl Driver {
    async fn start(client: async_nats::Client) -> Self {
        let prefix = format!("cluster_test_replies.{}", Uuid::new_v4().simple());
        let driver = Self {
            client,
            prefix,
            pending: Arc::default(),
            replies: Arc::default(),
            acked: Arc::default(),
            timeouts: Arc::default(),
            retryable: Arc::default(),
        };
        let mut sub = driver
            .client
            .subscribe(format!("{}.*", driver.prefix))
            .await
            .expect("subscribe to replies");
        let collector = driver.clone();
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                if message.status == Some(StatusCode::NO_RESPONDERS) {
                    // Nobody listened (between a kill and a reconnect): the caller retries.
                    collector.pending_remove(message.subject.as_str());
                    continue;
                }
                *collector
                    .replies
                    .lock()
                    .expect("lock")
                    .entry(message.subject.to_string())
                    .or_default() += 1;
                let reply: CommandReply =
                    serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
                        panic!(
                            "reply is a CommandReply: {e}: {}",
                            String::from_utf8_lossy(&message.payload)
                        )
                    });
                if let Some(tx) = collector.pending_remove(message.subject.as_str()) {
                    let _ = tx.send(reply);
                }
            }
        });
        driver
    }

    fn pending_remove(&self, subject: &str) -> Option<oneshot::Sender<CommandReply>> {
        self.pending.lock().expect("lock").remove(subject)
    }

    /// One attempt; `None` when no reply came in time (or nobody listened).
    async fn attempt(&self, subject: &str, body: &Value, command: Uuid) -> Option<CommandReply> {
        let reply_to = format!("{}.{}", self.prefix, Uuid::new_v4().simple());
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("lock")
            .insert(reply_to.clone(), tx);
        let mut headers = HeaderMap::new();
        headers.insert("Talkwai-Command-Id", command.to_string().as_str());
        headers.insert("Authorization", format!("Bearer {PLATFORM}").as_str());
        let payload = serde_json::to_vec(body).expect("json");
        self.client
            .publish_with_reply_and_headers(
                subject.to_owned(),
                reply_to.clone(),
                headers,
                payload.into(),
            )
            .await
            .ok()?;
        let reply = tokio::time::timeout(ATTEMPT_TIMEOUT, rx).await;
        self.pending_remove(&reply_to);
        reply.ok()?.ok()
    }

    /// Sends until accepted, retrying with the same command id on a timeout or a retryable
    /// error; panics on any other rejection or after `COMMAND_DEADLINE`.
    async fn execute(&self, subject: &str, body: &Value, command: Uuid) -> CommandAccepted {
        wait::wait_until(COMMAND_DEADLINE, Duration::from_millis(50), || async {
            match self.attempt(subject, body, command).await {
                Some(reply) => match reply.into_result() {
                    Ok(accepted) => {
                        self.acked.fetch_add(1, Ordering::Relaxed);
                        Ok(accepted)
                    }
                    Err(error)
                        if matches!(
                            error.code,
                            ErrorCode::Unavailable | ErrorCode::Conflict | ErrorCode::RateLimited
                        ) =>
                    {
                        self.retryable.fetch_add(1, Ordering::Relaxed);
                        Err(format!("{error:?}"))
                    }
                    Err(error) => panic!("command {command} on {subject} refused: {error:?}"),
                },
                None => {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    Err("no reply".to_owned())
                }
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!("command {command} on {subject} not accepted within {COMMAND_DEADLINE:?}: {e}")
        })
    }

    /// `callers` tasks create tasks in `tenant` until `stop` is set; each finishes the command
    /// it has started (so every command sent is acknowledged in the end).
    fn load(
        &self,
        tenant: Uuid,
        callers: usize,
        stop: &Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<Vec<Acked>>> {
        (0..callers)
            .map(|caller| {
                let driver = self.clone();
                let stop = Arc::clone(stop);
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let subject = format!("talkwai.cmd.{tenant}.task.create");
                    while !stop.load(Ordering::Relaxed) {
                        let (command, task) = (Uuid::new_v4(), Uuid::new_v4());
                        let body = json!({"id": task, "type": "call",
                            "fromAddress": "+15550001111", "toAddress": "+15550002222",
                            "subject": format!("caller {caller} #{}", acked.len())});
                        let accepted = driver.execute(&subject, &body, command).await;
                        assert_eq!(accepted.id, task, "the reply names the created task");
                        acked.push(Acked {
                            command,
                            task,
                            accepted,
                        });
                    }
                    acked
                })
            })
            .collect()
    }

    /// Every reply subject that got more than one service reply.
    fn doubled_replies(&self) -> Vec<(String, u32)> {
        self.replies
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, n)| (s.clone(), *n))
            .collect()
    }

    /// Commands accepted so far.
    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Attempts retried: (no reply in time, refused with a retryable code).
    fn retries(&self) -> (usize, usize) {
        (
            self.timeouts.load(Ordering::Relaxed),
            self.retryable.load(Ordering::Relaxed),
        )
    }
}

async fn create_tenant(driver: &Driver) -> Uuid {
    let tenant = Uuid::new_v4();
    driver
        .execute(
            "talkwai.cmd.platform.tenant.create",
            &json!({"id": tenant, "name": "Cluster Test"}),
            Uuid::new_v4(),
        )
        .await;
    tenant
}

/// Waits until `condition` holds, polling every 50 ms.
async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait::wait_until(timeout, Duration::from_millis(50), || {
        let holds = condition();
        async move { holds }
    })
    .await
    .unwrap_or_else(|e| panic!("{what} within {timeout:?}: {e}"));
}

/// Checks the log against the acknowledged commands: each acked task's subject holds exactly
/// its one `task.created`, under its command id; across the whole log no command is there in
/// part or twice. Returns the stream head.
async fn check_log(store: &EventStore, tenant: Uuid, acked: &[Acked]) -> u64 {
    for a in acked {
        let subject = format!("talkwai.evt.{tenant}.task.{}", a.task);
        let messages = store
            .read_subject(&subject, 0)
            .await
            .unwrap_or_else(|e| panic!("read {subject}: {e}"));
        let commands: Vec<&str> = messages
            .iter()
            .filter_map(|m| m.header("Talkwai-Command-Id"))
            .collect();
        assert_eq!(
            commands,
            [a.command.to_string().as_str()],
            "task {} (command {}, acked at seq {}) is not in the log exactly once",
            a.task,
            a.command,
            a.accepted.seq
        );
        assert_eq!(
            messages[0].seq, a.accepted.seq,
            "the acknowledged sequence is where the event is"
        );
    }
    let head = store.last_sequence().await.expect("head");
    let mut parts: HashMap<String, BTreeMap<usize, (usize, u32)>> = HashMap::new();
    // Right after a node restart the cluster may still answer "temporarily unavailable" to
    // consumer creation (10008): retry that, bounded.
    let mut replay = wait::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        store.replay(1, vec![])
    })
    .await
    .unwrap_or_else(|e| panic!("replay: {e}"));
    let mut seen = 0u64;
    while seen < head {
        let message = tokio::time::timeout(Duration::from_secs(30), replay.next())
            .await
            .expect("replay delivers the log")
            .expect("replay continues")
            .expect("message");
        seen = message.seq;
        // Fences and owner records are the command service's own, of no command.
        if talkwai_proto::writer_fence::is_fence_subject(&message.subject) {
            continue;
        }
        let (Some(id), Some((i, n))) = (
            message.header("Talkwai-Command-Id"),
            message
                .header("Talkwai-Command-Part")
                .and_then(|p| p.split_once('/')),
        ) else {
            panic!("message {} lacks command headers", message.seq);
        };
        let (i, n): (usize, usize) = (i.parse().expect("part"), n.parse().expect("parts"));
        parts
            .entry(id.to_owned())
            .or_default()
            .entry(i)
            .or_insert((n, 0))
            .1 += 1;
    }
    for (id, got) in &parts {
        let n = got.values().next().expect("a part").0;
        let indices: Vec<usize> = got.keys().copied().collect();
        assert_eq!(
            indices,
            (1..=n).collect::<Vec<_>>(),
            "command {id} is in part"
        );
        assert!(
            got.values().all(|(_, times)| *times == 1),
            "command {id} is in the log twice: {got:?}"
        );
    }
    let acked_ids: HashSet<String> = acked.iter().map(|a| a.command.to_string()).collect();
    let logged_tasks = parts.len() - 1; // the tenant's creation
    assert_eq!(
        logged_tasks,
        acked_ids.len(),
        "the log holds exactly the acknowledged commands (every command sent was retried until acknowledged)"
    );
    head
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_stream_leader_loses_no_acknowledged_command() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start().await.expect("3-node nats cluster");
    let urls = cluster.url_list();
    let pg = Postgres::start().await.expect("postgres");
    let db = pg
        .create_unique_database("cluster")
        .await
        .expect("database");

    // The command service creates the stream at R3; the test client connects to all nodes.
    let mut service = spawn_service(&urls, "cluster-command-1", 3);
    let client = connect(&urls).await;
    wait_instances(&client, 1).await;
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("open the stream");
    assert_eq!(
        store.replicas(),
        3,
        "the command service created the stream at R3"
    );

    let projector =
        talkwai_projector::Projector::build(talkwai_projector::Config::for_tests(&urls, &db))
            .await
            .expect("projector builds");
    let (stop_projector, projector_stopped) = oneshot::channel::<()>();
    let projector = tokio::spawn(async move {
        projector
            .run(async {
                let _ = projector_stopped.await;
            })
            .await
            .expect("projector runs");
    });

    let driver = Driver::start(client.clone()).await;
    let tenant = create_tenant(&driver).await;

    // 8 callers until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let callers = driver.load(tenant, 8, &stop);
    wait_until(
        "50 commands before the kill",
        Duration::from_secs(30),
        || driver.acked() >= 50,
    )
    .await;

    let leader = cluster
        .wait_for_stream_leader(STREAM)
        .await
        .expect("stream leader");
    cluster
        .kill(leader)
        .await
        .expect("SIGKILL the stream leader");
    let at_kill = driver.acked();
    let killed_at = Instant::now();
    let new_leader = cluster
        .wait_for_stream_leader(STREAM)
        .await
        .expect("a new stream leader");
    assert_ne!(new_leader, leader);
    wait_until(
        "100 more commands answered after the kill",
        Duration::from_secs(45),
        || driver.acked() >= at_kill + 100,
    )
    .await;
    let recovered_in = killed_at.elapsed();

    cluster
        .restart(leader)
        .await
        .expect("restart the killed node");
    cluster
        .wait_for_stream_current(STREAM, 3)
        .await
        .expect("the restarted node catches up");
    let at_restart = driver.acked();
    wait_until(
        "50 more commands after the restart",
        Duration::from_secs(30),
        || driver.acked() >= at_restart + 50,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for caller in callers {
        acked.extend(caller.await.expect("caller finished"));
    }
    assert!(
        service.try_wait().expect("service status").is_none(),
        "the command service process kept running (it reconnected by itself)"
    );

    // The log: every acknowledged command exactly once, nothing in part.
    let head = check_log(&store, tenant, &acked).await;
    // Requests got one reply each (a retried command has several requests).
    assert_eq!(driver.doubled_replies(), []);

    // The projection converges to the log: checkpoint = head, tasks = acknowledged tasks.
    let pg_client = pg_connect(&db).await;
    wait::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let checkpoint = pg_client
                .query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
                .await
                .map_or(0, |row| row.get::<_, i64>(0));
            if u64::try_from(checkpoint).unwrap_or(0) == head {
                Ok(())
            } else {
                Err(format!("projection stuck at {checkpoint} of {head}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rows = pg_client
        .query(
            "SELECT id FROM talkwai.tasks WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("tasks");
    let projected: HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let expected: HashSet<Uuid> = acked.iter().map(|a| a.task).collect();
    assert_eq!(
        projected, expected,
        "the tasks view holds the acknowledged tasks"
    );

    let _ = stop_projector.send(());
    let _ = projector.await;
    service.start_kill().expect("stop the service");
    eprintln!(
        "cluster fail-over: {} commands acked ({at_kill} before the kill, 100 more {:?} after it); \
         retries (timeout, unavailable/conflict) {:?}; head {head}; total {:?}",
        acked.len(),
        recovered_in,
        driver.retries(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_answer_every_command_once_and_survive_a_kill() {
    let server = NatsServer::start().await.expect("nats-server");
    let url = server.url();
    let mut services: Vec<Child> = (1..=3)
        .map(|i| spawn_service(&url, &format!("queue-{i}"), 1))
        .collect();
    let client = connect(&url).await;
    wait_instances(&client, 3).await;
    let driver = Driver::start(client.clone()).await;
    let tenant = create_tenant(&driver).await;

    let stop = Arc::new(AtomicBool::new(false));
    let callers = driver.load(tenant, 8, &stop);
    wait_until(
        "300 commands before the kill",
        Duration::from_secs(30),
        || driver.acked() >= 300,
    )
    .await;

    // The queue group spreads the load over all three instances.
    let stats = service_stats(&client).await;
    assert_eq!(stats.len(), 3, "three instances report stats");
    let per_instance: Vec<u64> = stats
        .iter()
        .map(|s| requests_of(s, "task_create"))
        .collect();
    assert!(
        per_instance.iter().all(|n| *n > 0),
        "every instance took create-task requests: {per_instance:?}"
    );
    let total: u64 = per_instance.iter().sum();
    // An instance counts a request once its handler returns, which can be just after the
    // caller saw the reply: allow one request in flight per caller.
    assert!(
        total + 8 >= 300,
        "stats count the requests: {per_instance:?}"
    );

    // SIGKILL one instance mid-load; the callers retry what it swallowed.
    services[0].start_kill().expect("SIGKILL an instance");
    let _ = services[0].wait().await;
    let at_kill = driver.acked();
    wait_until(
        "200 more commands after the kill",
        Duration::from_secs(30),
        || driver.acked() >= at_kill + 200,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for caller in callers {
        acked.extend(caller.await.expect("caller finished"));
    }
    // Late duplicates would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(driver.doubled_replies(), [], "a request got two replies");
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("open the stream");
    check_log(&store, tenant, &acked).await;
    for service in &mut services[1..] {
        assert!(
            service.try_wait().expect("status").is_none(),
            "the surviving instances keep running"
        );
    }
    eprintln!(
        "queue group: {} commands acked; per instance before the kill {per_instance:?}; \
         retries (timeout, unavailable/conflict) {:?}",
        acked.len(),
        driver.retries()
    );
}

const KEY_STREAM: &str = "KV_TALKWAI_KEYS";

/// A key store of its own (nothing cached) on `client`, with `master`.
async fn key_store(client: &async_nats::Client, master: &str) -> KeyStore {
    KeyStore::open(
        &async_nats::jetstream::new(client.clone()),
        vec![MasterKey::from_base64(master).expect("a master key")],
        KeyStoreConfig::default(),
    )
    .await
    .expect("key store")
}

/// The `subject` of a task's `task.created` as a reader opens it (`None`: erased), and the
/// task's data key.
async fn sealed_subject(
    store: &EventStore,
    keys: &KeyStore,
    tenant: Uuid,
    task: Uuid,
) -> (Option<String>, (Scope, Uuid)) {
    let messages = store
        .read_subject(&format!("talkwai.evt.{tenant}.task.{task}"), 0)
        .await
        .expect("read the task");
    let created = messages.first().expect("task.created");
    let key = sealed_key(&created.subject, |n| created.header(n)).expect("a sealed event");
    let ring = keyring_of(Some(keys), &messages).await.expect("keyring");
    let mut body: Value = serde_json::from_slice(&created.payload).expect("JSON body");
    assert!(
        body["data"]["$sealed"]["enc"] == "v2",
        "stored sealed: {body}"
    );
    open_data("task.created", key.0, &mut body["data"], &ring).expect("opens or is erased");
    (body["data"]["subject"].as_str().map(str::to_owned), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_bucket_is_r3_and_keeps_sealing_with_a_node_down() {
    let mut cluster = NatsCluster::start().await.expect("3-node nats cluster");
    let urls = cluster.url_list();
    let (_, master) = MasterKey::generate();
    let mut service = service_command(&urls, "cluster-keys-1", 3)
        .env("TALKWAI_MASTER_KEY", &master)
        .spawn()
        .expect("spawn the command service binary");
    let client = connect(&urls).await;
    wait_instances(&client, 1).await;
    let js = async_nats::jetstream::new(client.clone());
    let mut bucket = js.get_stream(KEY_STREAM).await.expect("the key bucket");
    let info = bucket.info().await.expect("key bucket info");
    assert_eq!(
        info.config.num_replicas, 3,
        "the key bucket follows the stream's replicas"
    );
    let store = EventStore::open(client.clone(), &StreamSettings::default())
        .await
        .expect("open the stream");
    let driver = Driver::start(client.clone()).await;
    let create_task = |tenant: Uuid, subject: String| {
        let driver = driver.clone();
        async move {
            let task = Uuid::new_v4();
            let body = json!({"id": task, "type": "call", "fromAddress": "+15550001111",
                              "toAddress": "+15550002222", "subject": subject});
            driver
                .execute(
                    &format!("talkwai.cmd.{tenant}.task.create"),
                    &body,
                    Uuid::new_v4(),
                )
                .await;
            (tenant, task, subject)
        }
    };
    let a = create_tenant(&driver).await;
    let mut written = Vec::new();
    for i in 0..3 {
        written.push(create_task(a, format!("before the kill #{i}")).await);
    }

    // The key bucket's leader dies; a new tenant (its tenant key and first data keys written
    // now) and more tasks of the first one are sealed meanwhile.
    let leader = cluster
        .wait_for_stream_leader(KEY_STREAM)
        .await
        .expect("key bucket leader");
    cluster.kill(leader).await.expect("SIGKILL the key leader");
    let b = create_tenant(&driver).await;
    for i in 0..3 {
        written.push(create_task(b, format!("new tenant, node down #{i}")).await);
        written.push(create_task(a, format!("node down #{i}")).await);
    }
    let reader = key_store(&client, &master).await;
    for (tenant, task, subject) in &written {
        let (opened, _) = sealed_subject(&store, &reader, *tenant, *task).await;
        assert_eq!(opened.as_deref(), Some(subject.as_str()), "task {task}");
    }

    // One subject's key is destroyed while the node is down.
    let (_, victim, _) = written[3];
    let (_, (scope, key)) = sealed_subject(&store, &reader, b, victim).await;
    let kv = js.get_key_value("TALKWAI_KEYS").await.expect("kv");
    let stored = talkwai_keys::stored_key(&kv, scope, key)
        .await
        .expect("read")
        .expect("the key is there");
    let ciphertext = stored
        .split_once('.')
        .expect("nonce.ciphertext")
        .1
        .to_owned();
    reader.destroy(scope, key).await.expect("destroy");

    cluster.restart(leader).await.expect("restart the node");
    cluster
        .wait_for_stream_current(KEY_STREAM, 3)
        .await
        .expect("the key bucket is current on all three nodes");
    // Every node, on its own: the destroyed key is not there (not answered, not in its
    // files), the others still open.
    for (index, node) in cluster.nodes().iter().enumerate() {
        let alone = connect(&node.url()).await;
        let keys = key_store(&alone, &master).await;
        let node_store = EventStore::open(alone.clone(), &StreamSettings::default())
            .await
            .expect("open the stream");
        for (tenant, task, subject) in &written {
            let (opened, _) = sealed_subject(&node_store, &keys, *tenant, *task).await;
            let expected = (*task != victim).then_some(subject.as_str());
            assert_eq!(opened.as_deref(), expected, "node {index}, task {task}");
        }
        let node_kv = async_nats::jetstream::new(alone)
            .get_key_value("TALKWAI_KEYS")
            .await
            .expect("kv");
        assert_eq!(
            talkwai_keys::stored_key(&node_kv, scope, key)
                .await
                .expect("read"),
            None,
            "node {index} answers the destroyed key"
        );
    }
    // On disk: the bucket's stream erases the key's message on every replica at once, but the
    // stream's raft log keeps the put that wrote it until nats-server snapshots the stream
    // and compacts the log (on a timer, about every two minutes): wait for that, bounded.
    let erased_at = Instant::now();
    wait::wait_until(Duration::from_secs(300), Duration::from_secs(1), || async {
        let hits: Vec<String> = cluster
            .nodes()
            .iter()
            .flat_map(|node| files_holding(node.store_dir(), &[ciphertext.as_bytes()]))
            .collect();
        if hits.is_empty() {
            Ok(())
        } else {
            Err(format!("{hits:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the destroyed key's bytes stay on disk: {e}"));
    let gone_from_disk = erased_at.elapsed();
    assert!(
        service.try_wait().expect("service status").is_none(),
        "the command service kept running"
    );
    service.start_kill().expect("stop the service");
    eprintln!(
        "key bucket fail-over: {} sealed tasks; retries (timeout, unavailable/conflict) {:?}; \
         the destroyed key left every node's files {gone_from_disk:?} after the checks",
        written.len(),
        driver.retries()
    );
}
