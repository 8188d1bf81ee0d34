//! Tenants: TalkwAI's client companies. Created by the platform; renamed by owners; suspended,
//! reactivated or closed by admins; erased (offboarded) by a superadmin.
//!
//! # Offboarding
//! Suspending a tenant (`tenant.setStatus` to `suspended`) issues an **erasure token**: a fresh
//! random value ([`Context::nonce`](crate::Context)) written in the `tenant.statusChanged` event
//! and so returned in the command's reply. `tenant.erase` must present it while the tenant is
//! still suspended by that very suspension; any other status change withdraws it. After
//! `tenant.erased` every command addressing the tenant is refused with `tenant_erased`.

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
    /// The erasure token of the current suspension (`None` unless suspended with one).
    pub erasure_token: Option<ErasureToken>,
    /// When the tenant was erased; an erased tenant refuses every command.
    pub erased_at: Option<Timestamp>,
}

impl Tenant {
    /// `tenant_erased` when the tenant was erased.
    pub fn require_not_erased(&self) -> Result<(), DomainError> {
        match self.erased_at {
            Some(_) => Err(DomainError::TenantErased(self.id)),
            None => Ok(()),
        }
    }
}

/// The confirmation a suspension issues and `tenant.erase` must present: 32 lowercase hex
/// digits (128 bits, 122 of them random). Not a credential (erasing needs a superadmin): it
/// proves the eraser read the reply of the suspension it erases under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct ErasureToken(
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9a-f]{32}$")))] pub String,
);

impl ErasureToken {
    /// The token drawn from a fresh random value.
    pub fn from_nonce(nonce: uuid::Uuid) -> Self {
        Self(nonce.simple().to_string())
    }
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

/// `tenant.erase` (superadmin): offboards a suspended tenant for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseTenant {
    /// The tenant.
    pub id: TenantId,
    /// The `erasureToken` of the `tenant.statusChanged` event (the reply) that suspended it.
    pub confirmation_token: String,
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
    /// Erase the tenant (offboarding; superadmin, with the suspension's token).
    Erase(EraseTenant),
}

impl TenantCommand {
    /// The addressed tenant.
    pub fn id(&self) -> TenantId {
        match self {
            Self::Create(c) => c.id,
            Self::Update(c) => c.id,
            Self::SetStatus(c) => c.id,
            Self::Delete(c) => c.id,
            Self::Erase(c) => c.id,
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

// Kept to read and describe stored v1 events; its schema keeps v1's title.
/// `tenant.statusChanged` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "TenantStatusChanged"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantStatusChangedV1 {
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

/// `tenant.statusChanged` v2: v1 plus the erasure token a suspension issues.
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
    /// Present exactly when `status` is `suspended`: the confirmation `tenant.erase` needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure_token: Option<ErasureToken>,
    /// When.
    pub at: Timestamp,
}

/// Upcaster `tenant.statusChanged` v1 → v2: the v1 data read strictly, with no token (a
/// suspension written before tokens existed cannot be erased under: suspend again).
pub fn upcast_status_changed_v1(
    data: serde_json::Value,
) -> Result<serde_json::Value, serde_json::Error> {
    let v1: TenantStatusChangedV1 = serde_json::from_value(data)?;
    serde_json::to_value(TenantStatusChanged {
        status: v1.status,
        previous: v1.previous,
        reason: v1.reason,
        erasure_token: None,
        at: v1.at,
    })
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
    /// Erased (offboarded): read models dropped, rooms closed, every command refused.
    #[serde(rename = "tenant.erased")]
    Erased(Stamp),
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
            let tenant = live_not_erased(state)?;
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
            let tenant = live_not_erased(state)?;
            if tenant.status == c.status {
                return Ok(Decision::none());
            }
            let erasure_token =
                (c.status == TenantStatus::Suspended).then(|| ErasureToken::from_nonce(ctx.nonce));
            Ok(Decision::events(vec![TenantEvent::StatusChanged(
                TenantStatusChanged {
                    status: c.status,
                    previous: tenant.status,
                    reason: c.reason,
                    erasure_token,
                    at,
                },
            )]))
        }
        TenantCommand::Delete(_) => {
            live_not_erased(state)?;
            Ok(Decision::events(vec![TenantEvent::Deleted(Stamp { at })]))
        }
        TenantCommand::Erase(c) => {
            let tenant = live_not_erased(state)?;
            if tenant.status != TenantStatus::Suspended {
                return Err(DomainError::InvalidTransition {
                    entity: KIND,
                    action: "erase",
                    status: tenant.status.as_str(),
                });
            }
            match &tenant.erasure_token {
                Some(token) if token.0 == c.confirmation_token => {}
                Some(_) => {
                    return Err(DomainError::validation(
                        "confirmationToken",
                        "does not match the erasure token of the suspension",
                    ));
                }
                None => {
                    return Err(DomainError::validation(
                        "confirmationToken",
                        "this suspension issued no erasure token: reactivate and suspend again",
                    ));
                }
            }
            Ok(Decision::events(vec![TenantEvent::Erased(Stamp { at })]))
        }
    }
}

/// The live tenant, or `not_found`; `tenant_erased` once erased.
fn live_not_erased(state: &State<Tenant>) -> Result<&Tenant, DomainError> {
    let tenant = state.require_live(KIND)?;
    tenant.require_not_erased()?;
    Ok(tenant)
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
                erasure_token: None,
                erased_at: None,
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
            t.erasure_token.clone_from(&e.erasure_token);
            t.updated_at = e.at;
            Ok(())
        }),
        TenantEvent::Deleted(_) => state.delete(KIND),
        TenantEvent::Erased(e) => state.mutate_live(KIND, |t| {
            if t.erased_at.is_some() || t.status != TenantStatus::Suspended {
                return Err(EvolveError::Transition {
                    entity: KIND,
                    from: t.status.as_str(),
                    event: "tenant.erased",
                });
            }
            t.erasure_token = None;
            t.erased_at = Some(e.at);
            t.updated_at = e.at;
            Ok(())
        }),
    }
}
