//! Live metrics (`--out`) when the output goes wrong during the run: pushes that are refused
//! or never answered are counted and reported once on stderr, the load goes on, and the run
//! still ends on time with the final values pushed. The receiver here is a stub that decodes
//! the remote-write body (the services tier pushes to a real Prometheus and collector).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use floodgate_load::output::remote_write::WriteRequest;

use crate::floodgate_server::spawn_floodgate;
use crate::run::{quick_args, run_load};

/// What the receiver does with each push after the first `accept_first`.
#[derive(Clone, Copy)]
enum Then {
    /// Refuses the next `n` with 503, then accepts again.
    Refuse(u64),
    /// Never answers.
    Hang,
}

struct Receiver {
    accept_first: u64,
    then: Then,
    pushes: AtomicU64,
    /// The `floodgate_load_requests_total` sample of each accepted push.
    accepted: Mutex<Vec<f64>>,
}

async fn write(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let n = r.pushes.fetch_add(1, Ordering::SeqCst);
    if n >= r.accept_first {
        match r.then {
            Then::Refuse(k) if n < r.accept_first + k => return StatusCode::SERVICE_UNAVAILABLE,
            Then::Refuse(_) => {}
            Then::Hang => std::future::pending::<()>().await,
        }
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("snappy");
    let req: WriteRequest = prost::Message::decode(&raw[..]).expect("a WriteRequest");
    let requests = req.timeseries.iter().find(|t| {
        t.labels
            .iter()
            .any(|l| l.name == "__name__" && l.value == "floodgate_load_requests_total")
    });
    if let Some(t) = requests {
        r.accepted.lock().unwrap().push(t.samples[0].value);
    }
    StatusCode::NO_CONTENT
}

/// A receiver at `http://127.0.0.1:PORT/api/v1/write`.
async fn spawn_receiver(accept_first: u64, then: Then) -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver {
        accept_first,
        then,
        pushes: AtomicU64::new(0),
        accepted: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/v1/write", post(write))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "prometheus-rw=http://{}/api/v1/write",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pushes_are_counted_and_the_load_goes_on() {
    let server = spawn_floodgate(|_| {}).await;
    // The probe before the load and the phase's first push are taken; the next two refused.
    let (receiver, out) = spawn_receiver(2, Then::Refuse(2)).await;
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "-s",
                "fast",
                "--rate",
                "200",
                "--duration",
                "3s",
                "-c",
                "8",
                "--out",
                &out,
                "--out-interval",
                "500ms",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["scenarios"][0]["requests"]["total"], 600);
    let live = &report["live_metrics"][0];
    assert_eq!(live["kind"], "prometheus-rw");
    assert_eq!(live["failed"], 2, "{live}");
    assert!(
        live["last_error"]
            .as_str()
            .unwrap()
            .contains("answered 503"),
        "{live}"
    );
    let pushes = receiver.pushes.load(Ordering::SeqCst);
    assert_eq!(live["pushes"], pushes, "every push is counted");
    // 3 s every 500 ms: the first, about five on the ticks, the last.
    assert!(pushes >= 6, "{pushes}");
    assert_eq!(
        run.stderr.matches("live metrics: a push to").count(),
        1,
        "one warning, not one per failure: {}",
        run.stderr
    );
    let accepted = receiver.accepted.lock().unwrap().clone();
    assert_eq!(accepted.first(), Some(&0.0), "{accepted:?}");
    assert_eq!(
        accepted.last(),
        Some(&600.0),
        "the final values: {accepted:?}"
    );
    assert!(accepted.windows(2).all(|w| w[0] <= w[1]), "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_stops_answering_does_not_hold_up_the_run() {
    let server = spawn_floodgate(|_| {}).await;
    // The probe is taken; every push of the phase hangs.
    let (receiver, out) = spawn_receiver(1, Then::Hang).await;
    let started = Instant::now();
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "-s",
                "fast",
                "--rate",
                "100",
                "--duration",
                "2s",
                "-c",
                "4",
                "--out",
                &out,
            ],
        ),
        &[],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["scenarios"][0]["requests"]["total"], 200);
    let live = &report["live_metrics"][0];
    assert!(live["failed"].as_u64().unwrap() >= 2, "{live}");
    assert!(receiver.pushes.load(Ordering::SeqCst) >= 3);
    // 2 s of load, then at most two push timeouts of 1 s (one under way, the last): the
    // hanging output costs no more than that.
    assert!(
        took < Duration::from_millis(2_000 + 2 * 1_000 + 1_500),
        "took {took:?}"
    );
}
