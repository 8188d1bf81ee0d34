//! What can be queried: namespaces (the seed's entities), their fields with wire names, column
//! names, types and whether an index serves comparisons and ordering, and their links.

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A UUID.
    Uuid,
    /// Text (enums included).
    Text,
    /// Epoch milliseconds.
    Millis,
    /// A JSON object (a `jsonb` column), answered as an object; conditions may only test its
    /// presence (`$isNull`).
    Json,
    /// `true` or `false` (`erased`, the marker of an erased entity).
    Bool,
}

/// A queryable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Wire name (`createdAt`).
    pub name: &'static str,
    /// Column (`created_at`).
    pub column: &'static str,
    /// Value type.
    pub ty: FieldType,
    /// An index serves ordering, range comparisons and `$like` on it.
    pub indexed: bool,
    /// The column is never NULL (required for ordering and cursors).
    pub not_null: bool,
}

/// How a link joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// This row holds the target's id in `column` (many-to-one: the answer is one object).
    Forward {
        /// The foreign-key column on this row.
        column: &'static str,
    },
    /// The target rows hold this row's id in `column` (one-to-many: the answer is a list).
    Reverse {
        /// The foreign-key column on the target rows.
        column: &'static str,
    },
}

/// A link from one namespace to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Label (`tasks`, `assignedTo`).
    pub name: &'static str,
    /// Target namespace.
    pub target: &'static str,
    /// How it joins.
    pub join: Join,
    /// Members may follow it (links to admins and `$users` are for admins only).
    pub members_may_follow: bool,
}

/// A namespace (one read-model table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// Name in queries (`tasks`).
    pub name: &'static str,
    /// View in schema `talkwai`.
    pub table: &'static str,
    /// Fields.
    pub fields: &'static [Field],
    /// Links.
    pub links: &'static [Link],
    /// How tenant scope applies: the column holding the tenant id (`id` for tenants), or
    /// `None` for platform namespaces members may not read.
    pub tenant_column: Option<&'static str>,
}

const fn f(
    name: &'static str,
    column: &'static str,
    ty: FieldType,
    indexed: bool,
    not_null: bool,
) -> Field {
    Field {
        name,
        column,
        ty,
        indexed,
        not_null,
    }
}

use FieldType::{Bool, Json, Millis, Text, Uuid};

const fn fwd(
    name: &'static str,
    target: &'static str,
    column: &'static str,
    members: bool,
) -> Link {
    Link {
        name,
        target,
        join: Join::Forward { column },
        members_may_follow: members,
    }
}

const fn rev(
    name: &'static str,
    target: &'static str,
    column: &'static str,
    members: bool,
) -> Link {
    Link {
        name,
        target,
        join: Join::Reverse { column },
        members_may_follow: members,
    }
}

