//! floodgate: an HTTP compute service with a bounded worker pool, admission control,
//! Prometheus metrics and OTLP traces.
//!
//! Data flows one way: [`config`] → [`telemetry`] → [`state`] → [`middleware`] and
//! [`routes`] → [`pool`]. Only [`app`] wires the pieces together.

pub mod access_log;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod health;
pub mod log_sink;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pool;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;

pub use app::Application;
pub use config::Settings;

/// The service's version, reported by `/health` and `floodgate_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from, when the build knew it.
pub const GIT_SHA: &str = match option_env!("FLOODGATE_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};
