//! Adaptive admission under overload, against the application on a real socket: the classes
//! are refused lowest first, operational routes never, every refusal is immediate with a
//! `Retry-After`, the counters match what the clients saw, and gRPC and REST draw from the
//! same limit.
//!
//! The real binary is driven past its capacity too, over REST and gRPC at once; the other
//! tests run the application in process, where latency is made by the test, not by the
//! machine: intensive jobs run a kernel that sleeps for `number` milliseconds on the one
//! worker, and a test route in the fast class sleeps for as long as it is asked. A limit moves only when latency crosses `target_delay`, so how fast
//! the machine is changes how long a phase takes, not what it shows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::Extension;
use floodgate::admission::{Class, Peer};
use floodgate::grpc::pb::compute_service_client::ComputeServiceClient;
use floodgate::grpc::pb::ComputeRequest;
use floodgate::http::{RouteSpec, Surface};
use floodgate::Application;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

/// Sleeps `n` milliseconds on its worker: an intensive request whose cost the test chooses.
fn sleeping_kernel(n: u64, _rounds: u32) -> u64 {
    std::thread::sleep(Duration::from_millis(n));
    n
}

#[derive(serde::Deserialize)]
struct Sleep {
    ms: u64,
}

/// `GET /api/test/slow?ms=N`: a call of the fast class that takes N ms (without using a
/// worker or the CPU), so the fast class can be made to queue.
async fn slow(Query(q): Query<Sleep>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    "ok"
}

fn slow_route() -> RouteSpec {
    RouteSpec::new(http::Method::GET, "/api/test/slow", Surface::Api, slow).admitted_as(Class::Fast)
}

/// `GET /api/test/stall?ms=N`: a call of the fast class that holds the runtime's thread for
/// N ms, as a handler doing blocking work would: everything else on the runtime runs late.
async fn stall(Query(q): Query<Sleep>) -> &'static str {
    std::thread::sleep(Duration::from_millis(q.ms));
    "ok"
}

fn stall_route() -> RouteSpec {
    RouteSpec::new(http::Method::GET, "/api/test/stall", Surface::Api, stall)
        .admitted_as(Class::Fast)
}

/// `GET /api/test/pause?ms=N`: pauses the connection it came on for N ms, as a refusal past
/// the refusal budget does, and answers at once.
async fn pause(Query(q): Query<Sleep>, Extension(peer): Extension<Peer>) -> &'static str {
    peer.pause.pause(Duration::from_millis(q.ms));
    "paused"
}

fn pause_route() -> RouteSpec {
    RouteSpec::new(http::Method::GET, "/api/test/pause", Surface::Api, pause)
}

/// One answer as a client saw it.
#[derive(Debug, Clone)]
struct Seen {
    class: &'static str,
    status: u16,
    retry_after: Option<u64>,
    code: Option<String>,
    elapsed: Duration,
    /// When the answer came.
    at: Instant,
}

async fn seen(class: &'static str, started: Instant, r: reqwest::Response) -> Seen {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let code = if status == 200 {
        None
    } else {
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        body["code"].as_str().map(str::to_owned)
    };
    Seen {
        class,
        status,
        retry_after,
        code,
        elapsed: started.elapsed(),
        at: Instant::now(),
    }
}

/// A client that opens a connection per request: a refusal past the refusal budget pauses
/// the connection it came on (tested apart), and these tests check that the refusal itself
/// is answered at once.
fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A client that sends one kind of request after another until `stop`, backing off 5 ms
/// after a refusal, each on a connection of its own ([`unpooled`]); returns every answer it
/// saw.
fn client_loop(
    app: &Arc<TestApp>,
    stop: &Arc<AtomicBool>,
    class: &'static str,
    send: fn(&TestApp) -> reqwest::RequestBuilder,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    let (app, stop) = (Arc::clone(app), Arc::clone(stop));
    tokio::spawn(async move {
        let client = unpooled();
        let mut all = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let request = send(&app).build().expect("a request");
            let r = client.execute(request).await.expect("answered");
            let s = seen(class, started, r).await;
            if s.status == 503 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            all.push(s);
        }
        all
    })
}

