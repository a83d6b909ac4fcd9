//! floodgate with TLS on (certificates made in the test), loaded over `https://`: HTTP/1.1
//! and HTTP/2 by ALPN with the server count check matching; `--cacert`, `--insecure`, a CA
//! the client does not trust (refused before any load is sent); HTTP/2 with prior knowledge
//! on a plain port; and mutual TLS against a server that requires a client certificate.

use serde_json::Value;

use crate::floodgate_server::{spawn_floodgate, Floodgate};
use crate::pki::{Leaf, Pki};
use crate::run::{quick_args, run_load};
use crate::tls_stub::spawn_mtls_stub;

/// floodgate serving HTTPS with `leaf`; its `https://127.0.0.1:PORT` URL.
async fn spawn_tls_floodgate(leaf: &Leaf) -> (Floodgate, String) {
    let (cert, key) = (leaf.cert.clone(), leaf.key.clone());
    let server = spawn_floodgate(move |s| {
        s.tls.cert_path = Some(cert);
        s.tls.key_path = Some(key);
    })
    .await;
    let url = server.url.replacen("http://", "https://", 1);
    (server, url)
}

/// floodgate's `total_requests`, read over TLS trusting `ca_pem`.
async fn total_requests(url: &str, ca_pem: &std::path::Path) -> u64 {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_pem).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let stats: Value = client
        .get(format!("{url}/api/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["total_requests"].as_u64().unwrap()
}

/// The scenario report's check that the server counted exactly what the client got.
fn assert_counts_match(report: &Value, n: u64) {
    let s = &report["scenarios"][0];
    assert_eq!(s["requests"]["total"], n, "{s}");
    assert_eq!(s["requests"]["successful"], n, "{s}");
    assert_eq!(
        s["server_metrics"]["status"], "match",
        "{}",
        s["server_metrics"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_http2_counts_match() {
    let pki = Pki::new();
    let ca = pki.ca("test-ca");
    let leaf = pki.server(&ca, "server", &["127.0.0.1"]);
    let (_server, url) = spawn_tls_floodgate(&leaf).await;
    let cacert = ca.pem.to_str().unwrap();

    let run = run_load(
        &quick_args(
            &url,
            &[
                "--cacert",
                cacert,
                "-s",
                "fast",
                "-n",
                "300",
                "-c",
                "4",
                "--fail-on-mismatch",
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
    assert_counts_match(&report, 300);
    let s = &report["scenarios"][0];
    assert_eq!(s["url"], format!("{url}/api/v1/compute/fast"));
    let t = &s["transport"];
    assert_eq!(t["protocol"], "HTTP/1.1", "{t}");
    assert_eq!(t["tls"]["alpn"], "http/1.1", "{t}");
    assert_eq!(t["tls"]["version"], "TLSv1.3", "{t}");
    assert_eq!(t["tls_verified"], true, "{t}");
    // Every connection's TLS handshake, reported apart from request latency.
    let c = &s["connections"];
    assert_eq!(c["opened"], 4, "{c}");
    assert!(
        c["tls_handshake_ms"]["max_ms"].as_f64().unwrap() > 0.0,
        "{c}"
    );
    assert!(
        c["setup_ms"]["min_ms"].as_f64().unwrap()
            >= c["tls_handshake_ms"]["min_ms"].as_f64().unwrap(),
        "{c}"
    );

    // HTTP/2 agreed by ALPN, 4 connections with 8 streams each.
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--cacert",
                cacert,
                "--http2",
                "--streams",
                "8",
                "-s",
                "fast",
                "-n",
                "500",
                "-c",
                "4",
                "--fail-on-mismatch",
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
    assert_counts_match(&report, 500);
    let s = &report["scenarios"][0];
    let t = &s["transport"];
    assert_eq!(t["protocol"], "HTTP/2", "{t}");
    assert_eq!(t["tls"]["alpn"], "h2", "{t}");
    assert_eq!(t["streams_per_connection"], 8, "{t}");
    assert_eq!(
        s["connections"]["opened"], 4,
        "one connection per 8 streams"
    );
    assert_eq!(s["status_codes"]["200"], 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_loads_a_certificate_nobody_vouches_for_and_says_so() {
    let pki = Pki::new();
    let ca = pki.ca("unknown-ca");
    let leaf = pki.server(&ca, "server", &["127.0.0.1"]);
    let (_server, url) = spawn_tls_floodgate(&leaf).await;

    // Without --cacert the system's CAs are trusted, and none of them signed it.
    let run = run_load(
        &quick_args(&url, &["-s", "fast", "-n", "10", "-c", "2"]),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(run.stderr.contains("--cacert"), "{}", run.stderr);

    let run = run_load(
        &quick_args(
            &url,
            &[
                "--insecure",
                "-s",
                "fast",
                "-n",
                "100",
                "-c",
                "2",
                "--fail-on-mismatch",
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
    // Loud even with --quiet.
    assert!(run.stderr.contains("WARNING: --insecure"), "{}", run.stderr);
    let report = run.json();
    assert_counts_match(&report, 100);
    assert_eq!(report["scenarios"][0]["transport"]["tls_verified"], false);
    assert_eq!(total_requests(&url, &ca.pem).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_clearly_before_any_load() {
    let pki = Pki::new();
    let ca = pki.ca("server-ca");
    let other = pki.ca("other-ca");
    let leaf = pki.server(&ca, "server", &["127.0.0.1"]);
    let (_server, url) = spawn_tls_floodgate(&leaf).await;

    for extra in [&["--no-health-check"][..], &[]] {
        let mut args = vec![
            "--cacert",
            other.pem.to_str().unwrap(),
            "-s",
            "all",
            "-n",
            "50",
        ];
        args.extend_from_slice(extra);
        let run = run_load(&quick_args(&url, &args), &[]).await;
        assert_eq!(
            run.code, 1,
            "stdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        assert!(run.stdout.is_empty(), "no report: {}", run.stdout);
        assert!(
            run.stderr
                .contains(&format!("TLS handshake with {url} failed"))
                && run.stderr.contains("not signed by a CA this client trusts"),
            "{}",
            run.stderr
        );
    }
    // The server that does not speak HTTP/2 by ALPN: refused before the load too (floodgate
    // does, so this is a certificate for another name instead).
    let run = run_load(
        &quick_args(
            &url.replace("127.0.0.1", "localhost"),
            &[
                "--cacert",
                ca.pem.to_str().unwrap(),
                "-s",
                "fast",
                "-n",
                "50",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("not for the URL's host name"),
        "{}",
        run.stderr
    );
    // Not one request reached the server.
    assert_eq!(total_requests(&url, &ca.pem).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_on_a_plain_port() {
    let server = spawn_floodgate(|_| {}).await;
    let run = run_load(
        &quick_args(
            &server.url,
            &[
                "--http2",
                "--streams",
                "16",
                "-s",
                "all",
                "-n",
                "400",
                "-c",
                "2",
                "--fail-on-mismatch",
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
    for s in report["scenarios"].as_array().unwrap() {
        assert_eq!(s["requests"]["successful"], 400, "{s}");
        assert_eq!(s["server_metrics"]["status"], "match");
        assert_eq!(s["transport"]["protocol"], "HTTP/2");
        assert_eq!(s["transport"]["tls"], Value::Null);
    }
    let e = run_load(&quick_args(&server.url, &["--streams", "4"]), &[]).await;
    assert_eq!(e.code, 2, "--streams without HTTP/2: {}", e.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca");
    let client_ca = pki.ca("client-ca");
    let leaf = pki.server(&server_ca, "server", &["127.0.0.1"]);
    let client = pki.client(&client_ca, "client");
    let (url, counts) = spawn_mtls_stub(&leaf, &client_ca).await;
    let cacert = server_ca.pem.to_str().unwrap();

    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "--url",
            &url,
            "--cacert",
            cacert,
            "--path",
            "/ok",
            "-n",
            "200",
            "-c",
            "4",
            "--no-server-metrics",
            "--warmup",
            "0",
            "--quiet",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_load(&args, &[]).await
    };
    let cert = client.cert.to_str().unwrap().to_owned();
    let key = client.key.to_str().unwrap().to_owned();
    let mut with_cert = args(&[]);
    with_cert.extend(["--cert".to_owned(), cert, "--key".to_owned(), key]);
    let ok = run(with_cert).await;
    assert_eq!(ok.code, 0, "stdout: {}\nstderr: {}", ok.stdout, ok.stderr);
    assert_eq!(ok.json()["scenarios"][0]["requests"]["successful"], 200);
    assert_eq!(
        counts.requests.load(std::sync::atomic::Ordering::Relaxed),
        200
    );

    // Without a client certificate the server refuses the handshake: the health check says so.
    let refused = run(args(&[])).await;
    assert_eq!(
        refused.code, 1,
        "stdout: {}\nstderr: {}",
        refused.stdout, refused.stderr
    );
    assert!(
        refused.stderr.contains("--cert and --key"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        counts.requests.load(std::sync::atomic::Ordering::Relaxed),
        200
    );
}
