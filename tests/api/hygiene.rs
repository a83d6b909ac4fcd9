//! HTTP hygiene: security headers on every response, no caching of API answers, no server
//! banner, CORS only when configured, compression of large bodies.

use std::io::Read;

use crate::helpers::*;

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_with(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 1;
    })
    .await;
    let ok = app.compute("fast", 2).await;
    let limited = app.compute("fast", 2).await;
    assert_eq!(limited.status(), 429);
    let invalid = app.post_json("/api/v1/compute/fast", "{").await;
    let missing = app.get("/nope").await;
    let health = app.get("/health").await;
    for r in [&ok, &limited, &invalid, &missing, &health] {
        assert_eq!(
            r.headers()["x-content-type-options"],
            "nosniff",
            "{}",
            r.url()
        );
        assert!(r.headers().get("server").is_none(), "no server banner");
    }
    for r in [&ok, &limited, &invalid] {
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    assert!(health.headers().get("cache-control").is_none());
}

#[tokio::test]
async fn cors_is_off_unless_configured() {
    let app = spawn_app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/compute/fast"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_envelope(r, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_responses_for_allowed_origins() {
    let app = spawn_with(|s| {
        s.cors.allowed_origins = vec!["https://app.example.com".into()];
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("k")];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/compute/fast"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-api-key")
            .send()
    };
    // Preflights are answered before authentication.
    let r = preflight("https://app.example.com").await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("x-api-key") && allowed.contains("content-type"));
    assert_eq!(h["access-control-max-age"], "600");
    let r = preflight("https://evil.example.com").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // A compute request from the allowed origin, with or without the key.
    let from_app = |key: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url("/api/v1/compute/fast"))
            .header("origin", "https://app.example.com")
            .header("content-type", "application/json")
            .body(r#"{"number":3}"#);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.send()
    };
    let r = from_app(Some("k")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    // Errors rendered by the envelope keep the CORS headers, so browsers can read them.
    let r = from_app(None).await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_envelope(r, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn large_bodies_are_compressed_for_clients_that_accept_gzip() {
    let app = spawn_app().await;
    let plain = app.exposition().await;
    let r = app
        .client
        .get(app.url("/metrics/prometheus"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let zipped = r.bytes().await.unwrap();
    assert!(
        zipped.len() * 3 < plain.len(),
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("floodgate_build_info"));
    // Small API answers are not worth it.
    let r = app
        .client
        .post(app.url("/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(r#"{"number":3}"#)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["result"], 9);
}

/// A prefix marked deprecated by configuration: every response under it says so, when it
/// goes away and where to go; nothing else changes.
#[tokio::test]
async fn deprecated_prefixes_carry_deprecation_sunset_and_successor() {
    let app = spawn_with(|s| {
        s.api.deprecations = vec![floodgate::config::DeprecationSettings {
            prefix: "/api/v1".into(),
            since: "2026-12-01T00:00:00Z".into(),
            sunset: Some("2027-06-30T00:00:00Z".into()),
            successor: Some("/api/v2".into()),
        }];
    })
    .await;
    for r in [
        app.compute("fast", 3).await,
        app.post_json("/api/v1/compute/fast", "{}").await,
        app.get("/api/v1/stats").await,
    ] {
        let h = r.headers();
        assert_eq!(h["deprecation"], "@1796083200", "{h:?}");
        assert_eq!(h["sunset"], "Wed, 30 Jun 2027 00:00:00 GMT");
        assert_eq!(h["link"], "</api/v2>; rel=\"successor-version\"");
    }
    for path in ["/api/v2/jobs", "/health", "/api/v1x"] {
        let r = app.get(path).await;
        assert!(r.headers().get("deprecation").is_none(), "{path}");
    }
}
