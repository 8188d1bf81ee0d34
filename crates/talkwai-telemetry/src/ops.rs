//! The operations endpoint every service serves on one address: Prometheus `/metrics`,
//! `/livez` (the process can still do its job) and `/readyz` (its dependencies answer), over a
//! small HTTP/1 server (hyper).
//!
//! Services record metrics with the `metrics` macros anywhere; [`metrics_handle`] installs the
//! Prometheus recorder once per process (histograms ending in `_seconds` get latency buckets,
//! `talkwai_append_group_*` size buckets) and [`serve_ops`] serves it with a service's
//! [`Readiness`] ([`serve_ops_with`] adds its [`Liveness`], e.g. [`Watchdog`]s its loops beat).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info};

/// Path of the Prometheus text exposition.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the liveness probe: 200 while the process serves HTTP and every liveness check
/// passes, 503 otherwise.
pub const LIVEZ_PATH: &str = "/livez";
/// Path of the readiness probe: 200 when every check passes, 503 otherwise.
pub const READYZ_PATH: &str = "/readyz";
/// Longest a readiness evaluation may take before it counts as not ready.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// Buckets of latency histograms (names ending in `_seconds`), seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of group-commit sizes (`talkwai_append_group_*`), commands or messages.
const SIZE_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0,
];

/// Why the operations endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Another metrics recorder is installed in this process.
    #[error("cannot install the prometheus recorder: {0}")]
    Recorder(String),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {message}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        message: String,
    },
}

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later calls
/// return the same handle. Metrics recorded before the first call are lost.
pub fn metrics_handle() -> Result<PrometheusHandle, OpsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Prefix("talkwai_append_group_".into()),
                        &SIZE_BUCKETS,
                    )
                })
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(OpsError::Recorder)
}

/// The outcome of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `nats`, `jetstream`, `postgres`, `projection`...
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed, or a short status.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Check {
    /// A passed check.
    pub fn pass(name: &'static str) -> Self {
        Self {
            name,
            ok: true,
            detail: String::new(),
        }
    }

    /// A failed check and why.
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
        }
    }

    /// A check from a result: passed on `Ok`, failed with the error's text on `Err`.
    pub fn from_result<E: std::fmt::Display>(name: &'static str, result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Self::pass(name),
            Err(err) => Self::fail(name, err.to_string()),
        }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Vec<Check>> + Send>>;

/// What `/readyz` evaluates on each request: a function returning the service's checks.
#[derive(Clone)]
pub struct Readiness(Arc<dyn Fn() -> CheckFuture + Send + Sync>);

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").finish_non_exhaustive()
    }
}

impl Readiness {
    /// Readiness computed by `check` on every probe.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Check>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(check())))
    }

    /// Ready as long as the process runs (no dependencies).
    pub fn always() -> Self {
        Self::new(|| async { Vec::new() })
    }

    /// The NATS connection and JetStream checks of `client`, then this readiness's own.
    pub fn with_nats(self, client: async_nats::Client) -> Self {
        let own = self.0;
        Self::new(move || {
            let client = client.clone();
            let own = Arc::clone(&own);
            async move {
                let mut checks = nats_checks(&client).await;
                checks.extend(own().await);
                checks
            }
        })
    }

    /// The NATS connection check of `client` (no JetStream: for a service that never uses
    /// it), then this readiness's own.
    pub fn with_nats_connection(self, client: async_nats::Client) -> Self {
        let own = self.0;
        Self::new(move || {
            let check = nats_connected(&client);
            let own = Arc::clone(&own);
            async move {
                let mut checks = vec![check];
                checks.extend(own().await);
                checks
            }
        })
    }

    /// Runs the checks, bounded by [`READINESS_TIMEOUT`].
    pub async fn evaluate(&self) -> Vec<Check> {
        match tokio::time::timeout(READINESS_TIMEOUT, (self.0)()).await {
            Ok(checks) => checks,
            Err(_) => vec![Check::fail(
                "readiness",
                format!("checks took longer than {READINESS_TIMEOUT:?}"),
            )],
        }
    }
}

/// What `/livez` evaluates on each request: the process's own checks (cheap and local: never a
/// dependency's health, which is readiness). Failing means a restart would help.
#[derive(Clone)]
pub struct Liveness(Arc<dyn Fn() -> Vec<Check> + Send + Sync>);

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness").finish_non_exhaustive()
    }
}

impl Liveness {
    /// Liveness computed by `check` on every probe.
    pub fn new<F>(check: F) -> Self
    where
        F: Fn() -> Vec<Check> + Send + Sync + 'static,
    {
        Self(Arc::new(check))
    }

    /// Alive as long as the process serves HTTP.
    pub fn always() -> Self {
        Self::new(Vec::new)
    }

    /// Alive while every watchdog was beaten recently enough.
    pub fn watchdogs(watchdogs: Vec<Watchdog>) -> Self {
        Self::new(move || watchdogs.iter().map(Watchdog::check).collect())
    }

    /// Runs the checks.
    pub fn evaluate(&self) -> Vec<Check> {
        (self.0)()
    }
}

/// A progress beacon for liveness: a loop [`beat`](Self::beat)s after each successful round;
/// its [`check`](Self::check) fails once it has not beaten for `max_silence`. Cheap to clone
/// (clones share the beats); created beaten.
#[derive(Debug, Clone)]
pub struct Watchdog {
    name: &'static str,
    max_silence: Duration,
    origin: Instant,
    /// Milliseconds from `origin` to the last beat.
    last: Arc<AtomicU64>,
}

