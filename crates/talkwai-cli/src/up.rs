//! `talkwai up`: the whole system on one machine. Starts a persistent nats-server (JetStream)
//! and a persistent PostgreSQL under the data dir, runs the command service, the projector
//! (read models in PostgreSQL), the query service over them and the notifier
//! (rooms, presence, alerts) in this process, serves the live dashboard (`clients/dashboard`)
//! over HTTP with nats-server's WebSocket listener for browsers, seeds the demo tenant once,
//! prints what to try (dashboard URLs with dev tokens included), and on SIGINT/SIGTERM stops
//! the services in reverse order of their start (each draining what it has in flight) and then
//! the servers, keeping their data.
//!
//! nats-server runs production's users and permissions (`deploy/nats/auth.conf`, see
//! [`nats_auth`]): the services sign in as their users, `up` itself and the printed URL as
//! `operator`, browsers and other clients with a bearer token through the auth callout; the
//! servers die with `up` and a leftover of a killed run is stopped first (see [`guard`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use talkwai_auth::{AuthArgs, TokenVerifier};
use talkwai_command_service::{CommandService, Config};
use talkwai_notifier::Notifier;
use talkwai_notifier::signin::SignIns;
use talkwai_query::QueryServer;
use talkwai_testkit::{NatsServer, Postgres};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cli::UpArgs;
use crate::error::CliError;
use crate::guard::{self, Guardian};
use crate::output::line;
use crate::{dashboard, demo, events, nats_auth, secrets};

/// The line `talkwai up` prints once everything runs (scripts and tests wait for it).
pub const READY_LINE: &str = "talkwai up: ready";
/// How long the demo owner's printed token is valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The workspace root: the nearest ancestor of the current directory holding this crate,
/// else the one this binary was built from, else the current directory.
fn repo_root() -> PathBuf {
    let is_root = |dir: &Path| dir.join("crates/talkwai-cli/Cargo.toml").is_file();
    if let Ok(cwd) = std::env::current_dir()
        && let Some(root) = cwd.ancestors().find(|dir| is_root(dir))
    {
        return root.to_path_buf();
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if is_root(&built) {
        return std::path::absolute(&built).unwrap_or(built);
    }
    PathBuf::from(".")
}

/// The data dir, created and absolute.
fn data_dir(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let dir = given.unwrap_or_else(|| repo_root().join(".data"));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::io("creating", &dir, e))?;
    std::path::absolute(&dir).map_err(|e| CliError::io("resolving", &dir, e))
}

/// `Some(port)` when `port` is non-zero and free on 127.0.0.1 right now.
fn free_preferred(port: u16) -> Option<u16> {
    (port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()).then_some(port)
}

/// The nats-server pid file in the store dir (how a later `up` finds a leftover server).
const NATS_PID_FILE: &str = "nats-server.pid";

/// Starts nats-server with JetStream, a WebSocket listener for browsers (no TLS: loopback
/// only) and `auth` (the users, permissions and auth callout of [`nats_auth`]), after
/// stopping a leftover server of this store dir.
async fn start_nats(
    store: PathBuf,
    port: u16,
    ws_port: u16,
    auth: &str,
) -> Result<NatsServer, CliError> {
    let pid_file = store.join(NATS_PID_FILE);
    guard::stop_leftover_nats(&pid_file).await?;
    let builder = || {
        NatsServer::builder()
            .store_dir(store.clone())
            .persistent(true)
            .server_name("talkwai-local")
            .websocket(true)
            .extra_config(format!(
                "pid_file: {}\n{auth}",
                nats_auth::quote(&pid_file.to_string_lossy())
            ))
    };
    if let Some(port) = free_preferred(port) {
        let preferred = match free_preferred(ws_port) {
            Some(ws_port) => builder().port(port).websocket_port(ws_port),
            None => builder().port(port),
        };
        match preferred.start().await {
            Ok(server) => return Ok(server),
            Err(err) => tracing::warn!(port, error = %err, "nats port taken, using a free one"),
        }
    }
    builder().start().await.map_err(|source| CliError::Server {
        action: "starting nats-server",
        source,
    })
}

