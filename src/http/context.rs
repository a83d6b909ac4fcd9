//! The request's lifecycle, in one layer: request ID, server span, panic guard, metrics,
//! access log, the JSON error envelope and the security headers every response carries. What
//! an RPC does alike (request ID, client address, panic guard, the access-log line) is
//! [`crate::call`]'s.
//!
//! These run for every request and each needs the same start time, route and ID; doing them
//! in one hand-written service (no boxing, one span enter per poll, labels resolved once)
//! costs a fraction of a stack of separate middleware.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use opentelemetry::trace::TraceContextExt;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error;
use super::table::{RouteId, RouteTable};
use crate::admission::{BodyReceived, Peer};
use crate::call::{self, answer, guard, Ended, Guarded, RequestInfo, X_REQUEST_ID};
use crate::error::ApiError;
use crate::observability::access_log::AccessLog;
use crate::observability::metrics::{MethodLabel, Metrics, Outcome, ProtocolVersion, Scheme};
use crate::observability::telemetry::{self, HeaderInjector};

static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// What the layer needs, shared by every request.
pub struct ContextConfig {
    pub routes: Arc<RouteTable>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    pub trusted_proxies: Vec<IpAddr>,
    pub server_port: u16,
    /// `https` on a TLS listener.
    pub scheme: Scheme,
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
        let peer = req.extensions().get::<Peer>().map(|p| p.addr.ip());
        let info = RequestInfo::begin(req.headers(), peer, &self.config.trusted_proxies);
        let route = self.config.routes.classify(req.uri().path());
        let method = req.method().clone();
        let req_version = req.version();
        let uri = req.uri().clone();
        let has_body = declares_body(req.headers());
        let span = if self.config.routes.label(route).recorded {
            server_span(&req, &self.config, route, &info)
        } else {
            Span::none()
        };
        req.extensions_mut().insert(info.clone());
        self.config.metrics.request_started(
            self.config.routes.label(route),
            method_label(&method),
            self.config.scheme,
        );
        let inner = {
            let _entered = span.enter();
            guard(self.inner.call(req))
        };
        ContextFuture {
            inner,
            span,
            done: Some(Finish {
                config: Arc::clone(&self.config),
                info,
                route,
                version: protocol_version(req_version),
                method,
                uri,
                has_body,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestContext`].
    pub struct ContextFuture<F> {
        #[pin]
        inner: Guarded<F>,
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
    info: RequestInfo,
    route: RouteId,
    version: ProtocolVersion,
    method: Method,
    uri: Uri,
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
        let response = answer(outcome, done.info.id(), "handler", || {
            ApiError::InternalError.into_response()
        });
        Poll::Ready(Ok(done.finish(response, this.span)))
    }
}

impl Finish {
    fn finish(self, mut response: Response, span: &Span) -> Response {
        let mut refused = None;
        if let Some(err) = response.extensions_mut().remove::<ApiError>() {
            refused = call::refused(&err);
            // Admission says whether its refusal found the whole body; the other refusals are
            // known by their kind.
            let unread = match response.extensions().get::<BodyReceived>() {
                Some(BodyReceived(received)) => !received,
                None => refused_unread(&err),
            };
            let inner_headers = std::mem::take(response.headers_mut());
            response = error::render(&err, self.info.id(), call::unix_now());
            if self.has_body && unread {
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
        headers.insert(X_REQUEST_ID.clone(), self.info.id_header().clone());
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
        let elapsed = self.info.start.elapsed();
        // The span context once, for the response's traceparent, the exemplar and the log.
        let sc = (label.recorded && telemetry::otel_active())
            .then(|| {
                let cx = span.context();
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    opentelemetry::global::get_text_map_propagator(|p| {
                        p.inject_context(&cx, &mut HeaderInjector(response.headers_mut()))
                    });
                }
                sc
            })
            .filter(|sc| sc.is_valid());
        self.config.metrics.record_request(
            label,
            Outcome {
                method: method_label(&self.method),
                scheme: self.config.scheme,
                version: self.version,
                status,
                refused,
                elapsed,
                trace: sc.as_ref().and_then(telemetry::sampled),
            },
        );
        if !label.recorded {
            return response;
        }
        span.record("http.response.status_code", i64::from(status));
        let trace = sc.map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()));
        self.info.record(
            span,
            self.config.access_log.as_ref(),
            Ended {
                method: self.method.as_str(),
                path: self.uri.path(),
                status,
                grpc_status: None,
                server_error: status >= 500,
                elapsed,
                trace,
            },
        );
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

/// Refusals answered before the body is read that do not say whether they found it all
/// ([`BodyReceived`], which admission's and the router's fallbacks leave): the extractor's
/// header checks, a handler's missing resource, or a deadline that may have cut the read short.
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

fn server_span(req: &Request, config: &ContextConfig, route: RouteId, info: &RequestInfo) -> Span {
    let routes = &config.routes;
    telemetry::root_span(req.headers(), "request", |ids| {
        tracing::info_span!(
            target: super::HTTP_SPAN_TARGET,
            "request",
            otel.name = tracing::field::display(routes.span_name(route, req.method())),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = req.method().as_str(),
            http.route = routes.label(route).template,
            url.path = req.uri().path(),
            client.address = info.client.map(tracing::field::display),
            server.port = i64::from(config.server_port),
            request_id = info.id(),
            http.response.status_code = Empty,
            trace_id = %ids.trace_id,
            span_id = %ids.span_id,
        )
    })
}

/// The protocol version as a metric label.
fn protocol_version(version: http::Version) -> ProtocolVersion {
    match version {
        http::Version::HTTP_2 => ProtocolVersion::Http2,
        http::Version::HTTP_10 | http::Version::HTTP_09 => ProtocolVersion::Http10,
        _ => ProtocolVersion::Http11,
    }
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
