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

#[path = "common/axum_reference.rs"]
mod reference;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = reference::routes();
    axum::serve(reference::listen().await?, app).await
}
