use std::time::{Duration, Instant};

use crate::helpers::*;

/// Callers at once, so the rate offered stays far above the limit even when a busy machine
/// makes each round trip slow: one caller at a time offers no more than one call per round
/// trip, and at 20 ms or more (a loaded debug build) that is under the 50/s being measured.
const CALLERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_admits_its_configured_rate() {
    let app = std::sync::Arc::new(
        spawn_with(|s| {
            s.rate_limit.requests_per_second = 50;
            s.rate_limit.burst = 5;
        })
        .await,
    );
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while started.elapsed() < Duration::from_secs(2) {
                    answers.push(app.compute("fast", 1).await);
                }
                answers
            })
        })
        .collect();
    let (mut ok, mut limited) = (0u32, 0u32);
    let mut retry_after_seen = false;
    for caller in callers {
        for r in caller.await.unwrap() {
            match r.status().as_u16() {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    if !retry_after_seen {
                        let secs: u64 = r.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!(secs >= 1);
                        assert_envelope(r, 429, "RATE_LIMIT_EXCEEDED").await;
                        retry_after_seen = true;
                    }
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
    // 50/s for 2 s, plus the initial burst of 5; allow a little for timing at the edges.
    assert!(
        (100..=108).contains(&ok),
        "admitted {ok}, refused {limited}"
    );
    assert!(limited > 0 && retry_after_seen);
    // Operational endpoints are never limited.
    for _ in 0..20 {
        assert_eq!(app.get("/health").await.status(), 200);
        assert_eq!(app.get("/metrics").await.status(), 200);
    }
    let stats = app.stats().await;
    assert_eq!(stats["rate_limited_count"], limited);
    assert_eq!(stats["rejected_count"], limited);
    assert_eq!(stats["overloaded_count"], 0);
    let text = app.exposition().await;
    assert_eq!(
        sum_series(&text, "floodgate_rate_limited_total", |_| true),
        f64::from(limited)
    );
}

#[tokio::test]
async fn the_limiter_can_be_turned_off() {
    let app = spawn_with(|s| {
        s.rate_limit.enabled = false;
        s.rate_limit.requests_per_second = 1;
    })
    .await;
    for _ in 0..20 {
        assert_eq!(app.compute("fast", 1).await.status(), 200);
    }
}

#[tokio::test]
async fn per_client_buckets_key_on_forwarded_for_only_from_trusted_proxies() {
    let app = spawn_with(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 3;
        s.rate_limit.per_client = true;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let send = |client_ip: &'static str| {
        app.client
            .post(app.url("/api/v1/compute/fast"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", client_ip)
            .body(r#"{"number": 1}"#)
            .send()
    };
    // Each forwarded client has its own bucket of 3.
    for ip in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..3 {
            assert_eq!(send(ip).await.unwrap().status(), 200, "{ip}");
        }
        assert_eq!(send(ip).await.unwrap().status(), 429, "{ip}");
    }
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_with(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 3;
        s.rate_limit.per_client = true;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = app
            .client
            .post(app.url("/api/v1/compute/fast"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .body(r#"{"number": 1}"#)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    // A client cannot pick a fresh bucket by forging the header.
    assert_eq!(statuses, [200, 200, 200, 429]);
}
