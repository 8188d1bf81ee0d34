//! `talkwai events export`: the log as JSON lines, for backups and moves between clusters,
//! preceded by the wrapped personal-data keys its sealed fields need (key lines).

use futures::StreamExt;
use talkwai_eventstore::StoredMessage;
use talkwai_keys::backup::KeyLine;
use talkwai_proto::Scope;

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

/// A key line of `talkwai events export`: one entry of the key bucket `TALKWAI_KEYS` as
/// stored (wrapped by its tenant key, which is wrapped by the master key), in the line format
/// of `talkwai keys export`. Key lines come first, before every event line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportKeyLine {
    /// The key.
    pub key: KeyLine,
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

/// Runs `talkwai events export`: the personal-data keys of the scope (every key of the bucket
/// without `--tenant`), then every message of the stream (or of one scope) from `--from-seq`
/// to the head at the start, one JSON line each, on stdout. The keys are read after the head
/// is fixed: a key is durable before the first event it seals is appended, so every exported
/// event's key is in the export unless it was destroyed.
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
    let scope = args
        .tenant
        .as_deref()
        .map(Scope::parse)
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let keys = talkwai_keys::backup::entries(store.jetstream(), talkwai_keys::store::BUCKET, scope)
        .await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let closed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::OutputClosed
        } else {
            CliError::io("writing", "stdout", e)
        }
    };
    for (name, value) in &keys {
        let line = serde_json::to_string(&ExportKeyLine {
            key: KeyLine::new(name.clone(), value),
        })
        .map_err(|e| CliError::Nats(format!("cannot encode key {name}: {e}")))?;
        writeln!(out, "{line}").map_err(closed)?;
    }
    let bar = progress(Some(stop - from + 1), "sequences");
    let mut replay = store.replay(from, vec![filter]).await?;
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
        "exported {count} events (sequences {}..{last}) and {} personal-data keys",
        first.unwrap_or(0),
        keys.len()
    );
    Ok(())
}
