//! Live streams over WebSocket (and server-sent events), read by a Rust client that shares
//! no code with the server: the statistics stream's rates follow the load sent, a job's
//! stream follows it to its end, the limits and the shutdown close hold.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, path: &str) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(format!("ws://{}{path}", app.addr))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(response.status(), 101);
    socket
}

/// The next text message as JSON (pings are answered by the client itself).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The close frame's code, reading past any data.
async fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn the_stats_stream_reports_the_rates_of_the_load_sent() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "/api/v2/stats/stream?interval=200ms").await;
    let first = next_json(&mut socket).await;
    for key in [
        "total_requests",
        "success_rate",
        "queue_depth",
        "requests_per_second",
        "interval_latency_p99_us",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    // The interval asked for, or a multiple after a tick the server missed.
    let span = first["interval_ms"].as_u64().unwrap();
    assert!(span >= 200 && span % 200 == 0, "{first}");
    // Load, then a message whose interval saw it.
    let started = Instant::now();
    loop {
        for n in 0..20 {
            assert_eq!(app.compute("fast", n).await.status(), 200);
        }
        let m = next_json(&mut socket).await;
        if m["requests_per_second"].as_f64().unwrap() > 0.0 {
            assert!(m["interval_latency_p50_us"].as_u64().unwrap() > 0, "{m}");
            assert!(m["total_requests"].as_u64().unwrap() >= 20);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rates never moved: {m}"
        );
    }
}

#[tokio::test]
async fn streams_refuse_before_upgrading() {
    let app = spawn_with(|s| s.streams.max_connections = 1).await;
    for bad in ["?interval=50ms", "?interval=61s", "?interval=soon"] {
        let path = format!("/api/v2/stats/stream{bad}");
        let err = tokio_tungstenite::connect_async(format!("ws://{}{path}", app.addr))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("400"), "{bad}: {err}");
    }
    let unknown = uuid::Uuid::now_v7();
    let r = app.get(&format!("/api/v2/jobs/{unknown}/events")).await;
    assert_envelope(r, 404, "NOT_FOUND").await;
    // One stream allowed: the second is refused with 503.
    let _first = connect(&app, "/api/v2/stats/stream").await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/api/v2/stats/stream", app.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn a_job_stream_follows_the_job_to_its_end_then_closes_normally() {
    let app = spawn_app().await;
    let job: Value = app
        .post_json("/api/v2/jobs", r#"{"number": 11, "rounds": 5000000}"#)
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let mut socket = connect(&app, &format!("/api/v2/jobs/{id}/events")).await;
    let mut statuses = Vec::new();
    loop {
        let m = next_json(&mut socket).await;
        statuses.push(m["status"].as_str().unwrap().to_owned());
        if m["status"] == "succeeded" {
            assert_eq!(
                m["digest"],
                floodgate::pool::intensive_digest(11, 5_000_000)
            );
            break;
        }
    }
    assert_eq!(
        close_code(&mut socket).await,
        Some(CloseCode::Normal),
        "{statuses:?}"
    );
    // The same as server-sent events for a client that does not upgrade.
    let body = job_events_as_sse(&app, id).await;
    assert!(body.contains("event: job"), "{body}");
    assert!(body.contains("\"status\":\"succeeded\""), "{body}");
}

/// The header-read and keep-alive deadlines cover waiting for a request, not sending an
/// answer: a server-sent-events stream that stays quiet for longer than both is not cut.
#[tokio::test]
async fn an_event_stream_outlives_the_connection_deadlines() {
    let app = spawn_with(|s| {
        s.server.header_read_timeout = Duration::from_millis(200);
        s.server.keep_alive_timeout = Duration::from_millis(200);
    })
    .await;
    let job: Value = app
        .post_json("/api/v2/jobs", r#"{"number": 12, "rounds": 100000000}"#)
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let started = Instant::now();
    let body = job_events_as_sse(&app, id).await;
    assert!(body.contains("\"status\":\"succeeded\""), "{body}");
    assert!(
        started.elapsed() > Duration::from_millis(400),
        "the job ended in {:?}, too soon to show anything",
        started.elapsed()
    );
}

#[tokio::test]
async fn streams_are_closed_with_1001_at_shutdown() {
    let app = spawn_app().await;
    let mut socket = connect(&app, "/api/v2/stats/stream?interval=100ms").await;
    next_json(&mut socket).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Away));
    assert!(stopping.await.unwrap().drained);
}

