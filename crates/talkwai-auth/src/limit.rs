//! Per-tenant rate limits: one GCRA bucket (`governor`) per tenant for member tokens and one
//! shared bucket for admins and the platform token. A service checks after the token verified,
//! so a caller without a valid token cannot spend a tenant's allowance.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use talkwai_domain::ids::TenantId;

use crate::{Principal, PrincipalKind};

/// Checks between two sweeps of idle buckets.
const SWEEP_EVERY: u32 = 4096;

/// Rate limit settings, from flags or `TALKWAI_RATE_LIMIT_*` environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct RateLimitConfig {
    /// Requests per second per tenant (members) and for all admins together (0: no limit).
    #[arg(long, env = "TALKWAI_RATE_LIMIT_PER_TENANT", default_value_t = 1000)]
    pub rate_limit_per_tenant: u32,
    /// Requests a tenant may send at once above the steady rate.
    #[arg(long, env = "TALKWAI_RATE_LIMIT_BURST", default_value_t = 2000)]
    pub rate_limit_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_tenant: 1000,
            rate_limit_burst: 2000,
        }
    }
}

impl RateLimitConfig {
    /// No limit.
    pub const OFF: Self = Self {
        rate_limit_per_tenant: 0,
        rate_limit_burst: 0,
    };
}

/// Whose allowance a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A member's tenant.
    Tenant(TenantId),
    /// Admins and the platform token.
    Platform,
}

impl LimitKey {
    /// The key of a verified principal.
    pub fn of(principal: &Principal) -> Self {
        match principal {
            Principal::User(claims) if claims.kind == PrincipalKind::Member => {
                claims.tenant.map_or(Self::Platform, Self::Tenant)
            }
            _ => Self::Platform,
        }
    }
}

/// A refused request: the allowance is spent until `retry_after` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded; retry after {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// How long until a request can pass.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The hint in whole milliseconds, at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// A keyed rate limiter over tenants; cheap to share behind an `Arc` (lock-free buckets).
pub struct TenantLimiter {
    limiter: Option<DefaultKeyedRateLimiter<LimitKey>>,
    checks: AtomicU32,
}

impl std::fmt::Debug for TenantLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLimiter")
            .field("on", &self.limiter.is_some())
            .finish()
    }
}

impl TenantLimiter {
    /// A limiter with `config` (off when the rate is 0; the burst is at least the rate).
    pub fn new(config: RateLimitConfig) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit_per_tenant).map(|rate| {
            let burst = NonZeroU32::new(config.rate_limit_burst.max(rate.get())).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            checks: AtomicU32::new(0),
        }
    }

    /// A limiter that lets everything through.
    pub fn off() -> Self {
        Self::new(RateLimitConfig::OFF)
    }

    /// Spends one request of `principal`'s allowance, or says how long to wait.
    pub fn check(&self, principal: &Principal) -> Result<(), RateLimited> {
        self.check_key(LimitKey::of(principal))
    }

    /// Spends one request of `key`'s allowance, or says how long to wait.
    pub fn check_key(&self, key: LimitKey) -> Result<(), RateLimited> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Buckets back at full allowance carry no state: forget them.
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(limiter.clock().now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_allowance_is_refused_per_tenant_only() {
        let limiter = TenantLimiter::new(RateLimitConfig {
            rate_limit_per_tenant: 1,
            rate_limit_burst: 3,
        });
        let a = LimitKey::Tenant(TenantId::new_v4());
        let b = LimitKey::Tenant(TenantId::new_v4());
        for _ in 0..3 {
            assert_eq!(limiter.check_key(a), Ok(()));
        }
        let refused = limiter.check_key(a).expect_err("fourth request refused");
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert!(refused.retry_after_ms() >= 1);
        assert_eq!(limiter.check_key(b), Ok(()), "another tenant is unaffected");
        assert_eq!(limiter.check_key(LimitKey::Platform), Ok(()));
    }

    #[test]
    fn zero_means_off() {
        let limiter = TenantLimiter::off();
        for _ in 0..10_000 {
            assert_eq!(limiter.check_key(LimitKey::Platform), Ok(()));
        }
    }
}
