//! The route table and its handlers.

pub mod compute;
pub mod health;
pub mod metrics;

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
    /// Any path not above; one label value so scanners cannot explode cardinality.
    Unmatched,
}

impl Route {
    pub const ALL: [Route; 10] = [
        Route::Health,
        Route::Live,
        Route::Ready,
        Route::Metrics,
        Route::MetricsPrometheus,
        Route::Stats,
        Route::ComputeFast,
        Route::Compute,
        Route::ComputeIntensive,
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
            _ => Route::Unmatched,
        }
    }

    /// Health, readiness, liveness and metrics: never rate limited or timed out.
    pub const fn is_operational(self) -> bool {
        matches!(
            self,
            Route::Health
                | Route::Live
                | Route::Ready
                | Route::Metrics
                | Route::MetricsPrometheus
                | Route::Stats
        )
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

/// Health and metrics routes.
pub fn operational_routes() -> Router<AppState> {
    Router::new()
        .route(Route::Health.template(), get(health::health))
        .route(Route::Live.template(), get(health::live))
        .route(Route::Ready.template(), get(health::ready))
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
        .route(Route::Compute.template(), post(compute::fast))
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
