//! Identities: who presents a bearer token. The platform admin token (like the seed's
//! `INSTANT_ADMIN_TOKEN`) bootstraps tenants and the first superadmin; everyone else presents a
//! JWT whose claims name a `$users` id (`sub`), a `kind` (member or admin), the member's
//! `tenant` and a `role`. Services resolve current roles and statuses from the log; the token
//! only says who the caller is.
//!
//! JWTs are HS256 (a shared secret, what `talkwai token mint` signs) or, for an external
//! identity provider, EdDSA (Ed25519) or RS256 with public keys from a PEM or JWKS file
//! ([`keys`]). `exp`, `nbf`, `iss` and `aud` are checked for every algorithm. The token's `alg`
//! chooses which configured key may verify it, and each key verifies only its own algorithm, so
//! an HS256 token signed with a public key as the secret, `alg: none` or any other algorithm is
//! refused. [`limit`] holds the per-tenant rate limiter the services apply after verification;
//! [`admission`] puts token, rate limit and tenant fence in one step every service reuses.
//!
//! # Architecture invariant
//! No network I/O: verification is pure over the token text, the keys and the clock; the only
//! I/O is reading key files once at startup ([`KeyFiles::load`]).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use talkwai_domain::ids::{TenantId, UserId};

pub mod admission;
pub mod keys;
pub mod limit;

pub use admission::{Admission, Refused};
pub use keys::{KeyError, PublicKeys};
pub use limit::{LimitKey, RateLimitConfig, RateLimited, TenantLimiter};

/// What kind of principal a JWT names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A member of a tenant.
    Member,
    /// A TalkwAI admin.
    Admin,
}

/// The claims of a TalkwAI JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The `$users` id.
    pub sub: UserId,
    /// Member or admin.
    pub kind: PrincipalKind,
    /// The member's tenant (absent for admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The role at minting time (informational: services use the role in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Who the caller is, as far as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform admin token.
    Platform,
    /// A verified JWT.
    User(Claims),
}

/// Why a token was refused. Messages never contain the token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// Not `Bearer <token>`.
    #[error("authorization must be 'Bearer <token>'")]
    Malformed,
    /// Signature, expiry, issuer or audience check failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A member token without a tenant.
    #[error("member tokens must name a tenant")]
    MissingTenant,
}

/// Where an external identity provider's public keys are, from flags or environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct KeyFiles {
    /// An Ed25519 (EdDSA) or RSA (RS256) public key in PEM form.
    #[arg(long, env = "TALKWAI_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS document (`{"keys": [...]}`) whose RS256/EdDSA keys are chosen by `kid`.
    #[arg(long, env = "TALKWAI_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
}

impl KeyFiles {
    /// Reads and parses the files (no keys when neither is set).
    pub fn load(&self) -> Result<PublicKeys, KeyError> {
        PublicKeys::load(
            self.jwt_public_key_file.as_deref(),
            self.jwks_file.as_deref(),
        )
    }
}

/// The token flags every service takes (`#[command(flatten)]`): the platform token, the HS256
/// secret, the required issuer and audience, and an external identity provider's key files.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// The platform admin token (bootstraps tenants and the first superadmin).
    #[arg(long, env = "TALKWAI_PLATFORM_TOKEN", hide_env_values = true)]
    pub platform_token: Option<SecretString>,
    /// HS256 secret of member and admin JWTs.
    #[arg(long, env = "TALKWAI_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Required JWT issuer (`iss`), if any.
    #[arg(long, env = "TALKWAI_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required JWT audience (`aud`), if any.
    #[arg(long, env = "TALKWAI_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// An external identity provider's EdDSA/RS256 public keys (PEM or JWKS file).
    #[command(flatten)]
    pub key_files: KeyFiles,
}

impl AuthArgs {
    /// The platform token and the HS256 secret, no issuer, audience or key files (tests and
    /// `talkwai up`).
    pub fn with_secrets(platform_token: SecretString, jwt_secret: SecretString) -> Self {
        Self {
            platform_token: Some(platform_token),
            jwt_secret: Some(jwt_secret),
            ..Self::default()
        }
    }

    /// The verifier these flags describe; reads the key files.
    pub fn verifier(&self) -> Result<TokenVerifier, KeyError> {
        let keys = self.key_files.load()?;
        Ok(TokenVerifier::new(
            self.platform_token.clone(),
            self.jwt_secret.clone(),
            self.jwt_issuer.as_deref(),
            self.jwt_audience.as_deref(),
        )
        .with_public_keys(keys))
    }
}

