//! One trace links a command, its append, its projection and its notification: the caller's
//! W3C `traceparent` travels in NATS headers through the command service into the event's
//! headers, and the projector and the notifier parent their spans on it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use common::{PLATFORM, Stack};
use opentelemetry::trace::{SpanId, TraceId};
use serde_json::json;
use talkwai_proto::{CommandReply, headers};
use talkwai_testkit::wait::poll_until;
use uuid::Uuid;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_command_append_projection_and_notification() {
    let telemetry = talkwai_telemetry::init_for_tests();
    let mut stack = Stack::start().await;
    let db = stack.db.clone();
    stack.start_projector(stack.projector_config(&db)).await;
    let notifier = talkwai_notifier::Notifier::build(talkwai_notifier::Config::for_tests(
        &stack.nats.url(),
        PLATFORM,
        "secret",
    ))
    .await
    .expect("notifier builds");
    let notifying = tokio::spawn(async move {
        notifier
            .run(std::future::pending())
            .await
            .expect("notifier runs");
    });

    let mut request = HeaderMap::new();
    request.insert(headers::COMMAND_ID, Uuid::new_v4().to_string().as_str());
    request.insert(
        headers::AUTHORIZATION,
        format!("Bearer {PLATFORM}").as_str(),
    );
    request.insert(
        headers::TRACEPARENT,
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").as_str(),
    );
    let tenant = Uuid::new_v4();
    let reply = stack
        .client
        .request_with_headers(
            "talkwai.cmd.platform.tenant.create",
            request,
            serde_json::to_vec(&json!({"id": tenant, "name": "Traced"}))
                .expect("json")
                .into(),
        )
        .await
        .expect("reply");
    let reply: CommandReply = serde_json::from_slice(&reply.payload).expect("reply body");
    let accepted = reply.into_result().expect("accepted");
    stack.wait_caught_up(&db).await;

    // The event carries the command span's context: the caller's trace, a new parent span.
    let event = stack
        .store
        .jetstream()
        .get_stream(stack.store.stream_name())
        .await
        .expect("stream")
        .get_raw_message(accepted.seq)
        .await
        .expect("event");
    let traceparent = event
        .headers
        .get(headers::TRACEPARENT)
        .map(|v| v.as_str().to_owned())
        .expect("the event carries a traceparent");
    assert!(traceparent.starts_with(&format!("00-{TRACE_ID}-")));
    assert!(!traceparent.contains(CALLER_SPAN), "{traceparent}");

    let want = TraceId::from_hex(TRACE_ID).expect("trace id");
    let names = ["command", "append", "project", "notify"];
    let seen: BTreeSet<String> = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            telemetry
                .spans()
                .into_iter()
                .filter(|s| s.span_context.trace_id() == want)
                .map(|s| s.name.to_string())
                .collect::<BTreeSet<String>>()
        },
        |seen| names.iter().all(|n| seen.contains(*n)),
    )
    .await
    .unwrap_or_else(|last| last.unwrap_or_default());
    for name in names {
        assert!(
            seen.contains(name),
            "no `{name}` span in trace {TRACE_ID}: {seen:?}"
        );
    }
    let spans = telemetry.spans();
    let in_trace = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.span_context.trace_id() == want)
            .expect("span")
    };
    let command = in_trace("command");
    assert_eq!(
        command.parent_span_id,
        SpanId::from_hex(CALLER_SPAN).expect("span id"),
        "the command span's parent is the caller's span"
    );
    assert_eq!(
        in_trace("append").parent_span_id,
        command.span_context.span_id()
    );
    // The projector and notifier spans hang off the command span (the event's traceparent).
    assert_eq!(
        in_trace("project").parent_span_id,
        command.span_context.span_id()
    );
    assert_eq!(
        in_trace("notify").parent_span_id,
        command.span_context.span_id()
    );
    let command_fields: Vec<String> = command
        .attributes
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    for field in ["aggregate=tenant", "action=create", "outcome=accepted"] {
        assert!(
            command_fields.iter().any(|f| f == field),
            "{field} missing in {command_fields:?}"
        );
    }

    notifying.abort();
    stack.stop().await;
}
