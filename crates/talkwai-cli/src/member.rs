//! A member as the log of record says it is: its tenant, role, status and `$users` link, folded
//! from its events (`talkwai token mint --member <id>` signs its token with that link as `sub`),
//! and `talkwai member invite`: identity, member and token in one step.

use talkwai_domain::{AggregateRef, AggregateState, EntityKind};
use uuid::Uuid;

use crate::cli::InviteArgs;
use crate::error::CliError;
use crate::events;
use crate::send::{SendOptions, send_command};
use crate::token::{TokenSpec, mint, secret_from_env};

/// What a token of the member needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLink {
    /// The member's tenant.
    pub tenant: Uuid,
    /// The linked `$users` id (the token's `sub`).
    pub user: Uuid,
    /// The member's role now (`owner`, `manager`, `user`).
    pub role: String,
}

/// Reads the member's events (in `tenant`, or in any tenant) and returns its link.
///
/// Errors: `NotFound` when the member has no events, was deleted or has no `$users` link
/// (the message says how to add one), `Corrupt` when its history cannot be folded.
pub async fn resolve(
    client: &async_nats::Client,
    keys: &talkwai_keys::KeyArgs,
    member: Uuid,
    tenant: Option<Uuid>,
) -> Result<MemberLink, CliError> {
    let scope = tenant.map_or_else(|| "*".to_owned(), |t| t.to_string());
    let subject = format!("talkwai.evt.{scope}.member.{member}");
    let store = events::open_store(client).await?;
    let messages = store.read_subject(&subject, 0).await?;
    let Some(first) = messages.first() else {
        let place = tenant.map_or_else(|| "any tenant".to_owned(), |t| format!("tenant {t}"));
        return Err(CliError::NotFound(format!(
            "member {member} has no events in {place}"
        )));
    };
    let tenant_of = |subject: &str| {
        subject
            .split('.')
            .nth(2)
            .and_then(|t| t.parse::<Uuid>().ok())
    };
    let tenant = tenant_of(&first.subject).ok_or_else(|| CliError::Corrupt {
        subject: first.subject.clone(),
        seq: first.seq,
        message: "no tenant in the subject".into(),
    })?;
    if let Some(other) = messages
        .iter()
        .find(|m| tenant_of(&m.subject) != Some(tenant))
    {
        return Err(CliError::Usage(format!(
            "member {member} exists in several tenants ({tenant} and {}): pass --tenant",
            other.subject
        )));
    }
    let target = AggregateRef {
        kind: EntityKind::Member,
        tenant: Some(tenant.into()),
        id: member,
    };
    let keys = events::key_store(client, keys).await?;
    let ring = events::keyring(keys.as_ref(), &messages).await?;
    let history = events::fold(target, &subject, &messages, &ring);
    if let Some(err) = history.corrupt {
        return Err(err);
    }
    let AggregateState::Member(_, _, state) = &history.state else {
        return Err(CliError::NotFound(format!("{member} is not a member")));
    };
    let Some(live) = state.live() else {
        return Err(CliError::NotFound(format!(
            "member {member} of tenant {tenant} was deleted"
        )));
    };
    if live.erased {
        return Err(CliError::NotFound(format!(
            "member {member} of tenant {tenant} was erased: it can no longer sign in"
        )));
    }
    let Some(user) = live.user else {
        return Err(CliError::NotFound(format!(
            "member {member} of tenant {tenant} has no $users link, so no token can name it: \
             create the identity (talkwai cmd talkwai.cmd.platform.user.create '{{\"id\":\"<uuid>\",\"email\":\"...\"}}') \
             and link it (talkwai cmd talkwai.cmd.{tenant}.member.linkUser '{{\"id\":\"{member}\",\"user\":\"<uuid>\"}}')"
        )));
    };
    Ok(MemberLink {
        tenant,
        user: user.0,
        role: live.role.as_str().to_owned(),
    })
}

/// Runs `talkwai member invite`: `user.create`, then `member.create` linked to it, then the
/// member's token; prints `{"tenant", "user", "member", "token"}`. A refusal stops at that step
/// (exit 1) and says what was already created.
pub async fn invite(
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: InviteArgs,
) -> Result<(), CliError> {
    let secret = secret_from_env()?;
    let token = args.token.ok_or_else(|| {
        CliError::Usage("--token (or TALKWAI_TOKEN): the platform token or an admin's".into())
    })?;
    let client = crate::connect(nats_url).await?;
    let (user, member) = (Uuid::new_v4(), Uuid::new_v4());
    let steps = [
        (
            "talkwai.cmd.platform.user.create".to_owned(),
            serde_json::json!({"id": user, "email": args.email}),
        ),
        (
            format!("talkwai.cmd.{}.member.create", args.tenant),
            serde_json::json!({"id": member, "firstName": args.first_name,
                "lastName": args.last_name, "email": args.email, "role": args.role, "user": user}),
        ),
    ];
    for (index, (subject, body)) in steps.iter().enumerate() {
        let reply = send_command(
            &client,
            subject,
            body.to_string().into(),
            Some(&token),
            Uuid::new_v4(),
            SendOptions::default(),
        )
        .await?;
        if let Err(error) = reply.reply.into_result() {
            if index > 0 {
                tracing::warn!(%user, "the $users identity was created; the member was not");
            }
            return Err(CliError::Rejected(error));
        }
    }
    let link = resolve(&client, keys, member, Some(args.tenant)).await?;
    let token = mint(
        &TokenSpec {
            kind: talkwai_auth::PrincipalKind::Member,
            sub: link.user,
            tenant: Some(link.tenant),
            role: Some(link.role),
            ttl: args.ttl,
            issuer: None,
            audience: None,
        },
        &secret,
    )?;
    let out = serde_json::json!({
        "tenant": args.tenant, "user": user, "member": member, "token": token,
    });
    crate::output::line(&out.to_string())
}
