//! The request deadline (the configured timeout, or the caller's own when the transport has
//! one and it is shorter), for any `http::Request` service: past it the inner future is
//! dropped (cancelling its work; a queued job is then skipped) and the transport renders
//! [`ApiError::Timeout`] — one response, never a second body. A deadline already passed
//! when the request arrives (a caller's timeout of zero) is refused without calling the
//! inner service: a timer polls its future once before it looks at the clock.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};

use super::Gate;
use crate::error::ApiError;

/// Applies [`Deadline`].
#[derive(Debug, Clone)]
pub struct DeadlineLayer<G> {
    timeout: Duration,
    gate: G,
}

impl<G> DeadlineLayer<G> {
    pub fn new(timeout: Duration, gate: G) -> Self {
        Self { timeout, gate }
    }
}

impl<S, G: Clone> Layer<S> for DeadlineLayer<G> {
    type Service = Deadline<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
            gate: self.gate.clone(),
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S, G> {
    inner: S,
    timeout: Duration,
    gate: G,
}

impl<S, G, B> Service<Request<B>> for Deadline<S, G>
where
    G: Gate,
    S: Service<Request<B>, Response = Response<G::Body>, Error = Infallible>,
{
    type Response = Response<G::Body>;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future, G>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = match self.gate.requested_timeout(req.headers()) {
            Some(asked) => asked.min(self.timeout),
            None => self.timeout,
        };
        let gate = self.gate.clone();
        if timeout.is_zero() {
            return DeadlineFuture::Passed { gate };
        }
        DeadlineFuture::Running {
            inner: tokio::time::timeout(timeout, self.inner.call(req)),
            gate,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Deadline`].
    #[project = DeadlineProj]
    pub enum DeadlineFuture<F, G> {
        Running {
            #[pin]
            inner: tokio::time::Timeout<F>,
            gate: G,
        },
        /// The deadline had passed before the call began.
        Passed { gate: G },
    }
}

impl<F, G> Future for DeadlineFuture<F, G>
where
    G: Gate,
    F: Future<Output = Result<Response<G::Body>, Infallible>>,
{
    type Output = Result<Response<G::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project() {
            DeadlineProj::Running { inner, gate } => match ready!(inner.poll(cx)) {
                Ok(response) => response,
                Err(_) => Ok(gate.refuse(ApiError::Timeout)),
            },
            DeadlineProj::Passed { gate } => Ok(gate.refuse(ApiError::Timeout)),
        })
    }
}
