//! Independent clients that share no code with the server: Python's grpcio and k6 over gRPC,
//! Python's websockets and curl on the live streams.

use serde_json::Value;

use crate::helpers::*;
use crate::test_tools::{tool, venv_python};

/// Python's grpcio, grpcio-health-checking and grpcio-reflection discover the service by
/// reflection and call it (tests/clients/grpc_client.py says what it checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_discovers_the_service_by_reflection_and_calls_it() {
    let app = spawn_app().await;
    let rest: serde_json::Value = app.compute("intensive", 42).await.json().await.unwrap();
    let digest = rest["digest"].as_u64().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/grpc_client.py");
    let target = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv_python())
            .args([script, &target, &digest])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the grpcio client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["fast"], 1764, "{seen}");
    assert_eq!(seen["invalid"], "INVALID_ARGUMENT", "{seen}");
}

/// k6's gRPC module, a second independent client, checks results and statuses; the server's
/// own histogram counts exactly the calls it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_calls_the_service_and_the_server_counts_every_call() {
    const ITERATIONS: u32 = 40;
    let app = spawn_app().await;
    let k6 = tool("k6");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/k6_grpc.js");
    let target = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(k6)
            .args(["run", "--quiet", "--no-color", "-e"])
            .arg(format!("TARGET={target}"))
            .arg("-e")
            .arg(format!("ITERATIONS={ITERATIONS}"))
            .arg(script)
            .env("K6_NO_USAGE_REPORT", "true")
            .output()
            .expect("k6 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "k6 failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = app.exposition().await;
    let count = |method: &str, code: &str| {
        sum_series(&text, "rpc_server_call_duration_seconds_count", |l| {
            l.contains(&format!("/{method}\""))
                && l.contains(&format!("rpc_response_status_code=\"{code}\""))
        })
    };
    let n = f64::from(ITERATIONS);
    assert_eq!(count("Fast", "OK"), n, "{text}");
    assert_eq!(count("Fast", "INVALID_ARGUMENT"), n, "{text}");
    assert_eq!(count("Intensive", "OK"), n, "{text}");
    assert_eq!(count("Check", "OK"), n, "{text}");
}

/// An independent client, Python's `websockets`, follows a job to its end and reads the
/// stats stream while it sends load (tests/clients/ws_client.py says what it checks). The job
/// is held running until the client's stream is open, so that the client sees it change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_websocket_client_follows_a_job_and_the_statistics() {
    let (app, gate, job) = held_job().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_client.py");
    let client = tokio::process::Command::new(venv_python())
        .args([script, &app.addr.to_string(), &job])
        .kill_on_drop(true)
        .output();
    let mut client = tokio::spawn(client);
    // The client's stream of the job is open: let the job finish.
    let open = |text: &str| {
        sum_series(text, "floodgate_streams_open", |l| {
            l.contains("kind=\"job\"")
        })
    };
    tokio::select! {
        _ = app.wait_for_exposition("the client's stream of the job open", |t| open(t) >= 1.0) => {}
        out = &mut client => panic!("the client ended before its stream of the job opened: {out:?}"),
    }
    drop(gate);
    let out = client.await.unwrap().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["job"]["close_code"], 1000, "{seen}");
    assert_eq!(seen["job"]["statuses"][0], "running", "{seen}");
    assert!(seen["stats"]["grown"].as_u64().unwrap() >= 100, "{seen}");
}

/// `curl -N`, reading a job's events as server-sent events, follows the job to its end, and
/// the stream ends by itself after the final status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_a_job_stream_to_its_end() {
    let app = spawn_app().await;
    let job: Value = app
        .post_json("/api/v2/jobs", r#"{"number": 11, "rounds": 5000000}"#)
        .await
        .json()
        .await
        .unwrap();
    let url = app.url(&format!(
        "/api/v2/jobs/{}/events",
        job["id"].as_str().unwrap()
    ));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(tool("curl"))
            .args([
                "-N",
                "-sS",
                "--max-time",
                "10",
                "-H",
                "Accept: text/event-stream",
            ])
            .arg(url)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("event: job\ndata: {"), "{shown}");
    assert!(shown.contains("\"status\":\"succeeded\""), "{shown}");
}
