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

#[tokio::test]
async fn traces_past_the_cap_are_served_untraced_and_counted() {
    // Every request sampled (the default ratio, 1.0), at most two traces a second, bursts of
    // two; nothing listens at the collector's port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead),
        ("FLOODGATE__OTEL__MAX_TRACES_PER_SECOND", "2"),
    ])
    .await;
    let capped = || async {
        let text = get_text(&format!("{}/metrics/prometheus", app.base)).await;
        sum_series(&text, "floodgate_otel_spans_dropped_total", |l| {
            l.contains("reason=\"rate_limit\"")
        })
    };
    assert_eq!(capped().await, 0.0, "the series is there from the start");
    let c = client();
    let started = Instant::now();
    let mut traced = 0u32;
    for n in 0..60u64 {
        // Half ask for it through the caller's trace context; the cap holds for them too.
        let caller = format!("00-{:032x}-{:016x}-01", n + 1, n + 1);
        let r = app
            .compute_fast(&c, n, (n % 2 == 0).then_some(caller.as_str()))
            .await;
        assert_eq!(
            r.status(),
            200,
            "an untraced request is served all the same"
        );
        traced += u32::from(r.headers().contains_key("traceparent"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, then two a second.
    assert!(traced >= 2, "the first two are traced: {traced}");
    let most = 2.0 + 2.0 * elapsed + 1.0;
    assert!(
        f64::from(traced) <= most,
        "{traced} traced in {elapsed:.2} s"
    );
    assert_eq!(
        capped().await,
        f64::from(60 - traced),
        "each untraced request counted"
    );

    // gRPC calls draw from the same cap: with it spent, they are counted too.
    let before = capped().await;
    let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
        .unwrap()
        .connect()
        .await
        .expect("h2c connects");
    let mut grpc = floodgate::grpc::pb::compute_service_client::ComputeServiceClient::new(channel);
    let started = Instant::now();
    for n in 0..20 {
        grpc.fast(floodgate::grpc::pb::ComputeRequest { number: n })
            .await
            .expect("an untraced call is answered");
    }
    let refilled = 2.0 * started.elapsed().as_secs_f64() + 1.0;
    let counted = capped().await - before;
    assert!(counted >= 20.0 - refilled, "{counted} of 20 RPCs counted");

    // Nothing stays capped: once a token comes back, requests are traced again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = app.compute_fast(&c, 1, None).await;
        if r.headers().contains_key("traceparent") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no request traced again within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
