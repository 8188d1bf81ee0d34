//! Admins: TalkwAI superusers with a platform role and specific permissions. Admin emails are
//! unique across the platform; an admin may be linked to one `$users` identity.

use serde::{Deserialize, Serialize};

use crate::context::{Context, FactKey};
use crate::enums::{AdminRole, AdminStatus};
use crate::erasure::{erased_email, erased_name, refuse_erased};
use crate::error::{DomainError, EntityKind};
use crate::guard::{GuardChange, GuardKey};
use crate::ids::{AdminId, UserId};
use crate::links::{LinkPlan, apply_link, claim_unique, plan_link};
use crate::member::{LinkUser, UserLink};
use crate::patch;
use crate::state::{ById, Decision, EvolveError, Stamp, State};
use crate::values::{Email, JsonObject, Name, Timestamp};

const KIND: EntityKind = EntityKind::Admin;

/// An admin's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The id.
    pub id: AdminId,
    /// First name.
    pub first_name: Name,
    /// Last name.
    pub last_name: Name,
    /// Email, unique across admins.
    pub email: Email,
    /// Role.
    pub role: AdminRole,
    /// Specific permissions, a JSON object (`{"allow": [...], "deny": [...]}`).
    pub permissions: JsonObject,
    /// Status.
    pub status: AdminStatus,
    /// The linked `$users` identity (`userAdmins`).
    pub user: Option<UserId>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// Erased (`admin.erased`): names and email are placeholders, it may no longer act and
    /// nothing personal is written about it again.
    pub erased: bool,
}

/// `admin.create` (platform).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAdmin {
    /// The new admin's id.
    pub id: AdminId,
    /// First name.
    pub first_name: Name,
    /// Last name.
    pub last_name: Name,
    /// Email, unique across admins.
    pub email: Email,
    /// Role.
    pub role: AdminRole,
    /// Specific permissions (JSON object text); `{}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<JsonObject>,
    /// Optional `$users` link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
}

/// `admin.update`: names and email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAdmin {
    /// The admin.
    pub id: AdminId,
    /// New first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Name>,
    /// New last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Name>,
    /// New email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
}

/// `admin.setRole`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetAdminRole {
    /// The admin.
    pub id: AdminId,
    /// The new role.
    pub role: AdminRole,
}

/// `admin.setPermissions`: replaces the permissions object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetAdminPermissions {
    /// The admin.
    pub id: AdminId,
    /// The new permissions (JSON object text).
    pub permissions: JsonObject,
}

/// `admin.setStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetAdminStatus {
    /// The admin.
    pub id: AdminId,
    /// The new status.
    pub status: AdminStatus,
}

/// Commands on an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", content = "body", rename_all = "camelCase")]
pub enum AdminCommand {
    /// Create.
    Create(CreateAdmin),
    /// Change names or email.
    Update(UpdateAdmin),
    /// Change role.
    SetRole(SetAdminRole),
    /// Replace permissions.
    SetPermissions(SetAdminPermissions),
    /// Change status.
    SetStatus(SetAdminStatus),
    /// Link a `$users` identity.
    LinkUser(LinkUser<AdminId>),
    /// Unlink the `$users` identity.
    UnlinkUser(ById<AdminId>),
    /// Delete.
    Delete(ById<AdminId>),
    /// Erase its personal data (names, email): its key is destroyed.
    Erase(ById<AdminId>),
}

impl AdminCommand {
    /// The addressed admin.
    pub fn id(&self) -> AdminId {
        match self {
            Self::Create(c) => c.id,
            Self::Update(c) => c.id,
            Self::SetRole(c) => c.id,
            Self::SetPermissions(c) => c.id,
            Self::SetStatus(c) => c.id,
            Self::LinkUser(c) => c.id,
            Self::UnlinkUser(c) | Self::Delete(c) | Self::Erase(c) => c.id,
        }
    }

    /// Facts the decider needs besides the admin's own state.
    pub fn requirements(&self) -> Vec<FactKey> {
        match self {
            Self::Create(c) => {
                let mut keys = vec![FactKey::Guard(GuardKey::AdminEmail(c.email.clone()))];
                if let Some(user) = c.user {
                    keys.push(FactKey::User(user));
                    keys.push(FactKey::Guard(GuardKey::UserAdmin(user)));
                }
                keys
            }
            Self::Update(c) => c
                .email
                .iter()
                .map(|e| FactKey::Guard(GuardKey::AdminEmail(e.clone())))
                .collect(),
            Self::LinkUser(c) => {
                vec![
                    FactKey::User(c.user),
                    FactKey::Guard(GuardKey::UserAdmin(c.user)),
                ]
            }
            _ => Vec::new(),
        }
    }
}

