use std::time::{Duration, Instant};

use crate::helpers::*;

/// Callers at once, so the rate offered stays far above the limit even when a busy machine
/// makes each round trip slow: one caller at a time offers no more than one call per round
/// trip, and at 20 ms or more (a loaded debug build) that is under the 50/s being measured.
const CALLERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_admits_its_configured_rate() {
    // A bucket of a whole second's worth: callers stalled for less than a second (a loaded
    // machine running the whole tier on two cores) find every token that came meanwhile still
    // there, so the count depends on the limiter, not on how evenly the calls were sent. With
    // a bucket of a tenth of a second a clean-clone run read "admitted 99" of at least 100.
    const RATE: f64 = 50.0;
    const BURST: f64 = 50.0;
    let app = std::sync::Arc::new(
        spawn_with(|s| {
            s.rate_limit.requests_per_second = RATE as u32;
            s.rate_limit.burst = BURST as u32;
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
                    let sent = Instant::now();
                    let answer = app.compute("fast", 1).await;
                    answers.push((sent, Instant::now(), answer));
                }
                answers
            })
        })
        .collect();
    let (mut ok, mut limited) = (0u32, 0u32);
    let mut retry_after_seen = false;
    let (mut first_sent, mut first_answered) = (None::<Instant>, None::<Instant>);
    let (mut last_sent, mut last_answered) = (started, started);
    let mut sendings = Vec::new();
    for caller in callers {
        for (sent, answered, r) in caller.await.unwrap() {
            first_sent = Some(first_sent.map_or(sent, |t| t.min(sent)));
            first_answered = Some(first_answered.map_or(answered, |t| t.min(answered)));
            last_sent = last_sent.max(sent);
            last_answered = last_answered.max(answered);
            sendings.push(sent);
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
    // The bucket is full when the first call arrives, and between the first arrival and the
    // last RATE a second come: BURST + RATE × that span were admitted, one either way for the
    // decisions' rounding. The server saw the first call between its sending and its answer,
    // and the last likewise, which bounds the span from both sides.
    let (first_sent, first_answered) = (first_sent.unwrap(), first_answered.unwrap());
    let shortest = last_sent.saturating_duration_since(first_answered);
    let longest = last_answered.duration_since(first_sent);
    let least = (BURST + RATE * shortest.as_secs_f64()).floor() - 1.0;
    let most = (BURST + RATE * longest.as_secs_f64()).ceil() + 1.0;
    // Tokens are lost only when no call comes for longer than the bucket lasts.
    sendings.sort_unstable();
    let longest_pause = sendings.windows(2).map(|w| w[1] - w[0]).max();
    assert!(
        (least..=most).contains(&f64::from(ok)),
        "admitted {ok}, refused {limited}; expected {least}..={most} \
         (the calls spanned {shortest:?} to {longest:?}; longest pause {longest_pause:?})"
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
