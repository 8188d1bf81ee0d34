//! Per-tenant rate limits on commands: the handler spends one unit of the caller's allowance
//! ([`talkwai_auth::TenantLimiter`], keyed by the member's tenant, or one shared key for admins
//! and the platform token) right after the token verified, before anything is read or written;
//! a refused command gets `rate_limited` with a `retryAfterMs` hint and appends nothing.

use talkwai_auth::{RateLimitConfig, TenantLimiter};

use crate::handler::Handler;

impl Handler {
    /// Refuses a tenant's commands with `rate_limited` beyond `limits` (`0` per second: off).
    pub fn with_rate_limit(mut self, limits: RateLimitConfig) -> Self {
        self.limiter = TenantLimiter::new(limits);
        self
    }
}
