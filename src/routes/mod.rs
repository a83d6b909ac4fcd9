//! The route table and its handlers.

pub mod compute;
pub mod docs;
pub mod health;
pub mod metrics;
pub mod profile;

use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::metrics::RouteLabel;
use crate::state::AppState;

/// Every route the service serves. Templates are exact paths, so matching a path to its
/// route here agrees with the router and yields a bounded label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Live,
    Ready,
    Metrics,
    MetricsPrometheus,
    Stats,
    ComputeFast,
    Compute,
    ComputeIntensive,
    OpenApi,
    /// The API reference page and its files (`/docs/...`).
    Docs,
    Profile,
    /// Any path not above; one label value so scanners cannot explode cardinality.
    Unmatched,
}

impl Route {
    pub const ALL: [Route; 13] = [
        Route::Health,
        Route::Live,
        Route::Ready,
        Route::Metrics,
        Route::MetricsPrometheus,
        Route::Stats,
        Route::ComputeFast,
        Route::Compute,
        Route::ComputeIntensive,
        Route::OpenApi,
        Route::Docs,
        Route::Profile,
        Route::Unmatched,
    ];

    pub const fn template(self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Live => "/health/live",
            Route::Ready => "/health/ready",
            Route::Metrics => "/metrics",
            Route::MetricsPrometheus => "/metrics/prometheus",
            Route::Stats => "/api/v1/stats",
            Route::ComputeFast => "/api/v1/compute/fast",
            Route::Compute => "/api/v1/compute",
            Route::ComputeIntensive => "/api/v1/compute/intensive",
            Route::OpenApi => "/openapi.json",
            Route::Docs => "/docs",
            Route::Profile => "/debug/pprof/profile",
            Route::Unmatched => "unmatched",
        }
    }

    /// The route a request path belongs to.
    pub fn from_path(path: &str) -> Route {
        match path {
            "/health" => Route::Health,
            "/health/live" => Route::Live,
            "/health/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            "/metrics/prometheus" => Route::MetricsPrometheus,
            "/api/v1/stats" => Route::Stats,
            "/api/v1/compute/fast" => Route::ComputeFast,
            "/api/v1/compute" => Route::Compute,
            "/api/v1/compute/intensive" => Route::ComputeIntensive,
            "/openapi.json" => Route::OpenApi,
            "/debug/pprof/profile" => Route::Profile,
            p if p == "/docs" || p.starts_with("/docs/") => Route::Docs,
            _ => Route::Unmatched,
        }
    }

    /// Health, readiness, liveness, metrics, documents and profiling: never rate limited,
    /// timed out or authenticated.
    pub const fn is_operational(self) -> bool {
        !matches!(
            self,
            Route::ComputeFast | Route::Compute | Route::ComputeIntensive | Route::Unmatched
        )
    }

    /// In the OpenAPI document (profiling is an admin tool, not part of the API).
    pub const fn documented(self) -> bool {
        !matches!(self, Route::Profile | Route::Unmatched)
    }

    /// How metrics see this route: scrapes are not traffic; API routes (and unmatched
    /// paths) feed the JSON statistics.
    pub const fn label(self) -> RouteLabel {
        RouteLabel {
            index: self as usize,
            template: self.template(),
            api: !self.is_operational(),
            recorded: !matches!(
                self,
                Route::Metrics | Route::MetricsPrometheus | Route::Stats
            ),
        }
    }
}

/// The OpenAPI document and the reference page.
pub fn doc_routes() -> Router<AppState> {
    Router::new()
        .route(Route::OpenApi.template(), get(docs::openapi_json))
        .route(Route::Docs.template(), get(docs::docs))
        .route("/docs/", get(docs::docs))
        .route("/docs/{*file}", get(docs::asset))
}

/// CPU profiling (admin listener only).
pub fn profiling_routes() -> Router<AppState> {
    Router::new().route(Route::Profile.template(), get(profile::profile))
}

/// Health, liveness and readiness.
pub fn probe_routes() -> Router<AppState> {
    Router::new()
        .route(Route::Health.template(), get(health::health))
        .route(Route::Live.template(), get(health::live))
        .route(Route::Ready.template(), get(health::ready))
}

/// The statistics and the exposition.
pub fn metrics_routes() -> Router<AppState> {
    Router::new()
        .route(Route::Metrics.template(), get(metrics::metrics))
        .route(
            Route::MetricsPrometheus.template(),
            get(metrics::prometheus),
        )
        .route(Route::Stats.template(), get(metrics::stats))
}

/// The compute API.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route(Route::ComputeFast.template(), post(compute::fast))
        .route(Route::Compute.template(), post(compute::compute))
        .route(Route::ComputeIntensive.template(), post(compute::intensive))
}

/// 404 for unknown paths.
pub async fn not_found(uri: http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// 405 for known paths with the wrong method.
pub async fn method_not_allowed(method: http::Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_maps_back_to_its_route() {
        for route in Route::ALL {
            if route != Route::Unmatched {
                assert_eq!(Route::from_path(route.template()), route);
            }
            assert!(route.label().index < crate::metrics::MAX_ROUTES);
        }
        assert_eq!(Route::from_path("/wp-admin"), Route::Unmatched);
    }
}
