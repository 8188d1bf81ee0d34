//! `talkwai events show`: one aggregate's history, folded strictly.

use serde_json::json;
use talkwai_domain::{AggregateRef, AggregateState, EntityKind, apply};
use talkwai_eventstore::StoredMessage;
use talkwai_keys::KeyArgs;
use talkwai_proto::event::decode_stored_with;
use talkwai_proto::sealed::Opener;
use talkwai_proto::subject;
use uuid::Uuid;

use super::{EventLine, open_store};
use crate::cli::ShowArgs;
use crate::error::CliError;
use crate::output;

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
pub fn fold(
    target: AggregateRef,
    subject: &str,
    messages: &[StoredMessage],
    keys: &dyn Opener,
) -> History {
    let mut state = AggregateState::new(target);
    let mut corrupt = None;
    let mut events = Vec::with_capacity(messages.len());
    for message in messages {
        events.push(EventLine::from_message(message, keys));
        if corrupt.is_some() {
            continue;
        }
        let failure = |message_text: String| CliError::Corrupt {
            subject: subject.to_owned(),
            seq: message.seq,
            message: message_text,
        };
        let applied = decode_stored_with(
            &message.subject,
            |name| message.header(name),
            &message.payload,
            keys,
        )
        .map_err(|e| failure(e.to_string()))
        .and_then(|stored| stored.ok_or_else(|| failure("not an aggregate's subject".into())))
        .and_then(|stored| apply(&mut state, &stored.event).map_err(|e| failure(e.to_string())));
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
pub async fn show(nats_url: &str, keys: &KeyArgs, args: ShowArgs) -> Result<(), CliError> {
    let target = parse_target(&args.target, args.tenant)?;
    let subject = subject::event(&target);
    let client = crate::connect(nats_url).await?;
    let store = open_store(&client).await?;
    let messages = store.read_subject(&subject, 0).await?;
    if messages.is_empty() {
        return Err(CliError::NotFound(format!("no events on {subject}")));
    }
    let keys = super::key_store(&client, keys).await?;
    let ring = super::keyring(keys.as_ref(), &messages).await?;
    let history = fold(target, &subject, &messages, &ring);
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
}
