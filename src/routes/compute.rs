//! The compute endpoints.

use std::time::Duration;

use axum::extract::State;
use axum::Extension;
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::ComputeInput;
use crate::middleware::RequestInfo;
use crate::pool::JobError;
use crate::state::AppState;

/// A successful compute response.
#[derive(Debug, Serialize)]
pub struct ComputeResponse<'a> {
    pub request_id: &'a str,
    pub job_id: u64,
    pub result: u64,
    pub latency_us: u64,
    pub timestamp: u64,
    /// The intensive workload's output; absent for the fast endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

/// `POST /api/v1/compute/fast` (and `/api/v1/compute`): `number²`, computed inline.
pub async fn fast(
    Extension(info): Extension<RequestInfo>,
    input: ComputeInput,
) -> axum::response::Response {
    respond(&info, 0, input.number * input.number, None)
}

/// `POST /api/v1/compute/intensive`: `number²` plus the CPU-bound digest, on the worker pool.
pub async fn intensive(
    State(state): State<AppState>,
    Extension(info): Extension<RequestInfo>,
    input: ComputeInput,
) -> Result<axum::response::Response, ApiError> {
    let n = input.number;
    let rounds = state.settings.compute.intensive_rounds;
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
    Ok(respond(&info, job_id, result, Some(digest)))
}

fn respond(
    info: &RequestInfo,
    job_id: u64,
    result: u64,
    digest: Option<u64>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    Json(ComputeResponse {
        request_id: info.id(),
        job_id,
        result,
        latency_us: info.start.elapsed().as_micros() as u64,
        timestamp: crate::middleware::unix_now(),
        digest,
    })
    .into_response()
}
