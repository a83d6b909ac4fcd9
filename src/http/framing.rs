//! Request framing the service refuses rather than guesses at (RFC 9112): an HTTP/1.1
//! request without exactly one `Host`, a `Transfer-Encoding` other than plain `chunked`, and
//! a content-coded request body, which the service would otherwise read as if it were plain.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::{header, HeaderMap, HeaderValue, Version};
use tower::{Layer, Service};

use crate::error::ApiError;

/// Applies [`Framing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FramingLayer;

impl<S> Layer<S> for FramingLayer {
    type Service = Framing<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Framing { inner }
    }
}

/// See [`FramingLayer`].
#[derive(Debug, Clone)]
pub struct Framing<S> {
    inner: S,
}

impl<S> Service<Request> for Framing<S>
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
        match check(req.version(), req.headers()) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(err) => {
                // The body, if any, is left unread: the connection cannot be reused.
                let mut response = err.into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Either::Right(ready(Ok(response)))
            }
        }
    }
}

/// Why a request's framing is refused, if it is.
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), ApiError> {
    if version == Version::HTTP_11 && headers.get_all(header::HOST).iter().count() != 1 {
        return Err(ApiError::InvalidRequest(
            "an HTTP/1.1 request needs exactly one Host header".into(),
        ));
    }
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    if let Some(first) = codings.next() {
        if !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some() {
            return Err(ApiError::InvalidRequest(
                "the only Transfer-Encoding accepted is `chunked`, once".into(),
            ));
        }
    }
    let coded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
    if coded {
        return Err(ApiError::UnsupportedMediaType(
            "request bodies must not be content-encoded (Content-Encoding is not supported)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn framing_rules() {
        let ok = |p: &[(&str, &str)]| check(Version::HTTP_11, &headers(p)).is_ok();
        assert!(ok(&[("host", "x")]));
        assert!(ok(&[("host", "x"), ("transfer-encoding", "Chunked")]));
        assert!(ok(&[("host", "x"), ("content-encoding", "identity")]));
        assert!(!ok(&[]), "no Host");
        assert!(!ok(&[("host", "a"), ("host", "b")]), "two Hosts");
        assert!(!ok(&[
            ("host", "x"),
            ("transfer-encoding", "gzip, chunked")
        ]));
        assert!(!ok(&[
            ("host", "x"),
            ("transfer-encoding", "chunked, chunked")
        ]));
        assert!(!ok(&[
            ("host", "x"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked")
        ]));
        let e = check(
            Version::HTTP_11,
            &headers(&[("host", "x"), ("content-encoding", "gzip")]),
        );
        assert_eq!(e.unwrap_err().code(), "UNSUPPORTED_MEDIA_TYPE");
        // HTTP/1.0 and HTTP/2 carry the authority otherwise.
        assert!(check(Version::HTTP_10, &HeaderMap::new()).is_ok());
        assert!(check(Version::HTTP_2, &HeaderMap::new()).is_ok());
    }
}
