//! Starts real nats-server instances and writes and reads through JetStream.

use std::path::Path;

use async_nats::jetstream::{self, stream};
use talkwai_testkit::{NatsServer, TestkitError};

fn report(context: &str, err: &dyn std::error::Error) -> String {
    let mut text = format!("{context}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

async fn start() -> NatsServer {
    NatsServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("starting nats-server", &e)))
}

async fn jetstream_of(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.url()));
    jetstream::new(client)
}

async fn create_stream(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "TESTKIT".to_string(),
        subjects: vec!["testkit.>".to_string()],
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating stream: {e}"))
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    js.publish(subject.to_string(), payload.into())
        .await
        .unwrap_or_else(|e| panic!("publishing to {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("awaiting ack for {subject}: {e}"))
        .sequence
}

async fn read(stream: &stream::Stream, sequence: u64) -> String {
    let message = stream
        .direct_get(sequence)
        .await
        .unwrap_or_else(|e| panic!("direct get of sequence {sequence}: {e}"));
    String::from_utf8(message.payload.to_vec()).expect("payload is utf-8")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn publishes_with_ack_and_reads_back() {
    let server = start().await;
    let config = std::fs::read_to_string(server.config_path()).expect("config is readable");
    assert!(
        config.contains("sync_interval: always"),
        "config lacks sync_interval: always:\n{config}"
    );

    let js = jetstream_of(&server).await;
    let stream = create_stream(&js).await;
    let first = publish(&js, "testkit.a", "hello").await;
    let second = publish(&js, "testkit.b", "world").await;

    assert_eq!((first, second), (1, 2));
    assert_eq!(read(&stream, first).await, "hello");
    assert_eq!(read(&stream, second).await, "world");
}

#[tokio::test]
async fn two_servers_run_side_by_side() {
    let (a, b) = tokio::join!(start(), start());

    assert_ne!(a.port(), b.port(), "both servers got the same port");
    assert_ne!(
        a.store_dir(),
        b.store_dir(),
        "both servers share a store dir"
    );
    for server in [&a, &b] {
        let js = jetstream_of(server).await;
        let stream = create_stream(&js).await;
        let seq = publish(&js, "testkit.x", "side by side").await;
        assert_eq!(read(&stream, seq).await, "side by side");
    }
}

#[tokio::test]
async fn drop_kills_the_server_and_deletes_its_dirs() {
    let server = start().await;
    let store = server.store_dir().to_path_buf();
    let config = server.config_path().to_path_buf();
    let pid = server.pid().expect("a started server has a pid");
    {
        let js = jetstream_of(&server).await;
        create_stream(&js).await;
        publish(&js, "testkit.x", "data on disk").await;
    }
    assert!(
        store.exists(),
        "store dir {} missing while running",
        store.display()
    );

    drop(server);

    assert!(!store.exists(), "store dir {} left behind", store.display());
    assert!(!config.exists(), "config {} left behind", config.display());
    assert!(
        !pid_alive(pid),
        "nats-server pid {pid} still alive after drop"
    );
}

#[tokio::test]
async fn restart_after_kill_keeps_port_and_data() {
    let mut server = start().await;
    let port = server.port();
    let seq = {
        let js = jetstream_of(&server).await;
        create_stream(&js).await;
        publish(&js, "testkit.crash", "survives a crash").await
    };

    server.kill().await.expect("kill");
    assert!(!server.is_running(), "server still running after kill");
    server
        .restart()
        .await
        .unwrap_or_else(|e| panic!("{}", report("restart after kill", &e)));
    assert_eq!(server.port(), port, "restart changed the port");

    let js = jetstream_of(&server).await;
    let stream = js
        .get_stream("TESTKIT")
        .await
        .expect("stream survives restart");
    assert_eq!(read(&stream, seq).await, "survives a crash");

    // A graceful restart keeps it too.
    server.restart().await.expect("graceful restart");
    let log = std::fs::read_to_string(server.log_path()).expect("log is readable");
    assert!(
        log.contains("Trapped \"terminated\" signal"),
        "restart did not stop the server gracefully; log:\n{log}"
    );
    let js = jetstream_of(&server).await;
    let stream = js
        .get_stream("TESTKIT")
        .await
        .expect("stream survives restart");
    assert_eq!(read(&stream, seq).await, "survives a crash");
}

#[tokio::test]
async fn monitoring_port_reports_jetstream_health() {
    let server = NatsServer::builder()
        .monitoring(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("starting with monitoring", &e)));
    let url = server.monitoring_url().expect("monitoring url is set");
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected monitoring url {url}"
    );
}

#[tokio::test]
async fn persistent_store_dir_is_kept_and_reused() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("nats-store");

    let seq = {
        let server = NatsServer::builder()
            .store_dir(&dir)
            .persistent(true)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{}", report("first persistent start", &e)));
        let js = jetstream_of(&server).await;
        create_stream(&js).await;
        publish(&js, "testkit.keep", "kept").await
    };
    assert!(dir.exists(), "persistent store dir was deleted on drop");

    let server = NatsServer::builder()
        .store_dir(&dir)
        .persistent(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("second persistent start", &e)));
    let js = jetstream_of(&server).await;
    let stream = js
        .get_stream("TESTKIT")
        .await
        .expect("stream is still there");
    assert_eq!(read(&stream, seq).await, "kept");
}

