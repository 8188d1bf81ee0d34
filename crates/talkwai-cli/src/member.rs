//! A member as the log of record says it is: its tenant, role, status and `$users` link, folded
//! from its events (`talkwai token mint --member <id>` signs its token with that link as `sub`).

use talkwai_domain::{AggregateRef, AggregateState, EntityKind};
use uuid::Uuid;

use crate::error::CliError;
use crate::events;

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
    let history = events::fold(target, &subject, &messages);
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
