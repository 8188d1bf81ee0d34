//! The command service: NATS services API endpoints for every command
//! (`talkwai.cmd.<tenant|platform>.<aggregate>.<action>`, queue group `talkwai-command`, so
//! any number of instances share the load). Each command is decoded, authenticated, decided
//! against the aggregate's current state and appended to JetStream atomically with the
//! uniqueness guards it claims; the reply carries the stream sequence of its last event.
//!
//! # Architecture invariant
//! Depends on the domain, the wire contract and the event store; never on PostgreSQL or read
//! models: every decision reads the log of record.
//!
//! # Layout
//! - [`config`]: settings from flags and `TALKWAI_*` environment variables.
//! - [`handler`]: one command, end to end, in named steps; `request`: parsing a request;
//!   `actor`: a verified principal resolved to its member or admin entity.
//! - [`repo`]: aggregate state from the log, cached; facts and guards.
//! - [`ownership`]: the partitions (tenants) this instance holds and decides from memory;
//!   [`route`]: a command reaches its partition's owner with at most one hop.
//! - [`error`]: errors and their wire codes.
//! - [`ops`]: Prometheus metrics and readiness for `/metrics`, `/livez`, `/readyz`.

mod actor;
pub mod config;
pub mod error;
pub mod handler;
pub mod ops;
pub mod ownership;
pub mod repo;
mod request;
pub mod route;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use talkwai_domain::ACTIONS;
use talkwai_eventstore::lease::{self, LeaseConfig, Leases};
use talkwai_eventstore::{AppenderConfig, EventStore, LogFence, StreamSettings};
use talkwai_proto::writer_fence;
use talkwai_service::{Endpoints, Registration, ServeError};
use tracing::{info, warn};

pub use config::Config;
use handler::Handler;
use ownership::{Holder, Owners, Ownership};
use repo::Repository;
use route::Router;

