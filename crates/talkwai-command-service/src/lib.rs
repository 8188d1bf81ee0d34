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
//! - [`error`]: errors and their wire codes.
//! - [`ops`]: Prometheus metrics and readiness for `/metrics`, `/livez`, `/readyz`.

mod actor;
pub mod config;
pub mod error;
pub mod handler;
pub mod ops;
pub mod repo;
mod request;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use talkwai_auth::TokenVerifier;
use talkwai_domain::ACTIONS;
use talkwai_eventstore::{AppenderConfig, EventStore, StreamSettings};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use config::Config;
use handler::{Handler, Incoming};
use repo::Repository;

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
}

/// A built command service, ready to run.
#[derive(Debug)]
pub struct CommandService {
    client: async_nats::Client,
    handler: Arc<Handler>,
    config: Config,
    /// Set once every endpoint is subscribed and the server confirmed it; read by readiness.
    serving: Arc<AtomicBool>,
}

impl CommandService {
    /// Connects to NATS, sets up the event stream and the writer.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        // The credentials of the URL or the environment sign in; the reconnect policy is the
        // shared one.
        let (options, _) = talkwai_eventstore::connect_options(&config.nats_url)
            .map_err(|e| StartError::Connect(e.to_string()))?;
        Self::build_with(config, options).await
    }

    /// [`build`](Self::build) with these connect options (credentials, e.g.); the name,
    /// `retry_on_initial_connect` and the reconnect policy are set here.
    pub async fn build_with(
        config: Config,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, StartError> {
        let public_keys = config.key_files.load()?;
        let client = options
            .name(format!("talkwai-command-service/{}", config.instance))
            .retry_on_initial_connect()
            .reconnect_delay_callback(talkwai_eventstore::reconnect_delay)
            .connect(talkwai_eventstore::plain_servers(&config.nats_url))
            .await
            .map_err(|e| StartError::Connect(e.to_string()))?;
        let settings = StreamSettings {
            replicas: config.stream_replicas,
            duplicate_window: config.duplicate_window_secs.map(Duration::from_secs),
            ..Default::default()
        };
        let store = EventStore::open(client.clone(), &settings).await?;
        let appender = store.appender(AppenderConfig {
            group: config.group_commit,
            max_in_flight: config.writes_in_flight,
            linger: Duration::from_micros(config.group_linger_us),
            ..Default::default()
        });
        let verifier = TokenVerifier::new(
            config.platform_token.clone(),
            config.jwt_secret.clone(),
            config.jwt_issuer.as_deref(),
            config.jwt_audience.as_deref(),
        )
        .with_public_keys(public_keys);
        let repo = Repository::new(store, config.cache_capacity);
        let handler = Arc::new(
            Handler::new(repo, appender, verifier, config.conflict_attempts)
                .with_rate_limit(config.rate_limit),
        );
        Ok(Self {
            client,
            handler,
            config,
            serving: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Serves commands until `shutdown` resolves, then stops taking new ones and waits (up
    /// to the grace period) for the ones in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let service = self
            .client
            .service_builder()
            .description("TalkwAI commands: decide and append to the event log")
            .queue_group(QUEUE_GROUP)
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| StartError::Register(e.to_string()))?;
        let mut endpoints = Vec::new();
        for (kind, actions) in ACTIONS {
            for action in *actions {
                let endpoint = service
                    .endpoint_builder()
                    .name(format!("{kind}_{action}"))
                    .add(format!("talkwai.cmd.*.{kind}.{action}"))
                    .await
                    .map_err(|e| StartError::Register(e.to_string()))?;
                endpoints.push(endpoint);
            }
        }
        // Every command subject is also delivered to one member of this second group, which
        // answers only those no endpoint serves, so a client can tell an unknown action from
        // a service that is down ("no responders").
        let mut unknown = self
            .client
            .queue_subscribe(
                talkwai_proto::subject::ALL_COMMANDS,
                UNKNOWN_QUEUE_GROUP.to_owned(),
            )
            .await
            .map_err(|e| StartError::Register(e.to_string()))?;
        // `$SRV.PING` answers from the registration on; the endpoints serve once the server has
        // their subscriptions. The server handles a connection's messages in order, so the
        // answer to a request sent after them proves it has them. Ready only from then on.
        let ping = format!("$SRV.PING.{SERVICE_NAME}.{}", service.info().await.id);
        self.client
            .request(ping.clone(), Bytes::new())
            .await
            .map_err(|e| StartError::Register(format!("confirming the subscriptions: {e}")))?;
        self.serving.store(true, Ordering::Release);
        let mut requests = futures::stream::select_all(endpoints);
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        info!(instance = %self.config.instance, "command service ready");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                request = requests.next() => {
                    let Some(request) = request else { break };
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                    let handler = Arc::clone(&self.handler);
                    tasks.spawn(async move {
                        let _in_flight = ops::InFlight::enter();
                        let incoming = Incoming {
                            subject: request.message.subject.as_str(),
                            headers: request.message.headers.as_ref(),
                            payload: &request.message.payload,
                        };
                        let (body, headers) = handler.handle(incoming).await;
                        if let Err(err) = request.respond_with_headers(Ok(body), headers).await {
                            warn!(error = %err, "cannot send the reply");
                        }
                        drop(permit);
                    });
                    // Reap finished tasks so the set stays small.
                    while tasks.try_join_next().is_some() {}
                }
                message = unknown.next() => {
                    let Some(message) = message else { break };
                    answer_unknown(&self.client, message).await;
                }
            }
        }
        info!(
            in_flight = tasks.len(),
            "stopping: no new commands, finishing in-flight ones"
        );
        // The catch-all goes first: while it is subscribed, a known command must still find
        // an endpoint (else its request would wait out the caller's timeout, not fail fast).
        if let Err(err) = unknown.unsubscribe().await {
            warn!(error = %err, "cannot unsubscribe the unknown-command catch-all");
        }
        self.serving.store(false, Ordering::Release);
        // Leave the queue group before returning, confirmed the same way: a request the server
        // would still route here after the return would get no reply.
        for endpoint in requests.iter_mut() {
            if let Err(err) = endpoint.stop().await {
                warn!(error = %err, "cannot unsubscribe an endpoint");
            }
        }
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.client.request(ping, Bytes::new()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => warn!(error = %err, "cannot confirm the endpoints' unsubscription"),
            Err(_) => warn!("the endpoints' unsubscription was not confirmed within 5 s"),
        }
        drop(requests);
        if let Err(err) = service.stop().await {
            warn!(error = %err, "cannot unregister the service");
        }
        let grace = self.config.shutdown_grace();
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(grace = ?grace, "in-flight commands did not finish in time");
        }
        // Replies are published; make sure they leave the process.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        Ok(())
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
