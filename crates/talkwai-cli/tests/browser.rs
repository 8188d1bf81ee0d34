//! The browser client and dashboard against a real system: starts `talkwai up` on free ports
//! (short presence TTL), then runs, with its URLs and tokens in the environment,
//! 1. the TypeScript client's integration tests (`clients/typescript/test/integration`, Node's
//!    test runner), and
//! 2. the dashboard's browser test (`clients/dashboard/test/browser.mjs`: headless Debian
//!    Chromium driven by playwright-core): live task updates within a second, tenant isolation,
//!    presence across two pages and expiry of a closed one, the admin view; screenshots in
//!    `target/artifacts/browser/`.
//!
//! Needs Node.js, `npm ci` and `npm run build` in `clients/`, and `/usr/bin/chromium`, which
//! `scripts/dev.sh test` installs and then sets `TALKWAI_CLIENT_TESTS=1`; without that variable
//! the test says so and passes without running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use secrecy::SecretString;
use talkwai_auth::PrincipalKind;
use talkwai_cli::token::{TokenSpec, mint};
use talkwai_cli::up::READY_LINE;
use talkwai_cli::{dashboard, demo};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// The second tenant the browser test creates ("Beta Inc"), its owner's `$users` id.
const OTHER_TENANT: Uuid = Uuid::from_u128(0xa0000000_0000_4000_8000_0000000000b2);
const OTHER_USER: Uuid = Uuid::from_u128(0xb0000000_0000_4000_8000_0000000000b2);
/// Presence TTL of the system under test, seconds (short, so expiry is quick to see).
const PRESENCE_TTL_SECS: u64 = 4;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("repo root: {e}"))
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} is missing: {what} (scripts/dev.sh test prepares it)",
        path.display()
    );
}

