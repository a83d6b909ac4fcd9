//! Running the floodgate-load binary.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::test_tools::venv_python;

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

/// Opens `page` in headless Chromium with tests/clients/html_report.py (it
/// says what it checks), saving a screenshot to `screenshot`; returns what
/// the script saw.
pub async fn open_in_chromium(page: &std::path::Path, screenshot: &std::path::Path) -> Value {
    let _ = std::fs::remove_file(screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/html_report.py");
    let mut cmd = tokio::process::Command::new(venv_python());
    cmd.arg(script)
        .arg(page)
        .arg(screenshot)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .expect("the browser finished in time")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// A number the HTML report wrote as text (a `data-value`, a point of a
/// `data-values`), read as serde_json reads the JSON report's numbers: both
/// are written the same way, so they compare equal.
pub fn json_f64(text: &str) -> f64 {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{text}` is not a number: {e}"))
}

/// The `x,y …` points of the series `name` of a chart the HTML report drew
/// (its `data-chart` JSON), as numbers.
pub fn series_values(chart: &serde_json::Value, name: &str) -> Vec<(f64, f64)> {
    chart["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no series {name} in {chart}"))["values"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (json_f64(x), json_f64(y))
        })
        .collect()
}

/// The `(x, y)` fields of each object of a JSON report's array: the points a
/// chart of that array should draw.
pub fn json_pairs(items: &serde_json::Value, x: &str, y: &str) -> Vec<(f64, f64)> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item[x].as_f64().unwrap(), item[y].as_f64().unwrap()))
        .collect()
}

/// A directory of this test binary's output under the test output directory.
pub fn output_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("floodgate-load")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
