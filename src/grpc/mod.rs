//! The gRPC transport: `floodgate.v1.ComputeService`, `grpc.health.v1.Health` and server
//! reflection (v1 and v1alpha), on the HTTP listener. Calls pass the same admission layer
//! as REST (authentication from `authorization` / `x-api-key` metadata, the rate limiter),
//! the same deadline layer (the configured timeout, or the caller's shorter `grpc-timeout`),
//! and reach the same domain operations; [`status`] renders [`ApiError`] for them.

pub mod context;
pub mod health;
pub mod service;
pub mod status;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Response};
use tower::Layer;

use crate::admission::{Admission, AdmissionLayer, Admitted, Class, Deadline, DeadlineLayer, Gate};
use crate::call::{self, RequestInfo};
use crate::error::ApiError;
use crate::observability::metrics::RpcMethod;
use crate::state::AppState;
pub use context::{RpcContext, RpcContextConfig, RpcContextLayer};

/// Code generated from `proto/floodgate/v1/compute.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("floodgate.v1");

    /// The encoded descriptor set of `proto/`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/floodgate_descriptor.bin"));
}

/// The compute service's full name.
pub const COMPUTE_SERVICE: &str = "floodgate.v1.ComputeService";

/// The assembled gRPC service.
pub type Stack = RpcContext<status::MessageLimit<tonic::service::Routes>>;

type ComputeServer = pb::compute_service_server::ComputeServiceServer<service::ComputeApi>;

/// The compute service behind admission and the deadline, under its own name for routing.
/// Health and reflection are not behind them: a probe or a tool carries no credential, as
/// `/health` and `/openapi.json` need none.
#[derive(Clone)]
pub struct AdmittedCompute(Admitted<Deadline<ComputeServer, GrpcGate>, GrpcGate>);

impl tonic::server::NamedService for AdmittedCompute {
    const NAME: &'static str = COMPUTE_SERVICE;
}

impl<B> tower::Service<http::Request<B>> for AdmittedCompute
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = <Admitted<Deadline<ComputeServer, GrpcGate>, GrpcGate> as tower::Service<
        http::Request<B>,
    >>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0.call(req)
    }
}

/// How gRPC takes part in admission: the client address is in the call's [`RequestInfo`], the
/// class of work is the method's (`Fast`, `Intensive`; the jobs methods are not limited, as
/// over REST), a refusal is a trailers-only response with the mapped status, and
/// `grpc-timeout` is the caller's deadline.
#[derive(Debug, Clone, Copy)]
pub struct GrpcGate;

impl Gate for GrpcGate {
    type Body = tonic::body::Body;

    fn client(&self, extensions: &http::Extensions) -> Option<IpAddr> {
        RequestInfo::client_in(extensions)
    }

    fn refuse(&self, err: ApiError) -> Response<Self::Body> {
        let mut response = status::status(&err).into_http();
        if let Some(refused) = call::refused(&err) {
            response.extensions_mut().insert(refused);
        }
        response
    }

    fn requested_timeout(&self, headers: &HeaderMap) -> Option<Duration> {
        grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
    }

    fn class(&self, uri: &http::Uri) -> Option<Class> {
        match uri.path().strip_prefix("/floodgate.v1.ComputeService/")? {
            "Fast" => Some(Class::Fast),
            "Intensive" => Some(Class::Intensive),
            _ => None,
        }
    }
}

/// `grpc-timeout`: up to eight digits and a unit (H, M, S, m, u, n), as the gRPC HTTP/2
/// protocol defines it.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Every method served, as metrics label them.
pub fn methods() -> Vec<(String, RpcMethod)> {
    let mut all = Vec::new();
    let mut add = |service: &'static str, methods: &[&'static str], api: bool| {
        for method in methods {
            all.push((
                format!("/{service}/{method}"),
                RpcMethod::new(service, method, api),
            ));
        }
    };
    add(
        COMPUTE_SERVICE,
        &[
            "Fast",
            "Intensive",
            "SubmitJob",
            "SubmitJobs",
            "GetJob",
            "CancelJob",
            "RetryJob",
            "WatchJob",
        ],
        true,
    );
    add("grpc.health.v1.Health", &["Check", "Watch"], false);
    add(
        "grpc.reflection.v1.ServerReflection",
        &["ServerReflectionInfo"],
        false,
    );
    add(
        "grpc.reflection.v1alpha.ServerReflection",
        &["ServerReflectionInfo"],
        false,
    );
    all
}

