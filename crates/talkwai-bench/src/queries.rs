//! The queries suite: the seed's three queries through the query service over NATS, beside one
//! hand-written SQL statement per query that builds the same nested JSON answer directly on
//! PostgreSQL.
//!
//! Data (written straight into the live generation with `generate_series`, then `ANALYZE`):
//! 100 tenants; 100 members each (10,000; 10 % inactive; each linked to a user); 5 agents
//! each; 10,000 tasks each (1M; `--quick`: 1,000 each), statuses in turn
//! pending/in_progress/completed/failed, every task assigned to a member of its tenant (100
//! tasks per member), every other task with an agent of its tenant.
//!
//! Callers use a member token of the tenant they query (the query service checks the member
//! and the tenant on every request, as in production). One caller, closed loop; each request
//! picks a tenant (and a member) at random.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use bytes::Bytes;
use secrecy::SecretString;
use serde_json::{Value, json};
use talkwai_auth::{Claims, PrincipalKind, TokenVerifier};
use talkwai_proto::headers;
use talkwai_query::QueryService;
use talkwai_testkit::{NatsServer, Postgres};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::drive::{self, Budget, Measured, Op};
use crate::report::{Report, Row};
use crate::stack::{self, Rng, push};

const PLATFORM: &str = "bench-platform-token";
const SECRET: &str = "bench-jwt-secret";
const TENANTS: u64 = 100;
const MEMBERS_PER_TENANT: u64 = 100;
const AGENTS_PER_TENANT: u64 = 5;

fn tenant_id(t: u64) -> Uuid {
    uuid(0x8000, t)
}
fn member_id(m: u64) -> Uuid {
    uuid(0x9000, m)
}
fn user_id(m: u64) -> Uuid {
    uuid(0xa000, m)
}
fn uuid(group: u16, n: u64) -> Uuid {
    Uuid::parse_str(&format!("00000000-0000-4000-{group:04x}-{n:012x}")).unwrap_or_default()
}

/// Member `m` (1..=10,000) belongs to tenant `1 + m % 100`; the one used as the caller of
/// tenant `t` is `t + 99` (active).
fn caller_member(t: u64) -> u64 {
    t + 99
}

/// A member of tenant `t` picked by `k`.
fn member_of(t: u64, k: u64) -> u64 {
    // m % 100 == t - 1, m in 1..=10,000.
    let m = (t - 1) + 100 * (k % MEMBERS_PER_TENANT);
    if m == 0 { 10_000 } else { m }
}

fn load_sql(schema: &str, tasks_per_tenant: u64) -> String {
    let tasks = TENANTS * tasks_per_tenant;
    let members = TENANTS * MEMBERS_PER_TENANT;
    let agents = TENANTS * AGENTS_PER_TENANT;
    let id = |group: &str, expr: &str| {
        format!("('00000000-0000-4000-{group}-' || lpad(to_hex({expr}), 12, '0'))::uuid")
    };
    format!(
        "INSERT INTO {schema}.tenants
           SELECT {tenant}, 'Tenant ' || t, 't' || t || '.example', 'active', t, t, 1, t
           FROM generate_series(1, {TENANTS}) t;
         INSERT INTO {schema}.members
           SELECT {member}, {member_tenant}, 'First', 'Last ' || m, 'm' || m || '@example.com', NULL,
                  CASE WHEN m <= 100 THEN 'owner' ELSE 'user' END,
                  CASE WHEN (m / 100) % 10 = 0 THEN 'inactive' ELSE 'active' END,
                  {user}, m, m, 1, m
           FROM generate_series(1, {members}) m;
         INSERT INTO {schema}.agents
           SELECT {agent}, {agent_tenant}, 'Agent ' || a, NULL,
                  (ARRAY['voice','email','sms'])[1 + a % 3], '{{}}', 'active', a, a, 1, a
           FROM generate_series(1, {agents}) a;
         INSERT INTO {schema}.tasks
           SELECT gen_random_uuid(), {task_tenant},
                  'call', (ARRAY['pending','in_progress','completed','failed'])[1 + (i / 100) % 4], 'high',
                  '+15550001111', '+15550002222', 'Task ' || i, 'Call the patient.', NULL, NULL, NULL, NULL,
                  1700000000000 + i, 1700000000000 + i,
                  CASE WHEN i % 2 = 0 THEN {task_agent} END,
                  {task_member}, NULL, NULL, 1, i
           FROM generate_series(1, {tasks}) i;
         ANALYZE;",
        tenant = id("8000", "t"),
        member = id("9000", "m"),
        member_tenant = id("8000", "1 + m % 100"),
        user = id("a000", "m"),
        agent = id("b000", "a"),
        agent_tenant = id("8000", "1 + a % 100"),
        task_tenant = id("8000", "1 + i % 100"),
        // An agent of the task's tenant: a % 100 == i % 100.
        task_agent = id(
            "b000",
            &format!("CASE WHEN ((i / 100) % {AGENTS_PER_TENANT}) * 100 + i % 100 = 0 THEN {agents} ELSE ((i / 100) % {AGENTS_PER_TENANT}) * 100 + i % 100 END")
        ),
        // A member of the task's tenant: m % 100 == i % 100.
        task_member = id("9000", "(i - 1) % 10000 + 1"),
    )
}

