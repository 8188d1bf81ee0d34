//! `talkwai events export`: the log as JSON lines, for backups and moves between clusters.

use futures::StreamExt;
use talkwai_eventstore::StoredMessage;

use super::{filter_for, last_matching_seq, open_store, progress, rfc3339};
use crate::cli::ExportArgs;
use crate::error::CliError;

/// One exported message: a line of `talkwai events export`, read back by `talkwai events import`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportLine {
    /// Stream sequence in the exported stream.
    pub seq: u64,
    /// The subject.
    pub subject: String,
    /// When the exported stream stored it, RFC 3339 (informational: an import is stored now).
    pub time: String,
    /// Every header as stored, values in order.
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    /// The body, verbatim, when it is single-line JSON (every event body is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<serde_json::value::RawValue>>,
    /// The body in standard base64 otherwise.
    #[serde(
        default,
        rename = "payloadBase64",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload_base64: Option<String>,
}

/// Headers the server interprets when a message is published; an import does not replay them
/// as they were (`Nats-Expected-Last-Subject-Sequence` is rewritten, the rest dropped).
pub fn is_control_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "nats-msg-id"
        || lower.starts_with("nats-batch-")
        || lower.starts_with("nats-expected-")
}

impl ExportLine {
    /// The exported form of a stored message.
    pub fn from_message(message: &StoredMessage) -> Self {
        let mut headers = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (name, values) in message.headers.iter() {
            headers
                .entry(name.to_string())
                .or_default()
                .extend(values.iter().map(|v| v.as_str().to_owned()));
        }
        let raw = std::str::from_utf8(&message.payload)
            .ok()
            .filter(|text| !text.contains(['\n', '\r']))
            .and_then(|text| serde_json::value::RawValue::from_string(text.to_owned()).ok());
        let payload_base64 = raw.is_none().then(|| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&message.payload)
        });
        Self {
            seq: message.seq,
            subject: message.subject.clone(),
            time: rfc3339(message.stored_at_ms),
            headers,
            payload: raw,
            payload_base64,
        }
    }

    /// The body's bytes.
    pub fn payload_bytes(&self) -> Result<bytes::Bytes, String> {
        match (&self.payload, &self.payload_base64) {
            (Some(raw), _) => Ok(bytes::Bytes::copy_from_slice(raw.get().as_bytes())),
            (None, Some(encoded)) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map(bytes::Bytes::from)
                    .map_err(|e| format!("payloadBase64 is not base64: {e}"))
            }
            (None, None) => Err("neither payload nor payloadBase64".into()),
        }
    }
}

/// Runs `talkwai events export`: every message of the stream (or of one scope) from
/// `--from-seq` to the head at the start, one JSON line each, on stdout.
pub async fn export(nats_url: &str, args: ExportArgs) -> Result<(), CliError> {
    use std::io::Write as _;
    let filter = filter_for(args.tenant.as_deref())?;
    let client = crate::connect(nats_url).await?;
    let store = open_store(&client).await?;
    let from = args.from_seq.max(1);
    let Some(stop) = last_matching_seq(&store, &filter).await? else {
        eprintln!("exported 0 events: nothing matches {filter}");
        return Ok(());
    };
    if stop < from {
        eprintln!("exported 0 events: the last match is sequence {stop}");
        return Ok(());
    }
    let bar = progress(Some(stop - from + 1), "sequences");
    let mut replay = store.replay(from, vec![filter]).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let closed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::io("writing", "stdout", e)
        }
    };
    let (mut count, mut first, mut last) = (0u64, None, 0u64);
    while let Some(message) = replay.next().await {
        let message = message?;
        let line = serde_json::to_string(&ExportLine::from_message(&message))
            .map_err(|e| CliError::Nats(format!("cannot encode sequence {}: {e}", message.seq)))?;
        writeln!(out, "{line}").map_err(closed)?;
        count += 1;
        first.get_or_insert(message.seq);
        last = message.seq;
        bar.set_position(message.seq - from + 1);
        if message.seq >= stop {
            break;
        }
    }
    out.flush().map_err(closed)?;
    bar.finish_and_clear();
    eprintln!(
        "exported {count} events (sequences {}..{last})",
        first.unwrap_or(0)
    );
    Ok(())
}
