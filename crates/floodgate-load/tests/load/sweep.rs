//! Sweeps against the stub: open-loop steps up to the knee, a sweep ended by
//! errors, and, in headless Chromium, a sweep's page and the comparison of
//! two sweeps on one chart.

use serde_json::Value;

use crate::stub::{spawn_stub, Stub};
use crate::support::{json_f64, json_pairs, open_in_chromium, output_dir, run_load, series_values};

/// A sweep of the stub's `/paced` route (20 ms per answer) over two
/// connections: it serves about 100 requests/s, so 20 and 80 requests/s meet
/// a 300 ms p99 and 5 % errors, and at 140 requests/s a third of the
/// requests due find both connections busy until the end (unsent: errors)
/// while the others queue ever longer. The limits leave room for a busy test
/// machine. The report is JSON unless `extra` says otherwise.
fn paced_sweep<'a>(url: &'a str, rates: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
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
    ];
    if !extra.contains(&"--output") {
        args.extend(["--output", "json"]);
    }
    args.extend_from_slice(extra);
    args
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_a_sweep_and_a_comparison_draw_their_curves() {
    let dir = output_dir("sweep");
    let (url_a, _a) = spawn_stub(Stub::default()).await;
    let (url_b, _b) = spawn_stub(Stub::default()).await;
    let page = dir.join("sweep.html");
    let run = run_load(
        &paced_sweep(
            &url_a,
            "20..80:60",
            &["--output", "html", "--output-file", page.to_str().unwrap()],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let seen = open_in_chromium(&page, &dir.join("sweep.png")).await;
    let sweep = &seen["json"]["sweeps"][0];
    assert_eq!(sweep["stopped"], "range_end");
    let knee = sweep["knee"]["offered_rate"].as_f64().unwrap();
    assert_eq!(knee, 80.0);
    assert_eq!(
        json_f64(
            seen["figures"]["sweep0-knee-offered"]["value"]
                .as_str()
                .unwrap()
        ),
        knee
    );
    assert_eq!(seen["figures"]["sweep0-knee-offered"]["text"], "80.0");
    let curve = seen["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "sweep0-curve")
        .expect("the sweep's curve");
    assert_eq!(curve["points"], 4, "p50 and p99 of two steps: {curve}");
    // Each step has its scenario section and charts.
    for id in ["s0-throughput", "s1-throughput", "s1-percentiles"] {
        assert!(
            seen["charts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == id),
            "{id}"
        );
    }

    // Two sweeps as JSON, then both curves on one chart.
    let mut files = Vec::new();
    for (name, url) in [("stub-a", &url_a), ("stub-b", &url_b)] {
        let file = dir.join(format!("{name}.json"));
        let run = run_load(
            &paced_sweep(url, "20..80:60", &["--output-file", file.to_str().unwrap()]),
            &[],
        )
        .await;
        assert_eq!(run.code, 0, "stderr: {}", run.stderr);
        files.push(format!("{name}={}", file.display()));
    }
    let chart = dir.join("compare.html");
    let run = run_load(
        &[
            "--compare",
            &files[0],
            "--compare",
            &files[1],
            "--output",
            "html",
            "--output-file",
            chart.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let seen = open_in_chromium(&chart, &dir.join("compare.png")).await;
    let curves = seen["json"]["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 2);
    assert_eq!(curves[0]["name"], "stub-a");
    let chart = &seen["charts"][0];
    assert_eq!(chart["id"], "compare-curve");
    let names: Vec<&str> = chart["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["stub-a p99", "stub-a p50", "stub-b p99", "stub-b p50"]
    );
    for (i, c) in curves.iter().enumerate() {
        let knee = &c["sweep"]["knee"];
        assert_eq!(
            json_f64(
                seen["figures"][format!("curve{i}-knee-offered")]["value"]
                    .as_str()
                    .unwrap()
            ),
            knee["offered_rate"].as_f64().unwrap()
        );
        let p99 = series_values(chart, &format!("{} p99", c["name"].as_str().unwrap()));
        let expected = json_pairs(&c["sweep"]["steps"], "achieved_rate", "p99_ms");
        assert_eq!(p99, expected);
    }
    // The p99 limit and both knees are drawn.
    assert_eq!(chart["rules"].as_array().unwrap().len(), 3, "{chart}");

    // A report without a sweep cannot be compared.
    let plain = dir.join("plain.json");
    std::fs::write(&plain, r#"{"scenarios": []}"#).unwrap();
    let run = run_load(
        &["--compare", &format!("x={}", plain.display()), "--quiet"],
        &[],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("holds no sweep"), "{}", run.stderr);
}
