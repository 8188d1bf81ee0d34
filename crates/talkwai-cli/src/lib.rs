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
//! (through `talkwai-testkit`) and services (command service, projector, query service, notifier)
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
//! - [`up`]: the local system; [`demo`] its seed, [`secrets`] its `secrets.json`,
//!   [`nats_auth`] its NATS users, permissions and auth callout, [`guard`] the servers' death
//!   with it and leftovers of a killed run, and [`dashboard`] the browser dashboard it serves.
//! - [`member`]: a member's `$users` link, read from the log (`token mint --member`).
//! - [`error`]: [`CliError`] and the exit codes; [`output`]: stdout that tolerates a closed pipe.

pub mod cli;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod events;
pub mod guard;
pub mod keys;
pub mod member;
pub mod nats_auth;
pub mod output;
pub mod projections;
pub mod query;
pub mod request;
pub mod rooms;
pub mod secrets;
pub mod send;
pub mod tenant;
pub mod token;
pub mod up;

use std::time::Duration;

pub use cli::Cli;
pub use error::CliError;

use cli::{Command, EventsCommand, MemberCommand, RoomsCommand, TenantCommand, TokenCommand};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Cmd(args) => send::run(&cli.nats_url, args).await,
        Command::Keys(command) => keys::run(&cli.nats_url, &cli.keys, command).await,
        Command::Query(args) => query::run(&cli.nats_url, args).await,
        Command::Presence(args) => rooms::presence(&cli.nats_url, args).await,
        Command::Rooms(RoomsCommand::Watch(args)) => rooms::watch(&cli.nats_url, args).await,
        Command::Events(EventsCommand::Tail(args)) => {
            events::tail(&cli.nats_url, &cli.keys, args).await
        }
        Command::Events(EventsCommand::Show(args)) => {
            events::show(&cli.nats_url, &cli.keys, args).await
        }
        Command::Events(EventsCommand::Export(args)) => events::export(&cli.nats_url, args).await,
        Command::Events(EventsCommand::Import(args)) => events::import(&cli.nats_url, args).await,
        Command::Token(TokenCommand::Mint(args)) => {
            token::run_mint(&cli.nats_url, &cli.keys, args).await
        }
        Command::Member(MemberCommand::Invite(args)) => {
            member::invite(&cli.nats_url, &cli.keys, args).await
        }
        Command::Tenant(TenantCommand::Export(args)) => {
            tenant::export(&cli.nats_url, &cli.keys, args).await
        }
        Command::Projections(args) => projections::run(&cli.nats_url, &cli.keys, args).await,
        Command::Up(args) => up::run(&cli.nats_url, args).await,
    }
}

/// Connects to NATS, failing fast when nobody listens. Credentials in the URL
/// (`nats://user:password@host:port`, or `nats://token@host:port`) or in the environment
/// (`TALKWAI_NATS_USER`/`_PASSWORD`, `_TOKEN`, `_NKEY`, `_CREDS`) sign in.
pub async fn connect(url: &str) -> Result<async_nats::Client, CliError> {
    let (options, servers) = connect_options(url).map_err(|e| CliError::Connect {
        url: redact(url),
        message: e.to_string(),
    })?;
    options
        .name("talkwai-cli")
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|e| CliError::Connect {
            url: redact(url),
            message: e.to_string(),
        })
}

pub use talkwai_eventstore::{connect_options, plain_servers, redact};

/// Registers SIGINT and SIGTERM handlers now (from then on neither ends the process) and
/// returns a future resolving on the first of them.
pub fn shutdown_signals() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let register = |kind| signal(kind).map_err(|e| CliError::Nats(format!("signal handler: {e}")));
    let mut interrupt = register(SignalKind::interrupt())?;
    let mut terminate = register(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (the services' own).
pub use talkwai_service::shutdown_signal;
