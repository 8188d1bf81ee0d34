//! Executing a parsed query against the stable views: one statement per namespace level (not
//! per row), children fetched for all parents at once (`= ANY`, or a `LATERAL` top-N per
//! parent so nested `limit`/`order`/cursors are honored server-side). Every value is a bound
//! parameter; identifiers come only from the static model.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::QueryError;
use crate::model::{Field, FieldType, Join, Namespace};
use crate::parse::{self, Cursor, Dir, Filter, Node, Op, Page, Query};

/// Most rows one query may return in all.
pub const MAX_ROWS: usize = 10_000;

/// Whose rows a query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The tenant every tenant-scoped row must belong to; `None`: every tenant (admins).
    pub tenant: Option<Uuid>,
}

type Param = Box<dyn ToSql + Sync + Send>;

/// A statement being built: text with `$n` placeholders and their values.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Param>,
    aliases: usize,
}

impl Sql {
    fn bind(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("a{}", self.aliases)
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Runs one built statement through the connection's statement cache: a query shape is parsed
/// and planned by PostgreSQL once per connection, then each run is a single round trip.
async fn fetch<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    sql: &Sql,
) -> Result<Vec<tokio_postgres::Row>, QueryError> {
    let statement = client.prepare_cached(&sql.text).await?;
    Ok(client.query(&statement, &sql.refs()).await?)
}

fn typed(value: &Value, field: &Field) -> Result<Param, QueryError> {
    let bad = || QueryError::invalid(field.name, format!("bad value for {}", field.name));
    Ok(match field.ty {
        FieldType::Uuid => Box::new(
            value
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .ok_or_else(bad)?,
        ),
        FieldType::Text => Box::new(value.as_str().ok_or_else(bad)?.to_owned()),
        FieldType::Millis => Box::new(value.as_i64().ok_or_else(bad)?),
    })
}

fn typed_list(values: &[Value], field: &Field) -> Result<Param, QueryError> {
    let bad = || QueryError::invalid(field.name, format!("bad value for {}", field.name));
    Ok(match field.ty {
        FieldType::Uuid => Box::new(
            values
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|s| s.parse::<Uuid>().ok())
                        .ok_or_else(bad)
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        FieldType::Text => Box::new(
            values
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        FieldType::Millis => Box::new(
            values
                .iter()
                .map(|v| v.as_i64().ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    })
}

/// `alias.tenant_column = $tenant` for tenant-scoped namespaces.
fn scope_sql(sql: &mut Sql, namespace: &Namespace, alias: &str, scope: Scope) -> String {
    match (scope.tenant, namespace.tenant_column) {
        (Some(tenant), Some(column)) => {
            let p = sql.bind(Box::new(tenant));
            format!("{alias}.{column} = {p}")
        }
        (Some(_), None) => "false".to_owned(),
        (None, _) => "true".to_owned(),
    }
}

fn op_sql(sql: &mut Sql, column: &str, field: &Field, op: &Op) -> Result<String, QueryError> {
    Ok(match op {
        Op::Eq(v) => format!("{column} = {}", sql.bind(typed(v, field)?)),
        Op::Not(v) => format!("{column} IS DISTINCT FROM {}", sql.bind(typed(v, field)?)),
        Op::In(vs) => format!("{column} = ANY({})", sql.bind(typed_list(vs, field)?)),
        Op::IsNull(true) => format!("{column} IS NULL"),
        Op::IsNull(false) => format!("{column} IS NOT NULL"),
        Op::Gt(v) => format!("{column} > {}", sql.bind(typed(v, field)?)),
        Op::Gte(v) => format!("{column} >= {}", sql.bind(typed(v, field)?)),
        Op::Lt(v) => format!("{column} < {}", sql.bind(typed(v, field)?)),
        Op::Lte(v) => format!("{column} <= {}", sql.bind(typed(v, field)?)),
        Op::Like(p) => format!("{column} LIKE {}", sql.bind(Box::new(p.clone()))),
        Op::ILike(p) => format!("{column} ILIKE {}", sql.bind(Box::new(p.clone()))),
    })
}

fn filter_sql(
    sql: &mut Sql,
    filter: &Filter,
    namespace: &'static Namespace,
    alias: &str,
    scope: Scope,
) -> Result<String, QueryError> {
    Ok(match filter {
        Filter::And(parts) | Filter::Or(parts) => {
            let joiner = if matches!(filter, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let mut out = Vec::new();
            for part in parts {
                out.push(filter_sql(sql, part, namespace, alias, scope)?);
            }
            format!("({})", out.join(joiner))
        }
        Filter::Cond { path, field, op } => {
            // `link.id` on a forward link is the foreign key itself: no join, and its index.
            if let ([link], "id") = (path.as_slice(), field.name)
                && let Join::Forward { column } = link.join
            {
                return op_sql(sql, &format!("{alias}.{column}"), field, op);
            }
            cond_through(sql, path, field, op, namespace, alias, scope)?
        }
    })
}

fn cond_through(
    sql: &mut Sql,
    path: &[&'static crate::model::Link],
    field: &'static Field,
    op: &Op,
    namespace: &'static Namespace,
    alias: &str,
    scope: Scope,
) -> Result<String, QueryError> {
    let Some((link, rest)) = path.split_first() else {
        return op_sql(sql, &format!("{alias}.{}", field.column), field, op);
    };
    let _ = namespace;
    let target = Namespace::target(link);
    let inner = sql.alias();
    let join = match link.join {
        Join::Forward { column } => format!("{inner}.id = {alias}.{column}"),
        Join::Reverse { column } => format!("{inner}.{column} = {alias}.id"),
    };
    let scoped = scope_sql(sql, target, &inner, scope);
    let tail = cond_through(sql, rest, field, op, target, &inner, scope)?;
    Ok(format!(
        "EXISTS (SELECT 1 FROM talkwai.{} {inner} WHERE {join} AND {scoped} AND {tail})",
        target.table
    ))
}

/// Keyset condition and ORDER BY for a level.
fn paging_sql(
    sql: &mut Sql,
    node: &Node,
    alias: &str,
) -> Result<(String, String, i64, i64, bool), QueryError> {
    let (field, dir) = node.params.order;
    let col = format!("{alias}.{}", field.column);
    let (asc, desc) = ("ASC", "DESC");
    let forward_dir = if dir == Dir::Asc { asc } else { desc };
    let reverse_dir = if dir == Dir::Asc { desc } else { asc };
    let keyset = |sql: &mut Sql, cursor: &Cursor, greater: bool| -> Result<String, QueryError> {
        let v = sql.bind(typed(&cursor.value, field)?);
        let id = sql.bind(Box::new(cursor.id));
        let cmp = if greater { ">" } else { "<" };
        Ok(format!(" AND ({col}, {alias}.id) {cmp} ({v}, {id})"))
    };
    Ok(match &node.params.page {
        Page::Offset { limit, offset } => (
            String::new(),
            format!("{col} {forward_dir}, {alias}.id {forward_dir}"),
            *limit,
            *offset,
            false,
        ),
        Page::Forward { first, after } => {
            let cond = match after {
                Some(c) => keyset(sql, c, dir == Dir::Asc)?,
                None => String::new(),
            };
            (
                cond,
                format!("{col} {forward_dir}, {alias}.id {forward_dir}"),
                *first,
                0,
                false,
            )
        }
        Page::Backward { last, before } => {
            let cond = match before {
                Some(c) => keyset(sql, c, dir != Dir::Asc)?,
                None => String::new(),
            };
            (
                cond,
                format!("{col} {reverse_dir}, {alias}.id {reverse_dir}"),
                *last,
                0,
                true,
            )
        }
    })
}

/// Page facts for `pageInfo`.
fn page_info(node: &Node, rows: &[Value], more: bool) -> Value {
    let (field, _) = node.params.order;
    let cursor = |row: &Value| {
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Uuid>().ok())
            .unwrap_or_default();
        parse::encode_cursor(row.get(field.column).unwrap_or(&Value::Null), &id)
    };
    let (has_next, has_previous) = match &node.params.page {
        Page::Offset { offset, .. } => (more, *offset > 0),
        Page::Forward { after, .. } => (more, after.is_some()),
        Page::Backward { before, .. } => (before.is_some(), more),
    };
    json!({
        "startCursor": rows.first().map(cursor),
        "endCursor": rows.last().map(cursor),
        "hasNextPage": has_next,
        "hasPreviousPage": has_previous,
    })
}

/// Trims the extra row fetched to detect a next page, and puts backward pages in order.
fn settle(mut rows: Vec<Value>, limit: i64, reversed: bool) -> (Vec<Value>, bool) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    if reversed {
        rows.reverse();
    }
    (rows, more)
}

/// Runs a query; returns `data` and top-level `pageInfo`.
pub async fn execute(
    client: &impl deadpool_postgres::GenericClient,
    query: &Query,
    scope: Scope,
) -> Result<(Value, Value), QueryError> {
    let mut data = Map::new();
    let mut infos = Map::new();
    let mut budget = MAX_ROWS;
    for (key, namespace, node) in &query.roots {
        let mut sql = Sql::default();
        let alias = sql.alias();
        let scoped = scope_sql(&mut sql, namespace, &alias, scope);
        let filter = match &node.params.filter {
            Some(f) => filter_sql(&mut sql, f, namespace, &alias, scope)?,
            None => "true".to_owned(),
        };
        if node.params.count {
            sql.text = format!(
                "SELECT count(*) FROM talkwai.{} {alias} WHERE {scoped} AND {filter}",
                namespace.table
            );
            let rows = fetch(client, &sql).await?;
            let count: i64 = rows.first().map_or(0, |row| row.get(0));
            data.insert(key.clone(), json!({ "count": count }));
            continue;
        }
        let (keyset, order, limit, offset, reversed) = paging_sql(&mut sql, node, &alias)?;
        sql.text = format!(
            "SELECT row_to_json({alias}) FROM talkwai.{} {alias} WHERE {scoped} AND {filter}{keyset}
             ORDER BY {order} LIMIT {} OFFSET {offset}",
            namespace.table,
            limit + 1
        );
        let rows: Vec<Value> = fetch(client, &sql)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (rows, more) = settle(rows, limit, reversed);
        spend(&mut budget, rows.len())?;
        infos.insert(key.clone(), page_info(node, &rows, more));
        let mut shaped: Vec<Map<String, Value>> =
            rows.iter().map(|r| shape(r, namespace, node)).collect();
        attach_links(
            client,
            &rows,
            &mut shaped,
            namespace,
            node,
            scope,
            &mut budget,
        )
        .await?;
        data.insert(
            key.clone(),
            Value::Array(shaped.into_iter().map(Value::Object).collect()),
        );
    }
    Ok((Value::Object(data), Value::Object(infos)))
}

fn spend(budget: &mut usize, rows: usize) -> Result<(), QueryError> {
    if rows > *budget {
        return Err(QueryError::invalid(
            "",
            format!("result exceeds {MAX_ROWS} rows; add limits"),
        ));
    }
    *budget -= rows;
    Ok(())
}

/// Wire object of a row: the selected fields under their seed names.
fn shape(row: &Value, namespace: &Namespace, node: &Node) -> Map<String, Value> {
    let mut out = Map::new();
    let selected: Vec<&Field> = match &node.params.fields {
        Some(fields) => {
            let mut list: Vec<&Field> = fields.clone();
            if !list.iter().any(|f| f.name == "id") {
                list.insert(0, namespace.field("id").unwrap_or(&namespace.fields[0]));
            }
            list
        }
        None => namespace.fields.iter().collect(),
    };
    for field in selected {
        out.insert(
            field.name.to_owned(),
            row.get(field.column).cloned().unwrap_or(Value::Null),
        );
    }
    out
}

fn row_uuid(row: &Value, column: &str) -> Option<Uuid> {
    row.get(column)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// How one link of a level is fetched, built before any statement runs so that all links of a
/// level go to PostgreSQL together (pipelined on the one connection: one round trip per level).
enum Plan {
    /// No parent references anything: nothing to fetch.
    Empty,
    /// Linked rows by id (`= ANY`).
    Forward { sql: Sql, column: &'static str },
    /// A count of linked rows per parent.
    ReverseCount { sql: Sql },
    /// A top-N page of linked rows per parent (`LATERAL`).
    Reverse {
        sql: Sql,
        limit: i64,
        reversed: bool,
    },
}

impl Plan {
    fn sql(&self) -> Option<&Sql> {
        match self {
            Self::Empty => None,
            Self::Forward { sql, .. } | Self::ReverseCount { sql } | Self::Reverse { sql, .. } => {
                Some(sql)
            }
        }
    }
}

/// Builds the statement for one link of `node` over all `rows`.
fn plan_link(
    rows: &[Value],
    link: &crate::model::Link,
    target: &'static Namespace,
    child: &Node,
    scope: Scope,
) -> Result<Plan, QueryError> {
    let mut sql = Sql::default();
    let alias = sql.alias();
    let scoped = scope_sql(&mut sql, target, &alias, scope);
    let filter = match &child.params.filter {
        Some(f) => filter_sql(&mut sql, f, target, &alias, scope)?,
        None => "true".to_owned(),
    };
    Ok(match link.join {
        Join::Forward { column } => {
            let mut ids: Vec<Uuid> = rows.iter().filter_map(|r| row_uuid(r, column)).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                return Ok(Plan::Empty);
            }
            let p = sql.bind(Box::new(ids));
            sql.text = format!(
                "SELECT row_to_json({alias}) FROM talkwai.{} {alias} WHERE {alias}.id = ANY({p}) AND {scoped} AND {filter}",
                target.table
            );
            Plan::Forward { sql, column }
        }
        Join::Reverse { column } => {
            let parents: Vec<Uuid> = rows.iter().filter_map(|r| row_uuid(r, "id")).collect();
            if parents.is_empty() {
                return Ok(Plan::Empty);
            }
            let p = sql.bind(Box::new(parents));
            if child.params.count {
                sql.text = format!(
                    "SELECT p.id::text, (SELECT count(*) FROM talkwai.{} {alias}
                       WHERE {alias}.{column} = p.id AND {scoped} AND {filter})
                     FROM unnest({p}::uuid[]) AS p(id)",
                    target.table
                );
                return Ok(Plan::ReverseCount { sql });
            }
            let (keyset, order, limit, offset, reversed) = paging_sql(&mut sql, child, &alias)?;
            sql.text = format!(
                "SELECT p.id::text, row_to_json(c) FROM unnest({p}::uuid[]) AS p(id)
                 CROSS JOIN LATERAL (
                    SELECT {alias}.* FROM talkwai.{} {alias}
                    WHERE {alias}.{column} = p.id AND {scoped} AND {filter}{keyset}
                    ORDER BY {order} LIMIT {} OFFSET {offset}
                 ) c",
                target.table,
                limit + 1
            );
            Plan::Reverse {
                sql,
                limit,
                reversed,
            }
        }
    })
}

/// Resolves every link of `node` for all `rows` at once, recursively: the statements of all
/// links of a level are sent together, then each link's children resolve their own links.
#[allow(clippy::too_many_arguments)]
fn attach_links<'a, C: deadpool_postgres::GenericClient + Sync>(
    client: &'a C,
    rows: &'a [Value],
    shaped: &'a mut [Map<String, Value>],
    namespace: &'static Namespace,
    node: &'a Node,
    scope: Scope,
    budget: &'a mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), QueryError>> + Send + 'a>> {
    Box::pin(async move {
        let _ = namespace;
        let plans = node
            .links
            .iter()
            .map(|(_, link, target, child)| plan_link(rows, link, target, child, scope))
            .collect::<Result<Vec<Plan>, QueryError>>()?;
        let fetched = futures::future::try_join_all(plans.iter().map(|plan| async move {
            match plan.sql() {
                Some(sql) => fetch(client, sql).await,
                None => Ok(Vec::new()),
            }
        }))
        .await?;
        for ((label, link, target, child), (plan, result)) in
            node.links.iter().zip(plans.into_iter().zip(fetched))
        {
            match plan {
                Plan::Empty => {
                    // A forward link with no ids is null on every row; a reverse link with no
                    // parents has no rows to attach to.
                    if matches!(link.join, Join::Forward { .. }) {
                        for out in shaped.iter_mut() {
                            out.insert(label.clone(), Value::Null);
                        }
                    }
                }
                Plan::Forward { column, .. } => {
                    let found: Vec<Value> = result.iter().map(|r| r.get(0)).collect();
                    spend(budget, found.len())?;
                    let mut children: Vec<Map<String, Value>> =
                        found.iter().map(|r| shape(r, target, child)).collect();
                    attach_links(client, &found, &mut children, target, child, scope, budget)
                        .await?;
                    let by_id: HashMap<Uuid, Map<String, Value>> = found
                        .iter()
                        .zip(children)
                        .filter_map(|(raw, shaped)| row_uuid(raw, "id").map(|id| (id, shaped)))
                        .collect();
                    for (row, out) in rows.iter().zip(shaped.iter_mut()) {
                        let value = row_uuid(row, column)
                            .and_then(|id| by_id.get(&id).cloned())
                            .map_or(Value::Null, Value::Object);
                        out.insert(label.clone(), value);
                    }
                }
                Plan::ReverseCount { .. } => {
                    let counts: HashMap<String, i64> =
                        result.iter().map(|r| (r.get(0), r.get(1))).collect();
                    for (row, out) in rows.iter().zip(shaped.iter_mut()) {
                        let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
                        out.insert(
                            label.clone(),
                            json!({ "count": counts.get(id).copied().unwrap_or(0) }),
                        );
                    }
                }
                Plan::Reverse {
                    limit, reversed, ..
                } => {
                    let mut grouped: HashMap<String, Vec<Value>> = HashMap::new();
                    for r in &result {
                        grouped.entry(r.get(0)).or_default().push(r.get(1));
                    }
                    // Settle each parent's page, then resolve grandchildren for all at once.
                    let mut all_rows = Vec::new();
                    let mut spans = Vec::new();
                    let mut infos = Vec::new();
                    for row in rows {
                        let id = row
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let (page, more) =
                            settle(grouped.remove(&id).unwrap_or_default(), limit, reversed);
                        infos.push(page_info(child, &page, more));
                        let start = all_rows.len();
                        all_rows.extend(page);
                        spans.push(start..all_rows.len());
                    }
                    spend(budget, all_rows.len())?;
                    let mut children: Vec<Map<String, Value>> =
                        all_rows.iter().map(|r| shape(r, target, child)).collect();
                    attach_links(
                        client,
                        &all_rows,
                        &mut children,
                        target,
                        child,
                        scope,
                        budget,
                    )
                    .await?;
                    let cursor_mode = !matches!(child.params.page, Page::Offset { .. });
                    for ((out, span), info) in shaped.iter_mut().zip(spans).zip(infos) {
                        let list: Vec<Value> =
                            children[span].iter().cloned().map(Value::Object).collect();
                        out.insert(label.clone(), Value::Array(list));
                        if cursor_mode {
                            let entry = out.entry("$pageInfo").or_insert_with(|| json!({}));
                            if let Value::Object(map) = entry {
                                map.insert(label.clone(), info);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    })
}
