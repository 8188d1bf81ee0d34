//! The attack suite: hostile tokens, cross-tenant commands, links and queries, privilege
//! escalation by role, hostile bodies and replays against the command service, the projector
//! and the query API (in process, real nats-server and PostgreSQL). Every attack gets its typed
//! error, and afterwards the event log (stream head and message count) and every read model
//! (row count and content hash of each `talkwai.*` view) are exactly as before.
//!
//! A second test shows the per-tenant rate limit: a burst over a tiny allowance gets
//! `rate_limited` with a retry hint, appends nothing for the refused commands, and leaves
//! another tenant unaffected.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};
use talkwai_auth::{Claims, KeyFiles, PrincipalKind, RateLimitConfig, TokenVerifier};
use talkwai_command_service::{CommandService, Config};
use talkwai_projector::Projector;
use talkwai_proto::CommandReply;
use talkwai_query::QueryService;
use talkwai_testkit::{NatsServer, Postgres};
use uuid::Uuid;

const PLATFORM: &str = "platform-token-attack-tests";
const SECRET: &str = "attack-tests-hs256-secret";
const ISSUER: &str = "https://idp.attack.test";
const AUDIENCE: &str = "talkwai-backbone";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/talkwai-auth/tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn claims(user: Uuid, kind: PrincipalKind, tenant: Option<Uuid>) -> Claims {
    Claims {
        sub: user.into(),
        kind,
        tenant: tenant.map(Into::into),
        role: None,
        exp: talkwai_auth::now_secs() + 3600,
        nbf: None,
        iss: Some(ISSUER.into()),
        aud: Some(AUDIENCE.into()),
    }
}

fn hs256(claims: &Claims) -> String {
    talkwai_auth::mint(claims, &SecretString::from(SECRET)).expect("mint")
}

fn signed(claims: &Claims, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_fixture("rsa.key")).expect("rsa key")
}

fn ed_key(name: &str) -> EncodingKey {
    EncodingKey::from_ed_pem(&read_fixture(name)).expect("ed key")
}

fn key_files() -> KeyFiles {
    KeyFiles {
        jwt_public_key_file: None,
        jwks_file: Some(fixture("jwks.json")),
    }
}

/// A command service, a projector and the query API, in process.
struct Stack {
    _nats: NatsServer,
    _pg: Option<Postgres>,
    client: async_nats::Client,
    pool: Option<deadpool_postgres::Pool>,
}

impl Stack {
    async fn start(rate_limit: RateLimitConfig, with_read_side: bool) -> Self {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let mut config = Config::for_tests(&nats.url(), PLATFORM, SECRET);
        config.auth.jwt_issuer = Some(ISSUER.into());
        config.auth.jwt_audience = Some(AUDIENCE.into());
        config.auth.key_files = key_files();
        config.rate_limit = rate_limit;
        let service = CommandService::build(config)
            .await
            .expect("command service");
        tokio::spawn(async move { service.run(std::future::pending()).await });
        let (pg, pool) = if with_read_side {
            let pg = Postgres::start().await.expect("postgres starts");
            let db = pg.create_unique_database("attacks").await.expect("db");
            let projector =
                Projector::build(talkwai_projector::Config::for_tests(&nats.url(), &db))
                    .await
                    .expect("projector");
            let pool = projector.pool().clone();
            tokio::spawn(async move { projector.run(std::future::pending()).await });
            let verifier = TokenVerifier::new(
                Some(PLATFORM.to_owned().into()),
                Some(SECRET.to_owned().into()),
                Some(ISSUER),
                Some(AUDIENCE),
            )
            .with_public_keys(key_files().load().expect("jwks loads"));
            let queries = QueryService::new(pool.clone(), verifier).with_rate_limit(rate_limit);
            let qc = client.clone();
            tokio::spawn(async move { queries.run(qc, std::future::pending()).await });
            (Some(pg), Some(pool))
        } else {
            (None, None)
        };
        let stack = Self {
            _nats: nats,
            _pg: pg,
            client,
            pool,
        };
        stack.wait_ready(with_read_side).await;
        stack
    }

