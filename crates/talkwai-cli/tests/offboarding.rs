//! Tenant offboarding end to end, on the whole system of `talkwai up` (real nats-server and
//! PostgreSQL, every service): two tenants with data; A is suspended and erased (a wrong token
//! first), then A's read models are gone (live, and after a rebuild), its room is closed, its
//! commands, queries and presence are refused — and B's rows, room and commands are exactly
//! as before.
//!
//! Sealing is on (`talkwai up` seals by default): both tenants hold a member and a task with
//! unique marker strings in their personal fields. After A's erasure (and a rebuild), nats-server's
//! store directory, a whole-database `pg_dump` and a `talkwai events export` hold none of A's
//! markers, while B's still read in clear through queries.

mod common;

use std::time::Duration;

use common::up::{Up, secrets_json};
use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_cli::demo;
use talkwai_testkit::scan::{files_holding, found_in};
use talkwai_testkit::services::{admin_token, member_token, send_command};
use talkwai_testkit::wait::poll_until;
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(10);

/// The tables of a tenant's rows (by `tenant_id`; the tenant's own row by `id`).
const TENANT_TABLES: [&str; 3] = ["members", "agents", "tasks"];

/// A marker string unique to this run: letters only (a valid name), never written by anyone
/// else.
fn marker(tag: &str) -> String {
    let letters: String = Uuid::new_v4()
        .simple()
        .to_string()
        .bytes()
        .take(16)
        .map(|b| char::from(b'a' + (b % 26)))
        .collect();
    format!("Mk{tag}{letters}")
}

/// Personal data of one tenant, each field a marker: a member (names, email) and a task
/// (subject, content).
struct Markers {
    first: String,
    last: String,
    email: String,
    subject: String,
    content: String,
}

impl Markers {
    /// Markers tagged `tag`; the email at `domain` (a tenant with a domain accepts no other).
    fn new(tag: &str, domain: &str) -> Self {
        Self {
            first: marker(&format!("{tag}first")),
            last: marker(&format!("{tag}last")),
            email: format!("{}@{domain}", marker(&format!("{tag}mail")).to_lowercase()),
            subject: marker(&format!("{tag}subject")),
            content: marker(&format!("{tag}content")),
        }
    }

    fn all(&self) -> [&str; 5] {
        [
            &self.first,
            &self.last,
            &self.email,
            &self.subject,
            &self.content,
        ]
    }

    /// Writes the member and the task into `tenant`; the last reply's seq.
    async fn write(&self, sys: &System, tenant: Uuid, token: &str) -> u64 {
        sys.ok(
            &format!("talkwai.cmd.{tenant}.member.create"),
            json!({"id": Uuid::new_v4(), "firstName": self.first, "lastName": self.last,
                   "email": self.email, "role": "manager"}),
            token,
        )
        .await;
        let mut task = common::task_body(Uuid::new_v4());
        task["subject"] = json!(self.subject);
        task["content"] = json!(self.content);
        let reply = sys
            .ok(&format!("talkwai.cmd.{tenant}.task.create"), task, token)
            .await;
        seq(&reply)
    }
}

struct System {
    client: async_nats::Client,
    pg: tokio_postgres::Client,
    platform: String,
    secret: String,
}

impl System {
    /// Sends a command; the reply as JSON.
    async fn cmd(&self, subject: &str, body: Value, token: &str) -> Value {
        let reply = send_command(
            &self.client,
            subject,
            body.to_string(),
            Some(token),
            Some(Uuid::new_v4()),
            WITHIN,
        )
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
        serde_json::to_value(&reply).unwrap_or_else(|e| panic!("reply as JSON: {e}"))
    }

    /// Sends a command that must be accepted; its reply.
    async fn ok(&self, subject: &str, body: Value, token: &str) -> Value {
        let reply = self.cmd(subject, body.clone(), token).await;
        assert_eq!(reply["ok"], true, "{subject} {body}: {reply}");
        reply
    }

