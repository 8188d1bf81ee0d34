//! What every TalkwAI service shares, written once: how it connects to NATS ([`connect`]), how
//! it serves its NATS services-API endpoints ([`serve`]: register, confirm the subscriptions,
//! one task per request under a cap, leave the queue group, drain), when it stops
//! ([`shutdown_signal`]) and its binary's `main` ([`binary`]: command line, telemetry, the
//! operations endpoint). The token flags every service takes are `talkwai_auth::AuthArgs`;
//! the operations endpoint is `talkwai_telemetry::ops`.
//!
//! # Architecture invariant
//! Knows NATS, tokio, clap and the telemetry crate, never a service's messages, the domain or
//! PostgreSQL: a service hands the loop a [`serve::Handler`] that turns a request into a reply,
//! and its binary a [`binary::Service`].
//!
//! # Layout
//! - [`serve`]: the services-API serving loop.
//! - [`binary`]: a service binary's `main`.
//! - this file: [`connect`] and [`shutdown_signal`].

pub mod binary;
pub mod serve;

pub use serve::{Endpoints, Handler, InFlight, Registration, ServeError};

/// The NATS server(s) of a service, the same flag in every service's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated; how to sign in: README, "NATS credentials".
    #[arg(
        long,
        env = "TALKWAI_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

impl NatsArgs {
    /// The servers of `url` (one URL or several, comma separated).
    pub fn new(url: &str) -> Self {
        Self {
            nats_url: url.to_owned(),
        }
    }

    /// Connect options signed in with the credentials of the URL or of the environment
    /// (`talkwai_eventstore::connect_options`).
    ///
    /// # Errors
    /// When the credentials are ambiguous, incomplete or unreadable.
    pub fn options(&self) -> Result<async_nats::ConnectOptions, talkwai_eventstore::ConnectError> {
        talkwai_eventstore::connect_options(&self.nats_url).map(|(options, _)| options)
    }

    /// Connects with `options` (credentials: [`options`](Self::options), or given), named
    /// `name` in the server's connection list, retrying the first connect until a server
    /// answers, reconnecting on the shared policy (`talkwai_eventstore::reconnect_delay`).
    ///
    /// # Errors
    /// When async-nats refuses the options.
    pub async fn connect(
        &self,
        name: String,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        options
            .name(name)
            .retry_on_initial_connect()
            .reconnect_delay_callback(talkwai_eventstore::reconnect_delay)
            .connect(talkwai_eventstore::plain_servers(&self.nats_url))
            .await
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; on SIGINT alone when SIGTERM cannot be caught.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
