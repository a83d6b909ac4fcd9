use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Run the real binary, load it with slow intensive requests, send SIGTERM mid-flight:
/// every accepted request completes, readiness flips, and the process exits 0.
#[tokio::test]
async fn sigterm_during_load_completes_every_in_flight_request() {
    let mut app = spawn_binary(
        &[
            ("ENVIRONMENT", "production"),
            ("WORKER_COUNT", "2"),
            ("INTENSIVE_ROUNDS", "3000000"),
            ("SHUTDOWN_TIMEOUT", "60s"),
            ("LOG_LEVEL", "info"),
        ],
        Stdio::piped(),
    )
    .await;
    let stdout = app.child.0.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let client = client();
    let base = app.base.clone();
    let started = Instant::now();
    let n = 40u64;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/api/v1/compute/intensive");
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(format!("{{\"number\":{i}}}"))
                    .send()
                    .await
                    .expect("accepted requests are answered");
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    // Let every request reach the server before signalling.
    loop {
        let stats: serde_json::Value = client
            .get(format!("{base}/api/v1/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["active_requests"].as_u64() == Some(n) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "requests did not arrive: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = app.child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Readiness turns 503 at once (on an existing connection), then the listener closes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut completed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["result"], (i * i) as u64);
        completed += 1;
    }
    assert_eq!(completed, n);
    let status = app.child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "listener closed"
    );
    let lines = lines.join().unwrap();
    let last = lines
        .iter()
        .rev()
        .find(|l| l.contains("\"stopped\""))
        .expect("final log line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["total_requests"], n, "{last}");
    assert_eq!(v["drained"], true);
    let access = lines
        .iter()
        .filter(|l| l.contains("request completed") && l.contains("/api/v1/compute/intensive"))
        .count();
    assert_eq!(access as u64, n, "one access-log line per request");
}

#[tokio::test]
async fn readiness_is_503_while_draining() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    let app = std::sync::Arc::new(
        spawn_builder(floodgate::Application::builder(settings).with_kernel(sleepy_kernel)).await,
    );
    let state_app = std::sync::Arc::clone(&app);
    let slow = tokio::spawn(async move { state_app.compute("intensive", 500).await.status() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Keep a connection open and ask for readiness after shutdown began.
    let probe_client = client();
    assert_eq!(
        probe_client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let app = std::sync::Arc::try_unwrap(app).ok();
    assert!(app.is_none(), "still shared with the slow request");
    assert_eq!(slow.await.unwrap(), 200);
}
