//! Authentication of API routes: 401/403 in the error envelope before any work is done; the
//! verified [`Principal`] is left in the request for the rate limiter.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tower::{Layer, Service};

use crate::auth::{Authenticator, Principal};

/// Applies [`Authenticate`].
#[derive(Clone)]
pub struct AuthLayer(Arc<Authenticator>);

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self(authenticator)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: Arc::clone(&self.0),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.authenticator.authenticate(req.headers()) {
            Ok(principal) => {
                req.extensions_mut().insert::<Principal>(principal);
                Either::Left(self.inner.call(req))
            }
            Err(err) => Either::Right(ready(Ok(err.into_response()))),
        }
    }
}
