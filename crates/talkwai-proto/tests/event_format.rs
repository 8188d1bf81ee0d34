//! The event message format round trip: for every event type the domain emits, and any
//! headers, what a writer encodes ([`EventMeta::to_headers`], the body as JSON, the aggregate's
//! subject) [`decode_stored`] reads back unchanged.

use proptest::prelude::*;
use proptest::test_runner::Config;
use talkwai_domain::ids::TenantId;
use talkwai_domain::{AggregateRef, EntityKind};
use talkwai_proto::envelope::is_platform_kind;
use talkwai_proto::event::{ActorRef, CommandPart, EventMeta, StoredEvent, decode_stored};
use talkwai_proto::samples;
use talkwai_proto::subject::{self, Scope};
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Platform),
        uuid().prop_map(|id| Scope::Tenant(TenantId(id))),
    ]
}

fn actor() -> impl Strategy<Value = ActorRef> {
    prop_oneof![
        Just(ActorRef::Platform),
        uuid().prop_map(ActorRef::Member),
        uuid().prop_map(ActorRef::Admin),
    ]
}

fn part() -> impl Strategy<Value = CommandPart> {
    (any::<u32>(), any::<u32>()).prop_map(|(index, total)| CommandPart { index, total })
}

prop_compose! {
    fn meta()(
        event_type in proptest::option::of("[a-z]{1,12}\\.[a-z-]{1,20}"),
        version in proptest::option::of(any::<u32>()),
        tenant in proptest::option::of(scope()),
        actor in proptest::option::of(actor()),
        command_id in proptest::option::of(uuid()),
        occurred_at in proptest::option::of(any::<i64>()),
        part in proptest::option::of(part()),
    ) -> EventMeta {
        EventMeta { event_type, version, tenant, actor, command_id, occurred_at, part }
    }
}

/// What a reader gets back from the (subject, headers, payload) a writer produced.
fn round_trip(target: AggregateRef, meta: &EventMeta, body: &[u8]) -> Option<StoredEvent> {
    let headers = meta.to_headers();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    decode_stored(&subject::event(&target), get, body).unwrap_or_else(|e| panic!("{target:?}: {e}"))
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    #[test]
    fn every_event_type_reads_back_as_written(
        index in any::<prop::sample::Index>(),
        id in uuid(),
        tenant in uuid(),
        meta in meta(),
    ) {
        let events = samples::events();
        let event = events[index.index(events.len())].clone();
        let kind: EntityKind = event.kind();
        let target = AggregateRef {
            kind,
            tenant: (!is_platform_kind(kind)).then_some(TenantId(tenant)),
            id,
        };
        let body = event.encode();
        // A version header, when present, names the body's version (a disagreeing one is
        // refused: `a_version_header_that_disagrees_with_the_body_is_refused`).
        let meta = EventMeta { version: meta.version.map(|_| body.version), ..meta };
        let payload = serde_json::to_vec(&body).expect("an event body serializes");
        let read = round_trip(target, &meta, &payload);
        prop_assert_eq!(read, Some(StoredEvent { target, meta, body, event, erased: Vec::new() }));
    }

    #[test]
    fn the_writer_headers_of_a_body_read_back(index in any::<prop::sample::Index>(), scope in scope()) {
        let events = samples::events();
        let body = events[index.index(events.len())].encode();
        let meta = EventMeta::for_body(&body, scope);
        let headers = meta.to_headers();
        let read = EventMeta::from_headers(|name| {
            headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
        });
        prop_assert_eq!(read.event_type.as_deref(), Some(body.event_type.as_str()));
        prop_assert_eq!(read.version, Some(body.version));
        prop_assert_eq!(read.tenant, Some(scope));
    }
}

#[test]
fn the_samples_hold_every_event_type_the_property_draws_from() {
    let drawn: std::collections::BTreeSet<String> = samples::events()
        .iter()
        .map(|e| e.encode().event_type)
        .collect();
    let domain: std::collections::BTreeSet<String> = talkwai_proto::schema::domain_events()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(drawn, domain, "the property must cover every event type");
}

#[test]
fn a_guard_subject_is_not_an_event() {
    let guard = talkwai_domain::GuardKey::UserMember(talkwai_domain::ids::UserId(Uuid::nil()));
    let read = decode_stored(&subject::guard(&guard), |_| None, b"{}").expect("not an error");
    assert_eq!(read, None);
}

/// The sample task's address.
fn sample_task() -> AggregateRef {
    AggregateRef {
        kind: EntityKind::Task,
        tenant: Some(TenantId(samples::TENANT)),
        id: samples::TASK,
    }
}

#[test]
fn a_version_header_that_disagrees_with_the_body_is_refused() {
    let target = sample_task();
    let body = br#"{"type":"task.completed","version":1,"data":{"at":1}}"#;
    let headers = [(talkwai_proto::headers::EVENT_VERSION, "2")];
    let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let e = decode_stored(&subject::event(&target), get, body).expect_err("mismatch");
    assert!(
        matches!(
            e,
            talkwai_proto::event::DecodeError::VersionMismatch { header: 2, body: 1 }
        ),
        "{e:?}"
    );
    // The same v1 message with its own header reads as the current event, upcast.
    let headers = [(talkwai_proto::headers::EVENT_VERSION, "1")];
    let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let read = decode_stored(&subject::event(&target), get, body)
        .expect("decodes")
        .expect("an event");
    assert_eq!(read.body.version, 1, "the body stays as stored");
    assert_eq!(read.event.encode().version, 2, "the event is current");
}

#[test]
fn a_future_version_is_a_typed_error() {
    let target = sample_task();
    let body = br#"{"type":"task.completed","version":3,"data":{"at":1,"mood":"great"}}"#;
    let e = decode_stored(&subject::event(&target), |_| None, body).expect_err("future");
    assert!(
        matches!(
            &e,
            talkwai_proto::event::DecodeError::Event(talkwai_domain::DecodeError::UnknownVersion {
                version: 3,
                ..
            })
        ),
        "{e:?}"
    );
}
