//! The compute endpoints: HTTP in and out; the work is [`crate::domain::Compute`]'s.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Serialize;

use crate::call::{unix_now, RequestInfo};
use crate::domain::{ComputeInput, Computed};
use crate::error::ApiError;
use crate::http::error::ComputeErrors;
use crate::http::extract::ComputeRequest;
use crate::state::AppState;

/// A successful compute response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ComputeResponse<'a> {
    pub request_id: &'a str,
    pub job_id: u64,
    pub result: u64,
    pub latency_us: u64,
    pub timestamp: u64,
    /// The intensive workload's output; absent for the fast endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
    /// Present and true when the result came from the result cache (no job ran; `job_id` 0).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// `POST /api/v1/compute/fast`: `number²`, computed inline.
#[utoipa::path(post, path = "/api/v1/compute/fast", tag = "compute",
    request_body = ComputeRequest,
    responses((status = 200, description = "`result` is `number²`; `job_id` is 0.", body = ComputeResponse), ComputeErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn fast(
    State(state): State<AppState>,
    Extension(info): Extension<RequestInfo>,
    input: ComputeInput,
) -> Response {
    respond(&info, state.compute.fast(input))
}

/// `POST /api/v1/compute`: the documented alias of the fast endpoint.
#[utoipa::path(post, path = "/api/v1/compute", tag = "compute",
    request_body = ComputeRequest,
    responses((status = 200, description = "Same as `/api/v1/compute/fast`.", body = ComputeResponse), ComputeErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn compute(
    state: State<AppState>,
    info: Extension<RequestInfo>,
    input: ComputeInput,
) -> Response {
    fast(state, info, input).await
}

/// `POST /api/v1/compute/intensive`: `number²` plus the CPU-bound digest, on the worker pool
/// (or from the result cache when it is on).
#[utoipa::path(post, path = "/api/v1/compute/intensive", tag = "compute",
    request_body = ComputeRequest,
    responses((status = 200, description = "`result` is `number²`, `digest` the workload's output, `job_id` the pool job that computed it.", body = ComputeResponse), ComputeErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn intensive(
    State(state): State<AppState>,
    Extension(info): Extension<RequestInfo>,
    input: ComputeInput,
) -> Result<Response, ApiError> {
    let computed = state.compute.intensive(input).await?;
    Ok(respond(&info, computed))
}

fn respond(info: &RequestInfo, c: Computed) -> Response {
    Json(ComputeResponse {
        request_id: info.id(),
        job_id: c.job_id,
        result: c.result,
        latency_us: info.start.elapsed().as_micros() as u64,
        timestamp: unix_now(),
        digest: c.digest,
        cached: c.cached,
    })
    .into_response()
}
