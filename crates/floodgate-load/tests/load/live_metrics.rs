//! Live metrics (`--out`) when the output goes wrong during the run: pushes that are refused
//! or never answered are counted and reported once on stderr, the load goes on, and the run
//! still ends on time with the final values pushed; an `https://` output is checked against
//! `--cacert` and presented `--cert` before any load. The receivers here are stubs (the
//! services tier pushes to a real Prometheus and collector).

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
                // The run's own length is the load and the pushes: reading the server's
                // counters afterwards waits for them to settle, seconds on a loaded machine.
                "--no-server-metrics",
            ],
        ),
        &[],
    )
    .await;
    let took = started.elapsed();
    let ended = std::time::SystemTime::now();
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
    // After the load, at most two push timeouts of 1 s (one under way, the last): the
    // hanging output costs no more than that. Counted from the load's end, so that a loaded
    // machine's slow start of the process is not counted.
    let scenario = &report["scenarios"][0];
    let load_end = std::time::UNIX_EPOCH
        + Duration::from_millis(scenario["started_at_unix_ms"].as_u64().unwrap())
        + Duration::from_secs_f64(scenario["duration_secs"].as_f64().unwrap());
    let after_load = ended.duration_since(load_end).unwrap_or_default();
    assert!(
        after_load < Duration::from_millis(2 * 1_000 + 1_500),
        "{after_load:?} after the load ({took:?} in all)\nstderr: {}\nreport: {}",
        run.stderr,
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_output_is_checked_and_presented_the_client_certificate() {
    use crate::pki::Pki;
    use crate::tls_stub::spawn_mtls_stub;

    let server = spawn_floodgate(|_| {}).await;
    // The receiver: TLS, and it asks for a client certificate (a remote-write endpoint behind
    // a gateway); the load goes to floodgate over plain HTTP.
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca");
    let client_ca = pki.ca("client-ca");
    let other_ca = pki.ca("other-ca");
    let leaf = pki.server(&server_ca, "server", &["127.0.0.1"]);
    let client = pki.client(&client_ca, "client");
    let (receiver, counts) = spawn_mtls_stub(&leaf, &client_ca).await;
    let out = format!("prometheus-rw={receiver}/api/v1/write");
    let (cert, key) = (client.cert.to_str().unwrap(), client.key.to_str().unwrap());
    let run = |cacert: &std::path::Path| {
        let cacert = cacert.to_str().unwrap().to_owned();
        let (server, out) = (server.url.clone(), out.clone());
        async move {
            run_load(
                &quick_args(
                    &server,
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
                        "--cacert",
                        &cacert,
                        "--cert",
                        cert,
                        "--key",
                        key,
                    ],
                ),
                &[],
            )
            .await
        }
    };

    let ok = run(&server_ca.pem).await;
    assert_eq!(ok.code, 0, "stdout: {}\nstderr: {}", ok.stdout, ok.stderr);
    let report = ok.json();
    assert_eq!(report["scenarios"][0]["requests"]["total"], 200);
    let live = &report["live_metrics"][0];
    assert_eq!(live["failed"], 0, "{live}");
    let pushes = live["pushes"].as_u64().unwrap();
    assert!(pushes >= 3, "{live}");
    // Every push reached it, over a handshake with the client certificate.
    assert_eq!(counts.requests.load(Ordering::SeqCst), pushes);

    // An authority that did not sign the receiver's certificate: the run stops before any
    // load, saying why.
    let before: serde_json::Value = reqwest::get(format!("{}/api/v1/stats", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wrong = run(&other_ca.pem).await;
    assert_eq!(
        wrong.code, 1,
        "stdout: {}\nstderr: {}",
        wrong.stdout, wrong.stderr
    );
    assert!(
        wrong
            .stderr
            .contains("live metrics: cannot push to prometheus-rw https://127.0.0.1:")
            && wrong.stderr.to_lowercase().contains("certificate"),
        "{}",
        wrong.stderr
    );
    let after: serde_json::Value = reqwest::get(format!("{}/api/v1/stats", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["total_requests"], before["total_requests"]);
    assert_eq!(counts.requests.load(Ordering::SeqCst), pushes);
}