/// Verifies bearer tokens.
pub struct TokenVerifier {
    platform_token: Option<SecretString>,
    hs256: Option<DecodingKey>,
    public: PublicKeys,
    /// Claim checks for HS256 tokens; `rs256` and `eddsa` are the same checks for the others.
    validation: Validation,
    rs256: Validation,
    eddsa: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field(
                "platform_token",
                &self.platform_token.as_ref().map(|_| "[redacted]"),
            )
            .field("hs256", &self.hs256.as_ref().map(|_| "[redacted]"))
            .field("public_keys", &self.public)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier accepting the platform token (if set) and HS256 JWTs signed with
    /// `jwt_secret` (if set), checking `iss`/`aud` when given.
    pub fn new(
        platform_token: Option<SecretString>,
        jwt_secret: Option<SecretString>,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        required.extend(issuer.map(|_| "iss"));
        required.extend(audience.map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let for_alg = |alg| {
            let mut v = validation.clone();
            v.algorithms = vec![alg];
            v
        };
        Self {
            platform_token,
            hs256: jwt_secret.map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            public: PublicKeys::none(),
            rs256: for_alg(Algorithm::RS256),
            eddsa: for_alg(Algorithm::EdDSA),
            validation,
        }
    }

    /// Also accepts EdDSA and RS256 tokens signed by one of `keys` (an external identity
    /// provider), with the same claim checks.
    pub fn with_public_keys(mut self, keys: PublicKeys) -> Self {
        self.public = keys;
        self
    }

    /// Verifies an `Authorization` header value (`Bearer <token>`).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.verify(token)
    }

    /// Verifies a bare token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(platform) = &self.platform_token {
            let expected = platform.expose_secret().as_bytes();
            if bool::from(expected.ct_eq(token.as_bytes())) {
                return Ok(Principal::Platform);
            }
        }
        // `alg: none` and unknown algorithms fail here: the header does not parse.
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.kind_message()))?;
        // The header's algorithm picks the key slot; each slot holds keys of that algorithm
        // only, so no key is ever used with an algorithm of another family.
        let (key, validation) = match header.alg {
            Algorithm::HS256 => (self.hs256.as_ref(), &self.validation),
            Algorithm::RS256 | Algorithm::EdDSA => {
                let key = self
                    .public
                    .select(header.alg, header.kid.as_deref())
                    .map_err(AuthError::Invalid)?;
                let validation = if header.alg == Algorithm::RS256 {
                    &self.rs256
                } else {
                    &self.eddsa
                };
                (Some(&key.key), validation)
            }
            _ => (None, &self.validation),
        };
        let key = key
            .filter(|k| k.family() == header.alg.family())
            .ok_or_else(|| AuthError::Invalid("wrong algorithm".into()))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(e.kind_message()))?;
        let claims = data.claims;
        if claims.kind == PrincipalKind::Member && claims.tenant.is_none() {
            return Err(AuthError::MissingTenant);
        }
        Ok(Principal::User(claims))
    }
}

trait KindMessage {
    fn kind_message(&self) -> String;
}

impl KindMessage for jsonwebtoken::errors::Error {
    /// The error kind without any token material, lowercase.
    fn kind_message(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "token expired".into(),
            ErrorKind::ImmatureSignature => "token not valid yet".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::InvalidIssuer => "wrong issuer".into(),
            ErrorKind::InvalidAudience => "wrong audience".into(),
            ErrorKind::InvalidAlgorithm => "wrong algorithm".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
            _ => "malformed token".into(),
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints an HS256 token (operators, tests, `talkwai token mint`).
pub fn mint(claims: &Claims, secret: &SecretString) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.kind_message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("test-secret-please-change")
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: UserId::new_v4(),
            kind: PrincipalKind::Member,
            tenant: Some(TenantId::new_v4()),
            role: Some("owner".into()),
            exp,
            nbf: None,
            iss: None,
            aud: None,
        }
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(
            Some(SecretString::from("platform-token")),
            Some(secret()),
            None,
            None,
        )
    }

    #[test]
    fn platform_token_and_jwt_are_recognised() {
        let v = verifier();
        assert_eq!(
            v.verify_header(Some("Bearer platform-token")),
            Ok(Principal::Platform)
        );
        let c = claims(now_secs() + 60);
        let token = mint(&c, &secret()).expect("mint");
        assert_eq!(
            v.verify_header(Some(&format!("Bearer {token}"))),
            Ok(Principal::User(c))
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let v = verifier();
        assert_eq!(v.verify_header(None), Err(AuthError::Missing));
        assert_eq!(
            v.verify_header(Some("Basic abc")),
            Err(AuthError::Malformed)
        );
        let expired = mint(&claims(now_secs() - 3600), &secret()).expect("mint");
        assert_eq!(
            v.verify(&expired),
            Err(AuthError::Invalid("token expired".into()))
        );
        let forged = mint(&claims(now_secs() + 60), &SecretString::from("other")).expect("mint");
        assert_eq!(
            v.verify(&forged),
            Err(AuthError::Invalid("bad signature".into()))
        );
        let mut no_tenant = claims(now_secs() + 60);
        no_tenant.tenant = None;
        let token = mint(&no_tenant, &secret()).expect("mint");
        assert_eq!(v.verify(&token), Err(AuthError::MissingTenant));
        assert!(matches!(
            v.verify("platform-token-but-longer"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = TokenVerifier::new(None, Some(secret()), Some("talkwai"), Some("backbone"));
        let mut c = claims(now_secs() + 60);
        let token = mint(&c, &secret()).expect("mint");
        assert!(v.verify(&token).is_err());
        c.iss = Some("talkwai".into());
        c.aud = Some("backbone".into());
        let token = mint(&c, &secret()).expect("mint");
        assert_eq!(v.verify(&token), Ok(Principal::User(c)));
    }
}
