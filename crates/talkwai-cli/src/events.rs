//! `talkwai events tail` and `talkwai events show`: the log as operators read it;
//! `talkwai events export` and `talkwai events import`: the log as JSON lines, for backups and
//! moves between clusters.

use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::{AggregateRef, AggregateState, EntityKind, Event, EventBody, apply};
use talkwai_eventstore::{EventStore, StoredMessage, StreamSettings};
use talkwai_proto::{Scope, headers, subject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cli::{ExportArgs, ImportArgs, ShowArgs, TailArgs};
use crate::error::CliError;
use crate::output;

/// Opens the existing event stream without changing its configuration: `EventStore::open`
/// creates or updates the stream, so it is given the replicas and duplicate window the
/// stream already has. A missing stream is `not_found` (nothing was ever written).
pub async fn open_store(client: &async_nats::Client) -> Result<EventStore, CliError> {
    let defaults = StreamSettings::default();
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(&defaults.name).await.map_err(|e| {
        CliError::NotFound(format!(
            "event stream {} ({e}); has the command service ever run here?",
            defaults.name
        ))
    })?;
    let info = stream.info().await.map_err(CliError::nats)?;
    let settings = StreamSettings {
        replicas: info.config.num_replicas,
        duplicate_window: Some(info.config.duplicate_window),
        ..defaults
    };
    Ok(EventStore::open(client.clone(), &settings).await?)
}

/// The subject filter for `--tenant`: one scope's events, or the whole log.
pub fn filter_for(tenant: Option<&str>) -> Result<String, CliError> {
    match tenant {
        None => Ok(subject::ALL_EVENTS.to_owned()),
        Some(token) => {
            let scope = Scope::parse(token).map_err(|e| CliError::Usage(e.to_string()))?;
            Ok(subject::tenant_events(scope))
        }
    }
}

/// The sequence of the last message matching `filter` (wildcards allowed), if any.
pub async fn last_matching_seq(store: &EventStore, filter: &str) -> Result<Option<u64>, CliError> {
    let request = format!("$JS.API.DIRECT.GET.{}", store.stream_name());
    let body = serde_json::to_vec(&json!({ "last_by_subj": filter }))
        .map_err(|e| CliError::Nats(e.to_string()))?;
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.client().request(request, body.into()),
    )
    .await
    .map_err(|_| CliError::Nats("direct get timed out".into()))?
    .map_err(CliError::nats)?;
    if let Some(status) = reply.status {
        return match status.as_u16() {
            404 => Ok(None),
            code => Err(CliError::Nats(format!(
                "direct get failed with status {code}: {}",
                reply.description.unwrap_or_default()
            ))),
        };
    }
    let seq = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Sequence"))
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .ok_or_else(|| CliError::Nats("direct get reply without Nats-Sequence".into()))?;
    Ok(Some(seq))
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (dots too) and
/// `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and which text position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One stored event, as printed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    /// Stream sequence.
    pub seq: u64,
    /// When the server stored it, RFC 3339.
    pub time: String,
    /// The subject.
    pub subject: String,
    /// `Talkwai-Event-Type` (the body's type when the header is missing).
    pub event_type: String,
    /// `Talkwai-Event-Version`.
    pub version: Option<u32>,
    /// `Talkwai-Actor`.
    pub actor: String,
    /// `Talkwai-Command-Id`.
    pub command_id: String,
    /// The body's `data` (the raw payload as a string when it is not an event body).
    pub data: Value,
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T12:14:10.680Z`.
pub fn rfc3339(ms: i64) -> String {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "-".to_owned(),
    }
}

impl EventLine {
    /// Reads the headers and body of a stored message.
    pub fn from_message(message: &StoredMessage) -> Self {
        let header = |name: &str| message.header(name).unwrap_or("-").to_owned();
        let (body_type, data) = match serde_json::from_slice::<EventBody>(&message.payload) {
            Ok(body) => (Some(body.event_type), body.data),
            Err(_) => (
                None,
                Value::String(String::from_utf8_lossy(&message.payload).into_owned()),
            ),
        };
        // The header is what consumers filter on; the body names the type when it is missing.
        let event_type = message
            .header(headers::EVENT_TYPE)
            .map(str::to_owned)
            .or(body_type)
            .unwrap_or_else(|| "-".to_owned());
        Self {
            seq: message.seq,
            time: rfc3339(message.stored_at_ms),
            subject: message.subject.clone(),
            event_type,
            version: message
                .header(headers::EVENT_VERSION)
                .and_then(|v| v.parse().ok()),
            actor: header(headers::ACTOR),
            command_id: header(headers::COMMAND_ID),
            data,
        }
    }

    /// `seq  time  subject  type  actor  command-id  data`.
    pub fn text(&self) -> String {
        format!(
            "{:>6}  {}  {}  {}  {}  {}  {}",
            self.seq,
            self.time,
            self.subject,
            self.event_type,
            self.actor,
            self.command_id,
            self.data
        )
    }

    /// One JSON object.
    pub fn json(&self) -> Value {
        json!({
            "seq": self.seq,
            "time": self.time,
            "subject": self.subject,
            "type": self.event_type,
            "version": self.version,
            "actor": self.actor,
            "commandId": self.command_id,
            "data": self.data,
        })
    }
}

/// Runs `talkwai events tail`.
pub async fn tail(nats_url: &str, args: TailArgs) -> Result<(), CliError> {
    let filter = filter_for(args.tenant.as_deref())?;
    let client = crate::connect(nats_url).await?;
    let store = open_store(&client).await?;
    let head = store.last_sequence().await?;
    let from = match (args.from_seq, args.last) {
        (Some(seq), _) => seq.max(1),
        (None, 0) => head + 1,
        (None, last) => head.saturating_sub(last - 1).max(1),
    };
    let follow = args.follow && !args.no_follow;
    // Without --follow, stop at the last event the filter matches right now.
    let stop = if follow {
        None
    } else {
        match last_matching_seq(&store, &filter).await? {
            Some(last) if last >= from => Some(last),
            _ => return Ok(()),
        }
    };
    let mut replay = store.replay(from, vec![filter]).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let message = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            next = replay.next() => match next {
                Some(message) => message?,
                None => return Ok(()),
            },
        };
        let line = EventLine::from_message(&message);
        let wanted = args
            .event_type
            .as_deref()
            .is_none_or(|pattern| glob_match(pattern, &line.event_type));
        if wanted {
            if args.json {
                output::line(&line.json().to_string())?;
            } else {
                output::line(&line.text())?;
            }
        }
        if stop.is_some_and(|stop| message.seq >= stop) {
            return Ok(());
        }
    }
}

/// Parses `<aggregate>/<id>` with `--tenant` into an aggregate address.
pub fn parse_target(target: &str, tenant: Option<Uuid>) -> Result<AggregateRef, CliError> {
    let (kind, id) = target.split_once('/').ok_or_else(|| {
        CliError::Usage(format!(
            "expected <aggregate>/<id> (e.g. task/<uuid>), got {target:?}"
        ))
    })?;
    let kind = subject::parse_kind(kind).map_err(|e| CliError::Usage(e.to_string()))?;
    let id: Uuid = id
        .parse()
        .map_err(|_| CliError::Usage(format!("invalid id {id:?}: expected a UUID")))?;
    let tenant = match kind {
        EntityKind::Admin | EntityKind::User => {
            if tenant.is_some() {
                return Err(CliError::Usage(format!(
                    "{kind} aggregates are platform-wide: leave out --tenant"
                )));
            }
            None
        }
        EntityKind::Tenant => match tenant {
            Some(t) if t != id => {
                return Err(CliError::Usage(
                    "a tenant aggregate's tenant is itself: leave out --tenant".into(),
                ));
            }
            _ => Some(id.into()),
        },
        EntityKind::Member | EntityKind::Agent | EntityKind::Task => {
            Some(tenant.map(Into::into).ok_or_else(|| {
                CliError::Usage(format!("{kind} aggregates need --tenant <uuid>"))
            })?)
        }
    };
    Ok(AggregateRef { kind, tenant, id })
}

/// The history of one aggregate folded strictly.
#[derive(Debug)]
pub struct History {
    /// The aggregate subject.
    pub subject: String,
    /// Its events in order.
    pub events: Vec<EventLine>,
    /// The folded state (up to the first corrupt event).
    pub state: AggregateState,
    /// The first event that could not be decoded or applied.
    pub corrupt: Option<CliError>,
}

/// Decodes and applies every message with [`talkwai_domain::apply`], stopping the fold at the
/// first event that cannot follow (the rest is still listed).
pub fn fold(target: AggregateRef, subject: &str, messages: &[StoredMessage]) -> History {
    let mut state = AggregateState::new(target);
    let mut corrupt = None;
    let mut events = Vec::with_capacity(messages.len());
    for message in messages {
        events.push(EventLine::from_message(message));
        if corrupt.is_some() {
            continue;
        }
        let failure = |message_text: String| CliError::Corrupt {
            subject: subject.to_owned(),
            seq: message.seq,
            message: message_text,
        };
        let applied = serde_json::from_slice::<EventBody>(&message.payload)
            .map_err(|e| failure(format!("not an event body: {e}")))
            .and_then(|body| Event::decode(&body).map_err(|e| failure(e.to_string())))
            .and_then(|event| apply(&mut state, &event).map_err(|e| failure(e.to_string())));
        if let Err(err) = applied {
            corrupt = Some(err);
        }
    }
    History {
        subject: subject.to_owned(),
        events,
        state,
        corrupt,
    }
}

fn lifecycle(state: &AggregateState) -> &'static str {
    if state.is_live() {
        "live"
    } else if state.version() == 0 {
        "absent"
    } else {
        "deleted"
    }
}

/// Runs `talkwai events show`.
pub async fn show(nats_url: &str, args: ShowArgs) -> Result<(), CliError> {
    let target = parse_target(&args.target, args.tenant)?;
    let subject = subject::event(&target);
    let client = crate::connect(nats_url).await?;
    let store = open_store(&client).await?;
    let messages = store.read_subject(&subject, 0).await?;
    if messages.is_empty() {
        return Err(CliError::NotFound(format!("no events on {subject}")));
    }
    let history = fold(target, &subject, &messages);
    if args.json {
        let document = json!({
            "subject": history.subject,
            "events": history.events.iter().map(EventLine::json).collect::<Vec<_>>(),
            "version": history.state.version(),
            "state": lifecycle(&history.state),
            "corrupt": history.corrupt.as_ref().map(ToString::to_string),
        });
        let pretty =
            serde_json::to_string_pretty(&document).map_err(|e| CliError::Nats(e.to_string()))?;
        output::line(&pretty)?;
    } else {
        output::line(&format!("{} {} ({subject})", target.kind, target.id))?;
        for (index, event) in history.events.iter().enumerate() {
            output::line(&format!(
                "  #{:<3} seq {:<6} {}  {}  {}  command {}  {}",
                index + 1,
                event.seq,
                event.time,
                event.event_type,
                event.actor,
                event.command_id,
                event.data
            ))?;
        }
        output::line(&format!(
            "version {} ({})",
            history.state.version(),
            lifecycle(&history.state)
        ))?;
    }
    match history.corrupt {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

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

/// A progress indicator on stderr (hidden when stderr is not a terminal).
fn progress(len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let bar = match len {
        Some(len) => indicatif::ProgressBar::new(len),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = match len {
        Some(_) => format!(
            "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {what}, {{per_sec}}, eta {{eta}}"
        ),
        None => format!("{{spinner}} [{{elapsed_precise}}] {{pos}} {what}, {{per_sec}}"),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
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
        "imported {} events into {} (sequences {}..{})",
        summary.count,
        store.stream_name(),
        u64::from(summary.count > 0),
        summary.last_seq
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
}

/// Appends every export line of `reader` to `store`'s stream, in order, expecting nobody else
/// to write meanwhile: each message's sequence is predicted and checked against its ack, and
/// `Nats-Expected-Last-Subject-Sequence` (when the original carried it) is set to the
/// subject's previous sequence in this stream, so the server checks the order too.
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
        let line: ExportLine = serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("line {number}: not an export line: {e}")))?;
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
    bar.finish_and_clear();
    Ok(ImportSummary {
        count,
        last_seq: next - 1,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_608_850_680), "2026-11-25T12:14:10.680Z");
    }

    #[test]
    fn globs_match_event_types() {
        assert!(glob_match("task.*", "task.created"));
        assert!(glob_match("*.created", "member.created"));
        assert!(glob_match("task.created", "task.created"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("t?sk.*ed", "task.started"));
        assert!(!glob_match("task.*", "member.created"));
        assert!(!glob_match("task.created", "task.created2"));
        assert!(!glob_match("task.*d", "task.start"));
    }

    #[test]
    fn targets_need_the_right_tenant() {
        let id = Uuid::new_v4();
        let tenant = Uuid::new_v4();
        let task = parse_target(&format!("task/{id}"), Some(tenant)).expect("task parses");
        assert_eq!(task.tenant.map(|t| t.0), Some(tenant));
        assert!(matches!(
            parse_target(&format!("task/{id}"), None),
            Err(CliError::Usage(_))
        ));
        let admin = parse_target(&format!("admin/{id}"), None).expect("admin parses");
        assert_eq!(admin.tenant, None);
        let own = parse_target(&format!("tenant/{id}"), None).expect("tenant parses");
        assert_eq!(own.tenant.map(|t| t.0), Some(id));
        assert!(parse_target("task", Some(tenant)).is_err());
        assert!(parse_target("robot/1", None).is_err());
    }

    #[test]
    fn filters_follow_the_subject_scheme() {
        let tenant = Uuid::new_v4();
        assert_eq!(filter_for(None).ok().as_deref(), Some("talkwai.evt.>"));
        assert_eq!(
            filter_for(Some("platform")).ok().as_deref(),
            Some("talkwai.evt.platform.>")
        );
        assert_eq!(
            filter_for(Some(&tenant.to_string())).ok(),
            Some(format!("talkwai.evt.{tenant}.>"))
        );
        assert!(filter_for(Some("acme")).is_err());
    }
}
