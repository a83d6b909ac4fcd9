//! A stub of floodgate's API that counts like floodgate, with knobs for
//! errors, slowness, an unhealthy pool, miscounted metrics and a barrier
//! shared between stubs; and sockets that refuse or break connections.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
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

/// Answers after 20 ms: a server with a known service time.
async fn paced(State(stub): State<Arc<Stub>>) -> Response {
    tokio::time::sleep(Duration::from_millis(20)).await;
    stub.count(StatusCode::OK);
    Json(json!({"result": 1})).into_response()
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
