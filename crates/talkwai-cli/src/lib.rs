//! `talkwai`, the operator CLI of the TalkwAI event backbone: run the whole system locally
//! (`up`), send commands (`cmd`) and queries (`query`), see who is in a room (`presence`) and
//! follow it live (`rooms watch`), read, export and import the event log (`events tail`,
//! `events show`, `events export`, `events import`), operate
//! the read models (`projections status|dead-letters|retry|rebuild|rollback|drop|replay`) and
//! mint tokens (`token mint`). The binary is a thin edge over this library so tests can drive the
//! logic directly; every subcommand has its own module.
//!
//! # Architecture invariant
//! The CLI reads the log of record (JetStream) and talks to services over NATS like any other
//! client; it never writes events itself. `talkwai up` is the one place that runs servers
//! (through `talkwai-testkit`) and services (command service, projector, query API, notifier)
//! in process.
//! `projections` writes only through `talkwai_projector`'s operator functions.
//!
//! # Exit codes
//! 0 success; 1 a command, query or presence request was refused, or nothing was found;
//! 2 bad arguments or input; 3 an operational failure (NATS unreachable, no reply, corrupt
//! history, I/O).
//!
//! # Layout
//! - [`cli`]: the clap command line.
//! - [`send`]: `cmd`, with idempotent retries.
//! - [`query`]: `query`; [`request`] its (and `presence`'s) request/reply round trip.
//! - [`rooms`]: `presence` and `rooms watch`.
//! - [`events`]: `events tail`, `events show`, `events export` and `events import`.
//! - [`token`]: `token mint`.
//! - [`projections`]: the read models' status, dead letters, retries, rebuilds and replays.
//! - [`up`]: the local system; [`demo`] its seed, [`secrets`] its `secrets.json` and
//!   [`dashboard`] the browser dashboard it serves.
//! - [`error`]: [`CliError`] and the exit codes; [`output`]: stdout that tolerates a closed pipe.

pub mod cli;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod events;
pub mod output;
pub mod projections;
pub mod query;
pub mod request;
pub mod rooms;
pub mod secrets;
pub mod send;
pub mod token;
pub mod up;

use std::time::Duration;

pub use cli::Cli;
pub use error::CliError;

use cli::{Command, EventsCommand, RoomsCommand, TokenCommand};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Cmd(args) => send::run(&cli.nats_url, args).await,
        Command::Query(args) => query::run(&cli.nats_url, args).await,
        Command::Presence(args) => rooms::presence(&cli.nats_url, args).await,
        Command::Rooms(RoomsCommand::Watch(args)) => rooms::watch(&cli.nats_url, args).await,
        Command::Events(EventsCommand::Tail(args)) => events::tail(&cli.nats_url, args).await,
        Command::Events(EventsCommand::Show(args)) => events::show(&cli.nats_url, args).await,
        Command::Events(EventsCommand::Export(args)) => events::export(&cli.nats_url, args).await,
        Command::Events(EventsCommand::Import(args)) => events::import(&cli.nats_url, args).await,
        Command::Token(TokenCommand::Mint(args)) => token::run_mint(args),
        Command::Projections(args) => projections::run(&cli.nats_url, args).await,
        Command::Up(args) => up::run(&cli.nats_url, args).await,
    }
}

/// Connects to NATS, failing fast when nobody listens.
pub async fn connect(url: &str) -> Result<async_nats::Client, CliError> {
    async_nats::ConnectOptions::new()
        .name("talkwai-cli")
        .connection_timeout(Duration::from_secs(5))
        .connect(talkwai_eventstore::server_urls(url))
        .await
        .map_err(|e| CliError::Connect {
            url: url.to_owned(),
            message: e.to_string(),
        })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
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
