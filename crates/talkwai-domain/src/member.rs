//! Members: a client company's users, with a role within their tenant. A member belongs to one
//! tenant forever, has an email unique within it, and may be linked to one `$users` identity.

use serde::{Deserialize, Serialize};

use crate::context::{Context, FactKey};
use crate::enums::{MemberRole, MemberStatus};
use crate::erasure::{erased_email, erased_name, refuse_erased};
use crate::error::{DomainError, EntityKind};
use crate::guard::{GuardChange, GuardKey};
use crate::ids::{MemberId, TenantId, UserId};
use crate::links::{LinkPlan, apply_link, claim_unique, plan_link};
use crate::patch;
use crate::state::{ById, Decision, EvolveError, Stamp, State};
use crate::values::{Email, Name, Phone, Timestamp};

const KIND: EntityKind = EntityKind::Member;

/// A member's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The id.
    pub id: MemberId,
    /// The tenant (`tenantMembers`), fixed at creation.
    pub tenant: TenantId,
    /// First name.
    pub first_name: Name,
    /// Last name.
    pub last_name: Name,
    /// Email, unique within the tenant.
    pub email: Email,
    /// Optional phone.
    pub phone: Option<Phone>,
    /// Role within the tenant.
    pub role: MemberRole,
    /// Status.
    pub status: MemberStatus,
    /// The linked `$users` identity (`userMembers`).
    pub user: Option<UserId>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
    /// Erased (`member.erased`): names, email and phone are placeholders, it may no longer act
    /// and nothing personal is written about it again.
    pub erased: bool,
}

/// `member.create`: the seed's `createMember`, linked to the subject's tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMember {
    /// The new member's id.
    pub id: MemberId,
    /// The tenant link (`.link({ tenant })`); optional, must equal the subject's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// First name.
    pub first_name: Name,
    /// Last name.
    pub last_name: Name,
    /// Email, unique within the tenant; within the tenant's domain when it has one.
    pub email: Email,
    /// Optional phone (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// Role.
    pub role: MemberRole,
    /// Optional `$users` link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
}

/// `member.update`: names, email and phone (`null` clears the phone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMember {
    /// The member.
    pub id: MemberId,
    /// New first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Name>,
    /// New last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Name>,
    /// New email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// New phone, or `null` to clear it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub phone: Option<Option<Phone>>,
}

/// `member.setRole`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetMemberRole {
    /// The member.
    pub id: MemberId,
    /// The new role.
    pub role: MemberRole,
}

/// `member.setStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetMemberStatus {
    /// The member.
    pub id: MemberId,
    /// The new status.
    pub status: MemberStatus,
}

/// `member.linkUser` / `admin.linkUser`: link a `$users` identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkUser<Id> {
    /// The member or admin.
    pub id: Id,
    /// The user to link.
    pub user: UserId,
}

/// Commands on a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", content = "body", rename_all = "camelCase")]
pub enum MemberCommand {
    /// Create.
    Create(CreateMember),
    /// Change names, email, phone.
    Update(UpdateMember),
    /// Change role.
    SetRole(SetMemberRole),
    /// Change status.
    SetStatus(SetMemberStatus),
    /// Link a `$users` identity.
    LinkUser(LinkUser<MemberId>),
    /// Unlink the `$users` identity.
    UnlinkUser(ById<MemberId>),
    /// Delete.
    Delete(ById<MemberId>),
    /// Erase its personal data (names, email, phone): its key is destroyed.
    Erase(ById<MemberId>),
}

impl MemberCommand {
    /// The addressed member.
    pub fn id(&self) -> MemberId {
        match self {
            Self::Create(c) => c.id,
            Self::Update(c) => c.id,
            Self::SetRole(c) => c.id,
            Self::SetStatus(c) => c.id,
            Self::LinkUser(c) => c.id,
            Self::UnlinkUser(c) | Self::Delete(c) | Self::Erase(c) => c.id,
        }
    }

