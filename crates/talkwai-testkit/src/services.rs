//! What the services' test harnesses share: a service running in a task until told to stop,
//! command requests with their headers, and test tokens.
//!
//! The harnesses in `crates/*/tests/common/mod.rs` wrap these with their crate's service and
//! secrets; waits for a service to serve are in [`crate::wait`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use secrecy::SecretString;
use talkwai_auth::{AuthError, Claims, PrincipalKind};
use talkwai_domain::EventBody;
use talkwai_domain::ids::TenantId;
use talkwai_proto::headers::{AUTHORIZATION, COMMAND_ID};
use talkwai_proto::{ActorRef, CommandReply, EventMeta, Scope};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long [`send_command`] callers usually wait for a reply.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The shutdown signal a [`ServiceTask`] hands its service: resolves when [`ServiceTask::stop`]
/// is called or the task handle is dropped.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A service running in a tokio task until [`stop`](Self::stop) signals its shutdown future.
#[derive(Debug)]
pub struct ServiceTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl ServiceTask {
    /// Spawns `run(shutdown)`; `run` returns the service's future (which should panic when the
    /// service fails, so the failure shows in the test).
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, rx) = oneshot::channel();
        let handle = tokio::spawn(run(Shutdown(rx)));
        Self { stop, handle }
    }

    /// Signals the shutdown and waits for the task to end (a panic in it is not propagated).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }

    /// Kills the task without a graceful shutdown.
    pub fn abort(&self) {
        self.handle.abort();
    }
}

/// Why a command request got no `CommandReply`.
#[derive(Debug, thiserror::Error)]
pub enum CommandRequestError {
    /// No reply within the timeout.
    #[error("no reply on {subject} within {within:?}")]
    TimedOut {
        /// The command subject.
        subject: String,
        /// How long the request waited.
        within: Duration,
    },
    /// The request failed (no responders, connection closed...).
    #[error("request on {subject} failed: {message}")]
    Request {
        /// The command subject.
        subject: String,
        /// The NATS error.
        message: String,
    },
    /// The reply is not a `CommandReply`.
    #[error("reply on {subject} is not a CommandReply ({message}): {payload}")]
    NotAReply {
        /// The command subject.
        subject: String,
        /// The decoding error.
        message: String,
        /// The reply's payload, lossily decoded.
        payload: String,
    },
}

/// The headers of a command request: `Talkwai-Command-Id` and `Authorization: Bearer`, each
/// when given.
pub fn command_headers(token: Option<&str>, command_id: Option<Uuid>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(id) = command_id {
        headers.insert(COMMAND_ID, id.to_string().as_str());
    }
    if let Some(token) = token {
        headers.insert(AUTHORIZATION, format!("Bearer {token}").as_str());
    }
    headers
}

