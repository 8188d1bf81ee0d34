//! NATS users and permissions of `talkwai up`, the same as production's.
//!
//! The server config is `deploy/nats/auth.conf` itself (compiled in), its
//! `$TALKWAI_NATS_*_PASSWORD` variables filled with the passwords of `<data>/secrets.json`,
//! plus an `auth_callout` block: the users of `auth.conf` (the services, the demo tenant's
//! static credential, the operator) sign in with their passwords, every other connection (TCP or
//! WebSocket) goes to [`run_callout`], which accepts only a valid bearer token as the NATS
//! `auth_token` and answers with a NATS user fenced like the token: a member token gets the
//! permissions of `auth.conf`'s `TENANT_ACME` with its own tenant in place of the demo tenant
//! (the "auth callout templated on the tenant" of ARCHITECTURE.md) and, in place of all of
//! `_INBOX.>`, only its own reply inboxes ([`member_inbox_prefix`]); an admin or the platform
//! token gets every command, query and room subject and still no event, JetStream or KV subject.
//! An anonymous client is refused, and so is a token whose member or admin the log says may no
//! longer sign in (erased, deleted, inactive or unlinked: the notifier's [`SignIns`], the rule
//! of the command service, read from the log for each new connection; a log that cannot be
//! read refuses too). A connection already open keeps its permissions until it reconnects.
//!
//! The callout's answers are NATS JWTs (ADR-26): an `authorization_response` wrapping a user
//! JWT, both signed with the account nkey whose public key is the configured `issuer`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use talkwai_auth::{Principal, PrincipalKind, TokenVerifier};
use talkwai_notifier::signin::SignIns;
use uuid::Uuid;

use crate::error::CliError;
use crate::secrets::NatsSecrets;

/// `deploy/nats/auth.conf`, the one source of the users and permissions.
pub const AUTH_CONF: &str = include_str!("../../../deploy/nats/auth.conf");
/// The demo tenant written into `auth.conf`'s `TENANT_ACME` permissions.
const TEMPLATE_TENANT: &str = "a0000000-0000-4000-8000-000000000001";
/// The subject nats-server sends authorization requests to.
pub const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The account a callout user is bound to (the global account of a config without accounts).
const ACCOUNT: &str = "$G";
/// How long a user JWT of a token without expiry lives.
const DEFAULT_USER_TTL_SECS: u64 = 24 * 3600;

/// `auth.conf`'s password variables and which secret fills each.
fn passwords(secrets: &NatsSecrets) -> [(&'static str, &secrecy::SecretString); 6] {
    [
        ("$TALKWAI_NATS_COMMAND_PASSWORD", &secrets.command_password),
        (
            "$TALKWAI_NATS_PROJECTOR_PASSWORD",
            &secrets.projector_password,
        ),
        (
            "$TALKWAI_NATS_NOTIFIER_PASSWORD",
            &secrets.notifier_password,
        ),
        ("$TALKWAI_NATS_QUERY_PASSWORD", &secrets.query_password),
        ("$TALKWAI_NATS_TENANT_PASSWORD", &secrets.tenant_password),
        (
            "$TALKWAI_NATS_OPERATOR_PASSWORD",
            &secrets.operator_password,
        ),
    ]
}

/// Quotes a string for the nats-server config syntax.
pub fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Why the NATS auth config or an authorization could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NatsAuthError {
    /// `auth.conf` no longer has the shape this module reads.
    #[error("deploy/nats/auth.conf: {0}")]
    Config(String),
    /// The authorization request is not a readable, correctly signed NATS JWT.
    #[error("bad authorization request: {0}")]
    Request(String),
    /// Signing an answer failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The user names of `auth.conf` (`{ user: NAME, ... }`), in order.
pub fn config_users(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line.strip_prefix('{')?.trim_start().strip_prefix("user:")?;
            let name = rest.trim_start().split([',', ' ']).next()?;
            (!name.is_empty()).then(|| name.trim_matches('"').to_owned())
        })
        .collect()
}

