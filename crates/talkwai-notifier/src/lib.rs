//! The notifier: turns the event log into room messages, and keeps presence.
//!
//! - Task events become `taskUpdates` in the tenant's room and member `notifications`
//!   (assigned to you; a task you created completed or failed); tenant status changes and
//!   task failure spikes become admin `systemAlerts` ([`events`], [`worker`], decisions in
//!   [`derive`]). A `tenant.erased` closes the tenant's room: a last `roomClosed` message,
//!   its presence sessions dropped, joins refused ([`presence`]). One instance at a time is active ([`lease`]): it pulls from the durable
//!   consumer `talkwai-notifier` in large batches, works on tenants in parallel and on each
//!   tenant's events in log order, and acks the low-water mark after publishing. Delivery is
//!   **at-least-once, in log order per subject**: every message carries `seq` (the event's
//!   stream sequence) and a client drops one whose `seq` is not above the last it took.
//! - Presence lives in the KV bucket `TALKWAI_PRESENCE` with a per-key TTL; the
//!   `talkwai-presence` service answers join/update/leave/heartbeat/get on every instance
//!   ([`presence`]), and one shared consumer on the bucket announces joins, updates, leaves
//!   and expiries ([`announce`]). A member or admin the log says is deleted, erased or
//!   inactive is refused presence ([`signin`]), as commands and queries refuse it.
//! - The active instance also checks projection lag and vanished service instances
//!   ([`monitor`]).
//!
//! # Architecture invariant
//! Reads the log, writes only room subjects and its own KV buckets: never appends events,
//! never sends commands, never reads PostgreSQL (projection lag comes from JetStream consumer
//! info). Room messages are derived and disposable; nothing reads them back.
//!
//! # Layout
//! - [`derive`]: pure decisions (event → messages), tested given/when/then.
//! - [`lease`]: which instance is active.
//! - [`events`]: anchoring the consumer, handing events to partitions, the low-water ack.
//! - [`worker`]: one partition's events in order, with its bounded task cache.
//! - [`presence`], [`announce`]: presence endpoints and announcements.
//! - [`signin`]: refusing presence to members and admins the log says are deleted, erased or
//!   inactive.
//! - [`monitor`]: the periodic checks.
//! - [`heal`]: recreating the bucket and consumers found missing (after a nats-server restart).
//! - [`ops`]: Prometheus metrics and readiness for `/metrics`, `/livez`, `/readyz`.

pub mod announce;
pub mod derive;
pub mod error;
pub mod events;
pub mod heal;
pub mod lease;
pub mod monitor;
pub mod ops;
pub mod presence;
pub mod signin;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use secrecy::SecretString;
use talkwai_auth::AuthArgs;
use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_service::{Endpoints, Registration};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use error::NotifierError;