/// The three queries: (name, InstaQL body for tenant `t` / member `m`). The seed sends the
/// last two without a limit, which now means every row (2,500 pending tasks per tenant); the
/// bench asks for the first 100 explicitly, as the service answered before it had no default
/// limit, so its numbers stay comparable.
fn instaql(which: usize, t: u64, m: u64) -> Value {
    let tenant = tenant_id(t);
    match which {
        0 => json!({"tenants": {"$": {"where": {"id": tenant}},
            "members": {"$": {"where": {"status": "active"}}},
            "agents": {},
            "tasks": {"$": {"order": {"createdAt": "desc"}, "limit": 20}, "agent": {}, "assignedTo": {}}}}),
        1 => {
            json!({"tasks": {"$": {"where": {"assignedTo.id": member_id(m)}, "order": {"createdAt": "desc"}, "limit": 100},
            "tenant": {}, "agent": {}}})
        }
        _ => {
            json!({"tasks": {"$": {"where": {"and": [{"tenant.id": tenant}, {"status": "pending"}]}, "order": {"createdAt": "desc"}, "limit": 100},
            "agent": {}, "assignedTo": {}}})
        }
    }
}

const NAMES: [&str; 3] = [
    "dashboard (tenant + active members + agents + 20 newest tasks w/ agent, assignee)",
    "tasks by assignee (newest first, limit 100, w/ tenant, agent)",
    "pending tasks of a tenant (newest first, limit 100, w/ agent, assignee)",
];

/// One statement per query building the same nested answer (`jsonb_agg` over a LATERAL
/// top-N, links by correlated lookups). `$1` tenant, `$2` member.
fn hand_sql(which: usize) -> &'static str {
    match which {
        0 => {
            "SELECT jsonb_build_object('tenants', jsonb_build_array(to_jsonb(t) || jsonb_build_object(
               'members', (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.created_at, m.id), '[]')
                           FROM (SELECT * FROM talkwai.members m WHERE m.tenant_id = t.id AND m.status = 'active'
                                 ORDER BY m.created_at, m.id) m),
               'agents', (SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.created_at, a.id), '[]')
                          FROM (SELECT * FROM talkwai.agents a WHERE a.tenant_id = t.id
                                ORDER BY a.created_at, a.id) a),
               'tasks', (SELECT coalesce(jsonb_agg(to_jsonb(x) || jsonb_build_object('agent', to_jsonb(g), 'assignedTo', to_jsonb(u))
                                          ORDER BY x.created_at DESC, x.id DESC), '[]')
                         FROM (SELECT * FROM talkwai.tasks x WHERE x.tenant_id = t.id
                               ORDER BY x.created_at DESC, x.id DESC LIMIT 20) x
                         LEFT JOIN LATERAL (SELECT * FROM talkwai.agents g WHERE g.id = x.agent_id AND g.tenant_id = t.id) g ON true
                         LEFT JOIN LATERAL (SELECT * FROM talkwai.members u WHERE u.id = x.assigned_to AND u.tenant_id = t.id) u ON true))))
             FROM talkwai.tenants t WHERE t.id = $1 AND $2::uuid IS NOT NULL"
        }
        1 => {
            "SELECT jsonb_build_object('tasks', coalesce(jsonb_agg(to_jsonb(x) || jsonb_build_object('tenant', to_jsonb(t), 'agent', to_jsonb(g))
                                       ORDER BY x.created_at DESC, x.id DESC), '[]'))
             FROM (SELECT * FROM talkwai.tasks x WHERE x.assigned_to = $2 AND x.tenant_id = $1
                   ORDER BY x.created_at DESC, x.id DESC LIMIT 100) x
             LEFT JOIN LATERAL (SELECT * FROM talkwai.tenants t WHERE t.id = x.tenant_id) t ON true
             LEFT JOIN LATERAL (SELECT * FROM talkwai.agents g WHERE g.id = x.agent_id AND g.tenant_id = $1) g ON true"
        }
        _ => {
            "SELECT jsonb_build_object('tasks', coalesce(jsonb_agg(to_jsonb(x) || jsonb_build_object('agent', to_jsonb(g), 'assignedTo', to_jsonb(u))
                                       ORDER BY x.created_at DESC, x.id DESC), '[]'))
             FROM (SELECT * FROM talkwai.tasks x WHERE x.tenant_id = $1 AND x.status = 'pending'
                   ORDER BY x.created_at DESC, x.id DESC LIMIT 100) x
             LEFT JOIN LATERAL (SELECT * FROM talkwai.agents g WHERE g.id = x.agent_id AND g.tenant_id = $1) g ON true
             LEFT JOIN LATERAL (SELECT * FROM talkwai.members u WHERE u.id = x.assigned_to AND u.tenant_id = $1) u ON true
             WHERE $2::uuid IS NOT NULL"
        }
    }
}