/// The nats-server config text: `auth.conf` with the passwords filled in and the
/// `auth_callout` block (issuer: the callout key; every user of `auth.conf` bypasses it).
pub fn server_config(conf: &str, secrets: &NatsSecrets) -> Result<String, NatsAuthError> {
    let mut text = conf.to_owned();
    for (var, secret) in passwords(secrets) {
        if !text.contains(var) {
            return Err(NatsAuthError::Config(format!("{var} is no longer used")));
        }
        text = text.replace(var, &quote(secret.expose_secret()));
    }
    // A password variable of a user `up` does not know (no service of `up` signs in as it):
    // a fresh random password for this run, so the user exists but nobody knows it.
    while let Some(at) = text.find("$TALKWAI_") {
        let var: String = text[at..]
            .chars()
            .take_while(|c| *c == '$' || *c == '_' || c.is_ascii_alphanumeric())
            .collect();
        if !(var.starts_with("$TALKWAI_NATS_") && var.ends_with("_PASSWORD")) {
            return Err(NatsAuthError::Config(format!(
                "{var} has no value in talkwai up"
            )));
        }
        let password: String = rand::random::<[u8; 24]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        text = text.replace(&var, &quote(&password));
    }
    let users = config_users(conf);
    if users.is_empty() {
        return Err(NatsAuthError::Config("no `{ user: ... }` entries".into()));
    }
    // The `authorization { ... }` block closes with the file's last brace.
    let close = text
        .rfind('}')
        .ok_or_else(|| NatsAuthError::Config("no closing brace".into()))?;
    let block = format!(
        "  # talkwai up: connections of no user above go to the auth callout (bearer tokens).\n  auth_callout {{\n    issuer: {}\n    auth_users: [{}]\n  }}\n",
        quote(&secrets.callout_key.public_key()),
        users
            .iter()
            .map(|u| quote(u))
            .collect::<Vec<_>>()
            .join(", ")
    );
    text.insert_str(close, &block);
    Ok(text)
}

/// Allowed and denied subjects of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    /// Subjects allowed.
    pub allow: Vec<String>,
    /// Subjects denied (deny wins).
    pub deny: Vec<String>,
}

/// A NATS user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// What it may publish.
    pub publish: Fence,
    /// What it may subscribe to.
    pub subscribe: Fence,
    /// Whether it may answer requests (`allow_responses`).
    pub allow_responses: bool,
}

impl Permissions {
    fn to_jwt(&self) -> Value {
        let mut value = json!({
            "pub": {"allow": self.publish.allow, "deny": self.publish.deny},
            "sub": {"allow": self.subscribe.allow, "deny": self.subscribe.deny},
        });
        if self.allow_responses {
            value["resp"] = json!({"max": 1, "ttl": 0});
        }
        value
    }
}

/// The quoted strings of the first `key: [ ... ]` list in `text`.
fn list_after(text: &str, key: &str) -> Vec<String> {
    let Some(start) = text.find(key) else {
        return Vec::new();
    };
    let rest = &text[start + key.len()..];
    let Some(open) = rest.find('[') else {
        return Vec::new();
    };
    let Some(close) = rest[open..].find(']') else {
        return Vec::new();
    };
    rest[open + 1..open + close]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// A member's permissions: `auth.conf`'s `TENANT_ACME` role with `tenant` in place of the demo
/// tenant.
pub fn tenant_permissions(conf: &str, tenant: Uuid) -> Result<Permissions, NatsAuthError> {
    let start = conf
        .find("TENANT_ACME = {")
        .ok_or_else(|| NatsAuthError::Config("no TENANT_ACME role".into()))?;
    let body = &conf[start..];
    let end = body
        .find("users:")
        .ok_or_else(|| NatsAuthError::Config("no users after TENANT_ACME".into()))?;
    let body = &body[..end];
    let publish_at = body
        .find("publish:")
        .ok_or_else(|| NatsAuthError::Config("TENANT_ACME has no publish".into()))?;
    let subscribe_at = body
        .find("subscribe:")
        .ok_or_else(|| NatsAuthError::Config("TENANT_ACME has no subscribe".into()))?;
    if subscribe_at < publish_at {
        return Err(NatsAuthError::Config(
            "TENANT_ACME must list publish before subscribe".into(),
        ));
    }
    let (publish, subscribe) = (&body[publish_at..subscribe_at], &body[subscribe_at..]);
    let tenant = tenant.to_string();
    let fill = |list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .map(|s| s.replace(TEMPLATE_TENANT, &tenant))
            .collect()
    };
    let permissions = Permissions {
        publish: Fence {
            allow: fill(list_after(publish, "allow:")),
            deny: fill(list_after(publish, "deny:")),
        },
        subscribe: Fence {
            allow: fill(list_after(subscribe, "allow:")),
            deny: fill(list_after(subscribe, "deny:")),
        },
        allow_responses: body.contains("allow_responses: true"),
    };
    if permissions.publish.allow.is_empty() || permissions.subscribe.allow.is_empty() {
        return Err(NatsAuthError::Config(
            "TENANT_ACME's publish and subscribe need `allow: [...]` lists".into(),
        ));
    }
    Ok(permissions)
}

