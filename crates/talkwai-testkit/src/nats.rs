//! A throw-away (or persistent) `nats-server` with JetStream.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::discover;
use crate::error::{Result, TestkitError};
use crate::util::{self, PORT_ATTEMPTS};

const PROGRAM: &str = "nats-server";

/// Options for starting a [`NatsServer`]; get one from [`NatsServer::builder`].
#[derive(Debug, Clone)]
pub struct NatsServerBuilder {
    /// Extra configuration text appended verbatim to the generated config file.
    extra_config: String,
    /// Where JetStream stores its data; a fresh temp dir when `None`.
    store_dir: Option<PathBuf>,
    /// Keep `store_dir` when the handle drops.
    persistent: bool,
    /// Fixed client port; a free one when `None`.
    port: Option<u16>,
    /// Open the HTTP monitoring port and wait for `/healthz?js-enabled-only=true`.
    monitoring: bool,
    /// Open a WebSocket listener (browsers' NATS transport) on a free port.
    websocket: bool,
    /// Fixed WebSocket port (implies `websocket`); a free one when `None`.
    websocket_port: Option<u16>,
    /// Write `sync_interval: always` (fsync every JetStream write).
    sync_always: bool,
    /// The server's name; unique per instance when `None`.
    server_name: Option<String>,
    /// The binary to run; discovered when `None`.
    binary: Option<PathBuf>,
    /// How long to wait until the server accepts connections.
    startup_timeout: Duration,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        Self {
            extra_config: String::new(),
            store_dir: None,
            persistent: false,
            port: None,
            monitoring: false,
            websocket: false,
            websocket_port: None,
            sync_always: true,
            server_name: None,
            binary: None,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl NatsServerBuilder {
    /// Appends configuration text (nats-server config syntax) to the generated file, e.g. a
    /// `cluster { ... }` block.
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config.push('\n');
        self.extra_config.push_str(&text.into());
        self
    }

    /// Uses `dir` as the JetStream store directory (created if missing). Unless
    /// [`persistent`](Self::persistent) is set, the handle deletes it on drop.
    pub fn store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }

    /// Keeps the store directory on drop so a later start reuses it; needs
    /// [`store_dir`](Self::store_dir).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Listens on this client port instead of a free one (no retry on collision).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Opens the HTTP monitoring port on a free port and waits for JetStream health at start.
    pub fn monitoring(mut self, enabled: bool) -> Self {
        self.monitoring = enabled;
        self
    }

    /// Opens a WebSocket listener (`websocket { no_tls: true }`, loopback only) on a free port,
    /// for browser clients; see [`NatsServer::websocket_url`]. It takes the same users and
    /// permissions as the client port.
    pub fn websocket(mut self, enabled: bool) -> Self {
        self.websocket = enabled;
        self
    }

    /// Opens the WebSocket listener on this port instead of a free one (no retry on collision).
    pub fn websocket_port(mut self, port: u16) -> Self {
        self.websocket = true;
        self.websocket_port = Some(port);
        self
    }

    /// Whether to fsync every JetStream write (`sync_interval: always`); on by default.
    pub fn sync_always(mut self, always: bool) -> Self {
        self.sync_always = always;
        self
    }

    /// Sets the server name (default: unique per instance).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Runs this binary instead of the discovered one.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// How long [`start`](Self::start) waits for the server to accept connections.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Writes the config, starts the server and waits until it accepts connections.
    pub async fn start(self) -> Result<NatsServer> {
        if self.persistent && self.store_dir.is_none() {
            return Err(TestkitError::InvalidConfig(
                "persistent nats-server needs a store_dir".into(),
            ));
        }
        let binary = match self.binary {
            Some(path) => path,
            None => discover::nats_server_binary()?,
        };
        let runtime = tempfile::Builder::new()
            .prefix("talkwai-nats-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the nats-server temp dir", e))?;
        let store_dir = match &self.store_dir {
            Some(dir) => dir.clone(),
            None => runtime.path().join("store"),
        };
        std::fs::create_dir_all(&store_dir)
            .map_err(|e| TestkitError::io(format!("creating {}", store_dir.display()), e))?;
        let server_name = self
            .server_name
            .clone()
            .unwrap_or_else(|| util::unique_name("talkwai_test"));

        let mut server = NatsServer {
            config_path: runtime.path().join("nats-server.conf"),
            log_path: runtime.path().join("nats-server.log"),
            binary,
            port: 0,
            http_port: None,
            ws_port: None,
            store_dir,
            delete_store_dir: self.store_dir.is_some() && !self.persistent,
            server_name,
            extra_config: self.extra_config,
            sync_always: self.sync_always,
            startup_timeout: self.startup_timeout,
            child: None,
            _runtime: runtime,
        };

