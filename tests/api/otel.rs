//! OTLP export that never reaches a collector: one that is down, or one that accepts
//! connections and never answers, changes nothing for requests, and the spans it costs are
//! counted. (A real collector reading the traces is in the services tier, collector.rs.)

use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn requests_are_unaffected_when_the_collector_is_down() {
    // Nothing listens on this port: every export fails.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_binary(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &dead)]).await;
    let c = client();
    let started = Instant::now();
    for n in 0..200u64 {
        let r = app.compute_fast(&c, n, None).await;
        assert_eq!(r.status(), 200);
    }
    let elapsed = started.elapsed();
    // 200 sequential requests on loopback; an exporter on the request path would add seconds.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let dropped = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = get_text(&format!("{}/metrics/prometheus", app.base)).await;
            let n = sum_series(&text, "floodgate_otel_spans_dropped_total", |_| true);
            if n > 0.0 || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(dropped > 0.0, "failed exports are counted");
}

#[tokio::test]
async fn requests_are_unaffected_when_the_collector_hangs() {
    // A collector that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok((c, _)) = listener.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    for protocol in ["grpc", "http/protobuf"] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let app = spawn_binary(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("FLOODGATE__OTEL__MAX_QUEUE_SIZE", "50"),
        ])
        .await;
        let c = client();
        let started = Instant::now();
        for n in 0..200u64 {
            let t = Instant::now();
            let r = app.compute_fast(&c, n, None).await;
            assert_eq!(r.status(), 200);
            assert!(
                t.elapsed() < Duration::from_millis(250),
                "{protocol}: request took {:?}",
                t.elapsed()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{protocol}: {:?}",
            started.elapsed()
        );
        // The export never returns, so at most 50 spans wait for it; the rest are counted.
        let text = get_text(&format!("{}/metrics/prometheus", app.base)).await;
        let full = sum_series(&text, "floodgate_otel_spans_dropped_total", |l| {
            l.contains("reason=\"queue_full\"")
        });
        assert!(full >= 150.0, "{protocol}: {full} spans counted as dropped");
    }
    drop(held);
}