    /// Sends a request with a bearer token; the reply as JSON.
    async fn request(&self, subject: String, body: Value, token: &str) -> Value {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = tokio::time::timeout(
            WITHIN,
            self.client
                .request_with_headers(subject.clone(), headers, body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("no reply on {subject}"))
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{subject}: {e}"))
    }

    /// A tenant's rows in every table, as JSON text sorted by table and id (`updated_at`
    /// and all).
    async fn rows_of(&self, tenant: Uuid) -> Vec<String> {
        let mut rows = Vec::new();
        let own = self
            .pg
            .query(
                "SELECT row_to_json(t)::text FROM talkwai.tenants t WHERE id = $1",
                &[&tenant],
            )
            .await
            .unwrap_or_else(|e| panic!("tenants: {e}"));
        rows.extend(
            own.iter()
                .map(|r| format!("tenants {}", r.get::<_, String>(0))),
        );
        for table in TENANT_TABLES {
            let found = self
                .pg
                .query(
                    &format!(
                        "SELECT row_to_json(t)::text FROM talkwai.{table} t
                         WHERE tenant_id = $1 ORDER BY id"
                    ),
                    &[&tenant],
                )
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
            rows.extend(
                found
                    .iter()
                    .map(|r| format!("{table} {}", r.get::<_, String>(0))),
            );
        }
        rows
    }

    /// The live generation's checkpoint.
    async fn checkpoint(&self) -> u64 {
        self.pg
            .query_one("SELECT min(last_seq) FROM talkwai.checkpoint", &[])
            .await
            .ok()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0)
    }

    /// Waits until the read models applied `seq`.
    async fn projected(&self, seq: u64) {
        poll_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || self.checkpoint(),
            |at| *at >= seq,
        )
        .await
        .unwrap_or_else(|at| panic!("the projector never reached {seq} (at {at:?})"));
    }

    /// A presence request in a tenant room.
    async fn presence(&self, tenant: Uuid, op: &str, session: &str, token: &str) -> Value {
        self.request(
            format!("talkwai.room.tenant.{tenant}.presence.{op}"),
            json!({"sessionId": session}),
            token,
        )
        .await
    }

    /// A query of the token's tenant's tasks, after `seq`.
    async fn tasks(&self, tenant: Uuid, token: &str, seq: u64) -> Value {
        self.request(
            format!("talkwai.qry.{tenant}"),
            json!({"query": {"tasks": {}}, "minSeq": seq}),
            token,
        )
        .await
    }
}

fn seq(reply: &Value) -> u64 {
    reply["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {reply}"))
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("-")
}

