//! The command-line surface: help, version, usage errors.

use std::process::Command;

use crate::run::{run_load, LOAD_BIN};

fn bin() -> Command {
    Command::new(LOAD_BIN)
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
        "--rounds",
        "--poll-interval",
        "--sweep",
        "--sweep-max-p99",
        "auto",
        "html",
        "jobs",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_arguments_with_status_2() {
    for args in [
        &["--rate", "0"][..],
        &["--url", "ftp://127.0.0.1:1"],
        &["--streams", "4"],
        &["--http2", "--grpc"],
        &["--cert", "client.pem"],
        &["--cacert", "ca.pem", "--insecure"],
        &["--number-range", "0..=2000000"],
        &["--rounds", "10"],
        &["--scenario", "jobs", "--body", "{}"],
        &["--sweep", "auto", "--rate", "100"],
        &["--sweep", "auto", "--scenario", "jobs"],
        &["--sweep", "100..10"],
    ] {
        let run = run_load(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}
