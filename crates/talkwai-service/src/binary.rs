//! The `main` of every service binary, once: telemetry, the command line (the service's
//! `Config` and `TALKWAI_METRICS_ADDR`), `build`, the operations endpoint, `run` until
//! SIGINT/SIGTERM. A binary is its allocator and one call: [`run::<S>()`](run), where `S`
//! implements [`Service`] in its library.

use std::future::Future;
use std::net::SocketAddr;

use clap::{CommandFactory as _, FromArgMatches as _};
use talkwai_telemetry::ops::{Liveness, OpsError, Readiness};

/// A service as its binary runs it.
pub trait Service: Sized {
    /// Its settings, from flags or `TALKWAI_*` environment variables.
    type Config: clap::Args + clap::FromArgMatches;
    /// Why it could not start or stopped with an error.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The binary's name: the command line's, and the span exporter's service name.
    const BINARY: &'static str;
    /// One line on what it does (`--help`).
    const ABOUT: &'static str;

    /// Connects and sets up what it needs.
    fn build(config: Self::Config) -> impl Future<Output = Result<Self, Self::Error>>;

    /// `/readyz`: its dependencies answer.
    fn readiness(&self) -> Readiness;

    /// `/livez`: it still makes progress (default: while the process serves HTTP).
    fn liveness(&self) -> Liveness {
        Liveness::always()
    }

    /// Serves until `shutdown` resolves, then finishes what it has in hand.
    fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), Self::Error>>;
}

/// The operations endpoint's flag, the same for every service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OpsArgs {
    /// Serve `/metrics`, `/livez` and `/readyz` on this address, e.g. `0.0.0.0:9101`.
    #[arg(long, env = "TALKWAI_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// A service binary's command line.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Cli<C: clap::Args> {
    #[command(flatten)]
    config: C,
    #[command(flatten)]
    ops: OpsArgs,
}

/// Why a service binary ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `build` failed.
    #[error("starting {binary}")]
    Start {
        /// The binary.
        binary: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The operations endpoint could not start.
    #[error("serving /metrics")]
    Ops(#[from] OpsError),
    /// `run` failed.
    #[error("running {binary}")]
    Run {
        /// The binary.
        binary: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs the service `S` as its binary: telemetry (`talkwai_telemetry::init`), the command line
/// (`--help` and bad flags exit here, as clap does), `build`, `/metrics`, `/livez` and `/readyz`
/// when `TALKWAI_METRICS_ADDR` is set, then `run` until SIGINT/SIGTERM.
pub async fn run<S: Service>() -> Result<(), RunError> {
    // Flushes exported spans when this returns.
    let _telemetry = talkwai_telemetry::init(S::BINARY);
    let matches = Cli::<S::Config>::command()
        .name(S::BINARY)
        .about(S::ABOUT)
        .get_matches();
    let cli = Cli::<S::Config>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let service = S::build(cli.config).await.map_err(|e| RunError::Start {
        binary: S::BINARY,
        source: Box::new(e),
    })?;
    let _ops = match cli.ops.metrics_addr {
        Some(addr) => Some(
            talkwai_telemetry::ops::serve_ops_with(addr, service.readiness(), service.liveness())
                .await?,
        ),
        None => None,
    };
    service
        .run(crate::shutdown_signal())
        .await
        .map_err(|e| RunError::Run {
            binary: S::BINARY,
            source: Box::new(e),
        })
}
