//! The HTML report in headless Chromium (Debian's, driven by Playwright):
//! self-contained, every chart drawn with data, and its numbers those of the
//! JSON report.

use serde_json::Value;

use crate::stub::{spawn_stub, Stub};
use crate::support::{json_f64, json_pairs, open_in_chromium, output_dir, run_load, series_values};

/// `1234.5` as the reports show requests/s: `1,234.5`.
fn rate_text(r: f64) -> String {
    let tenths = (r * 10.0).round() as u64;
    let whole = tenths / 10;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped}.{}", tenths % 10)
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
