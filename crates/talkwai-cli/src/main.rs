//! `talkwai`: the binary edge. Parses the command line, sets up logging to stderr, runs the
//! command and turns its error into a message and an exit code (see the library docs).

/// mimalloc instead of glibc malloc: glibc spent ≈ 15 % of the command path's CPU in
/// `malloc_consolidate`/`_int_free` (BENCHMARKS.md, "Commands").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use talkwai_cli::{Cli, CliError, cli::Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `up` runs a service and reports its progress; the other commands stay quiet.
    let default_filter = match cli.command {
        Command::Up(_) => "info,async_nats=warn",
        _ => "warn,async_nats=error",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    match talkwai_cli::run(cli).await {
        Ok(()) | Err(CliError::OutputClosed) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("talkwai: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::from(err.exit_code())
        }
    }
}
