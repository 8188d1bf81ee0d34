//! The shipped single-node config's WebSocket listener (browsers) takes the same users and
//! permissions as its client port: `deploy/nats/single.conf` with `auth.conf`, rewritten only to
//! listen on free loopback ports and store in a temp dir, refuses a WebSocket client without
//! credentials, and fences the tenant credential over WebSocket exactly as over TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORDS: [(&str, &str); 6] = [
    ("TALKWAI_NATS_COMMAND_PASSWORD", "command-pw"),
    ("TALKWAI_NATS_PROJECTOR_PASSWORD", "projector-pw"),
    ("TALKWAI_NATS_NOTIFIER_PASSWORD", "notifier-pw"),
    ("TALKWAI_NATS_QUERY_PASSWORD", "query-pw"),
    ("TALKWAI_NATS_TENANT_PASSWORD", "tenant-pw"),
    ("TALKWAI_NATS_OPERATOR_PASSWORD", "operator-pw"),
];
const ACME: &str = "a0000000-0000-4000-8000-000000000001";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// nats-server on a rewritten copy of single.conf; killed and cleaned up on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    ws_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Server {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats");
    let dir = std::env::temp_dir().join(format!("talkwai-ws-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (port, http, ws_port) = (free_port(), free_port(), free_port());
    let single = std::fs::read_to_string(deploy.join("single.conf")).expect("single.conf");
    let rewritten = [
        ("listen: 0.0.0.0:4222", format!("listen: 127.0.0.1:{port}")),
        ("http: 0.0.0.0:8222", format!("http: 127.0.0.1:{http}")),
        (
            "listen: 0.0.0.0:8080",
            format!("listen: 127.0.0.1:{ws_port}"),
        ),
        (
            "store_dir: \"/data/jetstream\"",
            format!("store_dir: {:?}", dir.join("js").to_string_lossy()),
        ),
    ]
    .iter()
    .fold(single, |text, (from, to)| {
        assert!(text.contains(from), "single.conf no longer has `{from}`");
        text.replace(from, to)
    });
    std::fs::write(dir.join("single.conf"), rewritten).expect("write config");
    std::fs::copy(deploy.join("auth.conf"), dir.join("auth.conf")).expect("copy auth.conf");
    let binary = talkwai_testkit::discover::nats_server_binary().expect("nats-server installed");
    let child = Command::new(binary)
        .arg("-c")
        .arg(dir.join("single.conf"))
        .envs(PASSWORDS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start nats-server: {e}"));
    let server = Server {
        child,
        dir,
        ws_port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "the websocket port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// A minimal WebSocket client: upgrade, masked text frames out, unmasked frames in.
struct Ws(TcpStream, Vec<u8>);

impl Ws {
    fn open(port: u16) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("upgrade");
        let mut ws = Self(stream, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            ws.fill();
            if let Some(end) = ws.1.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.1[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
                ws.1.drain(..end + 4);
                return ws;
            }
            assert!(Instant::now() < deadline, "no upgrade answer");
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0_u8; 4096];
        if let Ok(n) = self.0.read(&mut chunk) {
            self.1.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | u8::try_from(n).expect("short")),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(n).expect("small").to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as is
        frame.extend_from_slice(payload);
        self.0.write_all(&frame).expect("send");
    }

    /// Everything the server sent within `wait`, frames decoded, until `until` shows up.
    fn read_until(&mut self, until: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let mut text = String::new();
        loop {
            while self.1.len() >= 2 {
                let (offset, len) = match self.1[1] & 0x7f {
                    126 if self.1.len() >= 4 => {
                        (4, usize::from(u16::from_be_bytes([self.1[2], self.1[3]])))
                    }
                    126 => break,
                    n => (2, usize::from(n)),
                };
                if self.1.len() < offset + len {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&self.1[offset..offset + len]));
                self.1.drain(..offset + len);
            }
            if text.contains(until) || Instant::now() >= deadline {
                return text;
            }
            self.fill();
        }
    }
}

#[test]
fn the_websocket_listener_asks_for_the_same_users_as_the_client_port() {
    let server = start();

    // No credentials: the INFO says so and CONNECT is refused.
    let mut anonymous = Ws::open(server.ws_port);
    let info = anonymous.read_until("\r\n", Duration::from_secs(5));
    assert!(
        info.starts_with("INFO ") && info.contains("\"auth_required\":true"),
        "the websocket listener must require auth: {info}"
    );
    anonymous.send("CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n");
    let refused = anonymous.read_until("Authorization Violation", Duration::from_secs(5));
    assert!(
        refused.contains("-ERR 'Authorization Violation'"),
        "an anonymous websocket client must be refused: {refused}"
    );

    // The tenant credential over WebSocket: in, and fenced exactly as on the client port.
    let mut tenant = Ws::open(server.ws_port);
    tenant.read_until("\r\n", Duration::from_secs(5));
    tenant.send(
        "CONNECT {\"verbose\":false,\"protocol\":1,\"user\":\"tenant-acme\",\"pass\":\"tenant-pw\"}\r\nPING\r\n",
    );
    let pong = tenant.read_until("PONG", Duration::from_secs(5));
    assert!(
        pong.contains("PONG") && !pong.contains("-ERR"),
        "tenant login: {pong}"
    );
    tenant.send(&format!(
        "PUB talkwai.evt.{ACME}.task.1 2\r\n{{}}\r\nPING\r\n"
    ));
    let denied = tenant.read_until("Permissions Violation", Duration::from_secs(5));
    assert!(
        denied.contains("Permissions Violation for Publish"),
        "a tenant must not publish events over websocket: {denied}"
    );
    tenant.send(&format!(
        "SUB talkwai.room.tenant.{ACME}.topic.taskUpdates 1\r\nPING\r\n"
    ));
    let allowed = tenant.read_until("PONG", Duration::from_secs(5));
    assert!(
        allowed.contains("PONG") && !allowed.contains("-ERR"),
        "its own tenant room is allowed: {allowed}"
    );
    tenant.send("SUB talkwai.room.tenant.b1000000-0000-4000-8000-000000000009.> 2\r\nPING\r\n");
    let other = tenant.read_until("Permissions Violation", Duration::from_secs(5));
    assert!(
        other.contains("Permissions Violation for Subscription"),
        "another tenant's room is not: {other}"
    );
}
