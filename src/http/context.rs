//! The request's lifecycle, in one layer: request ID, server span, panic guard, metrics,
//! access log, the JSON error envelope and the security headers every response carries.
//!
//! These run for every request and each needs the same start time, route and ID; doing them
//! in one hand-written service (no boxing, one span enter per poll, labels resolved once)
//! costs a fraction of a stack of separate middleware.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::{CatchUnwind, FutureExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use opentelemetry::trace::TraceContextExt;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::client_ip::client_ip;
use super::error;
use super::table::{RouteId, RouteTable};
use crate::error::ApiError;
use crate::observability::access_log::{AccessLog, AccessRecord};
use crate::observability::metrics::{MethodLabel, Metrics, Outcome, Refused};
use crate::observability::telemetry::{self, HeaderInjector};

/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Seconds since the Unix epoch, for `timestamp` fields.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What handlers and inner layers may know about their request (one extension, so one
/// insertion per request).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Always 1–128 visible ASCII characters.
    id: HeaderValue,
    pub start: Instant,
    /// The client address (see [`client_ip`]).
    pub client: Option<IpAddr>,
}

impl RequestInfo {
    /// What a transport knows of a request as it starts; `id` comes from [`request_id`].
    pub fn new(id: HeaderValue, start: Instant, client: Option<IpAddr>) -> Self {
        Self { id, start, client }
    }

    /// The request ID.
    pub fn id(&self) -> &str {
        self.id.to_str().unwrap_or_default()
    }
}

/// What the layer needs, shared by every request.
pub struct ContextConfig {
    pub routes: Arc<RouteTable>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub server_port: u16,
    /// Path prefixes marked deprecated, with the headers every response under them gets.
    pub deprecations: Vec<(String, Vec<(HeaderName, HeaderValue)>)>,
}

/// Applies [`RequestContext`].
#[derive(Clone)]
pub struct ContextLayer(Arc<ContextConfig>);

impl ContextLayer {
    pub fn new(config: ContextConfig) -> Self {
        Self(Arc::new(config))
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = RequestContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            config: Arc::clone(&self.0),
        }
    }
}

/// See [`ContextLayer`].
#[derive(Clone)]
pub struct RequestContext<S> {
    inner: S,
    config: Arc<ContextConfig>,
}