/// Starts PostgreSQL on `data`, after stopping a leftover postmaster of that data dir.
async fn start_postgres(data: PathBuf, port: u16) -> Result<Postgres, CliError> {
    guard::stop_leftover_postgres(&data).await?;
    let builder = || {
        Postgres::builder()
            .data_dir(data.clone())
            .persistent(true)
            .durable(true)
    };
    if let Some(port) = free_preferred(port) {
        match builder().port(port).start().await {
            Ok(server) => return Ok(server),
            Err(err) => tracing::warn!(port, error = %err, "postgres port taken, using a free one"),
        }
    }
    builder().start().await.map_err(|source| CliError::Server {
        action: "starting postgresql",
        source,
    })
}

/// A service's settings as its binary reads them (defaults and `TALKWAI_*` variables), with
/// `args` on its command line; `what` names the service in an error.
fn settings<C: clap::Args + clap::FromArgMatches>(
    what: &str,
    args: &[&str],
) -> Result<C, CliError> {
    let usage = |e: clap::Error| CliError::Usage(format!("{what} settings: {e}"));
    let matches = C::augment_args(clap::Command::new("talkwai-up"))
        .try_get_matches_from(std::iter::once("talkwai-up").chain(args.iter().copied()))
        .map_err(usage)?;
    C::from_arg_matches(&matches).map_err(usage)
}

/// The projector's settings: defaults and `TALKWAI_PROJECTOR_*` tuning variables, with the
/// local NATS and PostgreSQL URLs.
fn projector_config(
    nats_url: &str,
    database_url: &str,
    secrets: &secrets::Secrets,
) -> Result<talkwai_projector::Config, CliError> {
    let mut config: talkwai_projector::Config =
        settings("projector", &["--database-url", database_url])?;
    config.nats = talkwai_service::NatsArgs::new(nats_url);
    local_keys(&mut config.keys, secrets);
    config.database_url = database_url.to_owned();
    config.instance = "talkwai-up".to_owned();
    Ok(config)
}

/// The query service's settings: defaults and `TALKWAI_QUERY_*` tuning variables, with the
/// local NATS and PostgreSQL URLs and the secrets of the data dir.
fn query_config(
    nats_url: &str,
    database_url: &str,
    secrets: &secrets::Secrets,
) -> Result<talkwai_query::Config, CliError> {
    let mut config: talkwai_query::Config =
        settings("query service", &["--database-url", database_url])?;
    config.nats = talkwai_service::NatsArgs::new(nats_url);
    config.database_url = database_url.to_owned();
    local_auth(&mut config.auth, secrets);
    config.instance = "talkwai-up".to_owned();
    Ok(config)
}

/// The local system's master key: the data dir's `master.key` unless the operator set
/// `TALKWAI_MASTER_KEY` or `TALKWAI_MASTER_KEY_FILE` (then a service's own settings keep it).
fn local_keys(keys: &mut talkwai_keys::KeyArgs, secrets: &secrets::Secrets) {
    if let Some(file) = &secrets.master_key_file {
        keys.master_key = None;
        keys.master_key_file = Some(file.clone());
    }
}

/// Whether the operator configured a master key (`TALKWAI_MASTER_KEY[_FILE]`).
fn operator_master_key() -> Result<bool, CliError> {
    let keys: talkwai_keys::KeyArgs = settings("keys", &[])?;
    Ok(keys.master_key.is_some() || keys.master_key_file.is_some())
}

/// The local system's token settings: the secrets of the data dir, no issuer or audience
/// (key files from the environment are kept).
fn local_auth(auth: &mut AuthArgs, secrets: &secrets::Secrets) {
    auth.platform_token = Some(secrets.platform_token.clone());
    auth.jwt_secret = Some(secrets.jwt_secret.clone());
    auth.jwt_issuer = None;
    auth.jwt_audience = None;
}

