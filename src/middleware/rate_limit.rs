//! Token-bucket admission control (`governor`): over the limit, 429 `RATE_LIMIT_EXCEEDED`
//! with `Retry-After`, before any work is done. Per-client buckets are keyed by the
//! authenticated principal (so each API key or token subject has its own), else by address.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use tower::{Layer, Service};

use super::RequestInfo;
use crate::auth::Principal;
use crate::config::RateLimitSettings;
use crate::error::ApiError;

/// Whom a per-client bucket belongs to: the authenticated principal when there is one,
/// otherwise the client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Address(IpAddr),
    Principal(Principal),
}

/// One bucket for the service, or one per client.
#[derive(Clone)]
pub enum RateLimiter {
    Global(Arc<DefaultDirectRateLimiter>),
    PerClient(Arc<DefaultKeyedRateLimiter<ClientKey>>),
}

impl RateLimiter {
    /// Build from settings; `None` when the limiter is disabled.
    pub fn from_settings(s: &RateLimitSettings) -> Option<Self> {
        if !s.enabled {
            return None;
        }
        let rate = NonZeroU32::new(s.requests_per_second)?;
        let burst = NonZeroU32::new(s.effective_burst()).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(if s.per_client {
            RateLimiter::PerClient(Arc::new(governor::RateLimiter::keyed(quota)))
        } else {
            RateLimiter::Global(Arc::new(governor::RateLimiter::direct(quota)))
        })
    }

    /// Take a token, or say how long until one is available.
    fn check(&self, req: &Request) -> Result<(), std::time::Duration> {
        // The limiter's own clock: building a clock calibrates it, far too slow per request.
        match self {
            RateLimiter::Global(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(l.clock().now())),
            RateLimiter::PerClient(l) => {
                let key = match req.extensions().get::<Principal>() {
                    Some(p) => ClientKey::Principal(p.clone()),
                    None => ClientKey::Address(
                        req.extensions()
                            .get::<RequestInfo>()
                            .and_then(|i| i.client)
                            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    ),
                };
                l.check_key(&key)
                    .map_err(|not_until| not_until.wait_time_from(l.clock().now()))
            }
        }
    }

    /// Forget idle per-client buckets so memory stays bounded by active clients.
    pub fn housekeeping(&self) {
        if let RateLimiter::PerClient(l) = self {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Applies [`RateLimit`].
#[derive(Clone)]
pub struct RateLimitLayer(RateLimiter);

impl RateLimitLayer {
    pub fn new(limiter: RateLimiter) -> Self {
        Self(limiter)
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.0.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.limiter.check(&req) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(wait) => Either::Right(ready(Ok(
                ApiError::RateLimited { retry_after: wait }.into_response()
            ))),
        }
    }
}
