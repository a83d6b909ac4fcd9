//! Scale-out admission on a real `redis-server` (Debian's, installed by the test-tools
//! script): one rate limit across replicas, a shared result cache, and the breaker and
//! fallbacks under real faults — the server killed, frozen with SIGSTOP, restarted, and a
//! wrong password.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::redis_server::RedisServer;

fn redis_settings(url: &str) -> impl Fn(&mut floodgate::Settings) + '_ {
    move |s| {
        s.redis.url = Some(url.to_owned());
        s.rate_limit.backend = floodgate::config::RateLimitBackend::Redis;
        s.redis.timeout = Duration::from_millis(50);
        s.redis.breaker.min_calls = 5;
        s.redis.breaker.open_for = Duration::from_millis(500);
    }
}

/// Send fast requests from `tasks` concurrent loops until `until`; count statuses.
async fn hammer(
    targets: Vec<String>,
    tasks: usize,
    until: Instant,
    headers: Vec<(&'static str, String)>,
) -> (u64, u64, u64) {
    let (ok, limited, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let loops: Vec<_> = (0..tasks)
        .map(|i| {
            let target = targets[i % targets.len()].clone();
            let (ok, limited, other) = (ok.clone(), limited.clone(), other.clone());
            let headers = headers.clone();
            tokio::spawn(async move {
                let c = client();
                while Instant::now() < until {
                    let mut req = c
                        .post(format!("{target}/api/v1/compute/fast"))
                        .header("content-type", "application/json")
                        .body(r#"{"number":3}"#);
                    for (k, v) in &headers {
                        req = req.header(*k, v);
                    }
                    match req.send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    (
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    )
}

/// Three replicas, one limit: 300/s with a burst of 30 for 10 s admits 300 × 10 + 30
/// requests in all, ±5%, however the load is spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_rate_limit() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            spawn_binary(&[
                ("REDIS_URL", &url),
                ("RATE_LIMIT_BACKEND", "redis"),
                ("RATE_LIMIT", "300"),
                ("FLOODGATE__RATE_LIMIT__BURST", "30"),
                ("FLOODGATE__LOG__ACCESS_LOG", "false"),
                // Three debug builds share two cores: no decision may fall back to a local
                // bucket because a call was slow, or the test would measure the fallback.
                ("FLOODGATE__REDIS__TIMEOUT", "500ms"),
            ])
            .await,
        );
    }
    let targets = replicas.iter().map(|r| r.base.clone()).collect();
    let started = Instant::now();
    let (ok, limited, other) = hammer(targets, 24, started + Duration::from_secs(10), vec![]).await;
    let expected = 300.0 * started.elapsed().as_secs_f64() + 30.0;
    assert_eq!(
        fallbacks(&replicas).await,
        0.0,
        "every decision was Redis's"
    );
    assert_eq!(other, 0, "only 200 and 429");
    assert!(
        limited > ok,
        "the load was above the limit: {ok} ok, {limited} limited"
    );
    let error = (ok as f64 - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "{ok} admitted, {expected:.0} expected ({:.1}% off)",
        error * 100.0
    );
}

/// Per-client limits across replicas: each API key gets the whole quota, whichever replica
/// its requests reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_gets_its_quota_across_replicas() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let hashes = format!("{},{}", sha256_hex("key-a"), sha256_hex("key-b"));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            spawn_binary(&[
                ("REDIS_URL", &url),
                ("RATE_LIMIT_BACKEND", "redis"),
                ("RATE_LIMIT", "100"),
                ("FLOODGATE__RATE_LIMIT__BURST", "10"),
                ("FLOODGATE__RATE_LIMIT__PER_CLIENT", "true"),
                ("FLOODGATE__AUTH__ENABLED", "true"),
                ("API_KEY_HASHES", &hashes),
                ("FLOODGATE__LOG__ACCESS_LOG", "false"),
                ("FLOODGATE__REDIS__TIMEOUT", "500ms"),
            ])
            .await,
        );
    }
    let targets: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let (a, b) = tokio::join!(
        hammer(
            targets.clone(),
            6,
            until,
            vec![("x-api-key", "key-a".into())]
        ),
        hammer(targets, 6, until, vec![("x-api-key", "key-b".into())]),
    );
    let expected = 100.0 * started.elapsed().as_secs_f64() + 10.0;
    assert_eq!(
        fallbacks(&replicas).await,
        0.0,
        "every decision was Redis's"
    );
    for (name, (ok, limited, other)) in [("key-a", a), ("key-b", b)] {
        assert_eq!(other, 0, "{name}");
        assert!(limited > 0, "{name} was limited");
        let error = (ok as f64 - expected).abs() / expected;
        assert!(
            error <= 0.05,
            "{name}: {ok} admitted, {expected:.0} expected"
        );
    }
}

