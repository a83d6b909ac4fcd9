//! The status page: compiled in, served with the operational routes under a strict
//! Content-Security-Policy. (In headless Chromium, live while load is sent: the services
//! tier, browser.rs.)

use std::time::Duration;

use crate::helpers::*;

fn with_admin(s: &mut floodgate::Settings) {
    s.server.admin_address = Some("127.0.0.1:0".parse().unwrap());
    s.server.public_operational_routes = false;
}

#[tokio::test]
async fn the_page_and_its_files_are_served_under_a_policy_that_allows_nothing_inline() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/status", "text/html"),
        ("/status/status.js", "text/javascript"),
        ("/status/status.css", "text/css"),
        ("/status/icon.svg", "image/svg+xml"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
    }
    let html = app.get("/status").await.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    assert!(
        !html.contains("//cdn") && !html.contains("https:"),
        "{html}"
    );
    assert_envelope(app.get("/status/other.js").await, 404, "NOT_FOUND").await;
    // Operational, not traffic: it is not counted in the statistics.
    assert_eq!(app.stats().await["total_requests"], 0);
}

#[tokio::test]
async fn the_page_and_its_stream_are_on_the_admin_listener_when_it_is_separate() {
    let app = spawn_with(with_admin).await;
    assert_envelope(app.get("/status").await, 404, "NOT_FOUND").await;
    assert_envelope(app.get("/status/stream").await, 404, "NOT_FOUND").await;
    let page = app
        .client
        .get(app.admin_url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let url = app
        .admin_url("/status/stream?interval=100ms")
        .replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let message = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut socket),
    )
    .await
    .expect("a message within 10 s")
    .expect("the stream is open")
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    for field in [
        "requests_per_second",
        "busy_workers",
        "queue_capacity",
        "worker_count",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
}
