//! `tenant.*` commands.

use talkwai_domain::enums::TenantStatus;
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::tenant::{
    CreateTenant, SetTenantStatus, TenantCommand, TenantCreated, TenantEvent, TenantStatusChanged,
    TenantUpdated, UpdateTenant,
};
use talkwai_domain::{AggregateState, Command, ErrorCode, Event};

use crate::fixtures::*;
use crate::scenario::Scenario;

fn created() -> Event {
    Event::Tenant(TenantEvent::Created(TenantCreated {
        name: name("Acme"),
        domain: Some(domain("acme.com")),
        status: TenantStatus::Active,
        at: T0,
    }))
}

fn deleted() -> Event {
    Event::Tenant(TenantEvent::Deleted(Stamp { at: T0 }))
}

fn cmd(c: TenantCommand) -> Command {
    Command::Tenant(c)
}

fn update(name_: Option<&str>, dom: Option<Option<&str>>) -> Command {
    cmd(TenantCommand::Update(UpdateTenant {
        id: tenant_a(),
        name: name_.map(name),
        domain: dom.map(|d| d.map(domain)),
    }))
}

fn set_status(status: TenantStatus) -> Command {
    cmd(TenantCommand::SetStatus(SetTenantStatus {
        id: tenant_a(),
        status,
        reason: Some(reason("unpaid invoices")),
    }))
}

fn create() -> Command {
    cmd(TenantCommand::Create(CreateTenant {
        id: tenant_a(),
        name: name("Acme"),
        domain: Some(domain("acme.com")),
    }))
}

#[test]
fn create_emits_created_active_at_now() {
    Scenario::empty(tenant_ref(tenant_a()))
        .when(create())
        .then_events([Event::Tenant(TenantEvent::Created(TenantCreated {
            name: name("Acme"),
            domain: Some(domain("acme.com")),
            status: TenantStatus::Active,
            at: NOW,
        }))])
        .then_guards([])
        .then_state(|s| {
            let AggregateState::Tenant(_, st) = s else {
                panic!("not a tenant")
            };
            let t = st.live().expect("tenant is live");
            assert_eq!((t.created_at, t.updated_at, st.version), (NOW, NOW, 1));
        });
}

#[test]
fn create_twice_or_after_delete_is_already_exists() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(create())
        .then_error(ErrorCode::AlreadyExists, Some("id"));
    Scenario::given(tenant_ref(tenant_a()), [created(), deleted()])
        .when(create())
        .then_error(ErrorCode::AlreadyExists, Some("id"));
}

#[test]
fn update_emits_only_changed_fields() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(update(Some("Acme Corp"), Some(Some("acme.com"))))
        .then_events([Event::Tenant(TenantEvent::Updated(TenantUpdated {
            name: Some(name("Acme Corp")),
            domain: None,
            at: NOW,
        }))]);
}

#[test]
fn update_null_domain_clears_it() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(update(None, Some(None)))
        .then_events([Event::Tenant(TenantEvent::Updated(TenantUpdated {
            name: None,
            domain: Some(None),
            at: NOW,
        }))])
        .then_state(|s| {
            let AggregateState::Tenant(_, st) = s else {
                panic!("not a tenant")
            };
            assert_eq!(st.live().expect("live").domain, None);
        });
}

#[test]
fn update_without_change_is_a_no_op() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(update(Some("Acme"), Some(Some("ACME.com"))))
        .then_no_events();
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(update(None, None))
        .then_no_events();
}

#[test]
fn set_status_records_previous_and_reason() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(set_status(TenantStatus::Suspended))
        .then_events([Event::Tenant(TenantEvent::StatusChanged(
            TenantStatusChanged {
                status: TenantStatus::Suspended,
                previous: TenantStatus::Active,
                reason: Some(reason("unpaid invoices")),
                at: NOW,
            },
        ))]);
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(set_status(TenantStatus::Active))
        .then_no_events();
}

#[test]
fn delete_emits_deleted_then_everything_is_not_found() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .when(cmd(TenantCommand::Delete(ById { id: tenant_a() })))
        .then_events([Event::Tenant(TenantEvent::Deleted(Stamp { at: NOW }))]);
    for c in [
        update(Some("X"), None),
        set_status(TenantStatus::Inactive),
        cmd(TenantCommand::Delete(ById { id: tenant_a() })),
    ] {
        Scenario::given(tenant_ref(tenant_a()), [created(), deleted()])
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}

#[test]
fn commands_on_a_missing_tenant_are_not_found() {
    for c in [
        update(Some("X"), None),
        set_status(TenantStatus::Inactive),
        cmd(TenantCommand::Delete(ById { id: tenant_a() })),
    ] {
        Scenario::empty(tenant_ref(tenant_a()))
            .when(c)
            .then_error(ErrorCode::NotFound, None);
    }
}

#[test]
fn tenant_id_must_equal_the_subject_tenant() {
    Scenario::given(tenant_ref(tenant_a()), [created()])
        .in_scope(Some(tenant_b()))
        .when(update(Some("X"), None))
        .then_error(ErrorCode::ValidationFailed, Some("id"));
}
