//! The services tier: the integration tests that need a program from outside the Rust build
//! (Redis, PostgreSQL, Prometheus and promtool, the OTLP collector rotel-agent, Chromium,
//! Python and k6 clients, curl, schemathesis, Helm). Not run by a plain `cargo test`
//! (`test = false`): `cargo test --test services` runs it, and `scripts/test.sh` does after
//! checking that every program is installed. A missing program fails its test, naming
//! scripts/install-test-tools.sh; it is never skipped.

#[path = "../support/helpers.rs"]
mod helpers;
#[path = "../support/postgres_server.rs"]
mod postgres_server;
#[path = "../support/redis_server.rs"]
mod redis_server;
#[path = "../support/test_tools.rs"]
mod test_tools;

mod browser;
mod chart;
mod clients;
mod collector;
mod postgres;
mod prometheus;
mod redis;
mod schemathesis;
