//! How every TalkwAI process connects to NATS: the server list of a `TALKWAI_NATS_URL` value,
//! the credentials it signs in with, and the reconnect policy.
//!
//! Credentials come from exactly one of these (giving two is an error, never a guess):
//!
//! | source | what |
//! |---|---|
//! | `nats://user:password@host:port` (or `nats://token@host:port`) in `TALKWAI_NATS_URL` | user and password, or a token (percent-encoded) |
//! | `TALKWAI_NATS_USER` + `TALKWAI_NATS_PASSWORD` | user and password |
//! | `TALKWAI_NATS_TOKEN` | a token |
//! | `TALKWAI_NATS_NKEY` | path of a file holding an NKey seed (`SU…`) |
//! | `TALKWAI_NATS_CREDS` | path of a `.creds` file (user JWT and seed, decentralised auth) |

use std::path::PathBuf;
use std::time::Duration;

use crate::server_urls;

/// The variable naming the NATS user (with [`PASSWORD_VAR`]).
pub const USER_VAR: &str = "TALKWAI_NATS_USER";
/// The variable holding the NATS password (with [`USER_VAR`]).
pub const PASSWORD_VAR: &str = "TALKWAI_NATS_PASSWORD";
/// The variable holding a NATS token.
pub const TOKEN_VAR: &str = "TALKWAI_NATS_TOKEN";
/// The variable naming a file holding an NKey seed.
pub const NKEY_VAR: &str = "TALKWAI_NATS_NKEY";
/// The variable naming a `.creds` file.
pub const CREDS_VAR: &str = "TALKWAI_NATS_CREDS";

/// Why the NATS credentials of a process are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Two sources of credentials were given.
    #[error("NATS credentials are given twice ({first} and {second}): give exactly one")]
    Ambiguous {
        /// One source.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A variable needs another that is not set.
    #[error("{given} is set but {missing} is not: give both")]
    Incomplete {
        /// The variable that is set.
        given: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// A file named by a variable cannot be read.
    #[error("{variable}: cannot read {path}: {source}")]
    Unreadable {
        /// The variable naming the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value is not what it should be (a seed that is not one, a broken `.creds` file, a
    /// URL whose credentials are not valid percent-encoded UTF-8).
    #[error("{source_name}: {reason}")]
    Invalid {
        /// Where the value came from.
        source_name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The credentials given besides the URL, read from the environment (see the module doc).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None: sign in with what the URL carries, if anything.
    None,
    /// `TALKWAI_NATS_USER` and `TALKWAI_NATS_PASSWORD`.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// `TALKWAI_NATS_TOKEN`.
    Token(String),
    /// The seed in the file `TALKWAI_NATS_NKEY` names.
    NKeySeed(String),
    /// The contents of the `.creds` file `TALKWAI_NATS_CREDS` names.
    CredsFile(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            Credentials::None => "Credentials::None",
            Credentials::UserPassword { .. } => "Credentials::UserPassword(***)",
            Credentials::Token(_) => "Credentials::Token(***)",
            Credentials::NKeySeed(_) => "Credentials::NKeySeed(***)",
            Credentials::CredsFile(_) => "Credentials::CredsFile(***)",
        })
    }
}

impl Credentials {
    /// The credentials the process environment gives.
    pub fn from_env() -> Result<Self, ConnectError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// The credentials `lookup` (a variable name → its value) gives; files are read here.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConnectError> {
        let user = lookup(USER_VAR);
        let password = lookup(PASSWORD_VAR);
        let mut found: Vec<(&'static str, Credentials)> = Vec::new();
        match (user, password) {
            (Some(user), Some(password)) => {
                found.push((USER_VAR, Credentials::UserPassword { user, password }));
            }
            (Some(_), None) => {
                return Err(ConnectError::Incomplete {
                    given: USER_VAR,
                    missing: PASSWORD_VAR,
                });
            }
            (None, Some(_)) => {
                return Err(ConnectError::Incomplete {
                    given: PASSWORD_VAR,
                    missing: USER_VAR,
                });
            }
            (None, None) => {}
        }
        if let Some(token) = lookup(TOKEN_VAR) {
            found.push((TOKEN_VAR, Credentials::Token(token)));
        }
        if let Some(path) = lookup(NKEY_VAR) {
            let seed = read(NKEY_VAR, &path)?.trim().to_owned();
            nkeys::KeyPair::from_seed(&seed).map_err(|e| ConnectError::Invalid {
                source_name: NKEY_VAR,
                reason: format!("{path} does not hold an NKey seed: {e}"),
            })?;
            found.push((NKEY_VAR, Credentials::NKeySeed(seed)));
        }
        if let Some(path) = lookup(CREDS_VAR) {
            let text = read(CREDS_VAR, &path)?;
            async_nats::ConnectOptions::with_credentials(&text).map_err(|e| {
                ConnectError::Invalid {
                    source_name: CREDS_VAR,
                    reason: format!("{path} is not a .creds file: {e}"),
                }
            })?;
            found.push((CREDS_VAR, Credentials::CredsFile(text)));
        }
        match found.len() {
            0 => Ok(Credentials::None),
            1 => Ok(found.remove(0).1),
            _ => Err(ConnectError::Ambiguous {
                first: found[0].0,
                second: found[1].0,
            }),
        }
    }

    /// The variable these credentials came from (`None`: none given).
    fn source(&self) -> Option<&'static str> {
        match self {
            Credentials::None => None,
            Credentials::UserPassword { .. } => Some(USER_VAR),
            Credentials::Token(_) => Some(TOKEN_VAR),
            Credentials::NKeySeed(_) => Some(NKEY_VAR),
            Credentials::CredsFile(_) => Some(CREDS_VAR),
        }
    }
}