impl Watchdog {
    /// A watchdog named `name` (the check's name) that tolerates `max_silence` without a beat.
    pub fn new(name: &'static str, max_silence: Duration) -> Self {
        Self {
            name,
            max_silence,
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records progress now.
    pub fn beat(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Passes while the last beat is at most `max_silence` old.
    pub fn check(&self) -> Check {
        let silence = self.silence();
        if silence > self.max_silence {
            Check::fail(
                self.name,
                format!(
                    "no progress for {}s (at most {}s)",
                    silence.as_secs(),
                    self.max_silence.as_secs()
                ),
            )
        } else {
            Check::pass(self.name)
        }
    }
}

/// `nats`: the client is connected.
pub fn nats_connected(client: &async_nats::Client) -> Check {
    let state = client.connection_state();
    if state == async_nats::connection::State::Connected {
        Check::pass("nats")
    } else {
        Check::fail("nats", format!("connection {state}"))
    }
}

/// `nats`: the client is connected; `jetstream`: the JetStream API answers an account info
/// request within two seconds (only asked when connected).
pub async fn nats_checks(client: &async_nats::Client) -> Vec<Check> {
    let connected = nats_connected(client);
    if !connected.ok {
        return vec![connected, Check::fail("jetstream", "nats is not connected")];
    }
    let js = async_nats::jetstream::new(client.clone());
    let jetstream = match tokio::time::timeout(Duration::from_secs(2), js.query_account()).await {
        Ok(Ok(_)) => Check::pass("jetstream"),
        Ok(Err(err)) => Check::fail("jetstream", err.to_string()),
        Err(_) => Check::fail("jetstream", "account info timed out"),
    };
    vec![Check::pass("nats"), jetstream]
}

/// A running operations endpoint; dropping it stops serving.
#[derive(Debug)]
#[must_use = "dropping the server stops serving /metrics, /livez and /readyz"]
pub struct OpsServer {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OpsServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves `/metrics`, `/livez` (always alive) and `/readyz` on `addr` until the returned server
/// is dropped. Installs the Prometheus recorder (see [`metrics_handle`]) if it is not yet.
pub async fn serve_ops(addr: SocketAddr, readiness: Readiness) -> Result<OpsServer, OpsError> {
    serve_ops_with(addr, readiness, Liveness::always()).await
}

/// As [`serve_ops`], with `liveness` deciding `/livez`.
pub async fn serve_ops_with(
    addr: SocketAddr,
    readiness: Readiness,
    liveness: Liveness,
) -> Result<OpsServer, OpsError> {
    let handle = metrics_handle()?;
    let listener = TcpListener::bind(addr).await.map_err(|e| OpsError::Bind {
        addr,
        message: e.to_string(),
    })?;
    let addr = listener.local_addr().map_err(|e| OpsError::Bind {
        addr,
        message: e.to_string(),
    })?;
    info!(%addr, "serving /metrics, /livez and /readyz");
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            loop {
                ticker.tick().await;
                handle.run_upkeep();
            }
        })
    };
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handle = handle.clone();
            let readiness = readiness.clone();
            let liveness = liveness.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    respond(request, handle.clone(), readiness.clone(), liveness.clone())
                });
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, error = %err, "ops connection ended with an error");
                }
            });
        }
    });
    Ok(OpsServer {
        addr,
        tasks: vec![upkeep, accept],
    })
}

/// The body of `/readyz`.
#[derive(Debug, Serialize)]
struct ReadyBody<'a> {
    ready: bool,
    checks: &'a [Check],
}

/// The body of a failing `/livez`.
#[derive(Debug, Serialize)]
struct LiveBody<'a> {
    live: bool,
    checks: &'a [Check],
}

async fn respond(
    request: Request<Incoming>,
    handle: PrometheusHandle,
    readiness: Readiness,
    liveness: Liveness,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n",
        ));
    }
    Ok(match request.uri().path() {
        METRICS_PATH => reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
        LIVEZ_PATH => {
            let checks = liveness.evaluate();
            if checks.iter().all(|c| c.ok) {
                reply(StatusCode::OK, "text/plain", "ok\n")
            } else {
                let body = serde_json::to_string(&LiveBody {
                    live: false,
                    checks: &checks,
                })
                .unwrap_or_else(|_| "{\"live\":false}".to_owned());
                reply(StatusCode::SERVICE_UNAVAILABLE, "application/json", body)
            }
        }
        READYZ_PATH => {
            let checks = readiness.evaluate().await;
            let ready = checks.iter().all(|c| c.ok);
            let body = serde_json::to_string(&ReadyBody {
                ready,
                checks: &checks,
            })
            .unwrap_or_else(|_| format!("{{\"ready\":{ready}}}"));
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", body)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    })
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watchdog_fails_after_its_silence_and_passes_again_when_beaten() {
        let dog = Watchdog::new("coordinator", Duration::from_millis(50));
        assert!(dog.check().ok, "created beaten");
        let liveness = Liveness::watchdogs(vec![dog.clone()]);
        std::thread::sleep(Duration::from_millis(120));
        let failed = dog.check();
        assert!(!failed.ok, "silent for longer than allowed");
        assert_eq!(failed.name, "coordinator");
        assert!(!liveness.evaluate()[0].ok, "clones share the beats");
        dog.beat();
        assert!(dog.check().ok, "beaten again");
        assert!(liveness.evaluate().iter().all(|c| c.ok));
        assert!(Liveness::always().evaluate().is_empty());
    }
}
