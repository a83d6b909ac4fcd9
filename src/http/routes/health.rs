//! Health, liveness and readiness.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Serialize;

use crate::state::AppState;

/// `/health`: each registered check's verdict (`healthy` or why not).
#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    #[schema(example = json!({"worker_pool": "healthy"}))]
    pub status: BTreeMap<String, String>,
    pub timestamp: u64,
    /// Live tokio tasks; the name is kept for clients of the documented API.
    pub goroutines: usize,
    pub version: &'static str,
}

/// `/health/live` and `/health/ready`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProbeBody {
    /// `alive`, `ready`, `draining` or `unhealthy`.
    pub status: &'static str,
    /// The failing checks, when unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<BTreeMap<String, String>>,
}

/// `GET /health`: every registered check; 503 with the failing check's message.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Every check passes.", body = HealthBody),
        (status = 503, description = "A check fails; its entry says why.", body = HealthBody),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let report = state.health.run().await;
    let code = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        status: report.checks.into_iter().collect(),
        timestamp: crate::call::unix_now(),
        goroutines: crate::observability::metrics::live_tasks(),
        version: crate::VERSION,
    };
    (code, Json(body)).into_response()
}

/// `GET /health/live`: the process is up and serving.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is serving.", body = ProbeBody))
)]
pub async fn live() -> Response {
    Json(ProbeBody {
        status: "alive",
        checks: None,
    })
    .into_response()
}

/// `GET /health/ready`: 503 while draining at shutdown or while a check that gates readiness
/// fails. Load on the service (a full queue) is not one: every replica is loaded alike, so
/// taking loaded pods out of the load balancer would turn overload into an outage.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic.", body = ProbeBody),
        (status = 503, description = "Draining at shutdown, or a check that gates readiness fails.", body = ProbeBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.readiness.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ProbeBody {
                status: "draining",
                checks: None,
            }),
        )
            .into_response();
    }
    let report = state.health.run_readiness().await;
    if report.healthy {
        Json(ProbeBody {
            status: "ready",
            checks: None,
        })
        .into_response()
    } else {
        let failing: BTreeMap<_, _> = report
            .checks
            .into_iter()
            .filter(|(_, s)| s != "healthy")
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ProbeBody {
                status: "unhealthy",
                checks: Some(failing),
            }),
        )
            .into_response()
    }
}
