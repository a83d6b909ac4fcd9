//! Live metrics pushed while the load runs: to a real Prometheus (2.42, with its
//! remote-write receiver on), whose `rate()` over the pushed counters must agree with the
//! report's totals, and against which every query of the load dashboard
//! (`dashboards/floodgate-load.json`) must return series; and over OTLP/HTTP to a real
//! OpenTelemetry collector (`rotel-agent`), which must decode them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::floodgate_server::spawn_floodgate;
use crate::run::{load_command, quick_args, RUN_LIMIT};
use crate::test_tools::tool;

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (or `child` exits, or 20 s pass).
async fn until_listening(child: &mut Child, port: u16, what: &str) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(child.try_wait().unwrap().is_none(), "{what} exited");
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what} did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Prometheus {
    _child: Child,
    _dir: TempDir,
    base: String,
}

/// Prometheus with its remote-write receiver on, scraping nothing.
async fn start_prometheus() -> Prometheus {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("floodgate-load-prom-{port}"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n",
    )
    .unwrap();
    let mut child = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    until_listening(&mut child, port, "prometheus").await;
    let prometheus = Prometheus {
        _child: child,
        _dir: TempDir(dir),
        base: format!("http://127.0.0.1:{port}"),
    };
    // Ready to take writes once its TSDB is open.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("{}/-/ready", prometheus.base)).await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return prometheus;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "prometheus not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Prometheus {
    /// The series of an instant query at `at` (seconds since 1970; now when `None`).
    async fn query(&self, q: &str, at: Option<f64>) -> Vec<Value> {
        let mut params = vec![("query", q.to_owned())];
        if let Some(at) = at {
            params.push(("time", format!("{at:.3}")));
        }
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.base))
            .query(&params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().unwrap().clone()
    }

    /// The value of a query that gives one series.
    async fn value(&self, q: &str, at: Option<f64>) -> f64 {
        let r = self.query(q, at).await;
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

/// Runs floodgate-load with `args` in the background; its output once it ends.
fn spawn_load(args: Vec<String>) -> tokio::task::JoinHandle<std::process::Output> {
    let mut cmd = load_command();
    cmd.args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    tokio::spawn(async move {
        tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .expect("floodgate-load finished in time")
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_receives_the_live_series_and_rate_agrees_with_the_report() {
    let prometheus = start_prometheus().await;
    let server = spawn_floodgate(|_| {}).await;
    let write = format!("prometheus-rw={}/api/v1/write", prometheus.base);
    let args: Vec<String> = quick_args(
        &server.url,
        &[
            "-s",
            "fast",
            "-c",
            "16",
            "--stage",
            "ramp=3s:400/s",
            "--stage",
            "hold=4s:400/s",
            "--out",
            &write,
            "--fail-on-mismatch",
        ],
    )
    .into_iter()
    .map(str::to_owned)
    .collect();
    let run = spawn_load(args);

    // The series arrive while the load runs.
    let mut seen_during_run = 0.0;
    while !run.is_finished() {
        let r = prometheus
            .query("sum(floodgate_load_requests_total)", None)
            .await;
        if let Some(v) = r.first() {
            seen_during_run = v["value"][1].as_str().unwrap().parse().unwrap();
            if seen_during_run > 0.0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen_during_run > 0.0, "no live series before the run ended");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let s = &report["scenarios"][0];
    let total = s["requests"]["total"].as_f64().unwrap();
    assert!(total > 2_000.0, "{total}");
    assert!(
        seen_during_run < total,
        "seen {seen_during_run} of {total} while running"
    );
    let pushes = &report["live_metrics"][0];
    assert_eq!(pushes["failed"], 0, "{pushes}");
    assert!(pushes["pushes"].as_u64().unwrap() >= 8, "{pushes}");

    // rate() over the counters, from their first sample (0, at the start of the phase) to
    // their last (the final values), times the window: the report's totals.
    let last = prometheus
        .value("max(timestamp(floodgate_load_requests_total))", None)
        .await;
    let start = s["started_at_unix_ms"].as_f64().unwrap() / 1e3;
    let window = (last - start).ceil() + 1.0;
    let rate = prometheus
        .value(
            &format!("sum(rate(floodgate_load_requests_total[{window}s]))"),
            Some(last),
        )
        .await;
    assert!(
        (rate * window - total).abs() <= total * 0.02,
        "rate() {rate}/s over {window} s against {total} requests in the report"
    );
    assert_eq!(
        prometheus
            .value("sum(floodgate_load_errors_total)", Some(last))
            .await,
        s["requests"]["failed"].as_f64().unwrap()
    );
    // By stage, the last values are the report's per-stage counts.
    for stage in s["stages"].as_array().unwrap() {
        let q = format!(
            "sum(floodgate_load_requests_total{{stage=\"{}\",scenario=\"fast\",target=\"{}\"}})",
            stage["name"].as_str().unwrap(),
            server.url
        );
        assert_eq!(
            prometheus.value(&q, Some(last)).await,
            stage["requests"].as_f64().unwrap(),
            "{q}"
        );
    }
    // The latency of the responses and the profile's target rate, on the same time axis.
    let p99 = prometheus
        .query(
            "floodgate_load_latency_seconds{quantile=\"0.99\"}",
            Some(last),
        )
        .await;
    assert!(!p99.is_empty());
    let target = prometheus
        .value(
            "max_over_time(floodgate_load_target_rate{stage=\"hold\"}[1m])",
            Some(last),
        )
        .await;
    assert_eq!(target, 400.0);

    // A closed-loop profile too, then every query of the load dashboard returns series from
    // what was pushed.
    let closed = crate::run::run_load(
        &quick_args(
            &server.url,
            &[
                "-s", "fast", "--stage", "1s:4", "--stage", "1s:4", "--out", &write,
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        closed.code, 0,
        "stdout: {}\nstderr: {}",
        closed.stdout, closed.stderr
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = std::process::Command::new(tool("python3"))
        .arg(root.join("../../scripts/check-dashboard-queries.py"))
        .arg(&prometheus.base)
        .arg(root.join("dashboards/floodgate-load.json"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "dashboard queries failed:\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_output_stops_the_run_before_any_load() {
    let server = spawn_floodgate(|_| {}).await;
    let nobody = format!(
        "prometheus-rw=http://127.0.0.1:{}/api/v1/write",
        free_port()
    );
    let run = crate::run::run_load(
        &quick_args(&server.url, &["-s", "fast", "-n", "100", "--out", &nobody]),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("live metrics: cannot push to"),
        "{}",
        run.stderr
    );
    let stats: Value = reqwest::get(format!("{}/api/v1/stats", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total_requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opentelemetry_collector_decodes_the_otlp_push() {
    let (grpc, http) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("floodgate-load-rotel-{http}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut collector = Command::new(tool("rotel-agent"))
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http}"),
            "--exporter",
            "blackhole",
            "--debug-log",
            "metrics",
            "--debug-log-verbosity",
            "detailed",
        ])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("rotel-agent starts");
    until_listening(&mut collector, http, "rotel-agent").await;

    let server = spawn_floodgate(|_| {}).await;
    let out = format!("otlp=http://127.0.0.1:{http}/v1/metrics");
    let run = crate::run::run_load(
        &quick_args(
            &server.url,
            &[
                "-s",
                "fast",
                "--rate",
                "200",
                "--duration",
                "2s",
                "-c",
                "8",
                "--out",
                &out,
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
    let total = run.json()["scenarios"][0]["requests"]["total"]
        .as_u64()
        .unwrap();
    assert_eq!(total, 400);

    // The collector logs every data point it decoded; the last of the requests counter is
    // the report's total.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let last = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let values: Vec<u64> = text
            .split("-> Name: ")
            .filter(|block| block.starts_with("floodgate_load.requests\n"))
            .filter_map(|block| {
                assert!(
                    block.contains("AGGREGATION_TEMPORALITY_CUMULATIVE"),
                    "{block}"
                );
                assert!(
                    block.contains(&format!("target: Str({})", server.url)),
                    "{block}"
                );
                block
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Value: ")?.parse().ok())
            })
            .collect();
        if values.last() == Some(&total) {
            break values;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the collector decoded {values:?}, not {total} at the end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(last.len() >= 3, "pushes while the load ran: {last:?}");
    assert_eq!(last[0], 0, "the counter starts at 0 with the phase");
    let _ = std::fs::remove_file(&log);
}
