//! floodgate: an HTTP compute service with a bounded worker pool, admission control,
//! Prometheus metrics and OTLP traces.
//!
//! Data flows one way: [`config`] → [`observability`] → [`state`] → [`http`] or [`grpc`] (the
//! transports; [`call`] holds what every call carries, for both) → [`admission`] → [`domain`] →
//! [`pool`] and [`store`], with [`dependency`] (the breaker, Redis) under admission and domain.
//! [`transport`] carries connections to a service it is given; [`error`] is the one error type
//! every layer returns. Only [`app`] wires the pieces together. `admission`, `call`, `domain`
//! and `pool` know nothing of axum.

pub mod admission;
pub mod allocator;
pub mod app;
pub mod call;
pub mod config;
pub mod dependency;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod observability;
pub mod pool;
pub mod startup_code;
pub mod state;
pub mod store;
pub mod transport;

#[cfg(test)]
mod testing;

pub use app::Application;
pub use config::Settings;

/// The service's version, reported by `/health` and `floodgate_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from, when the build knew it.
pub const GIT_SHA: &str = match option_env!("FLOODGATE_GIT_SHA") {
    Some(sha) => sha,
    None => "unknown",
};
