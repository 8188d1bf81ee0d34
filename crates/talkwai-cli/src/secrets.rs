//! `<data>/secrets.json`: the platform token, the JWT secret and the NATS credentials (one
//! password per user of `deploy/nats/auth.conf`, the auth callout's account key) of the local
//! system, generated on the first `talkwai up` and found again by every later one; a file of an
//! older version gains the missing ones. Written with mode 0600.
//!
//! `<data>/master.key`: the master key that seals personal data (base64, what
//! `TALKWAI_MASTER_KEY_FILE` names), generated once by [`master_key_file`], mode 0600.

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nats: Option<NatsFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NatsFile {
    command_password: String,
    projector_password: String,
    notifier_password: String,
    /// Added after the first release: a file without it gains one.
    #[serde(default)]
    query_password: String,
    tenant_password: String,
    operator_password: String,
    /// Seed of the account nkey that signs the auth callout's answers.
    callout_seed: String,
}

impl NatsFile {
    fn generate() -> Self {
        Self {
            command_password: random_hex(),
            projector_password: random_hex(),
            notifier_password: random_hex(),
            query_password: random_hex(),
            tenant_password: random_hex(),
            operator_password: random_hex(),
            callout_seed: String::new(),
        }
    }
}

/// The passwords of the NATS users of `deploy/nats/auth.conf` and the auth callout's signing
/// key. `Debug` prints no secret.
pub struct NatsSecrets {
    /// `command-service`.
    pub command_password: SecretString,
    /// `projector`.
    pub projector_password: SecretString,
    /// `notifier`.
    pub notifier_password: SecretString,
    /// `query-service`.
    pub query_password: SecretString,
    /// `tenant-acme`, the demo tenant's static credential.
    pub tenant_password: SecretString,
    /// `operator`: every subject (the CLI, `up` itself, the auth callout).
    pub operator_password: SecretString,
    /// The account key signing the auth callout's user JWTs (its public key is the `issuer`).
    pub callout_key: std::sync::Arc<nkeys::KeyPair>,
}

