//! The floodgate-load binary, run for real: its command-line surface, load
//! scenarios against a stub server (errors, delays, broken connections,
//! miscounting metrics, jobs that go wrong), several stubs loaded at once,
//! runs against floodgate started in this process, sweeps, and the HTML
//! reports in headless Chromium.
//!
//! Cargo builds the binary for this test and names it in
//! `CARGO_BIN_EXE_floodgate-load`.

#[path = "../../../../tests/support/redis_server.rs"]
mod redis_server;
mod support;
#[path = "../../../../tests/support/test_tools.rs"]
mod test_tools;

mod against_floodgate;
mod cli;
mod html_report;
mod jobs;
mod scenarios;
mod stub;
mod sweep;
mod targets;