        let attempts = if self.port.is_some() || self.websocket_port.is_some() {
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
            server.http_port = if self.monitoring {
                Some(util::free_port()?)
            } else {
                None
            };
            server.ws_port = match (self.websocket, self.websocket_port) {
                (_, Some(port)) => Some(port),
                (true, None) => Some(util::free_port()?),
                (false, None) => None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(err @ TestkitError::ExitedEarly { .. }) if is_bind_error(&err) => {
                    tracing::debug!(port = server.port, "nats-server port collision, retrying");
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

pub(crate) fn is_bind_error(err: &TestkitError) -> bool {
    matches!(err, TestkitError::ExitedEarly { log_tail, .. }
        if log_tail.contains("address already in use") || log_tail.contains("Error listening"))
}

/// A running `nats-server` with JetStream on, listening on 127.0.0.1.
///
/// Dropping it kills the process (SIGKILL) and deletes its temp dir (config, log and, unless a
/// persistent store dir was given, the store).
#[derive(Debug)]
pub struct NatsServer {
    /// The binary that was started.
    binary: PathBuf,
    /// Client port; kept across restarts.
    port: u16,
    /// Monitoring port when enabled; kept across restarts.
    http_port: Option<u16>,
    /// WebSocket port when enabled; kept across restarts.
    ws_port: Option<u16>,
    /// JetStream store directory; kept across restarts.
    store_dir: PathBuf,
    /// A given store dir that is not persistent is removed on drop.
    delete_store_dir: bool,
    /// Server name written to the config and checked in the INFO line.
    server_name: String,
    /// Extra config text from the builder.
    extra_config: String,
    /// `sync_interval: always` or the server default.
    sync_always: bool,
    /// Deadline for a start or restart.
    startup_timeout: Duration,
    /// Generated config file.
    config_path: PathBuf,
    /// Server stdout and stderr.
    log_path: PathBuf,
    /// The running process; `None` while killed or stopped.
    child: Option<Child>,
    /// Holds config, log and the default store dir; removed on drop.
    _runtime: TempDir,
}

impl NatsServer {
    /// Options for a server; `NatsServer::builder().start()` equals [`NatsServer::start`].
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Starts a server with default options: free port, temp store dir, JetStream with
    /// `sync_interval: always`.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring URL, `http://127.0.0.1:<port>`, when monitoring is enabled.
    pub fn monitoring_url(&self) -> Option<String> {
        self.http_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The WebSocket URL browsers connect to, `ws://127.0.0.1:<port>`, when the listener is on.
    pub fn websocket_url(&self) -> Option<String> {
        self.ws_port.map(|port| format!("ws://127.0.0.1:{port}"))
    }

    /// The WebSocket port when the listener is on.
    pub fn websocket_port(&self) -> Option<u16> {
        self.ws_port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The server's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL (a crash: no shutdown work) and waits for it to exit.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(|e| TestkitError::io("killing nats-server", e))?;
        }
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM via `nats-server --signal term`), killing it if it
    /// has not exited after 10 seconds.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let status = Command::new(&self.binary)
                .arg("--signal")
                .arg(format!("term={pid}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .map_err(|e| TestkitError::io("signalling nats-server", e))?;
            if status.success()
                && tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_ok()
            {
                return Ok(());
            }
        }
        child
            .kill()
            .await
            .map_err(|e| TestkitError::io("killing nats-server", e))
    }

    /// Starts the server again on the same port, store dir and config, stopping it
    /// gracefully first if it is running. Call [`kill`](Self::kill) first to restart after a
    /// crash.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    fn config_text(&self) -> String {
        let mut text = format!(
            "# generated by talkwai-testkit\nserver_name: {name}\nlisten: \"127.0.0.1:{port}\"\n",
            name = quote(&self.server_name),
            port = self.port,
        );
        if let Some(http_port) = self.http_port {
            text.push_str(&format!("http: \"127.0.0.1:{http_port}\"\n"));
        }
        text.push_str("jetstream {\n");
        text.push_str(&format!(
            "  store_dir: {}\n",
            quote(&self.store_dir.to_string_lossy())
        ));
        if self.sync_always {
            text.push_str("  sync_interval: always\n");
        }
        text.push_str("}\n");
        if let Some(ws_port) = self.ws_port {
            // Plain ws:// on loopback only: TLS would protect nothing that leaves the machine.
            text.push_str(&format!(
                "websocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n}}\n"
            ));
        }
        text.push_str(&self.extra_config);
        text.push('\n');
        text
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        std::fs::write(&self.config_path, self.config_text())
            .map_err(|e| TestkitError::io(format!("writing {}", self.config_path.display()), e))?;
        let (stdout, stderr) = util::open_log(&self.log_path)?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawning {}", self.binary.display()), e))?;
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
            if self.answers_info().await && self.healthy().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::StartupTimeout {
                    program: PROGRAM,
                    timeout: self.startup_timeout,
                    log_tail: util::log_tail(&self.log_path, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True when the client port answers with an INFO line naming this server (so another
    /// process that grabbed the port does not count).
    async fn answers_info(&self) -> bool {
        let attempt = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            let mut buf = Vec::with_capacity(2048);
            let mut chunk = [0_u8; 1024];
            while !buf.contains(&b'\n') && buf.len() < 16 * 1024 {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = String::from_utf8_lossy(&buf);
            let name = format!("\"server_name\":\"{}\"", self.server_name);
            Some(line.starts_with("INFO ") && line.contains(&name))
        };
        tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// True when monitoring is off, or `/healthz?js-enabled-only=true` answers 200.
    async fn healthy(&self) -> bool {
        let Some(http_port) = self.http_port else {
            return true;
        };
        matches!(
            http_get(http_port, "/healthz?js-enabled-only=true").await,
            Some((200, _))
        )
    }

    /// GETs `path` (e.g. `/jsz?streams=true`) from the monitoring port and returns the body of
    /// a 200 answer; `None` when monitoring is off, the server does not answer within 2 seconds
    /// or answers with another status.
    pub async fn monitoring_get(&self, path: &str) -> Option<String> {
        match http_get(self.http_port?, path).await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (nats-server's monitoring and the services' `/metrics`,
/// `/livez` and `/readyz` need no more): the status code and the body, or `None` on any
/// failure or after 2 seconds.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            util::reap_blocking(&mut child, Duration::from_secs(5));
        }
        if self.delete_store_dir {
            let _ = std::fs::remove_dir_all(&self.store_dir);
        }
    }
}

/// Quotes a string for the nats-server config syntax.
pub(crate) fn quote(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}
