//! The JSON statistics and the Prometheus exposition.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderMap, HeaderValue};
use serde::Serialize;

use crate::observability::metrics::{self as m, EXPOSITION_CONTENT_TYPE};
use crate::observability::openmetrics;
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

/// `GET /metrics`: JSON, unless the client prefers the Prometheus text format or OpenMetrics.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "The request statistics as JSON; the Prometheus text exposition when `Accept` prefers `text/plain;version=0.0.4`; OpenMetrics 1.0, with exemplars, when it prefers `application/openmetrics-text`.",
        content((StatsBody = "application/json"), (String = "text/plain"), (String = "application/openmetrics-text"))))
)]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if prefers_exposition(&headers) {
        exposition(&state, &headers)
    } else {
        Json(snapshot(&state)).into_response()
    }
}

/// `GET /metrics/prometheus`: always an exposition, OpenMetrics when `Accept` prefers it.
#[utoipa::path(get, path = "/metrics/prometheus", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4), or OpenMetrics 1.0 with exemplars when `Accept` prefers `application/openmetrics-text`.",
        content((String = "text/plain"), (String = "application/openmetrics-text"))))
)]
pub async fn prometheus(State(state): State<AppState>, headers: HeaderMap) -> Response {
    exposition(&state, &headers)
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

fn exposition(state: &AppState, headers: &HeaderMap) -> Response {
    let (content_type, body) = if prefers_openmetrics(headers) {
        (openmetrics::CONTENT_TYPE, state.render_openmetrics())
    } else {
        (EXPOSITION_CONTENT_TYPE, state.render_metrics())
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// True when `Accept` ranks OpenMetrics at least as high as the 0.0.4 text format (as
/// Prometheus does: OpenMetrics first, text at q=0.5).
pub fn prefers_openmetrics(headers: &HeaderMap) -> bool {
    let mut om_q = 0.0f32;
    let mut text_q = 0.0f32;
    for (media, q) in accepted(headers) {
        match media.as_str() {
            "application/openmetrics-text" => om_q = om_q.max(q),
            "text/plain" => text_q = text_q.max(q),
            _ => {}
        }
    }
    om_q > 0.0 && om_q >= text_q
}

/// Every media range of `Accept` with its quality.
fn accepted(headers: &HeaderMap) -> impl Iterator<Item = (String, f32)> + '_ {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some(v) = p.trim().strip_prefix("q=") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            (media, q)
        })
}

/// True when `Accept` ranks the Prometheus text or OpenMetrics format above JSON.
pub fn prefers_exposition(headers: &HeaderMap) -> bool {
    let mut json_q = 0.0f32;
    let mut text_q = 0.0f32;
    let mut any_q = None::<f32>;
    for (media, q) in accepted(headers) {
        match media.as_str() {
            "application/json" => json_q = json_q.max(q),
            "text/plain" | "application/openmetrics-text" => text_q = text_q.max(q),
            "*/*" | "application/*" => any_q = Some(any_q.unwrap_or(0.0).max(q)),
            _ => {}
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

    #[test]
    fn openmetrics_when_ranked_at_least_as_high_as_text() {
        let om = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            prefers_openmetrics(&h)
        };
        // What Prometheus 2.42 sends.
        assert!(om("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(om("application/openmetrics-text"));
        assert!(!om("text/plain;version=0.0.4"));
        assert!(!om("text/plain,application/openmetrics-text;q=0.5"));
        assert!(!om("*/*"));
        assert!(!prefers_openmetrics(&HeaderMap::new()));
    }
}
