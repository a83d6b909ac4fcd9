//! HTTPS with a certificate made in the test: HTTP/2 and HTTP/1.1 by ALPN through a real TLS
//! client, and certificate reloads (in process, and by SIGHUP to the real binary) that leave
//! established connections alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::helpers::*;

const HOST: &str = "floodgate.test";

/// A self-signed certificate for [`HOST`], written as PEM files in its own directory.
struct CertFiles {
    dir: PathBuf,
    der: Vec<u8>,
    pem: String,
}

impl CertFiles {
    fn new() -> CertFiles {
        let dir = std::env::temp_dir().join(format!("floodgate-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = CertFiles {
            dir,
            der: Vec::new(),
            pem: String::new(),
        };
        files.rotate();
        files
    }

    /// Replace both files with a fresh certificate and key.
    fn rotate(&mut self) {
        let made = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
        self.pem = made.cert.pem();
        self.der = made.cert.der().to_vec();
        std::fs::write(self.cert(), &self.pem).unwrap();
        std::fs::write(self.key(), made.signing_key.serialize_pem()).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A rustls client trusting `roots`, resolving [`HOST`] to `addr`.
fn tls_client(addr: SocketAddr, roots: &[&str], http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .resolve(HOST, addr)
        .timeout(Duration::from_secs(10));
    for pem in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn compute(client: &reqwest::Client, port: u16) -> reqwest::Response {
    client
        .post(format!("https://{HOST}:{port}/api/v1/compute/fast"))
        .header("content-type", "application/json")
        .body(r#"{"number":12}"#)
        .send()
        .await
        .expect("TLS request")
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec()
}

async fn spawn_tls(files: &CertFiles) -> TestApp {
    spawn_with(|s| {
        s.tls.cert_path = Some(files.cert());
        s.tls.key_path = Some(files.key());
    })
    .await
}

#[tokio::test]
async fn alpn_negotiates_http2_or_http1() {
    let files = CertFiles::new();
    let app = spawn_tls(&files).await;
    let port = app.addr.port();

    let h2 = tls_client(app.addr, &[&files.pem], false);
    let r = compute(&h2, port).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer_cert(&r), files.der);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["result"], 144);

    let h1 = tls_client(app.addr, &[&files.pem], true);
    let r = compute(&h1, port).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);

    // Many requests multiplexed on one HTTP/2 connection.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let h2 = h2.clone();
            tokio::spawn(async move { compute(&h2, port).await.status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    // Untrusted certificate and plain HTTP both fail.
    let stranger = tls_client(app.addr, &[], false);
    assert!(stranger
        .get(format!("https://{HOST}:{port}/health"))
        .send()
        .await
        .is_err());
    let plain = client().get(app.url("/health")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// gRPC over TLS: HTTP/2 by ALPN, routed by content-type on the same port as REST.
#[tokio::test]
async fn grpc_calls_are_served_over_tls() {
    use prost::Message;
    let files = CertFiles::new();
    let app = spawn_tls(&files).await;
    let h2 = tls_client(app.addr, &[&files.pem], false);
    let frame = grpc_frame(&floodgate::grpc::pb::ComputeRequest { number: 12 }.encode_to_vec());
    let r = h2
        .post(format!(
            "https://{HOST}:{}/floodgate.v1.ComputeService/Fast",
            app.addr.port()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["content-type"], "application/grpc");
    let body = r.bytes().await.unwrap();
    assert_eq!(body[0], 0, "an uncompressed message");
    let answer = floodgate::grpc::pb::ComputeResponse::decode(&body[5..]).unwrap();
    assert_eq!(answer.result, 144);
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_only() {
    let mut files = CertFiles::new();
    let app = spawn_tls(&files).await;
    let port = app.addr.port();
    let old_pem = files.pem.clone();
    let old_der = files.der.clone();
    // One connection made before the reload, kept alive.
    let before = tls_client(app.addr, &[&old_pem], false);
    assert_eq!(peer_cert(&compute(&before, port).await), old_der);

    files.rotate();
    let cert = app.tls_cert.as_ref().expect("TLS is on");
    cert.reload().expect("the new files load");
    let after = tls_client(app.addr, &[&files.pem], false);
    let r = compute(&after, port).await;
    assert_eq!(
        peer_cert(&r),
        files.der,
        "a new connection gets the new certificate"
    );
    let r = compute(&before, port).await;
    assert_eq!(r.status(), 200, "the established connection still works");
    assert_eq!(peer_cert(&r), old_der);

    // A broken file keeps the current certificate.
    std::fs::write(files.key(), "not a key").unwrap();
    assert!(cert.reload().is_err());
    let fresh = tls_client(app.addr, &[&files.pem], false);
    assert_eq!(peer_cert(&compute(&fresh, port).await), files.der);
}

#[tokio::test]
async fn changed_files_are_picked_up_without_a_signal() {
    let mut files = CertFiles::new();
    let app = spawn_tls(&files).await;
    let cert = app.tls_cert.clone().expect("TLS is on");
    // The watcher's baseline is taken when it is made, so the change below is seen.
    let watcher = tokio::spawn(floodgate::transport::tls::reload_when_changed(
        cert,
        Duration::from_millis(50),
    ));
    files.rotate();
    wait_for_certificate(app.addr, &files, "the changed files were not picked up").await;
    watcher.abort();
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_real_binary() {
    let mut files = CertFiles::new();
    let port = free_port();
    let admin = free_port();
    let mut cmd = floodgate_command();
    cmd.env("SERVER_PORT", format!("127.0.0.1:{port}"))
        .env("ADMIN_PORT", format!("127.0.0.1:{admin}"))
        .env("TLS_CERT_FILE", files.cert())
        .env("TLS_KEY_FILE", files.key())
        .env("LOG_LEVEL", "warn");
    let mut child = ChildGuard(cmd.spawn().unwrap());
    wait_for(&format!("http://127.0.0.1:{admin}/health")).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let old = tls_client(addr, &[&files.pem], false);
    assert_eq!(peer_cert(&compute(&old, port).await), files.der);

    files.rotate();
    child.signal("-HUP");
    wait_for_certificate(addr, &files, "SIGHUP did not reload the certificate").await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the process"
    );
}

#[tokio::test]
async fn a_missing_key_file_is_a_configuration_error() {
    let files = CertFiles::new();
    let out = floodgate_command()
        .env("SERVER_PORT", "127.0.0.1:0")
        .env("TLS_CERT_FILE", files.cert())
        .env("TLS_KEY_FILE", Path::new(&files.dir).join("missing.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.key"));
}

/// Wait (5 s at most) until a new connection to `addr` is served the certificate in `files`;
/// a client trusting only that certificate cannot connect before.
async fn wait_for_certificate(addr: SocketAddr, files: &CertFiles, failure: &str) {
    let started = Instant::now();
    loop {
        let fresh = tls_client(addr, &[&files.pem], false);
        if let Ok(r) = fresh
            .get(format!("https://{HOST}:{}/health/live", addr.port()))
            .send()
            .await
        {
            assert_eq!(peer_cert(&r), files.der);
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{failure}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(url: &str) {
    let c = client();
    let started = Instant::now();
    while c.get(url).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} did not answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