    /// Waits until real endpoints answer (`$SRV.PING` answers before they are subscribed).
    async fn wait_ready(&self, queries: bool) {
        talkwai_testkit::services::wait_for_commands(&self.client)
            .await
            .unwrap_or_else(|e| panic!("services did not become ready: {e}"));
        if queries {
            talkwai_testkit::services::wait_for_queries(&self.client)
                .await
                .unwrap_or_else(|e| panic!("services did not become ready: {e}"));
        }
    }

    async fn command_raw(
        &self,
        subject: &str,
        body: Vec<u8>,
        token: &str,
        command_id: Uuid,
    ) -> CommandReply {
        let mut headers = HeaderMap::new();
        headers.insert("Talkwai-Command-Id", command_id.to_string().as_str());
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .request_with_headers(subject.to_owned(), headers, body.into()),
        )
        .await
        .expect("command reply in time")
        .expect("command request");
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "reply is a CommandReply: {e}: {}",
                String::from_utf8_lossy(&reply.payload)
            )
        })
    }

    async fn ok(&self, subject: &str, body: Value, token: &str) -> talkwai_proto::CommandAccepted {
        self.command_raw(
            subject,
            body.to_string().into_bytes(),
            token,
            Uuid::new_v4(),
        )
        .await
        .into_result()
        .unwrap_or_else(|e| panic!("{subject} {body}: {e:?}"))
    }

    async fn query_raw(&self, subject: &str, body: Vec<u8>, token: &str) -> Value {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .request_with_headers(subject.to_owned(), headers, body.into()),
        )
        .await
        .expect("query reply in time")
        .expect("query request");
        serde_json::from_slice(&reply.payload).expect("query reply is JSON")
    }

    async fn stream_state(&self) -> (u64, u64) {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = js.get_stream("TALKWAI_EVENTS").await.expect("stream");
        let state = stream.info().await.expect("stream info").state.clone();
        (state.last_sequence, state.messages)
    }

    /// Waits until the projection has applied everything in the stream.
    async fn wait_projected(&self) {
        let pool = self.pool.as_ref().expect("read side");
        let (head, _) = self.stream_state().await;
        talkwai_testkit::wait::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                let conn = pool.get().await.expect("pg connection");
                conn.query_one("SELECT last_seq FROM talkwai.checkpoint", &[])
                    .await
                    .is_ok_and(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0) >= head)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("projection did not reach {head}: {e}"));
    }

    /// The log and every read model: stream head and message count, then each `talkwai.*`
    /// view's name, row count and md5 of its rows.
    async fn snapshot(&self) -> (u64, u64, Vec<(String, i64, String)>) {
        let (head, messages) = self.stream_state().await;
        let pool = self.pool.as_ref().expect("read side");
        let conn = pool.get().await.expect("pg connection");
        let views = conn
            .query(
                "SELECT table_name FROM information_schema.views WHERE table_schema = 'talkwai' \
                 ORDER BY table_name",
                &[],
            )
            .await
            .expect("views");
        let mut models = Vec::new();
        for row in views {
            let name: String = row.get(0);
            let row = conn
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(v::text, '|' ORDER BY v::text)), '') \
                         FROM talkwai.\"{name}\" v"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("hashing talkwai.{name}: {e}"));
            models.push((name, row.get(0), row.get(1)));
        }
        assert!(
            models.len() >= 5,
            "expected the read model views: {models:?}"
        );
        (head, messages, models)
    }
}

/// Two tenants with owners, a `user` member, an agent and a task each, and three admins.
struct World {
    a: Uuid,
    b: Uuid,
    owner_a_user: Uuid,
    user_a_user: Uuid,
    user_a: Uuid,
    owner_b_user: Uuid,
    agent_b: Uuid,
    member_b: Uuid,
    task_a: Uuid,
    task_b: Uuid,
    superadmin: Uuid,
    admin_user: Uuid,
    support_user: Uuid,
}

async fn user(stack: &Stack) -> Uuid {
    let id = Uuid::new_v4();
    stack
        .ok(
            "talkwai.cmd.platform.user.create",
            json!({"id": id, "email": format!("{id}@attack.test")}),
            PLATFORM,
        )
        .await;
    id
}

async fn member(stack: &Stack, tenant: Uuid, role: &str) -> (Uuid, Uuid) {
    let user = user(stack).await;
    let id = Uuid::new_v4();
    stack
        .ok(
            &format!("talkwai.cmd.{tenant}.member.create"),
            json!({"id": id, "firstName": "M", "lastName": role, "email": format!("{id}@m.test"),
                   "role": role, "user": user}),
            PLATFORM,
        )
        .await;
    (id, user)
}

