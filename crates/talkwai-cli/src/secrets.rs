//! `<data>/secrets.json`: the platform token and JWT secret of the local system, generated on
//! the first `talkwai up` and found again by every later one. Written with mode 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The file name inside the data dir.
pub const FILE_NAME: &str = "secrets.json";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretsFile {
    platform_token: String,
    jwt_secret: String,
}

/// The local system's secrets. `Debug` prints no secret.
pub struct Secrets {
    /// The platform admin token.
    pub platform_token: SecretString,
    /// The HS256 secret of member and admin JWTs.
    pub jwt_secret: SecretString,
    /// Whether this run generated them.
    pub created: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes, hex.
fn random_hex() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads `path`, or generates fresh secrets and writes them there (0600, atomically).
pub fn load_or_create(path: &Path) -> Result<Secrets, CliError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let file: SecretsFile = serde_json::from_slice(&bytes).map_err(|e| {
                CliError::Usage(format!(
                    "{} is unreadable ({e}); remove it to generate new secrets",
                    path.display()
                ))
            })?;
            if file.platform_token.is_empty() || file.jwt_secret.is_empty() {
                return Err(CliError::Usage(format!(
                    "{} holds an empty secret; remove it to generate new ones",
                    path.display()
                )));
            }
            // Tighten the mode if someone loosened it.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| CliError::io("restricting", path, e))?;
            Ok(Secrets {
                platform_token: SecretString::from(file.platform_token),
                jwt_secret: SecretString::from(file.jwt_secret),
                created: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = SecretsFile {
                platform_token: format!("talkwai-platform-{}", random_hex()),
                jwt_secret: random_hex(),
            };
            let text = serde_json::to_vec_pretty(&file)
                .map_err(|e| CliError::Usage(format!("cannot encode secrets: {e}")))?;
            let tmp = path.with_extension("json.tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| CliError::io("creating", &tmp, e))?;
            out.write_all(&text)
                .and_then(|()| out.sync_all())
                .map_err(|e| CliError::io("writing", &tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| CliError::io("renaming", &tmp, e))?;
            Ok(Secrets {
                platform_token: SecretString::from(file.platform_token),
                jwt_secret: SecretString::from(file.jwt_secret),
                created: true,
            })
        }
        Err(e) => Err(CliError::io("reading", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn secrets_are_generated_once_and_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        let first = load_or_create(&path).expect("first load");
        assert!(first.created);
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "secrets.json must be 0600");
        let second = load_or_create(&path).expect("second load");
        assert!(!second.created);
        assert_eq!(
            first.jwt_secret.expose_secret(),
            second.jwt_secret.expose_secret()
        );
        assert_eq!(
            first.platform_token.expose_secret(),
            second.platform_token.expose_secret()
        );
        assert!(!format!("{second:?}").contains(second.jwt_secret.expose_secret()));
    }
}
