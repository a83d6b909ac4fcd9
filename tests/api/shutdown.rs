use std::time::{Duration, Instant};

use crate::helpers::*;

/// Run the real binary, load it with slow intensive requests, send SIGTERM mid-flight:
/// every accepted request completes, readiness flips, and the process exits 0.
#[tokio::test]
async fn sigterm_during_load_completes_every_in_flight_request() {
    let _one_at_a_time = exclusive().await;
    let mut app = spawn_binary(&[
        ("ENVIRONMENT", "production"),
        ("WORKER_COUNT", "2"),
        ("INTENSIVE_ROUNDS", "3000000"),
        ("SHUTDOWN_TIMEOUT", "60s"),
        ("LOG_LEVEL", "info"),
        ("ADMIN_PORT", "127.0.0.1:0"),
    ])
    .await;
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
    // Let every request reach the server before signalling, with some still in flight.
    loop {
        let stats: serde_json::Value = get_json(&format!("{base}/api/v1/stats")).await;
        let active = stats["active_requests"].as_u64().unwrap_or(0);
        let answered = stats["total_requests"].as_u64().unwrap_or(0);
        if active + answered == n {
            assert!(
                active > 0,
                "every request finished before the signal: {stats}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "requests did not arrive: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.child.signal("-TERM");
    // Readiness turns 503 at once on the admin listener, which stays up while requests drain.
    let ready = format!("http://{}/health/ready", app.admin.expect("admin listener"));
    let signalled = Instant::now();
    loop {
        let status = client.get(&ready).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "readiness never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut completed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["result"], (i * i) as u64);
        completed += 1;
    }
    assert_eq!(completed, n);
    let (status, lines) = app.wait_for_exit();
    assert_eq!(status.code(), Some(0));
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "listener closed"
    );
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
    settings.server.admin_address = Some("127.0.0.1:0".parse().unwrap());
    let app =
        spawn_builder(floodgate::Application::builder(settings).with_kernel(gated_kernel)).await;
    let admin = app.admin.expect("admin listener bound");
    let ready = format!("http://{admin}/health/ready");
    let probe = client();
    assert_eq!(probe.get(&ready).send().await.unwrap().status(), 200);

    // A request in flight keeps the drain going for as long as the gate is held.
    let gate = Gate::hold();
    let (url, number) = (app.url("/api/v1/compute/intensive"), gate.number());
    let slow = tokio::spawn(async move {
        client()
            .post(url)
            .header("content-type", "application/json")
            .body(format!("{{\"number\":{number}}}"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    app.wait_for_busy_workers(1).await;
    let api = app.addr;
    let stopping = tokio::spawn(app.stop());

    // The admin listener stays up while draining and reports not ready; the API listener
    // takes no new connections.
    let started = Instant::now();
    loop {
        let status = probe.get(&ready).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "readiness never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    while tokio::net::TcpStream::connect(api).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "API listener still open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !stopping.is_finished(),
        "stopped before the request finished"
    );

    drop(gate);
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    let summary = stopping.await.unwrap();
    assert!(summary.drained);
    assert_eq!(summary.success_count, summary.total_requests);
}

/// Whether `pid` holds a listening TCP socket (its fds matched against /proc/net/tcp*).
fn has_listener(pid: u32) -> bool {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .any(|f| f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]))
    })
}

/// SIGTERM the moment the port is bound, before start-up has finished: the handler is
/// already installed, so the process drains and exits 0 instead of dying by the signal.
#[tokio::test]
async fn sigterm_right_after_binding_is_a_clean_stop() {
    let mut child = ChildGuard(
        floodgate_command()
            .env("SERVER_PORT", "127.0.0.1:0")
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let started = Instant::now();
    while !has_listener(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never listened"
        );
        std::thread::yield_now();
    }
    child.signal("-TERM");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// SIGHUP, which process managers send to ask for a reload, is handled without TLS too:
/// right after the port is bound, and while serving; the process logs it and keeps serving
/// (before, with no TLS configured, it died of the signal).
#[tokio::test]
async fn sighup_without_tls_is_logged_and_the_service_keeps_serving() {
    let mut child = ChildGuard(
        floodgate_command()
            .env("SERVER_PORT", "127.0.0.1:0")
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let started = Instant::now();
    while !has_listener(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never listened"
        );
        std::thread::yield_now();
    }
    child.signal("-HUP");
    child.signal("-TERM");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGHUP at start: {status:?}");

    let mut app = spawn_binary(&[("LOG_LEVEL", "info")]).await;
    for _ in 0..3 {
        app.child.signal("-HUP");
        let health = client()
            .get(format!("{}/health", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    app.child.signal("-TERM");
    let (status, lines) = app.wait_for_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = lines.join("\n");
    assert!(log.contains("SIGHUP: nothing to reload"), "{log}");
}
