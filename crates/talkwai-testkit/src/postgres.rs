//! A throw-away (or persistent) PostgreSQL server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

use crate::discover;
use crate::error::{Result, TestkitError};
use crate::util::{self, PORT_ATTEMPTS, RunAs};

const PROGRAM: &str = "postgres";

/// Options for starting a [`Postgres`]; get one from [`Postgres::builder`].
#[derive(Debug, Clone)]
pub struct PostgresBuilder {
    /// Cluster directory; a fresh temp dir when `None`.
    data_dir: Option<PathBuf>,
    /// Keep `data_dir` on drop and reuse it on the next start.
    persistent: bool,
    /// Fixed port; a free one when `None`.
    port: Option<u16>,
    /// fsync and full page writes on (slow, safe) or off (fast, for tests).
    durable: bool,
    /// Extra `-c name=value` server settings.
    settings: Vec<(String, String)>,
    /// Directory with `initdb`, `postgres`, `pg_ctl`; discovered when `None`.
    bin_dir: Option<PathBuf>,
    /// How long to wait until the server accepts connections.
    startup_timeout: Duration,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            persistent: false,
            port: None,
            durable: false,
            settings: Vec::new(),
            bin_dir: None,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl PostgresBuilder {
    /// Uses `dir` as the cluster directory: initialized when missing or empty, reused when it
    /// already holds a cluster. Unless [`persistent`](Self::persistent) is set, the handle
    /// deletes it on drop.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keeps the data directory on drop (and stops the server with a clean shutdown); needs
    /// [`data_dir`](Self::data_dir).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Listens on this port instead of a free one (no retry on collision).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `true` keeps PostgreSQL's full crash safety (fsync, full page writes, a synced
    /// `initdb`); `false` (the default, for tests) turns fsync and full page writes off for
    /// speed. Either way a committed transaction survives the server being killed; only an
    /// OS crash can lose it when not durable.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Adds a server setting passed as `-c name=value`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Uses the PostgreSQL binaries in `dir` instead of the discovered ones.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// How long [`start`](Self::start) waits for the server to accept connections.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Initializes the cluster if needed, starts the server and waits until it accepts
    /// connections.
    pub async fn start(self) -> Result<Postgres> {
        if self.persistent && self.data_dir.is_none() {
            return Err(TestkitError::InvalidConfig(
                "persistent postgres needs a data_dir".into(),
            ));
        }
        let bin_dir = match self.bin_dir {
            Some(dir) => dir,
            None => discover::postgres_bin_dir()?,
        };
        let runtime = tempfile::Builder::new()
            .prefix("talkwai-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the postgres temp dir", e))?;
        let run_as = RunAs::for_postgres(runtime.path())?;
        run_as.chown(runtime.path())?;
        let socket_dir = runtime.path().join("sock");
        create_dir(&socket_dir)?;
        run_as.chown(&socket_dir)?;

        let data_dir = match &self.data_dir {
            Some(dir) => absolute(dir)?,
            None => runtime.path().join("data"),
        };
        let mut server = Postgres {
            log_path: runtime.path().join("postgres.log"),
            bin_dir,
            port: 0,
            data_dir,
            socket_dir,
            delete_data_dir: self.data_dir.is_some() && !self.persistent,
            persistent: self.persistent,
            durable: self.durable,
            settings: self.settings,
            cluster_name: util::unique_name("talkwai_test"),
            run_as,
            startup_timeout: self.startup_timeout,
            child: None,
            runtime,
        };
        server.init_cluster().await?;

        let attempts = if self.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut last = String::new();
        for _ in 0..attempts {
            server.port = match self.port {
                Some(port) => port,
                None => util::free_port()?,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(err @ TestkitError::ExitedEarly { .. }) if is_bind_error(&err) => {
                    tracing::debug!(port = server.port, "postgres port collision, retrying");
                    last = err.to_string();
                }
                Err(err) => return Err(err),
            }
        }
        Err(TestkitError::PortCollision {
            program: PROGRAM,
            attempts,
            last,
        })
    }
}

