//! The HTML reports in headless Chromium (Debian's, driven by Playwright):
//! self-contained, every chart drawn with data, and its numbers those of the
//! JSON report; a sweep's page and the comparison of two sweeps on one chart; a staged
//! report's stages, their boundaries and scheduled rate, and its thresholds.

use std::process::Stdio;

use serde_json::Value;

use crate::run::{paced_sweep, run_load, RUN_LIMIT};
use crate::stub::{spawn_stub, Stub};
use crate::test_tools::venv_python;

/// `1234.5` as the reports show requests/s: `1,234.5`.
fn rate_text(r: f64) -> String {
    let tenths = (r * 10.0).round() as u64;
    let whole = tenths / 10;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped}.{}", tenths % 10)
}

/// A number the HTML report wrote as text (a `data-value`, a point of a
/// `data-values`), read as serde_json reads the JSON report's numbers: both
/// are written the same way, so they compare equal.
fn json_f64(text: &str) -> f64 {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{text}` is not a number: {e}"))
}

/// The `x,y …` points of the series `name` of a chart the HTML report drew
/// (its `data-chart` JSON), as numbers.
fn series_values(chart: &serde_json::Value, name: &str) -> Vec<(f64, f64)> {
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
fn json_pairs(items: &serde_json::Value, x: &str, y: &str) -> Vec<(f64, f64)> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item[x].as_f64().unwrap(), item[y].as_f64().unwrap()))
        .collect()
}

/// A directory of this test binary's output under the test output directory.
fn output_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("floodgate-load")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens `page` in headless Chromium with tests/clients/html_report.py (it
/// says what it checks), saving a screenshot to `screenshot`; returns what
/// the script saw.
async fn open_in_chromium(page: &std::path::Path, screenshot: &std::path::Path) -> Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_the_html_report_draws_every_chart_with_the_json_numbers() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let dir = output_dir("html-report");
    let page = dir.join("report.html");
    // Open loop against the stub's fast endpoint (200, 429 and 500 answers):
    // three seconds of timeline, three status codes, two error codes.
    let run = run_load(
        &[
            "--url",
            &url,
            "--scenario",
            "fast",
            "--rate",
            "1500",
            "--duration",
            "2800ms",
            "-c",
            "8",
            "--warmup",
            "0",
            "--quiet",
            "--threads",
            "2",
            "--output",
            "html",
            "--output-file",
            page.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "no script in the report");

    let seen = open_in_chromium(&page, &dir.join("report.png")).await;
    let report = &seen["json"];
    let s = &report["scenarios"][0];
    let charts: std::collections::HashMap<&str, &Value> = seen["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    for id in [
        "s0-percentiles",
        "s0-throughput",
        "s0-latency",
        "s0-status",
        "s0-errors",
    ] {
        assert!(
            charts
                .get(id)
                .is_some_and(|c| c["points"].as_u64() > Some(0)),
            "{id} in {charts:?}"
        );
    }

    // The figures are the JSON report's numbers.
    let figure = |id: &str| &seen["figures"][id];
    let total = s["requests"]["total"].as_u64().unwrap();
    assert!((4_100..=4_300).contains(&total), "{total}");
    assert_eq!(figure("s0-total")["value"], total.to_string());
    assert_eq!(
        figure("s0-total")["text"]
            .as_str()
            .unwrap()
            .replace(',', ""),
        total.to_string()
    );
    let p99 = s["latency_ms"]["p99_ms"].as_f64().unwrap();
    assert_eq!(json_f64(figure("s0-p99")["value"].as_str().unwrap()), p99);
    assert_eq!(figure("s0-p99")["text"], format!("{p99:.3} ms"));
    let rps = s["rps"].as_f64().unwrap();
    assert_eq!(json_f64(figure("s0-rps")["value"].as_str().unwrap()), rps);
    assert_eq!(figure("s0-rps")["text"], rate_text(rps));
    assert_eq!(
        figure("s0-server-status")["value"],
        s["server_metrics"]["status"]
    );
    assert_eq!(s["server_metrics"]["status"], "match");

    // The charts draw the JSON report's series.
    let spectrum = json_pairs(&s["percentiles"], "percentile", "latency_ms");
    assert_eq!(series_values(charts["s0-percentiles"], "latency"), spectrum);
    let points = s["timeline"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{points:?}");
    let throughput = json_pairs(&s["timeline"]["points"], "start_secs", "rps");
    assert_eq!(
        series_values(charts["s0-throughput"], "requests/s"),
        throughput
    );
    assert_eq!(
        points
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        total
    );
    let p99s = json_pairs(&s["timeline"]["points"], "start_secs", "p99_ms");
    assert_eq!(series_values(charts["s0-latency"], "p99"), p99s);
    let bars: Vec<(String, u64)> = charts["s0-status"]["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["label"].as_str().unwrap().to_owned(),
                b["value"].as_u64().unwrap(),
            )
        })
        .collect();
    let codes: Vec<(String, u64)> = s["status_codes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(bars, codes);
    assert_eq!(codes.len(), 3);
    eprintln!(
        "HTML report: {total} requests, {} charts; screenshot {}",
        charts.len(),
        dir.join("report.png").display()
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_a_staged_report_marks_its_stages_and_thresholds() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let dir = output_dir("html-stages");
    let page = dir.join("report.html");
    // A ramp and a hold through the stub's always-200 route; one threshold that holds and
    // one that cannot (exit status 3, the report still written).
    let run = run_load(
        &[
            "--url",
            &url,
            "--path",
            "/ok",
            "--no-server-metrics",
            "-c",
            "8",
            "--stage",
            "up=1s:400/s",
            "--stage",
            "hold=1s:400/s",
            "--threshold",
            "error_rate<1",
            "--threshold",
            "rps>1000000",
            "--warmup",
            "0",
            "--quiet",
            "--output",
            "html",
            "--output-file",
            page.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);

    let seen = open_in_chromium(&page, &dir.join("report.png")).await;
    let s = &seen["json"]["scenarios"][0];
    let figure = |id: &str| seen["figures"][id]["value"].as_str().unwrap().to_owned();
    // The stages table carries the JSON report's per-stage numbers.
    let stages = s["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for (k, stage) in stages.iter().enumerate() {
        let requests = stage["requests"].as_u64().unwrap();
        assert_eq!(
            figure(&format!("s0-stage{}-requests", k + 1)),
            requests.to_string()
        );
        assert!(requests > 150, "{stage}");
    }
    // The throughput chart: a vertical line where `hold` starts, and the scheduled rate
    // drawn beside the achieved one.
    let throughput = seen["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "s0-throughput")
        .expect("a throughput chart");
    let rules: Vec<f64> = throughput["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    assert_eq!(rules, [1.0], "{throughput}");
    // 0 → 400/s over the first second schedules 200 requests in it; then 400 a second (over
    // a longer last interval when the last answers came late on a busy machine; nothing
    // after the profile's end).
    let scheduled = series_values(throughput, "scheduled/s");
    assert_eq!(scheduled[0], (0.0, 200.0), "{throughput}");
    assert!(
        scheduled[1].0 == 1.0 && scheduled[1].1 > 250.0 && scheduled[1].1 < 400.001,
        "{throughput}"
    );
    assert!(
        scheduled[2..].iter().all(|&(_, r)| r == 0.0),
        "{throughput}"
    );
    // Each threshold's verdict, as in the JSON.
    let thresholds = s["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 2);
    assert_eq!(figure("s0-threshold1"), "true");
    assert_eq!(figure("s0-threshold2"), "false");
    assert_eq!(thresholds[1]["passed"], false);
    assert_eq!(seen["json"]["thresholds_passed"], false);
}
