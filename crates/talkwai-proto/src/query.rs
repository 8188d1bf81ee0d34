//! Query messages: the InstaQL-shaped request on `talkwai.qry.<scope>` (and
//! `talkwai.qry.<scope>.subscribe`), its replies, and the live-query updates and control
//! messages. These types are the contract of the query API (`talkwai-query`), which answers with
//! exactly these shapes; the contract tests validate its real replies against their schemas.
//!
//! Namespaces, fields, links and operators are checked by the query service (a typed
//! `validation_failed` names the path); the schemas describe the structure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{ErrorBody, False, True};

/// A query request: the query itself, or the query with a read-your-writes sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum QueryRequest {
    /// `{"query": {...}, "minSeq": n}`: wait (at most 5 s) until the read models applied `minSeq`.
    WithOptions(QueryWithOptions),
    /// The query alone.
    Query(Query),
}

/// A query with options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryWithOptions {
    /// The query.
    pub query: Query,
    /// A command reply's `seq`: the answer reflects at least that event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_seq: Option<u64>,
}

/// An InstaQL-shaped query: namespaces at the top (`tenants`, `members`, `agents`, `tasks`;
/// `admins` and `$users` for admins), each a [`QueryLevel`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("minProperties" = 1))]
pub struct Query(pub BTreeMap<String, QueryLevel>);

/// One level of a query: `$` (filter, order, paging, fields) and the links to follow, each a
/// nested level (`{"agent": {}, "assignedTo": {}}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct QueryLevel {
    /// Filter, order, paging, fields and aggregate of this level.
    #[serde(rename = "$", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "QueryParams")]
    pub params: Option<QueryParams>,
    /// Links to follow, by link name.
    #[serde(flatten)]
    pub links: BTreeMap<String, QueryLevel>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// An aggregate instead of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Aggregate {
    /// `{"count": n}` in place of the rows.
    Count,
}

/// The `$` of a level. Use `limit`/`offset` or the cursors (`first`/`after`, `last`/`before`),
/// not both.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParams {
    /// Field (or dotted link path) to a value or one operator (`$in`, `$not`, `$isNull`, `$gt`,
    /// `$gte`, `$lt`, `$lte`, `$like`, `$ilike`); `and`/`or` take lists of such objects.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Map<String, Value>")]
    pub filter: Option<Map<String, Value>>,
    /// One indexed field and its direction (`{"createdAt": "desc"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
    #[schemars(with = "BTreeMap<String, Direction>")]
    pub order: Option<BTreeMap<String, Direction>>,
    /// Rows per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub limit: Option<u32>,
    /// Rows skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub offset: Option<u32>,
    /// Rows after `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub first: Option<u32>,
    /// A cursor from `pageInfo.endCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub after: Option<String>,
    /// Rows before `before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub last: Option<u32>,
    /// A cursor from `pageInfo.startCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub before: Option<String>,
    /// The fields to return (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub fields: Option<Vec<String>>,
    /// Count instead of rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Aggregate")]
    pub aggregate: Option<Aggregate>,
}

/// One page's position, for cursor paging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PageInfo {
    /// Cursor of the first row (`null` for an empty page).
    pub start_cursor: Option<String>,
    /// Cursor of the last row (`null` for an empty page).
    pub end_cursor: Option<String>,
    /// Whether rows follow this page.
    pub has_next_page: bool,
    /// Whether rows precede this page.
    pub has_previous_page: bool,
}

/// A count, in place of rows, for `aggregate: "count"` (and a link level asking for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// The number of matching rows.
    pub count: u64,
}

/// What a namespace (or a many-link) answers: rows or a count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Rows {
    /// The rows, each the entity's fields (camelCase, as in the seed) and the links asked for:
    /// a one-link is an object or `null`, a many-link a list (or a count); a row whose
    /// many-links page with cursors carries `$pageInfo` by link name. The erased marker:
    /// members, admins, `$users` and tasks have a boolean field `erased`; when it is `true` their
    /// personal fields (`firstName`, `lastName`, `email`, `phone`; a user's `email`; a task's
    /// `fromAddress`, `toAddress`, `subject`, `content`, `outcomeSummary` and `outcome.summary`)
    /// are `null` for good, while ids, links, enums and timestamps stay.
    Rows(Vec<Map<String, Value>>),
    /// `aggregate: "count"`.
    Count(Count),
}

