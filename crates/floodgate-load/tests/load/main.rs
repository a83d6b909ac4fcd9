//! The in-process tier: the floodgate-load binary, run for real, needing nothing but the
//! Rust build (run by a plain `cargo test`): its command-line surface, load scenarios
//! against a stub server (errors, delays, broken connections, miscounting metrics, jobs that
//! go wrong), several stubs loaded at once, runs against floodgate started in this process,
//! and sweeps. The tests that need a program from outside the build are in the services
//! tier (tests/services/).
//!
//! Cargo builds the binary for this test and names it in
//! `CARGO_BIN_EXE_floodgate-load`.

#[path = "../support/floodgate_server.rs"]
mod floodgate_server;
#[path = "../support/pki.rs"]
mod pki;
#[path = "../support/run.rs"]
mod run;
#[path = "../support/stub.rs"]
mod stub;
#[path = "../support/tls_stub.rs"]
mod tls_stub;

mod against_floodgate;
mod cli;
mod jobs;
mod live_metrics;
mod scenarios;
mod stages;
mod sweep;
mod targets;
mod thresholds;
mod tls;
