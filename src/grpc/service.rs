//! `floodgate.v1.ComputeService`: protobuf in and out; the work is the domain's, the same
//! calls the REST handlers make.

use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Request, Response, Status};

use super::context::RefusalSlot;
use super::pb;
use super::status::status;
use crate::admission::Identity;
use crate::call::{jobs_scope, unix_now, RequestInfo};
use crate::domain::job_events::{JobEvent, JobWatch};
use crate::domain::jobs::{Job, JobStatus, Jobs, Scope, Submission, When};
use crate::domain::{ComputeInput, Computed, MAX_NUMBER};
use crate::error::ApiError;
use crate::observability::metrics::Refused;
use crate::state::{AppState, StreamClass};

/// The service over the application's state.
#[derive(Clone)]
pub struct ComputeApi {
    state: AppState,
}

impl ComputeApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn jobs(&self) -> Result<&Jobs, ApiError> {
        self.state
            .jobs
            .get()
            .ok_or_else(crate::domain::jobs::unavailable)
    }
}

/// `err` as a status, counted as a refusal when it is one.
fn refuse<T>(request: &Request<T>, err: ApiError) -> Status {
    if let ApiError::ServiceOverloaded { .. } = err {
        if let Some(slot) = request.extensions().get::<RefusalSlot>() {
            slot.set(Refused::Overloaded);
        }
    }
    status(&err)
}

/// Whose jobs the caller sees, as over REST.
fn scope<T>(request: &Request<T>) -> Scope {
    jobs_scope(request.extensions().get::<Identity>())
}

fn input(number: u64) -> Result<ComputeInput, ApiError> {
    if number > MAX_NUMBER {
        return Err(ApiError::InvalidRequest(format!(
            "number must be an integer between 0 and {MAX_NUMBER} (got {number})"
        )));
    }
    Ok(ComputeInput { number })
}

fn respond<T>(request: &Request<T>, c: Computed) -> Response<pb::ComputeResponse> {
    let info = request.extensions().get::<RequestInfo>();
    Response::new(pb::ComputeResponse {
        request_id: info.map(|i| i.id().to_owned()).unwrap_or_default(),
        job_id: c.job_id,
        result: c.result,
        latency_us: info.map_or(0, |i| i.start.elapsed().as_micros() as u64),
        timestamp: unix_now(),
        digest: c.digest,
        cached: c.cached,
    })
}

fn rfc3339(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

fn job(j: Job, replayed: bool) -> pb::Job {
    let status = match j.status {
        JobStatus::Queued => pb::JobStatus::Queued,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Succeeded => pb::JobStatus::Succeeded,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
        JobStatus::Scheduled => pb::JobStatus::Scheduled,
        JobStatus::Discarded => pb::JobStatus::Discarded,
    };
    pb::Job {
        id: j.id,
        status: status as i32,
        number: j.number,
        rounds: j.rounds,
        result: j.result,
        digest: j.digest,
        error: j.error,
        attempts: j.attempts,
        created_at: rfc3339(j.created_at),
        started_at: j.started_at.map(rfc3339),
        finished_at: j.finished_at.map(rfc3339),
        replayed,
        run_at: rfc3339(j.run_at),
    }
}

/// A submission as the REST API reads it.
fn submission(r: &pb::SubmitJobRequest) -> Result<Submission, ApiError> {
    let when = match (&r.run_at, &r.delay) {
        (None, None) => When::Now,
        (Some(at), None) => When::At(at.clone()),
        (None, Some(delay)) => When::After(delay.clone()),
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give run_at or delay, not both".into(),
            ))
        }
    };
    Ok(Submission {
        number: r.number,
        rounds: r.rounds,
        idempotency_key: r.idempotency_key.clone(),
        when,
    })
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::Job, Status>> + Send>>;

/// One `WatchJob`: its subscription to the job, the shutdown signal, and its place among the
/// API's streams (freed when the stream is dropped, however it ends).
struct Following {
    watch: JobWatch,
    closing: tokio::sync::watch::Receiver<bool>,
    _place: OwnedSemaphorePermit,
}

/// How long a `WatchJob` ended by shutdown is asked to wait before following again.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(1);

#[tonic::async_trait]
impl pb::compute_service_server::ComputeService for ComputeApi {
    async fn fast(
        &self,
        request: Request<pb::ComputeRequest>,
    ) -> Result<Response<pb::ComputeResponse>, Status> {
        let input = input(request.get_ref().number).map_err(|e| refuse(&request, e))?;
        Ok(respond(&request, self.state.compute.fast(input)))
    }