/// The command service's settings: defaults and `TALKWAI_*` tuning variables, with the local
/// NATS URL and the secrets of the data dir.
fn service_config(nats_url: &str, secrets: &secrets::Secrets) -> Result<Config, CliError> {
    let mut config: Config = settings("command service", &[])?;
    config.nats = talkwai_service::NatsArgs::new(nats_url);
    local_auth(&mut config.auth, secrets);
    local_keys(&mut config.keys, secrets);
    config.instance = "talkwai-up".to_owned();
    Ok(config)
}

/// The notifier's settings: defaults and `TALKWAI_NOTIFIER_*` / `TALKWAI_PRESENCE_*` tuning
/// variables, with the local NATS URL and the secrets of the data dir.
fn notifier_config(
    nats_url: &str,
    secrets: &secrets::Secrets,
) -> Result<talkwai_notifier::Config, CliError> {
    let mut config: talkwai_notifier::Config = settings("notifier", &[])?;
    config.nats = talkwai_service::NatsArgs::new(nats_url);
    local_auth(&mut config.auth, secrets);
    local_keys(&mut config.keys, secrets);
    config.instance = "talkwai-up".to_owned();
    Ok(config)
}

/// Waits until a service answers `$SRV.PING.<name>`.
async fn wait_ready(client: &async_nats::Client, name: &str) -> Result<(), CliError> {
    let subject = format!("$SRV.PING.{name}");
    for _ in 0..300 {
        let ping = client.request(subject.clone(), bytes::Bytes::new());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(CliError::Nats(format!("{name} did not answer {subject}")))
}

/// How long one service may take to stop before `up` goes on without it.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// A service running in this process: its stop signal and its task.
struct Running {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), CliError>>>,
}

/// The in-process services, in start order.
#[derive(Default)]
struct Services(Vec<Running>);

impl Services {
    /// Spawns `run(shutdown)` as the service `name`.
    fn spawn<F, Fut, E>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<CliError>,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let future = run(stopped);
        let task = tokio::spawn(async move { future.await.map_err(Into::into) });
        self.0.push(Running {
            name,
            stop: Some(stop),
            task: Some(task),
        });
    }

    /// Resolves when the first service ends on its own (which is always a failure), with why.
    async fn first_to_end(&mut self) -> CliError {
        let running: Vec<_> = self
            .0
            .iter_mut()
            .filter_map(|r| r.task.as_mut().map(|task| (r.name, task)))
            .collect();
        if running.is_empty() {
            return std::future::pending().await;
        }
        let names: Vec<&'static str> = running.iter().map(|(name, _)| *name).collect();
        let (ended, index, _) =
            futures::future::select_all(running.into_iter().map(|(_, task)| task)).await;
        let name = names[index];
        if let Some(r) = self.0.iter_mut().find(|r| r.name == name) {
            r.task = None;
        }
        match ended {
            Ok(Ok(())) => CliError::Nats(format!("the {name} stopped on its own")),
            Ok(Err(err)) => err,
            Err(err) => CliError::Nats(format!("the {name} task failed: {err}")),
        }
    }

    /// Stops the services one by one, the last started first, each finishing what it has in
    /// flight before the next is stopped.
    async fn stop(self) {
        for mut running in self.0.into_iter().rev() {
            if let Some(stop) = running.stop.take() {
                let _ = stop.send(());
            }
            let Some(task) = running.task.take() else {
                continue;
            };
            tracing::info!(service = running.name, "stopping");
            match tokio::time::timeout(STOP_GRACE, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => {
                    tracing::warn!(service = running.name, error = %err, "stopped with an error")
                }
                Ok(Err(err)) => tracing::warn!(service = running.name, error = %err, "task failed"),
                Err(_) => tracing::warn!(service = running.name, "did not stop in time"),
            }
        }
    }
}

/// What happened to the demo on this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DemoState {
    Seeded(usize),
    AlreadySeeded,
    Skipped,
}

/// The local servers; stopped gracefully (data kept) by [`Servers::stop`], killed by drop,
/// and signalled by their guardians when this process dies.
struct Servers {
    nats: Option<NatsServer>,
    postgres: Option<Postgres>,
    guardians: Vec<Guardian>,
}

