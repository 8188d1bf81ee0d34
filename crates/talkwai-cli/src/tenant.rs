//! `talkwai tenant export`: everything the log holds about one tenant, as one JSON document
//! (a data subject's access request, data portability, the record kept before offboarding).
//!
//! Read from the log, not from the read models: the log is the only truth (the read models may
//! lag, be rebuilding, or — after `tenant.erase` — be gone), and every event is read through
//! `talkwai_proto::event::decode_stored`, the one decoding path of every reader (upcasting
//! today, decryption once personal data is encrypted). The entities are folded from those
//! events by the projector's own row logic ([`talkwai_projector::rows::apply`]), so they have
//! exactly the columns of the `talkwai.*` views.
//!
//! # Layout (`formatVersion` 1)
//! ```text
//! { "format": "talkwai.tenant-export", "formatVersion": 1,
//!   "tenantId": uuid, "exportedAt": RFC 3339, "throughSeq": last stream sequence read,
//!   "erased": bool (the log holds its tenant.erased),
//!   "tenant": row | null, "members": [row], "agents": [row], "tasks": [row],
//!   "users": [row]  ($users identities linked to its members),
//!   "links": [{"from": {"kind", "id"}, "rel", "to": {"kind", "id"}}],
//!   "events": [{"seq", "time", "subject", "type", "version", "actor", "commandId", "data"}] }
//! ```
//! Rows are keyed by column name (`first_name`, `tenant_id`, times in epoch milliseconds) and
//! listed by id; events are in log order with their data in the current version of their type.
//! Deleted entities have no row (their events are listed). Fields are only ever added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures::StreamExt;
use serde_json::{Value, json};
use talkwai_domain::ids::TenantId;
use talkwai_domain::tenant::TenantEvent;
use talkwai_domain::{AggregateRef, EntityKind, Event};
use talkwai_eventstore::{EventStore, StoredMessage};
use talkwai_projector::rows::{self, Row};
use talkwai_proto::event::decode_stored_with;
use talkwai_proto::sealed::Opener;
use talkwai_proto::{Scope, subject};
use uuid::Uuid;

use crate::cli::TenantExportArgs;
use crate::error::CliError;
use crate::events::{EventLine, last_matching_seq, open_store, progress, rfc3339};

/// The `format` of the document.
pub const FORMAT: &str = "talkwai.tenant-export";
/// The layout version of the document.
pub const FORMAT_VERSION: u32 = 1;

/// Runs `talkwai tenant export`.
pub async fn export(
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: TenantExportArgs,
) -> Result<(), CliError> {
    use std::io::Write as _;
    let client = crate::connect(nats_url).await?;
    let store = open_store(&client).await?;
    let keys = crate::events::key_store(&client, keys).await?;
    let document = collect(&store, TenantId(args.tenant), true, keys.as_ref()).await?;
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| CliError::Nats(format!("cannot encode the export: {e}")))?;
    match &args.out {
        Some(path) => write_file(path, &text)?,
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    CliError::OutputClosed
                } else {
                    CliError::io("writing", "stdout", e)
                }
            })?;
        }
    }
    eprintln!(
        "exported tenant {}: {} events, {} members, {} agents, {} tasks",
        args.tenant,
        document["events"].as_array().map_or(0, Vec::len),
        document["members"].as_array().map_or(0, Vec::len),
        document["agents"].as_array().map_or(0, Vec::len),
        document["tasks"].as_array().map_or(0, Vec::len),
    );
    Ok(())
}

/// Writes `text` to `path` through a temporary file renamed into place, so a failed export
/// never leaves a truncated document under the requested name.
fn write_file(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, format!("{text}\n"))
        .map_err(|e| CliError::io("writing", &partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| CliError::io("renaming into", path, e))
}

/// What the export folds while it reads the tenant's part of the log.
#[derive(Default)]
struct Fold {
    rows: BTreeMap<(&'static str, Uuid), Option<Row>>,
    events: Vec<Value>,
    erased: bool,
}

impl Fold {
    /// Lists one stored message and folds it into its row; a message that cannot be read is
    /// the history's corruption, reported with its sequence.
    fn take(&mut self, message: &StoredMessage, keys: &dyn Opener) -> Result<(), CliError> {
        let corrupt = |message_text: String| CliError::Corrupt {
            subject: message.subject.clone(),
            seq: message.seq,
            message: message_text,
        };
        let Some(stored) = decode_stored_with(
            &message.subject,
            |name| message.header(name),
            &message.payload,
            keys,
        )
        .map_err(|e| corrupt(e.to_string()))?
        else {
            // A guard or a command record: not an event.
            return Ok(());
        };
        let body = stored.event.encode();
        let mut line = EventLine::from_message(message, keys);
        line.version = Some(body.version);
        line.data = body.data;
        self.events.push(line.json());
        if matches!(stored.event, Event::Tenant(TenantEvent::Erased(_))) {
            self.erased = true;
        }
        self.fold(&stored.target, &stored.event, message.seq)
            .map_err(corrupt)
    }