    async fn intensive(
        &self,
        request: Request<pb::ComputeRequest>,
    ) -> Result<Response<pb::ComputeResponse>, Status> {
        let input = input(request.get_ref().number).map_err(|e| refuse(&request, e))?;
        match self.state.compute.intensive(input).await {
            Ok(computed) => Ok(respond(&request, computed)),
            Err(e) => Err(refuse(&request, e)),
        }
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs().map_err(|e| refuse(&request, e))?;
        let submission = submission(request.get_ref()).map_err(|e| refuse(&request, e))?;
        let submitted = jobs
            .submit(
                &scope(&request),
                submission,
                self.state.settings.compute.intensive_rounds,
            )
            .await
            .map_err(|e| refuse(&request, e))?;
        Ok(Response::new(job(submitted.job, submitted.replayed)))
    }

    async fn submit_jobs(
        &self,
        request: Request<pb::SubmitJobsRequest>,
    ) -> Result<Response<pb::SubmitJobsResponse>, Status> {
        let jobs = self.jobs().map_err(|e| refuse(&request, e))?;
        let batch = request
            .get_ref()
            .jobs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                submission(r).map_err(|e| match e {
                    ApiError::InvalidRequest(why) => {
                        ApiError::InvalidRequest(format!("jobs[{i}]: {why}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(&request, e))?;
        let submitted = jobs
            .submit_batch(
                &scope(&request),
                batch,
                self.state.settings.compute.intensive_rounds,
            )
            .await
            .map_err(|e| refuse(&request, e))?;
        Ok(Response::new(pb::SubmitJobsResponse {
            jobs: submitted
                .into_iter()
                .map(|s| job(s.job, s.replayed))
                .collect(),
        }))
    }

    async fn retry_job(
        &self,
        request: Request<pb::JobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs().map_err(|e| refuse(&request, e))?;
        let retried = jobs
            .retry(&scope(&request), &request.get_ref().id)
            .await
            .map_err(|e| refuse(&request, e))?;
        Ok(Response::new(job(retried, false)))
    }

    async fn get_job(&self, request: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs().map_err(|e| refuse(&request, e))?;
        let found = jobs
            .find(&scope(&request), &request.get_ref().id)
            .await
            .map_err(|e| refuse(&request, e))?;
        Ok(Response::new(job(found, false)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let jobs = self.jobs().map_err(|e| refuse(&request, e))?;
        let cancelled = jobs
            .cancel(&scope(&request), &request.get_ref().id)
            .await
            .map_err(|e| refuse(&request, e))?;
        Ok(Response::new(job(cancelled, false)))
    }

    type WatchJobStream = JobStream;

    /// The job at once and at every status change, ending after its final status. The
    /// stream is the response body: it is not bound by the request timeout, and holds a
    /// place of `streams.max_connections` as the REST job streams do (`UNAVAILABLE` at the
    /// limit); it ends with `UNAVAILABLE` (`SHUTTING_DOWN`) when the service shuts down.
    async fn watch_job(
        &self,
        request: Request<pb::JobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let jobs = self.jobs().map_err(|e| refuse(&request, e))?.clone();
        let first = jobs
            .find(&scope(&request), &request.get_ref().id)
            .await
            .map_err(|e| refuse(&request, e))?;
        let place = self
            .state
            .streams
            .admit(StreamClass::Api)
            .map_err(|e| refuse(&request, e))?;
        // The replica's one watcher of the job feeds this stream, as it feeds the REST ones.
        let following = Following {
            watch: jobs.watch(&first.id),
            closing: self.state.streams.closing(),
            _place: place,
        };
        let stream = futures_util::stream::unfold(Some(following), |following| async move {
            let mut f = following?;
            let event = tokio::select! {
                event = f.watch.next() => Some(event),
                _ = f.closing.wait_for(|closing| *closing) => None,
            };
            match event {
                Some(Some(JobEvent::Changed(current))) => Some((Ok(job(current, false)), Some(f))),
                Some(Some(JobEvent::Gone) | None) => None,
                None => {
                    let err = ApiError::ShuttingDown {
                        retry_after: SHUTDOWN_RETRY,
                    };
                    Some((Err(status(&err)), None))
                }
            }
        });
        Ok(Response::new(Box::pin(stream) as JobStream))
    }
}