async fn admin(stack: &Stack, role: &str) -> (Uuid, Uuid) {
    let user = user(stack).await;
    let id = Uuid::new_v4();
    stack
        .ok(
            "talkwai.cmd.platform.admin.create",
            json!({"id": id, "firstName": "A", "lastName": role, "email": format!("{id}@a.test"),
                   "role": role, "user": user}),
            PLATFORM,
        )
        .await;
    (id, user)
}

async fn tenant(stack: &Stack, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    stack
        .ok(
            "talkwai.cmd.platform.tenant.create",
            json!({"id": id, "name": name}),
            PLATFORM,
        )
        .await;
    id
}

async fn world(stack: &Stack) -> World {
    let a = tenant(stack, "Acme").await;
    let b = tenant(stack, "Bravo").await;
    let (_, owner_a_user) = member(stack, a, "owner").await;
    let (user_a, user_a_user) = member(stack, a, "user").await;
    let (_, owner_b_user) = member(stack, b, "owner").await;
    let (member_b, _) = member(stack, b, "user").await;
    let agent_b = Uuid::new_v4();
    stack
        .ok(
            &format!("talkwai.cmd.{b}.agent.create"),
            json!({"id": agent_b, "name": "Bravo voice", "type": "voice"}),
            PLATFORM,
        )
        .await;
    let task_a = Uuid::new_v4();
    stack
        .ok(
            &format!("talkwai.cmd.{a}.task.create"),
            json!({"id": task_a, "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222", "subject": "Acme secret"}),
            PLATFORM,
        )
        .await;
    let task_b = Uuid::new_v4();
    stack
        .ok(
            &format!("talkwai.cmd.{b}.task.create"),
            json!({"id": task_b, "type": "call", "fromAddress": "+15550003333", "toAddress": "+15550004444",
                   "subject": "Bravo secret", "agent": agent_b, "assignedTo": member_b}),
            PLATFORM,
        )
        .await;
    let (superadmin, _) = admin(stack, "superadmin").await;
    let (_, admin_user) = admin(stack, "admin").await;
    let (_, support_user) = admin(stack, "support").await;
    World {
        a,
        b,
        owner_a_user,
        user_a_user,
        user_a,
        owner_b_user,
        agent_b,
        member_b,
        task_a,
        task_b,
        superadmin,
        admin_user,
        support_user,
    }
}

/// One hostile request and the code it must get.
struct Attack {
    name: &'static str,
    subject: String,
    body: Vec<u8>,
    token: String,
    command_id: Uuid,
    code: &'static str,
}