fn read(variable: &'static str, path: &str) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|source| ConnectError::Unreadable {
        variable,
        path: PathBuf::from(path),
        source,
    })
}

/// The connect options and server URLs of a `TALKWAI_NATS_URL` value (one URL or several,
/// comma separated), signed in with the credentials of the environment ([`Credentials`]) or
/// of the URL. The options also carry the reconnect policy of [`reconnect_delay`].
pub fn connect_options(
    list: &str,
) -> Result<(async_nats::ConnectOptions, Vec<String>), ConnectError> {
    connect_options_with(list, Credentials::from_env()?)
}

/// [`connect_options`] with the credentials given instead of read from the environment.
///
/// The first `user:password@` (or `token@`) found in the URLs signs in (percent-decoded), and
/// is removed from every URL (async-nats does not read credentials from URLs itself).
pub fn connect_options_with(
    list: &str,
    credentials: Credentials,
) -> Result<(async_nats::ConnectOptions, Vec<String>), ConnectError> {
    let (userinfo, servers) = split_credentials(list);
    let from_url = match userinfo.map(|info| info.split_once(':').ok_or(info)) {
        None => None,
        Some(Ok((user, password))) => Some((decode(user)?, Some(decode(password)?))),
        Some(Err(token)) => Some((decode(token)?, None)),
    };
    let options = match (from_url, credentials) {
        (Some(_), given) if given != Credentials::None => {
            return Err(ConnectError::Ambiguous {
                first: "credentials in TALKWAI_NATS_URL",
                second: given.source().unwrap_or("?"),
            });
        }
        (Some((user, Some(password))), _) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        (Some((token, None)), _) => async_nats::ConnectOptions::with_token(token),
        (None, Credentials::None) => async_nats::ConnectOptions::new(),
        (None, Credentials::UserPassword { user, password }) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        (None, Credentials::Token(token)) => async_nats::ConnectOptions::with_token(token),
        (None, Credentials::NKeySeed(seed)) => async_nats::ConnectOptions::with_nkey(seed),
        (None, Credentials::CredsFile(text)) => async_nats::ConnectOptions::with_credentials(&text)
            .map_err(|e| ConnectError::Invalid {
                source_name: CREDS_VAR,
                reason: e.to_string(),
            })?,
    };
    Ok((options.reconnect_delay_callback(reconnect_delay), servers))
}

/// The server URLs of a `TALKWAI_NATS_URL` value with any credentials removed.
pub fn plain_servers(list: &str) -> Vec<String> {
    split_credentials(list).1
}