/// Configuration, from flags or `TALKWAI_*` environment variables.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// NATS server URL(s), comma separated.
    #[command(flatten)]
    pub nats: talkwai_service::NatsArgs,
    /// The platform token (accepted by the verifier, refused for presence: it is nobody), the
    /// JWT secret (presence requests), issuer, audience and key files.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The master key that opens sealed personal fields.
    #[command(flatten)]
    pub keys: talkwai_keys::KeyArgs,
    /// Events stored longer ago than this many seconds are acked without notifying (0: never).
    #[arg(
        long = "skip-older-than",
        env = "TALKWAI_NOTIFIER_SKIP_OLDER_THAN_SECS",
        default_value_t = 3600
    )]
    pub skip_older_than_secs: u64,
    /// Seconds before an unacked presence change is announced by another instance. (Events
    /// are not concerned: the next active instance re-anchors their consumer, see
    /// [`events::ACK_WAIT`].)
    #[arg(long, env = "TALKWAI_NOTIFIER_ACK_WAIT_SECS", default_value_t = 1)]
    pub ack_wait_secs: u64,
    /// Events the active instance has pulled and not yet acknowledged (the pull batch is half
    /// of it).
    #[arg(long, env = "TALKWAI_NOTIFIER_MAX_ACK_PENDING", default_value_t = 4096)]
    pub max_ack_pending: i64,
    /// Partitions of the active instance: tenants are hashed to one, each works through its
    /// events in log order, the partitions in parallel.
    #[arg(long, env = "TALKWAI_NOTIFIER_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// The lease TTL, milliseconds: the active instance renews it every quarter of this; a
    /// standby takes over when it saw no renewal for this long (so within about 1.25 of it
    /// after the active instance dies or freezes).
    #[arg(long, env = "TALKWAI_NOTIFIER_LEASE_MS", default_value_t = 1000)]
    pub lease_ms: u64,
    /// Tasks (and tenants, for failure spikes) remembered in memory.
    #[arg(
        long,
        env = "TALKWAI_NOTIFIER_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub cache_capacity: usize,
    /// Task failures within the window that raise a `taskFailureSpike` alert.
    #[arg(long, env = "TALKWAI_NOTIFIER_FAILURE_SPIKE", default_value_t = 10)]
    pub failure_spike: usize,
    /// The failure spike window, seconds.
    #[arg(
        long,
        env = "TALKWAI_NOTIFIER_FAILURE_WINDOW_SECS",
        default_value_t = 60
    )]
    pub failure_spike_window_secs: u64,
    /// Events a projector consumer may be behind before a `projectionLag` alert.
    #[arg(long, env = "TALKWAI_NOTIFIER_LAG_THRESHOLD", default_value_t = 10_000)]
    pub projection_lag_threshold: u64,
    /// How often the lease holder checks lag and pings services, milliseconds.
    #[arg(
        long,
        env = "TALKWAI_NOTIFIER_CHECK_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub check_interval_ms: u64,
    /// The service whose instances are pinged.
    #[arg(
        long,
        env = "TALKWAI_NOTIFIER_WATCHED_SERVICE",
        default_value = "talkwai-command"
    )]
    pub watched_service: String,
    /// Seconds a presence entry lives without a heartbeat.
    #[arg(long, env = "TALKWAI_PRESENCE_TTL_SECS", default_value_t = 15)]
    pub presence_ttl_secs: u64,
    /// Event stream replicas (1 single node, 3 cluster); 0 keeps an existing stream's count
    /// and creates a new stream with 1. The KV buckets get the stream's count.
    #[arg(long, env = "TALKWAI_STREAM_REPLICAS", default_value_t = 0)]
    pub replicas: usize,
    /// Presence requests handled at once by this instance.
    #[arg(long, env = "TALKWAI_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Name of this instance.
    #[arg(long, env = "TALKWAI_INSTANCE", default_value = "notifier-1")]
    pub instance: String,
    /// `/livez` fails after this many seconds in which the event loop or the announcer was not
    /// connected and reading its consumer (a restart is then due).
    #[arg(long, env = "TALKWAI_NOTIFIER_LIVENESS_SECS", default_value_t = 60)]
    pub liveness_secs: u64,
}

impl Config {
    /// A configuration for tests: short TTLs and intervals, nothing skipped.
    pub fn for_tests(nats_url: &str, platform_token: &str, jwt_secret: &str) -> Self {
        Self {
            nats: talkwai_service::NatsArgs::new(nats_url),
            auth: AuthArgs::with_secrets(
                SecretString::from(platform_token),
                SecretString::from(jwt_secret),
            ),
            keys: talkwai_keys::KeyArgs::default(),
            skip_older_than_secs: 0,
            ack_wait_secs: 2,
            max_ack_pending: 256,
            workers: 4,
            lease_ms: 1000,
            cache_capacity: 1000,
            failure_spike: 3,
            failure_spike_window_secs: 60,
            projection_lag_threshold: 100,
            check_interval_ms: 300,
            watched_service: "talkwai-command".into(),
            presence_ttl_secs: 2,
            replicas: 1,
            max_in_flight: 64,
            instance: "notifier-test".into(),
            liveness_secs: 60,
        }
    }

    /// The ack wait.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs.max(1))
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(100))
    }
}

/// The services API name, queue group and endpoints of presence.
pub use presence::SERVICE_NAME as PRESENCE_SERVICE;

/// A built notifier, ready to run.
pub struct Notifier {
    client: async_nats::Client,
    store: EventStore,
    presence: Arc<presence::PresenceService>,
    lease: async_nats::jetstream::kv::Store,
    upkeep: heal::Upkeep,
    config: Config,
    /// Opens sealed personal fields (`None`: no master key configured).
    keys: Option<talkwai_keys::KeyStore>,
}

impl Notifier {
    /// Connects to NATS and sets up the event stream, the consumers and the buckets.
    pub async fn build(config: Config) -> Result<Self, NotifierError> {
        // The credentials of the URL or the environment sign in; the reconnect policy is the
        // shared one.
        let options = config
            .nats
            .options()
            .map_err(|e| NotifierError::Connect(e.to_string()))?;
        Self::build_with(config, options).await
    }