/// Sends one command request (`body` as is, headers from [`command_headers`]) and decodes the
/// reply, waiting at most `within`.
///
/// # Errors
/// [`CommandRequestError`] when no reply came or it is not a `CommandReply`.
pub async fn send_command(
    client: &async_nats::Client,
    subject: &str,
    body: impl Into<Bytes>,
    token: Option<&str>,
    command_id: Option<Uuid>,
    within: Duration,
) -> Result<CommandReply, CommandRequestError> {
    let headers = command_headers(token, command_id);
    let reply = tokio::time::timeout(
        within,
        client.request_with_headers(subject.to_owned(), headers, body.into()),
    )
    .await
    .map_err(|_| CommandRequestError::TimedOut {
        subject: subject.to_owned(),
        within,
    })?
    .map_err(|e| CommandRequestError::Request {
        subject: subject.to_owned(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&reply.payload).map_err(|e| CommandRequestError::NotAReply {
        subject: subject.to_owned(),
        message: e.to_string(),
        payload: String::from_utf8_lossy(&reply.payload).into_owned(),
    })
}

/// An HS256 token signed with `secret`, valid for an hour.
///
/// # Errors
/// The minting error.
pub fn token(
    secret: &str,
    user: Uuid,
    kind: PrincipalKind,
    tenant: Option<Uuid>,
) -> Result<String, AuthError> {
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
    talkwai_auth::mint(&claims, &SecretString::from(secret))
}

/// A member token of `user` in `tenant`, signed with `secret`.
///
/// # Errors
/// The minting error.
pub fn member_token(secret: &str, user: Uuid, tenant: Uuid) -> Result<String, AuthError> {
    token(secret, user, PrincipalKind::Member, Some(tenant))
}

/// An admin token of `user`, signed with `secret`.
///
/// # Errors
/// The minting error.
pub fn admin_token(secret: &str, user: Uuid) -> Result<String, AuthError> {
    token(secret, user, PrincipalKind::Admin, None)
}

/// The subject of the command endpoint the command service subscribes last, on the platform
/// scope: when it answers, the endpoints subscribed before it on the same connection do too.
pub fn command_probe_subject() -> String {
    let (kind, actions) = talkwai_domain::ACTIONS
        .last()
        .map_or(("tenant".to_owned(), &["create"][..]), |(k, a)| {
            (k.to_string(), *a)
        });
    let action = actions.last().copied().unwrap_or("create");
    format!("talkwai.cmd.platform.{kind}.{action}")
}

/// The subject of the query endpoint the query service subscribes last.
pub const QUERY_PROBE_SUBJECT: &str = "talkwai.qry.platform.subscribe";

/// Waits until the command endpoints answer `client`: an empty, unauthenticated command on
/// [`command_probe_subject`] gets a reply (a typed refusal; it appends nothing).
///
/// # Errors
/// [`crate::wait::WaitTimeout`] when no reply came in time.
pub async fn wait_for_commands(
    client: &async_nats::Client,
) -> Result<(), crate::wait::WaitTimeout> {
    crate::wait::wait_for_endpoint(client, &command_probe_subject(), Bytes::new())
        .await
        .map(drop)
}

/// Waits until the query endpoints answer `client`: an empty, unauthenticated request on
/// [`QUERY_PROBE_SUBJECT`] gets a reply (a typed refusal).
///
/// # Errors
/// [`crate::wait::WaitTimeout`] when no reply came in time.
pub async fn wait_for_queries(client: &async_nats::Client) -> Result<(), crate::wait::WaitTimeout> {
    crate::wait::wait_for_endpoint(client, QUERY_PROBE_SUBJECT, Bytes::new())
        .await
        .map(drop)
}

/// Waits (up to [`crate::wait::ENDPOINT_DEADLINE`]) until every check of a service's
/// readiness (what its `/readyz` serves) passes; the command service's includes "every command
/// endpoint is subscribed and the server confirmed it".
///
/// # Errors
/// [`crate::wait::WaitTimeout`] with the failing checks when they did not pass in time.
pub async fn wait_ready(
    readiness: &talkwai_telemetry::ops::Readiness,
) -> Result<(), crate::wait::WaitTimeout> {
    crate::wait::wait_until(
        crate::wait::ENDPOINT_DEADLINE,
        crate::wait::PAUSE,
        || async {
            let failed: Vec<_> = readiness
                .evaluate()
                .await
                .into_iter()
                .filter(|c| !c.ok)
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("{failed:?}"))
            }
        },
    )
    .await
}

/// The headers the command service writes on a command's only event (`body` in `tenant`, by
/// the platform, at `occurred_at`, under a fresh command id): for tests that append events
/// around the service.
pub fn lone_event_headers(body: &EventBody, tenant: Uuid, occurred_at: i64) -> HeaderMap {
    let meta = EventMeta::lone(
        body,
        Scope::Tenant(TenantId(tenant)),
        ActorRef::Platform,
        Uuid::new_v4(),
        occurred_at,
    );
    let mut headers = HeaderMap::new();
    for (name, value) in meta.to_headers() {
        headers.insert(name, value.as_str());
    }
    headers
}

/// The sequence the event log's head would have without the command service's own fence
/// messages (writer fences and partition owner records, written as instances take, give back
/// and lose partitions): what commands appended, for tests that compare heads across restarts.
/// Read until the head holds still across the count.
pub async fn command_head(client: &async_nats::Client) -> Result<u64, String> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .get_stream("TALKWAI_EVENTS")
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let before = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        let mut fences = 0u64;
        for kind in [
            talkwai_proto::writer_fence::FENCE_KIND,
            talkwai_proto::writer_fence::OWNER_KIND,
        ] {
            let filter = format!("talkwai.evt.platform.guard.{kind}.>");
            let mut subjects = stream
                .info_with_subjects(filter)
                .await
                .map_err(|e| e.to_string())?;
            while let Some(entry) = futures::StreamExt::next(&mut subjects).await {
                fences += entry.map_err(|e| e.to_string())?.1 as u64;
            }
        }
        let after = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        if before == after {
            return Ok(after - fences);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err("the log's head kept moving".into())
}