/// Runs `node <args>` in `dir` with `env`, its output in `log`; panics with that output when it
/// fails or outlives `limit`.
async fn node(
    dir: &Path,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
    limit: Duration,
) -> String {
    let file = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let mut child = tokio::process::Command::new("node")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            file.try_clone().unwrap_or_else(|e| panic!("log file: {e}")),
        ))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node {args:?}: {e}"));
    let status = tokio::time::timeout(limit, child.wait()).await;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    eprintln!("--- node {} ({})\n{text}", args.join(" "), log.display());
    match status {
        Ok(Ok(status)) => assert!(status.success(), "node {args:?} failed ({status})"),
        Ok(Err(e)) => panic!("node {args:?}: {e}"),
        Err(_) => panic!("node {args:?} did not finish within {limit:?}"),
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_the_typescript_client_work_against_talkwai_up() {
    if std::env::var("TALKWAI_CLIENT_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set TALKWAI_CLIENT_TESTS=1 after `npm ci && npm run build` in clients/ and installing chromium (scripts/dev.sh test does all three)"
        );
        return;
    }
    let root = repo_root();
    let clients = root.join("clients");
    require(
        &clients.join("node_modules/playwright-core"),
        "npm ci in clients/",
    );
    require(
        &clients.join("dashboard/dist/index.html"),
        "npm run build in clients/",
    );
    require(
        &clients.join("typescript/dist/test/integration"),
        "npm run build in clients/",
    );
    require(Path::new("/usr/bin/chromium"), "apt-get install chromium");

    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let data = parent.path().join("data");
    let log = parent.path().join("up.log");
    let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
    let dashboard_dir = clients.join("dashboard/dist");
    let trace = parent.path().join("nats-trace.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_talkwai"))
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--nats-port", "0", "--postgres-port", "0", "--ws-port", "0"])
        .args(["--dashboard-port", "0", "--dashboard-dir"])
        .arg(&dashboard_dir)
        .arg("--nats-trace-file")
        .arg(&trace)
        .env_remove("TALKWAI_NATS_URL")
        .env_remove("TALKWAI_TOKEN")
        .env_remove("TALKWAI_POSTGRES_URL")
        .env("TALKWAI_PRESENCE_TTL_SECS", PRESENCE_TTL_SECS.to_string())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start talkwai up: {e}"));
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("talkwai up has no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(180), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.starts_with(READY_LINE);
            banner.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        ready == Ok(true),
        "talkwai up did not get ready:\n{}\n{}",
        banner.join("\n"),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Keep reading stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let find = |prefix: &str| {
        banner
            .iter()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(prefix)
                    .map(str::trim)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", banner.join("\n")))
    };
    let nats_url = find("export TALKWAI_NATS_URL=");
    let token = find("export TALKWAI_TOKEN=");
    let dashboard_line = find("talkwai up: dashboard");
    assert!(
        !dashboard_line.contains("not built"),
        "the dashboard must be served: {dashboard_line}"
    );
    let dashboard_url = dashboard_line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let websocket = find("talkwai up: websocket");
    assert!(websocket.starts_with("ws://127.0.0.1:"), "{websocket}");
    let owner_link = find("dashboard (owner):");
    assert!(
        owner_link.starts_with(&format!(
            "{dashboard_url}#token={token}&member={}",
            demo::OWNER
        )),
        "the printed dashboard link signs in as the owner: {owner_link}"
    );

    let secrets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("secrets.json")).unwrap_or_else(|e| panic!("secrets.json: {e}")),
    )
    .unwrap_or_else(|e| panic!("secrets.json: {e}"));
    let secret = |name: &str| {
        secrets[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in secrets.json"))
            .to_owned()
    };
    let jwt_secret = SecretString::from(secret("jwtSecret"));
    let spec = |kind, sub, tenant| TokenSpec {
        kind,
        sub,
        tenant,
        role: None,
        ttl: Duration::from_secs(3600),
        issuer: None,
        audience: None,
    };
    let other_token = mint(
        &spec(PrincipalKind::Member, OTHER_USER, Some(OTHER_TENANT)),
        &jwt_secret,
    )
    .unwrap_or_else(|e| panic!("mint: {e}"));
    let admin_token = mint(
        &spec(PrincipalKind::Admin, dashboard::DEMO_ADMIN_USER, None),
        &jwt_secret,
    )
    .unwrap_or_else(|e| panic!("mint: {e}"));
    let artifacts = root.join("target/artifacts/browser");
    let mut env: Vec<(String, String)> = vec![
        // nats.js reads no credentials from URLs: the Node side signs in with its tokens (the
        // auth callout of `talkwai up`), so it gets the URL without the operator's password.
        (
            "TALKWAI_NATS_URL".into(),
            talkwai_cli::plain_servers(&nats_url).join(","),
        ),
        ("TALKWAI_TOKEN".into(), token),
        ("TALKWAI_TENANT".into(), demo::TENANT.to_string()),
        ("TALKWAI_OWNER_MEMBER".into(), demo::OWNER.to_string()),
        ("TALKWAI_DASHBOARD_URL".into(), dashboard_url),
        ("TALKWAI_OTHER_TENANT".into(), OTHER_TENANT.to_string()),
        ("TALKWAI_OTHER_USER".into(), OTHER_USER.to_string()),
        ("TALKWAI_OTHER_TOKEN".into(), other_token),
        ("TALKWAI_ADMIN_TOKEN".into(), admin_token),
        ("TALKWAI_PLATFORM_TOKEN".into(), secret("platformToken")),
        (
            "TALKWAI_PRESENCE_TTL_SECS".into(),
            PRESENCE_TTL_SECS.to_string(),
        ),
        (
            "TALKWAI_ARTIFACTS".into(),
            artifacts.to_string_lossy().into_owned(),
        ),
    ];
    std::fs::create_dir_all(&artifacts)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", artifacts.display()));
    if let Ok(path) = std::env::var("TALKWAI_DOCS_SCREENSHOT") {
        env.push(("TALKWAI_DOCS_SCREENSHOT".into(), path));
    }

    let report = node(
        &clients.join("typescript"),
        &["--test", "--test-concurrency=1", "dist/test/integration/"],
        &env,
        &artifacts.join("client-integration.log"),
        Duration::from_secs(90),
    )
    .await;
    assert!(
        report.contains("# pass 5") && report.contains("# fail 0"),
        "every client integration test must run and pass:\n{report}"
    );
    let report = node(
        &clients.join("dashboard"),
        &["test/browser.mjs"],
        &env,
        &artifacts.join("browser.log"),
        Duration::from_secs(120),
    )
    .await;
    assert!(report.contains("browser: ok"), "{report}");
    assert!(artifacts.join("dashboard.png").is_file());
    every_subject_on_the_wire_is_a_channel(&trace);

    let pid = child.id().unwrap_or_else(|| panic!("talkwai up exited"));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    assert!(
        matches!(exited, Ok(Ok(status)) if status.success()),
        "talkwai up did not stop cleanly: {exited:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Every subject a client (service, Node client, browser) published during the run is a channel
/// of `proto/asyncapi.yaml`, NATS plumbing (`$JS.`, `$KV.`...) aside.
fn every_subject_on_the_wire_is_a_channel(trace: &Path) {
    let log = std::fs::read_to_string(trace)
        .unwrap_or_else(|e| panic!("nats trace {}: {e}", trace.display()));
    let subjects = talkwai_testkit::trace::published_subjects(&log);
    let unknown: Vec<&String> = subjects
        .iter()
        .filter(|s| !talkwai_proto::asyncapi::is_nats_internal(s))
        .filter(|s| talkwai_proto::asyncapi::channel_for(s).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "subjects on the wire that are no AsyncAPI channel: {unknown:?}"
    );
    // Not vacuous: the run spoke every family of the contract.
    for family in [
        "talkwai.cmd.",
        "talkwai.qry.",
        "talkwai.room.",
        "$SRV.",
        "_INBOX.",
    ] {
        assert!(
            subjects.iter().any(|s| s.starts_with(family)),
            "no {family} subject in the trace ({} subjects)",
            subjects.len()
        );
    }
}
