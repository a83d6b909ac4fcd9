//! Cross-cutting behaviour as tower layers, and the one function that orders them.

mod client_ip;
mod context;
mod rate_limit;
mod timeout;

pub use client_ip::client_ip;
pub use context::{ContextConfig, ContextLayer, RequestContext, RequestInfo, X_REQUEST_ID};
pub use rate_limit::{RateLimitLayer, RateLimiter};
pub use timeout::TimeoutLayer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use tower::Layer;

use crate::routes;
use crate::state::AppState;

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
/// 1. [`ContextLayer`] — request ID, span, panic guard, metrics, access log, and the JSON
///    error envelope. Outermost so it sees every response, including refusals made by the
///    layers below and 404/405 from routing.
/// 2. Routing. Operational routes (health, readiness, metrics) stop here: probes and scrapes
///    are never rate limited or timed out.
/// 3. [`RateLimitLayer`] — on API routes only, before the timeout so a refusal costs nothing.
/// 4. [`TimeoutLayer`] — innermost, so the deadline covers exactly the handler's work, and
///    dropping the handler's future cancels it (its queued job is then skipped).
pub fn stack(
    state: AppState,
    api: Router<AppState>,
    context: ContextLayer,
    limiter: Option<RateLimiter>,
    request_timeout: Duration,
) -> RequestContext<Router> {
    let api = api.layer(TimeoutLayer::new(request_timeout));
    let api = match limiter {
        Some(limiter) => api.layer(RateLimitLayer::new(limiter)),
        None => api,
    };
    let router = routes::operational_routes()
        .merge(api)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state);
    context.layer(router)
}
