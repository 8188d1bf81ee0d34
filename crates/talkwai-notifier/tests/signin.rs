//! Presence refuses members and admins the log says are erased or inactive (issue 20: "a member
//! who was erased can no longer sign in"), against a real nats-server with the command service
//! in process.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use talkwai_domain::policy::ERASED_ACTOR;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

/// The error of a refused presence request: (code, message).
fn refusal(reply: &Value) -> (&str, &str) {
    assert_eq!(reply["ok"], false, "{reply}");
    (
        reply["error"]["code"].as_str().expect("code"),
        reply["error"]["message"].as_str().expect("message"),
    )
}

/// Sends `talkwai.cmd.<tenant>.member.<action>` with the platform token.
async fn member_command(h: &Harness, tenant: Uuid, action: &str, body: Value) {
    h.ok(
        &format!("talkwai.cmd.{tenant}.member.{action}"),
        body,
        PLATFORM,
    )
    .await;
}

/// The session ids a `get` lists.
fn sessions(reply: &Value) -> Vec<&str> {
    reply["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("peers in {reply}"))
        .iter()
        .map(|p| p["sessionId"].as_str().expect("session id"))
        .collect()
}

#[tokio::test]
async fn erased_and_inactive_members_are_refused_and_dropped_while_others_stay() {
    let h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await; // TTL 2 s
    let w = world(&h).await;
    let t = w.tenant;
    let room = |op: &str| format!("talkwai.room.tenant.{t}.presence.{op}");
    let (erin, erin_user) = member(&h, t, "user").await;
    let (ivy, ivy_user) = member(&h, t, "user").await;
    let (erin_token, ivy_token) = (member_token(erin_user, t), member_token(ivy_user, t));
    let mut events = h.client.subscribe(room("events")).await.expect("sub");

    // All three are in the room (and the notifier has cached their verdicts).
    for (session, token) in [
        ("erin-1", &erin_token),
        ("ivy-1", &ivy_token),
        ("owner-1", &w.owner_token),
    ] {
        let joined = h
            .presence(&room("join"), json!({"sessionId": session}), token)
            .await;
        assert_eq!(joined["ok"], true, "{session}: {joined}");
    }

    // Erin is erased and Ivy deactivated while present.
    member_command(&h, t, "erase", json!({"id": erin})).await;
    member_command(&h, t, "setStatus", json!({"id": ivy, "status": "inactive"})).await;

    // Their next heartbeat is refused and drops their session; joins and gets are refused.
    for (op, session, token, message) in [
        ("heartbeat", "erin-1", &erin_token, ERASED_ACTOR),
        ("heartbeat", "ivy-1", &ivy_token, "member is inactive"),
        ("join", "erin-2", &erin_token, ERASED_ACTOR),
        ("join", "ivy-2", &ivy_token, "member is inactive"),
        ("get", "erin-1", &erin_token, ERASED_ACTOR),
    ] {
        let reply = h
            .presence(&room(op), json!({"sessionId": session}), token)
            .await;
        assert_eq!(refusal(&reply), ("forbidden", message), "{op} {session}");
    }

    // Another member of the same tenant still joins and sees only itself.
    let joined = h
        .presence(
            &room("join"),
            json!({"sessionId": "owner-2"}),
            &w.owner_token,
        )
        .await;
    assert_eq!(joined["ok"], true, "{joined}");
    assert_eq!(sessions(&joined), ["owner-1", "owner-2"]);

    // The dropped sessions were announced as leaves.
    let announced = collect(&mut events, 6, WAIT).await;
    let ops: Vec<(&str, &str)> = announced
        .iter()
        .map(|e| {
            (
                e["op"].as_str().expect("op"),
                e["sessionId"].as_str().expect("session"),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("join", "erin-1"),
            ("join", "ivy-1"),
            ("join", "owner-1"),
            ("leave", "erin-1"),
            ("leave", "ivy-1"),
            ("join", "owner-2"),
        ]
    );

    // The verdict follows the log both ways (Ivy active again joins again), and a member whose
    // user was unlinked, or who was deleted (the link let go with it), is refused as commands
    // refuse it.
    let (dan, dan_user) = member(&h, t, "user").await;
    let dan_token = member_token(dan_user, t);
    let unlinked = Some("user is not linked to a member");
    for (command, token, session, refused) in [
        (
            Some(("setStatus", json!({"id": ivy, "status": "active"}))),
            &ivy_token,
            "ivy-3",
            None,
        ),
        (
            Some(("unlinkUser", json!({"id": ivy}))),
            &ivy_token,
            "ivy-4",
            unlinked,
        ),
        (None, &dan_token, "dan-1", None),
        (
            Some(("delete", json!({"id": dan}))),
            &dan_token,
            "dan-2",
            unlinked,
        ),
    ] {
        if let Some((action, body)) = command {
            member_command(&h, t, action, body).await;
        }
        let join = h
            .presence(&room("join"), json!({"sessionId": session}), token)
            .await;
        match refused {
            None => assert_eq!(join["ok"], true, "{session}: {join}"),
            Some(message) => assert_eq!(refusal(&join), ("forbidden", message), "{session}"),
        }
    }
}

#[tokio::test]
async fn an_erased_admin_is_refused_in_every_room_and_a_never_linked_one_is_not() {
    let h = Harness::start().await;
    let _notifier = h.start_notifier(h.notifier_config()).await;
    let w = world(&h).await;
    let admin_room = |op: &str| format!("talkwai.room.admin.global.presence.{op}");
    let tenant_room = format!("talkwai.room.tenant.{}.presence.join", w.tenant);
    let (admin, user) = (Uuid::new_v4(), common::user(&h).await);
    h.ok(
        "talkwai.cmd.platform.admin.create",
        json!({"id": admin, "firstName": "Ada", "lastName": "Admin",
               "email": format!("ada-{admin}@example.com"), "role": "support", "user": user}),
        PLATFORM,
    )
    .await;
    let token = admin_token(user);
    let joined = h
        .presence(&admin_room("join"), json!({"sessionId": "ada-1"}), &token)
        .await;
    assert_eq!(joined["ok"], true, "{joined}");

    h.ok(
        "talkwai.cmd.platform.admin.erase",
        json!({"id": admin}),
        PLATFORM,
    )
    .await;
    let join = h
        .presence(&admin_room("join"), json!({"sessionId": "ada-2"}), &token)
        .await;
    assert_eq!(refusal(&join), ("forbidden", ERASED_ACTOR));
    let join = h
        .presence(&tenant_room, json!({"sessionId": "ada-3"}), &token)
        .await;
    assert_eq!(refusal(&join), ("forbidden", ERASED_ACTOR));
    // Leaving is always let through.
    let left = h
        .presence(&admin_room("leave"), json!({"sessionId": "ada-1"}), &token)
        .await;
    assert_eq!(left["ok"], true, "{left}");

    // An admin token whose user was never linked to an admin (a dev token, such as `talkwai
    // up`'s demo admin view) still joins; other admins see nothing of the erased one.
    let dev = admin_token(Uuid::new_v4());
    let joined = h
        .presence(&admin_room("join"), json!({"sessionId": "dev-1"}), &dev)
        .await;
    assert_eq!(joined["ok"], true, "{joined}");
    assert_eq!(sessions(&joined), ["dev-1"]);
}