impl<S> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        let route = self.config.routes.classify(req.uri().path());
        let id = request_id(req.headers());
        let client = client_ip(&req, &self.config.trusted_proxies);
        let method = req.method().clone();
        let uri = req.uri().clone();
        let has_body = declares_body(req.headers());
        let span = if self.config.routes.label(route).recorded {
            server_span(&req, &self.config, route, &id, client)
        } else {
            Span::none()
        };
        req.extensions_mut().insert(RequestInfo {
            id: id.clone(),
            start,
            client,
        });
        self.config
            .metrics
            .request_started(self.config.routes.label(route));
        let inner = {
            let _entered = span.enter();
            AssertUnwindSafe(self.inner.call(req)).catch_unwind()
        };
        ContextFuture {
            inner,
            span,
            done: Some(Finish {
                config: Arc::clone(&self.config),
                start,
                route,
                id,
                method,
                uri,
                client,
                has_body,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestContext`].
    pub struct ContextFuture<F> {
        #[pin]
        inner: CatchUnwind<AssertUnwindSafe<F>>,
        span: Span,
        done: Option<Finish>,
    }

    impl<F> PinnedDrop for ContextFuture<F> {
        // Dropped unanswered: the client closed the connection (its handler's work is
        // cancelled with it). Counted and logged as 499, so the in-flight gauge comes back
        // down and the access log shows the request.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                let _entered = this.span.enter();
                let mut closed = Response::new(axum::body::Body::empty());
                *closed.status_mut() = CLIENT_CLOSED_REQUEST;
                done.finish(closed, this.span);
            }
        }
    }
}

/// The status recorded for a request whose client went away before its answer (nginx's 499).
pub const CLIENT_CLOSED_REQUEST: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => panic!("499 is a valid status code"),
};

struct Finish {
    config: Arc<ContextConfig>,
    start: Instant,
    route: RouteId,
    id: HeaderValue,
    method: Method,
    uri: Uri,
    client: Option<IpAddr>,
    has_body: bool,
}

impl<F> Future for ContextFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let outcome = ready!(this.inner.poll(cx));
        let done = this.done.take().expect("polled after completion");
        let response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(panic) => {
                tracing::error!(
                    request_id = done.id.to_str().unwrap_or_default(),
                    panic = %crate::error::panic_message(&panic),
                    "handler panicked"
                );
                ApiError::InternalError.into_response()
            }
        };
        Poll::Ready(Ok(done.finish(response, this.span)))
    }
}

impl Finish {
    fn finish(self, mut response: Response, span: &Span) -> Response {
        let id_str = self.id.to_str().unwrap_or_default();
        let mut refused = None;
        if let Some(err) = response.extensions_mut().remove::<ApiError>() {
            refused = match err {
                ApiError::RateLimitExceeded { .. } => Some(Refused::RateLimited),
                ApiError::ServiceOverloaded { .. } => Some(Refused::Overloaded),
                _ => None,
            };
            let inner_headers = std::mem::take(response.headers_mut());
            response = error::render(&err, id_str, unix_now());
            if self.has_body && refused_unread(&err) {
                // Answered without reading the body: the connection cannot carry another
                // request, so say so instead of letting the client find a closed socket.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            keep_headers(response.headers_mut(), inner_headers);
        }
        let label = self.config.routes.label(self.route);
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), self.id.clone());
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
        if label.api {
            // Computed per request: no cache or proxy may keep or replay it.
            headers.insert(header::CACHE_CONTROL, NO_STORE.clone());
        }
        for (prefix, added) in &self.config.deprecations {
            if under(self.uri.path(), prefix) {
                for (name, value) in added {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let status = response.status().as_u16();
        let elapsed = self.start.elapsed();
        self.config.metrics.record_request(
            label,
            Outcome {
                method: method_label(&self.method),
                status,
                refused,
                elapsed,
            },
        );
        if !label.recorded {
            return response;
        }
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        let mut trace_ids = None;
        if telemetry::otel_active() {
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                opentelemetry::global::get_text_map_propagator(|p| {
                    p.inject_context(&cx, &mut HeaderInjector(response.headers_mut()))
                });
                trace_ids = Some((sc.trace_id().to_string(), sc.span_id().to_string()));
            }
        }
        if let Some(log) = &self.config.access_log {
            log.write(&AccessRecord {
                grpc_status: None,
                request_id: id_str,
                method: self.method.as_str(),
                path: self.uri.path(),
                status,
                latency: elapsed,
                client_ip: self.client,
                trace: trace_ids.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
            });
        }
        response
    }
}

/// Carry headers that inner layers set (CORS, `Cache-Control`) onto the rendered envelope,
/// except those the envelope defines itself.
fn keep_headers(rendered: &mut HeaderMap, inner: HeaderMap) {
    use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
    let mut last = None;
    for (name, value) in inner {
        let name = match name {
            Some(name) => {
                last = Some(name.clone());
                name
            }
            None => match &last {
                Some(name) => name.clone(),
                None => continue,
            },
        };
        let defined = [CONTENT_TYPE, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE].contains(&name);
        if defined || (name == CONNECTION && rendered.contains_key(CONNECTION)) {
            continue;
        }
        rendered.append(name, value);
    }
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// Whether the request says a body follows.
fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Refusals answered before the body is read (by admission, routing, the extractor's header
/// checks, or a deadline that may have cut the read short).
fn refused_unread(err: &ApiError) -> bool {
    matches!(
        err,
        ApiError::Unauthorized { .. }
            | ApiError::Forbidden(_)
            | ApiError::RateLimitExceeded { .. }
            | ApiError::NotFound(_)
            | ApiError::MethodNotAllowed(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::Timeout
    )
}

/// Honour a valid incoming `X-Request-ID`, otherwise make a UUID v4.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let bytes = v.as_bytes();
        if (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("a UUID is a valid header value")
}

fn server_span(
    req: &Request,
    config: &ContextConfig,
    route: RouteId,
    id: &HeaderValue,
    client: Option<IpAddr>,
) -> Span {
    let routes = &config.routes;
    let span = tracing::info_span!(
        target: super::HTTP_SPAN_TARGET,
        "request",
        otel.name = tracing::field::display(routes.span_name(route, req.method())),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = req.method().as_str(),
        http.route = routes.label(route).template,
        url.path = req.uri().path(),
        client.address = client.map(tracing::field::display),
        server.port = i64::from(config.server_port),
        request_id = id.to_str().unwrap_or_default(),
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    telemetry::continue_trace(&span, req.headers());
    span
}

/// The method as a metric label.
fn method_label(method: &Method) -> MethodLabel {
    match *method {
        Method::GET => MethodLabel::Get,
        Method::POST => MethodLabel::Post,
        Method::PUT => MethodLabel::Put,
        Method::DELETE => MethodLabel::Delete,
        Method::PATCH => MethodLabel::Patch,
        Method::HEAD => MethodLabel::Head,
        Method::OPTIONS => MethodLabel::Options,
        _ => MethodLabel::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        for bad in ["has space", "", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&h);
            assert_eq!(id.len(), 36, "{bad:?} should be replaced by a UUID");
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
        let mut h = HeaderMap::new();
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(request_id(&h).len(), 36);
    }
}
