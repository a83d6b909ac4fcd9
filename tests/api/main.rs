//! The integration suite: one binary, one module per concern. Every test starts the real
//! application (or the real binary) on 127.0.0.1 and talks to it over TCP.

mod helpers;
#[path = "../support/postgres_server.rs"]
mod postgres_server;
#[path = "../support/redis_server.rs"]
mod redis_server;
#[path = "../support/test_tools.rs"]
mod test_tools;

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
mod jobs_pg;
mod metrics;
mod openapi;
mod otel;
mod pool;
mod prometheus;
mod rate_limit;
mod redis;
mod request_id;
mod resilience;
mod shutdown;
mod status_page;
mod streams;
mod timeout;
mod tls;
