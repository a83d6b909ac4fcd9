//! Defects an adversarial probe found, each pinned by a test that failed before its fix:
//! framing the service must refuse, refusals that leave a body unread, half-sent heads at
//! shutdown, parser errors that went uncounted, throttled credential guessing, duplicate
//! credentials, numbers that only look whole, and queue slots held by abandoned jobs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Send `parts` as separate TCP segments, then read until the server closes the connection
/// or goes quiet for a second; the response text and whether the server closed.
async fn raw(addr: SocketAddr, parts: &[&[u8]]) -> (String, bool) {
    let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        for part in parts {
            s.write_all(&part).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = Vec::new();
        let closed = read_until_closed(&mut s, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), closed)
    })
    .await
    .unwrap()
}

/// Send `whole` requests one by one and then `head`, wait until the server has answered
/// every one of them — so `head` was refused before any of its body existed, however late a
/// loaded machine read it — then send `body`, and read until the server closes the connection
/// or goes quiet for a second; the responses and whether the server closed.
async fn answered_before_body(
    addr: SocketAddr,
    whole: &[&[u8]],
    head: &[u8],
    body: &[u8],
) -> (String, bool) {
    let mut parts: Vec<Vec<u8>> = whole.iter().map(|p| p.to_vec()).collect();
    parts.push(head.to_vec());
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for (i, part) in parts.iter().enumerate() {
            s.write_all(part).unwrap();
            while complete_responses(&out) <= i {
                let n = s.read(&mut buf).expect("an answer within 5 s");
                assert!(n > 0, "closed before answering request {}", i + 1);
                out.extend_from_slice(&buf[..n]);
            }
        }
        // The connection may be closed already: a write into it is not the test's concern.
        let _ = s.write_all(&body);
        let closed = read_until_closed(&mut s, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), closed)
    })
    .await
    .unwrap()
}

/// Reads into `out` until the server closes the connection or goes quiet for a second;
/// whether it closed (a reset counts).
fn read_until_closed(s: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// One HTTP/1.1 answer in a connection's transcript.
struct Answer<'a> {
    status: &'a str,
    /// It announces `Connection: close`.
    closes: bool,
    text: &'a str,
}

/// The answers in a connection's transcript, in order.
fn answers(response: &str) -> Vec<Answer<'_>> {
    response
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|text| Answer {
            status: &text[..3],
            closes: text.to_ascii_lowercase().contains("connection: close"),
            text,
        })
        .collect()
}

/// The answers of a connection that [`answered_before_body`] drove, checked: their statuses
/// and which of them announce the close, and that the server closed the connection after the
/// refusal that left a body unread.
fn answered<'a>(
    response: &'a str,
    closed: bool,
    statuses: &[&str],
    closes: &[bool],
) -> Vec<Answer<'a>> {
    let answers = answers(response);
    let seen: Vec<&str> = answers.iter().map(|a| a.status).collect();
    assert_eq!(seen, statuses, "{response}");
    let announced: Vec<bool> = answers.iter().map(|a| a.closes).collect();
    assert_eq!(announced, closes, "{response}");
    assert!(
        closed,
        "the server closes after the refusal that left a body unread"
    );
    answers
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// D11: RFC 9112 framing: exactly one Host, only `chunked`, no content-coded bodies.
#[tokio::test]
async fn framing_the_service_would_have_to_guess_at_is_refused() {
    let app = spawn_app().await;
    let post = |extra: &str| {
        format!(
            "POST /api/v1/compute/fast HTTP/1.1\r\n{extra}Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"number\":7}}"
        )
    };
    for (request, status, code) in [
        (post(""), 400, "INVALID_REQUEST"),
        (post("Host: a\r\nHost: b\r\n"), 400, "INVALID_REQUEST"),
        (post("Host: x\r\nContent-Encoding: gzip\r\n"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            "POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\nc\r\n{\"number\":7}\r\n0\r\n\r\n".to_owned(),
            400,
            "INVALID_REQUEST",
        ),
    ] {
        let (response, _) = raw(app.addr, &[request.as_bytes()]).await;
        assert_eq!(status_of(&response), status, "{request:?} → {response}");
        assert!(response.contains(code), "{response}");
        assert!(response.to_ascii_lowercase().contains("x-request-id"), "{response}");
    }
    let (ok, _) = raw(app.addr, &[post("Host: x\r\n").as_bytes()]).await;
    assert_eq!(status_of(&ok), 200, "{ok}");
}

/// D1: a refusal sent before the body was read announces that the connection closes, so a
/// client that sends its body in a second segment (Python's http.client) does not write
/// its next request into a closed socket.
#[tokio::test]
async fn refusals_that_leave_the_body_unread_announce_the_close() {
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("right")];
    })
    .await;
    let head = b"POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n";
    let (response, closed) = answered_before_body(app.addr, &[], head, b"{\"number\":7}").await;
    assert_eq!(status_of(&response), 401, "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(closed, "the server closes as announced");
    // A body that was read keeps the connection open for the next request.
    let ok = b"POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nX-API-Key: right\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n";
    let (response, _) = raw(app.addr, &[ok, b"{\"number\":7}"]).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(!response.to_ascii_lowercase().contains("connection: close"));
}

