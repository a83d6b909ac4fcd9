//! Load scenarios against the stub server.

use std::process::Stdio;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::run::{load_command, quick_args, run_load, RUN_LIMIT};
use crate::stub::{refusing_port, spawn_hang_up, spawn_stub, Stub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_statuses_and_error_codes() {
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
async fn runs_both_scenarios_with_warmup_excluded() {
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
async fn thresholds_set_exit_status_3() {
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
async fn reports_a_count_mismatch() {
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
async fn counts_timeouts_as_failures() {
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
async fn open_loop_keeps_its_schedule() {
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
    // Second by second, the same rate.
    let points = s["timeline"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{points:?}");
    for p in points {
        let rps = p["rps"].as_f64().unwrap();
        assert!((170.0..=230.0).contains(&rps), "{p}");
        assert!(p["p99_ms"].as_f64().unwrap() <= p["max_ms"].as_f64().unwrap());
    }
    assert_eq!(
        points
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        total
    );
    let percentiles = s["percentiles"].as_array().unwrap();
    assert!(percentiles.len() >= 10, "{percentiles:?}");
    assert_eq!(percentiles[0]["latency_ms"], s["latency_ms"]["min_ms"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_includes_queueing() {
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
async fn counts_broken_connections() {
    let url = format!("http://{}", spawn_hang_up().await);
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
async fn refuses_an_unhealthy_or_unreachable_server() {
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

    let (_held, addr) = refusing_port();
    let url = format!("http://{addr}");
    let run = run_load(&["--url", &url, "--quiet", "--timeout", "2s"], &[]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not reachable"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_environment_and_writes_report_files() {
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
async fn prints_progress_lines_when_not_on_a_terminal() {
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
async fn reports_what_ran_when_interrupted() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let (url, stub) = spawn_stub(Stub::default()).await;
    let mut child = load_command()
        .args([
            "--url", &url, "--warmup", "0", "--output", "json", "--path", "/paced", "-n", "100000",
            "-c", "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    // Interrupt only once some requests have finished: each of the 4
    // connections sends its next request after recording the previous answer,
    // so the stub answering a 5th request means at least one answer was recorded.
    tokio::time::timeout(RUN_LIMIT, stub.wait_for_total(5))
        .await
        .expect("requests reached the stub");
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
