//! [`Admission`] as a tower layer over any `http::Request` service, for every transport that
//! speaks HTTP semantics (REST today; gRPC requests are `http::Request`s too). The transport
//! supplies a [`Gate`]: where it keeps the caller's address, and how it renders a refusal.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::IpAddr;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use tower::{Layer, Service};

use super::{Admission, Caller};
use crate::error::ApiError;

/// The transport's side of admission.
pub trait Gate: Clone + Send + Sync + 'static {
    /// The transport's response body.
    type Body: Send + 'static;
    /// The client address the transport resolved for this request.
    fn client(&self, extensions: &http::Extensions) -> Option<IpAddr>;
    /// The response for a refused request.
    fn refuse(&self, err: ApiError) -> Response<Self::Body>;
    /// A deadline the caller asked for (gRPC's `grpc-timeout`); the configured request
    /// timeout still caps it.
    fn requested_timeout(&self, _headers: &http::HeaderMap) -> Option<std::time::Duration> {
        None
    }
}

/// Applies [`Admitted`].
#[derive(Clone)]
pub struct AdmissionLayer<G> {
    admission: Admission,
    gate: G,
}

impl<G> AdmissionLayer<G> {
    pub fn new(admission: Admission, gate: G) -> Self {
        Self { admission, gate }
    }
}

impl<S, G: Clone> Layer<S> for AdmissionLayer<G> {
    type Service = Admitted<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Admitted {
            inner,
            admission: self.admission.clone(),
            gate: self.gate.clone(),
        }
    }
}

/// See [`AdmissionLayer`]. The caller's [`Identity`](super::Identity), when authenticated,
/// is left in the request's extensions.
#[derive(Clone)]
pub struct Admitted<S, G> {
    inner: S,
    admission: Admission,
    gate: G,
}

type Refused<B> = Ready<Result<Response<B>, Infallible>>;
type Waiting<B> = BoxFuture<'static, Result<Response<B>, Infallible>>;

impl<S, G, B> Service<Request<B>> for Admitted<S, G>
where
    G: Gate,
    S: Service<Request<B>, Response = Response<G::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<G::Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Either<Refused<G::Body>, Waiting<G::Body>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let caller = Caller {
            headers: req.headers(),
            client: self.gate.client(req.extensions()),
        };
        match self.admission.admit(&caller).now() {
            Ok(Ok(permit)) => {
                if let Some(identity) = permit.identity {
                    req.extensions_mut().insert(identity);
                }
                Either::Left(self.inner.call(req))
            }
            Ok(Err(refusal)) => {
                Either::Right(Either::Left(ready(Ok(self.gate.refuse(refusal.into())))))
            }
            Err(pending) => {
                // The service that was made ready goes with the request; this one is a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let gate = self.gate.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    match pending.await {
                        Ok(permit) => {
                            if let Some(identity) = permit.identity {
                                req.extensions_mut().insert(identity);
                            }
                            inner.call(req).await
                        }
                        Err(refusal) => Ok(gate.refuse(refusal.into())),
                    }
                })))
            }
        }
    }
}
