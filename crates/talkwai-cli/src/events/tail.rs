//! `talkwai events tail`: the log as it grows, one line per event.

use futures::StreamExt;

use super::{EventLine, filter_for, last_matching_seq, open_store};
use crate::cli::TailArgs;
use crate::error::CliError;
use crate::output;

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

/// Runs `talkwai events tail`.
pub async fn tail(
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: TailArgs,
) -> Result<(), CliError> {
    let filter = filter_for(args.tenant.as_deref())?;
    let client = crate::connect(nats_url).await?;
    let store = open_store(&client).await?;
    let keys = super::key_store(&client, keys).await?;
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
        let ring = super::keyring(keys.as_ref(), std::slice::from_ref(&message)).await?;
        let line = EventLine::from_message(&message, &ring);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