impl Servers {
    /// Guards the server with `pid` (see [`guard`]): it gets `signal` when `up` dies.
    fn guard(&mut self, pid: Option<u32>, signal: &str) -> Result<(), CliError> {
        if let Some(pid) = pid {
            self.guardians.push(Guardian::start(pid, signal)?);
        }
        Ok(())
    }

    async fn stop(mut self) {
        for guardian in self.guardians.drain(..) {
            guardian.disarm().await;
        }
        if let Some(nats) = self.nats.as_mut()
            && let Err(err) = nats.stop().await
        {
            tracing::warn!(error = %err, "stopping nats-server");
        }
        if let Some(postgres) = self.postgres.as_mut()
            && let Err(err) = postgres.stop().await
        {
            tracing::warn!(error = %err, "stopping postgresql");
        }
    }
}

/// How the in-process services sign in to NATS: as the users of `auth.conf` on the local
/// server, with the credentials of the URL on an external one.
enum Login<'a> {
    Local(&'a secrets::NatsSecrets),
    External(&'a str),
}

impl Login<'_> {
    fn options(
        &self,
        user: &str,
        password: impl Fn(&secrets::NatsSecrets) -> &SecretString,
    ) -> Result<async_nats::ConnectOptions, CliError> {
        match self {
            Login::Local(nats) => Ok(async_nats::ConnectOptions::with_user_and_password(
                user.to_owned(),
                password(nats).expose_secret().to_owned(),
            )),
            Login::External(url) => crate::connect_options(url)
                .map(|(options, _)| options)
                .map_err(|e| CliError::Connect {
                    url: crate::redact(url),
                    message: e.to_string(),
                }),
        }
    }
}

/// Builds and starts the in-process services, in order: the command service, the auth callout
/// (local NATS only; it reads sign-ins from the stream the command service made), the
/// projector, the query service (its own pool; same platform token and JWT secret as the
/// command service), the notifier.
async fn start_services(
    services: &mut Services,
    client: &async_nats::Client,
    login: &Login<'_>,
    nats_url: &str,
    postgres_url: &str,
    secrets: &secrets::Secrets,
) -> Result<(), CliError> {
    let verifier = || {
        TokenVerifier::new(
            Some(secrets.platform_token.clone()),
            Some(secrets.jwt_secret.clone()),
            None,
            None,
        )
    };
    let commands = CommandService::build_with(
        service_config(nats_url, secrets)?,
        login.options("command-service", |n| &n.command_password)?,
    )
    .await?;
    // After the command service made the event stream: the callout reads sign-ins from it.
    if let Login::Local(nats) = login {
        let sign_ins = SignIns::new(events::open_store(client).await?);
        let (client, verifier, key) = (
            client.clone(),
            verifier(),
            std::sync::Arc::clone(&nats.callout_key),
        );
        services.spawn("auth callout", |stopped| {
            nats_auth::run_callout(client, verifier, sign_ins, key, async {
                let _ = stopped.await;
            })
        });
    }
    services.spawn("command service", |stopped| {
        commands.run(async {
            let _ = stopped.await;
        })
    });
    let projector = talkwai_projector::Projector::build_with(
        projector_config(nats_url, postgres_url, secrets)?,
        login.options("projector", |n| &n.projector_password)?,
    )
    .await?;
    services.spawn("projector", |stopped| {
        projector.run(async {
            let _ = stopped.await;
        })
    });
    let queries = QueryServer::build_with(
        query_config(nats_url, postgres_url, secrets)?,
        login.options("query-service", |n| &n.query_password)?,
    )
    .await?;
    services.spawn("query service", |stopped| {
        queries.run(async {
            let _ = stopped.await;
        })
    });
    let notifier = Notifier::build_with(
        notifier_config(nats_url, secrets)?,
        login.options("notifier", |n| &n.notifier_password)?,
    )
    .await?;
    services.spawn("notifier", |stopped| {
        notifier.run(async {
            let _ = stopped.await;
        })
    });
    Ok(())
}

