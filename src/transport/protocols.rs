//! One listener, two protocols: gRPC calls (`content-type: application/grpc` or
//! `application/grpc+<codec>`, see [`crate::grpc::is_grpc`]) go to the gRPC stack, everything
//! else (gRPC-Web included) to the HTTP stack.

use std::convert::Infallible;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::Either;
use tower::Service;

/// Routes each request to `http` or, when it is a gRPC call and gRPC is on, to `grpc`.
#[derive(Clone)]
pub struct Protocols<H, G> {
    http: H,
    grpc: Option<G>,
}

impl<H, G> Protocols<H, G> {
    pub fn new(http: H, grpc: Option<G>) -> Self {
        Self { http, grpc }
    }
}

impl<H, G> Service<Request> for Protocols<H, G>
where
    H: Service<Request, Response = Response, Error = Infallible>,
    G: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<H::Future, G::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.http.poll_ready(cx))?;
        match &mut self.grpc {
            Some(grpc) => grpc.poll_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match &mut self.grpc {
            Some(grpc) if crate::grpc::is_grpc(req.headers()) => Either::Right(grpc.call(req)),
            _ => Either::Left(self.http.call(req)),
        }
    }
}
