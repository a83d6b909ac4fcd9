//! Runs against floodgate itself, started in this process on 127.0.0.1:0,
//! each instance with its own SQLite jobs database in the temporary directory.

use serde_json::{json, Value};

use crate::floodgate_server::{sha256_hex, spawn_floodgate};
use crate::run::{quick_args, run_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_match_floodgate_metrics() {
    let server = spawn_floodgate(|_| {}).await;
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
async fn counts_match_the_sum_of_two_floodgates() {
    let (a, b) = (spawn_floodgate(|_| {}).await, spawn_floodgate(|_| {}).await);
    let mut args = quick_args(
        &a.url,
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
    );
    args.extend(["--url", &b.url]);
    // Warmup connections are kept per replica for the measured phase.
    let warmup = args.iter().position(|a| *a == "--warmup").unwrap() + 1;
    args[warmup] = "40";
    let run = run_load(&args, &[]).await;
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
        assert_eq!(s["status_codes"], json!({"200": 300}));
        let targets = s["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 2);
        let mut sum = 0;
        for t in targets {
            assert_eq!(t["connections"], 4, "{t}");
            let n = t["requests"]["total"].as_u64().unwrap();
            assert!(n > 0, "both replicas get load: {t}");
            sum += n;
        }
        assert_eq!(sum, 300);
        let m = &s["server_metrics"];
        assert_eq!(m["status"], "match", "{m}");
        for c in m["check"]["counters"].as_array().unwrap() {
            assert_eq!(c["delta"], c["client"], "{c}");
        }
        assert_eq!(m["check"]["counters"][0]["delta"], 300);
        for (t, server) in m["targets"].as_array().unwrap().iter().zip([&a, &b]) {
            assert_eq!(t["url"], server.url.as_str());
            assert_eq!(t["check"]["exact"], true, "{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_against_floodgate() {
    let server = spawn_floodgate(|_| {}).await;
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
async fn sends_extra_headers_such_as_an_api_key() {
    let server = spawn_floodgate(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("load-key")];
        // Every keyless request fails from one address; throttling them is not the point.
        s.auth.failed_attempts_burst = 1_000;
    })
    .await;
    let url = &server.url;
    let with_key = run_load(
        &quick_args(
            url,
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
        &quick_args(url, &["--scenario", "fast", "-n", "50", "-c", "2"]),
        &[],
    )
    .await;
    let s = &without.json()["scenarios"][0];
    assert_eq!(s["status_codes"], json!({"401": 50}), "{s}");
    assert_eq!(s["error_codes"]["UNAUTHORIZED"], 50, "{s}");
}

/// Checks a jobs scenario in which every one of `n` jobs succeeded with the
/// right answer; returns its `jobs` object.
fn assert_all_jobs_verified(s: &Value, n: u64) -> &Value {
    let j = &s["jobs"];
    assert_eq!(s["name"], "jobs");
    assert_eq!(s["stop_reason"], "requests", "{s}");
    for (field, expected) in [
        ("submitted", n),
        ("completed", n),
        ("succeeded", n),
        ("verified", n),
        ("digest_mismatches", 0),
        ("submit_failed", 0),
        ("failed", 0),
        ("cancelled", 0),
        ("lost", 0),
        ("unfinished", 0),
    ] {
        assert_eq!(j[field], expected, "{field}: {j}");
    }
    assert_eq!(j["mismatches"], json!([]));
    let polls = j["polls"].as_u64().unwrap();
    assert!(polls >= n, "at least one poll per job: {j}");
    // Every HTTP request is counted: one submission per job, and the polls.
    assert_eq!(s["requests"]["total"], n + polls, "{s}");
    assert_eq!(
        s["requests"]["successful"],
        n + polls - j["poll_errors"].as_u64().unwrap()
    );
    assert_eq!(s["status_codes"]["202"], n, "{s}");
    for latency in ["submit_latency_ms", "time_to_completion_ms"] {
        let l = &j[latency];
        for p in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"] {
            assert!(l[p].as_f64().unwrap() > 0.0, "{latency}.{p}: {l}");
        }
        assert!(l["p50_ms"].as_f64() <= l["p99_ms"].as_f64(), "{l}");
    }
    // A job completes after its submission was answered, and after at least one poll.
    assert!(
        j["time_to_completion_ms"]["min_ms"].as_f64().unwrap()
            > j["submit_latency_ms"]["min_ms"].as_f64().unwrap()
    );
    assert!(j["submitted_per_sec"].as_f64().unwrap() > 0.0);
    assert!(j["completed_per_sec"].as_f64().unwrap() > 0.0);
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_followed_and_verified() {
    let server = spawn_floodgate(|_| {}).await;
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "--scenario",
                "jobs",
                "-n",
                "200",
                "-c",
                "8",
                "--rounds",
                "1000",
                "--poll-interval",
                "10ms",
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
    let report = run.json();
    assert_eq!(report["jobs_verified"], true);
    let s = &report["scenarios"][0];
    let j = assert_all_jobs_verified(s, 200);
    assert_eq!(j["rounds"], 1000);
    assert_eq!(j["poll_interval_ms"], 10.0);
    // floodgate counts API v2 requests like any other.
    assert_eq!(s["server_metrics"]["status"], "match", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_two_floodgates_each_with_its_own_database() {
    let (a, b) = (spawn_floodgate(|_| {}).await, spawn_floodgate(|_| {}).await);
    let mut args = quick_args(
        &a.url,
        &[
            "--scenario",
            "jobs",
            "-n",
            "60",
            "-c",
            "4",
            "--poll-interval",
            "10ms",
            "--fail-on-mismatch",
        ],
    );
    args.extend(["--url", &b.url]);
    // Text first; then the same run as JSON.
    let output = args.iter().position(|a| *a == "json").unwrap();
    args[output] = "text";
    let text = run_load(&args, &[]).await;
    assert_eq!(text.code, 0, "{}\n{}", text.stdout, text.stderr);
    for needle in [
        "Scenario jobs: POST on 2 targets",
        "Jobs:               rounds the server's default, polled every 10ms",
        "Submitted:        60 (",
        "Completed:        60 (",
        "succeeded       60 (60 verified, 0 wrong)",
        "Unfinished:       0",
        "Submit latency:",
        "Time to completion:",
        "Latency (",
        "jobs: ",
        "Server /metrics:    counts match (summed over 2 targets)",
    ] {
        assert!(
            text.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            text.stdout
        );
    }
    args[output] = "json";
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["scenarios"][0];
    let j = assert_all_jobs_verified(s, 60);
    assert_eq!(j["rounds"], Value::Null, "the server's default");
    // Jobs are polled where they were submitted: each server knows its own.
    let mut sum = 0;
    for t in s["targets"].as_array().unwrap() {
        let n = t["jobs"]["verified"].as_u64().unwrap();
        assert!(n > 0, "both servers get jobs: {t}");
        assert_eq!(t["jobs"]["lost"], 0, "{t}");
        sum += n;
    }
    assert_eq!(sum, 60);
    assert_eq!(s["server_metrics"]["status"], "match", "{s}");
}

/// `--grpc`: the fast and intensive scenarios as gRPC calls, with the same report and the
/// same server cross-check (the JSON statistics count gRPC calls as requests); refusals are
/// reported by gRPC code name beside their REST-equivalent status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_scenarios_report_and_cross_check_like_rest() {
    let server = spawn_floodgate(|_| {}).await;
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "--grpc",
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
        assert_eq!(s["requests"]["successful"], 300, "{}", s["name"]);
        assert_eq!(s["status_codes"], json!({"200": 300}));
        assert_eq!(s["server_metrics"]["status"], "match", "{s}");
    }
    assert!(scenarios[0]["urls"][0]
        .as_str()
        .unwrap()
        .ends_with("/floodgate.v1.ComputeService/Fast"));

    let limited = spawn_floodgate(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 10;
    })
    .await;
    let run = run_load(
        &quick_args(
            &limited.url,
            &["--grpc", "--scenario", "fast", "-n", "50", "-c", "2"],
        ),
        &[("FLOODGATE_LOAD_WARMUP", "0")],
    )
    .await;
    let s = &run.json()["scenarios"][0];
    let refused = s["error_codes"]["RESOURCE_EXHAUSTED"].as_u64().unwrap_or(0);
    assert!(refused >= 39, "{s}");
    assert_eq!(s["status_codes"]["429"].as_u64(), Some(refused), "{s}");

    let jobs = run_load(
        &quick_args(&server.url, &["--grpc", "--scenario", "jobs"]),
        &[],
    )
    .await;
    assert_eq!(jobs.code, 2, "{}", jobs.stderr);
    assert!(jobs.stderr.contains("REST only"), "{}", jobs.stderr);
}