/// A refusal whose request came whole (head and body in one segment, as most clients send a
/// small POST) takes the body and keeps the connection: a rate-limited or unauthenticated
/// client does not pay a new connection for every refusal, nor the service for accepting it.
/// The same refusal while the body is still on its way announces the close, as above.
#[tokio::test]
async fn refusals_of_whole_requests_keep_the_connection() {
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("right")];
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 1;
    })
    .await;
    let whole = |key: &str| {
        format!(
            "POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"number\":7}}"
        )
    };
    let (wrong, right) = (whole("wrong"), whole("right"));
    let head = right.strip_suffix("{\"number\":7}").unwrap();
    let (response, closed) = answered_before_body(
        app.addr,
        &[wrong.as_bytes(), right.as_bytes(), right.as_bytes()],
        head.as_bytes(),
        b"{\"number\":7}",
    )
    .await;
    answered(
        &response,
        closed,
        &["401", "200", "429", "429"],
        &[false, false, false, true],
    );
    let stats = app.stats().await;
    assert_eq!(stats["rate_limited_count"], 2);
}

/// A wrong path or method is refused the same way: a request that came whole keeps its
/// connection (a client probing routes, or one misconfigured, does not reconnect for every
/// 404 and 405), one whose body is still on its way is answered with the close announced.
#[tokio::test]
async fn wrong_routes_with_whole_bodies_keep_the_connection() {
    let app = spawn_app().await;
    let whole = |method_path: &str| {
        format!(
            "{method_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"number\":7}}"
        )
    };
    let missing = whole("POST /api/v1/compute/nothing");
    let wrong_method = whole("PUT /api/v1/compute/fast");
    let right = whole("POST /api/v1/compute/fast");
    let head = missing.strip_suffix("{\"number\":7}").unwrap();
    let (response, closed) = answered_before_body(
        app.addr,
        &[
            missing.as_bytes(),
            wrong_method.as_bytes(),
            right.as_bytes(),
        ],
        head.as_bytes(),
        b"{\"number\":7}",
    )
    .await;
    let answers = answered(
        &response,
        closed,
        &["404", "405", "200", "404"],
        &[false, false, false, true],
    );
    assert!(answers[1].text.contains("METHOD_NOT_ALLOWED"), "{response}");
}

