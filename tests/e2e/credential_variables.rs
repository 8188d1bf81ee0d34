//! The ways NATS deployments hand out credentials, each tried against a real nats-server by
//! the service binaries and `talkwai` as processes (environment variables cannot be set inside
//! a test process): `TALKWAI_NATS_USER`/`_PASSWORD` with `deploy/nats/auth.conf` for all three
//! services and the CLI, `TALKWAI_NATS_TOKEN`, `TALKWAI_NATS_NKEY` (a seed file) and
//! `TALKWAI_NATS_CREDS` (a `.creds` file of a decentralised-auth account) for the command
//! service and the CLI. Two sources at once are refused with a clear message.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use talkwai_e2e::auth_config;
use talkwai_testkit::wait::{http_get, wait_until};
use talkwai_testkit::{NatsServer, Postgres, bins, free_port};
use uuid::Uuid;

const PLATFORM: &str = "platform-token-for-credential-variables";
const SECRET: &str = "jwt-secret-for-credential-variables";

/// A service or `talkwai` process with a clean `TALKWAI_*` environment plus `env`.
fn command(bin: &str, env: &[(&str, String)], log: &Path) -> tokio::process::Command {
    let path = bins::binary(bin).expect("the workspace binaries build");
    let mut command = tokio::process::Command::new(path);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TALKWAI_") {
            command.env_remove(key);
        }
    }
    let log = std::fs::File::create(log).expect("log file");
    command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    command
}

/// Starts `bin` as a service; returns it and the `/readyz` port.
fn service(bin: &str, env: &[(&str, String)], dir: &Path) -> (tokio::process::Child, u16) {
    let port = free_port().expect("free port");
    let mut env = env.to_vec();
    env.extend([
        ("TALKWAI_METRICS_ADDR", format!("127.0.0.1:{port}")),
        ("TALKWAI_PLATFORM_TOKEN", PLATFORM.to_owned()),
        ("TALKWAI_JWT_SECRET", SECRET.to_owned()),
    ]);
    let child = command(bin, &env, &dir.join(format!("{bin}.log")))
        .stdout(Stdio::null())
        .spawn()
        .expect("the service starts");
    (child, port)
}