    /// [`build`](Self::build) with these connect options (credentials, e.g.); the name,
    /// `retry_on_initial_connect` and the reconnect policy are set here.
    pub async fn build_with(
        config: Config,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, NotifierError> {
        let verifier = config.auth.verifier()?;
        let name = format!("talkwai-notifier/{}", config.instance);
        let client = config
            .nats
            .connect(name, options)
            .await
            .map_err(|e| NotifierError::Connect(e.to_string()))?;
        let settings = StreamSettings {
            replicas: config.replicas,
            ..Default::default()
        };
        let store = EventStore::open(client.clone(), &settings).await?;
        let js = store.jetstream().clone();
        let kv = presence::bucket(&js, store.replicas()).await?;
        let lease = lease::bucket(&js, store.replicas()).await?;
        let keys = config
            .keys
            .open(&js, store.replicas())
            .await
            .map_err(NotifierError::js)?;
        let upkeep = heal::Upkeep::new(store.clone(), config.clone());
        let presence = Arc::new(
            presence::PresenceService::new(
                client.clone(),
                kv,
                verifier,
                Duration::from_secs(config.presence_ttl_secs.max(1)),
            )
            .healing(upkeep.clone())
            .closing_erased_rooms(store.clone())
            .signing_in(store.clone()),
        );
        Ok(Self {
            client,
            store,
            presence,
            lease,
            upkeep,
            config,
            keys,
        })
    }

    /// Runs the event loop, the announcer, the monitor and the presence endpoints until
    /// `shutdown` resolves; each finishes the message in hand, then the connection is flushed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), NotifierError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let js = self.store.jetstream().clone();
        // The consumer exists from the start (readiness checks it); the active instance
        // anchors it.
        events::consumer(&self.store, &self.config).await?;
        let presence_consumer = announce::consumer(&js, self.config.ack_wait()).await?;
        let (lease, leadership) = lease::Lease::new(
            self.lease.clone(),
            &self.config.instance,
            self.config.lease_ttl(),
        );
        let mut workers = JoinSet::new();
        workers.spawn(
            events::EventLoop::new(
                self.store.clone(),
                self.keys.clone(),
                &self.config,
                leadership.clone(),
            )
            .healing(self.upkeep.clone())
            .run(stop_rx.clone()),
        );
        workers.spawn(announce::run(
            self.client.clone(),
            presence_consumer,
            self.upkeep.clone(),
            stop_rx.clone(),
        ));
        workers.spawn(
            monitor::Monitor::new(
                self.client.clone(),
                leadership,
                self.store.stream_name(),
                &self.config,
            )
            .run(stop_rx.clone()),
        );
        let lease_stop = stop_rx.clone();
        workers.spawn(async move {
            lease.run(lease_stop).await;
            Ok(())
        });
        workers.spawn(ops::export_peers(js.clone(), stop_rx.clone()));

        let mut endpoints = Endpoints::start(
            &self.client,
            Registration {
                name: PRESENCE_SERVICE,
                version: env!("CARGO_PKG_VERSION"),
                description: "TalkwAI presence: join, update, leave, heartbeat, get",
                queue_group: PRESENCE_SERVICE,
            },
            presence::OPS
                .iter()
                .map(|op| {
                    (
                        (*op).to_owned(),
                        talkwai_proto::subject::presence_endpoint(op),
                    )
                })
                .collect(),
        )
        .await?;
        info!(instance = %self.config.instance, "notifier ready");
        let in_flight = endpoints
            .serve(
                Arc::new(Presence(Arc::clone(&self.presence))),
                self.config.max_in_flight,
                shutdown,
            )
            .await;
        endpoints.stop().await;
        let _ = stop_tx.send(true);
        in_flight.drain(None).await;
        let mut result = Ok(());
        while let Some(done) = workers.join_next().await {
            match done {
                Ok(Err(err)) => result = Err(err),
                Err(err) => warn!(error = %err, "a notifier task panicked"),
                Ok(Ok(())) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        result
    }
}

impl talkwai_service::binary::Service for Notifier {
    type Config = Config;
    type Error = NotifierError;
    const BINARY: &'static str = "talkwai-notifier";
    const ABOUT: &'static str = "TalkwAI notifier: rooms, notifications, presence";

    async fn build(config: Config) -> Result<Self, NotifierError> {
        Self::build(config).await
    }

    fn readiness(&self) -> talkwai_telemetry::ops::Readiness {
        self.readiness()
    }

    fn liveness(&self) -> talkwai_telemetry::ops::Liveness {
        self.liveness()
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NotifierError> {
        self.run(shutdown).await
    }
}

/// Presence as the serving loop calls it, one request per message.
struct Presence(Arc<presence::PresenceService>);

impl talkwai_service::Handler for Presence {
    async fn handle(&self, message: &async_nats::Message) -> (Bytes, async_nats::HeaderMap) {
        let subject = message.subject.as_str();
        let reply = self
            .0
            .handle(subject, message.headers.as_ref(), &message.payload)
            .await;
        ops::presence_done(subject, &reply);
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        (body.into(), async_nats::HeaderMap::new())
    }
}