    fn fold(&mut self, target: &AggregateRef, event: &Event, seq: u64) -> Result<(), String> {
        let slot = self
            .rows
            .entry((rows::table(target.kind), target.id))
            .or_default();
        rows::apply(slot, target, event, seq)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The live rows of `table`, by id.
    fn table(&self, table: &str) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|((t, _), _)| *t == table)
            .filter_map(|(_, row)| row.as_ref())
            .collect()
    }
}

/// Reads the tenant's events (`talkwai.evt.<tenant>.>`) up to the head at the start, and the
/// `$users` identities its members link to, into the export document. `show_progress` draws
/// a progress bar on stderr.
pub async fn collect(
    store: &EventStore,
    tenant: TenantId,
    show_progress: bool,
    keys: Option<&talkwai_keys::KeyStore>,
) -> Result<Value, CliError> {
    let filter = subject::tenant_events(Scope::Tenant(tenant));
    let mut fold = Fold::default();
    let stop = last_matching_seq(store, &filter).await?;
    if let Some(stop) = stop {
        let bar = progress(Some(stop), "sequences");
        if !show_progress {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        // Read first, then open: the keys the tenant's sealed fields need are fetched at once.
        let mut messages = Vec::new();
        let mut replay = store.replay(1, vec![filter]).await?;
        while let Some(message) = replay.next().await {
            let message = message?;
            bar.set_position(message.seq);
            let seq = message.seq;
            messages.push(message);
            if seq >= stop {
                break;
            }
        }
        bar.finish_and_clear();
        let ring = crate::events::keyring(keys, &messages).await?;
        for message in &messages {
            fold.take(message, &ring)?;
        }
    }
    let tenant_row = fold
        .rows
        .get(&(rows::table(EntityKind::Tenant), tenant.0))
        .cloned()
        .flatten();
    if tenant_row.is_none() && fold.events.is_empty() {
        return Err(CliError::NotFound(format!(
            "tenant {tenant}: the log holds no event of it"
        )));
    }
    let users = linked_users(store, &fold.table("members"), keys).await?;
    let links = links(&fold);
    Ok(json!({
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "tenantId": tenant,
        "exportedAt": rfc3339(now_ms()),
        "throughSeq": stop.unwrap_or(0),
        "erased": fold.erased,
        "tenant": tenant_row,
        "members": fold.table("members"),
        "agents": fold.table("agents"),
        "tasks": fold.table("tasks"),
        "users": users,
        "links": links,
        "events": fold.events,
    }))
}

/// The rows of the `$users` identities `members` link to (platform facts that are the
/// tenant's members' personal data), each folded from its own subject.
async fn linked_users(
    store: &EventStore,
    members: &[&Row],
    keys: Option<&talkwai_keys::KeyStore>,
) -> Result<Vec<Row>, CliError> {
    let ids: BTreeSet<Uuid> = members
        .iter()
        .filter_map(|m| m.get("user_id").and_then(Value::as_str))
        .filter_map(|id| id.parse().ok())
        .collect();
    let mut users = Vec::new();
    for id in ids {
        let target = AggregateRef {
            kind: EntityKind::User,
            tenant: None,
            id,
        };
        let mut fold = Fold::default();
        let user_subject = subject::event(&target);
        let messages = store.read_subject(&user_subject, 0).await?;
        let ring = crate::events::keyring(keys, &messages).await?;
        for message in &messages {
            fold.take(message, &ring)?;
        }
        users.extend(fold.table("users").into_iter().cloned());
    }
    Ok(users)
}

/// The links the rows hold: a task's agent, assignee and creator, a member's `$users` identity.
fn links(fold: &Fold) -> Vec<Value> {
    const TASK_LINKS: [(&str, &str, &str); 4] = [
        ("agent_id", "agent", "agent"),
        ("assigned_to", "assignedTo", "member"),
        ("created_by", "createdBy", "member"),
        ("created_by_admin", "createdByAdmin", "admin"),
    ];
    let link = |from_kind: &str, from: &Row, rel: &str, to_kind: &str, column: &str| {
        from.get(column).and_then(Value::as_str).map(|to| {
            json!({
                "from": {"kind": from_kind, "id": from.get("id")},
                "rel": rel,
                "to": {"kind": to_kind, "id": to},
            })
        })
    };
    let mut out = Vec::new();
    for task in fold.table("tasks") {
        for (column, rel, kind) in TASK_LINKS {
            out.extend(link("task", task, rel, kind, column));
        }
    }
    for member in fold.table("members") {
        out.extend(link("member", member, "user", "user", "user_id"));
    }
    out
}

fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}