/// Queue group shared by every instance.
pub const QUEUE_GROUP: &str = "talkwai-command";
/// Queue group of the catch-all that answers subjects no command endpoint serves.
pub const UNKNOWN_QUEUE_GROUP: &str = "talkwai-command-unknown";
/// Name in the NATS services API.
pub const SERVICE_NAME: &str = "talkwai-command";

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// NATS is unreachable.
    #[error("cannot connect to nats: {0}")]
    Connect(String),
    /// The event stream cannot be set up.
    #[error("cannot open the event stream: {0}")]
    Stream(#[from] talkwai_eventstore::StoreError),
    /// The services API refused the registration.
    #[error("cannot register the service: {0}")]
    Register(String),
    /// The identity provider's public keys cannot be loaded.
    #[error("cannot load jwt public keys: {0}")]
    Keys(#[from] talkwai_auth::KeyError),
    /// The endpoints could not be registered or confirmed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The master key is unreadable or the key bucket cannot be opened.
    #[error("cannot open the key store: {0}")]
    PersonalKeys(String),
}

/// A built command service, ready to run.
#[derive(Debug)]
pub struct CommandService {
    client: async_nats::Client,
    store: EventStore,
    handler: Arc<Handler>,
    config: Config,
    /// Set once every endpoint is subscribed and the server confirmed it; read by readiness.
    serving: Arc<AtomicBool>,
    /// This instance's id in the lease bucket and its fence subject (with ownership on).
    instance_id: String,
}

impl CommandService {
    /// Connects to NATS, sets up the event stream and the writer.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // The credentials of the URL or the environment sign in; the reconnect policy is the
        // shared one.
        let options = config
            .nats
            .options()
            .map_err(|e| StartError::Connect(e.to_string()))?;
        Self::build_with(config, options).await
    }

    /// [`build`](Self::build) with these connect options (credentials, e.g.); the name,
    /// `retry_on_initial_connect` and the reconnect policy are set here.
    pub async fn build_with(
        config: Config,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, StartError> {
        let verifier = config.auth.verifier()?;
        let name = format!("talkwai-command-service/{}", config.instance);
        let client = config
            .nats
            .connect(name, options)
            .await
            .map_err(|e| StartError::Connect(e.to_string()))?;
        let settings = StreamSettings {
            replicas: config.stream_replicas,
            duplicate_window: config.duplicate_window_secs.map(Duration::from_secs),
            ..Default::default()
        };
        let store = EventStore::open(client.clone(), &settings).await?;
        let appender_config = AppenderConfig {
            group: config.group_commit,
            max_in_flight: config.writes_in_flight,
            linger: Duration::from_micros(config.group_linger_us),
            ..Default::default()
        };
        let instance_id = lease::instance_id(&config.instance);
        let keys = config
            .keys
            .open(
                &async_nats::jetstream::new(client.clone()),
                store.replicas(),
            )
            .await
            .map_err(|e| StartError::PersonalKeys(e.to_string()))?;
        let mut repo = Repository::new(store.clone(), config.cache_capacity).with_keys(keys);
        let appender = if config.partitions > 0 {
            let ownership = Arc::new(Ownership::new(config.partitions));
            repo = repo.with_ownership(Arc::clone(&ownership));
            // Decisions from memory are fenced in the log too, when one write is in flight
            // (each mark expects the previous one); with more, only in process.
            if config.writes_in_flight <= 1 {
                store
                    .fenced_appender(appender_config, log_fence(&instance_id, ownership))
                    .await?
            } else {
                store.appender(appender_config)
            }
        } else {
            store.appender(appender_config)
        };
        let handler = Arc::new(
            Handler::new(repo, appender, verifier, config.conflict_attempts)
                .with_rate_limit(config.rate_limit),
        );
        Ok(Self {
            client,
            store,
            handler,
            config,
            serving: Arc::new(AtomicBool::new(false)),
            instance_id,
        })
    }

    /// Serves commands until `shutdown` resolves, then stops taking new ones and waits (up
    /// to the grace period) for the ones in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let endpoints = ACTIONS
            .iter()
            .flat_map(|(kind, actions)| {
                actions.iter().map(move |action| {
                    (
                        format!("{kind}_{action}"),
                        talkwai_proto::subject::command_endpoint(*kind, action),
                    )
                })
            })
            .collect();
        // Every command subject is also delivered to one member of this second group, which
        // answers only those no endpoint serves, so a client can tell an unknown action from
        // a service that is down ("no responders").
        let unknown = self
            .client
            .queue_subscribe(
                talkwai_proto::subject::ALL_COMMANDS,
                UNKNOWN_QUEUE_GROUP.to_owned(),
            )
            .await
            .map_err(|e| StartError::Register(e.to_string()))?;
        let mut owned = self.start_ownership().await?;
        let mut endpoints = Endpoints::start(
            &self.client,
            Registration {
                name: SERVICE_NAME,
                version: env!("CARGO_PKG_VERSION"),
                description: "TalkwAI commands: decide and append to the event log",
                queue_group: QUEUE_GROUP,
            },
            endpoints,
        )
        .await?;
        // Ready once the server confirmed the endpoints' subscriptions (`Endpoints::start`), and
        // with them the catch-all's, subscribed before.
        self.serving.store(true, Ordering::Release);
        let (stop_unknown, unknown_stopped) = tokio::sync::oneshot::channel::<()>();
        let catch_all = tokio::spawn(answer_unknown_until(
            self.client.clone(),
            unknown,
            unknown_stopped,
        ));
        info!(instance = %self.config.instance, "command service ready");
        let router = Arc::new(Router::new(
            self.client.clone(),
            Arc::clone(&self.handler),
            owned
                .as_ref()
                .map_or_else(Arc::default, |o| Arc::clone(&o.owners)),
            owned.as_ref().map(|o| o.me.clone()).unwrap_or_default(),
            ownership::settle_wait(self.config.lease_ttl()),
        ));
        if let Some(owned) = owned.as_mut() {
            owned.serve_forwarded(&router, self.config.max_in_flight);
        }
        let in_flight = endpoints
            .serve(Arc::clone(&router), self.config.max_in_flight, shutdown)
            .await;
        info!(
            in_flight = in_flight.len(),
            "stopping: no new commands, finishing in-flight ones"
        );
        // The catch-all goes first: while it is subscribed, a known command must still find
        // an endpoint (else its request would wait out the caller's timeout, not fail fast).
        let _ = stop_unknown.send(());
        if let Err(err) = catch_all.await {
            warn!(error = %err, "the unknown-command catch-all failed");
        }
        self.serving.store(false, Ordering::Release);
        // Leave the queue group before returning, confirmed: a request the server would still
        // route here after the return would get no reply.
        endpoints.stop().await;
        let grace = self.config.shutdown_grace();
        if !in_flight.drain(Some(grace)).await {
            warn!(grace = ?grace, "in-flight commands did not finish in time");
        }
        // Then the partitions go back (others take them at once, not after a TTL), and the
        // commands forwarded here meanwhile are answered.
        if let Some(owned) = owned {
            owned.stop().await;
        }
        // Replies are published; make sure they leave the process.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        Ok(())
    }
}

