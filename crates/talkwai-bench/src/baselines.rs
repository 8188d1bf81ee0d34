//! What the server gives without the command service: raw durable publishes with a window
//! of acks in flight, raw atomic batches, and the eventstore's group-commit appender.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Deserialize;
use talkwai_eventstore::{AppendRequest, Appender, AppenderConfig, Outbound};
use talkwai_proto::headers;

use crate::drive::{self, Budget, CpuSample, Measured, Op};
use crate::payload::EventFactory;
use crate::report::{REFERENCE, Row};

/// Raw `jetstream::Context::publish` of single events (new subject each, expected last
/// subject sequence 0, `Nats-Msg-Id` as the appender sends them), keeping `window` acks
/// outstanding.
pub async fn raw_single(
    client: &async_nats::Client,
    factory: &EventFactory,
    window: usize,
    budget: Budget,
) -> anyhow::Result<Row> {
    let js = jetstream::new(client.clone());
    let mut in_flight = FuturesUnordered::new();
    let mut latency = drive::histogram();
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
    let cpu = CpuSample::now();
    let start = Instant::now();
    let deadline = start + budget.max_time;
    let mut sent = 0u64;
    let mut settle =
        |result: (Instant, Result<jetstream::publish::PublishAck, String>)| match result.1 {
            Ok(_) => {
                ok += 1;
                drive::record(&mut latency, result.0.elapsed());
            }
            Err(err) => {
                errors += 1;
                first_error.get_or_insert(err);
            }
        };
    while sent < budget.max_ops && Instant::now() < deadline {
        if in_flight.len() >= window.max(1)
            && let Some(done) = in_flight.next().await
        {
            settle(done);
        }
        let message = factory.task_created();
        let mut map = message.headers;
        map.insert(headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        map.insert(
            headers::NATS_MSG_ID,
            message.command_id.to_string().as_str(),
        );
        let t0 = Instant::now();
        let ack = js
            .publish_with_headers(message.subject, map, message.payload)
            .await
            .context("publishing")?;
        in_flight.push(async move { (t0, ack.await.map_err(|e| e.to_string())) });
        sent += 1;
    }
    while let Some(done) = in_flight.next().await {
        settle(done);
    }
    let measured = Measured {
        ok,
        errors,
        first_error,
        elapsed: start.elapsed(),
        latency,
        cpu: cpu.used(),
    };
    Ok(Row::new("baseline", REFERENCE, window, "msg", &measured)
        .note("jetstream publish, ack futures, new subject each, expected seq 0 + Nats-Msg-Id"))
}

#[derive(Deserialize)]
struct BatchAck {
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Raw atomic batches of `size` events, one batch at a time: `size - 1` core publishes
/// with `Nats-Batch-Id` / `Nats-Batch-Sequence`, then the last one as a request with
/// `Nats-Batch-Commit: 1`; every message checks its subject's sequence (0, new subjects).
pub async fn raw_atomic(
    client: &async_nats::Client,
    factory: &EventFactory,
    size: usize,
    budget: Budget,
) -> anyhow::Result<Row> {
    let size = size.max(1);
    let batches = (budget.max_ops / size as u64).max(1);
    let client = client.clone();
    let factory = factory.clone();
    let op: Op = Arc::new(move |_, _| {
        let client = client.clone();
        let factory = factory.clone();
        Box::pin(async move { atomic_batch(&client, &factory, size).await })
    });
    let measured = drive::run(1, Budget::new(batches, budget.max_time), op).await;
    Ok(Row::new(
        "baseline",
        &format!("raw atomic batch of {size}"),
        1,
        &format!("batch of {size}"),
        &measured,
    )
    .times(size as u64)
    .note("one batch in flight; latency is per batch"))
}

async fn atomic_batch(
    client: &async_nats::Client,
    factory: &EventFactory,
    size: usize,
) -> Result<(), String> {
    let batch_id = uuid::Uuid::new_v4().simple().to_string();
    for index in 1..=size {
        let message = factory.task_created();
        let mut map = message.headers;
        map.insert("Nats-Batch-Id", batch_id.as_str());
        map.insert("Nats-Batch-Sequence", index.to_string().as_str());
        map.insert(headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        if index < size {
            client
                .publish_with_headers(message.subject, map, message.payload)
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        map.insert("Nats-Batch-Commit", "1");
        let reply = client
            .request_with_headers(message.subject, map, message.payload)
            .await
            .map_err(|e| e.to_string())?;
        let ack: BatchAck = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
        if let Some(error) = ack.error {
            return Err(format!("batch refused: {error}"));
        }
        if ack.seq.is_none() || ack.count.is_some_and(|c| c != size as u64) {
            return Err(format!(
                "batch ack counts {:?}, sent {size}: {}",
                ack.count,
                String::from_utf8_lossy(&reply.payload)
            ));
        }
    }
    Ok(())
}

/// The eventstore's [`Appender`]: `callers` concurrent single-event appends (new subject
/// each, expected sequence 0, dedupe id), grouped or not.
pub async fn appender(
    client: &async_nats::Client,
    factory: &EventFactory,
    callers: usize,
    config: AppenderConfig,
    budget: Budget,
) -> Row {
    let label = format!(
        "appender group={} max_in_flight={}",
        config.group, config.max_in_flight
    );
    let appender = Appender::start(client.clone(), config);
    let factory = factory.clone();
    let op: Op = Arc::new(move |_, _| {
        let appender = appender.clone();
        let message = factory.task_created();
        Box::pin(async move {
            let request = AppendRequest {
                messages: vec![Outbound {
                    subject: message.subject,
                    headers: message.headers,
                    payload: message.payload,
                    expected_last_subject_seq: Some(0),
                }],
                dedupe_id: Some(message.command_id.to_string()),
                claim_first: false,
            };
            appender
                .append(request)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    });
    let measured = drive::run(callers, budget, op).await;
    Row::new("appender", &label, callers, "msg", &measured)
}
