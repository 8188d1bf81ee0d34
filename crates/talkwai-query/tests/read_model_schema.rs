//! The read-model schema is written down in three places that must agree: the projector's DDL
//! (`talkwai_projector::schema`), the column table the projector writes by
//! (`schema::COLUMNS`, which also names `schema::TABLES`) with the rows `rows::apply` builds,
//! and the query model (`talkwai_query::model`) with its `indexed` flags. This test reads what
//! a real PostgreSQL made of the DDL (`information_schema`, the index catalog) and fails on any
//! disagreement: a column missing, misplaced or of another type, a row key the table does not
//! have, an `indexed` flag without an index behind it.

use std::collections::{BTreeMap, BTreeSet};

use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, EntityKind};
use talkwai_projector::rows::{self, Row};
use talkwai_projector::schema::{self, COLUMNS, TABLES};
use talkwai_query::model::{FieldType, Join, NAMESPACES, Namespace};
use talkwai_testkit::Postgres;

/// A column as PostgreSQL describes it: (data type, nullable).
type Described = BTreeMap<String, (String, bool)>;

/// The columns of `schema.table`, in table order, with their types and nullability.
async fn columns(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Vec<(String, String, bool)> {
    client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable = 'YES'
             FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await
        .expect("information_schema.columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The key columns of every index on `schema.table`, in index order.
async fn indexes(client: &tokio_postgres::Client, schema: &str, table: &str) -> Vec<Vec<String>> {
    client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY k.ord)
             FROM pg_indexes i
             JOIN pg_class c ON c.relname = i.indexname
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname
             JOIN pg_index x ON x.indexrelid = c.oid
             CROSS JOIN LATERAL unnest(x.indkey[0:x.indnkeyatts - 1]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
             WHERE i.schemaname = $1 AND i.tablename = $2
             GROUP BY c.oid",
            &[&schema, &table],
        )
        .await
        .expect("pg_indexes")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn sql_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Uuid => "uuid",
        FieldType::Text => "text",
        FieldType::Millis => "bigint",
        FieldType::Json => "jsonb",
        FieldType::Bool => "boolean",
    }
}

fn kind_of(table: &str) -> EntityKind {
    [
        EntityKind::Tenant,
        EntityKind::Member,
        EntityKind::Admin,
        EntityKind::Agent,
        EntityKind::Task,
        EntityKind::User,
    ]
    .into_iter()
    .find(|k| rows::table(*k) == table)
    .unwrap_or_else(|| panic!("no aggregate kind is stored in {table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_column_table_rows_and_query_model_agree() {
    let pg = Postgres::start().await.expect("postgres");
    let db = pg.create_unique_database("schema").await.expect("db");
    let pool = talkwai_projector::pool(&db, 1).expect("pool");
    let mut conn = pool.get().await.expect("conn");
    schema::migrate(&conn).await.expect("migrate");
    let (_, generation) = schema::live_generation(&mut conn)
        .await
        .expect("generation");
    let client: &tokio_postgres::Client = &conn;

    // The DDL and the column table: the same tables, the same columns in the same order (the
    // order `COPY` and the parity digests rely on).
    assert_eq!(TABLES.to_vec(), COLUMNS.map(|(t, _)| t).to_vec());
    let mut described: BTreeMap<&str, Described> = BTreeMap::new();
    for (table, expected) in COLUMNS {
        let found = columns(client, &generation, table).await;
        let names: Vec<&str> = found.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names, expected,
            "{generation}.{table}: DDL vs schema::COLUMNS"
        );
        // What the query reads: the stable view shows the same columns.
        let view = columns(client, schema::VIEWS, table).await;
        let view_names: Vec<&str> = view.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(view_names, expected, "view {}.{table}", schema::VIEWS);
        described.insert(
            table,
            found
                .into_iter()
                .map(|(name, ty, nullable)| (name, (ty, nullable)))
                .collect(),
        );
    }

    // The rows: every event of every aggregate (the proto samples hold one of each type)
    // leaves a row holding exactly the table's columns, the create included.
    let samples = talkwai_proto::samples::events();
    for (table, expected) in COLUMNS {
        let kind = kind_of(table);
        let expected: BTreeSet<&str> = expected.iter().copied().collect();
        let target = AggregateRef {
            kind,
            tenant: Some(TenantId(talkwai_proto::samples::TENANT)),
            id: uuid::Uuid::new_v4(),
        };
        let of_kind: Vec<_> = samples.iter().filter(|e| e.kind() == kind).collect();
        let (creates, others): (Vec<_>, Vec<_>) = of_kind
            .iter()
            .partition(|e| e.encode().event_type.ends_with(".created"));
        assert_eq!(creates.len(), 1, "one create sample for {table}");
        let mut created: Option<Row> = None;
        rows::apply(&mut created, &target, creates[0], 1).expect("create applies");
        let created = created.expect("a created row");
        let keys: BTreeSet<&str> = created.keys().map(String::as_str).collect();
        assert_eq!(keys, expected, "{table}: the row a create builds");
        let mut updates = 0;
        for (seq, event) in (2..).zip(others) {
            let mut row = Some(created.clone());
            rows::apply(&mut row, &target, event, seq).expect("event applies");
            let Some(row) = row else { continue };
            let keys: BTreeSet<&str> = row.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                expected,
                "{table}: the row after {}",
                event.encode().event_type
            );
            updates += 1;
        }
        assert!(updates > 0, "{table}: some update samples were checked");
    }

    // The query model: each namespace reads a table of the column table; each field a column
    // of its type and nullability; each link a uuid column; each `indexed` field is served by
    // an index whose keys start with it (or, in a tenant's namespace, with the tenant column
    // and then it: every statement there is scoped to one tenant).
    assert_eq!(
        NAMESPACES.iter().map(|n| n.table).collect::<BTreeSet<_>>(),
        TABLES.into_iter().collect::<BTreeSet<_>>(),
        "every table is queryable, and only those"
    );
    let mut indexed = 0;
    for ns in NAMESPACES {
        let table = described
            .get(ns.table)
            .unwrap_or_else(|| panic!("namespace {} reads no table", ns.name));
        let uuid_column = |owner: &Namespace, column: &str| {
            let (ty, _) = described
                .get(owner.table)
                .and_then(|t| t.get(column))
                .unwrap_or_else(|| panic!("{}: no column {column}", owner.table));
            assert_eq!(ty, "uuid", "{}.{column}", owner.table);
        };
        if let Some(column) = ns.tenant_column {
            uuid_column(ns, column);
        }
        for link in ns.links {
            match link.join {
                Join::Forward { column } => uuid_column(ns, column),
                Join::Reverse { column } => uuid_column(Namespace::target(link), column),
            }
            assert_eq!(Namespace::target(link).name, link.target, "{}", link.name);
        }
        let keys = indexes(client, &generation, ns.table).await;
        for field in ns.fields {
            let (ty, nullable) = table.get(field.column).unwrap_or_else(|| {
                panic!("{}.{}: no column {}", ns.name, field.name, field.column)
            });
            assert_eq!(ty, sql_type(field.ty), "{}.{}: type", ns.name, field.name);
            assert_eq!(
                !nullable, field.not_null,
                "{}.{}: not_null",
                ns.name, field.name
            );
            if !field.indexed {
                continue;
            }
            let served = keys.iter().any(|index| match index.as_slice() {
                [first, ..] if first == field.column => true,
                [first, second, ..] => {
                    ns.tenant_column == Some(first.as_str()) && second == field.column
                }
                _ => false,
            });
            assert!(
                served,
                "{}.{} is flagged indexed but no index on {generation}.{} serves it: {keys:?}",
                ns.name, field.name, ns.table
            );
            indexed += 1;
        }
    }
    assert!(indexed >= NAMESPACES.len(), "indexed flags were checked");
}
