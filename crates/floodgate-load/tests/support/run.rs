//! Running the floodgate-load binary; shared by the load client's test binaries.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// Upper bound for one floodgate-load invocation.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The binary under test.
pub const LOAD_BIN: &str = env!("CARGO_BIN_EXE_floodgate-load");

/// A finished run: exit status and output.
pub struct LoadRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl LoadRun {
    /// The report on stdout, parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "report is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A command for the binary with none of the caller's `FLOODGATE_LOAD_*`
/// variables leaking in.
pub fn load_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(LOAD_BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLOODGATE_LOAD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs the binary to completion (within [`RUN_LIMIT`]).
pub async fn run_load(args: &[&str], envs: &[(&str, &str)]) -> LoadRun {
    let mut cmd = load_command();
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .expect("floodgate-load finished in time")
        .expect("floodgate-load ran");
    LoadRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Common flags for short, quiet, JSON runs.
pub fn quick_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--url",
        url,
        "--warmup",
        "0",
        "--quiet",
        "--output",
        "json",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// A sweep of the stub's `/paced` route (20 ms per answer) over two
/// connections: it serves about 100 requests/s, so 20 and 80 requests/s meet
/// a 300 ms p99 and 5 % errors, and at 140 requests/s a third of the
/// requests due find both connections busy until the end (unsent: errors)
/// while the others queue ever longer. The limits leave room for a busy test
/// machine. The report is JSON unless `extra` says otherwise.
pub fn paced_sweep<'a>(url: &'a str, rates: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--url",
        url,
        "--warmup",
        "0",
        "--quiet",
        "--threads",
        "2",
        "--path",
        "/paced",
        "-c",
        "2",
        "--sweep",
        rates,
        "--sweep-step-duration",
        "1s",
        "--sweep-max-p99",
        "300",
        "--sweep-max-errors",
        "5",
        // Every step judged as it is: the steps the tests expect must not be run again
        // because this machine's host was busy (the rule's tests are the sweep module's).
        "--sweep-max-steal",
        "100",
    ];
    if !extra.contains(&"--output") {
        args.extend(["--output", "json"]);
    }
    args.extend_from_slice(extra);
    args
}
