//! A floodgate-load run against floodgates that share state in a real `redis-server`.

use std::time::Duration;

use crate::floodgate_server::spawn_floodgate;
use crate::redis_server::RedisServer;
use crate::run::run_load;

/// Three replicas sharing one limit in a real Redis, loaded through one client with three
/// `--url`s: the total admitted is the service's limit (300/s with a burst of 30, for 10 s),
/// within 5%, and the cross-check, summed over the three, matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_one_client_share_one_redis_limit() {
    let redis = RedisServer::start();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            spawn_floodgate(|s| {
                s.redis.url = Some(redis.url());
                s.rate_limit.backend = floodgate::config::RateLimitBackend::Redis;
                s.rate_limit.requests_per_second = 300;
                s.rate_limit.burst = 30;
                // Loaded debug builds: no decision may fall back for a slow call.
                s.redis.timeout = Duration::from_millis(500);
            })
            .await,
        );
    }
    let mut args = Vec::new();
    for r in &replicas {
        args.extend(["--url", r.url.as_str()]);
    }
    args.extend([
        "--scenario",
        "fast",
        "--duration",
        "10s",
        "--requests",
        "10000000",
        "-c",
        "12",
        "--warmup",
        "0",
        "--quiet",
        "--output",
        "json",
        "--threads",
        "2",
        "--fail-on-mismatch",
    ]);
    let started = std::time::Instant::now();
    let run = run_load(&args, &[]).await;
    let expected = 300.0 * started.elapsed().as_secs_f64() + 30.0;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let s = &run.json()["scenarios"][0];
    let admitted = s["status_codes"]["200"].as_u64().unwrap_or(0) as f64;
    let limited = s["status_codes"]["429"].as_u64().unwrap_or(0) as f64;
    assert!(limited > admitted, "the load was above the limit: {s}");
    let error = (admitted - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "{admitted} admitted, {expected:.0} expected ({:.1}% off)",
        error * 100.0
    );
    assert_eq!(s["server_metrics"]["status"], "match", "{s}");
}
