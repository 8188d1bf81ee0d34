//! Event versions: every stored version of a type decodes into the current event (upcast), the
//! current version re-encodes to itself, and a version this code does not know is refused.

use serde_json::json;
use talkwai_domain::task::{TaskCompleted, TaskEvent, TaskFailed, TaskOutcome};
use talkwai_domain::upcast::UPCASTERS;
use talkwai_domain::values::{OutcomeSummary, Timestamp};
use talkwai_domain::{DecodeError, Event, current_version};

use crate::events::{all_events, body};
use crate::fixtures::reason;

#[test]
fn task_completed_and_failed_and_tenant_status_changed_are_at_version_2_and_the_rest_at_1() {
    for event in all_events() {
        let body = event.encode();
        let expected = match body.event_type.as_str() {
            "task.completed" | "task.failed" | "tenant.statusChanged" => 2,
            _ => 1,
        };
        assert_eq!(body.version, expected, "{}", body.event_type);
        assert_eq!(event.version(), expected);
    }
    assert_eq!(UPCASTERS.len(), 3, "a new upcaster needs a line above");
}

#[test]
fn tenant_status_changed_version_1_upcasts_with_no_erasure_token() {
    let v1 = json!({"status": "suspended", "previous": "active", "reason": "billing", "at": 5});
    let event = Event::decode(&body("tenant.statusChanged", 1, v1)).expect("decodes");
    assert_eq!(
        event.encode(),
        body(
            "tenant.statusChanged",
            2,
            json!({"status": "suspended", "previous": "active", "reason": "billing", "at": 5})
        )
    );
    // A token was never part of v1: a v1 body holding one is invalid, not upcast.
    let stray = json!({"status": "suspended", "previous": "active", "at": 5,
                       "erasureToken": "0123456789abcdef0123456789abcdef"});
    assert!(matches!(
        Event::decode(&body("tenant.statusChanged", 1, stray)),
        Err(DecodeError::InvalidData { .. })
    ));
}

#[test]
fn version_1_upcasts_with_no_outcome() {
    assert_eq!(
        Event::decode(&body("task.completed", 1, json!({"at": 5}))),
        Ok(Event::Task(TaskEvent::Completed(TaskCompleted {
            outcome: None,
            at: Timestamp(5),
        })))
    );
    assert_eq!(
        Event::decode(&body("task.failed", 1, json!({"reason": "busy", "at": 6}))),
        Ok(Event::Task(TaskEvent::Failed(TaskFailed {
            reason: Some(reason("busy")),
            outcome: None,
            at: Timestamp(6),
        })))
    );
    // Re-encoding writes the current version: the v1 body becomes the v2 one.
    let upcast = Event::decode(&body("task.failed", 1, json!({"at": 6}))).expect("decodes");
    assert_eq!(
        upcast.encode(),
        body(
            "task.failed",
            2,
            json!({"reason": null, "outcome": null, "at": 6})
        )
    );
}

#[test]
fn version_2_carries_the_outcome() {
    let data = json!({"outcome": {"summary": "done", "durationSecs": 12.5,
                                  "transcriptRef": "t/1"}, "at": 7});
    let event = Event::decode(&body("task.completed", 2, data.clone())).expect("decodes");
    let Event::Task(TaskEvent::Completed(TaskCompleted {
        outcome:
            Some(TaskOutcome {
                summary,
                duration_secs: Some(duration),
                ..
            }),
        ..
    })) = &event
    else {
        panic!("not a completed task with an outcome: {event:?}");
    };
    assert_eq!(summary, &OutcomeSummary::parse("done").expect("summary"));
    assert!((duration.secs() - 12.5).abs() < f64::EPSILON);
    assert_eq!(event.encode(), body("task.completed", 2, data));
}

#[test]
fn a_version_1_body_is_read_as_version_1_strictly() {
    // An outcome was never part of v1: a v1 body holding one is invalid, not upcast.
    let e = Event::decode(&body(
        "task.completed",
        1,
        json!({"outcome": {"summary": "x"}, "at": 1}),
    ))
    .expect_err("not a v1 shape");
    assert!(
        matches!(&e, DecodeError::InvalidData { event_type, message }
            if event_type == "task.completed" && message.starts_with("as version 1")),
        "{e:?}"
    );
}

#[test]
fn future_versions_are_a_typed_error_never_a_misread() {
    for (ty, version) in [
        ("task.completed", 3),
        ("task.failed", 3),
        ("task.completed", 0),
        ("task.cancelled", 2),
        ("tenant.created", 2),
    ] {
        assert_eq!(
            Event::decode(&body(ty, version, json!({"at": 1}))),
            Err(DecodeError::UnknownVersion {
                event_type: ty.into(),
                version
            }),
            "{ty} v{version}"
        );
    }
    assert_eq!(current_version("task.completed"), 2);
    assert_eq!(current_version("task.cancelled"), 1);
}
