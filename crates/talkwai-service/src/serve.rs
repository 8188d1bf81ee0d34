//! The NATS services-API serving loop of every service (the command service's commands, the
//! query service's queries, the notifier's presence): [`Endpoints::start`] registers the
//! service and its endpoints in its queue group and returns once the server holds their
//! subscriptions; [`Endpoints::serve`] hands each request to a [`Handler`] in a task of its
//! own, at most `max_in_flight` at once, until the shutdown future resolves;
//! [`Endpoints::stop`] leaves the queue group (confirmed by the server) and unregisters; the
//! requests still in hand finish in [`InFlight::drain`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::endpoint::Endpoint;
use async_nats::service::{Service, ServiceExt as _};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::SelectAll;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;

/// How long [`Endpoints::stop`] waits for the server to confirm the endpoints are gone.
const CONFIRM_STOP: Duration = Duration::from_secs(5);

/// Answers the requests of a service's endpoints.
pub trait Handler: Send + Sync + 'static {
    /// The reply body and headers for one request (`message` holds its subject, headers and
    /// payload). Errors are replies too: the loop sends whatever this returns.
    fn handle(&self, message: &Message) -> impl Future<Output = (Bytes, HeaderMap)> + Send;
}

/// How a service names itself in the services API (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`).
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The service name (`talkwai-command`, `talkwai-query`...).
    pub name: &'a str,
    /// Its version (the crate's, usually).
    pub version: &'a str,
    /// One line on what it serves.
    pub description: &'a str,
    /// The queue group every instance shares, so each request reaches one of them.
    pub queue_group: &'a str,
}

/// Why a service could not register or subscribe.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The services API refused the registration.
    #[error("cannot register the service {name}: {message}")]
    Register {
        /// The service.
        name: String,
        /// What the client said.
        message: String,
    },
    /// An endpoint could not be added.
    #[error("cannot add the endpoint {subject}: {message}")]
    Endpoint {
        /// The endpoint's subject.
        subject: String,
        /// What the client said.
        message: String,
    },
    /// The server did not answer the request that confirms the subscriptions.
    #[error("cannot confirm the subscriptions of {name}: {message}")]
    Confirm {
        /// The service.
        name: String,
        /// What the client said.
        message: String,
    },
}

/// A registered service and its subscribed endpoints.
pub struct Endpoints {
    client: async_nats::Client,
    service: Service,
    requests: SelectAll<Endpoint>,
    /// `$SRV.PING.<name>.<id>`: answered by this instance only, after everything it subscribed
    /// before the request (the server handles a connection's messages in order).
    ping: String,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("ping", &self.ping)
            .field("endpoints", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Registers the service and adds `endpoints` (name, subject) in its queue group; returns
    /// once the server holds their subscriptions (`$SRV.PING` answers from the registration
    /// on, before the endpoints serve: the answer to a ping sent after them proves they do).
    pub async fn start(
        client: &async_nats::Client,
        registration: Registration<'_>,
        endpoints: Vec<(String, String)>,
    ) -> Result<Self, ServeError> {
        let service = client
            .service_builder()
            .description(registration.description)
            .queue_group(registration.queue_group)
            .start(registration.name, registration.version)
            .await
            .map_err(|e| ServeError::Register {
                name: registration.name.to_owned(),
                message: e.to_string(),
            })?;
        let mut requests = SelectAll::new();
        for (name, subject) in endpoints {
            let endpoint = service
                .endpoint_builder()
                .name(name)
                .add(subject.clone())
                .await
                .map_err(|e| ServeError::Endpoint {
                    subject,
                    message: e.to_string(),
                })?;
            requests.push(endpoint);
        }
        let ping = format!(
            "$SRV.PING.{}.{}",
            registration.name,
            service.info().await.id
        );
        client
            .request(ping.clone(), Bytes::new())
            .await
            .map_err(|e| ServeError::Confirm {
                name: registration.name.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            client: client.clone(),
            service,
            requests,
            ping,
        })
    }

    /// Serves requests until `shutdown` resolves or the endpoints close: each in a task of its
    /// own, at most `max_in_flight` (at least 1) at once, answered with what `handler` returns.
    /// Returns the requests still in hand; the endpoints keep their subscriptions until
    /// [`stop`](Self::stop).
    pub async fn serve<H: Handler>(
        &mut self,
        handler: Arc<H>,
        max_in_flight: usize,
        shutdown: impl Future<Output = ()>,
    ) -> InFlight {
        let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                request = self.requests.next() => {
                    let Some(request) = request else { break };
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
                    let handler = Arc::clone(&handler);
                    tasks.spawn(async move {
                        let (body, headers) = handler.handle(&request.message).await;
                        if let Err(err) = request.respond_with_headers(Ok(body), headers).await {
                            warn!(subject = %request.message.subject, error = %err, "cannot send the reply");
                        }
                        drop(permit);
                    });
                    // Reap finished tasks so the set stays small.
                    while tasks.try_join_next().is_some() {}
                }
            }
        }
        InFlight(tasks)
    }

    /// Leaves the queue group and unregisters: every endpoint unsubscribes, and the server's
    /// answer to a ping sent after that (within 5 s) confirms it, so no request is routed here
    /// once this returns (it would get no reply).
    pub async fn stop(mut self) {
        for endpoint in self.requests.iter_mut() {
            if let Err(err) = endpoint.stop().await {
                warn!(error = %err, "cannot unsubscribe an endpoint");
            }
        }
        match tokio::time::timeout(CONFIRM_STOP, self.client.request(self.ping, Bytes::new())).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => warn!(error = %err, "cannot confirm the endpoints' unsubscription"),
            Err(_) => warn!("the endpoints' unsubscription was not confirmed within 5 s"),
        }
        drop(self.requests);
        if let Err(err) = self.service.stop().await {
            warn!(error = %err, "cannot unregister the service");
        }
    }
}

/// The requests a service still had in hand when it stopped taking new ones.
#[derive(Debug)]
#[must_use = "drain the requests in flight, or they are cut off when the runtime stops"]
pub struct InFlight(JoinSet<()>);

impl InFlight {
    /// How many are still running.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits for them to finish, at most `grace` (`None`: as long as they take); whether all did.
    pub async fn drain(mut self, grace: Option<Duration>) -> bool {
        let all = async { while self.0.join_next().await.is_some() {} };
        match grace {
            Some(grace) => tokio::time::timeout(grace, all).await.is_ok(),
            None => {
                all.await;
                true
            }
        }
    }
}