/// Waits for the services, seeds the demo when needed, prints the banner, then serves until
/// SIGINT/SIGTERM (`Ok`) or until a service ends on its own (`Err`). `banner` holds everything
/// but the demo's state and the owner's token, filled in here.
async fn serve(
    services: &mut Services,
    client: &async_nats::Client,
    banner: &Banner<'_>,
    secrets: &secrets::Secrets,
    no_demo: bool,
) -> Result<(), CliError> {
    for name in [
        talkwai_command_service::SERVICE_NAME,
        talkwai_query::service::SERVICE_NAME,
        talkwai_notifier::PRESENCE_SERVICE,
    ] {
        wait_ready(client, name).await?;
    }
    let store = events::open_store(client).await?;
    let seeded = demo::is_seeded(&store).await?;
    drop(store);
    let owner_token = SecretString::from(demo::owner_token(&secrets.jwt_secret, DEMO_TOKEN_TTL)?);
    let admin_token = SecretString::from(crate::token::mint(
        &crate::token::TokenSpec {
            kind: talkwai_auth::PrincipalKind::Admin,
            sub: dashboard::DEMO_ADMIN_USER,
            tenant: None,
            role: Some("support".into()),
            ttl: DEMO_TOKEN_TTL,
            issuer: None,
            audience: None,
        },
        &secrets.jwt_secret,
    )?);
    let demo_state = if seeded {
        DemoState::AlreadySeeded
    } else if no_demo {
        DemoState::Skipped
    } else {
        DemoState::Seeded(demo::seed(client, &secrets.platform_token, &owner_token).await?)
    };
    // Catch SIGINT/SIGTERM before the ready line: whoever waits for it may signal at once.
    let shutdown = crate::shutdown_signals()?;
    print_banner(&Banner {
        demo: demo_state,
        owner_token: Some(&owner_token),
        admin_token: Some(&admin_token),
        ..*banner
    })?;
    tokio::select! {
        () = shutdown => Ok(()),
        err = services.first_to_end() => Err(err),
    }
}

/// Runs `talkwai up` until SIGINT or SIGTERM.
pub async fn run(nats_url: &str, args: UpArgs) -> Result<(), CliError> {
    let data = data_dir(args.data_dir.clone())?;
    let mut secrets = secrets::load_or_create(&data.join(secrets::FILE_NAME))?;
    // Personal data is sealed by default: a master key generated once into the data dir.
    let mut master_key_created = false;
    if !operator_master_key()? {
        let (file, created) = secrets::master_key_file(&data)?;
        secrets.master_key_file = Some(file);
        master_key_created = created;
    }

    let mut servers = Servers {
        nats: None,
        postgres: None,
        guardians: Vec::new(),
    };
    let outcome = run_with(
        nats_url,
        args,
        &data,
        &secrets,
        master_key_created,
        &mut servers,
    )
    .await;
    servers.stop().await;
    if outcome.is_ok() {
        line(&format!(
            "talkwai up: stopped; data kept in {}",
            data.display()
        ))?;
    }
    outcome
}

