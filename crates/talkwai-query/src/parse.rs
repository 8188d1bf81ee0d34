//! Parsing the InstaQL shape into a typed query, with an error that names the offending path.

use serde_json::{Map, Value};

use crate::error::QueryError;
use crate::model::{self, Field, FieldType, Join, Link, Namespace};

/// Deepest nesting of links.
pub const MAX_DEPTH: usize = 4;
/// Largest page. A level without `limit`/`first`/`last` has no page size: it returns every
/// matching row, as InstaQL does, within the answer's row cap (`exec`).
pub const MAX_LIMIT: i64 = 1000;

/// A whole query: top-level namespaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Namespaces requested, in request order: (key as written, namespace, node).
    pub roots: Vec<(String, &'static Namespace, Node)>,
}

/// One level of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `$` parameters.
    pub params: Params,
    /// Linked levels: (label, link, target namespace, node).
    pub links: Vec<(String, &'static Link, &'static Namespace, Node)>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// Paging. A page size of `None` means every row (no default limit, as in InstaQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// `limit`/`offset`.
    Offset {
        /// Rows; `None`: all.
        limit: Option<i64>,
        /// Skipped rows.
        offset: i64,
    },
    /// `first`/`after`: the next `first` rows after the cursor.
    Forward {
        /// Rows; `None`: all after the cursor.
        first: Option<i64>,
        /// Cursor.
        after: Option<Cursor>,
    },
    /// `last`/`before`: the `last` rows before the cursor.
    Backward {
        /// Rows; `None`: all before the cursor.
        last: Option<i64>,
        /// Cursor.
        before: Option<Cursor>,
    },
}

impl Page {
    /// The page size asked for; `None`: every row.
    pub fn size(&self) -> Option<i64> {
        match self {
            Self::Offset { limit, .. } => *limit,
            Self::Forward { first, .. } => *first,
            Self::Backward { last, .. } => *last,
        }
    }
}

/// A position in an ordering: the order field's value and the row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The order field's value, as JSON.
    pub value: Value,
    /// The row id.
    pub id: uuid::Uuid,
}

/// The `$` of a level.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Filter.
    pub filter: Option<Filter>,
    /// Order field and direction (default `createdAt` ascending).
    pub order: (&'static Field, Dir),
    /// Paging.
    pub page: Page,
    /// Fields to return (all when `None`).
    pub fields: Option<Vec<&'static Field>>,
    /// `aggregate: "count"`.
    pub count: bool,
}

/// A `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// All hold.
    And(Vec<Filter>),
    /// One holds.
    Or(Vec<Filter>),
    /// A condition on a field, possibly through links ("has a linked entity that matches").
    Cond {
        /// Links followed from the level's namespace.
        path: Vec<&'static Link>,
        /// The field, on the last namespace of the path.
        field: &'static Field,
        /// The test.
        op: Op,
    },
}

/// A test on a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Equal.
    Eq(Value),
    /// One of.
    In(Vec<Value>),
    /// Not equal (also true for NULL, as in InstaQL).
    Not(Value),
    /// Is (or is not) NULL.
    IsNull(bool),
    /// Greater than.
    Gt(Value),
    /// Greater or equal.
    Gte(Value),
    /// Less than.
    Lt(Value),
    /// Less or equal.
    Lte(Value),
    /// SQL LIKE.
    Like(String),
    /// Case-insensitive LIKE.
    ILike(String),
}

/// Who is asking, for link and namespace checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A member: tenant-scoped, no admin or `$users` data.
    Member,
    /// An admin or the platform token.
    Admin,
}

fn err(path: &str, message: impl Into<String>) -> QueryError {
    QueryError::invalid(path, message)
}

