//! The JSON statistics and the Prometheus exposition.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderMap, HeaderValue};
use serde::Serialize;

use crate::observability::metrics::{self as m, EXPOSITION_CONTENT_TYPE};
use crate::state::AppState;

/// The documented keys, plus refusals split by cause and latency percentiles.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsBody {
    pub total_requests: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub active_requests: i64,
    /// All admission refusals: rate limited (429) plus overloaded (503).
    pub rejected_count: u64,
    pub success_rate: f64,
    pub avg_latency_us: u64,
    pub queue_depth: usize,
    pub worker_count: usize,
    pub goroutines: usize,
    pub timestamp: u64,
    pub rate_limited_count: u64,
    pub overloaded_count: u64,
    pub latency_p50_us: u64,
    pub latency_p95_us: u64,
    pub latency_p99_us: u64,
}

/// `GET /metrics`: JSON, unless the client prefers the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "The request statistics as JSON, or the Prometheus text exposition when `Accept` prefers `text/plain;version=0.0.4` or OpenMetrics.",
        content((StatsBody = "application/json"), (String = "text/plain"))))
)]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if prefers_exposition(&headers) {
        exposition(&state)
    } else {
        Json(snapshot(&state)).into_response()
    }
}

/// `GET /metrics/prometheus`: always the text exposition.
#[utoipa::path(get, path = "/metrics/prometheus", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4).", body = String, content_type = "text/plain"))
)]
pub async fn prometheus(State(state): State<AppState>) -> Response {
    exposition(&state)
}

/// `GET /api/v1/stats`: always JSON.
#[utoipa::path(get, path = "/api/v1/stats", tag = "metrics",
    responses((status = 200, description = "The request statistics.", body = StatsBody))
)]
pub async fn stats(State(state): State<AppState>) -> Json<StatsBody> {
    Json(snapshot(&state))
}

/// The JSON statistics now.
pub fn snapshot(state: &AppState) -> StatsBody {
    snapshot_of(state, state.metrics.stats())
}

/// The statistics body for counters already read (so a caller's rates and totals agree).
pub fn snapshot_of(state: &AppState, s: m::StatsSnapshot) -> StatsBody {
    let pool = state.pool.status();
    let success_rate = if s.total_requests == 0 {
        0.0
    } else {
        (s.success_count as f64 * 10_000.0 / s.total_requests as f64).round() / 100.0
    };
    StatsBody {
        total_requests: s.total_requests,
        success_count: s.success_count,
        error_count: s.error_count,
        active_requests: s.active_requests,
        rejected_count: s.rate_limited_count + s.overloaded_count,
        success_rate,
        avg_latency_us: s.avg_latency_us,
        queue_depth: pool.queue_depth,
        worker_count: pool.alive,
        goroutines: m::live_tasks(),
        timestamp: crate::call::unix_now(),
        rate_limited_count: s.rate_limited_count,
        overloaded_count: s.overloaded_count,
        latency_p50_us: s.latency_p50_us,
        latency_p95_us: s.latency_p95_us,
        latency_p99_us: s.latency_p99_us,
    }
}

fn exposition(state: &AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
        )],
        state.render_metrics(),
    )
        .into_response()
}

/// True when `Accept` ranks the Prometheus text or OpenMetrics format above JSON.
pub fn prefers_exposition(headers: &HeaderMap) -> bool {
    let mut json_q = 0.0f32;
    let mut text_q = 0.0f32;
    let mut any_q = None::<f32>;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some(v) = p.trim().strip_prefix("q=") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/json" => json_q = json_q.max(q),
                "text/plain" | "application/openmetrics-text" => text_q = text_q.max(q),
                "*/*" | "application/*" => any_q = Some(any_q.unwrap_or(0.0).max(q)),
                _ => {}
            }
        }
    }
    if let Some(any) = any_q {
        json_q = json_q.max(any);
    }
    text_q > json_q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        prefers_exposition(&h)
    }

    #[test]
    fn negotiation() {
        assert!(accept("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(accept("text/plain;version=0.0.4"));
        assert!(!accept("*/*"));
        assert!(!accept("application/json"));
        assert!(!accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!prefers_exposition(&HeaderMap::new()));
    }
}