/// Starts the servers (into `servers`, which the caller stops), the services and the
/// dashboard, then serves until SIGINT/SIGTERM and stops the services.
async fn run_with(
    nats_url: &str,
    args: UpArgs,
    data: &Path,
    secrets: &secrets::Secrets,
    master_key_created: bool,
    servers: &mut Servers,
) -> Result<(), CliError> {
    if !args.no_nats {
        let auth = nats_auth::server_config(nats_auth::AUTH_CONF, &secrets.nats)?;
        let auth = match &args.nats_trace_file {
            Some(file) => format!(
                "trace: true\nmax_traced_msg_len: 32\nlog_file: {}\n{auth}",
                nats_auth::quote(&file.to_string_lossy())
            ),
            None => auth,
        };
        let nats = start_nats(data.join("nats"), args.nats_port, args.ws_port, &auth).await?;
        let pid = nats.pid();
        servers.nats = Some(nats);
        servers.guard(pid, "TERM")?;
    }
    // The operator's URL (printed for the CLI) on the local server, the given one otherwise.
    let nats_url = servers.nats.as_ref().map_or_else(
        || nats_url.to_owned(),
        |nats| {
            format!(
                "nats://operator:{}@127.0.0.1:{}",
                secrets.nats.operator_password.expose_secret(),
                nats.port()
            )
        },
    );
    let ws_url = servers
        .nats
        .as_ref()
        .and_then(NatsServer::websocket_url)
        .unwrap_or_else(|| args.nats_ws_url.clone());
    let postgres_url = match args.postgres_url {
        Some(url) => url,
        None => {
            let postgres = start_postgres(data.join("postgres"), args.postgres_port).await?;
            let url = postgres.url_for("postgres");
            let pid = postgres.pid();
            servers.postgres = Some(postgres);
            // SIGINT: PostgreSQL's fast shutdown (clean, no recovery on the next start).
            servers.guard(pid, "INT")?;
            url
        }
    };
    let login = if servers.nats.is_some() {
        Login::Local(&secrets.nats)
    } else {
        Login::External(&nats_url)
    };
    let client = crate::connect(&nats_url).await?;

    let mut services = Services::default();
    let mut started = start_services(
        &mut services,
        &client,
        &login,
        &nats_url,
        &postgres_url,
        secrets,
    )
    .await;
    let mut dashboard_url = String::new();
    let mut dashboard_built = false;
    if started.is_ok() {
        let dir = args
            .dashboard_dir
            .clone()
            .unwrap_or_else(|| repo_root().join("clients/dashboard/dist"));
        let config = dashboard::PageConfig {
            nats_ws_url: ws_url.clone(),
        };
        started = match dashboard::bind(args.dashboard_port, dir, &config).await {
            Ok(page) => {
                dashboard_built = page.is_built();
                page.url().map(|url| {
                    dashboard_url = url;
                    services.spawn("dashboard", |stopped| {
                        page.run(async {
                            let _ = stopped.await;
                        })
                    });
                })
            }
            Err(err) => Err(err),
        };
    }
    let outcome = match started {
        Ok(()) => {
            serve(
                &mut services,
                &client,
                &Banner {
                    data,
                    nats_url: &nats_url,
                    nats_local: servers.nats.is_some(),
                    ws_url: &ws_url,
                    dashboard_url: &dashboard_url,
                    dashboard_built,
                    postgres_url: &postgres_url,
                    postgres_local: servers.postgres.is_some(),
                    secrets_created: secrets.created,
                    master_key_file: secrets.master_key_file.as_deref(),
                    master_key_created,
                    demo: DemoState::Skipped,
                    owner_token: None,
                    admin_token: None,
                },
                secrets,
                args.no_demo,
            )
            .await
        }
        Err(err) => Err(err),
    };
    tracing::info!("stopping: the services in reverse order, then the servers");
    services.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), client.drain()).await;
    outcome
}

#[derive(Clone, Copy)]
struct Banner<'a> {
    data: &'a Path,
    nats_url: &'a str,
    nats_local: bool,
    /// nats-server's WebSocket URL (browsers).
    ws_url: &'a str,
    /// The dashboard's URL.
    dashboard_url: &'a str,
    /// Whether `clients/dashboard/dist` holds the built page.
    dashboard_built: bool,
    postgres_url: &'a str,
    postgres_local: bool,
    secrets_created: bool,
    /// The data dir's master key file (`None`: the operator's master key).
    master_key_file: Option<&'a Path>,
    /// Whether this run generated it.
    master_key_created: bool,
    demo: DemoState,
    /// The demo owner's token (printed for the demo).
    owner_token: Option<&'a SecretString>,
    /// A demo admin's token (the dashboard's admin view).
    admin_token: Option<&'a SecretString>,
}