fn is_bind_error(err: &TestkitError) -> bool {
    matches!(err, TestkitError::ExitedEarly { log_tail, .. }
        if log_tail.contains("already in use") || log_tail.contains("could not create any TCP/IP sockets"))
}

/// A running PostgreSQL server listening on 127.0.0.1 with trust authentication for the
/// superuser `postgres`.
///
/// When the test process runs as root, `initdb`, `postgres` and `pg_ctl` run as `nobody`
/// (PostgreSQL refuses root) and the directories they write are chowned to it.
///
/// Dropping it stops the server (immediate shutdown, or a clean one for a persistent data
/// dir) and deletes its temp dir (socket, log and, unless persistent, the data).
#[derive(Debug)]
pub struct Postgres {
    /// Directory with `initdb`, `postgres`, `pg_ctl`.
    bin_dir: PathBuf,
    /// TCP port on 127.0.0.1; kept across restarts.
    port: u16,
    /// Cluster directory; kept across restarts.
    data_dir: PathBuf,
    /// Unix socket directory (`-k`), private to this instance.
    socket_dir: PathBuf,
    /// A given data dir that is not persistent is removed on drop.
    delete_data_dir: bool,
    /// Stop cleanly on drop and keep the data dir.
    persistent: bool,
    /// fsync on or off.
    durable: bool,
    /// Extra `-c` settings.
    settings: Vec<(String, String)>,
    /// Unique `cluster_name`, checked on connect so a foreign server on the port is not taken
    /// for this one.
    cluster_name: String,
    /// Who the PostgreSQL processes run as.
    run_as: RunAs,
    /// Deadline for a start or restart.
    startup_timeout: Duration,
    /// Server stdout and stderr.
    log_path: PathBuf,
    /// The postmaster; `None` while stopped.
    child: Option<Child>,
    /// Holds socket dir, log and the default data dir; removed on drop.
    runtime: TempDir,
}

impl Postgres {
    /// Options for a server; `Postgres::builder().start()` equals [`Postgres::start`].
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// Starts a fast, non-durable server in a temp dir on a free port.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// Connection string for the `postgres` database:
    /// `host=127.0.0.1 port=<port> user=postgres dbname=postgres`.
    pub fn connection_string(&self) -> String {
        self.connection_string_for("postgres")
    }