/// The reply-inbox prefix of a member's connections: `_INBOX.<$users id>`. A member may read
/// only inboxes under it (`auth.conf`'s static tenant role allows all of `_INBOX.>`, where a
/// wildcard subscription would read every other client's replies); clients set it as their
/// inbox prefix (`inboxPrefixFor` in the TypeScript client, `custom_inbox_prefix` in Rust).
pub fn member_inbox_prefix(user: Uuid) -> String {
    format!("_INBOX.{user}")
}

/// A member's permissions: [`tenant_permissions`] with replies only to its own inboxes.
pub fn member_permissions(
    conf: &str,
    tenant: Uuid,
    user: Uuid,
) -> Result<Permissions, NatsAuthError> {
    let mut permissions = tenant_permissions(conf, tenant)?;
    let own = format!("{}.>", member_inbox_prefix(user));
    let mut replaced = false;
    for subject in &mut permissions.subscribe.allow {
        if subject == "_INBOX.>" {
            *subject = own.clone();
            replaced = true;
        }
    }
    if !replaced {
        return Err(NatsAuthError::Config(
            "TENANT_ACME no longer subscribes to _INBOX.>".into(),
        ));
    }
    Ok(permissions)
}

/// An admin's or the platform token's permissions: every command, query and room subject, no
/// event, JetStream or KV subject, and no room subject the tenant role may not publish either
/// (the services' topics, as `auth.conf` says).
pub fn admin_permissions(conf: &str) -> Result<Permissions, NatsAuthError> {
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut deny = strings(&["talkwai.evt.>", "$JS.>", "$KV.>"]);
    for subject in tenant_permissions(conf, Uuid::nil())?.publish.deny {
        if subject.starts_with("talkwai.room.") && !deny.contains(&subject) {
            deny.push(subject);
        }
    }
    Ok(Permissions {
        publish: Fence {
            allow: strings(&["talkwai.cmd.>", "talkwai.qry.>", "talkwai.room.>"]),
            deny,
        },
        subscribe: Fence {
            allow: strings(&["_INBOX.>", "talkwai.qry.*.live.>", "talkwai.room.>"]),
            deny: strings(&["talkwai.evt.>", "talkwai.cmd.>"]),
        },
        allow_responses: true,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Encodes and signs NATS JWT claims (`alg: ed25519-nkey`).
fn sign_jwt(claims: &Value, key: &nkeys::KeyPair) -> Result<String, NatsAuthError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = serde_json::to_vec(claims).map_err(|e| NatsAuthError::Sign(e.to_string()))?;
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
    let signature = key
        .sign(input.as_bytes())
        .map_err(|e| NatsAuthError::Sign(e.to_string()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Decodes a NATS JWT signed by the nkey in its `iss` and returns its claims.
fn verified_claims(token: &[u8]) -> Result<Value, NatsAuthError> {
    let bad = |what: &str| NatsAuthError::Request(what.to_owned());
    let token = std::str::from_utf8(token).map_err(|_| bad("not utf-8"))?;
    let mut parts = token.trim().split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a jwt"));
    };
    let claims: Value = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| bad("unreadable claims"))?;
    let issuer = claims["iss"].as_str().ok_or_else(|| bad("no issuer"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| bad("unreadable signature"))?;
    nkeys::KeyPair::from_public_key(issuer)
        .and_then(|key| key.verify(format!("{header}.{body}").as_bytes(), &signature))
        .map_err(|_| bad("signature does not verify"))?;
    Ok(claims)
}

/// One connection nats-server asks about: the user nkey it made for it, the server asking,
/// and the connection's bearer token (its NATS `auth_token`).
struct Request {
    user_nkey: String,
    server: String,
    token: Option<String>,
}

/// Reads and verifies an authorization request (the JWT nats-server sent).
fn parse_request(request: &[u8]) -> Result<Request, NatsAuthError> {
    let claims = verified_claims(request)?;
    let nats = &claims["nats"];
    let user_nkey = nats["user_nkey"]
        .as_str()
        .ok_or_else(|| NatsAuthError::Request("no user_nkey".into()))?;
    let server = nats["server_id"]["id"]
        .as_str()
        .ok_or_else(|| NatsAuthError::Request("no server_id".into()))?;
    let token = nats["connect_opts"]["auth_token"]
        .as_str()
        .filter(|t| !t.is_empty());
    Ok(Request {
        user_nkey: user_nkey.to_owned(),
        server: server.to_owned(),
        token: token.map(str::to_owned),
    })
}

/// Whether the member or admin behind a verified `principal` may still sign in, as the log
/// says now ([`SignIns`], the rule presence applies): an erased, deleted, inactive or unlinked
/// one is refused, an admin never linked to an admin entity (a dev token) is let in, and so
/// is the platform token (no entity). A log that cannot be read refuses too (fail closed).
async fn signed_in(principal: &Principal, sign_ins: &SignIns) -> Result<(), String> {
    let Principal::User(claims) = principal else {
        return Ok(());
    };
    let check = sign_ins.plan(claims);
    let heads = sign_ins
        .log()
        .last_of_subjects(&check.subjects())
        .await
        .map_err(|e| format!("unavailable: cannot read the log to check the sign-in: {e}"))?;
    sign_ins
        .decide(check, &heads)
        .await
        .map_err(|e| format!("{}: {}", e.code, e.message))
}

/// The answer to one authorization request (`request`: the JWT nats-server sent): a signed
/// `authorization_response` holding a user JWT for a valid token whose member or admin may
/// still sign in (checked by `sign_ins` against the log; `None` checks the token alone), or an
/// error saying why not.
pub async fn authorize(
    request: &[u8],
    verifier: &TokenVerifier,
    sign_ins: Option<&SignIns>,
    key: &nkeys::KeyPair,
) -> Result<String, NatsAuthError> {
    let Request {
        user_nkey,
        server,
        token,
    } = parse_request(request)?;
    let now = now_secs();
    let user = match token.map(|t| verifier.verify(&t)) {
        None => Err("a bearer token is required (the NATS auth token)".to_owned()),
        Some(Err(err)) => Err(err.to_string()),
        Some(Ok(principal)) => match user_claims(&principal, &user_nkey, key, now) {
            Ok(jwt) => match sign_ins {
                Some(sign_ins) => signed_in(&principal, sign_ins).await.map(|()| jwt),
                None => Ok(jwt),
            },
            Err(reason) => Err(reason),
        },
    };
    let mut answer = json!({
        "type": "authorization_response",
        "version": 2,
    });
    match user {
        Ok(jwt) => answer["jwt"] = Value::String(jwt),
        Err(reason) => {
            tracing::info!(%reason, "auth callout refused a connection");
            answer["error"] = Value::String(reason);
        }
    }
    sign_jwt(
        &json!({
            "jti": Uuid::new_v4().simple().to_string(),
            "iat": now,
            "iss": key.public_key(),
            "sub": user_nkey,
            "aud": server,
            "nats": answer,
        }),
        key,
    )
}

/// The signed user JWT for a verified principal.
fn user_claims(
    principal: &Principal,
    user_nkey: &str,
    key: &nkeys::KeyPair,
    now: u64,
) -> Result<String, String> {
    let (name, permissions, exp) = match principal {
        Principal::Platform => (
            "platform".to_owned(),
            admin_permissions(AUTH_CONF).map_err(|e| e.to_string())?,
            now + DEFAULT_USER_TTL_SECS,
        ),
        Principal::User(claims) => match (claims.kind, claims.tenant) {
            (PrincipalKind::Member, Some(tenant)) => (
                format!("member/{}", claims.sub.0),
                member_permissions(AUTH_CONF, tenant.0, claims.sub.0).map_err(|e| e.to_string())?,
                claims.exp,
            ),
            (PrincipalKind::Member, None) => return Err("member tokens must name a tenant".into()),
            (PrincipalKind::Admin, _) => (
                format!("admin/{}", claims.sub.0),
                admin_permissions(AUTH_CONF).map_err(|e| e.to_string())?,
                claims.exp,
            ),
        },
    };
    let mut user = permissions.to_jwt();
    user["subs"] = json!(-1);
    user["data"] = json!(-1);
    user["payload"] = json!(-1);
    user["type"] = json!("user");
    user["version"] = json!(2);
    sign_jwt(
        &json!({
            "jti": Uuid::new_v4().simple().to_string(),
            "iat": now,
            "exp": exp,
            "iss": key.public_key(),
            "sub": user_nkey,
            "name": name,
            "aud": ACCOUNT,
            "nats": user,
        }),
        key,
    )
    .map_err(|e| e.to_string())
}

/// Serves authorization requests on `client` (an `auth_users` connection) until `shutdown`,
/// each in its own task (a check may read the log), checking sign-ins with `sign_ins`.
pub async fn run_callout(
    client: async_nats::Client,
    verifier: TokenVerifier,
    sign_ins: SignIns,
    key: Arc<nkeys::KeyPair>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let (verifier, sign_ins) = (Arc::new(verifier), Arc::new(sign_ins));
    let mut requests = client
        .subscribe(CALLOUT_SUBJECT)
        .await
        .map_err(|e| CliError::Nats(format!("subscribing to {CALLOUT_SUBJECT}: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| CliError::Nats(format!("flushing the callout subscription: {e}")))?;
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => return Ok(()),
            message = requests.next() => message,
        };
        let Some(message) = message else {
            return Err(CliError::Nats("the auth callout subscription ended".into()));
        };
        let Some(reply) = message.reply else {
            continue;
        };
        let (client, verifier, sign_ins, key) = (
            client.clone(),
            Arc::clone(&verifier),
            Arc::clone(&sign_ins),
            Arc::clone(&key),
        );
        tokio::spawn(async move {
            match authorize(&message.payload, &verifier, Some(&sign_ins), &key).await {
                Ok(answer) => {
                    if let Err(err) = client.publish(reply, answer.into()).await {
                        tracing::warn!(error = %err, "auth callout cannot answer");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "auth callout request refused"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn secrets() -> NatsSecrets {
        NatsSecrets {
            command_password: SecretString::from("c-pw"),
            projector_password: SecretString::from("p-pw"),
            notifier_password: SecretString::from("n-pw"),
            query_password: SecretString::from("q-pw"),
            tenant_password: SecretString::from("t-pw"),
            operator_password: SecretString::from("o-pw"),
            callout_key: Arc::new(nkeys::KeyPair::new_account()),
        }
    }

    #[test]
    fn the_member_fence_is_auth_conf_tenant_role_on_the_tokens_tenant() {
        let tenant = Uuid::from_u128(0xb100_0000_0000_4000_8000_0000_0000_0009);
        let p = tenant_permissions(AUTH_CONF, tenant).expect("auth.conf parses");
        let t = tenant.to_string();
        assert_eq!(
            p.publish.allow,
            [
                format!("talkwai.cmd.{t}.>"),
                format!("talkwai.qry.{t}"),
                format!("talkwai.qry.{t}.>"),
                format!("talkwai.room.tenant.{t}.>"),
            ]
        );
        for denied in ["talkwai.evt.>", "$JS.>", "$KV.>"] {
            assert!(
                p.publish.deny.iter().any(|d| d == denied),
                "{denied} denied"
            );
        }
        assert_eq!(
            p.subscribe.allow,
            [
                "_INBOX.>".to_owned(),
                format!("talkwai.qry.{t}.live.>"),
                format!("talkwai.room.tenant.{t}.>"),
            ]
        );
        for denied in ["talkwai.evt.>", "talkwai.cmd.>"] {
            assert!(
                p.subscribe.deny.iter().any(|d| d == denied),
                "{denied} denied"
            );
        }
        let admin = admin_permissions(AUTH_CONF).expect("admin");
        for denied in p
            .publish
            .deny
            .iter()
            .filter(|d| d.starts_with("talkwai.room."))
        {
            assert!(
                admin.publish.deny.contains(denied),
                "admins are denied {denied} too"
            );
        }
        assert!(admin.publish.deny.iter().any(|d| d == "talkwai.evt.>"));
        assert!(p.allow_responses);
        assert!(
            !format!("{p:?}").contains(TEMPLATE_TENANT),
            "no trace of the demo tenant"
        );
    }

    #[test]
    fn the_server_config_is_auth_conf_with_passwords_and_the_callout() {
        let secrets = secrets();
        let text = server_config(AUTH_CONF, &secrets).expect("config");
        assert_eq!(
            config_users(AUTH_CONF),
            [
                "command-service",
                "projector",
                "notifier",
                "query-service",
                "tenant-acme",
                "operator"
            ]
        );
        assert!(text.contains("password: \"c-pw\""));
        assert!(text.contains("password: \"o-pw\""));
        assert!(!text.contains("$TALKWAI_"));
        assert!(text.contains(&secrets.callout_key.public_key()));
        assert!(text.contains(
            "auth_users: [\"command-service\", \"projector\", \"notifier\", \"query-service\", \"tenant-acme\", \"operator\"]"
        ));
        // Everything of auth.conf but the password variables is kept as is.
        for line in AUTH_CONF.lines().filter(|l| !l.contains("$TALKWAI_")) {
            assert!(text.contains(line), "lost line {line:?}");
        }
        assert!(matches!(
            server_config("authorization { users: [] }", &secrets),
            Err(NatsAuthError::Config(_))
        ));
        // A user added to auth.conf later gets a password nobody knows, not a failure.
        let added = AUTH_CONF.replacen(
            "  users: [",
            "  users: [\n    { user: newcomer, password: $TALKWAI_NATS_NEWCOMER_PASSWORD }",
            1,
        );
        let text = server_config(&added, &secrets).expect("config with a new user");
        assert!(!text.contains("$TALKWAI_"));
        assert!(
            text.contains("\"newcomer\""),
            "the new user bypasses the callout too"
        );
        let unknown = AUTH_CONF.replacen("users: [", "x: $TALKWAI_OTHER\n  users: [", 1);
        assert!(matches!(
            server_config(&unknown, &secrets),
            Err(NatsAuthError::Config(_))
        ));
    }

    /// A member token of `member` in `tenant`, signed with `secret`.
    fn member_token(secret: &SecretString, tenant: Uuid, member: Uuid) -> String {
        crate::token::mint(
            &crate::token::TokenSpec {
                kind: PrincipalKind::Member,
                sub: member,
                tenant: Some(tenant),
                role: None,
                ttl: std::time::Duration::from_secs(60),
                issuer: None,
                audience: None,
            },
            secret,
        )
        .expect("token")
    }

    /// An authorization request of `server` for the connection `user`, with `auth_token`.
    fn auth_request(
        server: &nkeys::KeyPair,
        user: &nkeys::KeyPair,
        auth_token: Option<&str>,
    ) -> String {
        let mut opts = json!({"lang": "rust"});
        if let Some(t) = auth_token {
            opts["auth_token"] = json!(t);
        }
        sign_jwt(
            &json!({
                "iss": server.public_key(),
                "sub": "nats_user_auth_request",
                "nats": {
                    "user_nkey": user.public_key(),
                    "server_id": {"id": server.public_key()},
                    "connect_opts": opts,
                }
            }),
            server,
        )
        .expect("request")
    }

    #[tokio::test]
    async fn answers_are_signed_and_carry_the_fence() {
        let key = nkeys::KeyPair::new_account();
        let server = nkeys::KeyPair::new_server();
        let user = nkeys::KeyPair::new_user();
        let secret = SecretString::from("jwt-secret");
        let verifier = TokenVerifier::new(None, Some(secret.clone()), None, None);
        let tenant = Uuid::new_v4();
        let member = Uuid::new_v4();
        let token = member_token(&secret, tenant, member);
        let request = |auth_token: Option<&str>| auth_request(&server, &user, auth_token);
        let answer = authorize(request(Some(&token)).as_bytes(), &verifier, None, &key)
            .await
            .expect("ok");
        let claims = verified_claims(answer.as_bytes()).expect("signed by the issuer");
        assert_eq!(claims["iss"], key.public_key());
        assert_eq!(claims["aud"], server.public_key());
        assert_eq!(claims["sub"], user.public_key());
        let jwt = claims["nats"]["jwt"].as_str().expect("a user jwt");
        let user_claims = verified_claims(jwt.as_bytes()).expect("user jwt signed");
        assert_eq!(user_claims["sub"], user.public_key());
        assert_eq!(user_claims["aud"], "$G");
        assert_eq!(
            user_claims["nats"]["pub"]["allow"][0],
            format!("talkwai.cmd.{tenant}.>")
        );
        assert_eq!(
            user_claims["nats"]["sub"]["allow"][0],
            format!("_INBOX.{member}.>"),
            "a member reads only its own inboxes"
        );

        for bad in [None, Some("not-a-token")] {
            let answer = authorize(request(bad).as_bytes(), &verifier, None, &key)
                .await
                .expect("answer");
            let claims = verified_claims(answer.as_bytes()).expect("signed");
            assert!(claims["nats"]["jwt"].is_null(), "{bad:?} gets no user");
            assert!(claims["nats"]["error"].is_string());
        }
        // A request not signed by its issuer is not answered.
        let forged = request(Some(&token));
        let mut parts: Vec<&str> = forged.split('.').collect();
        let other = sign_jwt(&json!({"iss": server.public_key()}), &user).expect("sign");
        parts[2] = other.split('.').nth(2).expect("signature");
        assert!(
            authorize(parts.join(".").as_bytes(), &verifier, None, &key)
                .await
                .is_err()
        );
    }

    /// The callout asks the log (a member the log does not know is refused), and refuses when
    /// the log cannot be read (fail closed), against a real nats-server.
    #[tokio::test]
    async fn a_token_is_refused_when_the_log_refuses_it_or_cannot_be_read() {
        let nats = talkwai_testkit::NatsServer::start()
            .await
            .expect("nats-server (TALKWAI_NATS_SERVER)");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let settings = talkwai_eventstore::StreamSettings::default();
        let log = talkwai_eventstore::EventStore::open(client.clone(), &settings)
            .await
            .expect("event stream");
        let sign_ins = SignIns::new(log);
        let (key, server, user) = (
            nkeys::KeyPair::new_account(),
            nkeys::KeyPair::new_server(),
            nkeys::KeyPair::new_user(),
        );
        let secret = SecretString::from("jwt-secret");
        let verifier = TokenVerifier::new(None, Some(secret.clone()), None, None);
        let token = member_token(&secret, Uuid::new_v4(), Uuid::new_v4());
        let request = auth_request(&server, &user, Some(&token));
        let error = |answer: String| {
            let claims = verified_claims(answer.as_bytes()).expect("signed");
            assert!(claims["nats"]["jwt"].is_null(), "no user: {claims}");
            claims["nats"]["error"]
                .as_str()
                .expect("an error")
                .to_owned()
        };
        let asked = authorize(request.as_bytes(), &verifier, Some(&sign_ins), &key)
            .await
            .expect("answer");
        assert_eq!(error(asked), "forbidden: user is not linked to a member");

        async_nats::jetstream::new(client)
            .delete_stream(&settings.name)
            .await
            .expect("delete the stream");
        let unread = authorize(request.as_bytes(), &verifier, Some(&sign_ins), &key)
            .await
            .expect("answer");
        let reason = error(unread);
        assert!(
            reason.starts_with("unavailable: cannot read the log"),
            "{reason}"
        );
    }
}