/// What runs while this instance takes part in partition ownership.
struct Owned {
    /// This instance's id in the lease bucket.
    me: String,
    owners: Arc<Owners>,
    /// The commands forwarded here: subscribed at start, served once the router exists.
    forwarded: Option<async_nats::Subscriber>,
    /// Stops serving them, and the task serving them.
    forwarding: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    stop_leases: tokio::sync::oneshot::Sender<()>,
    leases: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
}

impl Owned {
    /// Starts serving the commands forwarded to this instance through `router`.
    fn serve_forwarded(&mut self, router: &Arc<Router>, max_in_flight: usize) {
        if let Some(requests) = self.forwarded.take() {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(route::serve_forwarded(
                Arc::clone(router),
                requests,
                max_in_flight,
                stopped,
            ));
            self.forwarding = Some((stop, task));
        }
    }

    /// Gives every partition back, then stops serving forwarded commands and watching owners.
    async fn stop(self) {
        let _ = self.stop_leases.send(());
        if let Err(err) = self.leases.await {
            warn!(error = %err, "the partition leases task failed");
        }
        if let Some((stop, task)) = self.forwarding {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.watch.abort();
    }
}

impl CommandService {
    /// Joins partition ownership (when configured): subscribes to the commands forwarded to
    /// this instance, starts watching who holds what and claiming leases, and waits (at most
    /// a TTL and a half) for the first lease round so a lone instance starts owning its
    /// partitions.
    async fn start_ownership(&self) -> Result<Option<Owned>, StartError> {
        let Some(ownership) = self.handler.ownership().map(Arc::clone) else {
            return Ok(None);
        };
        let ttl = self.config.lease_ttl();
        let config = LeaseConfig {
            bucket: ownership::BUCKET.into(),
            description: "TalkwAI command-service partition leases and heartbeats".into(),
            ttl,
            replicas: self.store.replicas(),
            count: self.config.partitions,
            instance: self.config.instance.clone(),
        };
        let js = self.store.jetstream().clone();
        let (ready, first_round) = tokio::sync::oneshot::channel();
        let holder = Holder::new(ownership, ready).fencing(&self.store, &self.instance_id);
        let leases =
            Leases::with_instance(js.clone(), config.clone(), self.instance_id.clone(), holder)
                .await
                .map_err(StartError::Stream)?;
        let me = leases.instance().to_owned();
        let forwarded = self
            .client
            .subscribe(route::forward_subject(&me))
            .await
            .map_err(|e| StartError::Register(e.to_string()))?;
        let owners = Arc::new(Owners::default());
        let watch = tokio::spawn(watch_owners(js, config, Arc::clone(&owners)));
        let (stop_leases, stopped) = tokio::sync::oneshot::channel::<()>();
        let leases = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            tokio::pin!(stopped);
            leases.run(&mut stopped).await;
        });
        if tokio::time::timeout(ttl + ttl / 2, first_round)
            .await
            .is_err()
        {
            warn!(
                "no partition lease round finished yet; serving anyway (commands wait for owners)"
            );
        }
        info!(instance = %me, partitions = self.config.partitions, "taking part in partition ownership");
        Ok(Some(Owned {
            me,
            owners,
            forwarded: Some(forwarded),
            forwarding: None,
            stop_leases,
            leases,
            watch,
        }))
    }
}

/// The fence in the log of instance `me`: when another instance bumped it (it took one of our
/// partitions over), nothing decided from memory is trusted any more.
fn log_fence(me: &str, ownership: Arc<Ownership>) -> LogFence {
    LogFence {
        subject: writer_fence::fence_subject(me),
        mark: writer_fence::Fence::mark().encode().into(),
        mark_headers: talkwai_eventstore::header_map(writer_fence::headers(
            writer_fence::FENCE_TYPE,
        )),
        on_fenced: Box::new(move |bumps| {
            for bump in bumps {
                let fence = writer_fence::Fence::decode(&bump.payload).unwrap_or_default();
                warn!(by = ?fence.by, partition = ?fence.partition, seq = bump.seq,
                    "another instance took a partition over; trusting no cached state");
            }
            ownership.retenure_all();
        }),
    }
}

