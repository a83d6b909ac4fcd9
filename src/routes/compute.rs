//! The compute endpoints.

use std::time::Duration;

use axum::extract::State;
use axum::Extension;
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::{ComputeInput, ComputeRequest};
use crate::middleware::RequestInfo;
use crate::openapi::ComputeErrors;
use crate::pool::JobError;
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
    Extension(info): Extension<RequestInfo>,
    input: ComputeInput,
) -> axum::response::Response {
    respond(&info, 0, input.number * input.number, None, false)
}

/// `POST /api/v1/compute`: the documented alias of the fast endpoint.
#[utoipa::path(post, path = "/api/v1/compute", tag = "compute",
    request_body = ComputeRequest,
    responses((status = 200, description = "Same as `/api/v1/compute/fast`.", body = ComputeResponse), ComputeErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn compute(
    info: Extension<RequestInfo>,
    input: ComputeInput,
) -> axum::response::Response {
    fast(info, input).await
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
) -> Result<axum::response::Response, ApiError> {
    let n = input.number;
    let rounds = state.settings.compute.intensive_rounds;
    if let Some((result, digest)) = state.cache.as_ref().and_then(|c| c.get(n, rounds)) {
        return Ok(respond(&info, 0, result, Some(digest), true));
    }
    let kernel = state.kernel;
    let job = state
        .pool
        .submit(move || (n * n, kernel(n, rounds)))
        .map_err(|_| ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        })?;
    let job_id = job.id();
    let (result, digest) = job.await.map_err(|e| match e {
        JobError::Failed(msg) => {
            tracing::error!(job_id, request_id = info.id(), error = %msg, "intensive job failed");
            ApiError::Processing(format!("job {job_id} failed while processing"))
        }
        JobError::Stopped => ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        },
    })?;
    if let Some(cache) = &state.cache {
        cache.insert(n, rounds, (result, digest));
    }
    Ok(respond(&info, job_id, result, Some(digest), false))
}

fn respond(
    info: &RequestInfo,
    job_id: u64,
    result: u64,
    digest: Option<u64>,
    cached: bool,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    Json(ComputeResponse {
        request_id: info.id(),
        job_id,
        result,
        latency_us: info.start.elapsed().as_micros() as u64,
        timestamp: crate::middleware::unix_now(),
        digest,
        cached,
    })
    .into_response()
}