    /// Facts the decider needs besides the member's own state.
    pub fn requirements(&self, tenant: TenantId) -> Vec<FactKey> {
        let mut keys = vec![FactKey::Tenant(tenant)];
        match self {
            Self::Create(c) => {
                keys.push(FactKey::Guard(GuardKey::MemberEmail {
                    tenant,
                    email: c.email.clone(),
                }));
                if let Some(user) = c.user {
                    keys.push(FactKey::User(user));
                    keys.push(FactKey::Guard(GuardKey::UserMember(user)));
                }
            }
            Self::Update(c) => {
                if let Some(email) = &c.email {
                    keys.push(FactKey::Guard(GuardKey::MemberEmail {
                        tenant,
                        email: email.clone(),
                    }));
                }
            }
            Self::LinkUser(c) => {
                keys.push(FactKey::User(c.user));
                keys.push(FactKey::Guard(GuardKey::UserMember(c.user)));
            }
            Self::SetRole(_)
            | Self::SetStatus(_)
            | Self::UnlinkUser(_)
            | Self::Delete(_)
            | Self::Erase(_) => {}
        }
        keys
    }
}

/// `member.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberCreated {
    /// First name.
    pub first_name: Name,
    /// Last name.
    pub last_name: Name,
    /// Email.
    pub email: Email,
    /// Phone.
    #[serde(default)]
    pub phone: Option<Phone>,
    /// Role.
    pub role: MemberRole,
    /// Initial status (always `active` today).
    pub status: MemberStatus,
    /// Linked user, if given at creation.
    #[serde(default)]
    pub user: Option<UserId>,
    /// When.
    pub at: Timestamp,
}

/// `member.updated` v1: only changed fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberUpdated {
    /// New first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Name>,
    /// New last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Name>,
    /// New email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// New phone (`null`: cleared).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub phone: Option<Option<Phone>>,
    /// When.
    pub at: Timestamp,
}

/// `member.roleChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberRoleChanged {
    /// New role.
    pub role: MemberRole,
    /// When.
    pub at: Timestamp,
}

/// `member.statusChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberStatusChanged {
    /// New status.
    pub status: MemberStatus,
    /// When.
    pub at: Timestamp,
}

/// `*.userLinked` / `*.userUnlinked` v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserLink {
    /// The user.
    pub user: UserId,
    /// When.
    pub at: Timestamp,
}

/// Events of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data")]
pub enum MemberEvent {
    /// Created.
    #[serde(rename = "member.created")]
    Created(MemberCreated),
    /// Names, email or phone changed.
    #[serde(rename = "member.updated")]
    Updated(MemberUpdated),
    /// Role changed.
    #[serde(rename = "member.roleChanged")]
    RoleChanged(MemberRoleChanged),
    /// Status changed.
    #[serde(rename = "member.statusChanged")]
    StatusChanged(MemberStatusChanged),
    /// A user was linked.
    #[serde(rename = "member.userLinked")]
    UserLinked(UserLink),
    /// The user was unlinked.
    #[serde(rename = "member.userUnlinked")]
    UserUnlinked(UserLink),
    /// Deleted.
    #[serde(rename = "member.deleted")]
    Deleted(Stamp),
    /// Personal data erased (its key destroyed): from here on every reader shows its names,
    /// email and phone as erased.
    #[serde(rename = "member.erased")]
    Erased(Stamp),
}

fn check_email_domain(
    email: &Email,
    tenant: TenantId,
    ctx: &Context<'_>,
) -> Result<(), DomainError> {
    let Some(domain) = ctx
        .facts
        .tenants
        .get(&tenant)
        .and_then(|t| t.domain.as_ref())
    else {
        return Ok(());
    };
    let at = email.domain();
    let ok = at == domain.as_str() || at.ends_with(&format!(".{}", domain.as_str()));
    if ok {
        Ok(())
    } else {
        Err(DomainError::validation(
            "email",
            format!("must be an address at {domain}"),
        ))
    }
}

