//! A real Prometheus scrapes a running floodgate; its query API must see exactly the
//! workload that was sent, and every dashboard query must return series.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;
use crate::test_tools::tool;

struct Prometheus {
    _child: ChildGuard,
    _dir: TempDir,
    base: String,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    start_prometheus_with(target, &[])
}

/// A Prometheus scraping `target` every second, with the rules loaded and `flags` added.
fn start_prometheus_with(target: std::net::SocketAddr, flags: &[&str]) -> Prometheus {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("floodgate-prom-{port}"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus/floodgate-rules.yaml");
    // The default metrics_path (/metrics): content negotiation must hand Prometheus the exposition.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: floodgate\n    static_configs:\n      - targets: ['{target}']\n        labels:\n          namespace: ci\n          pod: floodgate-0\n",
        rules = rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let child = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        _child: ChildGuard(child),
        _dir: TempDir(dir),
        base: format!("http://127.0.0.1:{port}"),
    }
}

impl Prometheus {
    async fn query(&self, q: &str) -> Option<f64> {
        let r = client()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let result = v["data"]["result"].as_array()?;
        let sample = result.first()?;
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Wait until `q` evaluates to `want`.
    async fn wait_for(&self, q: &str, want: f64) {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_secs(30) {
            last = self.query(q).await;
            if last == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{q}: wanted {want}, last saw {last:?}");
    }
}

#[tokio::test]
async fn prometheus_scrapes_exactly_the_workload_sent() {
    // The cache is on, and the limiter in a real Redis, so the dashboards' cache and Redis
    // panels have series to query.
    let redis = crate::redis_server::RedisServer::start();
    let app = spawn_with(|s| {
        s.cache.enabled = true;
        s.redis.url = Some(redis.url());
        s.rate_limit.backend = floodgate::config::RateLimitBackend::Redis;
    })
    .await;
    let prom = start_prometheus(app.addr);
    prom.wait_for("up{job=\"floodgate\"}", 1.0).await;

    for n in 0..37 {
        assert_eq!(app.compute("fast", n).await.status(), 200);
    }
    for n in 0..11 {
        assert_eq!(app.compute("intensive", n).await.status(), 200);
    }
    for _ in 0..5 {
        assert_eq!(
            app.post_json("/api/v1/compute/fast", "{}").await.status(),
            400
        );
    }
    app.get("/not/here").await;

    prom.wait_for(
        "sum(http_server_request_duration_seconds_count{http_route=~\"/api/v1/compute.*|\"})",
        54.0,
    )
    .await;
    prom.wait_for(
        "sum(http_server_request_duration_seconds_count{http_route=\"/api/v1/compute/fast\",http_response_status_code=\"200\"})",
        37.0,
    )
    .await;
    prom.wait_for(
        "sum(http_server_request_duration_seconds_count{http_response_status_code=\"400\"})",
        5.0,
    )
    .await;
    prom.wait_for(
        "sum(http_server_request_duration_seconds_count{http_route=\"/api/v1/compute/intensive\"})",
        11.0,
    )
    .await;
    prom.wait_for("sum(floodgate_jobs_total{outcome=\"completed\"})", 11.0)
        .await;
    prom.wait_for("sum(floodgate_job_duration_seconds_count)", 11.0)
        .await;
    prom.wait_for("floodgate_job_queue_capacity", 10_000.0)
        .await;
    // The JSON statistics count the same requests.
    assert_eq!(app.stats().await["total_requests"], 54);

    // One durable job, so the jobs and database panels have series too.
    let r = app
        .post_json("/api/v2/jobs", r#"{"number": 9, "rounds": 1000}"#)
        .await;
    assert_eq!(r.status(), 202);
    prom.wait_for(
        "sum(floodgate_jobs_finished_total{status=\"succeeded\"})",
        1.0,
    )
    .await;

    // gRPC calls, so the dashboards' gRPC panels have series: OK and INVALID_ARGUMENT on
    // Fast, OK on Intensive, and a health check.
    {
        use floodgate::grpc::pb::{compute_service_client::ComputeServiceClient, ComputeRequest};
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = ComputeServiceClient::new(channel.clone());
        for n in 0..3 {
            c.fast(ComputeRequest { number: n }).await.unwrap();
        }
        let _ = c
            .fast(ComputeRequest { number: u64::MAX })
            .await
            .unwrap_err();
        for n in 0..2 {
            c.intensive(ComputeRequest { number: n }).await.unwrap();
        }
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    prom.wait_for(
        "sum(rpc_server_call_duration_seconds_count{rpc_method=~\"floodgate.v1.ComputeService/.*\"})",
        6.0,
    )
    .await;

    // rate() needs two samples of each new series inside its window.
    prom.wait_for(
        "min(count_over_time(http_server_request_duration_seconds_count[1m])) >= bool 3",
        1.0,
    )
    .await;
    prom.wait_for(
        "min(count_over_time(rpc_server_call_duration_seconds_count[1m])) >= bool 3",
        1.0,
    )
    .await;
    // The SLO recording rules have been evaluated for every class and objective (fast,
    // intensive and jobs; availability and latency), so the error budget panels have series.
    prom.wait_for(
        "count(namespace_job_slo:error_budget_remaining:ratio) + count(namespace_job_slo:error_budget_burn:rate1h) + count(namespace_job_slo:error_budget_burn:rate6h) >= bool 18",
        1.0,
    )
    .await;
    // Every dashboard query returns series against this live target.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-dashboard-queries.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(&script)
        .arg(&prom.base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dashboard queries failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let app = spawn_app().await;
    app.compute("fast", 1).await;
    app.compute("intensive", 1).await;
    let text = app.exposition().await;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n{text}"
    );
}

/// Exemplars from latency to trace: Prometheus 2.42 with exemplar storage scrapes the real
/// binary (it negotiates OpenMetrics), traced REST and gRPC calls are sent, and the
/// exemplars Prometheus stores on both duration histograms name traces whose spans the OTLP
/// receiver got.
#[tokio::test]
async fn exemplars_on_the_duration_histograms_lead_to_received_traces() {
    use crate::collector::{parse_spans, start_collector};
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ])
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let prom = start_prometheus_with(addr, &["--enable-feature=exemplar-storage"]);
    prom.wait_for("up{job=\"floodgate\"}", 1.0).await;
    let c = client();
    for n in 0..20 {
        assert_eq!(app.compute_fast(&c, n, None).await.status(), 200);
    }
    {
        use floodgate::grpc::pb::{compute_service_client::ComputeServiceClient, ComputeRequest};
        let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = ComputeServiceClient::new(channel);
        for n in 0..5 {
            grpc.intensive(ComputeRequest { number: n }).await.unwrap();
        }
    }

    let exemplars = |metric: &'static str| {
        let base = prom.base.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let r = client()
                .get(format!("{base}/api/v1/query_exemplars"))
                .query(&[
                    ("query", metric.to_owned()),
                    ("start", (now - 300).to_string()),
                    ("end", (now + 60).to_string()),
                ])
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            let mut found = Vec::new();
            for series in v["data"].as_array().into_iter().flatten() {
                for e in series["exemplars"].as_array().into_iter().flatten() {
                    found.push((
                        series["seriesLabels"].clone(),
                        e["labels"]["trace_id"].as_str().unwrap_or("").to_owned(),
                        e["labels"]["span_id"].as_str().unwrap_or("").to_owned(),
                        e["value"]
                            .as_str()
                            .unwrap_or("")
                            .parse::<f64>()
                            .unwrap_or(-1.0),
                    ));
                }
            }
            found
        }
    };
    for (metric, want_label, want_value) in [
        (
            "http_server_request_duration_seconds_bucket",
            "http_route",
            "/api/v1/compute/fast",
        ),
        (
            "rpc_server_call_duration_seconds_bucket",
            "rpc_method",
            "floodgate.v1.ComputeService/Intensive",
        ),
    ] {
        let started = Instant::now();
        let found = loop {
            let found: Vec<_> = exemplars(metric)
                .await
                .into_iter()
                .filter(|(labels, ..)| labels[want_label] == want_value)
                .collect();
            if !found.is_empty() {
                break found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no exemplar on {metric} for {want_value}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        // Each exemplar is a span the receiver got, in the bucket its duration falls in.
        let started = Instant::now();
        loop {
            let spans = parse_spans(&std::fs::read_to_string(&collector.log).unwrap_or_default());
            let missing: Vec<_> = found
                .iter()
                .filter(|(_, trace, span, _)| {
                    !spans.iter().any(|s| &s.trace_id == trace && &s.id == span)
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "exemplars whose spans never arrived: {missing:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (labels, trace, _, value) in &found {
            assert_eq!(trace.len(), 32, "{labels}");
            let le: f64 = match labels["le"].as_str().unwrap() {
                "+Inf" => f64::INFINITY,
                le => le.parse().unwrap(),
            };
            assert!(*value >= 0.0 && *value <= le, "{value} in bucket le={le}");
        }
    }
}
