//! Reference server for `scripts/bench.sh`: bare axum 0.8 with floodgate's routes and
//! handler work, and nothing else.
//!
//! Same response bodies as floodgate, `axum::Json` extraction, the intensive digest
//! computed inline on the request thread; no middleware, no request IDs from headers,
//! no metrics, no logging, no rate limit, no timeouts, no worker pool. The gap between
//! this server and floodgate is the cost of everything floodgate adds around the handlers.
//!
//! Listens on `SERVER_PORT` (`host:port`, default `127.0.0.1:18181`) and prints
//! `listening on <addr>` once bound. `INTENSIVE_ROUNDS` (default 10000) as for floodgate.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

#[derive(Deserialize)]
struct ComputeInput {
    number: u64,
}

#[derive(Serialize)]
struct ComputeResponse<'a> {
    request_id: &'a str,
    job_id: u64,
    result: u64,
    latency_us: u64,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<u64>,
}

#[derive(Serialize)]
struct HealthBody {
    status: BTreeMap<String, String>,
    timestamp: u64,
    goroutines: usize,
    version: &'static str,
}

static ROUNDS: OnceLock<u32> = OnceLock::new();

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond(start: Instant, result: u64, digest: Option<u64>) -> Response {
    let mut buf = uuid::Uuid::encode_buffer();
    let request_id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    let body = ComputeResponse {
        request_id,
        job_id: 0,
        result,
        latency_us: start.elapsed().as_micros() as u64,
        timestamp: unix_now(),
        digest,
    };
    // Serialized here, while the request ID's buffer is alive, as floodgate does.
    Json(body).into_response()
}

async fn health() -> Json<HealthBody> {
    let mut status = BTreeMap::new();
    status.insert("worker_pool".to_owned(), "healthy".to_owned());
    Json(HealthBody {
        status,
        timestamp: unix_now(),
        goroutines: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn fast(Json(input): Json<ComputeInput>) -> Response {
    let start = Instant::now();
    respond(start, input.number * input.number, None)
}

async fn intensive(Json(input): Json<ComputeInput>) -> Response {
    let start = Instant::now();
    let n = input.number;
    let rounds = *ROUNDS.get().expect("set in main");
    let digest = floodgate::pool::intensive_digest(n, rounds);
    respond(start, n * n, Some(digest))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let rounds = std::env::var("INTENSIVE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    ROUNDS.set(rounds).expect("set once");

    let app = Router::new()
        .route("/health", get(health))
        .route("/api/v1/compute/fast", post(fast))
        .route("/api/v1/compute/intensive", post(intensive));

    let addr = std::env::var("SERVER_PORT").unwrap_or_else(|_| "127.0.0.1:18181".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    // axum::serve leaves Nagle on; floodgate turns it off, so the reference does too.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
