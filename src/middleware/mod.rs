//! Cross-cutting behaviour as tower layers, and the one function that orders them.

mod auth;
mod client_ip;
mod context;
mod rate_limit;
mod timeout;

pub use auth::AuthLayer;
pub use client_ip::client_ip;
pub use context::{ContextConfig, ContextLayer, RequestContext, RequestInfo, X_REQUEST_ID};
pub use rate_limit::{ClientKey, RateLimitLayer, RateLimiter};
pub use timeout::TimeoutLayer;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use http::{header, HeaderValue};
use tower::Layer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Authenticator;
use crate::config::CorsSettings;
use crate::routes;
use crate::state::AppState;

/// The assembled service: routes and every layer.
pub type Stack = RequestContext<Router>;

/// What one listener serves, and its optional layers.
pub struct StackOptions {
    /// The compute API; `None` on the admin listener.
    pub api: Option<Router<AppState>>,
    /// Health, metrics and the API documents.
    pub operational: bool,
    /// `GET /debug/pprof/profile`.
    pub profiling: bool,
    pub limiter: Option<RateLimiter>,
    pub auth: Option<Arc<Authenticator>>,
    pub cors: Option<CorsLayer>,
    pub request_timeout: Duration,
}

/// Responses larger than this are gzip-compressed for clients that accept it.
const COMPRESS_ABOVE_BYTES: u64 = 1024;

/// Target of the per-request server span.
pub const HTTP_SPAN_TARGET: &str = "floodgate::http";

/// Seconds since the Unix epoch, for `timestamp` fields.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Assemble routes and layers, outermost first:
///
/// 1. [`ContextLayer`] — request ID, span, panic guard, metrics, access log, the JSON error
///    envelope, and the security headers (`X-Content-Type-Options: nosniff` on every
///    response, `Cache-Control: no-store` on API responses). Outside everything else so it
///    sees every response, including refusals made by the layers below and 404/405 from
///    routing.
/// 2. CORS, when configured: answers preflights before routing or authentication.
/// 3. Routing. Operational routes (health, metrics, documents, profiling) stop here: they
///    are never authenticated, rate limited or timed out; the metrics and documents, whose
///    bodies are large, are compressed.
/// 4. [`AuthLayer`] — when configured; before the limiter so per-client buckets can key on
///    the authenticated principal.
/// 5. [`RateLimitLayer`] — before the timeout so a refusal costs nothing.
/// 6. [`TimeoutLayer`] — innermost, so the deadline covers exactly the handler's work, and
///    dropping the handler's future cancels it (its queued job is then skipped).
pub fn stack(state: AppState, context: ContextLayer, options: StackOptions) -> Stack {
    let mut router = Router::new();
    if let Some(api) = options.api {
        let api = api.layer(TimeoutLayer::new(options.request_timeout));
        let api = match options.limiter {
            Some(limiter) => api.layer(RateLimitLayer::new(limiter)),
            None => api,
        };
        let api = match options.auth {
            Some(auth) => api.layer(AuthLayer::new(auth)),
            None => api,
        };
        router = router.merge(api);
    }
    // Probes stay on the shortest path; only the large bodies go through compression.
    let mut large = Router::new();
    if options.operational {
        router = router.merge(routes::probe_routes());
        large = large
            .merge(routes::metrics_routes())
            .merge(routes::doc_routes());
    }
    if options.profiling {
        router = router.merge(routes::profiling_routes());
    }
    let compress = CompressionLayer::new()
        .compress_when(SizeAbove::new(COMPRESS_ABOVE_BYTES).and(NotForContentType::IMAGES));
    let mut router = router
        .merge(large.layer(compress))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state);
    if let Some(cors) = options.cors {
        router = router.layer(cors);
    }
    context.layer(router)
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
                crate::auth::X_API_KEY.clone(),
                X_REQUEST_ID.clone(),
            ])
            .expose_headers([X_REQUEST_ID.clone(), header::RETRY_AFTER])
            .max_age(s.max_age),
    )
}
