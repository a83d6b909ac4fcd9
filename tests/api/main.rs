//! The in-process tier: the integration suite that needs nothing but the Rust build, run by
//! a plain `cargo test`. One binary, one module per concern; every test starts the real
//! application (or the real binary) on 127.0.0.1 and talks to it over TCP. The tests that
//! need a program from outside the build are in the services tier (tests/services/).

#[path = "../support/helpers.rs"]
mod helpers;

mod admin;
mod architecture;
mod auth;
mod cache;
mod compute;
mod config;
mod errors;
mod fuzz;
mod grpc;
mod hardening;
mod health;
mod hygiene;
mod jobs;
mod jobs_faults;
mod jobs_runs;
mod metrics;
mod openapi;
mod otel;
mod overload;
mod pool;
mod rate_limit;
mod request_id;
mod resilience;
mod shutdown;
mod status_page;
mod streams;
mod tiers;
mod timeout;
mod tls;
