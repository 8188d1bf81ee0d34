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

/// Most rows one answer holds over all its levels unless the service sets another cap
/// (`QueryService::with_max_rows`, `TALKWAI_QUERY_MAX_ROWS`).
pub const DEFAULT_MAX_ROWS: usize = 10_000;

/// What is left of the answer's row cap. A level fetches at most one row more than it may
/// keep, so going over the cap shows without a separate count, and is refused with
/// `too_many_rows`: an answer is never cut short silently.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// The cap, for the error message.
    cap: usize,
    /// Rows the answer may still take.
    left: usize,
}

impl Budget {
    /// Rows to fetch for a page of `size` rows (`None`: every row): one more than the page or
    /// the cap allows, to tell a next page, or an answer over the cap, from the last row.
    fn window(&self, size: Option<i64>) -> usize {
        let size = size.and_then(|s| usize::try_from(s).ok());
        size.map_or(self.left, |s| s.min(self.left)) + 1
    }

    /// Takes `rows` rows for the level at `path`; refuses when they pass the cap.
    fn spend(&mut self, rows: usize, path: &str) -> Result<(), QueryError> {
        if rows > self.left {
            return Err(QueryError::too_many_rows(path, self.cap));
        }
        self.left -= rows;
        Ok(())
    }
}

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
        FieldType::Bool => Box::new(value.as_bool().ok_or_else(bad)?),
        // The parser lets only `$isNull` through for JSON fields, which binds nothing.
        FieldType::Json => return Err(bad()),
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
        FieldType::Bool => Box::new(
            values
                .iter()
                .map(|v| v.as_bool().ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        FieldType::Json => return Err(bad()),
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

/// Whether `filter` admits at most one row: it requires the level's own `id` (the primary key)
/// to equal one value, alone or as a part of an `And`.
fn pins_id(filter: Option<&Filter>) -> bool {
    match filter {
        Some(Filter::Cond {
            path,
            field,
            op: Op::Eq(_),
        }) => path.is_empty() && field.name == "id",
        Some(Filter::And(parts)) => parts.iter().any(|part| pins_id(Some(part))),
        _ => false,
    }
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

/// Keyset condition, ORDER BY, OFFSET and whether rows come in reverse (backward pages) for a
/// level; the page size is [`Page::size`].
fn paging_sql(
    sql: &mut Sql,
    node: &Node,
    alias: &str,
) -> Result<(String, String, i64, bool), QueryError> {
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
        Page::Offset { offset, .. } => (
            String::new(),
            format!("{col} {forward_dir}, {alias}.id {forward_dir}"),
            *offset,
            false,
        ),
        Page::Forward { after, .. } => {
            let cond = match after {
                Some(c) => keyset(sql, c, dir == Dir::Asc)?,
                None => String::new(),
            };
            (
                cond,
                format!("{col} {forward_dir}, {alias}.id {forward_dir}"),
                0,
                false,
            )
        }
        Page::Backward { before, .. } => {
            let cond = match before {
                Some(c) => keyset(sql, c, dir != Dir::Asc)?,
                None => String::new(),
            };
            (
                cond,
                format!("{col} {reverse_dir}, {alias}.id {reverse_dir}"),
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

/// Trims the extra row fetched to detect a next page (a page of `size`; `None` keeps every
/// row: whether they fit in the answer is [`Budget::spend`]'s call), and puts backward pages in
/// order.
fn settle(mut rows: Vec<Value>, size: Option<i64>, reversed: bool) -> (Vec<Value>, bool) {
    let mut more = false;
    if let Some(size) = size {
        let size = usize::try_from(size).unwrap_or(0);
        more = rows.len() > size;
        rows.truncate(size);
    }
    if reversed {
        rows.reverse();
    }
    (rows, more)
}

/// Runs a query; returns `data` and top-level `pageInfo`. Levels without a page size return
/// every matching row; an answer over `max_rows` rows (all levels together) is refused with
/// `too_many_rows`, never cut short.
pub async fn execute(
    client: &impl deadpool_postgres::GenericClient,
    query: &Query,
    scope: Scope,
    max_rows: usize,
) -> Result<(Value, Value), QueryError> {
    let mut data = Map::new();
    let mut infos = Map::new();
    let mut budget = Budget {
        cap: max_rows,
        left: max_rows,
    };
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
        let (keyset, order, offset, reversed) = paging_sql(&mut sql, node, &alias)?;
        let size = node.params.page.size();
        // At most one row: no order to ask for. Asked anyway, a plan made while the table was
        // still empty (and cached with the prepared statement) walks the tenant's ordered index
        // to find the id, every row of the tenant, instead of the primary key.
        let order = if pins_id(node.params.filter.as_ref()) {
            String::new()
        } else {
            format!(" ORDER BY {order}")
        };
        // The page is cut in a subquery and only its rows become JSON: with `row_to_json` in
        // the scan's target list, a plan that sorts (no index for the order or the filter)
        // would turn every matching row into JSON before the sort kept a page of them.
        sql.text = format!(
            "SELECT row_to_json({alias}) FROM (
                SELECT * FROM talkwai.{} {alias} WHERE {scoped} AND {filter}{keyset}
                {order} LIMIT {} OFFSET {offset}
             ) {alias}{order}",
            namespace.table,
            budget.window(size)
        );
        let rows: Vec<Value> = fetch(client, &sql)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (rows, more) = settle(rows, size, reversed);
        budget.spend(rows.len(), key)?;
        infos.insert(key.clone(), page_info(node, &rows, more));
        let mut shaped: Vec<Map<String, Value>> =
            rows.iter().map(|r| shape(r, namespace, node)).collect();
        attach_links(
            client,
            &rows,
            &mut shaped,
            Level {
                node,
                path: key,
                scope,
            },
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
    /// A page of linked rows per parent (`LATERAL`); `fetched_at_most` is the statement's
    /// overall `LIMIT`: reaching it means the rows pass the answer's cap.
    Reverse {
        sql: Sql,
        reversed: bool,
        fetched_at_most: usize,
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
    budget: Budget,
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
            let parent_count = parents.len();
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
            let (keyset, order, offset, reversed) = paging_sql(&mut sql, child, &alias)?;
            // Per parent: a page of `size` (+1 to tell a next page), or every row. The OFFSET,
            // even 0, keeps PostgreSQL from flattening the subquery, so each parent's rows come
            // in its ORDER BY. Over all parents: what the cap still allows, plus each parent's
            // extra row; reaching that many means the answer would pass the cap.
            let size = child.params.page.size();
            let (per_parent, extra) = match size {
                Some(size) => (format!(" LIMIT {}", size + 1), parent_count),
                None => (String::new(), 0),
            };
            let fetched_at_most = budget.left + extra + 1;
            sql.text = format!(
                "SELECT p.id::text, row_to_json(c) FROM unnest({p}::uuid[]) AS p(id)
                 CROSS JOIN LATERAL (
                    SELECT {alias}.* FROM talkwai.{} {alias}
                    WHERE {alias}.{column} = p.id AND {scoped} AND {filter}{keyset}
                    ORDER BY {order}{per_parent} OFFSET {offset}
                 ) c
                 LIMIT {fetched_at_most}",
                target.table,
            );
            Plan::Reverse {
                sql,
                reversed,
                fetched_at_most,
            }
        }
    })
}

/// The level whose links are being resolved: its query node, its path in the query (for
/// errors) and the caller's scope.
#[derive(Clone, Copy)]
struct Level<'a> {
    node: &'a Node,
    path: &'a str,
    scope: Scope,
}

/// Resolves every link of a level for all its `rows` at once, recursively: the statements of
/// all links of a level are sent together, then each link's children resolve their own links.
fn attach_links<'a, C: deadpool_postgres::GenericClient + Sync>(
    client: &'a C,
    rows: &'a [Value],
    shaped: &'a mut [Map<String, Value>],
    level: Level<'a>,
    budget: &'a mut Budget,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), QueryError>> + Send + 'a>> {
    Box::pin(async move {
        let Level { node, path, scope } = level;
        let plans = node
            .links
            .iter()
            .map(|(_, link, target, child)| plan_link(rows, link, target, child, scope, *budget))
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
            let child_path = format!("{path}.{label}");
            let child_level = Level {
                node: child,
                path: &child_path,
                scope,
            };
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
                    // At most one row per distinct id of the parents: bounded by the parents.
                    let found: Vec<Value> = result.iter().map(|r| r.get(0)).collect();
                    budget.spend(found.len(), &child_path)?;
                    let mut children: Vec<Map<String, Value>> =
                        found.iter().map(|r| shape(r, target, child)).collect();
                    attach_links(client, &found, &mut children, child_level, budget).await?;
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
                    reversed,
                    fetched_at_most,
                    ..
                } => {
                    // The statement stopped at its overall LIMIT: the rows pass the cap.
                    if result.len() >= fetched_at_most {
                        return Err(QueryError::too_many_rows(&child_path, budget.cap));
                    }
                    let size = child.params.page.size();
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
                            settle(grouped.remove(&id).unwrap_or_default(), size, reversed);
                        infos.push(page_info(child, &page, more));
                        let start = all_rows.len();
                        all_rows.extend(page);
                        spans.push(start..all_rows.len());
                    }
                    budget.spend(all_rows.len(), &child_path)?;
                    let mut children: Vec<Map<String, Value>> =
                        all_rows.iter().map(|r| shape(r, target, child)).collect();
                    attach_links(client, &all_rows, &mut children, child_level, budget).await?;
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
