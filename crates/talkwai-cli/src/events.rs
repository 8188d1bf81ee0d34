//! `talkwai events tail` and `talkwai events show`: the log as operators read it.

use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::{AggregateRef, AggregateState, EntityKind, Event, EventBody, apply};
use talkwai_eventstore::{EventStore, StoredMessage, StreamSettings};
use talkwai_proto::{Scope, headers, subject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cli::{ShowArgs, TailArgs};
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
        duplicate_window: info.config.duplicate_window,
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