/// A result computed on one replica is a hit on another.
#[tokio::test]
async fn the_result_cache_is_shared_across_replicas() {
    let redis = RedisServer::start();
    let url = redis.url();
    let shared = |s: &mut floodgate::Settings| {
        s.redis.url = Some(url.clone());
        // This test is about sharing, not the call deadline (tested on its own): on a
        // machine loaded by the other tests a lookup past the default deadline is a miss.
        s.redis.timeout = std::time::Duration::from_secs(2);
        s.cache.enabled = true;
        s.cache.backend = floodgate::config::CacheBackend::Redis;
    };
    let (a, b) = (spawn_with(shared).await, spawn_with(shared).await);
    let first: serde_json::Value = a.compute("intensive", 4242).await.json().await.unwrap();
    assert!(first.get("cached").is_none());
    // The result is stored after the answer is sent: wait until Redis holds it, so that B's
    // first request can only be a hit from A's store.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored = std::time::Instant::now();
    loop {
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        if keys > 0 {
            break;
        }
        assert!(
            stored.elapsed() < std::time::Duration::from_secs(5),
            "A's result never reached Redis"
        );
        tokio::task::yield_now().await;
    }
    let second: serde_json::Value = b.compute("intensive", 4242).await.json().await.unwrap();
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["result"], first["result"]);
}

/// Redis killed under load: no 5xx, the breaker opens and says so, latency stays far under
/// the request timeout; restarted, the breaker closes and the shared limit applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let _one_at_a_time = exclusive().await;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_with(|s| {
        redis_settings(&url)(s);
        s.rate_limit.requests_per_second = 100_000;
    })
    .await;
    let base = format!("http://{}", app.addr);
    let until = Instant::now() + Duration::from_millis(500);
    let (ok, _, other) = hammer(vec![base.clone()], 4, until, vec![]).await;
    assert!(ok > 0 && other == 0);
    assert_eq!(breaker_state(&app).await, 0.0, "closed while Redis answers");

    redis.kill();
    let until = Instant::now() + Duration::from_secs(2);
    let (mut ok, mut other, mut worst) = (0, 0, Duration::ZERO);
    while Instant::now() < until {
        let t = Instant::now();
        let status = app.compute("fast", 1).await.status().as_u16();
        worst = worst.max(t.elapsed());
        match status {
            200 => ok += 1,
            _ => other += 1,
        }
    }
    assert_eq!(
        other, 0,
        "all admitted by the local fallback, no 5xx ({ok} ok)"
    );
    assert!(
        worst < Duration::from_millis(500),
        "slowest request {worst:?}"
    );
    let text = app.exposition().await;
    assert_eq!(
        breaker_state(&app).await,
        2.0,
        "open while Redis is down: {text}"
    );
    let health: serde_json::Value = app.get("/health").await.json().await.unwrap();
    assert!(
        health["status"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("degraded"),
        "{health}"
    );
    assert_eq!(
        app.get("/health/ready").await.status(),
        200,
        "degraded is still ready"
    );
    let text = app.exposition().await;
    let fallback = sum_series(&text, "floodgate_rate_limit_decisions_total", |l| {
        l.contains("outcome=\"fallback\"")
    });
    assert!(fallback > 0.0, "{text}");

    redis.restart();
    let started = Instant::now();
    loop {
        let _ = app.compute("fast", 1).await;
        if breaker_state(&app).await == 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the breaker did not close after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = app.exposition().await;
    assert!(
        text.contains(r#"floodgate_dependency_up{dependency="redis"} 1"#),
        "{text}"
    );
}

/// Redis frozen with SIGSTOP (connections open, no answers): each request pays at most the
/// call deadline until the breaker opens, and nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_call_deadline() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_with(redis_settings(&url)).await;
    assert_eq!(app.compute("fast", 1).await.status(), 200);
    redis.signal("-STOP");
    let mut slow = 0;
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(app.compute("fast", 1).await.status(), 200);
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "a request took {took:?}");
        if took >= Duration::from_millis(40) {
            slow += 1;
        }
    }
    assert!(
        slow <= 10,
        "{slow} requests waited for the deadline; the breaker should open"
    );
    assert_eq!(breaker_state(&app).await, 2.0);
    redis.signal("-CONT");
}

