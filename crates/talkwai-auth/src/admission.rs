//! Admission: what a service checks about a request before it reads or writes anything — the
//! bearer token, the per-tenant allowance ([`crate::limit`]) and the tenant fence — in that
//! order, so a caller without a valid token cannot spend a tenant's allowance.
//!
//! The tenant fence: a member token acts only on its own tenant's subjects. A service's policy
//! may check membership again later, but a command id replayed by another tenant's member is
//! answered from the log *before* the decider runs, so the fence must come first. A refused
//! request appends and reads nothing.

use talkwai_domain::ids::TenantId;

use crate::limit::{RateLimitConfig, RateLimited, TenantLimiter};
use crate::{AuthError, Principal, PrincipalKind, TokenVerifier};

/// Why a request was not admitted; each variant maps to its own wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The token is missing or invalid (`unauthenticated`).
    #[error(transparent)]
    Token(#[from] AuthError),
    /// The caller's allowance is spent (`rate_limited`).
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// A member token on another tenant's (or the platform's) subject (`forbidden`).
    #[error("members act only within their own tenant")]
    OutsideTenant,
}

/// The token verifier and the rate limiter of one service.
#[derive(Debug)]
pub struct Admission {
    verifier: TokenVerifier,
    limiter: TenantLimiter,
}

impl Admission {
    /// Admission with `verifier` and no rate limit.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier,
            limiter: TenantLimiter::off(),
        }
    }

    /// Refuses requests beyond `limits` (`0` per second: off).
    pub fn with_rate_limit(mut self, limits: RateLimitConfig) -> Self {
        self.limiter = TenantLimiter::new(limits);
        self
    }

    /// Verifies the `Authorization` header and spends one unit of the caller's allowance.
    pub fn admit(&self, authorization: Option<&str>) -> Result<Principal, Refused> {
        let principal = self.verifier.verify_header(authorization)?;
        self.limiter.check(&principal)?;
        Ok(principal)
    }

    /// [`Admission::admit`], then the tenant fence for a subject of `scope` (`None`: the
    /// platform scope).
    pub fn admit_to(
        &self,
        authorization: Option<&str>,
        scope: Option<TenantId>,
    ) -> Result<Principal, Refused> {
        let principal = self.admit(authorization)?;
        fence(&principal, scope)?;
        Ok(principal)
    }
}

/// The tenant fence alone: a member acts only within its own tenant.
pub fn fence(principal: &Principal, scope: Option<TenantId>) -> Result<(), Refused> {
    match principal {
        Principal::User(claims)
            if claims.kind == PrincipalKind::Member
                && (scope.is_none() || claims.tenant != scope) =>
        {
            Err(Refused::OutsideTenant)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use talkwai_domain::ids::UserId;

    use super::*;
    use crate::Claims;

    fn member(tenant: TenantId) -> Principal {
        Principal::User(Claims {
            sub: UserId::new_v4(),
            kind: PrincipalKind::Member,
            tenant: Some(tenant),
            role: None,
            exp: u64::MAX,
            nbf: None,
            iss: None,
            aud: None,
        })
    }

    #[test]
    fn a_member_is_fenced_to_its_own_tenant() {
        let own = TenantId::new_v4();
        assert_eq!(fence(&member(own), Some(own)), Ok(()));
        assert_eq!(
            fence(&member(own), Some(TenantId::new_v4())),
            Err(Refused::OutsideTenant)
        );
        assert_eq!(fence(&member(own), None), Err(Refused::OutsideTenant));
        assert_eq!(fence(&Principal::Platform, Some(own)), Ok(()));
    }

    #[test]
    fn the_token_is_checked_before_the_allowance_is_spent() {
        let verifier = TokenVerifier::new(Some(SecretString::from("platform")), None, None, None);
        let admission = Admission::new(verifier).with_rate_limit(RateLimitConfig {
            rate_limit_per_tenant: 1,
            rate_limit_burst: 1,
        });
        for _ in 0..3 {
            assert!(matches!(
                admission.admit(Some("Bearer wrong")),
                Err(Refused::Token(_))
            ));
        }
        assert_eq!(
            admission.admit(None),
            Err(Refused::Token(AuthError::Missing))
        );
        assert_eq!(
            admission.admit(Some("Bearer platform")),
            Ok(Principal::Platform)
        );
        assert!(matches!(
            admission.admit(Some("Bearer platform")),
            Err(Refused::RateLimited(_))
        ));
    }
}