/// Parses a query object.
pub fn parse(value: &Value, audience: Audience) -> Result<Query, QueryError> {
    let object = value
        .as_object()
        .ok_or_else(|| err("", "a query is a JSON object of namespaces"))?;
    if object.is_empty() {
        return Err(err("", "a query names at least one namespace"));
    }
    let mut roots = Vec::new();
    for (key, node) in object {
        let namespace = model::namespace(key)
            .ok_or_else(|| QueryError::unknown(key, format!("unknown namespace {key}")))?;
        if audience == Audience::Member && namespace.tenant_column.is_none() {
            return Err(QueryError::forbidden(
                key,
                format!("members may not query {key}"),
            ));
        }
        roots.push((
            key.clone(),
            namespace,
            parse_node(node, namespace, key, 1, audience)?,
        ));
    }
    Ok(Query { roots })
}

fn parse_node(
    value: &Value,
    namespace: &'static Namespace,
    path: &str,
    depth: usize,
    audience: Audience,
) -> Result<Node, QueryError> {
    if depth > MAX_DEPTH {
        return Err(err(
            path,
            format!("queries nest at most {MAX_DEPTH} levels"),
        ));
    }
    let object = value
        .as_object()
        .ok_or_else(|| err(path, "each level is a JSON object"))?;
    let mut params = None;
    let mut links = Vec::new();
    for (key, child) in object {
        if key == "$" {
            params = Some(parse_params(child, namespace, &format!("{path}.$"))?);
            continue;
        }
        let child_path = format!("{path}.{key}");
        let link = namespace.link(key).ok_or_else(|| {
            QueryError::unknown(&child_path, format!("{} has no link {key}", namespace.name))
        })?;
        if audience == Audience::Member && !link.members_may_follow {
            return Err(QueryError::forbidden(
                &child_path,
                format!("members may not follow {key}"),
            ));
        }
        let target = Namespace::target(link);
        links.push((
            key.clone(),
            link,
            target,
            parse_node(child, target, &child_path, depth + 1, audience)?,
        ));
    }
    let params = match params {
        Some(p) => p,
        None => default_params(namespace),
    };
    Ok(Node { params, links })
}

fn created_at(namespace: &'static Namespace) -> &'static Field {
    namespace.field("createdAt").unwrap_or(&namespace.fields[0])
}

fn default_params(namespace: &'static Namespace) -> Params {
    Params {
        filter: None,
        order: (created_at(namespace), Dir::Asc),
        page: Page::Offset {
            limit: None,
            offset: 0,
        },
        fields: None,
        count: false,
    }
}

fn int(value: &Value, path: &str, min: i64, max: i64) -> Result<i64, QueryError> {
    value
        .as_i64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| err(path, format!("must be an integer from {min} to {max}")))
}

fn parse_params(
    value: &Value,
    namespace: &'static Namespace,
    path: &str,
) -> Result<Params, QueryError> {
    let object = value
        .as_object()
        .ok_or_else(|| err(path, "`$` is a JSON object"))?;
    let mut params = default_params(namespace);
    let mut limit = None;
    let mut offset = None;
    let mut first = None;
    let mut last = None;
    let mut after = None;
    let mut before = None;
    for (key, v) in object {
        let p = format!("{path}.{key}");
        match key.as_str() {
            "where" => params.filter = Some(parse_where(v, namespace, &p)?),
            "order" => {
                let map = v.as_object().filter(|m| m.len() == 1).ok_or_else(|| {
                    err(
                        &p,
                        "order names exactly one field: {\"createdAt\": \"desc\"}",
                    )
                })?;
                let (name, dir) = map.iter().next().ok_or_else(|| err(&p, "empty order"))?;
                let field = namespace.field(name).ok_or_else(|| {
                    QueryError::unknown(&p, format!("{} has no field {name}", namespace.name))
                })?;
                if !field.indexed || !field.not_null {
                    return Err(QueryError::not_indexed(
                        &p,
                        format!("cannot order by {name}: no index"),
                    ));
                }
                let dir = match dir.as_str() {
                    Some("asc") => Dir::Asc,
                    Some("desc") => Dir::Desc,
                    _ => return Err(err(&p, "direction is \"asc\" or \"desc\"")),
                };
                params.order = (field, dir);
            }
            "limit" => limit = Some(int(v, &p, 0, MAX_LIMIT)?),
            "offset" => offset = Some(int(v, &p, 0, 100_000)?),
            "first" => first = Some(int(v, &p, 0, MAX_LIMIT)?),
            "last" => last = Some(int(v, &p, 0, MAX_LIMIT)?),
            "after" => after = Some(decode_cursor(v, &p)?),
            "before" => before = Some(decode_cursor(v, &p)?),
            "fields" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| err(&p, "fields is a list of field names"))?;
                let mut fields = Vec::new();
                for name in list {
                    let name = name
                        .as_str()
                        .ok_or_else(|| err(&p, "field names are strings"))?;
                    fields.push(namespace.field(name).ok_or_else(|| {
                        QueryError::unknown(&p, format!("{} has no field {name}", namespace.name))
                    })?);
                }
                params.fields = Some(fields);
            }
            "aggregate" => match v.as_str() {
                Some("count") => params.count = true,
                _ => return Err(err(&p, "the only aggregate is \"count\"")),
            },
            other => {
                return Err(QueryError::unknown(
                    &p,
                    format!("unknown parameter {other}"),
                ));
            }
        }
    }
    let cursor_mode = first.is_some() || last.is_some() || after.is_some() || before.is_some();
    if cursor_mode && (limit.is_some() || offset.is_some()) {
        return Err(err(
            path,
            "use limit/offset or first/after/last/before, not both",
        ));
    }
    params.page = match (first, after, last, before) {
        (None, None, None, None) => Page::Offset {
            limit,
            offset: offset.unwrap_or(0),
        },
        (first, after, None, None) => Page::Forward { first, after },
        (None, None, last, before) => Page::Backward { last, before },
        _ => return Err(err(path, "use first/after or last/before, not both")),
    };
    Ok(params)
}

