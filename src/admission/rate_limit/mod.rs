//! Rate limiting behind one interface, whatever keeps the buckets: [`local`] (in this
//! process) today; a shared backend answers [`Check::Pending`] while it waits on the network.

pub mod local;
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use metrics::Counter;

use super::Principal;
use crate::config::{RateLimitBackend, RateLimitSettings};
use crate::dependency::Redis;

/// Whom a per-client bucket belongs to: the authenticated principal when there is one,
/// otherwise the client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Address(IpAddr),
    Principal(Principal),
}

/// A limiter's answer: a token was taken (`Ok`), or how long until one is free (`Err`);
/// now, or once a round trip completes.
pub enum Check {
    Ready(Result<(), Duration>),
    Pending(BoxFuture<'static, Result<(), Duration>>),
}

/// What every limiter backend does.
pub trait Limit: Send + Sync {
    /// Take a token from `key`'s bucket, or from the service-wide bucket when `key` is `None`.
    fn check(&self, key: Option<&ClientKey>) -> Check;
    /// Forget idle state so memory stays bounded by active clients.
    fn housekeeping(&self) {}
}

/// Decisions counted by backend and outcome (`floodgate_rate_limit_decisions_total`).
#[derive(Clone)]
pub struct Decisions {
    pub local_allowed: Counter,
    pub local_limited: Counter,
    pub redis: redis::RedisDecisions,
}

impl Default for Decisions {
    /// Counters that record nothing.
    fn default() -> Self {
        Self {
            local_allowed: Counter::noop(),
            local_limited: Counter::noop(),
            redis: redis::RedisDecisions {
                allowed: Counter::noop(),
                limited: Counter::noop(),
                fallback: Counter::noop(),
            },
        }
    }
}

/// The configured limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    backend: Arc<dyn Limit>,
    per_client: bool,
    /// Counts ready decisions of the local backend; the Redis backend counts its own.
    local: Option<(Counter, Counter)>,
}

impl RateLimiter {
    /// Build from settings; `None` when the limiter is disabled. The Redis backend needs
    /// `redis` (validation ensures it is configured).
    pub fn from_settings(
        s: &RateLimitSettings,
        redis: Option<&Redis>,
        decisions: Decisions,
    ) -> Option<Self> {
        if !s.enabled {
            return None;
        }
        let (rate, burst) = (s.requests_per_second, s.effective_burst());
        Some(match (s.backend, redis) {
            (RateLimitBackend::Redis, Some(redis)) => Self {
                backend: Arc::new(redis::RedisLimiter::new(
                    redis.clone(),
                    rate,
                    burst,
                    s.per_client,
                    s.redis_fallback,
                    decisions.redis,
                )?),
                per_client: s.per_client,
                local: None,
            },
            _ => Self {
                backend: Arc::new(local::LocalLimiter::new(rate, burst, s.per_client)?),
                per_client: s.per_client,
                local: Some((decisions.local_allowed, decisions.local_limited)),
            },
        })
    }

    /// Whether buckets are per client (so callers must supply a key).
    pub fn per_client(&self) -> bool {
        self.per_client
    }

    /// See [`Limit::check`].
    pub fn check(&self, key: Option<&ClientKey>) -> Check {
        let check = self.backend.check(key);
        if let (Some((allowed, limited)), Check::Ready(decision)) = (&self.local, &check) {
            match decision {
                Ok(()) => allowed.increment(1),
                Err(_) => limited.increment(1),
            }
        }
        check
    }

    /// See [`Limit::housekeeping`].
    pub fn housekeeping(&self) {
        self.backend.housekeeping();
    }
}
