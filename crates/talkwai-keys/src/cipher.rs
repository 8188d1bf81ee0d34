//! The cryptography, all of it through RustCrypto's `chacha20poly1305`: XChaCha20-Poly1305
//! with a fresh random 192-bit nonce per message (random nonces are safe at that size), a
//! 256-bit key, and associated data that binds each ciphertext to where it belongs. Nothing
//! here is hand-written crypto: this module only names keys, draws nonces and encodes.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use talkwai_proto::sealed::{SEALED_V1, SEALED_V2, Sealed, Sealer};
use uuid::Uuid;

use crate::error::KeyError;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
const NONCE_LEN: usize = 24;

/// A 256-bit secret key. Never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A new key from the thread's cryptographically secure generator (seeded by the OS).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A key from its bytes (exactly 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::BadKey {
            message: format!("a key is {KEY_LEN} bytes, got {}", bytes.len()),
        })?;
        Ok(Self(array))
    }

    /// Encrypts `plain` with `aad` bound to it: the nonce and the ciphertext (with its tag).
    pub fn encrypt(&self, aad: &[u8], plain: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        // Encryption fails only for a message longer than the cipher's 256 GiB bound.
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .unwrap_or_default();
        (nonce, sealed)
    }

    /// Decrypts what [`Self::encrypt`] made; `None` when it does not open (another key,
    /// another `aad`, or altered bytes).
    pub fn decrypt(&self, aad: &[u8], nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()
    }

    /// Wraps `inner` (a key below this one) under this key, named `wrap`.
    pub fn wrap(&self, wrap: &str, aad: &str, inner: &SecretKey) -> Wrapped {
        let (n, c) = self.encrypt(aad.as_bytes(), &inner.0);
        Wrapped {
            v: 1,
            wrap: wrap.to_owned(),
            n: STANDARD.encode(n),
            c: STANDARD.encode(c),
        }
    }

    /// Unwraps a key wrapped by [`Self::wrap`] with the same `aad`; `None` when it does not
    /// open.
    pub fn unwrap_key(&self, aad: &str, wrapped: &Wrapped) -> Option<SecretKey> {
        let n = STANDARD.decode(&wrapped.n).ok()?;
        let c = STANDARD.decode(&wrapped.c).ok()?;
        let plain = self.decrypt(aad.as_bytes(), &n, &c)?;
        SecretKey::from_bytes(&plain).ok()
    }
}

/// A key wrapped (encrypted) by the key above it, as stored in the key bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapped {
    /// Format version, 1.
    pub v: u32,
    /// The wrapping key's id (a master key's fingerprint, or a tenant key's UUID).
    pub wrap: String,
    /// The nonce, base64.
    pub n: String,
    /// The wrapped key and its tag, base64.
    pub c: String,
}

/// The master key: from the environment or a secret file, never stored in NATS. Its id is a
/// fingerprint (the first 16 hex digits of a SHA-256 over a label and the key), written next
/// to every tenant key it wraps, so a rotation can tell which tenant keys still use the old one.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: SecretKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A master key from its base64 text (32 bytes once decoded; surrounding white space is
    /// ignored, so a secret file may end with a newline).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| KeyError::BadKey {
            message: format!("a master key is base64: {e}"),
        })?;
        Ok(Self::from_key(SecretKey::from_bytes(&bytes)?))
    }

    /// A master key from a key.
    pub fn from_key(key: SecretKey) -> Self {
        let digest = Sha256::new()
            .chain_update(b"talkwai master key id\0")
            .chain_update(key.0)
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self { id, key }
    }

    /// A new random master key and its base64 text (what `talkwai keys new-master` prints).
    pub fn generate() -> (Self, String) {
        let key = SecretKey::random();
        let text = STANDARD.encode(key.0);
        (Self::from_key(key), text)
    }

    /// Its fingerprint.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }
}

/// A data subject's key (a member, an admin, a `$users` entry, a task), with its id.
#[derive(Debug, Clone)]
pub struct DataKey {
    /// Its id, written in every sealed value and in the `Talkwai-Key` header.
    pub id: Uuid,
    /// The key.
    pub key: SecretKey,
}

impl Sealer for DataKey {
    fn key_id(&self) -> Uuid {
        self.id
    }

    fn seal(&self, aad: &str, plain: &str) -> Sealed {
        let (n, c) = self.key.encrypt(aad.as_bytes(), plain.as_bytes());
        Sealed {
            enc: SEALED_V1.to_owned(),
            key: self.id,
            p: Vec::new(),
            n: STANDARD.encode(n),
            c: STANDARD.encode(c),
        }
    }
}

/// Opens one sealed value with `key`; `None` when it does not open.
pub fn open_sealed(key: &SecretKey, sealed: &Sealed, aad: &str) -> Option<String> {
    if sealed.enc != SEALED_V1 && sealed.enc != SEALED_V2 {
        return None;
    }
    let n = STANDARD.decode(&sealed.n).ok()?;
    let c = STANDARD.decode(&sealed.c).ok()?;
    String::from_utf8(key.decrypt(aad.as_bytes(), &n, &c)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_opens_only_with_its_key_and_aad() {
        let key = SecretKey::random();
        let (n, c) = key.encrypt(b"here", b"secret text");
        assert!(
            !c.windows(6).any(|w| w == b"secret"),
            "ciphertext holds the text"
        );
        assert_eq!(
            key.decrypt(b"here", &n, &c).as_deref(),
            Some(&b"secret text"[..])
        );
        assert_eq!(key.decrypt(b"there", &n, &c), None, "other aad");
        assert_eq!(
            SecretKey::random().decrypt(b"here", &n, &c),
            None,
            "other key"
        );
        let mut altered = c.clone();
        altered[0] ^= 1;
        assert_eq!(key.decrypt(b"here", &n, &altered), None, "altered bytes");
        let (n2, _) = key.encrypt(b"here", b"secret text");
        assert_ne!(n, n2, "every message draws its own nonce");
    }

    #[test]
    fn wrap_and_unwrap_a_key() {
        let master = MasterKey::from_key(SecretKey::random());
        let tenant = SecretKey::random();
        let wrapped = master.key().wrap(master.id(), "tenant/t1", &tenant);
        assert_eq!(wrapped.wrap, master.id());
        assert_eq!(master.key().unwrap_key("tenant/t1", &wrapped), Some(tenant));
        assert_eq!(master.key().unwrap_key("tenant/t2", &wrapped), None);
        let other = MasterKey::from_key(SecretKey::random());
        assert_eq!(other.key().unwrap_key("tenant/t1", &wrapped), None);
    }

    #[test]
    fn a_master_key_reads_from_base64_and_keeps_its_fingerprint() {
        let (master, text) = MasterKey::generate();
        let read = MasterKey::from_base64(&format!("{text}\n")).expect("reads");
        assert_eq!(read.id(), master.id());
        assert_eq!(read.id().len(), 16);
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err(), "too short");
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(
            !format!("{master:?}").contains(&text),
            "debug prints no key"
        );
    }

    #[test]
    fn a_data_key_seals_what_open_sealed_opens() {
        let key = DataKey {
            id: Uuid::from_u128(3),
            key: SecretKey::random(),
        };
        let sealed = key.seal("aad", "jane@example.com");
        assert_eq!(sealed.key, key.id);
        assert!(!sealed.c.contains("jane"));
        assert_eq!(
            open_sealed(&key.key, &sealed, "aad").as_deref(),
            Some("jane@example.com")
        );
        assert_eq!(open_sealed(&key.key, &sealed, "other"), None);
    }
}