/// `admin.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminCreated {
    /// First name.
    pub first_name: Name,
    /// Last name.
    pub last_name: Name,
    /// Email.
    pub email: Email,
    /// Role.
    pub role: AdminRole,
    /// Permissions.
    pub permissions: JsonObject,
    /// Initial status (always `active` today).
    pub status: AdminStatus,
    /// Linked user, if given at creation.
    #[serde(default)]
    pub user: Option<UserId>,
    /// When.
    pub at: Timestamp,
}

/// `admin.updated` v1: only changed fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminUpdated {
    /// New first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Name>,
    /// New last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Name>,
    /// New email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// When.
    pub at: Timestamp,
}

/// `admin.roleChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminRoleChanged {
    /// New role.
    pub role: AdminRole,
    /// When.
    pub at: Timestamp,
}

/// `admin.permissionsChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPermissionsChanged {
    /// New permissions.
    pub permissions: JsonObject,
    /// When.
    pub at: Timestamp,
}

/// `admin.statusChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminStatusChanged {
    /// New status.
    pub status: AdminStatus,
    /// When.
    pub at: Timestamp,
}

/// Events of an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data")]
pub enum AdminEvent {
    /// Created.
    #[serde(rename = "admin.created")]
    Created(AdminCreated),
    /// Names or email changed.
    #[serde(rename = "admin.updated")]
    Updated(AdminUpdated),
    /// Role changed.
    #[serde(rename = "admin.roleChanged")]
    RoleChanged(AdminRoleChanged),
    /// Permissions replaced.
    #[serde(rename = "admin.permissionsChanged")]
    PermissionsChanged(AdminPermissionsChanged),
    /// Status changed.
    #[serde(rename = "admin.statusChanged")]
    StatusChanged(AdminStatusChanged),
    /// A user was linked.
    #[serde(rename = "admin.userLinked")]
    UserLinked(UserLink),
    /// The user was unlinked.
    #[serde(rename = "admin.userUnlinked")]
    UserUnlinked(UserLink),
    /// Deleted.
    #[serde(rename = "admin.deleted")]
    Deleted(Stamp),
    /// Personal data erased (its key destroyed): from here on every reader shows its names
    /// and email as erased.
    #[serde(rename = "admin.erased")]
    Erased(Stamp),
}

/// Decides an admin command.
pub fn decide(
    state: &State<Admin>,
    command: AdminCommand,
    ctx: &Context<'_>,
) -> Result<Decision<AdminEvent>, DomainError> {
    let at = ctx.now;
    let owner = command.id().0;
    match command {
        AdminCommand::Create(c) => {
            state.require_absent(KIND)?;
            let mut guards = vec![claim_unique(
                GuardKey::AdminEmail(c.email.clone()),
                owner,
                "email",
                "admin email",
                ctx,
            )?];
            if let Some(user) = c.user
                && let LinkPlan::Link(claim) =
                    plan_link(None, user, owner, GuardKey::UserAdmin(user), KIND, ctx)?
            {
                guards.push(claim);
            }
            Ok(Decision {
                events: vec![AdminEvent::Created(AdminCreated {
                    first_name: c.first_name,
                    last_name: c.last_name,
                    email: c.email,
                    role: c.role,
                    permissions: c.permissions.unwrap_or_else(JsonObject::empty),
                    status: AdminStatus::Active,
                    user: c.user,
                    at,
                })],
                guards,
            })
        }
        AdminCommand::Update(c) => {
            let admin = state.require_live(KIND)?;
            if admin.erased {
                return Err(refuse_erased(KIND, "update"));
            }
            let event = AdminUpdated {
                first_name: patch::diff(&admin.first_name, c.first_name),
                last_name: patch::diff(&admin.last_name, c.last_name),
                email: patch::diff(&admin.email, c.email),
                at,
            };
            if event.first_name.is_none() && event.last_name.is_none() && event.email.is_none() {
                return Ok(Decision::none());
            }
            let mut guards = Vec::new();
            if let Some(email) = &event.email {
                guards.push(claim_unique(
                    GuardKey::AdminEmail(email.clone()),
                    owner,
                    "email",
                    "admin email",
                    ctx,
                )?);
                guards.push(GuardChange::release(
                    GuardKey::AdminEmail(admin.email.clone()),
                    owner,
                    at,
                ));
            }
            Ok(Decision {
                events: vec![AdminEvent::Updated(event)],
                guards,
            })
        }
        AdminCommand::SetRole(c) => {
            let admin = state.require_live(KIND)?;
            if admin.role == c.role {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![AdminEvent::RoleChanged(
                AdminRoleChanged { role: c.role, at },
            )]))
        }
        AdminCommand::SetPermissions(c) => {
            let admin = state.require_live(KIND)?;
            if admin.permissions == c.permissions {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![AdminEvent::PermissionsChanged(
                AdminPermissionsChanged {
                    permissions: c.permissions,
                    at,
                },
            )]))
        }
        AdminCommand::SetStatus(c) => {
            let admin = state.require_live(KIND)?;
            if admin.status == c.status {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![AdminEvent::StatusChanged(
                AdminStatusChanged {
                    status: c.status,
                    at,
                },
            )]))
        }
        AdminCommand::LinkUser(c) => {
            let admin = state.require_live(KIND)?;
            match plan_link(
                admin.user,
                c.user,
                owner,
                GuardKey::UserAdmin(c.user),
                KIND,
                ctx,
            )? {
                LinkPlan::AlreadyLinked => Ok(Decision::none()),
                LinkPlan::Link(claim) => Ok(Decision {
                    events: vec![AdminEvent::UserLinked(UserLink { user: c.user, at })],
                    guards: vec![claim],
                }),
            }
        }
        AdminCommand::UnlinkUser(_) => {
            let admin = state.require_live(KIND)?;
            let Some(user) = admin.user else {
                return Ok(Decision::none());
            };
            Ok(Decision {
                events: vec![AdminEvent::UserUnlinked(UserLink { user, at })],
                guards: vec![GuardChange::release(GuardKey::UserAdmin(user), owner, at)],
            })
        }
        AdminCommand::Delete(_) => {
            let admin = state.require_live(KIND)?;
            let mut guards = Vec::new();
            // An erased admin let go of its email when it was erased.
            if !admin.erased {
                guards.push(GuardChange::release(
                    GuardKey::AdminEmail(admin.email.clone()),
                    owner,
                    at,
                ));
            }
            if let Some(user) = admin.user {
                guards.push(GuardChange::release(GuardKey::UserAdmin(user), owner, at));
            }
            Ok(Decision {
                events: vec![AdminEvent::Deleted(Stamp { at })],
                guards,
            })
        }
        AdminCommand::Erase(_) => {
            let admin = state.require_live(KIND)?;
            // Idempotent: erasing again appends nothing (the service still destroys the key).
            if admin.erased {
                return Ok(Decision::none());
            }
            Ok(Decision {
                events: vec![AdminEvent::Erased(Stamp { at })],
                guards: vec![GuardChange::release(
                    GuardKey::AdminEmail(admin.email.clone()),
                    owner,
                    at,
                )],
            })
        }
    }
}