/// The label of calls to anything else.
pub fn unknown_method() -> RpcMethod {
    RpcMethod::other()
}

/// Assemble the services and layers: the call's context and the message-size refusal
/// around every service; admission and the deadline around the compute service.
pub fn stack(
    state: AppState,
    context: RpcContextLayer,
    admission: Admission,
    request_timeout: Duration,
    reflection: bool,
) -> Stack {
    let compute = ComputeServer::new(service::ComputeApi::new(state.clone()))
        .max_decoding_message_size(status::MAX_MESSAGE_BYTES);
    let compute = DeadlineLayer::new(request_timeout, GrpcGate).layer(compute);
    let compute = AdmittedCompute(AdmissionLayer::new(admission, GrpcGate).layer(compute));
    let mut routes = tonic::service::Routes::new(compute).add_service(
        tonic_health::pb::health_server::HealthServer::new(health::HealthApi::new(state))
            .max_decoding_message_size(status::MAX_MESSAGE_BYTES),
    );
    if reflection {
        let descriptors = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        routes = routes
            .add_service(BuiltOnFirstCall::new(move || {
                descriptors()
                    .build_v1()
                    .expect("the compiled descriptor sets are valid")
                    .max_decoding_message_size(status::MAX_MESSAGE_BYTES)
            }))
            .add_service(BuiltOnFirstCall::new(move || {
                descriptors()
                    .build_v1alpha()
                    .expect("the compiled descriptor sets are valid")
                    .max_decoding_message_size(status::MAX_MESSAGE_BYTES)
            }));
    }
    context.layer(status::MessageLimitLayer.layer(routes.prepare()))
}

/// A service built when it is first called. Server reflection decodes every descriptor it
/// serves when built: memory and start-up work that only a tool's first question needs.
#[derive(Clone)]
struct BuiltOnFirstCall<S, F> {
    service: Arc<OnceLock<S>>,
    build: F,
}

impl<S, F: Fn() -> S> BuiltOnFirstCall<S, F> {
    fn new(build: F) -> Self {
        Self {
            service: Arc::default(),
            build,
        }
    }
}

impl<S: tonic::server::NamedService, F> tonic::server::NamedService for BuiltOnFirstCall<S, F> {
    const NAME: &'static str = S::NAME;
}

impl<S, F, R> tower::Service<R> for BuiltOnFirstCall<S, F>
where
    S: tower::Service<R> + Clone,
    F: Fn() -> S,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    /// Generated tonic servers are always ready (they hold no capacity to reserve).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.service.get_or_init(&self.build).clone().call(request)
    }
}

/// Whether a request is a gRPC call: `content-type: application/grpc` or
/// `application/grpc+<codec>` (parameters aside, any case). Look-alikes are not: gRPC-Web
/// (`application/grpc-web…`, which is not served) and `application/grpcx` go to the HTTP API,
/// which answers them with its envelope.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    let essence = essence.trim_ascii();
    let Some((kind, codec)) = essence.split_at_checked(GRPC.len()) else {
        return false;
    };
    kind.eq_ignore_ascii_case(GRPC)
        && match codec.strip_prefix(b"+") {
            None => codec.is_empty(),
            Some(codec) => !codec.is_empty(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_follows_the_protocol() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn grpc_is_application_grpc_or_a_codec_of_it() {
        let grpc = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
            is_grpc(&headers)
        };
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
        ] {
            assert!(grpc(yes), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpcx",
            "application/grpc+",
            "application/grp",
            "application/json",
        ] {
            assert!(!grpc(no), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
