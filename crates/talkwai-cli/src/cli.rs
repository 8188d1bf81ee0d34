//! The command line, as clap types. Every subcommand's logic lives in its own module and takes
//! these structs, so tests can drive it without a process.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use uuid::Uuid;

/// Default NATS URL (the port `talkwai up` prefers).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// `talkwai`: operate the TalkwAI event backbone.
#[derive(Debug, Parser)]
#[command(
    name = "talkwai",
    version,
    about = "Operate the TalkwAI event backbone"
)]
pub struct Cli {
    /// NATS server URL.
    #[arg(
        long,
        global = true,
        env = "TALKWAI_NATS_URL",
        default_value = DEFAULT_NATS_URL
    )]
    pub nats_url: String,
    /// The master key that opens sealed personal fields (`events show|tail`, `projections
    /// rebuild|replay`, `member invite`).
    #[command(flatten)]
    pub keys: talkwai_keys::KeyArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one command and print the reply (exit code 1 when it is rejected).
    Cmd(CmdArgs),
    /// Send one InstaQL-shaped query to the query API and print the answer (exit code 1 when
    /// it is refused).
    Query(QueryArgs),
    /// List the peers present in a room.
    Presence(PresenceArgs),
    /// Follow rooms' real-time messages.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Read the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Mint tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The personal-data keys: a new master key, its rotation, backups, destroying one.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Members in one step.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Tenants: export everything of one (offboarding, access requests).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Inspect and operate the PostgreSQL read models (the projector).
    Projections(ProjectionsArgs),
    /// Run the whole system locally: nats-server, PostgreSQL, the command service, the
    /// projector, the query API, the notifier and a demo tenant.
    Up(UpArgs),
}

/// `talkwai cmd <subject> <json>`.
#[derive(Debug, Args)]
pub struct CmdArgs {
    /// Command subject, `talkwai.cmd.<tenant|platform>.<aggregate>.<action>`; the
    /// `talkwai.cmd.` prefix may be left out.
    pub subject: String,
    /// The command body (JSON object); `-` reads stdin, `@path` reads a file.
    pub json: String,
    /// Bearer token (member/admin JWT or the platform token).
    #[arg(long, env = "TALKWAI_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Idempotency key; a fresh UUID when absent. Retries reuse it.
    #[arg(long)]
    pub command_id: Option<Uuid>,
    /// How long to wait for each reply.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How many times to send the command (same command id) when no reply comes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
}

/// `talkwai query <json>`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query (a JSON object, e.g. `{"tasks": {"$": {"limit": 5}}}`, or the request form
    /// `{"query": {...}, "minSeq": n}`); `-` reads stdin, `@path` reads a file.
    pub json: String,
    /// Whose data: a tenant UUID or `platform` (all tenants; admins and the platform token).
    /// Default: the `tenant` claim of a member token.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Bearer token (member/admin JWT or the platform token).
    #[arg(long, env = "TALKWAI_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Wait (up to 5s, server-side) until the read models have applied this stream sequence
    /// (a command reply's `seq`): read your own writes.
    #[arg(long)]
    pub min_seq: Option<u64>,
    /// How long to wait for each reply.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How many times to send the query when no reply comes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
}

/// `talkwai presence <room-type> <room-id>`.
#[derive(Debug, Args)]
pub struct PresenceArgs {
    /// `tenant` or `admin`.
    pub room_type: String,
    /// The tenant id, or `global` for the admin room.
    pub room_id: String,
    /// Bearer token (a member of the tenant, or an admin).
    #[arg(long, env = "TALKWAI_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Print the service's JSON reply instead of one line per peer.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the reply.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `talkwai rooms ...`.
#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// Print a room's topic messages and presence changes as they happen, one per line,
    /// until Ctrl-C.
    Watch(WatchArgs),
}

/// `talkwai rooms watch <room-type> <room-id>`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// `tenant` or `admin`.
    pub room_type: String,
    /// The tenant id, or `global` for the admin room.
    pub room_id: String,
    /// Print JSON lines (`{"time", "subject", "data"}`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `talkwai events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the log from a sequence, optionally following new events.
    Tail(TailArgs),
    /// Print the full history of one aggregate and its folded version.
    Show(ShowArgs),
    /// Write the log (or one tenant's part) to stdout as JSON lines: first the scope's
    /// personal-data keys as stored (wrapped; `{"key": {"name", "value"}}`), then the events
    /// (seq, subject, time, headers, payload). A progress bar goes to stderr.
    Export(ExportArgs),
    /// Append JSON lines from `talkwai events export` (stdin) to an empty event stream, in
    /// order, with their subjects, headers and payloads, after restoring its keys (a key
    /// already there is kept, a destroyed one stays destroyed, a different one is refused).
    Import(ImportArgs),
}

/// `talkwai events export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this tenant's events (a UUID), or `platform` for admins and users.
    #[arg(long)]
    pub tenant: Option<String>,
    /// First stream sequence to export.
    #[arg(long, default_value_t = 1)]
    pub from_seq: u64,
}

