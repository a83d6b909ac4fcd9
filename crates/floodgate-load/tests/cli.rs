//! Command-line surface of the binary. (The load scenarios themselves are
//! exercised by the workspace's integration tests in `tests/api/load_client.rs`;
//! this test also makes `cargo test --workspace` build the binary they run.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_floodgate-load"))
}

#[test]
fn help_documents_exit_codes_and_knobs() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--url",
        "--requests",
        "--concurrency",
        "--rate",
        "--timeout",
        "--duration",
        "--warmup",
        "--report-interval",
        "--scenario",
        "--number-range",
        "--fail-under-success-rate",
        "--fail-over-p99",
        "FLOODGATE_LOAD_URL",
        "Exit status:",
        "130",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn usage_errors_exit_with_status_2() {
    let out = bin().args(["--concurrency", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["--url", "ftp://x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http"));
}

#[test]
fn version() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("floodgate-load "));
}
