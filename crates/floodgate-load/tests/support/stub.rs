//! A stub of floodgate's API that counts like floodgate, with knobs for
//! errors, slowness, an unhealthy pool, miscounted metrics, a barrier
//! shared between stubs and jobs that go wrong; and sockets that refuse or
//! break connections. Shared by the load client's test binaries.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{Barrier, Notify};

#[derive(Default)]
pub struct Stub {
    pub unhealthy: bool,
    /// Reported `total_requests` is this much lower than the truth (so the
    /// delta of the first run after start-up is short by this much).
    pub undercount: u64,
    pub seq: AtomicU64,
    pub total: AtomicU64,
    pub success: AtomicU64,
    pub error: AtomicU64,
    pub invalid: AtomicU64,
    pub ids: Mutex<HashSet<String>>,
    pub duplicate_ids: AtomicU64,
    /// Notified whenever `total` grows.
    pub counted: Notify,
    /// `/gate` holds each request until this barrier (possibly shared with
    /// other stubs) releases.
    pub gate: Option<Arc<Barrier>>,
    /// `/gate` requests being held, and the most held at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Jobs (API v2) meet the fates of [`JobFate::of`]; otherwise every job
    /// succeeds with the right answer.
    pub jobs_mixed: bool,
    pub job_seq: AtomicU64,
    /// Jobs by id.
    pub jobs: Mutex<HashMap<String, StubJob>>,
    /// `/degrade` answers 200 until this long after its first request, then 500.
    pub degrade_after: Duration,
    /// When `/degrade` got its first request, and when it first answered 500.
    pub degrade_started: Mutex<Option<std::time::Instant>>,
    pub first_failure: Mutex<Option<std::time::SystemTime>>,
}

/// A job the stub accepted.
#[derive(Debug, Clone)]
pub struct StubJob {
    /// Order of submission, from 0.
    pub seq: u64,
    pub number: u64,
    /// `rounds` as submitted (`None`: left out, the stub's default 10,000 applies).
    pub rounds: Option<u64>,
    pub polls: u64,
}

/// What becomes of a job with [`Stub::jobs_mixed`]. Each job is `running` at
/// its first poll (after a 503 for [`JobFate::Unavailable`]) and final at the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFate {
    /// Succeeds with a digest one too high.
    WrongDigest,
    /// Fails with the error `stub failure`.
    Failed,
    Cancelled,
    /// Polls get 404.
    Lost,
    /// The first poll gets 503, then as `Right`.
    Unavailable,
    Right,
}

impl JobFate {
    /// By submission order: of each 10 jobs, one of each of the first five
    /// fates and five right ones.
    pub fn of(seq: u64) -> JobFate {
        match seq % 10 {
            0 => JobFate::WrongDigest,
            1 => JobFate::Failed,
            2 => JobFate::Cancelled,
            3 => JobFate::Lost,
            4 => JobFate::Unavailable,
            _ => JobFate::Right,
        }
    }
}

impl Stub {
    fn count(&self, status: StatusCode) {
        self.total.fetch_add(1, Ordering::SeqCst);
        if status.is_success() {
            self.success.fetch_add(1, Ordering::SeqCst);
        } else {
            self.error.fetch_add(1, Ordering::SeqCst);
        }
        self.counted.notify_waiters();
    }

    /// Resolves once the stub has answered at least `n` counted requests.
    pub async fn wait_for_total(&self, n: u64) {
        loop {
            let counted = self.counted.notified();
            let mut counted = std::pin::pin!(counted);
            // Registered before the check, so a count in between is not missed.
            counted.as_mut().enable();
            if self.total.load(Ordering::SeqCst) >= n {
                return;
            }
            counted.await;
        }
    }

    /// Checks what every request must carry; `false` (and counted) if not.
    fn valid(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let json_type = headers
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| (1..=128).contains(&id.len()))
            .map(str::to_owned);
        let number_ok = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["number"].as_u64())
            .is_some_and(|n| n <= 1_000_000);
        let Some(id) = id else {
            self.invalid.fetch_add(1, Ordering::SeqCst);
            return false;
        };
        if !self.ids.lock().unwrap().insert(id) {
            self.duplicate_ids.fetch_add(1, Ordering::SeqCst);
        }
        if json_type && number_ok {
            true
        } else {
            self.invalid.fetch_add(1, Ordering::SeqCst);
            false
        }
    }
}

