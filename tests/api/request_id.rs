use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn a_valid_incoming_id_is_echoed() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .header("x-request-id", "client-chosen_ID.42")
        .body(r#"{"number": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen_ID.42");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], "client-chosen_ID.42");
}

#[tokio::test]
async fn invalid_ids_are_replaced_by_a_uuid() {
    let app = spawn_app().await;
    for bad in [
        "has space".to_owned(),
        "x".repeat(129),
        "tab\tchar".to_owned(),
    ] {
        let r = app
            .client
            .get(app.url("/nope"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["request_id"], id.as_str());
    }
}

#[tokio::test]
async fn every_response_carries_an_id() {
    let app = spawn_app().await;
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/prometheus",
        "/api/v1/stats",
        "/x",
    ] {
        let r = app.get(path).await;
        assert!(r.headers().contains_key("x-request-id"), "{path}");
    }
}
