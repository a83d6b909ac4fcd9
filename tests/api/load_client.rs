//! The floodgate-load binary, run for real against a stub server (errors,
//! delays, broken connections, miscounting metrics) and against floodgate.
//!
//! The binary belongs to another workspace member, so it is looked up next to
//! this test executable (`<target>/<profile>/floodgate-load`); `cargo test
//! --workspace` builds it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Upper bound for one floodgate-load invocation.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn load_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/api-<hash> → <target>/<profile>/floodgate-load
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("floodgate-load{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "floodgate-load binary not found at {}; build it with `cargo test --workspace`",
        bin.display()
    );
    bin
}

struct LoadRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl LoadRun {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "report is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

async fn run_load(args: &[&str], envs: &[(&str, &str)]) -> LoadRun {
    let mut cmd = tokio::process::Command::new(load_bin());
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
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
fn quick_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
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

// ---------------------------------------------------------------- stub server

#[derive(Default)]
struct Stub {
    unhealthy: bool,
    /// Reported `total_requests` is this much lower than the truth (so the
    /// delta of the first run after start-up is short by this much).
    undercount: u64,
    seq: AtomicU64,
    total: AtomicU64,
    success: AtomicU64,
    error: AtomicU64,
    invalid: AtomicU64,
    ids: Mutex<HashSet<String>>,
    duplicate_ids: AtomicU64,
}

impl Stub {
    fn count(&self, status: StatusCode) {
        self.total.fetch_add(1, Ordering::SeqCst);
        if status.is_success() {
            self.success.fetch_add(1, Ordering::SeqCst);
        } else {
            self.error.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Checks what every request must carry; `false` (and counted) if not.
    fn valid(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let json_type = headers
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        let id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| (1..=128).contains(&id.len()))
            .map(str::to_owned);
        let number_ok = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["number"].as_u64())
            .is_some_and(|n| n <= 1_000_000);
        let Some(id) = id else {
            self.invalid.fetch_add(1, Ordering::SeqCst);
            return false;
        };
        if !self.ids.lock().unwrap().insert(id) {
            self.duplicate_ids.fetch_add(1, Ordering::SeqCst);
        }
        if json_type && number_ok {
            true
        } else {
            self.invalid.fetch_add(1, Ordering::SeqCst);
            false
        }
    }
}

fn envelope(status: StatusCode, code: &str) -> Response {
    let body =
        json!({"request_id": "stub", "error": code.to_lowercase(), "code": code, "timestamp": 0});
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
    }
    response
}

/// Every 10th request → 500 INTERNAL_ERROR, other multiples of 4 → 429, rest 200.
async fn mixed(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let i = stub.seq.fetch_add(1, Ordering::SeqCst);
    let (status, code) = if !stub.valid(&headers, &body) {
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    } else if i % 10 == 0 {
        (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    } else if i % 4 == 0 {
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED")
    } else {
        (StatusCode::OK, "")
    };
    stub.count(status);
    if status == StatusCode::OK {
        Json(json!({"request_id": "stub", "job_id": i, "result": 1, "latency_us": 1, "timestamp": 0})).into_response()
    } else {
        envelope(status, code)
    }
}

async fn ok(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let status = if stub.valid(&headers, &body) {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    stub.count(status);
    (status, Json(json!({"result": 1}))).into_response()
}

async fn slow(State(stub): State<Arc<Stub>>) -> Response {
    tokio::time::sleep(Duration::from_millis(300)).await;
    stub.count(StatusCode::OK);
    Json(json!({"result": 1})).into_response()
}

async fn paced(State(stub): State<Arc<Stub>>) -> Response {
    tokio::time::sleep(Duration::from_millis(20)).await;
    stub.count(StatusCode::OK);
    Json(json!({"result": 1})).into_response()
}

async fn health(State(stub): State<Arc<Stub>>) -> Response {
    if stub.unhealthy {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": {"worker_pool": "unhealthy"}})),
        )
            .into_response()
    } else {
        Json(json!({"status": {"worker_pool": "healthy"}, "timestamp": 0, "goroutines": 1, "version": "stub"}))
            .into_response()
    }
}

async fn metrics(State(stub): State<Arc<Stub>>) -> Json<Value> {
    Json(json!({
        "total_requests": stub.total.load(Ordering::SeqCst).saturating_sub(stub.undercount),
        "success_count": stub.success.load(Ordering::SeqCst),
        "error_count": stub.error.load(Ordering::SeqCst),
        "active_requests": 0,
    }))
}

/// Starts the stub on 127.0.0.1:0; returns its base URL and state.
async fn spawn_stub(stub: Stub) -> (String, Arc<Stub>) {
    let stub = Arc::new(stub);
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/compute/fast", post(mixed))
        .route("/api/v1/compute/intensive", post(ok))
        .route("/ok", post(ok))
        .route("/slow", post(slow))
        .route("/paced", post(paced))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), stub)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_counts_statuses_and_error_codes() {
    let (url, stub) = spawn_stub(Stub::default()).await;
    let run = run_load(
        &quick_args(&url, &["--scenario", "fast", "-n", "200", "-c", "4"]),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    let s = &report["scenarios"][0];
    assert_eq!(s["name"], "fast");
    assert_eq!(s["stop_reason"], "requests");
    let r = &s["requests"];
    assert_eq!(r["total"], 200);
    assert_eq!(r["responses"], 200);
    // Of server sequence numbers 0..200: 20 multiples of 10, 40 other multiples of 4.
    assert_eq!(s["status_codes"], json!({"200": 140, "429": 40, "500": 20}));
    assert_eq!(
        s["error_codes"],
        json!({"RATE_LIMIT_EXCEEDED": 40, "INTERNAL_ERROR": 20})
    );
    assert_eq!(r["successful"], 140);
    assert_eq!(r["failed"], 60);
    assert_eq!(r["rate_limited"], 40);
    assert_eq!(r["success_rate"], 70.0);
    assert_eq!(r["timeouts"], 0);
    assert_eq!(r["connection_errors"], 0);
    assert!(s["latency_ms"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(s["rps"].as_f64().unwrap() > 0.0);
    // Every request was valid and carried its own ID.
    assert_eq!(stub.invalid.load(Ordering::SeqCst), 0);
    assert_eq!(stub.duplicate_ids.load(Ordering::SeqCst), 0);
    assert_eq!(stub.ids.lock().unwrap().len(), 200);
    // The stub counts like floodgate: the check must match exactly.
    let m = &s["server_metrics"];
    assert_eq!(m["status"], "match", "{m}");
    assert_eq!(m["check"]["counters"][0]["delta"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_runs_both_scenarios_with_warmup_excluded() {
    let (url, stub) = spawn_stub(Stub::default()).await;
    let args = [
        "--url", &url, "--warmup", "30", "--quiet", "--output", "json", "-n", "50", "-c", "2",
    ];
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    let names: Vec<&str> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fast", "intensive"]);
    for s in report["scenarios"].as_array().unwrap() {
        assert_eq!(s["requests"]["total"], 50, "warmup is not counted");
        assert_eq!(s["server_metrics"]["status"], "match");
    }
    assert_eq!(stub.total.load(Ordering::SeqCst), 2 * (30 + 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_thresholds_set_exit_status_3() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--scenario",
                "fast",
                "-n",
                "40",
                "-c",
                "2",
                "--fail-under-success-rate",
                "99",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    let report = run.json();
    assert_eq!(report["thresholds_passed"], false);
    let t = &report["scenarios"][0]["thresholds"][0];
    assert_eq!(t["name"], "success_rate");
    assert_eq!(t["passed"], false);

    let run = run_load(
        &quick_args(
            &url,
            &[
                "--scenario",
                "fast",
                "-n",
                "40",
                "-c",
                "2",
                "--fail-over-p99",
                "60000",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "a generous p99 limit passes; stderr: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_reports_a_count_mismatch() {
    let (url, _stub) = spawn_stub(Stub {
        undercount: 1,
        ..Stub::default()
    })
    .await;
    let args = [
        "--url", &url, "--warmup", "0", "--quiet", "--path", "/ok", "-n", "30", "-c", "3",
    ];
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 0, "a mismatch alone does not fail the run");
    assert!(
        run.stdout
            .contains("MISMATCH: server total_requests grew by 29, client received 30"),
        "{}",
        run.stdout
    );

    // A fresh stub: its undercount shows in the delta of a first run only.
    let (url, _stub) = spawn_stub(Stub {
        undercount: 1,
        ..Stub::default()
    })
    .await;
    let mut strict = args.to_vec();
    strict[1] = &url;
    strict.extend(["--fail-on-mismatch", "--output", "json"]);
    let run = run_load(&strict, &[]).await;
    assert_eq!(run.code, 4, "stderr: {}", run.stderr);
    let report = run.json();
    assert_eq!(report["counts_consistent"], false);
    assert_eq!(
        report["scenarios"][0]["server_metrics"]["status"],
        "mismatch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_counts_timeouts_as_failures() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--path",
                "/slow",
                "-n",
                "4",
                "-c",
                "2",
                "--timeout",
                "100ms",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    assert_eq!(s["requests"]["total"], 4);
    assert_eq!(s["requests"]["timeouts"], 4);
    assert_eq!(s["requests"]["failed"], 4);
    assert_eq!(s["requests"]["responses"], 0);
    assert_eq!(s["latency_ms"], Value::Null);
    // The stub finishes the abandoned requests later; that is consistent, not a mismatch.
    let status = s["server_metrics"]["status"].as_str().unwrap();
    assert!(status == "match" || status == "consistent", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_open_loop_keeps_its_schedule() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--path",
                "/ok",
                "--rate",
                "200",
                "--duration",
                "2s",
                "-c",
                "16",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    assert_eq!(
        s["load_model"],
        json!({"type": "open", "rate": 200.0, "concurrency": 16})
    );
    assert_eq!(s["stop_reason"], "duration");
    let total = s["requests"]["total"].as_u64().unwrap();
    assert!(
        (392..=408).contains(&total),
        "400 ± 2% expected, got {total}"
    );
    let rps = s["rps"].as_f64().unwrap();
    assert!((180.0..=220.0).contains(&rps), "rps {rps}");
    let duration = s["duration_secs"].as_f64().unwrap();
    assert!((1.9..3.0).contains(&duration), "duration {duration}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_open_loop_latency_includes_queueing() {
    // One connection, 20 ms per answer, 100 requests/s due: the server can do
    // 50/s, so requests queue and their latency (from the due time) grows far
    // beyond the 20 ms service time. A closed-loop tool would report ~20 ms.
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--path",
                "/paced",
                "--rate",
                "100",
                "--duration",
                "1s",
                "-c",
                "1",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    let max = s["latency_ms"]["max_ms"].as_f64().unwrap();
    let min = s["latency_ms"]["min_ms"].as_f64().unwrap();
    assert!(min >= 19.0, "min {min}");
    assert!(
        max >= 400.0,
        "queueing delay must show in the latency, max {max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_counts_broken_connections() {
    // Accepts connections and closes them without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let url = format!("http://{addr}");
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--path",
                "/",
                "-n",
                "10",
                "-c",
                "2",
                "--no-health-check",
                "--no-server-metrics",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    assert_eq!(s["requests"]["total"], 10);
    assert_eq!(s["requests"]["failed"], 10);
    assert_eq!(s["requests"]["connection_errors"], 10);
    assert_eq!(s["server_metrics"]["status"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_refuses_an_unhealthy_or_unreachable_server() {
    let (url, stub) = spawn_stub(Stub {
        unhealthy: true,
        ..Stub::default()
    })
    .await;
    let run = run_load(&["--url", &url, "--quiet"], &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("is not healthy") && run.stderr.contains("503"),
        "{}",
        run.stderr
    );
    assert_eq!(
        stub.total.load(Ordering::SeqCst),
        0,
        "no load after a failed health check"
    );

    let url = format!("http://127.0.0.1:{}", free_port());
    let run = run_load(&["--url", &url, "--quiet", "--timeout", "2s"], &[]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not reachable"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_rejects_bad_arguments_with_status_2() {
    for args in [
        &["--rate", "0"][..],
        &["--url", "https://example.invalid"],
        &["--number-range", "0..=2000000"],
    ] {
        let run = run_load(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_reads_environment_and_writes_report_files() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let dir = std::env::temp_dir().join(format!("floodgate-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report.txt");
    let run = run_load(
        &["--quiet", "--output-file", file.to_str().unwrap()],
        &[
            ("FLOODGATE_LOAD_URL", url.as_str()),
            ("FLOODGATE_LOAD_PATH", "/ok"),
            ("FLOODGATE_LOAD_REQUESTS", "25"),
            ("FLOODGATE_LOAD_CONCURRENCY", "5"),
            ("FLOODGATE_LOAD_WARMUP", "0"),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty(), "the report goes to the file only");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(text.contains("Scenario custom: POST"), "{text}");
    assert!(text.contains("Total requests:     25"), "{text}");
    assert!(text.contains("closed loop, 5 connections"), "{text}");
    assert!(text.contains("Server /metrics:    counts match"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_prints_progress_lines_when_not_on_a_terminal() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let run = run_load(
        &[
            "--url",
            &url,
            "--warmup",
            "0",
            "--path",
            "/paced",
            "-c",
            "2",
            "--duration",
            "1200ms",
            "--report-interval",
            "500ms",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("Health check passed"), "{}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("Progress: "))
        .collect();
    assert!(lines.len() >= 2, "{}", run.stderr);
    assert!(
        lines[0].contains("| RPS: ") && lines[0].contains("| Errors: 0 | p99: "),
        "{}",
        lines[0]
    );
    assert!(
        run.stdout.starts_with("Scenario custom"),
        "the report goes to stdout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_reports_what_ran_when_interrupted() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let (url, _stub) = spawn_stub(Stub::default()).await;
    let mut child = tokio::process::Command::new(load_bin())
        .args([
            "--url", &url, "--warmup", "0", "--output", "json", "--path", "/paced", "-n", "100000",
            "-c", "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Interrupt only once the measured phase has begun.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(RUN_LIMIT, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.starts_with("Scenario custom") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(started, "the scenario never started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stdout = Vec::new();
    let mut out = child.stdout.take().unwrap();
    let status = tokio::time::timeout(RUN_LIMIT, async {
        out.read_to_end(&mut stdout).await.unwrap();
        while stderr.next_line().await.unwrap().is_some() {}
        child.wait().await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(130));
    let report: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(report["interrupted"], true);
    let s = &report["scenarios"][0];
    assert_eq!(s["stop_reason"], "interrupted");
    let total = s["requests"]["total"].as_u64().unwrap();
    assert!(total > 0 && total < 100_000, "{total}");
}

// ------------------------------------------------------------ real floodgate

struct Floodgate {
    url: String,
    _child: tokio::process::Child,
}

async fn spawn_floodgate() -> Floodgate {
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_floodgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("FLOODGATE__") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SERVER_PORT", format!("127.0.0.1:{port}"))
        .env("ENVIRONMENT", "development")
        .env("LOG_LEVEL", "warn")
        .env("RATE_LIMIT", "1000000")
        .env("REQUEST_TIMEOUT", "10s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("floodgate starts");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                return Floodgate { url, _child: child };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("floodgate did not become healthy on {url} within 10s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_counts_match_floodgate_metrics() {
    let server = spawn_floodgate().await;
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "--scenario",
                "all",
                "-n",
                "300",
                "-c",
                "8",
                "--fail-on-mismatch",
                "--fail-under-success-rate",
                "100",
            ],
        ),
        &[("FLOODGATE_LOAD_WARMUP", "0")],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2);
    for s in scenarios {
        assert_eq!(s["requests"]["total"], 300, "{}", s["name"]);
        assert_eq!(s["requests"]["successful"], 300, "{}", s["name"]);
        assert_eq!(s["status_codes"], json!({"200": 300}));
        let m = &s["server_metrics"];
        assert_eq!(m["status"], "match", "{m}");
        for c in m["check"]["counters"].as_array().unwrap() {
            assert_eq!(c["delta"], c["client"], "{c}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_open_loop_against_floodgate() {
    let server = spawn_floodgate().await;
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "--scenario",
                "fast",
                "--rate",
                "200",
                "--duration",
                "2s",
                "-c",
                "16",
                "--fail-on-mismatch",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let s = &run.json()["scenarios"][0];
    let total = s["requests"]["total"].as_u64().unwrap();
    assert!(
        (392..=408).contains(&total),
        "400 ± 2% expected, got {total}"
    );
    assert_eq!(s["requests"]["successful"], total);
    assert_eq!(s["server_metrics"]["status"], "match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_client_sends_extra_headers_such_as_an_api_key() {
    let app = crate::helpers::spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![crate::helpers::sha256_hex("load-key")];
    })
    .await;
    let url = format!("http://{}", app.addr);
    let with_key = run_load(
        &quick_args(
            &url,
            &[
                "--scenario",
                "fast",
                "-n",
                "200",
                "-c",
                "4",
                "-H",
                "X-API-Key: load-key",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(with_key.code, 0, "{}", with_key.stderr);
    assert_eq!(
        with_key.json()["scenarios"][0]["status_codes"],
        json!({"200": 200})
    );
    let without = run_load(
        &quick_args(&url, &["--scenario", "fast", "-n", "50", "-c", "2"]),
        &[],
    )
    .await;
    let s = &without.json()["scenarios"][0];
    assert_eq!(s["status_codes"], json!({"401": 50}), "{s}");
    assert_eq!(s["error_codes"]["UNAUTHORIZED"], 50, "{s}");
}
