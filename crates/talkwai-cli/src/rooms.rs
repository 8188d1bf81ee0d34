//! `talkwai presence` (who is in a room) and `talkwai rooms watch` (a room's messages, live).
//! Rooms are the tenant rooms `tenant <tenant-id>` and the admin room `admin global`.

use async_nats::Message;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use talkwai_proto::room::{
    ADMIN_ROOM, ADMIN_ROOM_ID, PRESENCE_EVENTS, Peer, PresenceReply, TENANT_ROOM,
};
use talkwai_proto::subject::room_presence;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cli::{PresenceArgs, WatchArgs};
use crate::error::CliError;
use crate::output::line;
use crate::request::{ReadOptions, reply_error, request_json};

/// Checks a room: `tenant <uuid>` or `admin global`.
pub fn check_room(room_type: &str, room_id: &str) -> Result<(), CliError> {
    let valid = match room_type {
        TENANT_ROOM => room_id.parse::<Uuid>().is_ok(),
        ADMIN_ROOM => room_id == ADMIN_ROOM_ID,
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "no room {room_type} {room_id}: rooms are `{TENANT_ROOM} <tenant uuid>` and `{ADMIN_ROOM} {ADMIN_ROOM_ID}`"
        )))
    }
}

/// The subjects `rooms watch` subscribes to: every topic of the room, and its presence
/// announcements.
pub fn watch_subjects(room_type: &str, room_id: &str) -> [String; 2] {
    [
        format!("talkwai.room.{room_type}.{room_id}.topic.>"),
        room_presence(room_type, room_id, PRESENCE_EVENTS),
    ]
}

/// RFC 3339 in UTC with milliseconds, fixed width (`2025-01-31T09:05:00.250Z`).
fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Epoch milliseconds as RFC 3339.
fn from_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_or_else(|_| ms.to_string(), rfc3339)
}

/// One peer as one line: session, kind, user, when it joined and last changed, its data.
pub fn peer_line(peer: &Peer) -> String {
    format!(
        "{}  {} {}  joined {}  updated {}  {}",
        peer.session_id,
        peer.kind,
        peer.user_id,
        from_ms(peer.joined_at),
        from_ms(peer.updated_at),
        Value::Object(peer.data.clone())
    )
}

/// Runs `talkwai presence`: the room's peers (the `presence.get` request).
pub async fn presence(nats_url: &str, args: PresenceArgs) -> Result<(), CliError> {
    check_room(&args.room_type, &args.room_id)?;
    let subject = room_presence(&args.room_type, &args.room_id, "get");
    let client = crate::connect(nats_url).await?;
    let reply = request_json(
        &client,
        &subject,
        args.token.as_ref(),
        Bytes::new(),
        ReadOptions {
            timeout: args.timeout,
            attempts: 2,
        },
        "the presence service (the notifier)",
    )
    .await?;
    if args.json {
        let pretty =
            serde_json::to_string_pretty(&reply).map_err(|e| CliError::Nats(e.to_string()))?;
        line(&pretty)?;
    }
    if let Some(err) = reply_error(&reply, "presence")? {
        return Err(err);
    }
    if args.json {
        return Ok(());
    }
    let reply: PresenceReply = serde_json::from_value(reply.clone())
        .map_err(|e| CliError::Nats(format!("unexpected presence reply ({e}): {reply}")))?;
    let peers = reply.peers.unwrap_or_default();
    let room = format!("{} {}", args.room_type, args.room_id);
    match peers.len() {
        0 => line(&format!("no peers in {room}")),
        n => {
            let noun = if n == 1 { "peer" } else { "peers" };
            line(&format!("{n} {noun} in {room}"))?;
            peers.iter().try_for_each(|peer| line(&peer_line(peer)))
        }
    }
}

/// One received message: when, the subject after the room's prefix (`topic.taskUpdates`,
/// `presence.events`), and its JSON (or text when it is not JSON).
pub fn message_line(message: &Message, prefix: &str, at: OffsetDateTime, json: bool) -> String {
    let suffix = message
        .subject
        .as_str()
        .strip_prefix(prefix)
        .unwrap_or(message.subject.as_str());
    let data = serde_json::from_slice::<Value>(&message.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&message.payload).into_owned()));
    if json {
        json!({"time": rfc3339(at), "subject": suffix, "data": data}).to_string()
    } else {
        format!("{}  {suffix}  {data}", rfc3339(at))
    }
}

/// Runs `talkwai rooms watch`: prints each message until Ctrl-C, or until `--count` messages.
pub async fn watch(nats_url: &str, args: WatchArgs) -> Result<(), CliError> {
    check_room(&args.room_type, &args.room_id)?;
    if args.count == Some(0) {
        return Ok(());
    }
    let client = crate::connect(nats_url).await?;
    let subjects = watch_subjects(&args.room_type, &args.room_id);
    let mut subscriptions = Vec::new();
    for subject in &subjects {
        subscriptions.push(
            client
                .subscribe(subject.clone())
                .await
                .map_err(CliError::nats)?,
        );
    }
    // The server has the subscriptions once the flush returns: nothing published after the
    // line below is missed.
    client.flush().await.map_err(CliError::nats)?;
    eprintln!(
        "talkwai: watching {} and {} (Ctrl-C stops)",
        subjects[0], subjects[1]
    );
    let prefix = format!("talkwai.room.{}.{}.", args.room_type, args.room_id);
    let mut messages = futures::stream::select_all(subscriptions);
    let mut seen = 0u64;
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(CliError::Nats("the connection closed".into()));
                };
                line(&message_line(&message, &prefix, OffsetDateTime::now_utc(), args.json))?;
                seen += 1;
                if args.count.is_some_and(|count| seen >= count) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_tenant_rooms_and_the_admin_room() {
        let tenant = Uuid::new_v4().to_string();
        assert!(check_room("tenant", &tenant).is_ok());
        assert!(check_room("admin", "global").is_ok());
        assert!(check_room("tenant", "acme").is_err());
        assert!(check_room("admin", &tenant).is_err());
        assert!(check_room("lobby", "x").is_err());
        assert_eq!(
            watch_subjects("tenant", &tenant),
            [
                format!("talkwai.room.tenant.{tenant}.topic.>"),
                format!("talkwai.room.tenant.{tenant}.presence.events"),
            ]
        );
    }

    #[test]
    fn messages_print_as_one_line() {
        let message = Message {
            subject: "talkwai.room.admin.global.topic.systemAlerts".into(),
            reply: None,
            payload: Bytes::from_static(b"{\n  \"kind\": \"projectionLag\"\n}"),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        let at = OffsetDateTime::from_unix_timestamp(0).expect("epoch");
        let prefix = "talkwai.room.admin.global.";
        assert_eq!(
            message_line(&message, prefix, at, false),
            r#"1970-01-01T00:00:00.000Z  topic.systemAlerts  {"kind":"projectionLag"}"#
        );
        let json: Value =
            serde_json::from_str(&message_line(&message, prefix, at, true)).expect("json");
        assert_eq!(json["subject"], "topic.systemAlerts");
        assert_eq!(json["data"]["kind"], "projectionLag");
        assert_eq!(from_ms(1_500), "1970-01-01T00:00:01.500Z");
    }
}