/// 1,000 statistics streams on one instance (the real binary): every one receives, the API
/// still answers at once, and the resident memory they cost is reported and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_all_receive_and_do_not_stall_the_api() {
    let _one_at_a_time = exclusive().await;
    let app = spawn_binary(&[]).await;
    let pid = app.child.0.id();
    let c = client();
    assert_eq!(app.compute_fast(&c, 1, None).await.status(), 200);
    let idle = proc_status_kib(pid, "VmRSS:");
    let url = format!(
        "{}/api/v2/stats/stream?interval=500ms",
        app.base.replace("http://", "ws://")
    );
    let sockets = futures_util::future::join_all((0..1000).map(|_| {
        let url = url.clone();
        async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let first = next_json(&mut socket).await;
            assert!(first.get("requests_per_second").is_some(), "{first}");
            socket
        }
    }))
    .await;
    assert_eq!(sockets.len(), 1000);
    let open = sum_series(
        &get_text(&format!("{}/metrics/prometheus", app.base)).await,
        "floodgate_streams_open",
        |l| l.contains("kind=\"stats\""),
    );
    assert_eq!(open, 1000.0);
    // The API is not stalled by them.
    let started = Instant::now();
    for n in 0..50 {
        assert_eq!(app.compute_fast(&c, n, None).await.status(), 200);
    }
    let api = started.elapsed();
    let with_streams = proc_status_kib(pid, "VmRSS:");
    eprintln!(
        "1,000 streams: RSS {idle} KiB idle → {with_streams} KiB (+{} KiB, {:.1} KiB per stream); 50 API requests in {api:?}",
        with_streams.saturating_sub(idle),
        with_streams.saturating_sub(idle) as f64 / 1000.0
    );
    assert!(api < Duration::from_secs(5), "50 requests took {api:?}");
    assert!(
        with_streams < idle + 32 * 1024,
        "1,000 streams took {} KiB",
        with_streams - idle
    );
    drop(sockets);
}

/// With authentication on, a stream is admitted like the API; a browser, which cannot set
/// headers on a WebSocket, passes its key as the protocol `floodgate.bearer.<base64url>`
/// next to `floodgate.v1`, and the server selects `floodgate.v1`, never the credential.
#[tokio::test]
async fn a_browser_passes_its_credential_as_a_websocket_protocol() {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let key = "stream-key";
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex(key)];
    })
    .await;
    let url = format!("ws://{}/api/v2/stats/stream?interval=100ms", app.addr);
    let offer = |credential: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential);
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("floodgate.v1, floodgate.bearer.{encoded}")
                .parse()
                .unwrap(),
        );
        request
    };
    let (mut socket, response) = tokio_tungstenite::connect_async(offer(key)).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "floodgate.v1");
    assert!(next_json(&mut socket).await.get("total_requests").is_some());

    let wrong = tokio_tungstenite::connect_async(offer("wrong"))
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("401"), "{wrong}");
    let none = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    assert!(none.to_string().contains("401"), "{none}");
}

