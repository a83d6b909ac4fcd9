//! The services tier: the floodgate-load binary's tests that need a program from outside the
//! Rust build: its HTML reports in headless Chromium (driven by Playwright from the test
//! tools' Python), three floodgates sharing one limit in a real Redis, and live metrics
//! pushed to a real Prometheus (remote write) and OpenTelemetry collector (`rotel-agent`).
//! Not run by a plain `cargo test` (`test = false`): `cargo test -p floodgate-load --test
//! services` runs it, and `scripts/test.sh` does after checking that every program is installed. A missing
//! program fails its test, naming scripts/install-test-tools.sh; it is never skipped.
//!
//! Cargo builds the binary for this test and names it in
//! `CARGO_BIN_EXE_floodgate-load`.

#[path = "../support/floodgate_server.rs"]
mod floodgate_server;
#[path = "../../../../tests/support/redis_server.rs"]
mod redis_server;
#[path = "../support/run.rs"]
mod run;
#[path = "../support/stub.rs"]
mod stub;
#[path = "../../../../tests/support/test_tools.rs"]
mod test_tools;

mod browser;
mod live_metrics;
mod redis;