fn envelope(status: StatusCode, code: &str) -> Response {
    let body =
        json!({"request_id": "stub", "error": code.to_lowercase(), "code": code, "timestamp": 0});
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    response
}

/// Every 10th request → 500 INTERNAL_ERROR, other multiples of 4 → 429, rest 200.
async fn mixed(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let i = stub.seq.fetch_add(1, Ordering::SeqCst);
    let (status, code) = if !stub.valid(&headers, &body) {
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    } else if i % 10 == 0 {
        (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    } else if i % 4 == 0 {
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED")
    } else {
        (StatusCode::OK, "")
    };
    stub.count(status);
    if status == StatusCode::OK {
        Json(json!({"request_id": "stub", "job_id": i, "result": 1, "latency_us": 1, "timestamp": 0})).into_response()
    } else {
        envelope(status, code)
    }
}

async fn ok(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let status = if stub.valid(&headers, &body) {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    stub.count(status);
    (status, Json(json!({"result": 1}))).into_response()
}

/// Waits at the barrier, then answers like [`ok`]: the requests the barrier
/// waits for must all be in flight at once.
async fn gate(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let held = stub.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stub.max_in_flight.fetch_max(held, Ordering::SeqCst);
    if let Some(barrier) = &stub.gate {
        barrier.wait().await;
    }
    stub.in_flight.fetch_sub(1, Ordering::SeqCst);
    ok(State(stub), headers, body).await
}

/// Answers after 300 ms: longer than the timeouts tests give it.
async fn slow(State(stub): State<Arc<Stub>>) -> Response {
    tokio::time::sleep(Duration::from_millis(300)).await;
    stub.count(StatusCode::OK);
    Json(json!({"result": 1})).into_response()
}

/// 200 until [`Stub::degrade_after`] after its first request, 500 from then on: a
/// server that breaks at a known moment.
async fn degrade(State(stub): State<Arc<Stub>>) -> Response {
    let now = std::time::Instant::now();
    let started = *stub.degrade_started.lock().unwrap().get_or_insert(now);
    if now.duration_since(started) < stub.degrade_after {
        stub.count(StatusCode::OK);
        return Json(json!({"result": 1})).into_response();
    }
    stub.first_failure
        .lock()
        .unwrap()
        .get_or_insert_with(std::time::SystemTime::now);
    stub.count(StatusCode::INTERNAL_SERVER_ERROR);
    envelope(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
}

/// Answers after 20 ms: a server with a known service time.
async fn paced(State(stub): State<Arc<Stub>>) -> Response {
    tokio::time::sleep(Duration::from_millis(20)).await;
    stub.count(StatusCode::OK);
    Json(json!({"result": 1})).into_response()
}

/// `POST /api/v2/jobs`: 202 and the job, `queued`.
async fn submit_job(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    if !stub.valid(&headers, &body) {
        stub.count(StatusCode::BAD_REQUEST);
        return envelope(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let seq = stub.job_seq.fetch_add(1, Ordering::SeqCst);
    let id = format!("00000000-0000-7000-8000-{seq:012x}");
    let job = StubJob {
        seq,
        number: v["number"].as_u64().unwrap(),
        rounds: v.get("rounds").and_then(Value::as_u64),
        polls: 0,
    };
    let shown = job_json(&id, "queued", &job, json!({}));
    stub.jobs.lock().unwrap().insert(id, job);
    stub.count(StatusCode::ACCEPTED);
    (StatusCode::ACCEPTED, Json(shown)).into_response()
}

fn job_json(id: &str, status: &str, job: &StubJob, extra: Value) -> Value {
    let mut v = json!({
        "id": id,
        "status": status,
        "number": job.number,
        "rounds": job.rounds.unwrap_or(10_000),
        "attempts": u32::from(status != "queued"),
        "created_at": "2026-01-01T00:00:00.000000Z",
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// `GET /api/v2/jobs/{id}`: `running` at the first poll, final at the next
/// (see [`JobFate`]).
async fn poll_job(State(stub): State<Arc<Stub>>, Path(id): Path<String>) -> Response {
    let answer = {
        let mut jobs = stub.jobs.lock().unwrap();
        match jobs.get_mut(&id) {
            None => None,
            Some(job) => {
                job.polls += 1;
                let fate = if stub.jobs_mixed {
                    JobFate::of(job.seq)
                } else {
                    JobFate::Right
                };
                let digest = floodgate::pool::intensive_digest(
                    job.number,
                    job.rounds.unwrap_or(10_000) as u32,
                );
                let done = |d: u64| json!({"digest": d, "result": job.number * job.number});
                Some(match (fate, job.polls) {
                    (JobFate::Lost, _) => None,
                    (JobFate::Unavailable, 1) => Some((StatusCode::SERVICE_UNAVAILABLE, json!({}))),
                    (JobFate::Unavailable, 2) | (_, 1) => {
                        Some((StatusCode::OK, job_json(&id, "running", job, json!({}))))
                    }
                    (JobFate::WrongDigest, _) => Some((
                        StatusCode::OK,
                        job_json(&id, "succeeded", job, done(digest + 1)),
                    )),
                    (JobFate::Failed, _) => Some((
                        StatusCode::OK,
                        job_json(&id, "failed", job, json!({"error": "stub failure"})),
                    )),
                    (JobFate::Cancelled, _) => {
                        Some((StatusCode::OK, job_json(&id, "cancelled", job, json!({}))))
                    }
                    (JobFate::Unavailable | JobFate::Right, _) => Some((
                        StatusCode::OK,
                        job_json(&id, "succeeded", job, done(digest)),
                    )),
                })
            }
        }
    };
    match answer.flatten() {
        None => {
            stub.count(StatusCode::NOT_FOUND);
            envelope(StatusCode::NOT_FOUND, "NOT_FOUND")
        }
        Some((StatusCode::OK, job)) => {
            stub.count(StatusCode::OK);
            Json(job).into_response()
        }
        Some((status, _)) => {
            stub.count(status);
            envelope(status, "DEPENDENCY_UNAVAILABLE")
        }
    }
}

async fn health(State(stub): State<Arc<Stub>>) -> Response {
    if stub.unhealthy {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": {"worker_pool": "unhealthy"}})),
        )
            .into_response()
    } else {
        Json(json!({"status": {"worker_pool": "healthy"}, "timestamp": 0, "goroutines": 1, "version": "stub"}))
            .into_response()
    }
}

async fn metrics(State(stub): State<Arc<Stub>>) -> Json<Value> {
    Json(json!({
        "total_requests": stub.total.load(Ordering::SeqCst).saturating_sub(stub.undercount),
        "success_count": stub.success.load(Ordering::SeqCst),
        "error_count": stub.error.load(Ordering::SeqCst),
        "active_requests": 0,
    }))
}

/// Starts the stub on 127.0.0.1:0; returns its base URL and state.
pub async fn spawn_stub(stub: Stub) -> (String, Arc<Stub>) {
    let stub = Arc::new(stub);
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/compute/fast", post(mixed))
        .route("/api/v1/compute/intensive", post(ok))
        .route("/ok", post(ok))
        .route("/gate", post(gate))
        .route("/slow", post(slow))
        .route("/paced", post(paced))
        .route("/degrade", post(degrade))
        .route("/api/v2/jobs", post(submit_job))
        .route("/api/v2/jobs/{id}", get(poll_job))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), stub)
}

/// Accepts connections on 127.0.0.1:0 and closes them without answering.
pub async fn spawn_hang_up() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    addr
}

/// A loopback port held by a socket that is bound but not listening, so
/// connecting to it is refused for as long as the socket lives (and no other
/// socket can take the port meanwhile).
pub fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}
