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

/// Connects a service to the servers of a `TALKWAI_NATS_URL` value (`url`, one URL or several,
/// comma separated) with `options` (its credentials: those in `url`, from
/// `talkwai_eventstore::connect_options`, or given): named `name` in the server's connection
/// list, retrying the first connect until a server answers, reconnecting on the shared policy
/// (`talkwai_eventstore::reconnect_delay`).
pub async fn connect(
    name: String,
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    options
        .name(name)
        .retry_on_initial_connect()
        .reconnect_delay_callback(talkwai_eventstore::reconnect_delay)
        .connect(talkwai_eventstore::plain_servers(url))
        .await
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
