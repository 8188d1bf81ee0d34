//! The projector's PostgreSQL schema: versioned migrations of its own metadata, one schema per
//! read-model *generation* (`talkwai_g<N>`), and the stable views in schema `talkwai` that
//! dashboards read and that a swap repoints atomically.

use deadpool_postgres::GenericClient;

use crate::error::ProjectorError;

/// Schema of the projector's own bookkeeping.
pub const META: &str = "talkwai_meta";
/// Schema of the stable views dashboards read.
pub const VIEWS: &str = "talkwai";
/// The read-model tables, in dependency order, each with its columns in table order: the one
/// list the projector writes by (upserts, `COPY`, parity digests). The generation DDL,
/// the rows ([`crate::rows`]) and the query model are checked against it on a real PostgreSQL
/// (`crates/talkwai-query/tests/read_model_schema.rs`).
pub const COLUMNS: [(&str, &[&str]); 6] = [
    (
        "tenants",
        &[
            "id",
            "name",
            "domain",
            "status",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
    (
        "members",
        &[
            "id",
            "tenant_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "role",
            "status",
            "user_id",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
            // Added by migration 4 (erasure), last like the outcome columns.
            "erased",
        ],
    ),
    (
        "admins",
        &[
            "id",
            "first_name",
            "last_name",
            "email",
            "role",
            "permissions",
            "status",
            "user_id",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
            "erased",
        ],
    ),
    (
        "agents",
        &[
            "id",
            "tenant_id",
            "name",
            "description",
            "type",
            "configuration",
            "status",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
        ],
    ),
    (
        "tasks",
        &[
            "id",
            "tenant_id",
            "type",
            "status",
            "priority",
            "from_address",
            "to_address",
            "subject",
            "content",
            "metadata",
            "scheduled_at",
            "started_at",
            "completed_at",
            "created_at",
            "updated_at",
            "agent_id",
            "assigned_to",
            "created_by",
            "created_by_admin",
            "version",
            "last_seq",
            // Added by migration 3 (task outcomes): last, where `ADD COLUMN` put them in the
            // generations that existed, so every generation has one column order.
            "outcome",
            "outcome_summary",
            "erased",
        ],
    ),
    (
        "users",
        &[
            "id",
            "email",
            "created_at",
            "updated_at",
            "version",
            "last_seq",
            "erased",
        ],
    ),
];

/// Read-model tables, in dependency order (the names of [`COLUMNS`]).
pub const TABLES: [&str; 6] = {
    let mut tables = [""; 6];
    let mut i = 0;
    while i < tables.len() {
        tables[i] = COLUMNS[i].0;
        i += 1;
    }
    tables
};

/// Metadata migrations, applied in order, each once (recorded in `talkwai_meta.migrations`).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS talkwai_meta.generations (
            generation integer PRIMARY KEY,
            schema_name text NOT NULL UNIQUE,
            state text NOT NULL CHECK (state IN ('building', 'live', 'retired', 'snapshot')),
            tenant uuid,
            until_seq bigint,
            created_at timestamptz NOT NULL DEFAULT now(),
            swapped_at timestamptz
         );
         CREATE UNIQUE INDEX IF NOT EXISTS generations_one_live
            ON talkwai_meta.generations ((true)) WHERE state = 'live';
         CREATE TABLE IF NOT EXISTS talkwai_meta.dead_letters (
            id bigserial PRIMARY KEY,
            generation integer NOT NULL,
            seq bigint NOT NULL,
            subject text NOT NULL,
            event_type text,
            error text NOT NULL,
            payload text NOT NULL,
            status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'skipped', 'retrying', 'resolved')),
            created_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz,
            UNIQUE (generation, seq)
         );
         CREATE TABLE IF NOT EXISTS talkwai_meta.projector_state (
            generation integer PRIMARY KEY,
            stopped_at_seq bigint,
            stopped_reason text,
            updated_at timestamptz NOT NULL DEFAULT now()
         );",
    ),
    (
        2,
        // Partitions: one checkpoint row per partition in every generation (existing ones
        // become partition 0 of a 1-partition layout) and one stop per partition.
        "ALTER TABLE talkwai_meta.projector_state ADD COLUMN IF NOT EXISTS part integer NOT NULL DEFAULT 0;
         ALTER TABLE talkwai_meta.projector_state DROP CONSTRAINT IF EXISTS projector_state_pkey;
         ALTER TABLE talkwai_meta.projector_state ADD PRIMARY KEY (generation, part);
         DO $$
         DECLARE s text;
         BEGIN
           FOR s IN SELECT g.schema_name FROM talkwai_meta.generations g
                    JOIN information_schema.columns c
                      ON c.table_schema = g.schema_name AND c.table_name = 'checkpoint'
                     AND c.column_name = 'id' LOOP
             EXECUTE format('ALTER TABLE %I.checkpoint DROP CONSTRAINT IF EXISTS checkpoint_id_check', s);
             EXECUTE format('ALTER TABLE %I.checkpoint RENAME COLUMN id TO part', s);
             EXECUTE format('UPDATE %I.checkpoint SET part = 0', s);
             EXECUTE format('ALTER TABLE %I.checkpoint ALTER COLUMN part SET DEFAULT 0', s);
             EXECUTE format('ALTER TABLE %I.checkpoint ADD COLUMN partitions integer NOT NULL DEFAULT 1', s);
           END LOOP;
         END $$;",
    ),
    (
        3,
        // Task outcomes (`task.completed` / `task.failed` v2): two nullable columns in every
        // existing generation, no rewrite and no rebuild (every event before them is v1, which
        // has no outcome, so NULL is what a rebuild would write), then the views are repointed
        // (a view's `*` is fixed when it is created).
        "DO $$
         DECLARE s text;
         BEGIN
           FOR s IN SELECT g.schema_name FROM talkwai_meta.generations g
                    JOIN information_schema.tables t
                      ON t.table_schema = g.schema_name AND t.table_name = 'tasks' LOOP
             EXECUTE format('ALTER TABLE %I.tasks ADD COLUMN IF NOT EXISTS outcome jsonb,
                             ADD COLUMN IF NOT EXISTS outcome_summary text', s);
             EXECUTE format('CREATE INDEX IF NOT EXISTS tasks_tenant_id_outcome_summary_idx
                             ON %I.tasks (tenant_id, outcome_summary)', s);
           END LOOP;
         END $$;",
    ),
    (
        4,
        // Erasure (`member.erased`, `admin.erased`, `user.erased`, `task.contentErased`): the
        // personal columns become nullable (an erased field is NULL, never a placeholder) and
        // every table with personal data gets `erased`, false for the rows that exist (no
        // rewrite: a constant default). Rows rebuilt before this release may hold the old
        // placeholders (`erased`, `erased@erased.invalid`) until the next rebuild. Then the
        // views are repointed.
        "DO $$
         DECLARE s text;
         BEGIN
           FOR s IN SELECT g.schema_name FROM talkwai_meta.generations g
                    JOIN information_schema.tables t
                      ON t.table_schema = g.schema_name AND t.table_name = 'members' LOOP
             EXECUTE format('ALTER TABLE %I.members ALTER COLUMN first_name DROP NOT NULL,
                             ALTER COLUMN last_name DROP NOT NULL, ALTER COLUMN email DROP NOT NULL,
                             ADD COLUMN IF NOT EXISTS erased boolean NOT NULL DEFAULT false', s);
             EXECUTE format('ALTER TABLE %I.admins ALTER COLUMN first_name DROP NOT NULL,
                             ALTER COLUMN last_name DROP NOT NULL, ALTER COLUMN email DROP NOT NULL,
                             ADD COLUMN IF NOT EXISTS erased boolean NOT NULL DEFAULT false', s);
             EXECUTE format('ALTER TABLE %I.tasks ALTER COLUMN from_address DROP NOT NULL,
                             ALTER COLUMN to_address DROP NOT NULL,
                             ADD COLUMN IF NOT EXISTS erased boolean NOT NULL DEFAULT false', s);
             EXECUTE format('ALTER TABLE %I.users ALTER COLUMN email DROP NOT NULL,
                             ADD COLUMN IF NOT EXISTS erased boolean NOT NULL DEFAULT false', s);
           END LOOP;
         END $$;",
    ),
    (
        5,
        // Ordered indexes in one direction. A page is ordered `(created_at, id)` both ascending
        // or both descending (the id breaks ties in the page's direction), which an index on
        // `(…, created_at, id)` serves read forward or backward. The indexes were
        // `(…, created_at DESC, id)`, which serves neither: PostgreSQL fetched every row of the
        // tenant and sorted them for each dashboard page (45 ms at 3,000 tasks, growing with
        // the tenant). Rebuilt in place under their names, in every existing generation.
        "DO $$
         DECLARE s text;
         BEGIN
           FOR s IN SELECT g.schema_name FROM talkwai_meta.generations g
                    JOIN information_schema.tables t
                      ON t.table_schema = g.schema_name AND t.table_name = 'tasks' LOOP
             EXECUTE format('DROP INDEX IF EXISTS %I.members_tenant_id_created_at_id_idx,
                             %I.agents_tenant_id_created_at_id_idx,
                             %I.tasks_tenant_id_created_at_id_idx,
                             %I.tasks_tenant_id_status_created_at_id_idx,
                             %I.tasks_assigned_to_created_at_id_idx', s, s, s, s, s);
             EXECUTE format('CREATE INDEX members_tenant_id_created_at_id_idx
                             ON %I.members (tenant_id, created_at, id)', s);
             EXECUTE format('CREATE INDEX agents_tenant_id_created_at_id_idx
                             ON %I.agents (tenant_id, created_at, id)', s);
             EXECUTE format('CREATE INDEX tasks_tenant_id_created_at_id_idx
                             ON %I.tasks (tenant_id, created_at, id)', s);
             EXECUTE format('CREATE INDEX tasks_tenant_id_status_created_at_id_idx
                             ON %I.tasks (tenant_id, status, created_at, id)', s);
             EXECUTE format('CREATE INDEX tasks_assigned_to_created_at_id_idx
                             ON %I.tasks (assigned_to, created_at, id)', s);
           END LOOP;
         END $$;",
    ),
];

/// The tables of one generation. `last_seq` is the stream sequence of the last event applied
/// to the row (the re-application guard); `version` the number of the aggregate's events. The
/// `checkpoint` table has one row per partition (see [`crate::partition`]); a new generation
/// starts with the 1-partition layout.
const GENERATION_DDL: &str = "
CREATE TABLE {s}.tenants (
    id uuid PRIMARY KEY, name text NOT NULL, domain text, status text NOT NULL,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    version bigint NOT NULL, last_seq bigint NOT NULL
);
CREATE INDEX ON {s}.tenants (created_at, id);
CREATE TABLE {s}.members (
    id uuid PRIMARY KEY, tenant_id uuid NOT NULL, first_name text, last_name text,
    email text, phone text, role text NOT NULL, status text NOT NULL, user_id uuid,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    version bigint NOT NULL, last_seq bigint NOT NULL,
    erased boolean NOT NULL DEFAULT false
);
CREATE INDEX ON {s}.members (tenant_id, status);
CREATE INDEX ON {s}.members (tenant_id, created_at, id);
CREATE INDEX ON {s}.members (user_id);
CREATE INDEX ON {s}.members (tenant_id, email);
CREATE TABLE {s}.admins (
    id uuid PRIMARY KEY, first_name text, last_name text, email text,
    role text NOT NULL, permissions text NOT NULL, status text NOT NULL, user_id uuid,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    version bigint NOT NULL, last_seq bigint NOT NULL,
    erased boolean NOT NULL DEFAULT false
);
CREATE INDEX ON {s}.admins (user_id);
CREATE INDEX ON {s}.admins (email);
CREATE INDEX ON {s}.admins (created_at, id);
CREATE TABLE {s}.agents (
    id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, description text,
    type text NOT NULL, configuration text NOT NULL, status text NOT NULL,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    version bigint NOT NULL, last_seq bigint NOT NULL
);
CREATE INDEX ON {s}.agents (tenant_id, created_at, id);
CREATE INDEX ON {s}.agents (tenant_id, type);
CREATE TABLE {s}.tasks (
    id uuid PRIMARY KEY, tenant_id uuid NOT NULL, type text NOT NULL, status text NOT NULL,
    priority text NOT NULL, from_address text, to_address text,
    subject text, content text, metadata text,
    scheduled_at bigint, started_at bigint, completed_at bigint,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    agent_id uuid, assigned_to uuid, created_by uuid, created_by_admin uuid,
    version bigint NOT NULL, last_seq bigint NOT NULL,
    outcome jsonb, outcome_summary text,
    erased boolean NOT NULL DEFAULT false
);
CREATE INDEX ON {s}.tasks (tenant_id, created_at, id);
CREATE INDEX ON {s}.tasks (tenant_id, status, created_at, id);
CREATE INDEX ON {s}.tasks (assigned_to, created_at, id);
CREATE INDEX ON {s}.tasks (agent_id);
CREATE INDEX ON {s}.tasks (created_by);
CREATE INDEX ON {s}.tasks (tenant_id, outcome_summary);
CREATE TABLE {s}.users (
    id uuid PRIMARY KEY, email text,
    created_at bigint NOT NULL, updated_at bigint NOT NULL,
    version bigint NOT NULL, last_seq bigint NOT NULL,
    erased boolean NOT NULL DEFAULT false
);
CREATE INDEX ON {s}.users (email);
CREATE INDEX ON {s}.users (created_at, id);
CREATE TABLE {s}.checkpoint (
    part integer PRIMARY KEY DEFAULT 0 CHECK (part >= 0),
    partitions integer NOT NULL DEFAULT 1 CHECK (partitions > part),
    last_seq bigint NOT NULL,
    last_event_at bigint NOT NULL DEFAULT 0,
    applied bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {s}.checkpoint (last_seq) VALUES (0);
";

/// The schema name of generation `n`.
pub fn generation_schema(n: i32) -> String {
    format!("talkwai_g{n}")
}

/// Applies the metadata migrations (idempotent; safe with several projectors starting at once:
/// serialized by an advisory lock).
pub async fn migrate(client: &impl GenericClient) -> Result<(), ProjectorError> {
    client
        .batch_execute("SELECT pg_advisory_lock(7420001)")
        .await?;
    let result = async {
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS talkwai_meta;
                 CREATE SCHEMA IF NOT EXISTS talkwai;
                 CREATE TABLE IF NOT EXISTS talkwai_meta.migrations (
                    version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
        // Views to make again over the live generation once the migrations ran.
        let (mut repoint_checkpoint, mut repoint_tasks, mut repoint_personal) =
            (false, false, false);
        for (version, sql) in MIGRATIONS {
            let done = client
                .query_opt(
                    "SELECT 1 FROM talkwai_meta.migrations WHERE version = $1",
                    &[version],
                )
                .await?
                .is_some();
            if !done {
                client.batch_execute(sql).await?;
                repoint_checkpoint |= *version == 2;
                repoint_tasks |= *version == 3;
                repoint_personal |= *version == 4;
                client
                    .execute(
                        "INSERT INTO talkwai_meta.migrations (version) VALUES ($1)",
                        &[version],
                    )
                    .await?;
            }
        }
        if repoint_checkpoint || repoint_tasks || repoint_personal {
            // Migration 2 made the checkpoint view an aggregate over partitions; migration 3
            // added task columns, which a view's `*` (fixed when it was made) does not show.
            let live = client
                .query_opt(
                    "SELECT g.schema_name, to_regclass(format('%I.tasks', g.schema_name)) IS NOT NULL
                     FROM talkwai_meta.generations g WHERE g.state = 'live'",
                    &[],
                )
                .await?;
            if let Some(row) = live {
                let schema: &str = row.get(0);
                if repoint_checkpoint {
                    point_checkpoint_view(client, schema).await?;
                }
                if (repoint_tasks || repoint_personal) && row.get::<_, bool>(1) {
                    client.batch_execute(&view_sql(schema, "tasks")).await?;
                }
                if repoint_personal && row.get::<_, bool>(1) {
                    for table in ["members", "admins", "users"] {
                        client.batch_execute(&view_sql(schema, table)).await?;
                    }
                }
            }
        }
        Ok::<_, ProjectorError>(())
    }
    .await;
    client
        .batch_execute("SELECT pg_advisory_unlock(7420001)")
        .await?;
    result
}

/// Creates the tables of a new generation and registers it with `state`. Call inside a
/// transaction.
pub async fn create_generation(
    client: &impl GenericClient,
    state: &str,
    tenant: Option<uuid::Uuid>,
    until_seq: Option<i64>,
    schema_name: Option<&str>,
) -> Result<(i32, String), ProjectorError> {
    // Generation numbers are handed out one at a time (must run inside a transaction).
    client
        .batch_execute("SELECT pg_advisory_xact_lock(7420002)")
        .await?;
    let row = client
        .query_one(
            "SELECT COALESCE(max(generation), 0) + 1 FROM talkwai_meta.generations",
            &[],
        )
        .await?;
    let generation: i32 = row.get(0);
    let schema = schema_name.map_or_else(|| generation_schema(generation), str::to_owned);
    if !schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || schema.is_empty()
        || schema.len() > 63
    {
        return Err(ProjectorError::Invalid(format!(
            "schema name {schema} must be 1-63 of [a-z0-9_]"
        )));
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};{}",
            GENERATION_DDL.replace("{s}", &schema)
        ))
        .await?;
    client
        .execute(
            "INSERT INTO talkwai_meta.generations (generation, schema_name, state, tenant, until_seq)
             VALUES ($1, $2, $3, $4, $5)",
            &[&generation, &schema, &state, &tenant, &until_seq],
        )
        .await?;
    Ok((generation, schema))
}

/// The live generation, creating generation 1 (and its views) on a fresh database.
pub async fn live_generation(
    client: &mut deadpool_postgres::Object,
) -> Result<(i32, String), ProjectorError> {
    let tx = client.transaction().await?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(7420002)")
        .await?;
    let live = tx
        .query_opt(
            "SELECT generation, schema_name FROM talkwai_meta.generations WHERE state = 'live'",
            &[],
        )
        .await?;
    let out = match live {
        Some(row) => (row.get(0), row.get(1)),
        None => {
            let (generation, schema) = create_generation(&tx, "live", None, None, None).await?;
            point_views(&tx, &schema).await?;
            tx.execute(
                "UPDATE talkwai_meta.generations SET swapped_at = now() WHERE generation = $1",
                &[&generation],
            )
            .await?;
            (generation, schema)
        }
    };
    tx.commit().await?;
    Ok(out)
}

/// Points the stable views (`talkwai.tenants`...) at `schema`'s tables. `talkwai.checkpoint`
/// is one row over all partitions: `last_seq` is the lowest partition checkpoint (every event
/// up to it is applied, whatever its partition), `applied` the sum, `partitions` the count.
pub async fn point_views(client: &impl GenericClient, schema: &str) -> Result<(), ProjectorError> {
    let sql: String = TABLES.iter().map(|table| view_sql(schema, table)).collect();
    client.batch_execute(&sql).await?;
    point_checkpoint_view(client, schema).await
}

/// The statements that point `talkwai.<table>` at `schema.<table>`. DROP + CREATE rather than
/// CREATE OR REPLACE: columns may differ between generations.
fn view_sql(schema: &str, table: &str) -> String {
    format!(
        "DROP VIEW IF EXISTS {VIEWS}.{table}; CREATE VIEW {VIEWS}.{table} AS SELECT * FROM {schema}.{table};"
    )
}

/// Points `talkwai.checkpoint` at `schema`'s partition checkpoints.
async fn point_checkpoint_view(
    client: &impl GenericClient,
    schema: &str,
) -> Result<(), ProjectorError> {
    client
        .batch_execute(&format!(
            "DROP VIEW IF EXISTS {VIEWS}.checkpoint; CREATE VIEW {VIEWS}.checkpoint AS
             SELECT min(last_seq)::bigint AS last_seq, min(last_event_at)::bigint AS last_event_at,
                    coalesce(sum(applied), 0)::bigint AS applied, max(updated_at) AS updated_at,
                    count(*)::integer AS partitions
             FROM {schema}.checkpoint;"
        ))
        .await?;
    Ok(())
}
