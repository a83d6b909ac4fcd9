use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn json_metrics_have_exactly_the_documented_keys() {
    let app = spawn_app().await;
    for path in ["/metrics", "/api/v1/stats"] {
        let body: Value = app.get(path).await.json().await.unwrap();
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut expected = vec![
            "total_requests",
            "success_count",
            "error_count",
            "active_requests",
            "rejected_count",
            "success_rate",
            "avg_latency_us",
            "queue_depth",
            "worker_count",
            "goroutines",
            "timestamp",
            "rate_limited_count",
            "overloaded_count",
            "latency_p50_us",
            "latency_p95_us",
            "latency_p99_us",
        ];
        expected.sort();
        assert_eq!(keys, expected);
    }
}

#[tokio::test]
async fn json_counts_agree_with_the_exposition() {
    let app = spawn_app().await;
    for n in 0..30 {
        assert_eq!(app.compute("fast", n).await.status(), 200);
    }
    for n in 0..10 {
        assert_eq!(app.compute("intensive", n).await.status(), 200);
    }
    for _ in 0..7 {
        app.post_json("/api/v1/compute/fast", "{}").await;
    }
    for _ in 0..3 {
        app.get("/no/such/path").await;
    }
    for _ in 0..5 {
        app.get("/health").await;
        app.get("/metrics").await;
    }
    let stats = app.stats().await;
    assert_eq!(stats["total_requests"], 50);
    assert_eq!(stats["success_count"], 40);
    assert_eq!(stats["error_count"], 10);
    assert_eq!(stats["success_rate"], 80.0);
    assert_eq!(stats["active_requests"], 0);
    assert_eq!(stats["worker_count"], 2);
    assert!(stats["avg_latency_us"].as_u64().unwrap() > 0);
    assert!(stats["latency_p99_us"].as_u64().unwrap() >= stats["latency_p50_us"].as_u64().unwrap());

    let text = app.exposition().await;
    let api_total = sum_series(&text, "http_server_request_duration_seconds_count", |l| {
        !l.contains("http_route=\"/health")
    });
    assert_eq!(api_total, 50.0, "{text}");
    // Scrapes are not traffic; health probes are counted under their own route.
    assert!(!text.contains("http_route=\"/metrics"));
    assert_eq!(
        sum_series(&text, "http_server_request_duration_seconds_count", |l| l
            .contains("http_route=\"/health\"")),
        5.0
    );
    assert_eq!(
        sum_series(&text, "http_server_request_duration_seconds_count", |l| !l
            .contains("http_route=\"/health")),
        50.0
    );
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
    assert!(text.contains("le=\"0.00005\""));
}

#[tokio::test]
async fn metrics_negotiates_the_exposition_for_prometheus() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    // What Prometheus asks for first: OpenMetrics, which carries exemplars.
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("floodgate_build_info{"));
    assert!(
        text.contains("# TYPE floodgate_rate_limited counter"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    // The 0.0.4 text format, for a client that asks for it, and on /metrics/prometheus.
    for (path, accept) in [
        ("/metrics", "text/plain;version=0.0.4"),
        ("/metrics/prometheus", "text/plain;version=0.0.4"),
        ("/metrics/prometheus", "*/*"),
    ] {
        let r = app
            .client
            .get(app.url(path))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8",
            "{path} {accept}"
        );
        let text = r.text().await.unwrap();
        assert!(text.contains("# TYPE floodgate_rate_limited_total counter"));
        assert!(!text.contains("# EOF"));
    }
    let r = app
        .client
        .get(app.url("/metrics"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn unmatched_paths_share_one_label() {
    let app = spawn_app().await;
    for i in 0..20 {
        app.get(&format!("/scan/{i}")).await;
    }
    let text = app.exposition().await;
    assert!(!text.contains("/scan/"));
    assert_eq!(
        sum_series(&text, "http_server_request_duration_seconds_count", |l| l
            .contains("http_route=")),
        0.0,
        "an unmatched request has no http_route"
    );
    assert_eq!(
        sum_series(&text, "http_server_request_duration_seconds_count", |l| l
            .contains("http_response_status_code=\"404\"")),
        20.0
    );
}

#[tokio::test]
async fn two_applications_in_one_process_keep_separate_counts() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    for _ in 0..3 {
        a.compute("fast", 1).await;
    }
    assert_eq!(a.stats().await["total_requests"], 3);
    assert_eq!(b.stats().await["total_requests"], 0);
}

#[tokio::test]
async fn the_admin_listener_serves_health_and_metrics_only() {
    let app = spawn_with(|s| s.server.admin_address = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = app.admin.expect("admin listener bound");
    let c = &app.client;
    let text = get_text(&format!("http://{admin}/metrics/prometheus")).await;
    assert!(text.contains("floodgate_build_info"));
    assert_eq!(
        c.get(format!("http://{admin}/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .post(format!("http://{admin}/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .body(r#"{"number":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no API on the admin listener");
    assert_eq!(app.compute("fast", 1).await.status(), 200);
    app.stop().await;
}

/// Log lines the sink could not write are counted, not silently lost; so are spans that found
/// the export buffer full or failed to export (zero here, but present from the start).
#[tokio::test]
async fn lost_log_lines_and_spans_are_counted() {
    let app = spawn_with(|s| {
        s.log.access_log = Some(true);
        s.log.access_log_path = Some("/dev/full".into());
    })
    .await;
    let start = app.exposition().await;
    for reason in ["queue_full", "export_failed"] {
        assert!(
            start.contains(&format!(
                "floodgate_otel_spans_dropped_total{{reason=\"{reason}\"}} 0"
            )),
            "{start}"
        );
    }
    for n in 0..5 {
        assert_eq!(app.compute("fast", n).await.status(), 200);
    }
    let lost = |text: &str| {
        sum_series(text, "floodgate_log_lines_dropped_total", |l| {
            l.contains("sink=\"access_log\"")
        })
    };
    let text = app
        .wait_for_exposition("the failed access-log writes", |t| lost(t) >= 5.0)
        .await;
    assert_eq!(lost(&text), 5.0, "{text}");
}
