//! Health, liveness and readiness.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Serialize;

use crate::state::AppState;

#[derive(Serialize)]
struct HealthBody {
    status: BTreeMap<String, String>,
    timestamp: u64,
    /// Live tokio tasks; the name is kept for clients of the documented API.
    goroutines: usize,
    version: &'static str,
}

/// `GET /health`: every registered check; 503 with the failing check's message.
pub async fn health(State(state): State<AppState>) -> Response {
    let report = state.health.run().await;
    let code = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        status: report.checks.into_iter().collect(),
        timestamp: crate::middleware::unix_now(),
        goroutines: crate::metrics::live_tasks(),
        version: crate::VERSION,
    };
    (code, Json(body)).into_response()
}

/// `GET /health/live`: the process is up and serving.
pub async fn live() -> Response {
    Json(serde_json::json!({ "status": "alive" })).into_response()
}

/// `GET /health/ready`: 503 while draining at shutdown or while a check fails.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.readiness.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        )
            .into_response();
    }
    let report = state.health.run().await;
    if report.healthy {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        let failing: BTreeMap<_, _> = report
            .checks
            .into_iter()
            .filter(|(_, s)| s != "healthy")
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unhealthy", "checks": failing })),
        )
            .into_response()
    }
}
