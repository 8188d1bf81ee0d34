//! Public keys of an external identity provider: EdDSA (Ed25519) and RS256, from a PEM file or
//! a JWKS file (selected by the token's `kid`).
//!
//! A key is bound to one algorithm when it is loaded (an Ed25519 key verifies `EdDSA` only, an
//! RSA key `RS256` only), and a token's `alg` picks among keys of that algorithm alone, so an
//! HS256 token can never be checked against a public key used as an HMAC secret (algorithm
//! confusion). Symmetric (`oct`) keys and encryption keys in a JWKS are ignored.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Why key material could not be loaded. Messages name the file, never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The PEM holds neither an Ed25519 nor an RSA public key.
    #[error("{source_name}: not an Ed25519 or RSA public key in PEM form")]
    Pem {
        /// Where the PEM came from.
        source_name: String,
    },
    /// The JWKS is not `{"keys": [...]}` or holds no usable signing key.
    #[error("{source_name}: {message}")]
    Jwks {
        /// Where the JWKS came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// One public key, bound to the one algorithm it verifies.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The public keys tokens may be signed with.
#[derive(Clone, Default)]
pub struct PublicKeys {
    keys: Vec<PublicKey>,
}

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| (k.kid.as_deref().unwrap_or("-"), k.alg)),
            )
            .finish()
    }
}

impl PublicKeys {
    /// No keys (only HS256 and the platform token verify).
    pub fn none() -> Self {
        Self::default()
    }

    /// One Ed25519 (`EdDSA`) or RSA (`RS256`) public key in PEM (SPKI) form.
    pub fn from_pem(pem: &[u8], source_name: &str) -> Result<Self, KeyError> {
        // The PEM decoder classifies the key by its OID: each constructor accepts only its kind.
        let (alg, key) = match DecodingKey::from_ed_pem(pem) {
            Ok(key) => (Algorithm::EdDSA, key),
            Err(_) => match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(_) => {
                    return Err(KeyError::Pem {
                        source_name: source_name.to_owned(),
                    });
                }
            },
        };
        Ok(Self {
            keys: vec![PublicKey {
                kid: None,
                alg,
                key,
            }],
        })
    }

    /// The signing keys of a JWKS document (`{"keys": [...]}`): `RSA` keys for `RS256` and
    /// `OKP`/`Ed25519` keys for `EdDSA`. Keys for other algorithms, encryption keys and
    /// symmetric keys are skipped; a document with no usable key is an error.
    pub fn from_jwks(json: &[u8], source_name: &str) -> Result<Self, KeyError> {
        let jwks_error = |message: String| KeyError::Jwks {
            source_name: source_name.to_owned(),
            message,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| jwks_error(format!("not valid JSON: {e}")))?;
        let entries = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| jwks_error("a JWKS is an object with a 'keys' array".into()))?;
        let mut keys = Vec::new();
        for entry in entries {
            // One unreadable or foreign key does not disable the others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            if let Some(key) = signing_key(&jwk) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(jwks_error("no RS256 or EdDSA signing key".into()));
        }
        Ok(Self { keys })
    }

    /// Loads the PEM file and the JWKS file, when given (both may be).
    pub fn load(pem_file: Option<&Path>, jwks_file: Option<&Path>) -> Result<Self, KeyError> {
        let mut all = Self::none();
        if let Some(path) = pem_file {
            all.keys
                .extend(Self::from_pem(&read(path)?, &path.display().to_string())?.keys);
        }
        if let Some(path) = jwks_file {
            all.keys
                .extend(Self::from_jwks(&read(path)?, &path.display().to_string())?.keys);
        }
        Ok(all)
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token signed with `alg` and naming `kid`: the key with that `kid` (it must
    /// be bound to `alg`), else, for a token without a `kid` or with one no key has, the only
    /// key of that algorithm without a `kid` (a PEM key) or, failing that, the only key of that
    /// algorithm at all.
    pub(crate) fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&PublicKey, String> {
        if let Some(kid) = kid
            && let Some(key) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
        {
            return if key.alg == alg {
                Ok(key)
            } else {
                Err("wrong algorithm for key".into())
            };
        }
        let of_alg = || self.keys.iter().filter(|k| k.alg == alg);
        let mut unnamed = of_alg().filter(|k| k.kid.is_none());
        if let (Some(key), None) = (unnamed.next(), unnamed.next()) {
            return Ok(key);
        }
        let mut any = of_alg();
        match (any.next(), any.next(), kid) {
            (Some(key), None, None) => Ok(key),
            (None, _, _) => Err("wrong algorithm".into()),
            (Some(_), _, Some(_)) => Err("unknown key id".into()),
            (Some(_), Some(_), None) => Err("token needs a key id".into()),
        }
    }
}

/// The key a JWK names, when it is an RS256 or EdDSA signing key.
fn signing_key(jwk: &Jwk) -> Option<PublicKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    (key.family() == alg.family()).then(|| PublicKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
