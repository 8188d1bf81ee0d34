//! Admission, right after the token verified and before anything is read or written: the
//! tenant fence and the per-tenant rate limit.
//!
//! - A member token acts only on its own tenant's subjects. The policy checks this again when
//!   deciding, but a replayed command id is answered from the log *before* the decider runs, so
//!   without this fence a member of another tenant who learned a command id could read that
//!   command's outcome.
//! - One unit of the caller's allowance ([`talkwai_auth::TenantLimiter`], keyed by the member's
//!   tenant, or one shared key for admins and the platform token) is spent; a refused command
//!   gets `rate_limited` with a `retryAfterMs` hint and appends nothing.

use talkwai_auth::{Principal, PrincipalKind, RateLimitConfig, TenantLimiter};
use talkwai_domain::DomainError;
use talkwai_domain::ids::TenantId;

use crate::error::ServiceError;
use crate::handler::Handler;

impl Handler {
    /// Refuses a tenant's commands with `rate_limited` beyond `limits` (`0` per second: off).
    pub fn with_rate_limit(mut self, limits: RateLimitConfig) -> Self {
        self.limiter = TenantLimiter::new(limits);
        self
    }

    /// Admits a verified caller to the subject's scope (`None`: the platform scope).
    pub(crate) fn admit(
        &self,
        principal: &Principal,
        scope: Option<TenantId>,
    ) -> Result<(), ServiceError> {
        self.limiter.check(principal)?;
        if let Principal::User(claims) = principal
            && claims.kind == PrincipalKind::Member
            && (scope.is_none() || claims.tenant != scope)
        {
            return Err(ServiceError::Domain(DomainError::Forbidden(
                "members act only within their own tenant".into(),
            )));
        }
        Ok(())
    }
}
