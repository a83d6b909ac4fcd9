//! Overload and abuse: bounded in time, loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

fn vm_hwm_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Memory a burst of connections took is given back once they close: resident memory is
/// within twice the idle figure again inside 10 s, burst after burst.
#[tokio::test]
async fn memory_from_connection_bursts_is_given_back() {
    let _one_at_a_time = exclusive().await;
    let app = spawn_binary(&[]).await;
    let pid = app.child.0.id();
    let c = client();
    assert_eq!(app.compute_fast(&c, 1, None).await.status(), 200);
    let idle = proc_status_kib(pid, "VmRSS:");
    let request = b"POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"number\":7}";
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    for burst in 0..3 {
        // 2,000 connections open at once, each answered, then all closed.
        let conns = futures_util::future::join_all((0..2000).map(|_| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, request)
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "burst {burst}");
            s
        }))
        .await;
        let peak = proc_status_kib(pid, "VmRSS:");
        drop(conns);
        let started = Instant::now();
        loop {
            let now = proc_status_kib(pid, "VmRSS:");
            if now <= 2 * idle {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "burst {burst}: RSS {now} KiB, idle {idle} KiB, peak {peak} KiB"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Intensive requests at many times the pool's capacity: every answer is 200, 429 or 503 in
/// the envelope, nothing hangs or resets, memory stays bounded, health stays fast, and the
/// server's counts equal the client's.
#[tokio::test]
async fn overload_is_refused_fast_and_counted_exactly() {
    let _one_at_a_time = exclusive().await;
    let app = spawn_binary(&[
        ("WORKER_COUNT", "2"),
        ("QUEUE_SIZE", "32"),
        ("INTENSIVE_ROUNDS", "200000"),
        ("RATE_LIMIT", "3000"),
        ("FLOODGATE__RATE_LIMIT__BURST", "100"),
    ])
    .await;
    let base = app.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // 200, 429, 503, other
    let c = client();
    let mut tasks = Vec::new();
    for worker in 0..64u64 {
        let (c, base, stop, counts) = (
            c.clone(),
            base.clone(),
            Arc::clone(&stop),
            Arc::clone(&counts),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(format!("{base}/api/v1/compute/intensive"))
                    .header("content-type", "application/json")
                    .body(format!("{{\"number\":{}}}", n % 1000))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("no resets or hangs");
                let status = r.status().as_u16();
                let body: Value = r.json().await.expect("JSON body");
                let slot = match status {
                    200 => {
                        assert_eq!(body["result"], (n % 1000) * (n % 1000));
                        0
                    }
                    429 => {
                        assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
                        1
                    }
                    503 => {
                        assert_eq!(body["code"], "SERVICE_OVERLOADED");
                        2
                    }
                    _ => 3,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                n += 64;
            }
        }));
    }
    // Health keeps answering quickly throughout.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let probe = client();
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let r = probe.get(format!("{base}/health")).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 200 | 503), "health answers");
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        slowest < Duration::from_millis(100),
        "slowest health answer {slowest:?}"
    );
    let [ok, limited, overloaded, other] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    assert_eq!(other, 0);
    assert!(
        ok > 0 && overloaded > 0,
        "ok {ok}, 429 {limited}, 503 {overloaded}"
    );
    let stats: Value = get_json(&format!("{base}/api/v1/stats")).await;
    assert_eq!(
        stats["total_requests"],
        ok + limited + overloaded,
        "{stats}"
    );
    assert_eq!(stats["success_count"], ok);
    assert_eq!(stats["rate_limited_count"], limited);
    assert_eq!(stats["overloaded_count"], overloaded);
    assert_eq!(stats["active_requests"], 0);
    let peak = vm_hwm_kib(app.child.0.id());
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
}

/// Hundreds of connections dribbling headers do not stop a normal client, and are closed
/// at the header timeout, each counted.
#[tokio::test]
async fn slow_loris_connections_are_cut_off() {
    let _one_at_a_time = exclusive().await;
    let app = spawn_with(|s| s.server.header_read_timeout = Duration::from_millis(800)).await;
    let addr = app.addr;
    let connected = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let connected = Arc::clone(&connected);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                connected.fetch_add(1, Ordering::SeqCst);
                let started = Instant::now();
                for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
                    .iter()
                    .cycle()
                {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    if started.elapsed() > Duration::from_secs(4) {
                        break;
                    }
                }
                // Closed by the server is end-of-file or a reset; a read that times out means
                // the connection was still open.
                let mut buf = [0u8; 256];
                let closed = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(_) => continue,
                        Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
                    }
                };
                (closed, started.elapsed())
            })
        })
        .collect();
    // Time the normal client only once every slow one is connected and dribbling.
    let started = Instant::now();
    while connected.load(Ordering::SeqCst) < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow clients did not connect"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for n in 0..20 {
        let t = Instant::now();
        assert_eq!(app.compute("fast", n).await.status(), 200);
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    for h in slow {
        // Join off the runtime: the server runs on this test's runtime too.
        let (closed, elapsed) = tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap();
        assert!(closed, "slow connection left open");
        assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    }
    app.wait_for_exposition("every slow connection counted", |t| {
        sum_series(t, "floodgate_http_connection_errors_total", |l| {
            l.contains("kind=\"header_timeout\"")
        }) >= 200.0
    })
    .await;
}

/// More clients than the connection limit wait their turn; none fails.
#[tokio::test]
async fn connections_beyond_the_limit_are_queued_not_failed() {
    let app = spawn_with(|s| {
        s.server.max_connections = 4;
        s.server.keep_alive_timeout = Duration::from_millis(100);
    })
    .await;
    let url = app.url("/api/v1/compute/fast");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                // One client (one connection) per task.
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                for n in 0..5 {
                    let r = c
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(format!("{{\"number\":{}}}", i * 10 + n))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(app.stats().await["total_requests"], 80);
}

#[tokio::test]
async fn a_one_mebibyte_body_is_refused() {
    let app = spawn_app().await;
    let body = format!(
        "{{\"number\": 1, \"pad\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    assert_envelope(
        app.post_json("/api/v1/compute/fast", &body).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit() {
    let app = spawn_app().await;
    let addr = app.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let chunk = vec![b' '; 8192];
        for _ in 0..8 {
            if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err() {
                break;
            }
            let _ = s.write_all(&chunk);
            let _ = s.write_all(b"\r\n");
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}

/// A body in several chunks reaches the extractor as several frames: each is kept, in order.
#[tokio::test]
async fn a_body_in_several_chunks_is_read_whole() {
    let app = spawn_app().await;
    let addr = app.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"num\r\n4\r\nber\"\r\n3\r\n: 7\r\n1\r\n}\r\n0\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        let mut buf = vec![0u8; 4096];
        while complete_responses(&reply) == 0 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"result\":49"), "{reply}");
}

#[tokio::test]
async fn random_bytes_on_the_socket_crash_nothing() {
    let app = spawn_app().await;
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..50 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let len = 1 + (round * 97) % 3000;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = s.write_all(&bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            if !sink.is_empty() {
                assert!(
                    sink.starts_with(b"HTTP/1.1 4"),
                    "{}",
                    String::from_utf8_lossy(&sink)
                );
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(app.compute("fast", 9).await.status(), 200);
    assert_eq!(app.get("/health").await.status(), 200);
}
