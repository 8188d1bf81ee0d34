//! `talkwai token mint`: HS256 JWTs for members and admins.

use std::time::Duration;

use secrecy::SecretString;
use talkwai_auth::{Claims, PrincipalKind};
use uuid::Uuid;

use crate::cli::{KindArg, MintArgs};
use crate::error::CliError;

/// The environment variable holding the HS256 secret.
pub const JWT_SECRET_ENV: &str = "TALKWAI_JWT_SECRET";

/// What a token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Member or admin.
    pub kind: PrincipalKind,
    /// The `$users` id.
    pub sub: Uuid,
    /// The member's tenant.
    pub tenant: Option<Uuid>,
    /// The role at minting time.
    pub role: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud`.
    pub audience: Option<String>,
}

/// Checks the spec (members name a tenant, admins do not) and mints the token.
pub fn mint(spec: &TokenSpec, secret: &SecretString) -> Result<String, CliError> {
    match (spec.kind, spec.tenant) {
        (PrincipalKind::Member, None) => {
            return Err(CliError::Usage("member tokens need --tenant <uuid>".into()));
        }
        (PrincipalKind::Admin, Some(_)) => {
            return Err(CliError::Usage(
                "admin tokens are platform-wide: leave out --tenant".into(),
            ));
        }
        _ => {}
    }
    if spec.ttl.is_zero() {
        return Err(CliError::Usage("--ttl must be positive".into()));
    }
    let claims = Claims {
        sub: spec.sub.into(),
        kind: spec.kind,
        tenant: spec.tenant.map(Into::into),
        role: spec.role.clone(),
        exp: talkwai_auth::now_secs().saturating_add(spec.ttl.as_secs().max(1)),
        nbf: None,
        iss: spec.issuer.clone(),
        aud: spec.audience.clone(),
    };
    Ok(talkwai_auth::mint(&claims, secret)?)
}

/// The secret from `TALKWAI_JWT_SECRET`, required and non-empty.
pub fn secret_from_env() -> Result<SecretString, CliError> {
    match std::env::var(JWT_SECRET_ENV) {
        Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
        _ => Err(CliError::Usage(format!(
            "{JWT_SECRET_ENV} must be set to the service's HS256 secret"
        ))),
    }
}

/// Runs `talkwai token mint`: prints the token and nothing else. With `--member`, the
/// member's `$users` link, tenant and role come from the log.
pub async fn run_mint(
    nats_url: &str,
    keys: &talkwai_keys::KeyArgs,
    args: MintArgs,
) -> Result<(), CliError> {
    let secret = secret_from_env()?;
    let spec = match args.member {
        Some(member) => {
            if args.kind == Some(KindArg::Admin) {
                return Err(CliError::Usage(
                    "--member mints member tokens: leave out --kind admin".into(),
                ));
            }
            let client = crate::connect(nats_url).await?;
            let link = crate::member::resolve(&client, keys, member, args.tenant).await?;
            TokenSpec {
                kind: PrincipalKind::Member,
                sub: link.user,
                tenant: Some(link.tenant),
                role: Some(link.role),
                ttl: args.ttl,
                issuer: args.issuer,
                audience: args.audience,
            }
        }
        None => TokenSpec {
            kind: match args.kind {
                Some(KindArg::Admin) => PrincipalKind::Admin,
                Some(KindArg::Member) => PrincipalKind::Member,
                None => return Err(CliError::Usage("--kind or --member is required".into())),
            },
            sub: args
                .sub
                .ok_or_else(|| CliError::Usage("--sub or --member is required".into()))?,
            tenant: args.tenant,
            role: args.role,
            ttl: args.ttl,
            issuer: args.issuer,
            audience: args.audience,
        },
    };
    let token = mint(&spec, &secret)?;
    crate::output::line(&token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use talkwai_auth::{Principal, TokenVerifier};

    fn spec(kind: PrincipalKind, tenant: Option<Uuid>) -> TokenSpec {
        TokenSpec {
            kind,
            sub: Uuid::new_v4(),
            tenant,
            role: Some("owner".into()),
            ttl: Duration::from_secs(60),
            issuer: None,
            audience: None,
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let secret = SecretString::from("s3cret");
        let verifier = TokenVerifier::new(None, Some(secret.clone()), None, None);
        let tenant = Uuid::new_v4();
        let member = spec(PrincipalKind::Member, Some(tenant));
        let token = mint(&member, &secret).expect("member token");
        match verifier.verify(&token) {
            Ok(Principal::User(claims)) => {
                assert_eq!(claims.sub.0, member.sub);
                assert_eq!(claims.tenant.map(|t| t.0), Some(tenant));
            }
            other => panic!("member token not accepted: {other:?}"),
        }
        let admin = mint(&spec(PrincipalKind::Admin, None), &secret).expect("admin token");
        assert!(verifier.verify(&admin).is_ok());
    }

    #[test]
    fn tenants_must_fit_the_kind() {
        let secret = SecretString::from("s3cret");
        assert!(matches!(
            mint(&spec(PrincipalKind::Member, None), &secret),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            mint(&spec(PrincipalKind::Admin, Some(Uuid::new_v4())), &secret),
            Err(CliError::Usage(_))
        ));
    }
}