/// The local system's secrets. `Debug` prints no secret.
pub struct Secrets {
    /// The platform admin token.
    pub platform_token: SecretString,
    /// The HS256 secret of member and admin JWTs.
    pub jwt_secret: SecretString,
    /// The NATS credentials.
    pub nats: NatsSecrets,
    /// Whether this run generated them.
    pub created: bool,
    /// The master key file `up` hands every service (`TALKWAI_MASTER_KEY_FILE`): its own
    /// [`MASTER_KEY_FILE`], or `None` when the operator configured a master key.
    pub master_key_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NatsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecrets")
            .field("callout_issuer", &self.callout_key.public_key())
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

/// Reads `path`, or generates fresh secrets and writes them there (0600, atomically). A file
/// without NATS credentials (written by an older `talkwai up`) gets them added.
pub fn load_or_create(path: &Path) -> Result<Secrets, CliError> {
    let (mut file, created) = match std::fs::read(path) {
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
            (file, false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            SecretsFile {
                platform_token: format!("talkwai-platform-{}", random_hex()),
                jwt_secret: random_hex(),
                nats: None,
            },
            true,
        ),
        Err(e) => return Err(CliError::io("reading", path, e)),
    };
    let mut dirty = created;
    let nats = file.nats.get_or_insert_with(|| {
        dirty = true;
        NatsFile::generate()
    });
    if nats.query_password.is_empty() {
        nats.query_password = random_hex();
        dirty = true;
    }
    let callout_key = match nkeys::KeyPair::from_seed(&nats.callout_seed) {
        Ok(key) => key,
        Err(_) => {
            let key = nkeys::KeyPair::new_account();
            nats.callout_seed = key
                .seed()
                .map_err(|e| CliError::Usage(format!("cannot encode an nkey seed: {e}")))?;
            dirty = true;
            key
        }
    };
    if dirty {
        write_private(path, &file)?;
    }
    let nats = file
        .nats
        .take()
        .ok_or_else(|| CliError::Usage("nats secrets vanished while loading".into()))?;
    Ok(Secrets {
        platform_token: SecretString::from(file.platform_token),
        jwt_secret: SecretString::from(file.jwt_secret),
        nats: NatsSecrets {
            command_password: SecretString::from(nats.command_password),
            projector_password: SecretString::from(nats.projector_password),
            notifier_password: SecretString::from(nats.notifier_password),
            query_password: SecretString::from(nats.query_password),
            tenant_password: SecretString::from(nats.tenant_password),
            operator_password: SecretString::from(nats.operator_password),
            callout_key: std::sync::Arc::new(callout_key),
        },
        created,
        master_key_file: None,
    })
}

/// The master key file's name inside the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

/// `<data>/master.key`: checked (a master key, mode 0600) when it is there, else generated
/// and written (0600, atomically). Returns its path and whether it was created. Losing the
/// file loses every sealed field of the local system: it is never rewritten.
pub fn master_key_file(data: &Path) -> Result<(std::path::PathBuf, bool), CliError> {
    let path = data.join(MASTER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            talkwai_keys::MasterKey::from_base64(&text).map_err(|e| {
                CliError::Usage(format!(
                    "{} is not a master key ({e}); it seals this data dir's personal data: \
                     restore it, or remove the whole data dir",
                    path.display()
                ))
            })?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| CliError::io("restricting", &path, e))?;
            Ok((path, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (_, text) = talkwai_keys::MasterKey::generate();
            write_private_bytes(&path, format!("{text}\n").as_bytes())?;
            Ok((path, true))
        }
        Err(e) => Err(CliError::io("reading", &path, e)),
    }
}

/// Writes `file` to `path` with mode 0600, through a temp file and a rename.
fn write_private(path: &Path, file: &SecretsFile) -> Result<(), CliError> {
    let text = serde_json::to_vec_pretty(file)
        .map_err(|e| CliError::Usage(format!("cannot encode secrets: {e}")))?;
    write_private_bytes(path, &text)
}

/// Writes `text` to `path` with mode 0600, through a temp file and a rename.
fn write_private_bytes(path: &Path, text: &[u8]) -> Result<(), CliError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CliError::io("creating", &tmp, e))?;
    out.write_all(text)
        .and_then(|()| out.sync_all())
        .map_err(|e| CliError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CliError::io("renaming", &tmp, e))
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
        assert_eq!(
            first.nats.operator_password.expose_secret(),
            second.nats.operator_password.expose_secret()
        );
        assert_eq!(
            first.nats.callout_key.public_key(),
            second.nats.callout_key.public_key()
        );
        assert!(!format!("{second:?}").contains(second.nats.operator_password.expose_secret()));
    }

    #[test]
    fn an_older_file_gains_nats_credentials_and_keeps_its_secrets() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, r#"{"platformToken":"p-old","jwtSecret":"j-old"}"#).expect("write");
        let loaded = load_or_create(&path).expect("load");
        assert!(!loaded.created);
        assert_eq!(loaded.platform_token.expose_secret(), "p-old");
        assert_eq!(loaded.jwt_secret.expose_secret(), "j-old");
        let again = load_or_create(&path).expect("load again");
        assert_eq!(
            loaded.nats.command_password.expose_secret(),
            again.nats.command_password.expose_secret(),
            "the added credentials are written back"
        );
        assert_eq!(again.platform_token.expose_secret(), "p-old");
    }

    #[test]
    fn the_master_key_is_generated_once_private_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, created) = master_key_file(dir.path()).expect("first");
        assert!(created);
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "master.key must be 0600");
        let text = std::fs::read_to_string(&path).expect("read");
        talkwai_keys::MasterKey::from_base64(&text).expect("a master key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (again, created) = master_key_file(dir.path()).expect("second");
        assert_eq!((again.as_path(), created), (path.as_path(), false));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text, "kept");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "tightened again");
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            master_key_file(dir.path()),
            Err(CliError::Usage(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "not a key");
    }
}