/// The first `userinfo` of the URLs in `list`, and the URLs without theirs.
fn split_credentials(list: &str) -> (Option<&str>, Vec<String>) {
    let mut first = None;
    let servers = server_urls(list)
        .into_iter()
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    first.get_or_insert(userinfo);
                    format!("{scheme}://{host}{path}")
                }
                None => url.to_owned(),
            }
        })
        .collect();
    (first, servers)
}

fn decode(part: &str) -> Result<String, ConnectError> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|e| ConnectError::Invalid {
            source_name: "credentials in TALKWAI_NATS_URL",
            reason: format!("not percent-encoded UTF-8: {e}"),
        })
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
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn credentials_in_urls_sign_in_and_are_removed() {
        let (_, servers) = connect_options_with(
            "nats://operator:pw@127.0.0.1:4222, nats://n2:4222",
            Credentials::None,
        )
        .expect("options");
        assert_eq!(servers, ["nats://127.0.0.1:4222", "nats://n2:4222"]);
        let (_, servers) =
            connect_options_with("nats://127.0.0.1:4222", Credentials::None).expect("options");
        assert_eq!(servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            redact("nats://operator:pw@127.0.0.1:4222,nats://tok@h:1"),
            "nats://operator:***@127.0.0.1:4222,nats://***@h:1"
        );
    }

    #[test]
    fn url_credentials_are_percent_decoded() {
        assert!(connect_options_with("nats://op:p%40ss%3A1@h:1", Credentials::None).is_ok());
        let bad = connect_options_with("nats://op:%FF%FE@h:1", Credentials::None);
        assert!(
            matches!(bad, Err(ConnectError::Invalid { .. })),
            "{:?}",
            bad.err()
        );
    }

    #[test]
    fn variables_give_one_kind_of_credentials() {
        assert_eq!(
            Credentials::from_lookup(lookup(&[])).expect("none"),
            Credentials::None
        );
        assert_eq!(
            Credentials::from_lookup(lookup(&[(USER_VAR, "u"), (PASSWORD_VAR, "p")]))
                .expect("user"),
            Credentials::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            Credentials::from_lookup(lookup(&[(TOKEN_VAR, "t")])).expect("token"),
            Credentials::Token("t".into())
        );
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(USER_VAR, "u")])),
            Err(ConnectError::Incomplete {
                given: USER_VAR,
                missing: PASSWORD_VAR
            })
        ));
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(PASSWORD_VAR, "p")])),
            Err(ConnectError::Incomplete { .. })
        ));
        assert!(matches!(
            Credentials::from_lookup(lookup(&[
                (USER_VAR, "u"),
                (PASSWORD_VAR, "p"),
                (TOKEN_VAR, "t")
            ])),
            Err(ConnectError::Ambiguous {
                first: USER_VAR,
                second: TOKEN_VAR
            })
        ));
        // URL credentials and a variable: refused, never one silently preferred.
        let both = connect_options_with("nats://a:b@h:1", Credentials::Token("t".into()));
        assert!(matches!(both, Err(ConnectError::Ambiguous { .. })));
    }

    #[test]
    fn files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("talkwai-connect-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let seed = nkeys::KeyPair::new_user().seed().expect("seed");
        let good = dir.join("user.nk");
        std::fs::write(&good, format!("{seed}\n")).expect("write");
        let bad = dir.join("bad.nk");
        std::fs::write(&bad, "not a seed").expect("write");
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();

        assert_eq!(
            Credentials::from_lookup(lookup(&[(NKEY_VAR, &path(&good))])).expect("seed"),
            Credentials::NKeySeed(seed)
        );
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(NKEY_VAR, &path(&bad))])),
            Err(ConnectError::Invalid {
                source_name: NKEY_VAR,
                ..
            })
        ));
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(CREDS_VAR, &path(&bad))])),
            Err(ConnectError::Invalid {
                source_name: CREDS_VAR,
                ..
            })
        ));
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(CREDS_VAR, &path(&dir.join("missing")))])),
            Err(ConnectError::Unreadable { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_are_not_printed() {
        let text = format!(
            "{:?}",
            Credentials::UserPassword {
                user: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn reconnects_are_quick_and_bounded() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(25));
        assert_eq!(reconnect_delay(3), Duration::from_millis(50));
        assert_eq!(reconnect_delay(100), Duration::from_millis(250));
    }
}