/// An answer: the data with the query's nesting and the top level's page facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryAnswer {
    /// Rows by namespace, as named in the query.
    pub data: BTreeMap<String, Rows>,
    /// Page facts by namespace (none for a count).
    pub page_info: BTreeMap<String, PageInfo>,
    /// The projection checkpoint the answer was read at (an event-stream sequence).
    pub seq: u64,
}

/// The reply to a query: `{"ok": true, "data", "pageInfo", "seq"}` or
/// `{"ok": false, "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum QueryReply {
    /// Answered.
    #[schemars(extend("additionalProperties" = false))]
    Answered {
        /// Always `true`.
        ok: True,
        /// The answer.
        #[serde(flatten)]
        answer: QueryAnswer,
    },
    /// Refused.
    #[schemars(extend("additionalProperties" = false))]
    Rejected {
        /// Always `false`.
        ok: False,
        /// Why.
        error: ErrorBody,
    },
}

/// A started live query: the first answer and where its updates go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscribed {
    /// The subscription id.
    pub subscription: Uuid,
    /// Where changed answers are published (`talkwai.qry.<scope>.live.<subscription>`):
    /// subscribe to it.
    pub subject: String,
    /// Where `renew` and `unsubscribe` go (`talkwai.qry.<scope>.live.<subscription>.ctl`).
    pub control: String,
    /// The subscription expires this long (ms) after the last renewal: renew every `ttlMs`/2.
    pub ttl_ms: u64,
    /// The first answer: rows by namespace.
    pub data: BTreeMap<String, Rows>,
    /// Page facts by namespace.
    pub page_info: BTreeMap<String, PageInfo>,
    /// The checkpoint the first answer was read at.
    pub seq: u64,
}

/// The reply to `talkwai.qry.<scope>.subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SubscribeReply {
    /// Subscribed.
    #[schemars(extend("additionalProperties" = false))]
    Subscribed {
        /// Always `true`.
        ok: True,
        /// The subscription and its first answer.
        #[serde(flatten)]
        subscribed: Subscribed,
    },
    /// Refused.
    #[schemars(extend("additionalProperties" = false))]
    Rejected {
        /// Always `false`.
        ok: False,
        /// Why.
        error: ErrorBody,
    },
}

/// A changed answer of a live query, on its `subject`: published whenever the projection
/// committed and the answer differs from the last one sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveAnswer {
    /// The subscription.
    pub subscription: Uuid,
    /// Always `true`.
    pub ok: True,
    /// Rows by namespace.
    pub data: BTreeMap<String, Rows>,
    /// Page facts by namespace.
    pub page_info: BTreeMap<String, PageInfo>,
    /// The checkpoint the answer was read at: increasing, drop an older one.
    pub seq: u64,
}

/// A live answer that can no longer be sent: it grew past the row cap (`too_many_rows`). The
/// subscription stays; the next answer that fits is published again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveRefusal {
    /// The subscription.
    pub subscription: Uuid,
    /// Always `false`.
    pub ok: False,
    /// Why.
    pub error: ErrorBody,
    /// The checkpoint the answer was read at.
    pub seq: u64,
}

/// A message on a live query's `subject`: a changed answer, or why it cannot be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LiveUpdate {
    /// The changed answer.
    Answer(LiveAnswer),
    /// The answer is over the row cap.
    Refused(LiveRefusal),
}

/// What a live-query control request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LiveOp {
    /// Keep the subscription for another TTL.
    Renew,
    /// End it.
    Unsubscribe,
}

/// A control request on a live query's `control` subject. Only the instance holding the
/// subscription answers; no answer means the subscription is gone (subscribe again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveControl {
    /// `renew` or `unsubscribe`.
    pub op: LiveOp,
}

/// The reply to a control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LiveControlReply {
    /// Done.
    #[schemars(extend("additionalProperties" = false))]
    Done {
        /// Always `true`.
        ok: True,
        /// After `renew`: the new TTL, ms.
        #[serde(rename = "ttlMs", default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Refused (an unknown `op`).
    #[schemars(extend("additionalProperties" = false))]
    Rejected {
        /// Always `false`.
        ok: False,
        /// Why.
        error: ErrorBody,
    },
}
