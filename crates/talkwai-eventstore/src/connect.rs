//! How every TalkwAI process connects to NATS: the server list of a `TALKWAI_NATS_URL` value,
//! the credentials it carries, and the reconnect policy.

use std::time::Duration;

use crate::server_urls;

/// The connect options and server URLs of a `TALKWAI_NATS_URL` value (one URL or several,
/// comma separated): the first `user:password@` (or `token@`) found signs in, and is removed
/// from every URL (async-nats does not read credentials from URLs itself). The options also
/// carry the reconnect policy of [`reconnect_delay`].
pub fn connect_options(list: &str) -> (async_nats::ConnectOptions, Vec<String>) {
    let mut options = async_nats::ConnectOptions::new();
    let mut signed_in = false;
    let servers = server_urls(list)
        .into_iter()
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let Some((userinfo, host)) = authority.rsplit_once('@') else {
                return url.to_owned();
            };
            if !signed_in {
                signed_in = true;
                options = match userinfo.split_once(':') {
                    Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(
                        user.to_owned(),
                        password.to_owned(),
                    ),
                    None => async_nats::ConnectOptions::with_token(userinfo.to_owned()),
                };
            }
            format!("{scheme}://{host}{path}")
        })
        .collect();
    (options.reconnect_delay_callback(reconnect_delay), servers)
}

/// `list` with any password or token replaced by `***` (for messages and logs).
pub fn redact(list: &str) -> String {
    server_urls(list)
        .into_iter()
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_owned();
            };
            match rest.split_once('@') {
                Some((userinfo, host)) if !host.contains('@') => {
                    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                    let shown = if user.is_empty() {
                        "***".to_owned()
                    } else {
                        format!("{user}:***")
                    };
                    format!("{scheme}://{shown}@{host}")
                }
                _ => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Wait before reconnect attempt `attempts`: none for the first, then 25 ms doubling up to
/// 250 ms. async-nats's default doubles up to 4 s, so a 2 s outage could keep a service away
/// for 2–4 s after the server was back; a handful of service connections retrying 4 times a
/// second cost the server nothing.
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(4);
    Duration::from_millis(25 * 2_u64.pow(exp)).min(Duration::from_millis(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_sign_in_and_are_removed() {
        let (_, servers) = connect_options("nats://operator:pw@127.0.0.1:4222, nats://n2:4222");
        assert_eq!(servers, ["nats://127.0.0.1:4222", "nats://n2:4222"]);
        let (_, servers) = connect_options("nats://127.0.0.1:4222");
        assert_eq!(servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            redact("nats://operator:pw@127.0.0.1:4222,nats://tok@h:1"),
            "nats://operator:***@127.0.0.1:4222,nats://***@h:1"
        );
    }

    #[test]
    fn reconnects_are_quick_and_bounded() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(25));
        assert_eq!(reconnect_delay(3), Duration::from_millis(50));
        assert_eq!(reconnect_delay(100), Duration::from_millis(250));
    }
}
