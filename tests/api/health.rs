use crate::helpers::*;
use floodgate::health::{CheckFuture, HealthCheck};
use floodgate::Application;

#[tokio::test]
async fn health_reports_the_documented_shape() {
    let app = spawn_app().await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"]["worker_pool"], "healthy");
    assert_eq!(body["status"]["database"], "healthy");
    assert!(body["timestamp"].as_u64().unwrap() > 1_600_000_000);
    assert!(body["goroutines"].as_u64().unwrap() >= 1);
    assert_eq!(body["version"], floodgate::VERSION);
}

#[tokio::test]
async fn liveness_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let r = app.get("/health/ready").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

struct Failing;
impl HealthCheck for Failing {
    fn name(&self) -> &str {
        "inventory"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async { Err("connection refused".to_owned()) })
    }
}

#[tokio::test]
async fn a_failing_check_makes_health_and_readiness_503() {
    let app = spawn_builder(Application::builder(test_settings()).with_health_check(Failing)).await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"]["inventory"], "connection refused");
    assert_eq!(body["status"]["worker_pool"], "healthy");
    assert_eq!(app.get("/health/ready").await.status(), 503);
    assert_eq!(app.get("/health/live").await.status(), 200);
}