    /// Connection string for database `dbname` on this server.
    pub fn connection_string_for(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// URL for database `dbname`: `postgres://postgres@127.0.0.1:<port>/<dbname>`.
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster (data) directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The temp directory holding the socket dir, the log and (unless a data dir was given)
    /// the data; deleted on drop.
    pub fn temp_dir(&self) -> &Path {
        self.runtime.path()
    }

    /// The server's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The postmaster's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the postmaster is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Creates database `name` (letters, digits and `_`, at most 63 bytes) and returns its
    /// connection string.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(TestkitError::InvalidConfig(format!(
                "database name {name:?} must be 1-63 letters, digits or underscores"
            )));
        }
        if self.child.is_none() {
            return Err(TestkitError::NotRunning { program: PROGRAM });
        }
        let client = self.connect_admin().await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|source| TestkitError::Postgres {
                action: format!("creating database {name}"),
                source,
            })?;
        Ok(self.connection_string_for(name))
    }

    /// Creates a database with a fresh unique name starting with `prefix` and returns its
    /// connection string; each test gets its own database this way.
    pub async fn create_unique_database(&self, prefix: &str) -> Result<String> {
        let mut name = util::unique_name(prefix).to_ascii_lowercase();
        name.truncate(63);
        self.create_database(&name).await
    }

    /// Stops the server with a clean (`fast`) shutdown and waits for it to exit; the data dir
    /// stays, [`restart`](Self::restart) brings the server back.
    pub async fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast").await
    }

    /// Stops the server with an `immediate` shutdown (SIGQUIT: no checkpoint, crash recovery
    /// on the next start), as close to a crash as PostgreSQL allows without orphaning its
    /// backends.
    pub async fn kill(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate").await
    }

    /// Starts the server again on the same port and data dir, stopping it cleanly first if it
    /// is running.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    async fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        let mut command = Command::new(self.bin_dir.join("pg_ctl"));
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", "60"])
            .current_dir(self.runtime.path());
        self.run_as.apply(&mut command);
        let output = command
            .output()
            .await
            .map_err(|e| TestkitError::io("running pg_ctl stop", e))?;
        if !output.status.success() {
            let _ = child.kill().await;
            return Err(TestkitError::CommandFailed {
                program: "pg_ctl stop".into(),
                status: output.status,
                output: render_output(&output),
            });
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(TestkitError::io("waiting for postgres to exit", e)),
            Err(_) => child
                .kill()
                .await
                .map_err(|e| TestkitError::io("killing postgres", e)),
        }
    }

    async fn init_cluster(&self) -> Result<()> {
        let dir = &self.data_dir;
        if dir.join("PG_VERSION").is_file() {
            return Ok(());
        }
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| TestkitError::io(format!("reading {}", dir.display()), e))?;
            if entries.next().is_some() {
                return Err(TestkitError::UnusableDataDir {
                    path: dir.clone(),
                    reason: "not empty and holds no PG_VERSION".into(),
                });
            }
        } else {
            create_dir(dir)?;
        }
        // initdb fills an empty directory it owns; the parent may belong to root.
        self.run_as.chown(dir)?;
        let mut command = Command::new(self.bin_dir.join("initdb"));
        command
            .arg("-D")
            .arg(dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .current_dir(self.runtime.path())
            .stdin(std::process::Stdio::null());
        if !self.durable {
            command.arg("--no-sync");
        }
        self.run_as.apply(&mut command);
        let output = command
            .output()
            .await
            .map_err(|e| TestkitError::io("running initdb", e))?;
        if !output.status.success() {
            return Err(TestkitError::CommandFailed {
                program: "initdb".into(),
                status: output.status,
                output: render_output(&output),
            });
        }
        Ok(())
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let (stdout, stderr) = util::open_log(&self.log_path)?;
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("cluster_name={}", self.cluster_name));
        if !self.durable {
            // Commits still reach the kernel, so a killed server keeps them; only an OS
            // crash could lose data.
            command.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        for (name, value) in &self.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command
            .current_dir(self.runtime.path())
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        self.run_as.apply(&mut command);
        let child = command
            .spawn()
            .map_err(|e| TestkitError::io("spawning postgres", e))?;
        self.child = Some(child);
        match self.wait_ready().await {
            Ok(()) => Ok(()),
            Err(err) => {
                let _ = self.kill().await;
                Err(err)
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.startup_timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(TestkitError::ExitedEarly {
                    program: PROGRAM,
                    status,
                    log_tail: util::log_tail(&self.log_path, 20),
                });
            }
            if self.is_ours().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::StartupTimeout {
                    program: PROGRAM,
                    timeout: self.startup_timeout,
                    log_tail: util::log_tail(&self.log_path, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// True when the port accepts a connection and the server there has our `cluster_name`.
    async fn is_ours(&self) -> bool {
        let attempt = async {
            let client = self.connect_admin().await.ok()?;
            let row = client.query_one("SHOW cluster_name", &[]).await.ok()?;
            let name: String = row.try_get(0).ok()?;
            Some(name == self.cluster_name)
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    async fn connect_admin(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.connection_string(), NoTls)
            .await
            .map_err(|source| TestkitError::Postgres {
                action: "connecting".into(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "testkit admin connection ended");
            }
        });
        Ok(client)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let mode = if self.persistent { "fast" } else { "immediate" };
                let mut command = std::process::Command::new(self.bin_dir.join("pg_ctl"));
                command
                    .arg("stop")
                    .arg("-D")
                    .arg(&self.data_dir)
                    .args(["-m", mode, "-w", "-t", "30"])
                    .current_dir(self.runtime.path())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                self.run_as.apply_std(&mut command);
                if !matches!(command.status(), Ok(status) if status.success()) {
                    let _ = child.start_kill();
                }
            }
            util::reap_blocking(&mut child, Duration::from_secs(10));
        }
        if self.delete_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir)
        .map_err(|e| TestkitError::io(format!("making {} absolute", dir.display()), e))
}

fn render_output(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim());
    }
    text
}
