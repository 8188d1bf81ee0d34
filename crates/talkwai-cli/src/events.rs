//! `talkwai events tail` and `talkwai events show`: the log as operators read it;
//! `talkwai events export` and `talkwai events import`: the log as JSON lines, for backups and
//! moves between clusters.

mod export;
mod import;
mod show;
mod tail;

use serde_json::{Value, json};
use talkwai_domain::EventBody;
use talkwai_eventstore::{EventStore, StoredMessage, StreamSettings};
use talkwai_keys::{KeyArgs, KeyStore, Keyring, keyring_of};
use talkwai_proto::event::sealed_key;
use talkwai_proto::sealed::{Opener, open_data};
use talkwai_proto::{Scope, headers, subject};
use time::OffsetDateTime;

use crate::error::CliError;

pub use export::{ExportLine, export, is_control_header};
pub use import::{IMPORT_WINDOW, ImportSummary, import, import_lines};
pub use show::{History, fold, parse_target, show};
pub use tail::{glob_match, tail};

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

/// The key store, when a master key is given (`None`: sealed fields are shown as stored).
pub async fn key_store(
    client: &async_nats::Client,
    keys: &KeyArgs,
) -> Result<Option<KeyStore>, CliError> {
    keys.open(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .map_err(|e| CliError::Nats(e.to_string()))
}

/// The keys `messages` need to be read in clear (none without a key store).
pub async fn keyring(
    keys: Option<&KeyStore>,
    messages: &[StoredMessage],
) -> Result<Keyring, CliError> {
    keyring_of(keys, messages)
        .await
        .map_err(|e| CliError::Nats(e.to_string()))
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
    /// Sealed personal fields are opened with `keys` (an erased one reads `null` and is named
    /// in the data's `erased` list); without their key they are shown as stored.
    pub fn from_message(message: &StoredMessage, keys: &dyn Opener) -> Self {
        let header = |name: &str| message.header(name).unwrap_or("-").to_owned();
        let scope = sealed_key(&message.subject, |name| message.header(name)).map(|(s, _)| s);
        let (body_type, data) = match serde_json::from_slice::<EventBody>(&message.payload) {
            Ok(mut body) => {
                if let Some(scope) = scope
                    && let Ok(erased) = open_data(&body.event_type, scope, &mut body.data, keys)
                    && !erased.is_empty()
                    && let Value::Object(data) = &mut body.data
                {
                    data.insert("erased".to_owned(), json!(erased));
                }
                (Some(body.event_type), body.data)
            }
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

/// A progress indicator on stderr (hidden when stderr is not a terminal).
pub(crate) fn progress(len: Option<u64>, what: &str) -> indicatif::ProgressBar {
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

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_608_850_680), "2026-11-25T12:14:10.680Z");
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