async fn wait_ready(bin: &str, port: u16, dir: &Path) {
    let ready = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            match http_get(port, "/readyz").await {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    if let Err(e) = ready {
        let log = std::fs::read_to_string(dir.join(format!("{bin}.log"))).unwrap_or_default();
        panic!("{bin} never became ready ({e}); its log:\n{log}");
    }
}

/// `talkwai cmd platform.tenant.create` with `env`: its exit code, reply and stderr.
async fn create_tenant_with_cli(env: &[(&str, String)], dir: &Path) -> (i32, Value, String) {
    let log = dir.join(format!("cli-{}.log", Uuid::new_v4()));
    let body = json!({"id": Uuid::new_v4(), "name": "Acme", "domain": "acme.com"}).to_string();
    let output = command("talkwai", env, &log)
        .args(["cmd", "platform.tenant.create", &body, "--token", PLATFORM])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("talkwai runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let reply = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), reply, stderr)
}

/// The CLI signs in with `env` and the command service (signed in with `service_env`)
/// carries out its command.
async fn command_round_trip(url: &str, service_env: &[(&str, String)], cli_env: &[(&str, String)]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = vec![("TALKWAI_NATS_URL", url.to_owned())];
    env.extend_from_slice(service_env);
    let (_service, port) = service("talkwai-command-service", &env, dir.path());
    wait_ready("talkwai-command-service", port, dir.path()).await;
    let mut env = vec![("TALKWAI_NATS_URL", url.to_owned())];
    env.extend_from_slice(cli_env);
    let (code, reply, stderr) = create_tenant_with_cli(&env, dir.path()).await;
    assert_eq!(code, 0, "talkwai cmd fails: {reply} {stderr}");
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["events"][0]["type"], "tenant.created", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_and_the_cli_sign_in_with_user_and_password_variables() {
    let server = NatsServer::builder()
        .extra_config(auth_config())
        .start()
        .await
        .expect("nats-server with auth.conf");
    let pg = Postgres::start().await.expect("postgres");
    let db = pg
        .create_unique_database("credentials")
        .await
        .expect("database");
    let dir = tempfile::tempdir().expect("temp dir");
    let as_user = |user: &str, password: &str| {
        vec![
            ("TALKWAI_NATS_URL", server.url()),
            ("TALKWAI_NATS_USER", user.to_owned()),
            ("TALKWAI_NATS_PASSWORD", password.to_owned()),
        ]
    };

    let (_commands, command_port) = service(
        "talkwai-command-service",
        &as_user("command-service", "command-pw"),
        dir.path(),
    );
    let mut projector_env = as_user("projector", "projector-pw");
    projector_env.push(("TALKWAI_DATABASE_URL", db.clone()));
    let (_projector, projector_port) = service("talkwai-projector", &projector_env, dir.path());
    let (_notifier, notifier_port) = service(
        "talkwai-notifier",
        &as_user("notifier", "notifier-pw"),
        dir.path(),
    );
    wait_ready("talkwai-command-service", command_port, dir.path()).await;
    wait_ready("talkwai-projector", projector_port, dir.path()).await;
    wait_ready("talkwai-notifier", notifier_port, dir.path()).await;

    let (code, reply, stderr) =
        create_tenant_with_cli(&as_user("operator", "operator-pw"), dir.path()).await;
    assert_eq!(code, 0, "talkwai cmd fails: {reply} {stderr}");
    assert_eq!(reply["ok"], true, "{reply}");

    // A wrong password is the server's refusal, named as such.
    let (code, _, stderr) = create_tenant_with_cli(&as_user("operator", "wrong"), dir.path()).await;
    assert_ne!(code, 0);
    assert!(
        stderr.to_lowercase().contains("authoriz"),
        "the refusal says why: {stderr}"
    );

    // Credentials in the URL and in a variable: refused before connecting, never guessed.
    let mut both = as_user("operator", "operator-pw");
    both[0].1 = server
        .url()
        .replacen("nats://", "nats://operator:operator-pw@", 1);
    let (code, _, stderr) = create_tenant_with_cli(&both, dir.path()).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("given twice"), "{stderr}");
    // Only one of user and password.
    let (code, _, stderr) = create_tenant_with_cli(
        &[
            ("TALKWAI_NATS_URL", server.url()),
            ("TALKWAI_NATS_USER", "operator".to_owned()),
        ],
        dir.path(),
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("TALKWAI_NATS_PASSWORD"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_variable_signs_in() {
    let token = format!("tok-{}", Uuid::new_v4().simple());
    let server = NatsServer::builder()
        .extra_config(format!("authorization {{ token: \"{token}\" }}\n"))
        .start()
        .await
        .expect("nats-server with a token");
    let env = [("TALKWAI_NATS_TOKEN", token.clone())];
    command_round_trip(&server.url(), &env, &env).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, _) = create_tenant_with_cli(
        &[
            ("TALKWAI_NATS_URL", server.url()),
            ("TALKWAI_NATS_TOKEN", "not-the-token".to_owned()),
        ],
        dir.path(),
    )
    .await;
    assert_ne!(code, 0, "a wrong token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_file_signs_in() {
    let key = nkeys::KeyPair::new_user();
    let server = NatsServer::builder()
        .extra_config(format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
            key.public_key()
        ))
        .start()
        .await
        .expect("nats-server with an nkey user");
    let dir = tempfile::tempdir().expect("temp dir");
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, key.seed().expect("seed")).expect("seed file");
    let env = [(
        "TALKWAI_NATS_NKEY",
        seed_file.to_string_lossy().into_owned(),
    )];
    command_round_trip(&server.url(), &env, &env).await;
}

/// A NATS JWT (`ed25519-nkey`) with `claims`, issued by `issuer` for `subject`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = json!({
        "jti": Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let payload = b64.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64.encode(signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_signs_in() {
    // Decentralised auth: an operator, a system account, an account with JetStream, a user.
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "talkwai-test",
        json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2, "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1}}),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "TALKWAI",
        json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "service",
        json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let server = NatsServer::builder()
        .extra_config(format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {}: \"{system_jwt}\"\n  {}: \"{account_jwt}\"\n}}\n",
            system.public_key(),
            system.public_key(),
            account.public_key(),
        ))
        .start()
        .await
        .expect("nats-server in operator mode");
    let dir = tempfile::tempdir().expect("temp dir");
    let creds = dir.path().join("service.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        ),
    )
    .expect("creds file");
    let env = [("TALKWAI_NATS_CREDS", creds.to_string_lossy().into_owned())];
    command_round_trip(&server.url(), &env, &env).await;
}
