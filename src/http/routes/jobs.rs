//! API v2: durable jobs — submit (one, or a batch), poll, cancel, retry, list.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::domain::jobs::{Attempt, Job, JobStatus, Jobs, Scope, Submission, Submitted, When};
use crate::error::ApiError;
use crate::http::error::JobErrors;
use crate::http::extract::{json_fields, whole_number, BatchBytes, BodyBytes};
use crate::state::AppState;

/// `Idempotency-Key`.
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `Idempotent-Replayed`.
static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A job, as the API shows it; absent fields are omitted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobBody {
    /// A UUIDv7: jobs sort by creation time.
    pub id: String,
    /// `queued`, `scheduled` (not before `run_at`: asked for later, or waiting out the
    /// backoff before another attempt), `running`, `succeeded`, `failed` (an error another
    /// attempt would not mend), `cancelled` or `discarded` (every attempt failed).
    #[schema(example = "succeeded")]
    pub status: &'static str,
    pub number: u64,
    pub rounds: u64,
    /// `number²`, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<u64>,
    /// The workload's output, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
    /// Why its last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts so far (a retry asked for with `POST …/retry` counts afresh).
    pub attempts: u32,
    /// RFC 3339.
    pub created_at: String,
    /// Not run before this (RFC 3339).
    pub run_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Every attempt, first to last, with why each failed (`GET /api/v2/jobs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<AttemptBody>>,
}

/// One attempt at a job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptBody {
    /// 1 for the first.
    pub attempt: u32,
    /// RFC 3339.
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Attempt> for AttemptBody {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: rfc3339(a.started_at),
            finished_at: a.finished_at.map(rfc3339),
            error: a.error,
        }
    }
}

pub(super) fn rfc3339(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

impl From<Job> for JobBody {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            status: j.status.as_str(),
            number: j.number,
            rounds: j.rounds,
            result: j.result,
            digest: j.digest,
            error: j.error,
            attempts: j.attempts,
            created_at: rfc3339(j.created_at),
            run_at: rfc3339(j.run_at),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            history: None,
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobBody>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// The body of `POST /api/v2/jobs`.
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"number": 42, "rounds": 1000000}))]
pub struct SubmitJob {
    /// The number to square and digest.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub number: u64,
    /// Rounds of the workload; `compute.intensive_rounds` when absent, at most
    /// `jobs.max_rounds`.
    #[schema(minimum = 1)]
    pub rounds: Option<u64>,
    /// Not run before this time (RFC 3339, such as `2026-12-24T18:00:00Z`), at most 365 days
    /// ahead; a time past runs at once. Not with `delay`.
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Not run before this long after submission (such as `30s` or `1h30m`), at most 365
    /// days. Not with `run_at`.
    #[schema(pattern = "^([0-9]+(ns|us|ms|s|m|h|d) ?)+$")]
    pub delay: Option<String>,
}

/// One job of `POST /api/v2/jobs:batch`: a submission and its own idempotency key.
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"number": 42, "delay": "10s", "idempotency_key": "order-17-a"}))]
pub struct BatchJob {
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub number: u64,
    #[schema(minimum = 1)]
    pub rounds: Option<u64>,
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    #[schema(pattern = "^([0-9]+(ns|us|ms|s|m|h|d) ?)+$")]
    pub delay: Option<String>,
    /// As the `Idempotency-Key` header of a single submission.
    #[schema(pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
}

/// The body of `POST /api/v2/jobs:batch`.
#[derive(Debug, utoipa::ToSchema)]
pub struct SubmitBatch {
    /// 1 to 1,000 jobs, committed in one transaction.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<BatchJob>,
}

/// A job of a batch's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchedJob {
    #[serde(flatten)]
    pub job: JobBody,
    /// An earlier submission with the same idempotency key and body made this job.
    pub replayed: bool,
}

/// The answer to `POST /api/v2/jobs:batch`: each job, in the order submitted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchBody {
    pub jobs: Vec<BatchedJob>,
}

pub(super) fn jobs(state: &AppState) -> Result<&Jobs, ApiError> {
    state
        .jobs
        .get()
        .ok_or_else(crate::domain::jobs::unavailable)
}

/// `POST /api/v2/jobs`: queue a job; 202 once it is committed to the database.
#[utoipa::path(post, path = "/api/v2/jobs", tag = "jobs", operation_id = "submit_job",
    request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1–255 visible ASCII characters: the same key with the same body returns the original job. With authentication on, keys are per principal: another principal's same key is another key.")),
    responses(
        (status = 202, description = "Queued and committed; `Location` names the job.", body = JobBody,
            headers(("Location" = String, description = "/api/v2/jobs/{id}")),
            links(
                ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")))),
                ("CancelJob" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/id")))),
                ("RetryJob" = (operation_id = "retry_job", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 200, description = "The original job for a replayed `Idempotency-Key` (`Idempotent-Replayed: true`).", body = JobBody),
        JobErrors,
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn submit(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    let jobs = jobs(&state)?;
    let mut submission = parse_submit(&body.0, jobs.settings.max_rounds)?;
    submission.idempotency_key = idempotency_key(&headers)?;
    let submitted = jobs
        .submit(&scope, submission, state.settings.compute.intensive_rounds)
        .await?;
    let job = JobBody::from(submitted.job);
    if submitted.replayed {
        return Ok((
            [(
                IDEMPOTENT_REPLAYED.clone(),
                HeaderValue::from_static("true"),
            )],
            Json(job),
        )
            .into_response());
    }
    let location = HeaderValue::from_str(&format!("/api/v2/jobs/{}", job.id))
        .map_err(|_| ApiError::InternalError)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

/// The `Idempotency-Key` header, which must not be repeated; its value is checked by
/// [`Jobs::submit`].
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    match (values.next(), value.to_str()) {
        (None, Ok(key)) => Ok(Some(key.to_owned())),
        _ => Err(ApiError::InvalidRequest(
            "Idempotency-Key must be one header of 1-255 visible ASCII characters".into(),
        )),
    }
}

/// The fields of a submission, kept as written (see [`json_fields`]).
#[derive(Deserialize)]
struct RawSubmit<'a> {
    #[serde(default, borrow)]
    number: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    rounds: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    run_at: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    /// In a batch only (a single submission uses the header).
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `{"number": n, "rounds": r, "run_at": t | "delay": d}`, all but `number` optional; the
/// ranges are checked again, for every transport, by [`Jobs::submit`].
fn parse_submit(body: &[u8], max_rounds: u64) -> Result<Submission, ApiError> {
    let fields: RawSubmit = json_fields(body)?;
    if fields.idempotency_key.is_some() {
        return Err(ApiError::InvalidRequest(
            "idempotency_key belongs in the Idempotency-Key header here (in the body of a batch's jobs only)".into(),
        ));
    }
    submission(fields, max_rounds)
}

fn submission(fields: RawSubmit<'_>, max_rounds: u64) -> Result<Submission, ApiError> {
    let number = whole_number(
        fields.number.map(|v| v.get()),
        "number",
        crate::domain::MAX_NUMBER,
    )?;
    let rounds = match fields.rounds.map(|v| v.get()) {
        None | Some("null") => None,
        Some(raw) => Some(whole_number(Some(raw), "rounds", max_rounds)?),
    };
    let when = match (fields.run_at, fields.delay) {
        (None, None) => When::Now,
        (Some(at), None) => When::At(at),
        (None, Some(delay)) => When::After(delay),
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give run_at or delay, not both".into(),
            ))
        }
    };
    Ok(Submission {
        number,
        rounds,
        idempotency_key: fields.idempotency_key,
        when,
    })
}

/// The body of a batch: its jobs, each kept as written.
#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    jobs: Vec<&'a serde_json::value::RawValue>,
}

/// `POST /api/v2/jobs:batch`: queue up to 1,000 jobs in one transaction; every one is
/// committed, or none.
#[utoipa::path(post, path = "/api/v2/jobs:batch", tag = "jobs", operation_id = "submit_jobs",
    request_body = SubmitBatch,
    responses(
        (status = 202, description = "Every job committed (or, for a replayed `idempotency_key`, the earlier job), in the order submitted.", body = BatchBody),
        JobErrors,
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn submit_batch(
    State(state): State<AppState>,
    scope: Scope,
    body: BatchBytes,
) -> Result<Response, ApiError> {
    let jobs = jobs(&state)?;
    let raw: RawBatch = json_fields(&body.0)?;
    let batch = raw
        .jobs
        .iter()
        .enumerate()
        .map(|(i, item)| {
            json_fields::<RawSubmit>(item.get().as_bytes())
                .and_then(|fields| submission(fields, jobs.settings.max_rounds))
                .map_err(|e| match e {
                    ApiError::InvalidRequest(why) => {
                        ApiError::InvalidRequest(format!("jobs[{i}]: {why}"))
                    }
                    other => other,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let submitted = jobs
        .submit_batch(&scope, batch, state.settings.compute.intensive_rounds)
        .await?;
    let body = BatchBody {
        jobs: submitted
            .into_iter()
            .map(|Submitted { job, replayed }| BatchedJob {
                job: JobBody::from(job),
                replayed,
            })
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /api/v2/jobs/{id}/retry`: put a discarded or failed job back in the queue.
#[utoipa::path(post, path = "/api/v2/jobs/{id}/retry", tag = "jobs", operation_id = "retry_job",
    params(("id" = String, Path, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", description = "The job's id (a UUID).")),
    responses(
        (status = 200, description = "Queued again, its attempts counted afresh (their history kept).", body = JobBody),
        JobErrors,
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn retry(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = jobs(&state)?.retry(&scope, &id).await?;
    Ok(Json(JobBody::from(job)).into_response())
}

/// `GET /api/v2/jobs/{id}`.
#[utoipa::path(get, path = "/api/v2/jobs/{id}", tag = "jobs", operation_id = "get_job",
    params(("id" = String, Path, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", description = "The job's id (a UUID).")),
    responses((status = 200, description = "The job.", body = JobBody), JobErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let jobs = jobs(&state)?;
    let job = jobs.find(&scope, &id).await?;
    let history = jobs.attempts(&job.id).await?;
    let mut body = JobBody::from(job);
    body.history = Some(history.into_iter().map(AttemptBody::from).collect());
    Ok(Json(body).into_response())
}

/// `DELETE /api/v2/jobs/{id}`: cancel a job not yet ended (a running one stops between
/// chunks of rounds).
#[utoipa::path(delete, path = "/api/v2/jobs/{id}", tag = "jobs", operation_id = "cancel_job",
    params(("id" = String, Path, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", description = "The job's id (a UUID).")),
    responses((status = 200, description = "Cancelled.", body = JobBody), JobErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = jobs(&state)?.cancel(&scope, &id).await?;
    Ok(Json(JobBody::from(job)).into_response())
}

/// Query of `GET /api/v2/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status.
    #[param(inline, value_type = Option<StatusFilter>)]
    pub status: Option<String>,
    /// Jobs per page (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
}

/// A job status, as a filter.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StatusFilter {
    Queued,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Discarded,
}

/// `GET /api/v2/jobs`: newest first, by keyset pages.
#[utoipa::path(get, path = "/api/v2/jobs", tag = "jobs", operation_id = "list_jobs",
    params(ListQuery),
    responses((status = 200, description = "A page of jobs.", body = JobPage), JobErrors),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    scope: Scope,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let jobs = jobs(&state)?;
    let Query(q) = query
        .map_err(|e| ApiError::InvalidRequest(format!("the query string is malformed: {e}")))?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(ApiError::InvalidRequest)?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| {
                ApiError::InvalidRequest("limit must be an integer between 1 and 1000".into())
            })?,
    };
    let cursor = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let page = jobs.list(&scope, status, limit, cursor).await?;
    let next_cursor = (page.len() == limit as usize)
        .then(|| page.last().map(|j| format!("{}_{}", j.created_at, j.id)))
        .flatten();
    Ok(Json(JobPage {
        jobs: page.into_iter().map(JobBody::from).collect(),
        next_cursor,
    })
    .into_response())
}

fn parse_cursor(c: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::InvalidRequest("cursor is not one this API gave out".into());
    let (created, id) = c.split_once('_').ok_or_else(bad)?;
    let created = created.parse().map_err(|_| bad())?;
    Ok((created, crate::domain::jobs::job_id(id).map_err(|_| bad())?))
}
