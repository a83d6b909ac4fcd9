//! The OpenAPI document and the offline reference page. (schemathesis checking the running
//! service against the document is in the services tier, schemathesis.rs.)

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_document_covers_every_route_and_error() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for path in [
        "/api/v1/compute/fast",
        "/api/v1/compute",
        "/api/v1/compute/intensive",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/prometheus",
        "/api/v1/stats",
        "/openapi.json",
        "/docs",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    let fast = &doc["paths"]["/api/v1/compute/fast"]["post"];
    assert_eq!(
        fast["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ComputeRequest"
    );
    let number = &doc["components"]["schemas"]["ComputeRequest"]["properties"]["number"];
    assert_eq!(number["maximum"], 1_000_000);
    assert!(
        fast["responses"].get("401").is_none(),
        "no 401 while authentication is off"
    );
    assert!(fast["responses"]["503"]["headers"]
        .get("Retry-After")
        .is_some());
}

/// The stream operations say they need an upgrade, document the 426 a plain request gets
/// with its headers, and give `interval` a pattern the server holds to.
#[tokio::test]
async fn the_stream_operations_document_the_upgrade_and_the_interval() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/api/v2/stats/stream",
        "/status/stream",
        "/api/v2/jobs/{id}/events",
    ] {
        let op = &doc["paths"][path]["get"];
        let description = op["description"].as_str().unwrap_or_default();
        assert!(
            description.contains("Upgrade: websocket") && description.contains("426"),
            "{path}: {op}"
        );
        let upgrade = &op["responses"]["426"];
        assert!(
            upgrade["description"]
                .as_str()
                .unwrap()
                .contains("UPGRADE_REQUIRED"),
            "{path}: {upgrade}"
        );
        assert_eq!(
            upgrade["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Envelope"
        );
        assert_eq!(
            upgrade["headers"]["Upgrade"]["schema"]["enum"][0],
            "websocket"
        );
        assert_eq!(
            upgrade["headers"]["Connection"]["schema"]["enum"][0],
            "Upgrade"
        );
    }
    for path in ["/api/v2/stats/stream", "/status/stream"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let interval = params.iter().find(|p| p["name"] == "interval").unwrap();
        let pattern = regex::Regex::new(interval["schema"]["pattern"].as_str().unwrap()).unwrap();
        for (raw, documented) in [
            ("100ms", true),
            ("250ms", true),
            ("60000ms", true),
            ("1s", true),
            ("60s", true),
            ("1m", true),
            ("", false),
            ("99ms", false),
            ("0s", false),
            ("61s", false),
            ("2m", false),
            ("soon", false),
        ] {
            assert_eq!(pattern.is_match(raw), documented, "{path}?interval={raw}");
            // Without an upgrade, an interval the server accepts gets 426, another 400.
            let r = app.get(&format!("{path}?interval={raw}")).await;
            let expected = if documented { 426 } else { 400 };
            assert_eq!(r.status(), expected, "{path}?interval={raw}");
        }
    }
}

#[tokio::test]
async fn the_reference_page_is_served_from_the_binary() {
    let app = spawn_app().await;
    for path in ["/docs", "/docs/"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = r.text().await.unwrap();
        assert!(html.contains("<base href=\"/docs/\">"), "{html}");
        assert!(html.contains("swagger-ui-bundle.js"));
    }
    // The page's own files: no CDN involved.
    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status(), 200);
    assert!(init.text().await.unwrap().contains("/openapi.json"));
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    assert_envelope(app.get("/docs/nope.js").await, 404, "NOT_FOUND").await;
}
