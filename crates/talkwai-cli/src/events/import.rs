//! `talkwai events import`: export lines appended, in order, to an empty event stream; its
//! key lines restored into the key bucket first.

use talkwai_eventstore::{EventStore, StreamSettings};
use talkwai_keys::KeyStoreConfig;
use talkwai_keys::backup::{Restored, restore};
use talkwai_proto::headers;

use super::export::ExportKeyLine;
use super::progress;
use super::{ExportLine, is_control_header};
use crate::cli::ImportArgs;
use crate::error::CliError;

/// How many publishes an import keeps unacknowledged.
pub const IMPORT_WINDOW: usize = 256;

/// Runs `talkwai events import`: reads export lines from stdin and appends them, in order,
/// to an empty event stream (created when missing).
pub async fn import(nats_url: &str, args: ImportArgs) -> Result<(), CliError> {
    let client = crate::connect(nats_url).await?;
    let settings = StreamSettings {
        replicas: args.replicas,
        ..StreamSettings::default()
    };
    let store = EventStore::open(client, &settings).await?;
    let head = store.last_sequence().await?;
    if head != 0 {
        return Err(CliError::Usage(format!(
            "the event stream {} already holds events (last sequence {head}): import only into an empty stream",
            store.stream_name()
        )));
    }
    let reader = tokio::io::BufReader::new(tokio::io::stdin());
    let summary = import_lines(&store, reader).await?;
    eprintln!(
        "imported {} events into {} (sequences {}..{}); personal-data keys: {} restored, {} already there, {} destroyed here (not restored)",
        summary.count,
        store.stream_name(),
        u64::from(summary.count > 0),
        summary.last_seq,
        summary.keys.written,
        summary.keys.present,
        summary.keys.destroyed
    );
    Ok(())
}

/// What an import appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// Messages appended.
    pub count: u64,
    /// The stream's last sequence afterwards.
    pub last_seq: u64,
    /// What the key lines did to the key bucket.
    pub keys: Restored,
}

/// Key lines restored in one go.
const KEY_BATCH: usize = 1024;

/// Restores the key lines gathered so far into the key bucket (created with the event
/// stream's replicas when missing) and adds the outcome to `total`.
async fn restore_keys(
    store: &EventStore,
    keys: &mut Vec<(String, bytes::Bytes)>,
    total: &mut Restored,
) -> Result<(), CliError> {
    if keys.is_empty() {
        return Ok(());
    }
    let config = KeyStoreConfig {
        replicas: store.replicas(),
        ..KeyStoreConfig::default()
    };
    let done = restore(store.jetstream(), &config, std::mem::take(keys)).await?;
    total.written += done.written;
    total.present += done.present;
    total.destroyed += done.destroyed;
    Ok(())
}

/// Appends every export line of `reader` to `store`'s stream, in order, expecting nobody else
/// to write meanwhile: each message's sequence is predicted and checked against its ack, and
/// `Nats-Expected-Last-Subject-Sequence` (when the original carried it) is set to the
/// subject's previous sequence in this stream, so the server checks the order too. Key lines
/// are restored into the key bucket before the events after them are appended; a key that
/// would replace a different one stops the import ([`talkwai_keys::KeyError::Conflict`]).
pub async fn import_lines(
    store: &EventStore,
    reader: impl tokio::io::AsyncBufRead + Unpin,
) -> Result<ImportSummary, CliError> {
    use tokio::io::AsyncBufReadExt as _;
    let js = store.jetstream();
    let mut next = store.last_sequence().await? + 1;
    let mut last_of_subject = std::collections::HashMap::<String, u64>::new();
    let mut pending = std::collections::VecDeque::new();
    let mut lines = reader.lines();
    let (mut number, mut previous, mut count) = (0u64, 0u64, 0u64);
    let (mut keys, mut restored) = (Vec::new(), Restored::default());
    let bar = progress(None, "events");
    while let Some(text) = lines
        .next_line()
        .await
        .map_err(|e| CliError::io("reading", "stdin", e))?
    {
        number += 1;
        if text.trim().is_empty() {
            continue;
        }
        let line: ExportLine = match serde_json::from_str(&text) {
            Ok(line) => line,
            Err(not_event) => {
                let key: ExportKeyLine = serde_json::from_str(&text).map_err(|_| {
                    CliError::Usage(format!("line {number}: not an export line: {not_event}"))
                })?;
                keys.push(
                    key.key
                        .entry()
                        .map_err(|e| CliError::Usage(format!("line {number}: {e}")))?,
                );
                if keys.len() >= KEY_BATCH {
                    restore_keys(store, &mut keys, &mut restored).await?;
                }
                continue;
            }
        };
        restore_keys(store, &mut keys, &mut restored).await?;
        if line.seq <= previous {
            return Err(CliError::Usage(format!(
                "line {number}: sequence {} after {previous}: lines must be in log order",
                line.seq
            )));
        }
        previous = line.seq;
        let payload = line
            .payload_bytes()
            .map_err(|e| CliError::Usage(format!("line {number}: {e}")))?;
        let mut headers = async_nats::HeaderMap::new();
        let mut expects_subject_seq = false;
        for (name, values) in &line.headers {
            if is_control_header(name) {
                expects_subject_seq |=
                    name.eq_ignore_ascii_case(headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE);
                continue;
            }
            for value in values {
                headers.append(name.as_str(), value.as_str());
            }
        }
        if expects_subject_seq {
            let before = last_of_subject.get(&line.subject).copied().unwrap_or(0);
            headers.insert(
                headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                before.to_string().as_str(),
            );
        }
        let ack = js
            .publish_with_headers(line.subject.clone(), headers, payload)
            .await
            .map_err(|e| CliError::Nats(format!("line {number}: cannot publish: {e}")))?;
        last_of_subject.insert(line.subject, next);
        pending.push_back((number, next, ack));
        next += 1;
        while pending.len() >= IMPORT_WINDOW {
            settle(pending.pop_front()).await?;
            count += 1;
            bar.inc(1);
        }
    }
    while let Some(entry) = pending.pop_front() {
        settle(Some(entry)).await?;
        count += 1;
        bar.inc(1);
    }
    restore_keys(store, &mut keys, &mut restored).await?;
    bar.finish_and_clear();
    Ok(ImportSummary {
        count,
        last_seq: next - 1,
        keys: restored,
    })
}

/// Waits for one import publish's ack and checks it landed at the predicted sequence.
async fn settle(
    entry: Option<(u64, u64, async_nats::jetstream::context::PublishAckFuture)>,
) -> Result<(), CliError> {
    let Some((number, predicted, ack)) = entry else {
        return Ok(());
    };
    let ack = ack.await.map_err(|e| {
        CliError::Nats(format!(
            "line {number}: not stored (import stops; the stream holds the lines before it): {e}"
        ))
    })?;
    if ack.sequence != predicted || ack.duplicate {
        return Err(CliError::Nats(format!(
            "line {number}: stored at sequence {} instead of {predicted}: someone else writes to the stream",
            ack.sequence
        )));
    }
    Ok(())
}
