//! The read models' indexes serve the seed's three example queries without sequential scans at
//! one million tasks (100 tenants, 10,000 members), checked with the real planner. (The
//! tenant and agent lookups of the dashboard query hit 100-row tables, where a sequential scan
//! is the planner's right choice.)

use std::time::Instant;

use talkwai_testkit::Postgres;

async fn plan(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client
        .query(&format!("EXPLAIN (FORMAT TEXT) {sql}"), &[])
        .await
        .expect("explain");
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_queries_use_indexes_at_a_million_tasks() {
    let pg = Postgres::start().await.expect("postgres");
    let db = pg.create_unique_database("idx").await.expect("db");
    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let mut conn = pool.get().await.expect("conn");
    talkwai_projector::schema::migrate(&conn)
        .await
        .expect("migrate");
    let (_, schema) = talkwai_projector::schema::live_generation(&mut conn)
        .await
        .expect("generation");
    let started = Instant::now();
    conn.batch_execute(&format!(
        "INSERT INTO {schema}.tenants
           SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(t), 12, '0'))::uuid, 'Tenant ' || t, NULL,
                  'active', 0, 0, 1, t
           FROM generate_series(1, 100) t;
         INSERT INTO {schema}.members
           SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(m), 12, '0'))::uuid,
                  ('00000000-0000-4000-8000-' || lpad(to_hex(1 + m % 100), 12, '0'))::uuid,
                  'First', 'Last ' || m, 'm' || m || '@example.com', NULL, 'user',
                  CASE WHEN m % 10 = 0 THEN 'inactive' ELSE 'active' END, NULL, m, m, 1, m
           FROM generate_series(1, 10000) m;
         INSERT INTO {schema}.tasks
           SELECT gen_random_uuid(),
                  ('00000000-0000-4000-8000-' || lpad(to_hex(1 + i % 100), 12, '0'))::uuid,
                  'call', (ARRAY['pending','in_progress','completed','failed'])[1 + i % 4], 'medium',
                  '+15550001111', '+15550002222', 'Task ' || i, NULL, NULL, NULL, NULL, NULL,
                  1700000000000 + i, 1700000000000 + i, NULL,
                  ('00000000-0000-4000-9000-' || lpad(to_hex(1 + i % 10000), 12, '0'))::uuid,
                  NULL, NULL, 1, i
           FROM generate_series(1, 1000000) i;
         ANALYZE;"
    ))
    .await
    .expect("load a million tasks");
    eprintln!("loaded 1M tasks in {:?}", started.elapsed());
    let tenant = "00000000-0000-4000-8000-00000000002a";
    let member = "00000000-0000-4000-9000-000000000123";
    let queries = [
        format!("SELECT * FROM talkwai.members WHERE tenant_id = '{tenant}' AND status = 'active'"),
        // The tenant dashboard: the 20 newest tasks of the tenant.
        format!(
            "SELECT * FROM talkwai.tasks WHERE tenant_id = '{tenant}' ORDER BY created_at DESC, id DESC LIMIT 20"
        ),
        // Tasks for a member, newest first.
        format!(
            "SELECT * FROM talkwai.tasks WHERE assigned_to = '{member}' ORDER BY created_at DESC, id DESC"
        ),
        // Pending tasks of a tenant, newest first.
        format!(
            "SELECT * FROM talkwai.tasks WHERE tenant_id = '{tenant}' AND status = 'pending' ORDER BY created_at DESC, id DESC"
        ),
    ];
    for sql in &queries {
        let plan = plan(&conn, sql).await;
        assert!(
            !plan.contains("Seq Scan"),
            "{sql}\nuses a sequential scan:\n{plan}"
        );
        assert!(plan.contains("Index"), "{sql}\nuses no index:\n{plan}");
    }
}