/// Every namespace.
pub const NAMESPACES: &[Namespace] = &[
    Namespace {
        name: "tenants",
        table: "tenants",
        fields: &[
            f("id", "id", Uuid, true, true),
            f("name", "name", Text, false, true),
            f("domain", "domain", Text, false, false),
            f("status", "status", Text, false, true),
            f("createdAt", "created_at", Millis, true, true),
            f("updatedAt", "updated_at", Millis, false, true),
        ],
        links: &[
            rev("members", "members", "tenant_id", true),
            rev("agents", "agents", "tenant_id", true),
            rev("tasks", "tasks", "tenant_id", true),
        ],
        tenant_column: Some("id"),
    },
    Namespace {
        name: "members",
        table: "members",
        fields: &[
            f("id", "id", Uuid, true, true),
            f("firstName", "first_name", Text, false, false),
            f("lastName", "last_name", Text, false, false),
            f("email", "email", Text, true, false),
            f("phone", "phone", Text, false, false),
            f("role", "role", Text, false, true),
            f("status", "status", Text, true, true),
            f("createdAt", "created_at", Millis, true, true),
            f("updatedAt", "updated_at", Millis, false, true),
            f("erased", "erased", Bool, false, true),
        ],
        links: &[
            fwd("tenant", "tenants", "tenant_id", true),
            fwd("user", "users", "user_id", false),
            rev("tasks", "tasks", "assigned_to", true),
            rev("assignedTasks", "tasks", "assigned_to", true),
            rev("createdTasks", "tasks", "created_by", true),
        ],
        tenant_column: Some("tenant_id"),
    },
    Namespace {
        name: "admins",
        table: "admins",
        fields: &[
            f("id", "id", Uuid, true, true),
            f("firstName", "first_name", Text, false, false),
            f("lastName", "last_name", Text, false, false),
            f("email", "email", Text, true, false),
            f("role", "role", Text, false, true),
            f("permissions", "permissions", Text, false, true),
            f("status", "status", Text, false, true),
            f("createdAt", "created_at", Millis, true, true),
            f("updatedAt", "updated_at", Millis, false, true),
            f("erased", "erased", Bool, false, true),
        ],
        links: &[
            fwd("user", "users", "user_id", false),
            rev("createdTasks", "tasks", "created_by_admin", false),
        ],
        tenant_column: None,
    },
    Namespace {
        name: "agents",
        table: "agents",
        fields: &[
            f("id", "id", Uuid, true, true),
            f("name", "name", Text, false, true),
            f("description", "description", Text, false, false),
            f("type", "type", Text, true, true),
            f("configuration", "configuration", Text, false, true),
            f("status", "status", Text, false, true),
            f("createdAt", "created_at", Millis, true, true),
            f("updatedAt", "updated_at", Millis, false, true),
        ],
        links: &[
            fwd("tenant", "tenants", "tenant_id", true),
            rev("tasks", "tasks", "agent_id", true),
        ],
        tenant_column: Some("tenant_id"),
    },
    Namespace {
        name: "tasks",
        table: "tasks",
        fields: &[
            f("id", "id", Uuid, true, true),
            f("type", "type", Text, false, true),
            f("status", "status", Text, true, true),
            f("priority", "priority", Text, false, true),
            f("fromAddress", "from_address", Text, false, false),
            f("toAddress", "to_address", Text, false, false),
            f("subject", "subject", Text, false, false),
            f("content", "content", Text, false, false),
            f("metadata", "metadata", Text, false, false),
            f("scheduledAt", "scheduled_at", Millis, false, false),
            f("startedAt", "started_at", Millis, false, false),
            f("completedAt", "completed_at", Millis, false, false),
            f("createdAt", "created_at", Millis, true, true),
            f("updatedAt", "updated_at", Millis, false, true),
            f("outcome", "outcome", Json, false, false),
            f("outcomeSummary", "outcome_summary", Text, true, false),
            f("erased", "erased", Bool, false, true),
        ],
        links: &[
            fwd("tenant", "tenants", "tenant_id", true),
            fwd("agent", "agents", "agent_id", true),
            fwd("assignedTo", "members", "assigned_to", true),
            fwd("createdBy", "members", "created_by", true),
            fwd("createdByAdmin", "admins", "created_by_admin", false),
        ],
        tenant_column: Some("tenant_id"),
    },
    Namespace {
        name: "users",
        table: "users",
        fields: &[
            f("id", "id", Uuid, true, true),
            f("email", "email", Text, true, false),
            f("createdAt", "created_at", Millis, true, true),
            f("updatedAt", "updated_at", Millis, false, true),
            f("erased", "erased", Bool, false, true),
        ],
        links: &[
            rev("member", "members", "user_id", false),
            rev("admin", "admins", "user_id", false),
        ],
        tenant_column: None,
    },
];

/// Aliases accepted for namespaces (`$users` as in InstantDB).
pub fn namespace(name: &str) -> Option<&'static Namespace> {
    let name = if name == "$users" { "users" } else { name };
    NAMESPACES.iter().find(|n| n.name == name)
}

impl Namespace {
    /// A field by wire name.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        let fields: &'static [Field] = self.fields;
        fields.iter().find(|f| f.name == name)
    }

    /// A link by label.
    pub fn link(&self, name: &str) -> Option<&'static Link> {
        let links: &'static [Link] = self.links;
        links.iter().find(|l| l.name == name)
    }

    /// The target namespace of a link.
    pub fn target(link: &Link) -> &'static Namespace {
        namespace(link.target).unwrap_or(&NAMESPACES[0])
    }
}
