//! The REST transport: the route table, the one function that orders the layers, the request
//! context, extractors, the JSON error envelope and the OpenAPI document.

pub mod context;
pub mod error;
pub mod extract;
pub mod framing;
pub mod openapi;
pub mod routes;
pub mod table;

pub use context::{ContextConfig, ContextLayer, RequestContext};
pub use table::{RouteSpec, RouteTable, Surface};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use http::{header, HeaderValue};
use tower::layer::util::Stack as Layers;
use tower::Layer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::admission::{Admission, AdmissionLayer, Class, DeadlineLayer, Gate};
use crate::call::{RequestInfo, X_REQUEST_ID};
use crate::config::CorsSettings;
use crate::error::ApiError;
use crate::state::AppState;
use routes::docs::Document;

/// The assembled service: routes and every layer.
pub type Stack = RequestContext<framing::Framing<Router>>;

/// What one listener serves, and its optional layers.
pub struct StackOptions {
    /// The API surface; off on the admin listener.
    pub api: bool,
    /// Health, metrics, the API documents and the status page.
    pub operational: bool,
    /// `GET /debug/pprof/profile`.
    pub profiling: bool,
    pub admission: Admission,
    pub cors: Option<CorsLayer>,
    pub request_timeout: Duration,
    pub document: Arc<Document>,
}

/// Responses larger than this are gzip-compressed for clients that accept it.
const COMPRESS_ABOVE_BYTES: u64 = 1024;

/// Target of the per-request server span.
pub const HTTP_SPAN_TARGET: &str = "floodgate::http";

/// How the REST transport takes part in admission: the client address is in the request's
/// [`RequestInfo`], the class of work is the route's (each API route has its own gate), and
/// a refusal becomes the tagged response the context layer renders.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpGate {
    class: Option<Class>,
}

impl Gate for HttpGate {
    type Body = axum::body::Body;

    fn client(&self, extensions: &http::Extensions) -> Option<IpAddr> {
        RequestInfo::client_in(extensions)
    }

    fn refuse(&self, err: ApiError) -> Response {
        err.into_response()
    }

    fn class(&self, _uri: &http::Uri) -> Option<Class> {
        self.class
    }
}

/// Assemble routes and layers, outermost first:
///
/// 1. [`ContextLayer`] — request ID, span, panic guard, metrics, access log, the JSON error
///    envelope, and the security headers (`X-Content-Type-Options: nosniff` on every
///    response, `Cache-Control: no-store` on API responses). Outside everything else so it
///    sees every response, including refusals made by the layers below and 404/405 from
///    routing.
/// 2. [`framing::FramingLayer`] — refuses requests whose framing the service would have to
///    guess at (no or several `Host`, odd `Transfer-Encoding`, content-coded bodies).
/// 3. CORS, when configured: answers preflights before routing or authentication.
/// 4. Routing. Routes other than the API (health, metrics, documents, profiling) stop here:
///    they are never authenticated, rate limited or timed out; the metrics and documents,
///    whose bodies are large, are compressed.
/// 5. [`AdmissionLayer`] — authentication, then the rate limiter (so per-client buckets can
///    key on the authenticated principal), then the adaptive limit of the route's class of
///    work (so a call refused earlier holds no place), before any work is done. Applied per
///    API route, since each route has its class.
/// 6. [`DeadlineLayer`] — innermost, so the deadline covers exactly the handler's work, and
///    dropping the handler's future cancels it (its queued job is then skipped).
pub fn stack(
    state: AppState,
    context: ContextLayer,
    specs: &[RouteSpec],
    options: StackOptions,
) -> Stack {
    let serves = |surface: Surface| match surface {
        Surface::Api => options.api,
        Surface::Probe | Surface::Scrape | Surface::Document | Surface::Status => {
            options.operational
        }
        Surface::Admin => options.profiling,
    };
    let (mut api, mut short, mut large) = (Router::new(), Router::new(), Router::new());
    // An open policy admits everything: skip the layer rather than ask it.
    let admitted = (!options.admission.is_open()).then_some(&options.admission);
    for spec in specs.iter().filter(|s| serves(s.surface)) {
        match spec.surface {
            Surface::Api => {
                let gate = HttpGate { class: spec.class };
                let layers = Layers::new(
                    DeadlineLayer::new(options.request_timeout, gate),
                    tower::util::option_layer(
                        admitted.map(|a| AdmissionLayer::new(a.clone(), gate)),
                    ),
                );
                api = api.route(spec.path, spec.endpoint.layered(&state, &layers))
            }
            Surface::Probe | Surface::Admin | Surface::Status => {
                short = short.route(spec.path, spec.endpoint.plain())
            }
            Surface::Scrape | Surface::Document => {
                large = large.route(spec.path, spec.endpoint.plain())
            }
        }
    }
    let compress = CompressionLayer::new()
        .compress_when(SizeAbove::new(COMPRESS_ABOVE_BYTES).and(NotForContentType::IMAGES));
    let large = large.layer(Extension(options.document)).layer(compress);
    let mut router = api
        .merge(short)
        .merge(large)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state);
    if let Some(cors) = options.cors {
        router = router.layer(cors);
    }
    context.layer(framing::FramingLayer.layer(router))
}

/// The CORS layer for the configured origins; `None` when none are.
pub fn cors_layer(s: &CorsSettings) -> Option<CorsLayer> {
    if s.allowed_origins.is_empty() {
        return None;
    }
    let origins = if s.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            s.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([http::Method::GET, http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                crate::admission::auth::X_API_KEY.clone(),
                X_REQUEST_ID.clone(),
            ])
            .expose_headers([X_REQUEST_ID.clone(), header::RETRY_AFTER])
            .max_age(s.max_age),
    )
}
