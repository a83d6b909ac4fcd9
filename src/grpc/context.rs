//! An RPC's lifecycle, in one layer, as the REST transport's context layer is a request's and
//! on the same [`crate::call`]: request ID (`x-request-id` metadata, echoed), one server span
//! with the caller's W3C context, panic guard, the duration histogram and JSON statistics, and
//! one access-log line. The call is recorded when its response body ends, so a server stream
//! counts its whole life and its final status from the trailers.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Span;

use crate::admission::Peer;
use crate::call::{answer, guard, Ended, Guarded, RequestInfo, X_REQUEST_ID};
use crate::observability::access_log::AccessLog;
use crate::observability::metrics::{Metrics, Refused, RpcMethod};
use crate::observability::telemetry;

/// Target of the per-RPC server span.
pub const GRPC_SPAN_TARGET: &str = "floodgate::grpc";

/// Where a handler leaves a refusal it answered (the pool's queue was full), so the call is
/// counted as one; admission's refusals say so on their response instead.
#[derive(Clone, Default)]
pub struct RefusalSlot(Arc<OnceLock<Refused>>);

impl RefusalSlot {
    pub fn set(&self, refused: Refused) {
        let _ = self.0.set(refused);
    }
}

/// What the layer needs, shared by every call.
pub struct RpcContextConfig {
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    pub trusted_proxies: Vec<IpAddr>,
    /// Every method served, by path (`/floodgate.v1.ComputeService/Fast`).
    pub methods: Vec<(String, RpcMethod)>,
    /// The label of every other path.
    pub unknown: RpcMethod,
}

impl RpcContextConfig {
    fn method(&self, path: &str) -> &RpcMethod {
        self.methods
            .iter()
            .find(|(p, _)| p == path)
            .map_or(&self.unknown, |(_, m)| m)
    }
}

/// Applies [`RpcContext`].
#[derive(Clone)]
pub struct RpcContextLayer(Arc<RpcContextConfig>);

impl RpcContextLayer {
    pub fn new(config: RpcContextConfig) -> Self {
        Self(Arc::new(config))
    }
}

impl<S> Layer<S> for RpcContextLayer {
    type Service = RpcContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcContext {
            inner,
            config: Arc::clone(&self.0),
        }
    }
}

/// See [`RpcContextLayer`].
#[derive(Clone)]
pub struct RpcContext<S> {
    inner: S,
    config: Arc<RpcContextConfig>,
}

impl<S> Service<Request<axum::body::Body>> for RpcContext<S>
where
    S: Service<
        Request<axum::body::Body>,
        Response = Response<tonic::body::Body>,
        Error = Infallible,
    >,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<axum::body::Body>) -> Self::Future {
        let peer = req.extensions().get::<Peer>().map(|p| p.addr.ip());
        let info = RequestInfo::begin(req.headers(), peer, &self.config.trusted_proxies);
        let path = req.uri().path().to_owned();
        let method = self.config.method(&path);
        let span = server_span(req.headers(), &path, method, &info);
        let slot = RefusalSlot::default();
        req.extensions_mut().insert(info.clone());
        req.extensions_mut().insert(slot.clone());
        self.config.metrics.rpc_started(method);
        let inner = {
            let _entered = span.enter();
            guard(self.inner.call(req))
        };
        RpcFuture {
            inner,
            call: Some(Call {
                config: Arc::clone(&self.config),
                span,
                info,
                path,
                slot,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcContext`].
    pub struct RpcFuture<F> {
        #[pin]
        inner: Guarded<F>,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for RpcFuture<F> {
        // Dropped unanswered: the client cancelled the call.
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(tonic::Code::Cancelled as i32);
            }
        }
    }
}

/// What is recorded when the call ends.
struct Call {
    config: Arc<RpcContextConfig>,
    span: Span,
    info: RequestInfo,
    path: String,
    slot: RefusalSlot,
}

impl<F> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, Infallible>>,
{
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let call = this.call.as_ref().expect("polled after completion");
        let _entered = call.span.enter();
        let outcome = ready!(this.inner.poll(cx));
        drop(_entered);
        let call = this.call.take().expect("polled after completion");
        let mut response = answer(outcome, call.info.id(), "RPC handler", || {
            tonic::Status::internal("internal server error").into_http()
        });
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), call.info.id_header().clone());
        if let Some(refused) = response.extensions_mut().remove::<Refused>() {
            call.slot.set(refused);
        }
        // A trailers-only response (an error before any message) has its status here.
        let code = grpc_status(response.headers());
        Poll::Ready(Ok(response.map(|body| {
            axum::body::Body::new(Recorded {
                inner: body,
                code,
                call: Some(call),
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// The response body, recording the call when it ends (or is dropped: cancelled).
    struct Recorded {
        #[pin]
        inner: tonic::body::Body,
        code: Option<i32>,
        call: Option<Call>,
    }

    impl PinnedDrop for Recorded {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(call) = this.call.take() {
                // Ended before its status was sent: the client went away.
                call.finish(this.code.unwrap_or(tonic::Code::Cancelled as i32));
            }
        }
    }
}

impl http_body::Body for Recorded {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = match this.call.as_ref() {
            Some(call) => {
                let _entered = call.span.enter();
                ready!(this.inner.poll_frame(cx))
            }
            None => ready!(this.inner.poll_frame(cx)),
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    *this.code = Some(code);
                }
            }
            Some(Err(status)) => *this.code = Some(status.code() as i32),
            None => {}
        }
        if matches!(polled, None | Some(Err(_))) || this.code.is_some() {
            if let Some(call) = this.call.take() {
                call.finish(this.code.unwrap_or(tonic::Code::Ok as i32));
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Call {
    fn finish(self, code: i32) {
        let elapsed = self.info.start.elapsed();
        let config = &self.config;
        let method = config.method(&self.path);
        // Admission's refusals say so on their response; RESOURCE_EXHAUSTED alone is not
        // one (an oversized message is that code too).
        let refused = self.slot.0.get().copied();
        let sc = telemetry::span_context(&self.span);
        config.metrics.record_rpc(
            method,
            code,
            refused,
            elapsed,
            sc.as_ref().and_then(telemetry::sampled),
        );
        self.span.record("rpc.grpc.status_code", i64::from(code));
        self.info.record(
            &self.span,
            config.access_log.as_ref(),
            Ended {
                method: "POST",
                path: &self.path,
                status: 200,
                grpc_status: Some(code),
                server_error: is_server_error(code),
                elapsed,
                trace: sc.map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string())),
            },
        );
    }
}

/// The codes OpenTelemetry's RPC conventions count as a server's error.
fn is_server_error(code: i32) -> bool {
    crate::observability::metrics::grpc_server_error(code)
}

fn server_span(headers: &HeaderMap, path: &str, method: &RpcMethod, info: &RequestInfo) -> Span {
    telemetry::root_span(headers, "rpc", |ids| {
        tracing::info_span!(
            target: GRPC_SPAN_TARGET,
            "rpc",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = method.service,
            rpc.method = method.method,
            rpc.grpc.status_code = Empty,
            client.address = info.client.map(tracing::field::display),
            request_id = info.id(),
            trace_id = %ids.trace_id,
            span_id = %ids.span_id,
        )
    })
}