/// `talkwai events import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Replicas of the event stream when the import creates it (0: 1 on a new stream).
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
}

/// `talkwai events tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only this tenant's events (a UUID), or `platform` for admins and users.
    #[arg(long)]
    pub tenant: Option<String>,
    /// First stream sequence to print; default: the last `--last` events of the log.
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// How many of the newest events to start with when `--from-seq` is absent.
    #[arg(long, default_value_t = 20)]
    pub last: u64,
    /// Only events whose type matches this glob (`task.*`, `*.created`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Keep printing new events until Ctrl-C.
    #[arg(long, overrides_with = "no_follow")]
    pub follow: bool,
    /// Stop at the head of the log (the default).
    #[arg(long, overrides_with = "follow")]
    pub no_follow: bool,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `talkwai events show <aggregate>/<id>`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The aggregate: `task/<uuid>`, `member/<uuid>`, `agent/<uuid>`, `tenant/<uuid>`,
    /// `admin/<uuid>`, `user/<uuid>`.
    pub target: String,
    /// The owning tenant (members, agents and tasks).
    #[arg(long)]
    pub tenant: Option<Uuid>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `talkwai keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random master key (base64) for `TALKWAI_MASTER_KEY`.
    NewMaster,
    /// Re-wrap every tenant key under `TALKWAI_MASTER_KEY`, opening the old ones with
    /// `TALKWAI_MASTER_KEY_PREVIOUS`; the log and the data keys are untouched.
    RotateMaster,
    /// Write every key of the bucket, wrapped, to stdout as JSON lines (`talkwai events
    /// export` carries them too, before the events).
    Export,
    /// Restore the lines of `talkwai keys export` (stdin): a key already there is kept, a
    /// destroyed one stays destroyed, a different key under the same name is refused.
    Import,
    /// Destroy one data subject's key: every field sealed with it reads as erased for good.
    Destroy(DestroyKeyArgs),
}

/// `talkwai keys destroy`.
#[derive(Debug, Args)]
pub struct DestroyKeyArgs {
    /// The scope of the subject: its tenant's UUID, or `platform` (admins, `$users`).
    #[arg(long)]
    pub scope: String,
    /// The key's id (the `Talkwai-Key` header of the subject's events).
    #[arg(long)]
    pub key: Uuid,
}

/// `talkwai token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an HS256 JWT with `TALKWAI_JWT_SECRET` and print it.
    Mint(MintArgs),
}

/// The principal kind of a minted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A member of a tenant (needs `--tenant`).
    Member,
    /// A TalkwAI admin.
    Admin,
}

/// `talkwai member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Create a `$users` identity and a member linked to it, then print both ids and the
    /// member's token (needs the platform token or an admin's, and `TALKWAI_JWT_SECRET`).
    Invite(InviteArgs),
}

/// `talkwai tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Write everything the log holds about one tenant as one JSON document: the tenant, its
    /// members, agents, tasks, the `$users` its members link to, the links and every event
    /// (current version). A progress bar goes to stderr.
    Export(TenantExportArgs),
}

/// `talkwai tenant export`.
#[derive(Debug, Args)]
pub struct TenantExportArgs {
    /// The tenant (a UUID).
    #[arg(long)]
    pub tenant: Uuid,
    /// Write the document here (replaced atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `talkwai member invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: Uuid,
    /// Email (of the identity and the member).
    #[arg(long)]
    pub email: String,
    /// First name.
    #[arg(long)]
    pub first_name: String,
    /// Last name.
    #[arg(long)]
    pub last_name: String,
    /// Role in the tenant: `user`, `manager` or `owner`.
    #[arg(long, default_value = "user")]
    pub role: String,
    /// Bearer token allowed to create identities: the platform token or an admin's JWT.
    #[arg(long, env = "TALKWAI_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    /// Lifetime of the printed token: `90s`, `15m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// `talkwai token mint`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// Member or admin (`member` with `--member`).
    #[arg(long, value_enum, required_unless_present = "member")]
    pub kind: Option<KindArg>,
    /// The `$users` id (`sub`).
    #[arg(long, required_unless_present = "member", conflicts_with = "member")]
    pub sub: Option<Uuid>,
    /// A member id: read its `$users` link, tenant and role from the log (needs NATS) and mint
    /// its token; no `--sub` needed.
    #[arg(long, conflicts_with_all = ["sub", "role"])]
    pub member: Option<Uuid>,
    /// The member's tenant (with `--member`: where to look; any tenant when left out).
    #[arg(long)]
    pub tenant: Option<Uuid>,
    /// The role at minting time (informational).
    #[arg(long)]
    pub role: Option<String>,
    /// Lifetime: `90s`, `15m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Issuer claim (`iss`), when the service requires one.
    #[arg(long, env = "TALKWAI_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// Audience claim (`aud`), when the service requires one.
    #[arg(long, env = "TALKWAI_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// `talkwai projections ...`.
#[derive(Debug, Args)]
pub struct ProjectionsArgs {
    /// PostgreSQL connection string of the read models (URL or `key=value` form).
    #[arg(
        long,
        global = true,
        env = "TALKWAI_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: ProjectionsCommand,
}

/// The projection subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Every non-retired generation: checkpoint, stream head, lag, dead letters, stops.
    Status(StatusArgs),
    /// Events the projector could not apply.
    DeadLetters(DeadLettersArgs),
    /// Resume a projection stopped at a poison event (again, or past it with `--skip`).
    Retry(RetryArgs),
    /// Replay the log into a new generation and swap it in when it matches the live one
    /// (exit code 1 when the parity check fails).
    Rebuild(RebuildArgs),
    /// Point the views back at the generation the last rebuild replaced.
    Rollback,
    /// Drop a generation that is not live (its schema and its registration).
    Drop(DropArgs),
    /// Replay the log up to a point into a snapshot schema (never served by the views).
    Replay(ReplayArgs),
}