fn intensive_20ms(app: &TestApp) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/api/v1/compute/intensive"))
        .header("content-type", "application/json")
        .body(r#"{"number": 20}"#)
}

fn fast(app: &TestApp) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .body(r#"{"number": 7}"#)
}

fn fast_30ms(app: &TestApp) -> reqwest::RequestBuilder {
    app.client.get(app.url("/api/test/slow?ms=30"))
}

fn refusals(exposition: &str, class: &str) -> f64 {
    sum_series(exposition, "floodgate_admission_refusals_total", |l| {
        l.contains(&format!("class=\"{class}\""))
    })
}

/// Waits up to 30 s for `done` on the exposition (a phase under load takes longer than the
/// helpers' usual 10 s on a slow machine).
async fn await_exposition(app: &TestApp, what: &str, done: impl Fn(&str) -> bool) {
    let started = Instant::now();
    loop {
        let text = app.exposition().await;
        if done(&text) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not happen:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn overloadable() -> Arc<TestApp> {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.admission.target_delay = Duration::from_millis(2);
    settings.admission.window = Duration::from_millis(50);
    settings.admission.min_limit = 1;
    Arc::new(
        spawn_builder(
            Application::builder(settings)
                .with_kernel(sleeping_kernel)
                .with_route(slow_route()),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_the_lowest_class_is_refused_first_and_operational_routes_never() {
    let app = overloadable().await;
    let overload = Arc::clone(app.state.overload.as_ref().expect("adaptive limits on"));
    let stop_fast = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    // Phase 1: six clients keep the one worker queued with 20 ms jobs, while fast requests
    // go on. Intensive is refused once its limit has shrunk; fast never is.
    let mut loops: Vec<_> = (0..6)
        .map(|_| client_loop(&app, &stop, "intensive", intensive_20ms))
        .collect();
    let fast_loop = client_loop(&app, &stop_fast, "fast", fast);
    await_exposition(&app, "intensive refused", |t| {
        refusals(t, "intensive") > 0.0
    })
    .await;
    // Well into the overload: the intensive limit has come down to its floor's neighbourhood
    // and job execution is being shed for it.
    let state = overload.state();
    assert!(state[1].limit < 10, "{state:?}");
    assert!(!state[0].shed && !state[1].shed, "{state:?}");
    stop_fast.store(true, Ordering::Relaxed);
    let fast_seen = fast_loop.await.unwrap();
    assert!(!fast_seen.is_empty());
    assert!(
        fast_seen.iter().all(|s| s.status == 200),
        "fast was refused while intensive was overloaded: {:?}",
        fast_seen.iter().find(|s| s.status != 200)
    );

    // Phase 2: the fast class queues too (calls of 30 ms, six at once, against a no-load
    // latency of microseconds). Fast reaches its limit; it is refused only once intensive
    // (and job execution) are shed for it.
    // Which classes were shed (fast, intensive, job execution) when fast was first refused.
    let first_fast_refusal: Arc<Mutex<Option<[bool; 3]>>> = Arc::default();
    for _ in 0..6 {
        let (app, stop, first, overload) = (
            Arc::clone(&app),
            Arc::clone(&stop),
            Arc::clone(&first_fast_refusal),
            Arc::clone(&overload),
        );
        loops.push(tokio::spawn(async move {
            let mut all = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let s = seen("fast", started, fast_30ms(&app).send().await.unwrap()).await;
                if s.status == 503 {
                    let shed = overload.state().map(|c| c.shed);
                    first.lock().unwrap().get_or_insert(shed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                all.push(s);
            }
            all
        }));
    }
    await_exposition(&app, "fast refused, and intensive shed for it", |t| {
        let shed_for_fast = sum_series(t, "floodgate_admission_refusals_total", |l| {
            l.contains("class=\"intensive\"") && l.contains("cause=\"priority\"")
        });
        refusals(t, "fast") > 0.0 && shed_for_fast > 0.0
    })
    .await;
    // Operational routes answer while every API class is being refused.
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/prometheus",
        "/api/v1/stats",
        "/status",
    ] {
        let started = Instant::now();
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = fast_seen;
    for l in loops {
        all.extend(l.await.unwrap());
    }

    // The order: intensive was refused before fast, and when fast was first refused the
    // lower classes were already being shed (fast itself was not).
    let first = |class| {
        all.iter()
            .filter(|s| s.class == class && s.status == 503)
            .map(|s| s.at)
            .min()
    };
    let (first_intensive, first_fast) = (first("intensive").unwrap(), first("fast").unwrap());
    assert!(first_intensive < first_fast);
    let shed = first_fast_refusal.lock().unwrap().unwrap();
    assert_eq!(shed, [false, true, true], "fast, intensive, job execution");

    // Every refusal: 503 SERVICE_OVERLOADED with a Retry-After, answered at once (a 30 ms
    // call or a queue of 20 ms jobs would take longer).
    let refused: Vec<&Seen> = all.iter().filter(|s| s.status != 200).collect();
    assert!(!refused.is_empty());
    for s in &refused {
        assert_eq!(s.status, 503, "{s:?}");
        assert_eq!(s.code.as_deref(), Some("SERVICE_OVERLOADED"), "{s:?}");
        assert!(s.retry_after.is_some_and(|r| r >= 1), "{s:?}");
    }
    let mut waits: Vec<Duration> = refused.iter().map(|s| s.elapsed).collect();
    waits.sort();
    let median = waits[waits.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median refusal {median:?}"
    );

    // The counters say what the clients saw, class by class.
    let text = app.exposition().await;
    for class in ["fast", "intensive"] {
        let client = all
            .iter()
            .filter(|s| s.class == class && s.status == 503)
            .count();
        assert_eq!(refusals(&text, class), client as f64, "{class}");
    }
    let by_cause = |class: &str, cause: &str| {
        sum_series(&text, "floodgate_admission_refusals_total", |l| {
            l.contains(&format!("class=\"{class}\"")) && l.contains(&format!("cause=\"{cause}\""))
        })
    };
    assert!(by_cause("intensive", "limit") > 0.0);
    assert!(by_cause("intensive", "priority") > 0.0, "shed for fast");
    assert!(by_cause("fast", "limit") > 0.0);
    assert_eq!(by_cause("fast", "priority"), 0.0, "nothing is above fast");
    assert_eq!(
        app.stats().await["overloaded_count"],
        refused.len() as u64,
        "the statistics count them as overload refusals"
    );
}

async fn grpc_client(app: &TestApp) -> ComputeServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .expect("h2c connects");
    ComputeServiceClient::new(channel)
}

#[tokio::test]
async fn grpc_and_rest_draw_from_the_same_limit() {
    // One worker and a queue of one: the intensive limit starts at its ceiling, 2, and with
    // a long window it stays there however long the held calls take.
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.pool.queue_size = 1;
    settings.admission.window = Duration::from_secs(10);
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await);
    let intensive_limit = |text: &str| {
        sum_series(text, "floodgate_admission_limit", |l| {
            l.contains("class=\"intensive\"")
        })
    };
    assert_eq!(intensive_limit(&app.exposition().await), 2.0);

    // Two REST calls hold the limit (one running, then one queued: sent together, the second
    // could find the first still in the pool's queue of one): a gRPC call is refused by
    // admission, at once.
    let gate = Gate::hold();
    let hold_rest = || {
        let (app, n) = (Arc::clone(&app), gate.number());
        tokio::spawn(async move { app.compute("intensive", n).await.status() })
    };
    let mut rest = vec![hold_rest()];
    app.wait_for_busy_workers(1).await;
    rest.push(hold_rest());
    app.wait_for_exposition("two in flight", |t| {
        sum_series(t, "floodgate_admission_in_flight", |l| {
            l.contains("class=\"intensive\"")
        }) == 2.0
    })
    .await;
    let started = Instant::now();
    let status = grpc_client(&app)
        .await
        .intensive(ComputeRequest { number: 1 })
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "SERVICE_OVERLOADED"
    );
    assert!(status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .is_some_and(|d| d >= Duration::from_secs(1)));
    assert_eq!(refusals(&app.exposition().await, "intensive"), 1.0);
    drop(gate);
    for r in rest {
        assert_eq!(r.await.unwrap(), 200);
    }

    // And the other way round: two gRPC calls hold it, a REST call is refused.
    let gate = Gate::hold();
    let hold_grpc = || {
        let (app, n) = (Arc::clone(&app), gate.number());
        tokio::spawn(async move {
            grpc_client(&app)
                .await
                .intensive(ComputeRequest { number: n })
                .await
                .map(|r| r.into_inner().result)
        })
    };
    let mut grpc = vec![hold_grpc()];
    app.wait_for_busy_workers(1).await;
    grpc.push(hold_grpc());
    app.wait_for_exposition("two in flight", |t| {
        sum_series(t, "floodgate_admission_in_flight", |l| {
            l.contains("class=\"intensive\"")
        }) == 2.0
    })
    .await;
    let r = app.compute("intensive", 3).await;
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_envelope(r, 503, "SERVICE_OVERLOADED").await;
    assert_eq!(refusals(&app.exposition().await, "intensive"), 2.0);
    drop(gate);
    for r in grpc {
        let n = r.await.unwrap().unwrap();
        assert!(n > 0);
    }
    // The fast class was never touched: its limit is still its ceiling.
    let text = app.exposition().await;
    assert_eq!(refusals(&text, "fast"), 0.0);
}

#[tokio::test]
async fn with_adaptive_limits_off_only_the_fixed_limits_apply() {
    let app = spawn_with(|s| s.admission.adaptive = false).await;
    assert!(app.state.overload.is_none());
    let text = app.exposition().await;
    assert!(!text.contains("floodgate_admission_"), "{text}");
    assert_eq!(app.compute("intensive", 5).await.status(), 200);
}

#[tokio::test]
async fn the_stats_stream_shows_each_class_its_limit_in_flight_and_refusals() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.pool.queue_size = 1;
    settings.admission.window = Duration::from_secs(10);
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await);
    let url = app
        .url("/api/v2/stats/stream?interval=100ms")
        .replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let gate = Gate::hold();
    let hold = || {
        let (app, n) = (Arc::clone(&app), gate.number());
        tokio::spawn(async move { app.compute("intensive", n).await.status() })
    };
    let mut held = vec![hold()];
    app.wait_for_busy_workers(1).await;
    held.push(hold());
    app.wait_for_exposition("two in flight", |t| {
        sum_series(t, "floodgate_admission_in_flight", |l| {
            l.contains("class=\"intensive\"")
        }) == 2.0
    })
    .await;
    // Refused at the limit, one after another, while the stream reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        assert_eq!(app.compute("intensive", 1).await.status(), 503);
        let next = tokio::time::timeout(
            Duration::from_millis(500),
            futures_util::StreamExt::next(&mut socket),
        )
        .await;
        if let Ok(Some(Ok(m))) = next {
            let json: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            let intensive = &json["admission"]["intensive"];
            if intensive["in_flight"] == 2
                && intensive["refused_at_limit_per_second"].as_f64() > Some(0.0)
            {
                break json;
            }
        }
        assert!(Instant::now() < deadline, "no message showed the refusals");
    };
    let admission = &message["admission"];
    assert_eq!(admission["intensive"]["limit"], 2);
    assert_eq!(admission["intensive"]["shed"], false);
    assert_eq!(admission["fast"]["in_flight"], 0);
    assert_eq!(admission["fast"]["refused_at_limit_per_second"], 0.0);
    assert_eq!(
        admission["job_execution"]["shed"], true,
        "shed for intensive"
    );
    assert!(admission["fast"]["limit"].as_u64() > Some(2));
    drop(gate);
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

fn job_execution_shed(text: &str) -> f64 {
    sum_series(text, "floodgate_admission_refusals_total", |l| {
        l.contains("class=\"job_execution\"") && l.contains("cause=\"priority\"")
    })
}

#[tokio::test]
async fn job_execution_yields_while_a_higher_class_is_at_its_limit() {
    // One worker and a queue of one: the intensive limit is its ceiling, 2 (no call
    // completes, so no window closes). A 100 ms window: a class is shed for a second.
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.pool.queue_size = 1;
    settings.admission.window = Duration::from_millis(100);
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await);
    let overload = Arc::clone(app.state.overload.as_ref().expect("adaptive limits on"));
    let gate = Gate::hold();
    let hold = || {
        let (app, n) = (Arc::clone(&app), gate.number());
        tokio::spawn(async move { app.compute("intensive", n).await.status() })
    };
    let mut held = vec![hold()];
    app.wait_for_busy_workers(1).await;
    held.push(hold());
    app.wait_for_exposition("two in flight", |t| {
        sum_series(t, "floodgate_admission_in_flight", |l| {
            l.contains("class=\"intensive\"")
        }) == 2.0
    })
    .await;

    // A call over intensive's limit sheds job execution. It comes before the job: a runner
    // asking before any call is over the limit would be let in (and wait for the full pool).
    let r = app.compute("intensive", 1).await;
    assert_envelope(r, 503, "SERVICE_OVERLOADED").await;
    // A job submitted now is accepted (the submission is not limited) but the runner does
    // not start it; it asks, and is refused.
    let r = app
        .post_json("/api/v2/jobs", r#"{"number": 5, "rounds": 1000}"#)
        .await;
    assert_eq!(r.status(), 202);
    let job: serde_json::Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A call over the limit sheds job execution again whenever its hold has ended, so
        // it stays shed until the runner has asked.
        let r = app.compute("intensive", 1).await;
        assert_envelope(r, 503, "SERVICE_OVERLOADED").await;
        if job_execution_shed(&app.exposition().await) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the runner never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(overload.state()[2].in_flight, 0, "no job started");

    // Once intensive has room again and the shedding is over, the job runs.
    drop(gate);
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = get_json(&app.url(&format!("/api/v2/jobs/{id}"))).await;
        if job["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(overload.state()[2].in_flight, 0, "its place was given back");
}

/// What a client of the real binary saw.
#[derive(Default)]
struct Tally {
    /// Intensive calls answered 200, with their latencies.
    admitted: Vec<Duration>,
    /// Intensive refusals (REST 503 and gRPC UNAVAILABLE), with their latencies.
    refused: Vec<Duration>,
    rest_refused: u64,
    grpc_refused: u64,
    /// Anything else an intensive call got: none is expected.
    other: Vec<String>,
    fast_ok: u64,
    fast_other: Vec<String>,
    operational_ok: u64,
    operational_slow_or_failed: Vec<String>,
}

/// The real binary, one worker and intensive calls of a few milliseconds, driven past its
/// capacity over REST and gRPC at once: intensive calls are refused at once with a
/// `Retry-After` (never a 408 or a wait), fast calls and the operational routes are served
/// throughout, and the binary's counters equal what the clients saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_refuses_intensive_at_once_and_serves_fast_and_operational_routes() {
    let _one_at_a_time = exclusive().await;
    let app = Arc::new(
        spawn_binary(&[
            ("FLOODGATE__POOL__WORKERS", "1"),
            ("FLOODGATE__COMPUTE__INTENSIVE_ROUNDS", "200000"),
            ("FLOODGATE__ADMISSION__TARGET_DELAY", "2ms"),
            ("FLOODGATE__ADMISSION__WINDOW", "50ms"),
            ("FLOODGATE__LOG__ACCESS_LOG", "false"),
        ])
        .await,
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Eight REST clients and four gRPC clients on the intensive endpoint, closed loop, with
    // a short back-off after a refusal: a queue far past target_delay on the one worker.
    for i in 0..8u64 {
        let (app, tally, stop) = (Arc::clone(&app), Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let c = unpooled();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = c
                    .post(format!("{}/api/v1/compute/intensive", app.base))
                    .header("content-type", "application/json")
                    .body(format!("{{\"number\": {}}}", 10 + i))
                    .send()
                    .await
                    .expect("answered");
                let elapsed = started.elapsed();
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                {
                    let mut t = tally.lock().unwrap();
                    match status {
                        200 => t.admitted.push(elapsed),
                        503 if body["code"] == "SERVICE_OVERLOADED"
                            && retry_after.is_some_and(|s| s >= 1) =>
                        {
                            t.refused.push(elapsed);
                            t.rest_refused += 1;
                        }
                        _ => t
                            .other
                            .push(format!("REST {status} {retry_after:?} {body}")),
                    }
                }
                if status == 503 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for i in 0..4u64 {
        let (app, tally, stop) = (Arc::clone(&app), Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
                .unwrap()
                .connect()
                .await
                .expect("h2c connects");
            let mut grpc = ComputeServiceClient::new(channel);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = grpc.intensive(ComputeRequest { number: 20 + i }).await;
                let elapsed = started.elapsed();
                let refused = {
                    let mut t = tally.lock().unwrap();
                    match answer {
                        Ok(_) => {
                            t.admitted.push(elapsed);
                            false
                        }
                        Err(s)
                            if s.code() == Code::Unavailable
                                && s.get_details_error_info()
                                    .is_some_and(|e| e.reason == "SERVICE_OVERLOADED")
                                && s.get_details_retry_info()
                                    .and_then(|r| r.retry_delay)
                                    .is_some_and(|d| d >= Duration::from_secs(1)) =>
                        {
                            t.refused.push(elapsed);
                            t.grpc_refused += 1;
                            true
                        }
                        Err(s) => {
                            t.other.push(format!("gRPC {s:?}"));
                            false
                        }
                    }
                };

                if refused {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    // One fast client and one prober of the operational routes, throughout.
    {
        let (app, tally, stop) = (Arc::clone(&app), Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let r = app.compute_fast(&c, 7, None).await;
                let status = r.status();
                let mut t = tally.lock().unwrap();
                if status == 200 {
                    t.fast_ok += 1;
                } else {
                    t.fast_other.push(status.to_string());
                }
            }
        }));
    }
    {
        let (app, tally, stop) = (Arc::clone(&app), Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let paths = ["/health", "/health/ready", "/metrics/prometheus", "/status"];
            while !stop.load(Ordering::Relaxed) {
                for path in paths {
                    let started = Instant::now();
                    let status = c
                        .get(format!("{}{path}", app.base))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    let elapsed = started.elapsed();
                    let mut t = tally.lock().unwrap();
                    if status.as_ref().is_ok_and(|s| *s == 200) && elapsed < Duration::from_secs(1)
                    {
                        t.operational_ok += 1;
                    } else {
                        t.operational_slow_or_failed
                            .push(format!("{path}: {status:?} in {elapsed:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Until both transports have been refused a few times (at least 2 s, at most 30 s).
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (rest, grpc) = {
            let t = tally.lock().unwrap();
            (t.rest_refused, t.grpc_refused)
        };
        if rest >= 20 && grpc >= 5 && started.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not overloaded in 30 s: {rest} REST and {grpc} gRPC refusals"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(t.other.is_empty(), "{:?}", &t.other[..t.other.len().min(5)]);
    assert!(
        t.fast_other.is_empty() && t.fast_ok > 0,
        "fast refused: {:?}",
        t.fast_other
    );
    assert!(
        t.operational_slow_or_failed.is_empty() && t.operational_ok > 0,
        "{:?}",
        t.operational_slow_or_failed
    );
    assert!(!t.admitted.is_empty(), "capacity is served");
    // Refused at once: no wait in a queue (the admitted calls queue for the worker).
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    assert!(
        median(&t.refused) < Duration::from_millis(50),
        "median refusal {:?}",
        median(&t.refused)
    );

    // The binary counted what the clients saw: every refusal of either transport against
    // the one intensive limit, none of fast.
    let text = get_text(&format!("{}/metrics/prometheus", app.base)).await;
    assert_eq!(
        refusals(&text, "intensive"),
        (t.rest_refused + t.grpc_refused) as f64,
        "REST {} + gRPC {}",
        t.rest_refused,
        t.grpc_refused
    );
    assert_eq!(refusals(&text, "fast"), 0.0);
    // Refusals past the budget are counted apart, per class, and are refusals too.
    let paused = |class: &str| {
        assert!(
            text.contains(&format!(
                "floodgate_admission_paused_connections_total{{class=\"{class}\"}}"
            )),
            "{class}: no series"
        );
        sum_series(&text, "floodgate_admission_paused_connections_total", |l| {
            l.contains(&format!("class=\"{class}\""))
        })
    };
    assert!(paused("intensive") <= refusals(&text, "intensive"));
    assert_eq!(paused("fast"), 0.0);
    let stats = get_json(&format!("{}/api/v1/stats", app.base)).await;
    assert_eq!(
        stats["overloaded_count"],
        t.rest_refused + t.grpc_refused,
        "{stats}"
    );
    assert_eq!(
        sum_series(&text, "floodgate_admission_in_flight", |l| l
            .contains("class=\"intensive\"")),
        0.0
    );
}

/// Reads one response with a `Content-Length` body from `s` into text.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("content-length");
            if out.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

/// A connection that `/api/test/pause` paused for `pause`, its next request (`GET
/// /health`: an operational one, which admission never refuses) already sent; and when the
/// pause was asked for.
async fn paused_connection(app: &TestApp, pause: Duration) -> (tokio::net::TcpStream, Instant) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let before = Instant::now();
    let ask = format!(
        "GET /api/test/pause?ms={} HTTP/1.1\r\nHost: t\r\n\r\n",
        pause.as_millis()
    );
    s.write_all(ask.as_bytes()).await.unwrap();
    let first = read_response(&mut s).await;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("paused"),
        "{first}"
    );
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    (s, before)
}

/// The transport's side of the refusal budget: a connection a refusal paused reads nothing
/// until the pause ends (its next request waits in the socket, whatever it asks for), while
/// every other connection is served meanwhile.
#[tokio::test]
async fn a_paused_connection_reads_nothing_until_its_pause_ends_and_others_are_served() {
    let app = spawn_builder(Application::builder(test_settings()).with_route(pause_route())).await;
    let pause = Duration::from_secs(2);
    let (mut paused, before) = paused_connection(&app, pause).await;
    let waiting = tokio::spawn(async move {
        let text = read_response(&mut paused).await;
        (text, before.elapsed())
    });
    // Another connection is answered while the paused one still waits.
    assert_eq!(app.get("/health").await.status(), 200);
    assert!(
        !waiting.is_finished(),
        "answered on the paused connection before another connection's request"
    );
    let (second, waited) = waiting.await.unwrap();
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        waited >= pause,
        "answered after {waited:?}, paused for {pause:?}"
    );
}

/// A pause is the service's choice, so it counts neither as a client slow to send its head
/// nor as an idle connection: with both timeouts far shorter than the pause, the request
/// that waited in the socket is answered once the pause ends, not cut off.
#[tokio::test]
async fn a_paused_connection_is_not_closed_by_the_header_or_idle_timeouts() {
    let mut settings = test_settings();
    settings.server.header_read_timeout = Duration::from_millis(100);
    settings.server.keep_alive_timeout = Duration::from_millis(100);
    let app = spawn_builder(Application::builder(settings).with_route(pause_route())).await;
    let (mut paused, before) = paused_connection(&app, Duration::from_secs(1)).await;
    let second = read_response(&mut paused).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(before.elapsed() >= Duration::from_secs(1), "not paused");
}

/// Stopping the service does not wait out a pause: a paused connection with nothing in
/// progress is closed by the drain's idle check, the request in its socket left unread (the
/// service never saw it, so the client may send it elsewhere), and the drain is complete.
#[tokio::test]
async fn a_paused_connection_does_not_hold_the_drain() {
    use tokio::io::AsyncReadExt;
    let app = spawn_builder(Application::builder(test_settings()).with_route(pause_route())).await;
    let (mut paused, _) = paused_connection(&app, Duration::from_secs(60)).await;
    let started = Instant::now();
    let summary = app.stop().await;
    assert!(summary.drained, "nothing was in flight");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the drain took {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), paused.read(&mut buf))
        .await
        .expect("closed, not left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "answered: {:?}", String::from_utf8_lossy(&buf[..n]));
}

/// The application on this test's one thread, with one worker whose intensive calls sleep,
/// the stalling fast route, and `admission.runtime_delay` as given; one intensive call of
/// 6 s in flight (longer than the stalls below take on a loaded machine).
async fn stalled_runtime(runtime_delay: Duration) -> (TestApp, tokio::task::JoinHandle<u16>) {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.admission.runtime_delay = runtime_delay;
    // Windows long enough for the five fast calls one needs, however slowly a loaded
    // machine runs this test's calls.
    settings.admission.window = Duration::from_millis(500);
    let app = spawn_builder(
        Application::builder(settings)
            .with_kernel(sleeping_kernel)
            .with_route(stall_route()),
    )
    .await;
    let long = intensive_ms(&app, 6000);
    let long = tokio::spawn(async move { long.send().await.unwrap().status().as_u16() });
    let overload = Arc::clone(app.state.overload.as_ref().unwrap());
    let started = Instant::now();
    while overload.state()[1].in_flight == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the intensive call never came"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (app, long)
}

fn intensive_ms(app: &TestApp, ms: u64) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/api/v1/compute/intensive"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"number": {ms}}}"#))
}

async fn stall_12ms(app: &TestApp) {
    let r = app
        .client
        .get(app.url("/api/test/stall?ms=12"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a fast call was refused");
}

/// Fast calls that each hold the runtime for 12 ms, with an intensive call in flight: the
/// runtime runs its timer late, and intensive is shed for the fast calls (cause
/// `priority`), while the call already admitted is served. With `runtime_delay = 0s`, the
/// same stalls shed nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_runtime_running_late_under_fast_calls_sheds_the_busy_lower_class_for_them() {
    let (app, long) = stalled_runtime(Duration::from_millis(5)).await;
    let overload = Arc::clone(app.state.overload.as_ref().unwrap());
    let started = Instant::now();
    while !overload.state()[1].shed {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "intensive was not shed: {:?}",
            overload.state()
        );
        stall_12ms(&app).await;
    }
    let s = overload.state();
    assert!(!s[0].shed && s[1].shed, "{s:?}");
    let r = intensive_ms(&app, 1).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_envelope(r, 503, "SERVICE_OVERLOADED").await;
    assert_eq!(
        long.await.unwrap(),
        200,
        "the call admitted before is served"
    );
    let text = app.exposition().await;
    let by_cause = |cause: &str| {
        sum_series(&text, "floodgate_admission_refusals_total", |l| {
            l.contains("class=\"intensive\"") && l.contains(&format!("cause=\"{cause}\""))
        })
    };
    assert_eq!((by_cause("priority"), by_cause("limit")), (1.0, 0.0));
    assert!(
        text.contains("floodgate_admission_runtime_delay_seconds "),
        "{text}"
    );

    // Off: the same stalls, as many windows' worth, shed nothing.
    let (app, long) = stalled_runtime(Duration::ZERO).await;
    let overload = Arc::clone(app.state.overload.as_ref().unwrap());
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        stall_12ms(&app).await;
    }
    let s = overload.state();
    assert!(s[1].in_flight == 1 && s.iter().all(|c| !c.shed), "{s:?}");
    long.abort();
}