fn token(t: u64) -> anyhow::Result<String> {
    let claims = Claims {
        sub: user_id(caller_member(t)).into(),
        kind: PrincipalKind::Member,
        tenant: Some(tenant_id(t).into()),
        role: None,
        exp: talkwai_auth::now_secs() + 24 * 3600,
        nbf: None,
        iss: None,
        aud: None,
    };
    let token = talkwai_auth::mint(&claims, &SecretString::from(SECRET))
        .map_err(|e| anyhow::anyhow!("minting a token: {e}"))?;
    Ok(format!("Bearer {token}"))
}

/// Counts the top-level rows of an answer (to check both sides return the same shape).
fn answer_rows(which: usize, data: &Value) -> usize {
    match which {
        0 => data["tenants"][0]["tasks"].as_array().map_or(0, Vec::len),
        _ => data["tasks"].as_array().map_or(0, Vec::len),
    }
}

async fn ask(
    client: &async_nats::Client,
    t: u64,
    bearer: &str,
    body: &Value,
) -> Result<Value, String> {
    let mut map = HeaderMap::new();
    map.insert(headers::AUTHORIZATION, bearer);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(
            format!("talkwai.qry.{}", tenant_id(t)),
            map,
            Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        ),
    )
    .await
    .map_err(|_| "no reply in time".to_owned())?
    .map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
    if value["ok"] != json!(true) {
        return Err(value.to_string());
    }
    Ok(value)
}

