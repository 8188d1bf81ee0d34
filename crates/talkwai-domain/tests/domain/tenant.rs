//! `tenant.*` commands.

use talkwai_domain::enums::TenantStatus;
use talkwai_domain::enums::{AdminRole, MemberRole};
use talkwai_domain::member::MemberCommand;
use talkwai_domain::state::{ById, Stamp};
use talkwai_domain::tenant::{
    CreateTenant, EraseTenant, ErasureToken, SetTenantStatus, TenantCommand, TenantCreated,
    TenantEvent, TenantStatusChanged, TenantUpdated, UpdateTenant,
};
use talkwai_domain::{AggregateState, Command, DomainError, ErrorCode, Event};

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

/// The `tenant.statusChanged` that [`set_status`] decides now.
fn changed_now(status: TenantStatus, previous: TenantStatus, token: Option<&str>) -> Event {
    Event::Tenant(TenantEvent::StatusChanged(TenantStatusChanged {
        status,
        previous,
        reason: Some(reason("unpaid invoices")),
        erasure_token: token.map(|t| ErasureToken(t.into())),
        at: NOW,
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
        .then_events([changed_now(
            TenantStatus::Suspended,
            TenantStatus::Active,
            Some(NONCE_TOKEN),
        )])
        .then_state(|s| assert_eq!(token_of(s), Some(ErasureToken(NONCE_TOKEN.into()))));
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

fn status_changed(
    status: TenantStatus,
    previous: TenantStatus,
    erasure_token: Option<&str>,
) -> Event {
    Event::Tenant(TenantEvent::StatusChanged(TenantStatusChanged {
        status,
        previous,
        reason: None,
        erasure_token: erasure_token.map(|t| ErasureToken(t.into())),
        at: T0,
    }))
}

const ISSUED: &str = "fedcba9876543210fedcba9876543210";

fn suspended() -> Event {
    status_changed(TenantStatus::Suspended, TenantStatus::Active, Some(ISSUED))
}

fn erased() -> Event {
    Event::Tenant(TenantEvent::Erased(Stamp { at: T0 }))
}

fn erase(token: &str) -> Command {
    cmd(TenantCommand::Erase(EraseTenant {
        id: tenant_a(),
        confirmation_token: token.into(),
    }))
}

fn superadmin() -> talkwai_domain::Actor {
    admin_actor(AdminRole::Superadmin, None)
}

fn token_of(state: &AggregateState) -> Option<ErasureToken> {
    let AggregateState::Tenant(_, st) = state else {
        panic!("not a tenant")
    };
    st.live().expect("live").erasure_token.clone()
}

#[test]
fn suspending_issues_an_erasure_token_that_any_other_status_withdraws() {
    // The token is the decision's nonce, 32 hex digits.
    assert_eq!(ErasureToken::from_nonce(NONCE).0, NONCE_TOKEN);
    // (Issued: `set_status_records_previous_and_reason`.)
    for status in [TenantStatus::Active, TenantStatus::Inactive] {
        Scenario::given(tenant_ref(tenant_a()), [created(), suspended()])
            .when(set_status(status))
            .then_events([changed_now(status, TenantStatus::Suspended, None)])
            .then_state(|s| assert_eq!(token_of(s), None));
    }
}

#[test]
fn erase_with_the_suspensions_token_emits_erased() {
    Scenario::given(tenant_ref(tenant_a()), [created(), suspended()])
        .as_actor(superadmin())
        .when(erase(ISSUED))
        .then_events([Event::Tenant(TenantEvent::Erased(Stamp { at: NOW }))])
        .then_state(|s| {
            let AggregateState::Tenant(_, st) = s else {
                panic!("not a tenant")
            };
            let t = st.live().expect("an erased tenant stays known");
            assert_eq!((t.erased_at, t.erasure_token.clone()), (Some(NOW), None));
        });
}

#[test]
fn erase_refuses_a_wrong_or_stale_token_and_a_tenant_that_is_not_suspended() {
    let refused_token = |history: Vec<Event>, token: &str| {
        Scenario::given(tenant_ref(tenant_a()), history)
            .as_actor(superadmin())
            .when(erase(token))
            .then_error(ErrorCode::ValidationFailed, Some("confirmationToken"));
    };
    // A wrong token.
    refused_token(vec![created(), suspended()], NONCE_TOKEN);
    // A suspension written before tokens existed (v1) issued none.
    refused_token(
        vec![
            created(),
            status_changed(TenantStatus::Suspended, TenantStatus::Active, None),
        ],
        ISSUED,
    );
    // An earlier suspension's token, after reactivating and suspending again.
    refused_token(
        vec![
            created(),
            suspended(),
            status_changed(TenantStatus::Active, TenantStatus::Suspended, None),
            status_changed(
                TenantStatus::Suspended,
                TenantStatus::Active,
                Some(NONCE_TOKEN),
            ),
        ],
        ISSUED,
    );
    // Not suspended (the right token of a suspension since lifted).
    for status in [TenantStatus::Active, TenantStatus::Inactive] {
        let error = Scenario::given(
            tenant_ref(tenant_a()),
            [
                created(),
                suspended(),
                status_changed(status, TenantStatus::Suspended, None),
            ],
        )
        .as_actor(superadmin())
        .when(erase(ISSUED))
        .then_error(ErrorCode::InvalidTransition, None);
        assert_eq!(
            error.to_string(),
            format!("cannot erase a tenant that is {status}")
        );
    }
    // A missing or deleted tenant.
    Scenario::empty(tenant_ref(tenant_a()))
        .as_actor(superadmin())
        .when(erase(ISSUED))
        .then_error(ErrorCode::NotFound, None);
}

#[test]
fn only_a_superadmin_or_the_platform_may_erase() {
    Scenario::given(tenant_ref(tenant_a()), [created(), suspended()])
        .when(erase(ISSUED))
        .then_events([Event::Tenant(TenantEvent::Erased(Stamp { at: NOW }))]);
    for actor in [
        admin_actor(AdminRole::Admin, None),
        // `permissions` cannot grant it.
        admin_actor(
            AdminRole::Admin,
            Some(r#"{"allow": ["tenant.erase", "*"]}"#),
        ),
        admin_actor(AdminRole::Support, Some(r#"{"allow": ["tenant.*"]}"#)),
        member_actor(member_id(1), tenant_a(), MemberRole::Owner),
    ] {
        Scenario::given(tenant_ref(tenant_a()), [created(), suspended()])
            .with_facts(facts_with([tenant_entity(
                tenant_a(),
                TenantStatus::Suspended,
                None,
            )]))
            .as_actor(actor)
            .when(erase(ISSUED))
            .then_error(ErrorCode::Forbidden, None);
    }
}

#[test]
fn an_erased_tenant_refuses_every_command() {
    let history = [created(), suspended(), erased()];
    for c in [
        update(Some("X"), None),
        set_status(TenantStatus::Active),
        cmd(TenantCommand::Delete(ById { id: tenant_a() })),
        erase(ISSUED),
    ] {
        let error = Scenario::given(tenant_ref(tenant_a()), history.clone())
            .as_actor(superadmin())
            .when(c)
            .then_error(ErrorCode::TenantErased, None);
        assert_eq!(error, DomainError::TenantErased(tenant_a()));
    }
    // Commands on the tenant's other aggregates see the erased tenant among their facts.
    let mut gone = tenant_entity(tenant_a(), TenantStatus::Suspended, None);
    gone.erased_at = Some(T0);
    for actor in [
        talkwai_domain::Actor::Platform,
        superadmin(),
        member_actor(member_id(1), tenant_a(), MemberRole::Owner),
    ] {
        Scenario::empty(member_ref(member_id(2)))
            .with_facts(facts_with([gone.clone()]))
            .as_actor(actor)
            .when(Command::Member(MemberCommand::Delete(ById {
                id: member_id(2),
            })))
            .then_error(ErrorCode::TenantErased, None);
    }
}

#[test]
fn erased_only_follows_a_suspension_once() {
    use talkwai_domain::apply;
    let mut state = AggregateState::new(tenant_ref(tenant_a()));
    apply(&mut state, &created()).expect("applies");
    assert!(apply(&mut state, &erased()).is_err(), "not suspended");
    apply(&mut state, &suspended()).expect("applies");
    apply(&mut state, &erased()).expect("applies");
    assert!(apply(&mut state, &erased()).is_err(), "erased twice");
}