/// The next message on `sub`, as JSON.
async fn next_json(sub: &mut async_nats::Subscriber, what: &str) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 30s"))
        .unwrap_or_else(|| panic!("the {what} subscription ended"));
    serde_json::from_slice(&message.payload).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn erasing_a_tenant_closes_it_everywhere_and_leaves_the_other_untouched() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let data = parent.path().join("data");
    let up = Up::start(&data, "offboarding.log").await;
    let nats_url = up.export("TALKWAI_NATS_URL");
    let database_url = up.export("TALKWAI_DATABASE_URL");
    let secrets = secrets_json(&data);
    let (pg, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{database_url}: {e}"));
    tokio::spawn(connection);
    let sys = System {
        client: talkwai_cli::connect(&nats_url)
            .await
            .unwrap_or_else(|e| panic!("{nats_url}: {e}")),
        pg,
        platform: secrets["platformToken"].as_str().expect("token").to_owned(),
        secret: secrets["jwtSecret"].as_str().expect("secret").to_owned(),
    };
    let platform = sys.platform.clone();

    // Tenant A: the demo tenant (members, an agent, tasks). Tenant B: a second company.
    let a = demo::TENANT;
    let a_owner = member_token(&sys.secret, demo::OWNER_USER, a).expect("token");
    let (b, b_user, b_owner_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sys.ok(
        "talkwai.cmd.platform.tenant.create",
        json!({"id": b, "name": "Beta Clinic"}),
        &platform,
    )
    .await;
    sys.ok(
        "talkwai.cmd.platform.user.create",
        json!({"id": b_user, "email": "bea@beta.example"}),
        &platform,
    )
    .await;
    sys.ok(
        &format!("talkwai.cmd.{b}.member.create"),
        json!({"id": b_owner_id, "firstName": "Bea", "lastName": "Beta",
               "email": "bea@beta.example", "role": "owner", "user": b_user}),
        &platform,
    )
    .await;
    let b_owner = member_token(&sys.secret, b_user, b).expect("token");
    let b_task = sys
        .ok(
            &format!("talkwai.cmd.{b}.task.create"),
            common::task_body(Uuid::new_v4()),
            &b_owner,
        )
        .await;
    // The superadmin who offboards, and an admin who may not.
    let mut admins = Vec::new();
    for role in ["superadmin", "admin"] {
        let user = Uuid::new_v4();
        sys.ok(
            "talkwai.cmd.platform.user.create",
            json!({"id": user, "email": format!("{role}@talkwai.example")}),
            &platform,
        )
        .await;
        sys.ok(
            "talkwai.cmd.platform.admin.create",
            json!({"id": Uuid::new_v4(), "firstName": "Ops", "lastName": role,
                   "email": format!("{role}@talkwai.example"), "role": role, "user": user}),
            &platform,
        )
        .await;
        admins.push(admin_token(&sys.secret, user).expect("token"));
    }
    let [superadmin, admin] = [admins[0].clone(), admins[1].clone()];
    // Personal data with markers in both tenants (sealed: `up` has a master key).
    let (a_marks, b_marks) = (
        Markers::new("a", "acme.com"),
        Markers::new("b", "beta.example"),
    );
    a_marks.write(&sys, a, &a_owner).await;
    let b_marked = b_marks.write(&sys, b, &b_owner).await;
    sys.projected(seq(&b_task).max(b_marked)).await;
    let a_before = sys.rows_of(a).await;
    assert!(
        a_before.len() > 1 + demo::TASKS.len(),
        "tenant A has rows: {a_before:#?}"
    );
    let b_before = sys.rows_of(b).await;
    assert_eq!(
        b_before.len(),
        5,
        "B: tenant, two members, two tasks: {b_before:#?}"
    );

    // Both rooms have a member present; both rooms are watched.
    for (tenant, token) in [(a, &a_owner), (b, &b_owner)] {
        let joined = sys.presence(tenant, "join", "desk-1", token).await;
        assert_eq!(joined["ok"], true, "{joined}");
    }
    let mut a_room = sys
        .client
        .subscribe(format!("talkwai.room.tenant.{a}.topic.>"))
        .await
        .expect("subscribe");
    let mut b_updates = sys
        .client
        .subscribe(format!("talkwai.room.tenant.{b}.topic.taskUpdates"))
        .await
        .expect("subscribe");
    // No flush: the subscriptions precede every request below on this connection, and the
    // server handles a connection's protocol in order.

    // Suspending issues the erasure token, in the event of the reply.
    let suspended = sys
        .ok(
            &format!("talkwai.cmd.{a}.tenant.setStatus"),
            json!({"id": a, "status": "suspended", "reason": "contract ended"}),
            &superadmin,
        )
        .await;
    let token = suspended["events"][0]["data"]["erasureToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no erasure token in {suspended}"))
        .to_owned();
    assert_eq!(token.len(), 32, "{token}");
    let erase = |token: &str| json!({"id": a, "confirmationToken": token});
    let erase_subject = format!("talkwai.cmd.{a}.tenant.erase");

    // Refused: a wrong token, an admin who is not a superadmin, a tenant that is not suspended.
    let wrong = sys
        .cmd(
            &erase_subject,
            erase("0123456789abcdef0123456789abcdef"),
            &superadmin,
        )
        .await;
    assert_eq!(
        (code(&wrong), &wrong["error"]["field"]),
        ("validation_failed", &json!("confirmationToken")),
        "{wrong}"
    );
    let missing = sys.cmd(&erase_subject, json!({"id": a}), &superadmin).await;
    assert_eq!(code(&missing), "validation_failed", "{missing}");
    let forbidden = sys.cmd(&erase_subject, erase(&token), &admin).await;
    assert_eq!(code(&forbidden), "forbidden", "{forbidden}");
    let active = sys
        .cmd(
            &format!("talkwai.cmd.{b}.tenant.erase"),
            json!({"id": b, "confirmationToken": token}),
            &superadmin,
        )
        .await;
    assert_eq!(code(&active), "invalid_transition", "{active}");

    // Erased.
    let erased = sys.ok(&erase_subject, erase(&token), &superadmin).await;
    assert_eq!(erased["events"][0]["type"], "tenant.erased", "{erased}");
    sys.projected(seq(&erased)).await;

    // A's read models are gone, in every table; B's are exactly as before.
    assert_eq!(sys.rows_of(a).await, Vec::<String>::new());
    assert_eq!(sys.rows_of(b).await, b_before);

    // A's room: a last `roomClosed` message; its presence sessions are gone and joins refused.
    let closed = loop {
        let message = next_json(&mut a_room, "message in A's room").await;
        if message.get("reason").is_some() {
            break message;
        }
    };
    assert_eq!(
        closed,
        json!({"tenantId": a, "reason": "tenantErased",
               "timestamp": closed["timestamp"], "seq": seq(&erased)})
    );
    let heartbeat = sys.presence(a, "heartbeat", "desk-1", &a_owner).await;
    assert_eq!(code(&heartbeat), "not_found", "{heartbeat}");
    let join = sys.presence(a, "join", "desk-2", &a_owner).await;
    assert_eq!(code(&join), "tenant_erased", "{join}");
    let admin_join = sys.presence(a, "join", "ops-1", &superadmin).await;
    assert_eq!(code(&admin_join), "tenant_erased", "{admin_join}");

    // A's commands are refused, whoever sends them; its members' queries too.
    for (subject, body, token) in [
        (
            format!("talkwai.cmd.{a}.task.create"),
            common::task_body(Uuid::new_v4()),
            &a_owner,
        ),
        (
            format!("talkwai.cmd.{a}.member.update"),
            json!({"id": demo::OWNER, "firstName": "X"}),
            &superadmin,
        ),
        (
            format!("talkwai.cmd.{a}.tenant.setStatus"),
            json!({"id": a, "status": "active"}),
            &platform,
        ),
        (erase_subject.clone(), erase(&token), &superadmin),
    ] {
        let refused = sys.cmd(&subject, body, token).await;
        assert_eq!(code(&refused), "tenant_erased", "{subject}: {refused}");
    }
    let query = sys.tasks(a, &a_owner, seq(&erased)).await;
    assert_eq!(query["ok"], false, "{query}");

    // B works as before: presence, commands, queries, its room.
    let heartbeat = sys.presence(b, "heartbeat", "desk-1", &b_owner).await;
    assert_eq!(heartbeat["ok"], true, "{heartbeat}");
    let task = Uuid::new_v4();
    let created = sys
        .ok(
            &format!("talkwai.cmd.{b}.task.create"),
            common::task_body(task),
            &b_owner,
        )
        .await;
    let update = loop {
        let update = next_json(&mut b_updates, "taskUpdates in B's room").await;
        if update["taskId"] == json!(task) {
            break update;
        }
    };
    assert_eq!(update["seq"], created["seq"], "{update}");
    let query = sys.tasks(b, &b_owner, seq(&created)).await;
    assert_eq!(query["ok"], true, "{query}");
    assert_eq!(
        query["data"]["tasks"].as_array().map(Vec::len),
        Some(3),
        "{query}"
    );

    // A rebuild folds the same log into the same rows (its parity check compares them with
    // the live generation before it swaps); one row per bulk window, so A's rows are written
    // in windows before the one holding its erasure.
    let b_now = sys.rows_of(b).await;
    // With the master key `up` uses (its personal fields are sealed).
    let master_key_file = up.export("TALKWAI_MASTER_KEY_FILE");
    let run = common::run_talkwai(
        &["projections", "rebuild", "--bulk-rows", "1"],
        &[
            ("TALKWAI_NATS_URL", &nats_url),
            ("TALKWAI_DATABASE_URL", &database_url),
            ("TALKWAI_MASTER_KEY_FILE", &master_key_file),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "the rebuild's parity check: {}", run.stderr);
    assert_eq!(sys.rows_of(a).await, Vec::<String>::new());
    assert_eq!(sys.rows_of(b).await, b_now);

    // None of A's personal data is left anywhere: not in nats-server's files (the log holds
    // it sealed, its keys are gone), not in PostgreSQL, not in an export of the log.
    let a_needles = a_marks.all();
    // The scan reads the store: the tenant's name (not personal, never sealed) is found.
    assert!(
        !files_holding(&data.join("nats"), &[b"Beta Clinic"]).is_empty(),
        "the scan finds what nats-server stores in clear"
    );
    assert_eq!(
        files_holding(&data.join("nats"), &a_needles.map(str::as_bytes)),
        Vec::<String>::new(),
        "A's markers in nats-server's store"
    );
    let dump = tokio::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(&database_url)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run pg_dump: {e}"));
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("CREATE TABLE"), "a whole-database dump");
    assert_eq!(
        found_in(&dump, &a_needles),
        Vec::<&str>::new(),
        "A's markers in pg_dump"
    );
    assert_eq!(
        found_in(&dump, &b_marks.all()),
        b_marks.all().to_vec(),
        "B's rows are in the dump, in clear"
    );
    let export = common::run_talkwai(
        &["events", "export"],
        &[
            ("TALKWAI_NATS_URL", &nats_url),
            ("TALKWAI_MASTER_KEY_FILE", &master_key_file),
        ],
    )
    .await;
    assert_eq!(export.code, 0, "export: {}", export.stderr);
    assert!(
        export.stdout.contains(&format!("talkwai.evt.{a}.member.")),
        "the export holds A's events (sealed)"
    );
    assert_eq!(
        found_in(&export.stdout, &a_needles),
        Vec::<&str>::new(),
        "A's markers in the export"
    );
    // The same reading of the log shows A's personal fields as erased, B's in clear.
    let tail = common::run_talkwai(
        &["events", "tail", "--from-seq", "1", "--json"],
        &[
            ("TALKWAI_NATS_URL", &nats_url),
            ("TALKWAI_MASTER_KEY_FILE", &master_key_file),
        ],
    )
    .await;
    assert_eq!(tail.code, 0, "tail: {}", tail.stderr);
    assert_eq!(found_in(&tail.stdout, &a_needles), Vec::<&str>::new());
    assert_eq!(
        found_in(&tail.stdout, &b_marks.all()),
        b_marks.all().to_vec()
    );
    // B's personal data reads in clear through queries.
    let tasks = sys.tasks(b, &b_owner, seq(&created)).await.to_string();
    assert_eq!(
        found_in(&tasks, &[&b_marks.subject, &b_marks.content]),
        [b_marks.subject.as_str(), b_marks.content.as_str()],
        "{tasks}"
    );
    let members = sys
        .request(
            format!("talkwai.qry.{b}"),
            json!({"query": {"members": {}}, "minSeq": seq(&created)}),
            &b_owner,
        )
        .await
        .to_string();
    assert_eq!(
        found_in(&members, &[&b_marks.first, &b_marks.last, &b_marks.email]),
        [
            b_marks.first.as_str(),
            b_marks.last.as_str(),
            b_marks.email.as_str()
        ],
        "{members}"
    );

    drop(a_room);
    drop(b_updates);
    up.terminate().await;
}
