//! Sweeps against the stub: open-loop steps up to the knee, and a sweep ended
//! by errors. (In headless Chromium, a sweep's page and the comparison of two
//! sweeps on one chart: the services tier, browser.rs.)

use serde_json::Value;

use crate::run::{paced_sweep, run_load};
use crate::stub::{spawn_stub, Stub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_steps_the_rate_up_until_p99_passes_its_limit() {
    let (url, stub) = spawn_stub(Stub::default()).await;
    let run = run_load(&paced_sweep(&url, "20..200:60", &[]), &[]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    let sweep = &report["sweeps"][0];
    assert_eq!(sweep["scenario"], "custom");
    assert_eq!(sweep["rates"], "20..200:60");
    assert_eq!(sweep["limits"]["max_p99_ms"], 300.0);
    assert_eq!(sweep["limits"]["max_error_rate"], 5.0);
    assert_eq!(sweep["limits"]["max_steal_pct"], 100.0);
    assert_eq!(sweep["stopped"], "threshold");
    let steps = sweep["steps"].as_array().unwrap();
    let offered: Vec<f64> = steps
        .iter()
        .map(|s| s["offered_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(offered, [20.0, 80.0, 140.0], "{sweep}");
    let passed: Vec<bool> = steps
        .iter()
        .map(|s| s["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, true, false], "{sweep}");
    for step in &steps[..2] {
        let (offered, achieved) = (
            step["offered_rate"].as_f64().unwrap(),
            step["achieved_rate"].as_f64().unwrap(),
        );
        assert!(
            (achieved - offered).abs() <= offered * 0.15,
            "offered {offered}, achieved {achieved}"
        );
        assert!(step["p99_ms"].as_f64().unwrap() >= 19.0, "{step}");
        assert_eq!(step["reason"], Value::Null);
    }
    for step in steps {
        assert_eq!(step["not_judged"], false);
        // The share of the CPU time the host took, where the kernel says (Linux).
        if cfg!(target_os = "linux") {
            let stolen = step["stolen_pct"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&stolen), "{step}");
        }
    }
    let over = &steps[2];
    assert!(over["unsent"].as_u64().unwrap() > 0, "{over}");
    assert!(over["error_rate"].as_f64().unwrap() > 5.0, "{over}");
    assert!(over["reason"].as_str().unwrap().contains("over"), "{over}");
    let knee = &sweep["knee"];
    assert_eq!(knee["offered_rate"], 80.0);
    assert_eq!(knee["step"], 2);

    // Each step is a measured phase of its own, with its own /metrics check.
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 3);
    let mut total = 0;
    for (i, s) in scenarios.iter().enumerate() {
        assert_eq!(s["sweep_step"], i + 1);
        assert_eq!(s["load_model"]["type"], "open");
        assert_eq!(s["load_model"]["rate"], offered[i]);
        assert_eq!(s["load_model"]["concurrency"], 2);
        assert_eq!(s["requests"]["total"], steps[i]["requests"]);
        assert_eq!(s["latency_ms"]["p99_ms"], steps[i]["p99_ms"]);
        let status = s["server_metrics"]["status"].as_str().unwrap();
        assert!(status == "match" || status == "consistent", "{status}");
        assert_eq!(steps[i]["server_metrics"], status);
        total += s["requests"]["total"].as_u64().unwrap();
    }
    assert_eq!(report["counts_consistent"], true);
    assert_eq!(
        stub.total.load(std::sync::atomic::Ordering::SeqCst),
        total,
        "no request besides the steps' (no warmup)"
    );
}

/// With `--sweep-retries 1`, a step over the limits is run once more at its
/// rate before it ends the sweep; a rate the server cannot sustain fails both.
/// The step that passes is at half the stub's capacity: at 80 % a loaded
/// machine's pauses can fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_over_the_limits_is_run_again_before_it_ends_the_sweep() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let args = paced_sweep(&url, "50..140:90", &["--sweep-retries", "1"]);
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let sweep = &run.json()["sweeps"][0];
    assert_eq!(sweep["limits"]["retries"], 1);
    assert_eq!(sweep["stopped"], "threshold");
    let steps = sweep["steps"].as_array().unwrap();
    let runs: Vec<(f64, bool)> = steps
        .iter()
        .map(|s| {
            (
                s["offered_rate"].as_f64().unwrap(),
                s["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [(50.0, true), (140.0, false), (140.0, false)],
        "{sweep}"
    );
    assert_eq!(sweep["knee"]["offered_rate"], 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_end_a_sweep_without_a_knee() {
    // The stub's fast endpoint answers 30 % of requests with 429 or 500.
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let args = [
        "--url",
        &url,
        "--warmup",
        "0",
        "--quiet",
        "--scenario",
        "fast",
        "-c",
        "4",
        "--sweep",
        "50..100:50",
        "--sweep-step-duration",
        "500ms",
        "--sweep-max-steal",
        "100",
    ];
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    for needle in [
        "Scenario fast (sweep step 1): POST",
        "Sweep fast: POST",
        "Limits:             p99 <= 100 ms, errors <= 1 %",
        "OVER: errors 3",
        "Knee:               none: no step met the limits",
        "Stopped:            a step went over the limits",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?} in\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("sweep step 2"), "{}", run.stdout);

    let mut json = args.to_vec();
    // Errors alone decide here: a busy test machine may delay answers.
    json.extend([
        "--output",
        "json",
        "--sweep-max-errors",
        "35",
        "--sweep-max-p99",
        "60000",
    ]);
    let run = run_load(&json, &[]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let sweep = &run.json()["sweeps"][0];
    assert_eq!(sweep["stopped"], "range_end", "{sweep}");
    assert_eq!(sweep["knee"]["offered_rate"], 100.0);
    let rate = sweep["steps"][0]["error_rate"].as_f64().unwrap();
    // 30 % of the stub's answers, give or take the requests of half a second.
    assert!((25.0..=35.0).contains(&rate), "{rate}");
}