fn require_tenant(ctx: &Context<'_>) -> Result<TenantId, DomainError> {
    let tenant = ctx
        .tenant
        .ok_or_else(|| DomainError::validation("tenant", "members live in a tenant's subjects"))?;
    if !ctx.facts.tenants.contains_key(&tenant) {
        return Err(DomainError::NotFound {
            entity: EntityKind::Tenant,
            field: Some("tenant"),
        });
    }
    Ok(tenant)
}

/// The release of `member`'s email guard (an update to another email, a delete, an erasure).
fn release_email(tenant: TenantId, member: &Member, at: Timestamp) -> GuardChange {
    GuardChange::release(
        GuardKey::MemberEmail {
            tenant,
            email: member.email.clone(),
        },
        member.id.0,
        at,
    )
}

/// Decides a member command.
pub fn decide(
    state: &State<Member>,
    command: MemberCommand,
    ctx: &Context<'_>,
) -> Result<Decision<MemberEvent>, DomainError> {
    let tenant = require_tenant(ctx)?;
    let at = ctx.now;
    let owner = command.id().0;
    match command {
        MemberCommand::Create(c) => {
            state.require_absent(KIND)?;
            if c.tenant.is_some_and(|t| t != tenant) {
                return Err(DomainError::validation(
                    "tenant",
                    "must equal the tenant in the subject",
                ));
            }
            check_email_domain(&c.email, tenant, ctx)?;
            let mut guards = vec![claim_unique(
                GuardKey::MemberEmail {
                    tenant,
                    email: c.email.clone(),
                },
                owner,
                "email",
                "email",
                ctx,
            )?];
            if let Some(user) = c.user {
                match plan_link(None, user, owner, GuardKey::UserMember(user), KIND, ctx)? {
                    LinkPlan::Link(claim) => guards.push(claim),
                    LinkPlan::AlreadyLinked => {}
                }
            }
            Ok(Decision {
                events: vec![MemberEvent::Created(MemberCreated {
                    first_name: c.first_name,
                    last_name: c.last_name,
                    email: c.email,
                    phone: c.phone,
                    role: c.role,
                    status: MemberStatus::Active,
                    user: c.user,
                    at,
                })],
                guards,
            })
        }
        MemberCommand::Update(c) => {
            let member = state.require_live(KIND)?;
            if member.erased {
                return Err(refuse_erased(KIND, "update"));
            }
            let event = MemberUpdated {
                first_name: patch::diff(&member.first_name, c.first_name),
                last_name: patch::diff(&member.last_name, c.last_name),
                email: patch::diff(&member.email, c.email),
                phone: patch::diff_nullable(&member.phone, c.phone),
                at,
            };
            if event.first_name.is_none()
                && event.last_name.is_none()
                && event.email.is_none()
                && event.phone.is_none()
            {
                return Ok(Decision::none());
            }
            let mut guards = Vec::new();
            if let Some(email) = &event.email {
                check_email_domain(email, tenant, ctx)?;
                guards.push(claim_unique(
                    GuardKey::MemberEmail {
                        tenant,
                        email: email.clone(),
                    },
                    owner,
                    "email",
                    "email",
                    ctx,
                )?);
                guards.push(release_email(tenant, member, at));
            }
            Ok(Decision {
                events: vec![MemberEvent::Updated(event)],
                guards,
            })
        }
        MemberCommand::SetRole(c) => {
            let member = state.require_live(KIND)?;
            if member.role == c.role {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![MemberEvent::RoleChanged(
                MemberRoleChanged { role: c.role, at },
            )]))
        }
        MemberCommand::SetStatus(c) => {
            let member = state.require_live(KIND)?;
            if member.status == c.status {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![MemberEvent::StatusChanged(
                MemberStatusChanged {
                    status: c.status,
                    at,
                },
            )]))
        }
        MemberCommand::LinkUser(c) => {
            let member = state.require_live(KIND)?;
            match plan_link(
                member.user,
                c.user,
                owner,
                GuardKey::UserMember(c.user),
                KIND,
                ctx,
            )? {
                LinkPlan::AlreadyLinked => Ok(Decision::none()),
                LinkPlan::Link(claim) => Ok(Decision {
                    events: vec![MemberEvent::UserLinked(UserLink { user: c.user, at })],
                    guards: vec![claim],
                }),
            }
        }
        MemberCommand::UnlinkUser(_) => {
            let member = state.require_live(KIND)?;
            let Some(user) = member.user else {
                return Ok(Decision::none());
            };
            Ok(Decision {
                events: vec![MemberEvent::UserUnlinked(UserLink { user, at })],
                guards: vec![GuardChange::release(GuardKey::UserMember(user), owner, at)],
            })
        }
        MemberCommand::Delete(_) => {
            let member = state.require_live(KIND)?;
            let mut guards = Vec::new();
            // An erased member let go of its email when it was erased.
            if !member.erased {
                guards.push(release_email(tenant, member, at));
            }
            if let Some(user) = member.user {
                guards.push(GuardChange::release(GuardKey::UserMember(user), owner, at));
            }
            Ok(Decision {
                events: vec![MemberEvent::Deleted(Stamp { at })],
                guards,
            })
        }
        MemberCommand::Erase(_) => {
            let member = state.require_live(KIND)?;
            // Idempotent: erasing again appends nothing (the service still destroys the key).
            if member.erased {
                return Ok(Decision::none());
            }
            // The email is let go (it may be used again); links stay.
            Ok(Decision {
                events: vec![MemberEvent::Erased(Stamp { at })],
                guards: vec![release_email(tenant, member, at)],
            })
        }
    }
}