/// The protocol credential is one credential among `X-API-Key` and `Authorization`: sent
/// with either, the upgrade is a 401 whichever is valid (as two credential headers are). It is
/// read on WebSocket upgrades only: elsewhere the header is no credential at all.
#[tokio::test]
async fn the_websocket_protocol_credential_is_one_more_credential_on_upgrades_only() {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let key = "stream-key";
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex(key)];
    })
    .await;
    let protocol = format!(
        "floodgate.v1, floodgate.bearer.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    );
    let url = format!("ws://{}/api/v2/stats/stream?interval=100ms", app.addr);
    let upgrade = |headers: &[(&'static str, String)]| {
        let mut request = url.as_str().into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    for other in [
        ("x-api-key", key.to_owned()),
        ("x-api-key", "wrong".to_owned()),
        ("authorization", format!("Bearer {key}")),
    ] {
        let err = upgrade(&[("sec-websocket-protocol", protocol.clone()), other.clone()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("401"), "{other:?}: {err}");
    }
    // Each alone is admitted.
    for alone in [
        ("sec-websocket-protocol", protocol.clone()),
        ("x-api-key", key.to_owned()),
    ] {
        let (mut socket, _) = upgrade(std::slice::from_ref(&alone))
            .await
            .unwrap_or_else(|e| panic!("{alone:?}: {e}"));
        assert!(next_json(&mut socket).await.get("total_requests").is_some());
    }
    // Not an upgrade: the header carries no credential.
    let r = app
        .client
        .post(app.url("/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .header("sec-websocket-protocol", &protocol)
        .body(r#"{"number": 7}"#)
        .send()
        .await
        .unwrap();
    let env = assert_envelope(r, 401, "UNAUTHORIZED").await;
    assert!(
        env["error"]
            .as_str()
            .unwrap()
            .contains("missing credentials"),
        "{env}"
    );
}

/// Readers that never read while the statistics fall due every 100 ms: the server closes each
/// with 1013 once its queue is full, and its memory grows by the bounded queues, never by
/// what was due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_are_closed_with_1013_and_cost_bounded_memory() {
    const READERS: usize = 1000;
    const DUE_BYTES: f64 = 50e6;
    let _one_at_a_time = exclusive().await;
    let app = spawn_binary(&[]).await;
    let pid = app.child.0.id();
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let url = format!("ws://{addr}/api/v2/stats/stream?interval=100ms");
    // One message, read, for its size.
    let (mut reader, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let message_bytes = next_json(&mut reader).await.to_string().len() as f64;
    drop(reader);
    let idle = proc_status_kib(pid, "VmRSS:");
    // A small receive buffer, so the loopback's kernel buffers do not hide what is due.
    let sockets = futures_util::future::join_all((0..READERS).map(|_| {
        let url = url.clone();
        async move {
            let tcp = tokio::net::TcpSocket::new_v4().unwrap();
            tcp.set_recv_buffer_size(4096).unwrap();
            let stream = tcp.connect(addr).await.unwrap();
            tokio_tungstenite::client_async(url, stream)
                .await
                .unwrap()
                .0
        }
    }))
    .await;
    let connected = proc_status_kib(pid, "VmRSS:");
    let started = Instant::now();
    let slow = || async {
        sum_series(
            &get_text(&format!("{}/metrics/prometheus", app.base)).await,
            "floodgate_stream_slow_consumers_total",
            |l| l.contains("kind=\"stats\""),
        )
    };
    let mut peak = connected;
    let mut first_cut = None;
    loop {
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
        let cut = slow().await as usize;
        if cut > 0 && first_cut.is_none() {
            first_cut = Some(started.elapsed());
        }
        let due = READERS as f64 * message_bytes * started.elapsed().as_secs_f64() / 0.1;
        if cut == READERS && due >= DUE_BYTES {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{cut} of {READERS} cut off after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{READERS} readers that never read, {:.0} MB due over {elapsed:?} (first cut at {first_cut:?}): RSS {idle} KiB idle, {connected} KiB connected, peak {peak} KiB (+{} KiB while due)",
        READERS as f64 * message_bytes * elapsed.as_secs_f64() / 0.1 / 1e6,
        peak - connected
    );
    // Each reader drains on a task of its own, so both of the runtime's threads read: the
    // server gives each close frame `CLOSE_GRACE` (5 s) to get through what is unread, and a
    // single task reading 1,000 backlogs one after another can take longer on a busy machine.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                        Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
                        Ok(Some(Ok(_))) => continue,
                        _ => return None,
                    }
                }
            })
        })
        .collect();
    let mut codes = Vec::with_capacity(READERS);
    for reader in readers {
        codes.push(reader.await.unwrap());
    }
    let again = codes
        .iter()
        .filter(|c| **c == Some(CloseCode::Again))
        .count();
    assert_eq!(again, READERS, "closes seen: {:?}", &codes[..10]);
    // What was due is not held: growth past the connections' own cost is bounded by the
    // queues (streams.send_queue messages each).
    assert!(
        peak < connected + 24 * 1024,
        "{READERS} stuck readers took {} KiB more while messages fell due",
        peak - connected
    );
}

/// A job's events as server-sent events, read to the end of the stream.
async fn job_events_as_sse(app: &TestApp, id: &str) -> String {
    app.client
        .get(app.url(&format!("/api/v2/jobs/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Jobs database calls of `operation` so far.
fn queries(exposition: &str, operation: &str) -> f64 {
    sum_series(
        exposition,
        "floodgate_db_query_duration_seconds_count",
        |l| l.contains(&format!("operation=\"{operation}\"")),
    )
}

/// A job's server-sent events, read up to the first event.
async fn open_sse(client: &reqwest::Client, app: &TestApp, id: &str) -> reqwest::Response {
    let mut response = client
        .get(app.url(&format!("/api/v2/jobs/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains("event: job") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    response
}

/// How long the service takes to read jobs `n` more times.
async fn time_for_gets(app: &TestApp, n: f64) -> Duration {
    let before = queries(&app.exposition().await, "get");
    let started = Instant::now();
    app.wait_for_exposition(&format!("{n} more job reads"), |t| {
        queries(t, "get") >= before + n
    })
    .await;
    started.elapsed()
}

/// Server-sent-event streams whose clients leave while their job stays put: nothing keeps
/// running for them, and the job is no longer read once they are gone.
#[tokio::test]
async fn sse_streams_dropped_by_their_clients_leave_no_task_and_no_query_behind() {
    const STREAMS: usize = 50;
    let (app, _gate, id) = held_job().await;
    let before = floodgate::observability::metrics::live_tasks();
    let c = client();
    let streams =
        futures_util::future::join_all((0..STREAMS).map(|_| open_sse(&c, &app, &id))).await;
    assert!(floodgate::observability::metrics::live_tasks() >= before + STREAMS);
    drop(streams);
    drop(c);
    let started = Instant::now();
    loop {
        let live = floodgate::observability::metrics::live_tasks();
        if live <= before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{live} tasks live 10 s after {STREAMS} streams closed, {before} before them"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let jobs = app.state.jobs.get().unwrap();
    assert_eq!(jobs.watched(), 0, "the job's watcher outlived its streams");
    // The job runner's upkeep reads the database every second: over two of its rounds, no
    // stream's reading of the job goes on.
    let text = app.exposition().await;
    let (gets, tidied) = (queries(&text, "get"), queries(&text, "tidy"));
    let text = app
        .wait_for_exposition("two rounds of upkeep", |t| {
            queries(t, "tidy") >= tidied + 2.0
        })
        .await;
    assert_eq!(queries(&text, "get"), gets, "the job is still being read");
}

/// Twenty streams of one job, over WebSocket and server-sent events, cost the database about
/// what one does: the replica reads the job once per look, for all of them.
#[tokio::test]
async fn streams_of_one_job_share_one_reading_of_it() {
    const READS: f64 = 5.0;
    let (app, _gate, id) = held_job().await;
    let c = client();
    let first = open_sse(&c, &app, &id).await;
    let alone = time_for_gets(&app, READS).await;
    let sse = futures_util::future::join_all((0..10).map(|_| open_sse(&c, &app, &id))).await;
    let ws = futures_util::future::join_all((0..9).map(|_| async {
        let mut socket = connect(&app, &format!("/api/v2/jobs/{id}/events")).await;
        assert_eq!(next_json(&mut socket).await["status"], "running");
        socket
    }))
    .await;
    assert_eq!(app.state.jobs.get().unwrap().watched(), 1);
    let shared = time_for_gets(&app, READS).await;
    assert!(
        shared >= alone / 2,
        "{READS} reads of the job took {alone:?} for one stream, {shared:?} for 20"
    );
    drop((first, sse, ws));
}

/// The status page's stream needs no credential, so it has a limit of its own: anonymous
/// clients that fill it leave the API's streams their places.
#[tokio::test]
async fn status_page_streams_have_a_limit_of_their_own() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let key = "stream-key";
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex(key)];
        s.streams.max_connections = 1;
        s.streams.max_operational_connections = 3;
    })
    .await;
    let mut anonymous = Vec::new();
    for _ in 0..3 {
        anonymous.push(connect(&app, "/status/stream?interval=100ms").await);
    }
    let full = tokio_tungstenite::connect_async(format!("ws://{}/status/stream", app.addr))
        .await
        .unwrap_err();
    assert!(full.to_string().contains("503"), "{full}");
    // An authenticated API stream still opens, and reads.
    let api = || {
        let mut request = format!("ws://{}/api/v2/stats/stream?interval=100ms", app.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
        request
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(api()).await.unwrap();
    assert!(next_json(&mut socket).await.get("total_requests").is_some());
    // The API's limit is its own too.
    let err = tokio_tungstenite::connect_async(api()).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    for socket in &mut anonymous {
        assert!(next_json(socket).await.get("total_requests").is_some());
    }
}

/// A plain `GET` of a stream route is told which protocol to upgrade to (426), after the
/// interval is checked; a request that asks to upgrade with a broken handshake is malformed.
#[tokio::test]
async fn a_plain_get_of_a_stream_route_is_told_to_upgrade() {
    let app = spawn_app().await;
    let job: Value = app
        .post_json("/api/v2/jobs", r#"{"number": 3, "rounds": 1000}"#)
        .await
        .json()
        .await
        .unwrap();
    let events = format!("/api/v2/jobs/{}/events", job["id"].as_str().unwrap());
    for path in [
        "/api/v2/stats/stream",
        "/api/v2/stats/stream?interval=250ms",
        "/status/stream?interval=1m",
        &events,
    ] {
        let r = app.get(path).await;
        assert_eq!(r.headers()["upgrade"], "websocket", "{path}");
        assert!(
            r.headers()["connection"]
                .to_str()
                .unwrap()
                .eq_ignore_ascii_case("upgrade"),
            "{path}: {:?}",
            r.headers()
        );
        assert_envelope(r, 426, "UPGRADE_REQUIRED").await;
    }
    for bad in ["", "0ms", "99ms", "61s", "soon"] {
        let r = app
            .get(&format!("/api/v2/stats/stream?interval={bad}"))
            .await;
        assert_envelope(r, 400, "INVALID_REQUEST").await;
    }
    let keyless = app
        .client
        .get(app.url("/api/v2/stats/stream"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert_envelope(keyless, 400, "INVALID_REQUEST").await;
}

/// The real server frozen (SIGSTOP) for three ping intervals, six times, while a reader
/// that answers every ping follows its statistics: each freeze starts just after a ping, whose
/// answer then waits in the frozen server's socket. On waking the stream goes on: the missed
/// ticks do not fire one after another (the second judging the ping the first just sent),
/// and an answer that arrived is read before the next tick judges it missing (1011).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_frozen_past_its_ping_interval_and_back_keeps_its_streams() {
    use futures_util::SinkExt;
    let app = spawn_binary(&[("FLOODGATE__STREAMS__PING_INTERVAL", "100ms")]).await;
    let url = format!(
        "ws://127.0.0.1:{}/api/v2/stats/stream?interval=100ms",
        app.port
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    async fn frame(socket: &mut Socket) -> Option<Result<Message, impl std::fmt::Debug>> {
        tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
    }
    for freeze in 0..6 {
        // Up to a ping; the server frozen before its answer is sent.
        loop {
            match frame(&mut socket).await {
                Some(Ok(Message::Ping(_))) => break,
                Some(Ok(Message::Text(_) | Message::Pong(_))) => {}
                other => panic!("before freeze {freeze}: {other:?}"),
            }
        }
        app.child.signal("-STOP");
        socket.flush().await.unwrap();
        // The fault itself: the process does not run for this long.
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.child.signal("-CONT");
    }
    // A second of messages after the last: ten ping intervals, every ping answered.
    let mut texts = 0;
    while texts < 10 {
        match frame(&mut socket).await {
            Some(Ok(Message::Text(_))) => texts += 1,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("after {texts} messages since waking: {other:?}"),
        }
    }
}

/// A reader that never answers a ping (a peer gone without a word, a NAT that dropped the
/// flow) is closed with 1011 once an interval has passed without the answer. The client is a
/// bare socket: a WebSocket library would answer pings itself.
#[tokio::test]
async fn a_reader_that_never_answers_a_ping_is_closed_with_1011() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_with(|s| s.streams.ping_interval = Duration::from_millis(100)).await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        b"GET /api/v2/stats/stream?interval=1s HTTP/1.1\r\nHost: floodgate\r\n\
          Upgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Everything the server sends until it closes the connection.
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut bytes))
        .await
        .expect("closed within 10 s")
        .unwrap();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        bytes.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        &bytes[..head_end]
    );
    // The frames (a server's are not masked): opcode and payload.
    let mut frames = Vec::new();
    let mut rest = &bytes[head_end..];
    while rest.len() >= 2 {
        let (opcode, short) = (rest[0] & 0x0f, usize::from(rest[1] & 0x7f));
        let (len, at) = match short {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 => (
                u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n, 2),
        };
        frames.push((opcode, rest[at..at + len].to_vec()));
        rest = &rest[at + len..];
    }
    assert!(rest.is_empty(), "a frame cut short: {rest:?}");
    let pings = frames.iter().filter(|(op, _)| *op == 0x9).count();
    let (op, payload) = frames.last().unwrap();
    assert_eq!(*op, 0x8, "the last frame closes: {frames:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1011);
    assert_eq!(&payload[2..], b"no answer to ping");
    assert_eq!(
        pings, 1,
        "closed at the tick after the unanswered ping: {frames:?}"
    );
}