/// `talkwai projections status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also measure the apply rate (samples `applied` twice, one second apart).
    #[arg(long)]
    pub rate: bool,
}

/// `talkwai projections dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// Include resolved dead letters.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `talkwai projections retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Skip the poison event (move the checkpoint past it) instead of applying it again.
    #[arg(long)]
    pub skip: bool,
}

/// `talkwai projections rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Rebuild only this tenant's rows (copied into the live generation at the end).
    #[arg(long)]
    pub tenant: Option<Uuid>,
    /// Swap even when the parity check finds differences.
    #[arg(long)]
    pub force: bool,
    /// Events per transaction near the live checkpoint (the live projector pauses meanwhile).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Rows held in memory in the bulk phase before they are written with COPY (≈ 8 KiB of
    /// peak memory per row, all buffers included).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub bulk_rows: u32,
}

/// `talkwai projections drop <generation>`.
#[derive(Debug, Args)]
pub struct DropArgs {
    /// The generation number (see `talkwai projections status`).
    pub generation: i32,
}

/// `talkwai projections replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("until").required(true).args(["until_seq", "until_time"])))]
pub struct ReplayArgs {
    /// Replay through this stream sequence.
    #[arg(long)]
    pub until_seq: Option<u64>,
    /// Replay through the last event stored at or before this time (RFC 3339).
    #[arg(long)]
    pub until_time: Option<String>,
    /// The snapshot schema to create (`[a-z0-9_]`, must not exist).
    #[arg(long)]
    pub into: String,
}

/// `talkwai up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Skip seeding the demo tenant.
    #[arg(long)]
    pub no_demo: bool,
    /// Where the servers keep their data and `secrets.json`; default `<repo>/.data`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not start nats-server; use the one at `--nats-url`.
    #[arg(long)]
    pub no_nats: bool,
    /// Port for the local nats-server (0: any free port); a free port when it is taken.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Use this PostgreSQL instead of starting one.
    #[arg(long, env = "TALKWAI_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Port for the local PostgreSQL (0: any free port); a free port when it is taken.
    #[arg(long, default_value_t = 5432)]
    pub postgres_port: u16,
    /// WebSocket port of the local nats-server, for browsers (0: any free port); a free port
    /// when it is taken.
    #[arg(long, default_value_t = 8080)]
    pub ws_port: u16,
    /// The nats-server WebSocket URL the dashboard connects to when `--no-nats` is given.
    #[arg(
        long,
        env = "TALKWAI_NATS_WS_URL",
        default_value = "ws://127.0.0.1:8080"
    )]
    pub nats_ws_url: String,
    /// Port of the dashboard's HTTP server on 127.0.0.1 (0: any free port); a free port when
    /// it is taken.
    #[arg(long, default_value_t = 8081)]
    pub dashboard_port: u16,
    /// The built dashboard to serve; default `<repo>/clients/dashboard/dist`.
    #[arg(long)]
    pub dashboard_dir: Option<PathBuf>,
    /// Write the local nats-server's protocol trace (every message's subject; payloads cut to
    /// 32 bytes, but headers such as `Authorization` are in it) to this file: for debugging,
    /// and for the test that every subject on the wire is in the contract. Never in production.
    #[arg(long, env = "TALKWAI_NATS_TRACE_FILE")]
    pub nats_trace_file: Option<PathBuf>,
}

/// Parses `500ms`, `90s`, `15m`, `1h`, `7d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 90s, 15m, 1h, 7d"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(value)),
        "" | "s" => Some(value),
        "m" => value.checked_mul(60),
        "h" => value.checked_mul(3600),
        "d" => value.checked_mul(86_400),
        other => {
            return Err(format!(
                "invalid duration unit {other:?}: use ms, s, m, h or d"
            ));
        }
    };
    seconds
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