/// A wrong password is a degraded service with a clear log line, not a crash.
#[tokio::test]
async fn a_wrong_password_degrades_without_crashing() {
    let redis = RedisServer::start_with(Some("right-password"));
    let dir = std::env::temp_dir().join(format!("floodgate-redis-pw-{}", redis.port));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, "wrong-password\n").unwrap();
    let mut app = spawn_binary(&[
        ("REDIS_URL", &redis.url()),
        ("RATE_LIMIT_BACKEND", "redis"),
        ("FLOODGATE__REDIS__PASSWORD_FILE", file.to_str().unwrap()),
        ("LOG_LEVEL", "warn"),
    ])
    .await;
    let c = client();
    for n in 0..30 {
        assert_eq!(app.compute_fast(&c, n, None).await.status(), 200);
    }
    let health: serde_json::Value = get_json(&format!("{}/health", app.base)).await;
    assert!(
        health["status"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("degraded"),
        "{health}"
    );
    app.child.signal("-TERM");
    let (status, lines) = app.wait_for_exit();
    assert_eq!(status.code(), Some(0));
    let log = lines.join("\n");
    assert!(log.contains("circuit breaker changed state"), "{log}");
    assert!(!log.contains("right-password") && !log.contains("wrong-password"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Decisions the replicas took without Redis.
async fn fallbacks(replicas: &[BinaryApp]) -> f64 {
    let mut total = 0.0;
    for r in replicas {
        let text = get_text(&format!("{}/metrics/prometheus", r.base)).await;
        total += sum_series(&text, "floodgate_rate_limit_decisions_total", |l| {
            l.contains("outcome=\"fallback\"")
        });
    }
    total
}

async fn breaker_state(app: &TestApp) -> f64 {
    let text = app.exposition().await;
    sum_series(&text, "floodgate_circuit_state", |l| l.contains("redis"))
}

/// gRPC `Fast` calls whose deadline (`ms`) passes while Redis does not answer: the server
/// drops each call mid-way through its rate-limit decision.
async fn impatient_grpc_calls(app: &TestApp, n: usize, ms: u64) {
    use floodgate::grpc::pb::compute_service_client::ComputeServiceClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ComputeServiceClient::new(channel);
    for _ in 0..n {
        let mut request = tonic::Request::new(floodgate::grpc::pb::ComputeRequest { number: 3 });
        request.set_timeout(Duration::from_millis(ms));
        let _ = c.fast(request).await;
    }
}

/// Redis frozen, then callers with short deadlines arriving while the breaker is half-open
/// (each one's probe dropped mid-call), then Redis back: the shared limit is in force again
/// within seconds. Before, the first dropped probe left the breaker half-open with its probe
/// "out" for good, and with `redis_fallback=deny` every request was refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_probes_do_not_keep_the_redis_breaker_half_open() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_with(|s| {
        redis_settings(&url)(s);
        s.rate_limit.redis_fallback = floodgate::config::RedisFallback::Deny;
    })
    .await;
    assert_eq!(app.compute("fast", 1).await.status(), 200);
    redis.signal("-STOP");
    let started = Instant::now();
    while breaker_state(&app).await != 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the breaker never opened"
        );
        let _ = app.compute("fast", 1).await;
    }
    // Half-open: the next call is the probe, and every one of these gives up on it.
    let started = Instant::now();
    while breaker_state(&app).await != 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never half-open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    impatient_grpc_calls(&app, 20, 5).await;
    redis.signal("-CONT");
    let back = Instant::now();
    loop {
        let status = app.compute("fast", 1).await.status();
        if status == 200 && breaker_state(&app).await == 0.0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "Redis is back but the breaker stays {} and requests get {status}",
            breaker_state(&app).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `connected_clients` of Redis's `INFO clients`.
async fn connected_clients(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap_or_else(|| panic!("no connected_clients in {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// The Redis connection is made while the service starts, so its first request finds it
/// open instead of paying for the connect within its 50 ms call deadline (and, on a busy
/// machine, falling back: the first request of a test was once a 429 with `Deny`). A Redis
/// frozen at start holds the start up for at most the connection timeout (250 ms), the
/// service comes up and falls back, and uses Redis again once it answers.
#[tokio::test]
async fn the_connection_is_made_at_start_and_a_frozen_redis_does_not_hold_it_up() {
    let _one_at_a_time = exclusive().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let mut own = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(connected_clients(&mut own).await, 1);
    let app = spawn_with(redis_settings(&url)).await;
    assert_eq!(
        connected_clients(&mut own).await,
        2,
        "the service's connection, before any request"
    );
    assert_eq!(app.compute("fast", 1).await.status(), 200);
    drop(app);

    redis.signal("-STOP");
    let started = Instant::now();
    let app = spawn_with(redis_settings(&url)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a frozen Redis held the start up for {took:?}"
    );
    // The local limiter decides meanwhile (`redis_fallback` is `local` by default).
    assert_eq!(app.compute("fast", 1).await.status(), 200);
    redis.signal("-CONT");
    // The start's PING was dropped at its timeout, mid-connect: once Redis answers, the
    // limiter's calls reach it again (its keys appear) and the breaker is closed.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut own).await.unwrap();
    let back = Instant::now();
    loop {
        assert_eq!(app.compute("fast", 1).await.status(), 200);
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut own).await.unwrap();
        if keys > 0 && breaker_state(&app).await == 0.0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "Redis is back but the limiter does not use it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