fn json_body(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_get_typed_errors_and_change_nothing() {
    let stack = Stack::start(RateLimitConfig::OFF, true).await;
    let w = world(&stack).await;
    let (a, b) = (w.a, w.b);
    let owner_a = claims(w.owner_a_user, PrincipalKind::Member, Some(a));
    let owner_a_token = hs256(&owner_a);
    let user_a_token = hs256(&claims(w.user_a_user, PrincipalKind::Member, Some(a)));
    let owner_b_token = hs256(&claims(w.owner_b_user, PrincipalKind::Member, Some(b)));

    // A command tenant A's owner really sent, to be replayed.
    let replayed_id = Uuid::new_v4();
    let original = stack
        .command_raw(
            &format!("talkwai.cmd.{a}.task.start"),
            json_body(json!({"id": w.task_a})),
            &owner_a_token,
            replayed_id,
        )
        .await
        .into_result()
        .expect("the original command is accepted");

    // Positive controls: the identity provider's RS256 and EdDSA tokens are accepted.
    let rs256 = signed(&owner_a, Algorithm::RS256, Some("rsa-1"), &rsa_key());
    let eddsa = signed(
        &owner_a,
        Algorithm::EdDSA,
        Some("ed-1"),
        &ed_key("ed25519.key"),
    );
    for token in [&rs256, &eddsa, &owner_a_token] {
        let reply = stack
            .query_raw(
                &format!("talkwai.qry.{a}"),
                json_body(json!({"tasks": {}})),
                token,
            )
            .await;
        assert_eq!(reply["ok"], true, "a valid token is accepted: {reply}");
    }

    stack.wait_projected().await;
    let before = stack.snapshot().await;

    // Hostile tokens.
    let mut expired = owner_a.clone();
    expired.exp = talkwai_auth::now_secs() - 600;
    let mut immature = owner_a.clone();
    immature.nbf = Some(talkwai_auth::now_secs() + 600);
    let mut wrong_audience = owner_a.clone();
    wrong_audience.aud = Some("someone-else".into());
    let mut wrong_issuer = owner_a.clone();
    wrong_issuer.iss = Some("https://evil.test".into());
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&owner_a).expect("claims"))
    );
    let tokens: Vec<(&'static str, String)> = vec![
        (
            "forged signature",
            talkwai_auth::mint(&owner_a, &SecretString::from("not-the-secret")).expect("mint"),
        ),
        (
            "forged eddsa signature",
            signed(
                &owner_a,
                Algorithm::EdDSA,
                Some("ed-1"),
                &ed_key("ed25519-other.key"),
            ),
        ),
        ("expired", hs256(&expired)),
        ("not yet valid", hs256(&immature)),
        ("wrong audience", hs256(&wrong_audience)),
        ("wrong issuer", hs256(&wrong_issuer)),
        (
            "wrong issuer rs256",
            signed(&wrong_issuer, Algorithm::RS256, Some("rsa-1"), &rsa_key()),
        ),
        ("alg none", alg_none),
        (
            "hs256 signed with the rsa public key",
            signed(
                &owner_a,
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(&read_fixture("rsa.pub.pem")),
            ),
        ),
        (
            "rs256 token naming the eddsa key",
            signed(&owner_a, Algorithm::RS256, Some("ed-1"), &rsa_key()),
        ),
        ("garbage", "not.a.token".into()),
    ];
    let mut attacks = Vec::new();
    for (name, token) in tokens {
        attacks.push(Attack {
            name,
            subject: format!("talkwai.cmd.{a}.task.cancel"),
            body: json_body(json!({"id": w.task_a})),
            token,
            command_id: Uuid::new_v4(),
            code: "unauthenticated",
        });
    }

    let task = |extra: Value| {
        let mut body = json!({"id": Uuid::new_v4(), "type": "call", "fromAddress": "+15550001111", "toAddress": "+15550002222"});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        json_body(body)
    };
    let mut push = |name, subject: String, body: Vec<u8>, token: &str, code| {
        attacks.push(Attack {
            name,
            subject,
            body,
            token: token.to_owned(),
            command_id: Uuid::new_v4(),
            code,
        });
    };
    let admin_token = hs256(&claims(w.admin_user, PrincipalKind::Admin, None));
    let support_token = hs256(&claims(w.support_user, PrincipalKind::Admin, None));

    // Tenant isolation.
    push(
        "command on another tenant's subject",
        format!("talkwai.cmd.{b}.task.create"),
        task(json!({})),
        &owner_a_token,
        "forbidden",
    );
    push(
        "another tenant's task through one's own subject",
        format!("talkwai.cmd.{a}.task.cancel"),
        json_body(json!({"id": w.task_b})),
        &owner_a_token,
        "not_found",
    );
    push(
        "link to another tenant's agent",
        format!("talkwai.cmd.{a}.task.create"),
        task(json!({"agent": w.agent_b})),
        &owner_a_token,
        "not_found",
    );
    push(
        "assign to another tenant's member",
        format!("talkwai.cmd.{a}.task.create"),
        task(json!({"assignedTo": w.member_b})),
        &owner_a_token,
        "not_found",
    );
    push(
        "reassign to another tenant's member",
        format!("talkwai.cmd.{a}.task.assign"),
        json_body(json!({"id": w.task_a, "assignedTo": w.member_b})),
        &owner_a_token,
        "not_found",
    );
    push(
        "platform command from a member",
        "talkwai.cmd.platform.user.create".into(),
        json_body(json!({"id": Uuid::new_v4(), "email": "x@evil.test"})),
        &owner_a_token,
        "forbidden",
    );

    // Privilege escalation by role.
    push(
        "user deletes the tenant",
        format!("talkwai.cmd.{a}.tenant.delete"),
        json_body(json!({"id": a})),
        &user_a_token,
        "forbidden",
    );
    push(
        "user promotes themself",
        format!("talkwai.cmd.{a}.member.setRole"),
        json_body(json!({"id": w.user_a, "role": "owner"})),
        &user_a_token,
        "forbidden",
    );
    push(
        "user claims owner in the token",
        format!("talkwai.cmd.{a}.tenant.update"),
        json_body(json!({"id": a, "name": "Pwned"})),
        &hs256(&Claims {
            role: Some("owner".into()),
            ..claims(w.user_a_user, PrincipalKind::Member, Some(a))
        }),
        "forbidden",
    );
    push(
        "admin updates a superadmin",
        "talkwai.cmd.platform.admin.update".into(),
        json_body(json!({"id": w.superadmin, "firstName": "Pwned"})),
        &admin_token,
        "forbidden",
    );
    push(
        "admin demotes a superadmin",
        "talkwai.cmd.platform.admin.setRole".into(),
        json_body(json!({"id": w.superadmin, "role": "support"})),
        &admin_token,
        "forbidden",
    );
    push(
        "support admin writes a tenant",
        format!("talkwai.cmd.{a}.tenant.update"),
        json_body(json!({"id": a, "name": "Pwned"})),
        &support_token,
        "forbidden",
    );
    push(
        "support admin deletes a task",
        format!("talkwai.cmd.{a}.task.delete"),
        json_body(json!({"id": w.task_a})),
        &support_token,
        "forbidden",
    );

    // Hostile bodies.
    let mut oversized = json!({"id": w.task_a, "subject": "x".repeat(70 * 1024)});
    push(
        "oversized payload",
        format!("talkwai.cmd.{a}.task.update"),
        json_body(oversized.take()),
        &owner_a_token,
        "payload_too_large",
    );
    let nested = format!(
        "{{\"id\":\"{}\",\"metadata\":{}1{}}}",
        w.task_a,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    push(
        "deeply nested json",
        format!("talkwai.cmd.{a}.task.setMetadata"),
        nested.into_bytes(),
        &owner_a_token,
        "validation_failed",
    );
    let mut invalid_utf8 = format!("{{\"id\":\"{}\",\"subject\":\"ab", w.task_a).into_bytes();
    invalid_utf8.extend([0xc3, 0x28, 0xff, 0xfe]);
    invalid_utf8.extend(b"\"}");
    push(
        "invalid utf-8",
        format!("talkwai.cmd.{a}.task.update"),
        invalid_utf8,
        &owner_a_token,
        "validation_failed",
    );
    push(
        "huge array",
        format!("talkwai.cmd.{a}.task.setMetadata"),
        json_body(json!({"id": w.task_a, "metadata": vec![0; 20_000]})),
        &owner_a_token,
        "validation_failed",
    );
    push(
        "body is not an object",
        format!("talkwai.cmd.{a}.task.start"),
        b"[1,2,3]".to_vec(),
        &owner_a_token,
        "validation_failed",
    );
    push(
        "unknown field",
        format!("talkwai.cmd.{a}.task.start"),
        json_body(json!({"id": w.task_a, "tenant": b, "isAdmin": true})),
        &owner_a_token,
        "validation_failed",
    );

    // Replays of tenant A's command id by tenant B's owner: refused before the log is read.
    attacks.push(Attack {
        name: "replay of another tenant's command id",
        subject: format!("talkwai.cmd.{a}.task.start"),
        body: json_body(json!({"id": w.task_a})),
        token: owner_b_token.clone(),
        command_id: replayed_id,
        code: "forbidden",
    });

    let mut failures = Vec::new();
    for attack in &attacks {
        let reply = stack
            .command_raw(
                &attack.subject,
                attack.body.clone(),
                &attack.token,
                attack.command_id,
            )
            .await;
        match reply.into_result() {
            Ok(accepted) => failures.push(format!("{}: accepted {accepted:?}", attack.name)),
            Err(error) if error.code.as_str() != attack.code => failures.push(format!(
                "{}: got {} ({}), expected {}",
                attack.name, error.code, error.message, attack.code
            )),
            Err(error) => assert!(!error.message.is_empty(), "{}", attack.name),
        }
    }

    // The legitimate replay: the original outcome, nothing appended.
    let replay = stack
        .command_raw(
            &format!("talkwai.cmd.{a}.task.start"),
            json_body(json!({"id": w.task_a})),
            &owner_a_token,
            replayed_id,
        )
        .await
        .into_result()
        .expect("a replay answers the original outcome");
    assert_eq!(replay, original, "a replay returns the original reply");
    // The same command id with another body: still the original outcome, nothing new.
    let replay = stack
        .command_raw(
            &format!("talkwai.cmd.{a}.task.start"),
            json_body(json!({"id": w.task_a, "note": "different"})),
            &owner_a_token,
            replayed_id,
        )
        .await;
    assert!(
        matches!(&replay, CommandReply::Rejected { error, .. } if error.code.as_str() == "validation_failed")
            || replay.clone().into_result().as_ref() == Ok(&original),
        "replay with another body: {replay:?}"
    );

    // Queries.
    let qry_a = format!("talkwai.qry.{a}");
    let mut query_failures = Vec::new();
    let query_attacks: Vec<(&str, String, Vec<u8>, String, &str)> = vec![
        (
            "query another tenant's scope",
            format!("talkwai.qry.{b}"),
            json_body(json!({"tasks": {}})),
            owner_a_token.clone(),
            "forbidden",
        ),
        (
            "member queries the platform scope",
            "talkwai.qry.platform".into(),
            json_body(json!({"tasks": {}})),
            owner_a_token.clone(),
            "forbidden",
        ),
        (
            "member queries admins",
            qry_a.clone(),
            json_body(json!({"admins": {}})),
            owner_a_token.clone(),
            "forbidden",
        ),
        (
            "member queries $users",
            qry_a.clone(),
            json_body(json!({"$users": {}})),
            owner_a_token.clone(),
            "forbidden",
        ),
        (
            "forged query token",
            qry_a.clone(),
            json_body(json!({"tasks": {}})),
            talkwai_auth::mint(&owner_a, &SecretString::from("nope")).expect("mint"),
            "unauthenticated",
        ),
        (
            "hs/rs confusion on queries",
            qry_a.clone(),
            json_body(json!({"tasks": {}})),
            signed(
                &owner_a,
                Algorithm::HS256,
                Some("rsa-1"),
                &EncodingKey::from_secret(&read_fixture("rsa.pub.pem")),
            ),
            "unauthenticated",
        ),
        (
            "oversized query",
            qry_a.clone(),
            json_body(json!({"tasks": {"$": {"where": {"subject": "x".repeat(20 * 1024)}}}})),
            owner_a_token.clone(),
            "payload_too_large",
        ),
        (
            "deeply nested query",
            qry_a.clone(),
            format!(
                "{{\"tasks\":{{\"$\":{{\"where\":{}{{}}{}}}}}}}",
                "{\"and\":[".repeat(1_000),
                "]}".repeat(1_000)
            )
            .into_bytes(),
            owner_a_token.clone(),
            "validation_failed",
        ),
        (
            "links nested past the limit",
            qry_a.clone(),
            json_body(json!({"tasks": {"agent": {"tasks": {"agent": {"tasks": {}}}}}})),
            owner_a_token.clone(),
            "validation_failed",
        ),
        (
            "invalid utf-8 query",
            qry_a.clone(),
            b"{\"tasks\":{\"$\":{\"where\":{\"subject\":\"\xff\xfe\"}}}}".to_vec(),
            owner_a_token.clone(),
            "validation_failed",
        ),
    ];
    for (name, subject, body, token, code) in query_attacks {
        let reply = stack.query_raw(&subject, body, &token).await;
        if reply["ok"] != false || reply["error"]["code"] != code {
            query_failures.push(format!("{name}: expected {code}, got {reply}"));
        }
    }
    // Cross-tenant reads through filters and dotted paths find nothing of tenant B.
    let probes = [
        json!({"tasks": {"$": {"where": {"id": w.task_b}}}}),
        json!({"tasks": {"$": {"where": {"agent.id": w.agent_b}}}}),
        json!({"tasks": {"$": {"where": {"assignedTo.id": w.member_b}}}}),
        json!({"tasks": {"$": {"where": {"or": [{"agent.id": w.agent_b}, {"assignedTo.id": w.member_b}]}}}}),
        json!({"agents": {"$": {"where": {"id": w.agent_b}}}, "members": {"$": {"where": {"id": w.member_b}}}}),
        json!({"tenants": {"$": {"where": {"id": b}}, "tasks": {}}}),
    ];
    for probe in probes {
        for token in [&owner_a_token, &rs256] {
            let reply = stack
                .query_raw(&qry_a, json_body(probe.clone()), token)
                .await;
            let text = reply.to_string();
            if reply["ok"] != true
                || text.contains(&b.to_string())
                || text.contains(&w.task_b.to_string())
                || text.contains("Bravo")
            {
                query_failures.push(format!("cross-tenant probe {probe}: {reply}"));
            }
        }
    }

    // Let anything wrongly appended reach the read models before comparing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.wait_projected().await;
    let after = stack.snapshot().await;
    assert!(
        failures.is_empty() && query_failures.is_empty(),
        "attacks not refused as expected:\n{}\n{}",
        failures.join("\n"),
        query_failures.join("\n")
    );
    assert_eq!(
        (before.0, before.1),
        (after.0, after.1),
        "the event log changed"
    );
    assert_eq!(before.2, after.2, "a read model changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_tenant_allowance_is_rate_limited() {
    let limit = RateLimitConfig {
        rate_limit_per_tenant: 1,
        rate_limit_burst: 5,
    };
    let stack = Stack::start(limit, false).await;
    // Setup by the platform token spends the shared admin allowance: paced by the hints.
    let mut tenants = Vec::new();
    let mut owners = Vec::new();
    for name in ["Acme", "Bravo"] {
        let t = Uuid::new_v4();
        paced(
            &stack,
            "talkwai.cmd.platform.tenant.create",
            json!({"id": t, "name": name}),
        )
        .await;
        let u = Uuid::new_v4();
        paced(
            &stack,
            "talkwai.cmd.platform.user.create",
            json!({"id": u, "email": format!("{u}@o.test")}),
        )
        .await;
        paced(
            &stack,
            &format!("talkwai.cmd.{t}.member.create"),
            json!({"id": Uuid::new_v4(), "firstName": "O", "lastName": name,
                   "email": format!("{u}@o.test"), "role": "owner", "user": u}),
        )
        .await;
        tenants.push(t);
        owners.push(hs256(&claims(u, PrincipalKind::Member, Some(t))));
    }
    let (head_before, _) = stack.stream_state().await;
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..12 {
        let reply = stack
            .command_raw(
                &format!("talkwai.cmd.{}.task.create", tenants[0]),
                json_body(json!({"id": Uuid::new_v4(), "type": "call",
                                 "fromAddress": "+15550001111", "toAddress": "+15550002222"})),
                &owners[0],
                Uuid::new_v4(),
            )
            .await;
        match reply.into_result() {
            Ok(_) => accepted += 1,
            Err(error) => {
                assert_eq!(error.code.as_str(), "rate_limited", "{error:?}");
                let retry = error.retry_after_ms.expect("a retry-after hint");
                assert!((1..=1_000).contains(&retry), "retry after {retry} ms");
                limited += 1;
            }
        }
    }
    assert!(
        (5..=7).contains(&accepted),
        "the burst of 5 (plus at most the refill) passes: {accepted}"
    );
    assert_eq!(accepted + limited, 12);
    let (head_after, _) = stack.stream_state().await;
    assert_eq!(
        head_after - head_before,
        2 * accepted,
        "one event and its command record per accepted task.create, none for the refused ones"
    );
    // Another tenant has its own allowance.
    stack
        .ok(
            &format!("talkwai.cmd.{}.task.create", tenants[1]),
            json!({"id": Uuid::new_v4(), "type": "call",
                   "fromAddress": "+15550001111", "toAddress": "+15550002222"}),
            &owners[1],
        )
        .await;
}

/// Sends a platform command, waiting out `rate_limited` replies as their hint says.
async fn paced(stack: &Stack, subject: &str, body: Value) {
    for _ in 0..20 {
        let reply = stack
            .command_raw(subject, json_body(body.clone()), PLATFORM, Uuid::new_v4())
            .await;
        match reply.into_result() {
            Ok(_) => return,
            Err(error) if error.code.as_str() == "rate_limited" => {
                let wait = error.retry_after_ms.expect("a retry-after hint");
                tokio::time::sleep(Duration::from_millis(wait + 5)).await;
            }
            Err(error) => panic!("{subject} {body}: {error:?}"),
        }
    }
    panic!("{subject} stayed rate limited");
}