/// The statements the query service runs for the dashboard of tenant `t` (exec.rs, one per
/// level plus the per-request checks), with the values inlined, for EXPLAIN.
async fn service_statements(pg: &tokio_postgres::Client, t: u64) -> anyhow::Result<Vec<String>> {
    let tenant = tenant_id(t);
    let row = pg
        .query_one(
            "SELECT coalesce(array_agg(DISTINCT agent_id) FILTER (WHERE agent_id IS NOT NULL), '{}'),
                    coalesce(array_agg(DISTINCT assigned_to) FILTER (WHERE assigned_to IS NOT NULL), '{}')
             FROM (SELECT * FROM talkwai.tasks WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT 21) x",
            &[&tenant],
        )
        .await?;
    let agents: Vec<Uuid> = row.get(0);
    let members: Vec<Uuid> = row.get(1);
    let list = |ids: &[Uuid]| {
        format!(
            "ARRAY[{}]::uuid[]",
            ids.iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Ok(vec![
        format!(
            "SELECT 1 FROM talkwai.members m JOIN talkwai.tenants t ON t.id = m.tenant_id
             WHERE m.user_id = '{}' AND m.tenant_id = '{tenant}' AND m.status = 'active' AND t.status = 'active'",
            user_id(caller_member(t))
        ),
        "SELECT last_seq FROM talkwai.checkpoint".to_owned(),
        format!(
            "SELECT row_to_json(a1) FROM talkwai.tenants a1 WHERE a1.id = '{tenant}' AND a1.id = '{tenant}'
             ORDER BY a1.created_at ASC, a1.id ASC LIMIT 101 OFFSET 0"
        ),
        format!(
            "SELECT p.id::text, row_to_json(c) FROM unnest(ARRAY['{tenant}']::uuid[]) AS p(id)
             CROSS JOIN LATERAL (SELECT a1.* FROM talkwai.members a1
                WHERE a1.tenant_id = p.id AND a1.tenant_id = '{tenant}' AND a1.status = 'active'
                ORDER BY a1.created_at ASC, a1.id ASC LIMIT 101 OFFSET 0) c"
        ),
        format!(
            "SELECT p.id::text, row_to_json(c) FROM unnest(ARRAY['{tenant}']::uuid[]) AS p(id)
             CROSS JOIN LATERAL (SELECT a1.* FROM talkwai.agents a1
                WHERE a1.tenant_id = p.id AND a1.tenant_id = '{tenant}' AND true
                ORDER BY a1.created_at ASC, a1.id ASC LIMIT 101 OFFSET 0) c"
        ),
        format!(
            "SELECT p.id::text, row_to_json(c) FROM unnest(ARRAY['{tenant}']::uuid[]) AS p(id)
             CROSS JOIN LATERAL (SELECT a1.* FROM talkwai.tasks a1
                WHERE a1.tenant_id = p.id AND a1.tenant_id = '{tenant}' AND true
                ORDER BY a1.created_at DESC, a1.id DESC LIMIT 21 OFFSET 0) c"
        ),
        format!(
            "SELECT row_to_json(a1) FROM talkwai.agents a1 WHERE a1.id = ANY({}) AND a1.tenant_id = '{tenant}' AND true",
            list(&agents)
        ),
        format!(
            "SELECT row_to_json(a1) FROM talkwai.members a1 WHERE a1.id = ANY({}) AND a1.tenant_id = '{tenant}' AND true",
            list(&members)
        ),
    ])
}

/// Runs the suite; `tasks_per_tenant` defaults to 10,000 (1,000 with `quick`).
pub async fn run(
    quick: bool,
    seconds: Option<f64>,
    tasks_per_tenant: Option<u64>,
) -> anyhow::Result<Report> {
    let tasks_per_tenant: u64 = tasks_per_tenant.unwrap_or(if quick { 1_000 } else { 10_000 });
    let budget = Budget::new(
        if quick { 300 } else { 3_000 },
        Duration::from_secs_f64(seconds.unwrap_or(if quick { 1.0 } else { 10.0 })),
    );
    let nats = NatsServer::start()
        .await
        .context("starting nats-server (scripts/dev.sh setup installs it)")?;
    crate::drive::set_server_pid(nats.pid());
    let pg = Postgres::start().await.context("starting PostgreSQL")?;
    let client = async_nats::connect(nats.url()).await?;
    let mut report = stack::new_report("queries", quick, Some(client.server_info().version));
    report.notes.push(
        "PostgreSQL from the testkit default (fsync=off; reads only, so it does not matter here)"
            .into(),
    );
    let db = pg.create_unique_database("queries").await?;
    let pool = talkwai_projector::pool(&db, 8)?;
    let schema = {
        let mut conn = pool.get().await?;
        talkwai_projector::schema::migrate(&conn).await?;
        let (_, schema) = talkwai_projector::schema::live_generation(&mut conn).await?;
        schema
    };
    let start = std::time::Instant::now();
    let pg_client = stack::connect(&db).await?;
    pg_client
        .batch_execute(&load_sql(&schema, tasks_per_tenant))
        .await
        .context("loading the data")?;
    let counts = pg_client
        .query_one(
            "SELECT (SELECT count(*) FROM talkwai.tasks), (SELECT count(*) FROM talkwai.members),
                    (SELECT count(*) FROM talkwai.agents)",
            &[],
        )
        .await?;
    let (tasks, members, agents): (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    println!(
        "talkwai-bench queries: loaded {tasks} tasks, {members} members, {agents} agents in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    report.notes.push(format!(
        "data: {TENANTS} tenants, {members} members, {agents} agents, {tasks} tasks \
         (generate_series, ANALYZE); 1 caller, closed loop, random tenant per request"
    ));

    let verifier = TokenVerifier::new(
        Some(PLATFORM.to_owned().into()),
        Some(SECRET.to_owned().into()),
        None,
        None,
    );
    let service = QueryService::new(pool.clone(), verifier);
    let (stop, stopped) = oneshot::channel::<()>();
    let qc = client.clone();
    let task = tokio::spawn(async move {
        service
            .run(qc, async {
                let _ = stopped.await;
            })
            .await
    });
    let tokens: Arc<Vec<String>> = Arc::new(
        (1..=TENANTS)
            .map(token)
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let mut ready = false;
    for _ in 0..200 {
        if ask(&client, 1, &tokens[0], &instaql(0, 1, 1)).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !ready {
        bail!(
            "the query service does not answer: {:?}",
            ask(&client, 1, &tokens[0], &instaql(0, 1, 1)).await
        );
    }

    let pg_shared = Arc::new(pg_client);
    for (which, name) in NAMES.iter().enumerate() {
        // Both sides must give the same number of rows.
        let (t, m) = (7, member_of(7, 3));
        let via_nats = ask(&client, t, &tokens[(t - 1) as usize], &instaql(which, t, m))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", name))?;
        let via_sql: Value = pg_shared
            .query_one(hand_sql(which), &[&tenant_id(t), &member_id(m)])
            .await?
            .get(0);
        let (a, b) = (
            answer_rows(which, &via_nats["data"]),
            answer_rows(which, &via_sql),
        );
        if a != b {
            report.notes.push(format!(
                "{}: the service returned {a} rows, the SQL {b}",
                name
            ));
        }

        let nats_op: Op = {
            let client = client.clone();
            let tokens = Arc::clone(&tokens);
            Arc::new(move |_, i| {
                let client = client.clone();
                let tokens = Arc::clone(&tokens);
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1).wrapping_mul(0x2545_f491));
                let t = rng.pick(TENANTS);
                let m = member_of(t, rng.next());
                Box::pin(async move {
                    let body = instaql(which, t, m);
                    ask(&client, t, &tokens[(t - 1) as usize], &body)
                        .await
                        .map(|_| ())
                })
            })
        };
        let sql_op: Op = {
            let pg = Arc::clone(&pg_shared);
            Arc::new(move |_, i| {
                let pg = Arc::clone(&pg);
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1).wrapping_mul(0x2545_f491));
                let t = rng.pick(TENANTS);
                let m = member_of(t, rng.next());
                Box::pin(async move {
                    let row = pg
                        .query_one(hand_sql(which), &[&tenant_id(t), &member_id(m)])
                        .await
                        .map_err(|e| e.to_string())?;
                    let _: Value = row.get(0);
                    Ok(())
                })
            })
        };
        // Warm both up, then measure them in alternating slices (one noisy second on a
        // shared machine then lands on both sides of the ratio).
        let _ = drive::run(
            1,
            Budget::new(50, Duration::from_secs(2)),
            Arc::clone(&sql_op),
        )
        .await;
        let _ = drive::run(
            1,
            Budget::new(50, Duration::from_secs(2)),
            Arc::clone(&nats_op),
        )
        .await;
        let (sql, via) = drive::interleaved(budget, 10, sql_op, nats_op).await;
        let sql_row = Row::new("queries-sql", &format!("SQL: {}", name), 1, "query", &sql)
            .note("one hand-written statement, jsonb_agg + LATERAL, direct on PostgreSQL");
        // The ratio (and the guard) use medians: a p99 of a few hundred samples on a shared
        // 2-core machine is the scheduler's, not the query's. The target stays on the p99s.
        let ratio = quantile_ratio(&via, &sql, 0.5);
        let service_row =
            Row::new("queries", name, 1, "query", &via).note(format!("rows in answer: {a}"));
        let service_row = match ratio {
            Some(r) => service_row
                .ratio(r, "p50 over the SQL's p50")
                .lower_is_better(),
            None => service_row,
        };
        let within = quantile_ratio(&via, &sql, 0.99).is_some_and(|r| r <= 3.0);
        let service_row = if which == 0 {
            let p99 = via.quantile_ms(0.99).unwrap_or(f64::INFINITY);
            service_row.target("p99 <= 10 ms, <= 3x SQL", p99 <= 10.0 && within)
        } else {
            service_row.target("<= 3x SQL p99", within)
        };
        push(&mut report, sql_row);
        push(&mut report, service_row);
    }

    // Plans of what the service runs for one dashboard.
    let statements = service_statements(&pg_shared, 42).await?;
    let mut plans = String::new();
    for sql in &statements {
        let rows = pg_shared
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[])
            .await?;
        plans.push_str(&format!(
            "-- {}\n",
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
        for r in rows {
            plans.push_str(&r.get::<_, String>(0));
            plans.push('\n');
        }
        plans.push('\n');
    }
    let hand = pg_shared
        .query(
            &format!("EXPLAIN (ANALYZE, BUFFERS) {}", hand_sql(0)),
            &[&tenant_id(42), &member_id(member_of(42, 0))],
        )
        .await?;
    plans.push_str("-- the hand-written dashboard statement\n");
    for r in hand {
        plans.push_str(&r.get::<_, String>(0));
        plans.push('\n');
    }
    if !quick {
        println!("\nEXPLAIN (ANALYZE) of the dashboard statements:\n{plans}");
    }
    report.notes.push(format!("dashboard plans:\n{plans}"));

    let _ = stop.send(());
    let _ = task.await;
    drop(client);
    drop(pg);
    drop(nats);
    Ok(report)
}

fn quantile_ratio(a: &Measured, b: &Measured, q: f64) -> Option<f64> {
    Some(a.quantile_ms(q)? / b.quantile_ms(q)?.max(1e-6))
}