/// The `export TALKWAI_MASTER_KEY_FILE=...` line, when `up` uses its own master key.
fn print_master_key_export(b: &Banner<'_>) -> Result<(), CliError> {
    match b.master_key_file {
        Some(file) => line(&format!(
            "  export TALKWAI_MASTER_KEY_FILE={}",
            file.display()
        )),
        None => Ok(()),
    }
}

fn print_banner(b: &Banner<'_>) -> Result<(), CliError> {
    let data = b.data.display();
    let t = demo::TENANT;
    let nats_where = if b.nats_local {
        format!("JetStream store {data}/nats")
    } else {
        "external, --no-nats".to_owned()
    };
    let pg_where = if b.postgres_local {
        format!("data {data}/postgres")
    } else {
        "external".to_owned()
    };
    let secrets_note = if b.secrets_created {
        "generated now"
    } else {
        "found from an earlier run"
    };
    let demo_note = match b.demo {
        DemoState::Seeded(n) => format!("tenant \"Acme Corp\" {t} seeded now ({n} commands)"),
        DemoState::AlreadySeeded => format!("tenant \"Acme Corp\" {t} already seeded, left as is"),
        DemoState::Skipped => "skipped (--no-demo)".to_owned(),
    };
    line(&format!(
        "talkwai up: nats          {}  ({nats_where})",
        b.nats_url
    ))?;
    line(&format!(
        "talkwai up: websocket     {}  (nats-server's WebSocket listener, for browsers)",
        b.ws_url
    ))?;
    line(&format!(
        "talkwai up: postgresql    {}  ({pg_where})",
        b.postgres_url
    ))?;
    if b.dashboard_built {
        line(&format!(
            "talkwai up: dashboard     {}  (clients/dashboard, live over the WebSocket; sign in with a dev token)",
            b.dashboard_url
        ))?;
    } else {
        line(&format!(
            "talkwai up: dashboard     {}  not built: npm --prefix clients ci && npm --prefix clients run build (scripts/dev.sh up does it)",
            b.dashboard_url
        ))?;
    }
    line(
        "talkwai up: commands      served by this process (NATS services API, queue group talkwai-command)",
    )?;
    line(
        "talkwai up: projections   kept current by this process: views talkwai.tenants, talkwai.members, talkwai.admins, talkwai.agents, talkwai.tasks, talkwai.users, talkwai.checkpoint",
    )?;
    line(
        "talkwai up: queries       served by this process on talkwai.qry.<tenant|platform> (NATS services API, talkwai-query)",
    )?;
    line(
        "talkwai up: rooms         the notifier in this process: topics talkwai.room.<type>.<id>.topic.<name>, presence talkwai.room.<type>.<id>.presence.{join,update,leave,heartbeat,get,events} (talkwai-presence)",
    )?;
    line(&format!(
        "talkwai up: secrets       {data}/{} (platform token, JWT secret, NATS passwords; {secrets_note})",
        secrets::FILE_NAME
    ))?;
    match b.master_key_file {
        Some(file) => line(&format!(
            "talkwai up: master key    {}  (seals personal data in the log; {}; every service uses it, and so must talkwai events/keys/tenant export: export TALKWAI_MASTER_KEY_FILE below; lose it and every sealed field is lost)",
            file.display(),
            if b.master_key_created {
                "generated now"
            } else {
                "reused from an earlier run"
            }
        ))?,
        None => line(
            "talkwai up: master key    the operator's (TALKWAI_MASTER_KEY or TALKWAI_MASTER_KEY_FILE), given to every service",
        )?,
    }
    if b.nats_local {
        line(
            "talkwai up: nats users    deploy/nats/auth.conf's (services, operator, tenant-acme); other clients sign in with a bearer token as the NATS auth token (auth callout), anonymous ones are refused",
        )?;
    }
    line(&format!("talkwai up: demo          {demo_note}"))?;
    if b.demo != DemoState::Skipped {
        line(&format!(
            "talkwai up: demo rooms    talkwai.room.tenant.{t}.topic.taskUpdates, talkwai.room.tenant.{t}.topic.notifications.<member id>, talkwai.room.tenant.{t}.presence.events"
        ))?;
    }
    line("")?;
    if let (true, Some(owner_token)) = (b.demo != DemoState::Skipped, b.owner_token) {
        let task = Uuid::new_v4();
        let [pending, ..] = demo::TASKS;
        line(
            "Try it. The token below is a local dev token for the demo owner (Olive Owner of Acme Corp),",
        )?;
        line("printed on purpose for this local demo; never print real tokens.")?;
        line("")?;
        line(&format!("  export TALKWAI_NATS_URL={}", b.nats_url))?;
        line(&format!("  export TALKWAI_DATABASE_URL={}", b.postgres_url))?;
        print_master_key_export(b)?;
        line(&format!(
            "  export TALKWAI_TOKEN={}",
            owner_token.expose_secret()
        ))?;
        line("")?;
        line(
            "  # the live dashboard in a browser, signed in as Olive (owner) or as a demo admin:",
        )?;
        line(&format!(
            "  dashboard (owner): {}#token={}&member={}&name=Olive%20Owner",
            b.dashboard_url,
            owner_token.expose_secret(),
            demo::OWNER
        ))?;
        if let Some(admin_token) = b.admin_token {
            line(&format!(
                "  dashboard (admin): {}#token={}&view=admin&name=Demo%20Admin",
                b.dashboard_url,
                admin_token.expose_secret()
            ))?;
        }
        line("")?;
        line(
            "  # talkwai is target/release/talkwai, or: cargo run -q --release -p talkwai-cli --",
        )?;
        line(&format!(
            "  talkwai cmd talkwai.cmd.{t}.task.create '{{\"id\":\"{task}\",\"type\":\"call\",\"priority\":\"high\",\"fromAddress\":\"+15550001111\",\"toAddress\":\"+15550002222\",\"subject\":\"Call back\"}}'"
        ))?;
        line(&format!(
            "  talkwai cmd talkwai.cmd.{t}.task.start '{{\"id\":\"{task}\"}}'"
        ))?;
        line(&format!(
            "  talkwai query '{}'  # the seed's tenant dashboard, from the read models",
            demo::dashboard_query()
        ))?;
        line(&format!(
            "  talkwai rooms watch tenant {t}  # taskUpdates, notifications and presence, live (another terminal)"
        ))?;
        line(&format!(
            "  talkwai presence tenant {t}  # who is in the tenant room"
        ))?;
        line("  talkwai events tail --follow                        # the log, live")?;
        line(&format!(
            "  talkwai events tail --tenant {t} --type 'task.*'  # one tenant's task events"
        ))?;
        line(&format!(
            "  talkwai events show task/{pending} --tenant {t}  # one task's history and version"
        ))?;
        line(&format!(
            "  TALKWAI_JWT_SECRET=<jwtSecret from {data}/secrets.json> talkwai token mint --member {}  # a member's token (its $users link read from the log)",
            demo::OWNER
        ))?;
        line(
            "  talkwai projections status                           # read models: checkpoint, lag, dead letters",
        )?;
        line(&format!(
            "  psql \"$TALKWAI_DATABASE_URL\" -c \"SELECT id, status, subject FROM talkwai.tasks WHERE tenant_id = '{t}'\"  # if you have psql"
        ))?;
        line("")?;
        line("No nats CLI or psql needed: every step above except the last goes through talkwai.")?;
    } else {
        line(&format!("  export TALKWAI_NATS_URL={}", b.nats_url))?;
        line(&format!("  export TALKWAI_DATABASE_URL={}", b.postgres_url))?;
        print_master_key_export(b)?;
        line("  talkwai projections status   # read models: checkpoint, lag, dead letters")?;
        line("  talkwai rooms watch admin global   # system alerts and admin presence, live")?;
        line(&format!(
            "  the platform token is in {data}/secrets.json (talkwai cmd talkwai.cmd.platform.tenant.create ... --token <it>)"
        ))?;
    }
    line(&format!(
        "Ctrl-C stops the services, then the servers; data stays in {data} (reset: rm -rf {data})."
    ))?;
    line(READY_LINE)
}