/// Applies an admin event strictly.
pub fn apply(state: &mut State<Admin>, id: AdminId, event: &AdminEvent) -> Result<(), EvolveError> {
    match event {
        AdminEvent::Created(e) => state.create(
            KIND,
            Admin {
                id,
                first_name: e.first_name.clone(),
                last_name: e.last_name.clone(),
                email: e.email.clone(),
                role: e.role,
                permissions: e.permissions.clone(),
                status: e.status,
                user: e.user,
                created_at: e.at,
                updated_at: e.at,
                erased: false,
            },
        ),
        AdminEvent::Updated(e) => state.mutate_live(KIND, |a| {
            patch::set(&mut a.first_name, &e.first_name);
            patch::set(&mut a.last_name, &e.last_name);
            patch::set(&mut a.email, &e.email);
            a.updated_at = e.at;
            Ok(())
        }),
        AdminEvent::RoleChanged(e) => state.mutate_live(KIND, |a| {
            a.role = e.role;
            a.updated_at = e.at;
            Ok(())
        }),
        AdminEvent::PermissionsChanged(e) => state.mutate_live(KIND, |a| {
            a.permissions = e.permissions.clone();
            a.updated_at = e.at;
            Ok(())
        }),
        AdminEvent::StatusChanged(e) => state.mutate_live(KIND, |a| {
            a.status = e.status;
            a.updated_at = e.at;
            Ok(())
        }),
        AdminEvent::UserLinked(e) => state.mutate_live(KIND, |a| {
            apply_link(
                &mut a.user,
                &mut a.updated_at,
                e.user,
                e.at,
                true,
                KIND,
                "admin.userLinked",
            )
        }),
        AdminEvent::UserUnlinked(e) => state.mutate_live(KIND, |a| {
            apply_link(
                &mut a.user,
                &mut a.updated_at,
                e.user,
                e.at,
                false,
                KIND,
                "admin.userUnlinked",
            )
        }),
        AdminEvent::Deleted(_) => state.delete(KIND),
        AdminEvent::Erased(e) => state.mutate_live(KIND, |a| {
            a.first_name = erased_name();
            a.last_name = erased_name();
            a.email = erased_email();
            a.erased = true;
            a.updated_at = e.at;
            Ok(())
        }),
    }
}
