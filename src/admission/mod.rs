//! Admission control, independent of the transport: who is calling ([`auth`]), whether they
//! may call now ([`rate_limit`]), whether the service has room for the call's class of work
//! ([`overload`]), and how long the call may take ([`deadline`]).
//!
//! [`Admission::admit`] is the one decision every transport asks for. It is asynchronous so a
//! backend can wait on a network round trip (a shared limiter), yet a decision that needs no
//! waiting is taken without allocating or polling ([`Admit::now`]), so the local path costs
//! what a synchronous check did. [`layer`] applies it to any `http::Request` service; a
//! refusal is rendered by the transport through its [`Gate`].

pub mod auth;
pub mod deadline;
pub mod layer;
pub mod overload;
pub mod pause;
pub mod rate_limit;
pub mod throttle;

pub use auth::{Authenticator, Identity, Principal};
pub use deadline::{Deadline, DeadlineLayer};
pub use layer::{refuse, AdmissionLayer, Admitted, BodyReceived, Gate};
pub use overload::{Class, Overload, Shed, Slot};
pub use pause::{Peer, ReadPause};
pub use rate_limit::{ClientKey, RateLimiter};
pub use throttle::FailureThrottle;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::error::ApiError;

/// What admission knows of a call: its headers (or gRPC metadata as headers) and the
/// client's address.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub headers: &'a http::HeaderMap,
    pub client: Option<IpAddr>,
}

/// An admitted call, with whom it authenticated as.
#[derive(Debug, Clone, Default)]
pub struct Permit {
    pub identity: Option<Identity>,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid credential (the reason is fixed text, never the credential).
    Unauthorized { reason: &'static str, invalid: bool },
    /// The credential lacks the required scope.
    Forbidden(String),
    /// Over the rate limit.
    RateLimited { retry_after: Duration },
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::Unauthorized { reason, invalid } => ApiError::Unauthorized { reason, invalid },
            Refusal::Forbidden(scope) => ApiError::Forbidden(scope),
            Refusal::RateLimited { retry_after } => ApiError::RateLimitExceeded { retry_after },
        }
    }
}

/// The admission policy of one listener: authentication (with its failures throttled per
/// address), rate limiting and the adaptive concurrency limits, each optional.
#[derive(Clone, Default)]
pub struct Admission {
    auth: Option<(Arc<Authenticator>, Option<Arc<FailureThrottle>>)>,
    limiter: Option<RateLimiter>,
    overload: Option<Arc<Overload>>,
}

impl Admission {
    pub fn new(
        auth: Option<Arc<Authenticator>>,
        failures: Option<FailureThrottle>,
        limiter: Option<RateLimiter>,
    ) -> Self {
        Self {
            auth: auth.map(|a| (a, failures.map(Arc::new))),
            limiter,
            overload: None,
        }
    }

    /// Also hold every classified call to the adaptive limits of `overload` (shared by every
    /// transport that uses this policy).
    pub fn with_overload(mut self, overload: Arc<Overload>) -> Self {
        self.overload = Some(overload);
        self
    }

    /// Whether this policy admits everything without looking.
    pub fn is_open(&self) -> bool {
        self.auth.is_none() && self.limiter.is_none() && self.overload.is_none()
    }

    /// A place for a call of `class` under the adaptive limits: `None` when the call needs
    /// none (no class, or adaptive limits off).
    pub fn slot(&self, class: Option<Class>) -> Option<Result<Slot, Shed>> {
        Some(self.overload.as_ref()?.admit(class?))
    }

    /// Authenticate, then take a rate-limit token (per principal, else per address, when
    /// limits are per client). Authentication comes first so that per-client buckets can key
    /// on the principal.
    pub fn admit(&self, caller: &Caller<'_>) -> Admit {
        let address = caller.client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let identity = match &self.auth {
            Some((auth, failures)) => {
                // An address that has failed too often is refused before its credential is
                // checked: checking would let it go on guessing at full speed.
                if let Some(retry_after) = failures.as_ref().and_then(|f| f.blocked(address)) {
                    return Admit::ready(Err(Refusal::RateLimited { retry_after }));
                }
                match auth.authenticate(caller.headers) {
                    Ok(p) => Some(p),
                    Err(refusal) => {
                        let throttled = failures.as_ref().and_then(|f| f.failed(address));
                        return Admit::ready(Err(match throttled {
                            Some(retry_after) => Refusal::RateLimited { retry_after },
                            None => refusal,
                        }));
                    }
                }
            }
            None => None,
        };
        let Some(limiter) = &self.limiter else {
            return Admit::ready(Ok(Permit { identity }));
        };
        let key = limiter.per_client().then(|| match &identity {
            Some(i) => ClientKey::Principal(i.principal.clone()),
            None => ClientKey::Address(address),
        });
        match limiter.check(key.as_ref()) {
            rate_limit::Check::Ready(Ok(())) => Admit::ready(Ok(Permit { identity })),
            rate_limit::Check::Ready(Err(retry_after)) => {
                Admit::ready(Err(Refusal::RateLimited { retry_after }))
            }
            rate_limit::Check::Pending(decision) => Admit(Inner::Pending(Box::pin(async move {
                match decision.await {
                    Ok(()) => Ok(Permit { identity }),
                    Err(retry_after) => Err(Refusal::RateLimited { retry_after }),
                }
            }))),
        }
    }

    /// Periodic upkeep of the limiters' state.
    pub fn housekeeping(&self) {
        if let Some(l) = &self.limiter {
            l.housekeeping();
        }
        if let Some((_, Some(failures))) = &self.auth {
            failures.housekeeping();
        }
    }
}

/// A pending admission decision: a future, or a decision already taken.
#[must_use]
pub struct Admit(Inner);

enum Inner {
    Ready(Option<Result<Permit, Refusal>>),
    Pending(BoxFuture<'static, Result<Permit, Refusal>>),
}

impl Admit {
    fn ready(decision: Result<Permit, Refusal>) -> Self {
        Admit(Inner::Ready(Some(decision)))
    }

    /// The decision, when it was taken without waiting; otherwise the future to await.
    pub fn now(self) -> Result<Result<Permit, Refusal>, Admit> {
        match self.0 {
            Inner::Ready(Some(decision)) => Ok(decision),
            other => Err(Admit(other)),
        }
    }
}

impl Future for Admit {
    type Output = Result<Permit, Refusal>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Ready(decision) => {
                Poll::Ready(decision.take().expect("Admit polled after completion"))
            }
            Inner::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}