/// Applies a member event strictly.
pub fn apply(
    state: &mut State<Member>,
    id: MemberId,
    tenant: TenantId,
    event: &MemberEvent,
) -> Result<(), EvolveError> {
    match event {
        MemberEvent::Created(e) => state.create(
            KIND,
            Member {
                id,
                tenant,
                first_name: e.first_name.clone(),
                last_name: e.last_name.clone(),
                email: e.email.clone(),
                phone: e.phone.clone(),
                role: e.role,
                status: e.status,
                user: e.user,
                created_at: e.at,
                updated_at: e.at,
                erased: false,
            },
        ),
        MemberEvent::Updated(e) => state.mutate_live(KIND, |m| {
            patch::set(&mut m.first_name, &e.first_name);
            patch::set(&mut m.last_name, &e.last_name);
            patch::set(&mut m.email, &e.email);
            patch::apply(&mut m.phone, &e.phone);
            m.updated_at = e.at;
            Ok(())
        }),
        MemberEvent::RoleChanged(e) => state.mutate_live(KIND, |m| {
            m.role = e.role;
            m.updated_at = e.at;
            Ok(())
        }),
        MemberEvent::StatusChanged(e) => state.mutate_live(KIND, |m| {
            m.status = e.status;
            m.updated_at = e.at;
            Ok(())
        }),
        MemberEvent::UserLinked(e) => state.mutate_live(KIND, |m| {
            apply_link(
                &mut m.user,
                &mut m.updated_at,
                e.user,
                e.at,
                true,
                KIND,
                "member.userLinked",
            )
        }),
        MemberEvent::UserUnlinked(e) => state.mutate_live(KIND, |m| {
            apply_link(
                &mut m.user,
                &mut m.updated_at,
                e.user,
                e.at,
                false,
                KIND,
                "member.userUnlinked",
            )
        }),
        MemberEvent::Deleted(_) => state.delete(KIND),
        MemberEvent::Erased(e) => state.mutate_live(KIND, |m| {
            m.first_name = erased_name();
            m.last_name = erased_name();
            m.email = erased_email();
            m.phone = None;
            m.erased = true;
            m.updated_at = e.at;
            Ok(())
        }),
    }
}