/// D4: a connection that has sent half a request head does not hold the shutdown until
/// the header-read timeout.
#[tokio::test]
async fn a_half_sent_head_does_not_hold_the_drain() {
    let app = spawn_with(|s| {
        s.server.header_read_timeout = Duration::from_secs(10);
        s.server.shutdown_timeout = Duration::from_secs(5);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // The server has the bytes once an idle request on another connection is answered.
    assert_eq!(app.get("/health/live").await.status(), 200);
    let started = Instant::now();
    let summary = app.stop().await;
    assert!(summary.drained, "nothing was in flight");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drain took {:?}",
        started.elapsed()
    );
}

/// D12: errors hyper answers itself (a malformed or oversized head) are counted.
#[tokio::test]
async fn parser_errors_are_counted() {
    let app = spawn_app().await;
    let (bad, _) = raw(
        app.addr,
        &[b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n"],
    )
    .await;
    assert_eq!(status_of(&bad), 400, "{bad}");
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (large, _) = raw(app.addr, &[big.as_bytes()]).await;
    assert_eq!(status_of(&large), 431, "{large}");
    let errors = |text: &str, kind: &str| {
        sum_series(text, "floodgate_http_connection_errors_total", |l| {
            l.contains(&format!("kind=\"{kind}\""))
        })
    };
    let text = app
        .wait_for_exposition("both parser errors", |t| {
            errors(t, "malformed") >= 1.0 && errors(t, "too_large") >= 1.0
        })
        .await;
    assert_eq!(errors(&text, "malformed"), 1.0, "{text}");
    assert_eq!(errors(&text, "too_large"), 1.0, "{text}");
}

/// D7: failed authentications are throttled per address; a valid caller elsewhere is not.
#[tokio::test]
async fn guessing_credentials_gets_slow() {
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("right")];
        s.auth.failed_attempts_burst = 5;
        s.auth.failed_attempts_per_minute = 60;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let attempt = |from: &'static str, key: &'static str| {
        app.client
            .post(app.url("/api/v1/compute/fast"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", from)
            .header("x-api-key", key)
            .body(r#"{"number":7}"#)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            attempt("192.0.2.1", "guess")
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let throttled = attempt("192.0.2.1", "right").await.unwrap();
    assert_eq!(
        throttled.status(),
        429,
        "not even a right key is checked while throttled"
    );
    assert!(throttled.headers().contains_key("retry-after"));
    assert_eq!(attempt("192.0.2.2", "right").await.unwrap().status(), 200);
    assert_eq!(app.stats().await["rate_limited_count"], 26);
}

/// D9: two credential headers are refused, whichever copy is valid.
#[tokio::test]
async fn duplicate_credential_headers_are_refused() {
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex("right")];
    })
    .await;
    for (name, good) in [("x-api-key", "right"), ("authorization", "Bearer right")] {
        for pair in [[good, "wrong"], ["wrong", good], [good, good]] {
            let mut headers = reqwest::header::HeaderMap::new();
            for v in pair {
                headers.append(
                    reqwest::header::HeaderName::from_static(name),
                    v.parse().unwrap(),
                );
            }
            let r = app
                .client
                .post(app.url("/api/v1/compute/fast"))
                .header("content-type", "application/json")
                .headers(headers)
                .body(r#"{"number":7}"#)
                .send()
                .await
                .unwrap();
            assert_envelope(r, 401, "UNAUTHORIZED").await;
        }
    }
}

/// D10: the exact decimal value decides whether a number is whole.
#[tokio::test]
async fn numbers_that_only_round_to_whole_are_refused() {
    let app = spawn_app().await;
    for body in [
        r#"{"number": 42.000000000000001}"#,
        r#"{"number": 1000000.0000000001}"#,
        r#"{"number": 1e-400}"#,
    ] {
        let r = app.post_json("/api/v1/compute/fast", body).await;
        assert_envelope(r, 400, "INVALID_REQUEST").await;
    }
    let r = app
        .post_json("/api/v1/compute/fast", r#"{"number": 4.2e1}"#)
        .await;
    assert_eq!(r.status(), 200);
}

/// D3: the drain is measured, not assumed: a request stuck mid-body when the shutdown
/// timeout runs out is reported as not drained.
#[tokio::test]
async fn a_request_stuck_mid_body_is_reported_as_not_drained() {
    let app = spawn_with(|s| s.server.shutdown_timeout = Duration::from_millis(300)).await;
    let s = app.request_stuck_mid_body().await;
    let summary = app.stop().await;
    assert!(!summary.drained, "a request was still waiting for its body");
    drop(s);
}