/// Keeps `owners` current from the lease bucket, re-opening the watch when it ends (a
/// nats-server restart deletes the in-memory bucket).
async fn watch_owners(
    js: async_nats::jetstream::Context,
    config: LeaseConfig,
    owners: Arc<Owners>,
) {
    loop {
        match lease::bucket(&js, &config).await {
            Ok(kv) => match kv.watch_with_history(">").await {
                Ok(mut entries) => {
                    while let Some(entry) = entries.next().await {
                        let Ok(entry) = entry else { break };
                        let Some((slot, holder)) = lease::parse_entry(&entry.key, &entry.value)
                        else {
                            continue;
                        };
                        if slot.count != config.count.max(1) {
                            continue;
                        }
                        let held =
                            matches!(entry.operation, async_nats::jetstream::kv::Operation::Put);
                        owners.set(slot.index, held.then_some(holder));
                    }
                }
                Err(err) => warn!(error = %err, "cannot watch the partition owners"),
            },
            Err(err) => warn!(error = %err, "cannot open the partition lease bucket"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl CommandService {
    /// How full this instance's writes are (writes and the commands they carried).
    pub fn group_stats(&self) -> Arc<talkwai_eventstore::GroupStats> {
        self.handler.group_stats()
    }
}

impl talkwai_service::binary::Service for CommandService {
    type Config = Config;
    type Error = StartError;
    const BINARY: &'static str = "talkwai-command-service";
    const ABOUT: &'static str = "TalkwAI command service";

    async fn build(config: Config) -> Result<Self, StartError> {
        Self::build(config).await
    }

    fn readiness(&self) -> talkwai_telemetry::ops::Readiness {
        self.readiness()
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        self.run(shutdown).await
    }
}

/// Answers the catch-all's messages until `stop` resolves (or the subscription ends), then
/// unsubscribes it.
async fn answer_unknown_until(
    client: async_nats::Client,
    mut unknown: async_nats::Subscriber,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            message = unknown.next() => {
                let Some(message) = message else { break };
                answer_unknown(&client, message).await;
            }
        }
    }
    if let Err(err) = unknown.unsubscribe().await {
        warn!(error = %err, "cannot unsubscribe the unknown-command catch-all");
    }
}

/// Whether a command endpoint serves `subject`: `talkwai.cmd.<any>.<aggregate>.<action>` of
/// the contract, as the endpoints subscribe (a bad scope token is theirs to refuse).
fn served(subject: &str) -> bool {
    talkwai_proto::CommandSubject::tokens(subject).is_some_and(|[_, aggregate, action]| {
        ACTIONS
            .iter()
            .any(|(kind, actions)| kind.as_str() == aggregate && actions.contains(&action))
    })
}

/// Answers a command subject no endpoint serves with `unknown_command`; ignores the others
/// (their endpoint answers them).
async fn answer_unknown(client: &async_nats::Client, message: async_nats::Message) {
    if served(&message.subject) {
        return;
    }
    let Some(reply) = message.reply else { return };
    let body = talkwai_proto::ErrorBody::new(
        talkwai_domain::ErrorCode::UnknownCommand,
        format!(
            "no command is served on {}: commands are talkwai.cmd.<tenant|platform>.<aggregate>.<action> \
             with an aggregate and action of the contract (proto/asyncapi.yaml)",
            message.subject
        ),
    )
    .with_field("subject");
    ops::unknown_command();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        talkwai_proto::headers::NATS_SERVICE_ERROR,
        body.message.as_str(),
    );
    headers.insert(
        talkwai_proto::headers::NATS_SERVICE_ERROR_CODE,
        body.code.status().to_string().as_str(),
    );
    let reply_body = serde_json::to_vec(&talkwai_proto::CommandReply::rejected(body))
        .unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    if let Err(err) = client
        .publish_with_headers(reply, headers, reply_body.into())
        .await
    {
        warn!(error = %err, "cannot answer an unknown command");
    }
}
