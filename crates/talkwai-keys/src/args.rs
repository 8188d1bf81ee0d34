//! The key flags every service flattens into its clap `Config`, and the store they open.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use async_nats::jetstream;
use secrecy::{ExposeSecret, SecretString};

use crate::cipher::MasterKey;
use crate::error::KeyError;
use crate::store::{BUCKET, KeyStore, KeyStoreConfig};

/// Where the master key comes from, and the key store's bounds. With no master key at all,
/// personal data is written in clear (and sealed fields cannot be read).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArgs {
    /// The master key: base64 of 32 random bytes (`talkwai keys new-master`).
    #[arg(long, env = "TALKWAI_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<SecretString>,
    /// A file holding the master key (base64), read once at startup; instead of
    /// `TALKWAI_MASTER_KEY`.
    #[arg(long, env = "TALKWAI_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The previous master key, still accepted while `talkwai keys rotate-master` re-wraps the
    /// tenant keys.
    #[arg(long, env = "TALKWAI_MASTER_KEY_PREVIOUS", hide_env_values = true)]
    pub master_key_previous: Option<SecretString>,
    /// Data keys kept unwrapped in memory (0: the default, 100,000).
    #[arg(long, env = "TALKWAI_KEY_CACHE", default_value_t = 0)]
    pub key_cache: usize,
}

impl KeyArgs {
    /// Flags naming `master` (base64) and nothing else.
    pub fn with_master(master: &str) -> Self {
        Self {
            master_key: Some(SecretString::from(master.to_owned())),
            ..Self::default()
        }
    }

    /// The master keys, current first (empty: none configured).
    pub fn masters(&self) -> Result<Vec<MasterKey>, KeyError> {
        let mut masters = Vec::new();
        if let Some(text) = &self.master_key {
            masters.push(MasterKey::from_base64(text.expose_secret())?);
        } else if let Some(path) = &self.master_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| KeyError::BadKey {
                message: format!("master key file {}: {e}", path.display()),
            })?;
            masters.push(MasterKey::from_base64(&text)?);
        }
        if let Some(text) = &self.master_key_previous {
            if masters.is_empty() {
                return Err(KeyError::BadKey {
                    message: "a previous master key without a current one".to_owned(),
                });
            }
            masters.push(MasterKey::from_base64(text.expose_secret())?);
        }
        Ok(masters)
    }

    /// The key store, when a master key is configured; its bucket has `replicas` replicas.
    pub async fn open(
        &self,
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Option<KeyStore>, KeyError> {
        let masters = self.masters()?;
        if masters.is_empty() {
            return Ok(None);
        }
        let defaults = KeyStoreConfig::default();
        let config = KeyStoreConfig {
            bucket: BUCKET.to_owned(),
            replicas,
            cache: NonZeroUsize::new(self.key_cache).unwrap_or(defaults.cache),
            ..defaults
        };
        KeyStore::open(js, masters, config).await.map(Some)
    }
}