/// Cursors are opaque to clients: base64 of `[value, id]`.
pub fn encode_cursor(value: &Value, id: &uuid::Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::json!([value, id]).to_string().as_bytes())
}

fn decode_cursor(value: &Value, path: &str) -> Result<Cursor, QueryError> {
    use base64::Engine;
    let text = value
        .as_str()
        .ok_or_else(|| err(path, "a cursor is a string"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| err(path, "malformed cursor"))?;
    let parsed: (Value, uuid::Uuid) =
        serde_json::from_slice(&bytes).map_err(|_| err(path, "malformed cursor"))?;
    Ok(Cursor {
        value: parsed.0,
        id: parsed.1,
    })
}

fn parse_where(
    value: &Value,
    namespace: &'static Namespace,
    path: &str,
) -> Result<Filter, QueryError> {
    let object = value
        .as_object()
        .ok_or_else(|| err(path, "where is a JSON object"))?;
    let mut all = Vec::new();
    for (key, v) in object {
        let p = format!("{path}.{key}");
        match key.as_str() {
            "and" | "or" => {
                let list = v.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
                    err(&p, format!("{key} is a non-empty list of where clauses"))
                })?;
                let parts = list
                    .iter()
                    .enumerate()
                    .map(|(i, c)| parse_where(c, namespace, &format!("{p}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "and" {
                    Filter::And(parts)
                } else {
                    Filter::Or(parts)
                });
            }
            _ => all.push(parse_cond(key, v, namespace, &p)?),
        }
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Filter::And(all)
    })
}

fn parse_cond(
    key: &str,
    value: &Value,
    namespace: &'static Namespace,
    path: &str,
) -> Result<Filter, QueryError> {
    let mut segments: Vec<&str> = key.split('.').collect();
    let field_name = segments.pop().unwrap_or_default();
    let mut current = namespace;
    let mut links = Vec::new();
    if segments.len() > MAX_DEPTH {
        return Err(err(path, format!("paths follow at most {MAX_DEPTH} links")));
    }
    for segment in segments {
        let link = current.link(segment).ok_or_else(|| {
            QueryError::unknown(path, format!("{} has no link {segment}", current.name))
        })?;
        links.push(link);
        current = Namespace::target(link);
    }
    // A bare link name means its id: {"assignedTo": "<uuid>"}.
    let field = match current.field(field_name) {
        Some(field) => field,
        None => match current.link(field_name) {
            Some(link) => {
                links.push(link);
                current = Namespace::target(link);
                current.field("id").unwrap_or(&current.fields[0])
            }
            None => {
                return Err(QueryError::unknown(
                    path,
                    format!("{} has no field or link {field_name}", current.name),
                ));
            }
        },
    };
    let op = parse_op(value, field, path)?;
    Ok(Filter::Cond {
        path: links,
        field,
        op,
    })
}

