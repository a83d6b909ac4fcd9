//! Rate limiting behind one interface, whatever keeps the buckets: [`local`] (in this
//! process) today; a shared backend answers [`Check::Pending`] while it waits on the network.

pub mod local;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::Principal;
use crate::config::RateLimitSettings;

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

/// The configured limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    backend: Arc<dyn Limit>,
    per_client: bool,
}

impl RateLimiter {
    /// Build from settings; `None` when the limiter is disabled.
    pub fn from_settings(s: &RateLimitSettings) -> Option<Self> {
        if !s.enabled {
            return None;
        }
        let backend =
            local::LocalLimiter::new(s.requests_per_second, s.effective_burst(), s.per_client)?;
        Some(Self {
            backend: Arc::new(backend),
            per_client: s.per_client,
        })
    }

    /// Whether buckets are per client (so callers must supply a key).
    pub fn per_client(&self) -> bool {
        self.per_client
    }

    /// See [`Limit::check`].
    pub fn check(&self, key: Option<&ClientKey>) -> Check {
        self.backend.check(key)
    }

    /// See [`Limit::housekeeping`].
    pub fn housekeeping(&self) {
        self.backend.housekeeping();
    }
}
