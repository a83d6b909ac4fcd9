//! What the axum reference servers share: floodgate's routes and handler work, with nothing
//! around them. Included by `bare_axum` and `lean_axum` (`#[path]`), so both serve exactly
//! the same handlers.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{ListenerExt, TapIo};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

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

/// The three routes, with `INTENSIVE_ROUNDS` (default 10000) read as floodgate reads it.
pub fn routes() -> Router {
    let rounds = std::env::var("INTENSIVE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    ROUNDS.set(rounds).expect("set once");
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/compute/fast", post(fast))
        .route("/api/v1/compute/intensive", post(intensive))
}

/// Bound to `SERVER_PORT` (`host:port`, default `127.0.0.1:18181`), `listening on <addr>`
/// printed once bound.
pub async fn listen() -> std::io::Result<TapIo<TcpListener, fn(&mut TcpStream)>> {
    let addr = std::env::var("SERVER_PORT").unwrap_or_else(|_| "127.0.0.1:18181".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener.tap_io(no_delay as fn(&mut TcpStream)))
}

/// axum::serve leaves Nagle on; floodgate turns it off, so the references do too.
fn no_delay(tcp: &mut TcpStream) {
    let _ = tcp.set_nodelay(true);
}
