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
        "sum(http_server_requests_total{route=~\"/api/v1/compute.*|unmatched\"})",
        54.0,
    )
    .await;
    prom.wait_for(
        "sum(http_server_requests_total{route=\"/api/v1/compute/fast\",status=\"200\"})",
        37.0,
    )
    .await;
    prom.wait_for("sum(http_server_requests_total{status=\"400\"})", 5.0)
        .await;
    prom.wait_for(
        "sum(http_server_request_duration_seconds_count{route=\"/api/v1/compute/intensive\"})",
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
        "sum(floodgate_rpc_server_call_duration_seconds_count{rpc_service=\"floodgate.v1.ComputeService\"})",
        6.0,
    )
    .await;

    // rate() needs two samples of each new series inside its window.
    prom.wait_for(
        "min(count_over_time(http_server_requests_total[1m])) >= bool 3",
        1.0,
    )
    .await;
    prom.wait_for(
        "min(count_over_time(floodgate_rpc_server_call_duration_seconds_count[1m])) >= bool 3",
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