fn check_value(value: &Value, field: &Field, path: &str) -> Result<Value, QueryError> {
    let ok = match field.ty {
        FieldType::Uuid => value
            .as_str()
            .is_some_and(|s| s.parse::<uuid::Uuid>().is_ok()),
        FieldType::Text => value.is_string(),
        FieldType::Millis => value.is_i64(),
        FieldType::Json => false,
        FieldType::Bool => value.is_boolean(),
    };
    if ok {
        Ok(value.clone())
    } else {
        let expected = match field.ty {
            FieldType::Uuid => "a UUID string",
            FieldType::Text => "a string",
            FieldType::Millis => "an integer (epoch milliseconds)",
            FieldType::Json => "only {\"$isNull\": true | false}",
            FieldType::Bool => "true or false",
        };
        Err(err(path, format!("{} takes {expected}", field.name)))
    }
}

fn parse_op(value: &Value, field: &'static Field, path: &str) -> Result<Op, QueryError> {
    let Some(object) = value
        .as_object()
        .filter(|o| o.keys().any(|k| k.starts_with('$')))
    else {
        return Ok(Op::Eq(check_value(value, field, path)?));
    };
    if object.len() != 1 {
        return Err(err(path, "one operator per condition; combine with and/or"));
    }
    let (op, arg) = object
        .iter()
        .next()
        .ok_or_else(|| err(path, "empty operator"))?;
    let p = format!("{path}.{op}");
    let ranged = |arg: &Value| -> Result<Value, QueryError> {
        if !field.indexed {
            return Err(QueryError::not_indexed(
                &p,
                format!("{op} needs an index on {}", field.name),
            ));
        }
        check_value(arg, field, &p)
    };
    Ok(match op.as_str() {
        "$in" => {
            let list = arg
                .as_array()
                .filter(|l| l.len() <= 1000)
                .ok_or_else(|| err(&p, "$in takes a list of at most 1000 values"))?;
            Op::In(
                list.iter()
                    .map(|v| check_value(v, field, &p))
                    .collect::<Result<_, _>>()?,
            )
        }
        "$not" => Op::Not(check_value(arg, field, &p)?),
        "$isNull" => Op::IsNull(
            arg.as_bool()
                .ok_or_else(|| err(&p, "$isNull takes true or false"))?,
        ),
        "$gt" => Op::Gt(ranged(arg)?),
        "$gte" => Op::Gte(ranged(arg)?),
        "$lt" => Op::Lt(ranged(arg)?),
        "$lte" => Op::Lte(ranged(arg)?),
        "$like" | "$ilike" => {
            if field.ty != FieldType::Text {
                return Err(err(&p, format!("{op} applies to text fields")));
            }
            if !field.indexed {
                return Err(QueryError::not_indexed(
                    &p,
                    format!("{op} needs an index on {}", field.name),
                ));
            }
            let pattern = arg
                .as_str()
                .ok_or_else(|| err(&p, format!("{op} takes a string")))?
                .to_owned();
            if op == "$like" {
                Op::Like(pattern)
            } else {
                Op::ILike(pattern)
            }
        }
        other => return Err(QueryError::unknown(&p, format!("unknown operator {other}"))),
    })
}

/// Whether a link's answer is a single object (many-to-one) rather than a list.
pub fn is_one(link: &Link) -> bool {
    matches!(link.join, Join::Forward { .. })
}

/// The `$` object's keys, for documentation and tests.
pub fn known_params() -> &'static [&'static str] {
    &[
        "where",
        "order",
        "limit",
        "offset",
        "first",
        "after",
        "last",
        "before",
        "fields",
        "aggregate",
    ]
}

/// Helper used by tests: a map from a JSON literal.
pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}