#[tokio::test]
async fn persistent_without_store_dir_is_rejected() {
    let err = NatsServer::builder()
        .persistent(true)
        .start()
        .await
        .expect_err("persistent without a store dir must fail");
    assert!(
        matches!(err, TestkitError::InvalidConfig(_)),
        "unexpected error {err}"
    );
}

/// Sends a WebSocket upgrade to `port` and returns what the server answered: the HTTP head and
/// the first frame's payload (the NATS `INFO` line, in an unmasked text or binary frame).
async fn websocket_hello(port: u16) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connecting to the websocket port {port}: {e}"));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("sending the upgrade: {e}"));
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let frame = &buf[end + 4..];
                if frame.len() >= 2 {
                    let len = usize::from(frame[1] & 0x7f);
                    let (offset, len) = match len {
                        126 if frame.len() >= 4 => {
                            (4, usize::from(u16::from_be_bytes([frame[2], frame[3]])))
                        }
                        126 => continue,
                        len => (2, len),
                    };
                    if frame.len() >= offset + len {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let payload =
                            String::from_utf8_lossy(&frame[offset..offset + len]).into_owned();
                        return (head, payload);
                    }
                }
            }
        }
        (String::from_utf8_lossy(&buf).into_owned(), String::new())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("no websocket answer on port {port}"))
}

#[tokio::test]
async fn websocket_listener_speaks_nats_on_a_free_port() {
    let plain = start().await;
    assert_eq!(plain.websocket_url(), None, "off unless asked for");

    let server = NatsServer::builder()
        .websocket(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", report("starting nats-server with websocket", &e)));
    let port = server
        .websocket_port()
        .unwrap_or_else(|| panic!("websocket(true) must give a port"));
    assert_ne!(port, server.port());
    assert_eq!(
        server.websocket_url(),
        Some(format!("ws://127.0.0.1:{port}"))
    );
    let (head, info) = websocket_hello(port).await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    assert!(
        info.starts_with("INFO ") && info.contains(server.server_name()),
        "the first frame must be this server's INFO: {info:?}"
    );
}

#[tokio::test]
async fn wait_for_endpoint_waits_for_a_late_responder() {
    use futures::StreamExt as _;
    let server = start().await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let err = client
        .request("probe.echo", "".into())
        .await
        .expect_err("nobody listens yet");
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );
    let late = async_nats::connect(server.url()).await.expect("connect");
    let responder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut sub = late.subscribe("probe.echo").await.expect("subscribe");
        while let Some(message) = sub.next().await {
            if let Some(reply) = message.reply {
                late.publish(reply, "pong".into()).await.expect("reply");
            }
        }
    });
    let reply = talkwai_testkit::wait::wait_for_endpoint(&client, "probe.echo", "ping")
        .await
        .expect("the late responder answers");
    assert_eq!(&reply.payload[..], b"pong");
    responder.abort();
}
