//! The request deadline: past it the handler's future is dropped (cancelling its work) and
//! the client gets 408 `TIMEOUT` — one response, never a second body.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::{FutureExt, Map};
use tower::{Layer, Service};

use crate::error::ApiError;

type Outcome = Result<Result<Response, Infallible>, tokio::time::error::Elapsed>;

/// Applies [`Timeout`].
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer(Duration);

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self(timeout)
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.0,
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for Timeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Map<tokio::time::Timeout<S::Future>, fn(Outcome) -> Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        tokio::time::timeout(self.timeout, self.inner.call(req)).map(flatten as fn(Outcome) -> _)
    }
}

fn flatten(outcome: Outcome) -> Result<Response, Infallible> {
    match outcome {
        Ok(inner) => inner,
        Err(_) => Ok(ApiError::Timeout.into_response()),
    }
}
