//! Tenants: TalkwAI's client companies. Created by the platform; renamed by owners; suspended,
//! reactivated or closed by admins.

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::enums::TenantStatus;
use crate::error::{DomainError, EntityKind};
use crate::ids::TenantId;
use crate::patch;
use crate::state::{ById, Decision, EvolveError, Stamp, State};
use crate::values::{CompanyDomain, Name, Reason, Timestamp};

const KIND: EntityKind = EntityKind::Tenant;

/// A tenant's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The id.
    pub id: TenantId,
    /// Client company name.
    pub name: Name,
    /// Optional company domain (for email validation).
    pub domain: Option<CompanyDomain>,
    /// Status.
    pub status: TenantStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the last change.
    pub updated_at: Timestamp,
}

/// `tenant.create` (platform): the seed's `createTenant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenant {
    /// The new tenant's id, chosen by the caller.
    pub id: TenantId,
    /// Client company name.
    pub name: Name,
    /// Optional company domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<CompanyDomain>,
}

/// `tenant.update`: changes name and/or domain (`null` clears the domain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTenant {
    /// The tenant.
    pub id: TenantId,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// New domain, or `null` to clear it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub domain: Option<Option<CompanyDomain>>,
}

/// `tenant.setStatus`: activate, deactivate or suspend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetTenantStatus {
    /// The tenant.
    pub id: TenantId,
    /// The new status.
    pub status: TenantStatus,
    /// Why (shown in admin alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// Commands on a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", content = "body", rename_all = "camelCase")]
pub enum TenantCommand {
    /// Create a tenant (platform).
    Create(CreateTenant),
    /// Change name/domain.
    Update(UpdateTenant),
    /// Change status.
    SetStatus(SetTenantStatus),
    /// Delete the tenant (the log keeps its history).
    Delete(ById<TenantId>),
}

impl TenantCommand {
    /// The addressed tenant.
    pub fn id(&self) -> TenantId {
        match self {
            Self::Create(c) => c.id,
            Self::Update(c) => c.id,
            Self::SetStatus(c) => c.id,
            Self::Delete(c) => c.id,
        }
    }
}

/// `tenant.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantCreated {
    /// Name.
    pub name: Name,
    /// Domain.
    #[serde(default)]
    pub domain: Option<CompanyDomain>,
    /// Initial status (always `active` today).
    pub status: TenantStatus,
    /// When (also `createdAt` and `updatedAt`).
    pub at: Timestamp,
}

/// `tenant.updated` v1: only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantUpdated {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// New domain (`null`: cleared).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "patch::nullable"
    )]
    pub domain: Option<Option<CompanyDomain>>,
    /// When.
    pub at: Timestamp,
}

/// `tenant.statusChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantStatusChanged {
    /// New status.
    pub status: TenantStatus,
    /// Previous status.
    pub previous: TenantStatus,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// When.
    pub at: Timestamp,
}

/// Events of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data")]
pub enum TenantEvent {
    /// Created.
    #[serde(rename = "tenant.created")]
    Created(TenantCreated),
    /// Name/domain changed.
    #[serde(rename = "tenant.updated")]
    Updated(TenantUpdated),
    /// Status changed.
    #[serde(rename = "tenant.statusChanged")]
    StatusChanged(TenantStatusChanged),
    /// Deleted.
    #[serde(rename = "tenant.deleted")]
    Deleted(Stamp),
}

/// Decides a tenant command.
pub fn decide(
    state: &State<Tenant>,
    command: TenantCommand,
    ctx: &Context<'_>,
) -> Result<Decision<TenantEvent>, DomainError> {
    let at = ctx.now;
    if let Some(scope) = ctx.tenant
        && !matches!(command, TenantCommand::Create(_))
        && scope != command.id()
    {
        return Err(DomainError::validation(
            "id",
            "must equal the tenant in the subject",
        ));
    }
    match command {
        TenantCommand::Create(c) => {
            state.require_absent(KIND)?;
            Ok(Decision::events(vec![TenantEvent::Created(
                TenantCreated {
                    name: c.name,
                    domain: c.domain,
                    status: TenantStatus::Active,
                    at,
                },
            )]))
        }
        TenantCommand::Update(c) => {
            let tenant = state.require_live(KIND)?;
            let name = patch::diff(&tenant.name, c.name);
            let domain = patch::diff_nullable(&tenant.domain, c.domain);
            if name.is_none() && domain.is_none() {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![TenantEvent::Updated(
                TenantUpdated { name, domain, at },
            )]))
        }
        TenantCommand::SetStatus(c) => {
            let tenant = state.require_live(KIND)?;
            if tenant.status == c.status {
                return Ok(Decision::none());
            }
            Ok(Decision::events(vec![TenantEvent::StatusChanged(
                TenantStatusChanged {
                    status: c.status,
                    previous: tenant.status,
                    reason: c.reason,
                    at,
                },
            )]))
        }
        TenantCommand::Delete(_) => {
            state.require_live(KIND)?;
            Ok(Decision::events(vec![TenantEvent::Deleted(Stamp { at })]))
        }
    }
}

/// Applies a tenant event strictly: an event that cannot follow the state is refused and the
/// state is left unchanged.
pub fn apply(
    state: &mut State<Tenant>,
    id: TenantId,
    event: &TenantEvent,
) -> Result<(), EvolveError> {
    match event {
        TenantEvent::Created(e) => state.create(
            KIND,
            Tenant {
                id,
                name: e.name.clone(),
                domain: e.domain.clone(),
                status: e.status,
                created_at: e.at,
                updated_at: e.at,
            },
        ),
        TenantEvent::Updated(e) => state.mutate_live(KIND, |t| {
            patch::set(&mut t.name, &e.name);
            patch::apply(&mut t.domain, &e.domain);
            t.updated_at = e.at;
            Ok(())
        }),
        TenantEvent::StatusChanged(e) => state.mutate_live(KIND, |t| {
            t.status = e.status;
            t.updated_at = e.at;
            Ok(())
        }),
        TenantEvent::Deleted(_) => state.delete(KIND),
    }
}
