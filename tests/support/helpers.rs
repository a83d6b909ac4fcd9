//! What the integration tests share: `spawn_app` and friends (an application in this process
//! or the real binary, on 127.0.0.1:0), requests and the waits on their effects.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use floodgate::app::{ApplicationBuilder, Summary};
use floodgate::config::Settings;
use floodgate::Application;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running application on a loopback port.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener, when configured.
    pub admin: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// The public listener's certificate, when serving TLS.
    pub tls_cert: Option<std::sync::Arc<floodgate::transport::tls::ReloadableCert>>,
    /// The application's shared state.
    pub state: floodgate::state::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<Summary>>>,
}

/// A jobs database of its own for one application under test.
pub fn temp_database_url() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join("floodgate-tests");
    format!(
        "sqlite://{}/jobs-{}-{n}.db",
        dir.display(),
        std::process::id()
    )
}

/// Settings for tests: loopback port 0, no access log, a jobs database of its own,
/// documented defaults otherwise.
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.server.address = "127.0.0.1:0".parse().unwrap();
    s.database.url = temp_database_url();
    s.log.access_log = Some(false);
    s.pool.workers = 2;
    // A debug build among tests running in parallel has its runtime run tasks late now and
    // then, which (with a fast call or five around) sheds a busy lower class for a second,
    // by design: a test expecting its intensive call answered would see a 503. The rule is
    // tested where it is wanted (tests/api/overload.rs).
    s.admission.runtime_delay = Duration::ZERO;
    s
}

static TRACING: Once = Once::new();

/// Logs only when `TEST_LOG` is set, so test output stays readable.
pub fn init_test_logging() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber_init();
        }
    });
}

fn tracing_subscriber_init() -> Result<(), ()> {
    let mut s = Settings::default();
    s.log.level = Some("debug".into());
    std::mem::forget(floodgate::observability::telemetry::init(&s).map_err(|_| ())?);
    Ok(())
}

/// Start the application with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// Start the application after adjusting its settings.
pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    adjust(&mut settings);
    spawn_builder(Application::builder(settings)).await
}

/// Start an application from a builder (custom kernel, routes or checks).
pub async fn spawn_builder(builder: ApplicationBuilder) -> TestApp {
    init_test_logging();
    let app = builder.build().await.expect("application builds");
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let tls_cert = app.tls_cert();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        admin,
        client: client(),
        tls_cert,
        state,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A client with no connection pool limits worth mentioning and a generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(512)
        .build()
        .unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn compute(&self, endpoint: &str, number: u64) -> reqwest::Response {
        self.post_json(
            &format!("/api/v1/compute/{endpoint}"),
            &format!("{{\"number\":{number}}}"),
        )
        .await
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin.expect("admin listener bound"),
            path
        )
    }

    pub async fn stats(&self) -> Value {
        self.get("/api/v1/stats").await.json().await.unwrap()
    }

    pub async fn exposition(&self) -> String {
        self.get("/metrics/prometheus").await.text().await.unwrap()
    }

    /// Poll `/api/v1/stats` until `done` holds (10 s at most) and return the stats it saw.
    pub async fn wait_for_stats(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what} did not happen: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A fast-endpoint request that has sent its head and half its body, once the service
    /// has it in flight; the connection, to hold open or close.
    pub async fn request_stuck_mid_body(&self) -> tokio::net::TcpStream {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            b"POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"num",
        )
        .await
        .unwrap();
        self.wait_for_stats("the request in flight", |s| s["active_requests"] == 1)
            .await;
        s
    }

    /// Poll the exposition until `done` holds (10 s at most) and return the text it saw.
    pub async fn wait_for_exposition(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = std::time::Instant::now();
        loop {
            let text = self.exposition().await;
            if done(&text) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what} did not happen:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until exactly `n` workers are running a job.
    pub async fn wait_for_busy_workers(&self, n: usize) {
        self.wait_for_exposition(&format!("{n} busy workers"), |text| {
            sum_series(text, "floodgate_workers_busy", |_| true) == n as f64
        })
        .await;
    }

    /// Trigger graceful shutdown and wait for the summary.
    pub async fn stop(mut self) -> Summary {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Assert `body` is the error envelope with `code`, and that its request ID matches the header.
pub async fn assert_envelope(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "error responses are JSON"
    );
    let header_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], header_id.as_str(), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000),
        "{body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        4,
        "exactly the envelope keys: {body}"
    );
    body
}

/// Sum a counter family in an exposition, over series whose labels satisfy `keep`.
pub fn sum_series(exposition: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            keep(labels).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Jobs run by [`gated_kernel`] block while their `number` is held by a live [`Gate`], so a
/// test can hold the pool in a known state for as long as it needs, however slow the machine.
pub struct Gate(u64);

static HELD: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

impl Gate {
    /// Hold a number no other gate uses; jobs for it wait until the gate is dropped.
    pub fn hold() -> Gate {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(900_000);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HELD.lock().unwrap().push(n);
        Gate(n)
    }

    /// The number to send so the job waits on this gate.
    pub fn number(&self) -> u64 {
        self.0
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        HELD.lock().unwrap().retain(|&n| n != self.0);
        RELEASED.notify_all();
    }
}

/// A kernel that waits while its number is held by a [`Gate`] (other numbers return at once).
pub fn gated_kernel(n: u64, _rounds: u32) -> u64 {
    let mut held = HELD.lock().unwrap();
    while held.contains(&n) {
        held = RELEASED.wait(held).unwrap();
    }
    n
}

/// An application whose jobs wait on gates, and a job held running there: its status stays
/// put for as long as the gate is held. Returns the job's id.
pub async fn held_job() -> (TestApp, Gate, String) {
    let app = spawn_builder(Application::builder(test_settings()).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    let job: Value = app
        .post_json(
            "/api/v2/jobs",
            &format!("{{\"number\": {}}}", gate.number()),
        )
        .await
        .json()
        .await
        .unwrap();
    app.wait_for_busy_workers(1).await;
    (app, gate, job["id"].as_str().unwrap().to_owned())
}

/// A free loopback port (bound then released), for external tools that cannot report the
/// port they bound; floodgate itself binds port 0 and says which port it got.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Sends `signal`, named as `kill` takes it (`-TERM`, `-STOP`, …), to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}: {sent}");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real `floodgate` binary on a loopback port it chose itself, with extra environment.
pub struct BinaryApp {
    pub child: ChildGuard,
    pub base: String,
    pub port: u16,
    /// The admin listener, when `ADMIN_PORT` was given.
    pub admin: Option<SocketAddr>,
    output: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The real binary, run from the repository root with none of the caller's floodgate or
/// OpenTelemetry variables leaking in.
pub fn floodgate_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOODGATE") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl BinaryApp {
    /// `POST /api/v1/compute/fast`, optionally with a `traceparent`.
    pub async fn compute_fast(
        &self,
        client: &reqwest::Client,
        number: u64,
        traceparent: Option<&str>,
    ) -> reqwest::Response {
        let mut req = client
            .post(format!("{}/api/v1/compute/fast", self.base))
            .header("content-type", "application/json")
            .body(format!("{{\"number\":{number}}}"));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        req.send().await.expect("request sent")
    }
}

impl BinaryApp {
    /// The lines written to standard output so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Wait for the process to exit; its status and everything it wrote.
    pub fn wait_for_exit(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.0.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.output())
    }
}

/// Start the real binary on port 0 and read the address it bound from its `listening` log
/// line (so no port is guessed). Its standard output is collected for [`BinaryApp::output`].
pub async fn spawn_binary(envs: &[(&str, &str)]) -> BinaryApp {
    let mut cmd = floodgate_command();
    cmd.env("SERVER_PORT", "127.0.0.1:0")
        .env("DATABASE_URL", temp_database_url())
        .env("LOG_LEVEL", "warn")
        // As test_settings() does, for the same reason; a test may ask for it.
        .env("FLOODGATE__ADMISSION__RUNTIME_DELAY", "0s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // Whatever the level asked for, the startup line that names the address is kept.
    let level = envs
        .iter()
        .find(|(k, _)| *k == "LOG_LEVEL")
        .map_or("warn", |(_, v)| v);
    cmd.env("LOG_LEVEL", format!("{level},floodgate::app=info"));
    let mut child = ChildGuard(cmd.spawn().expect("floodgate binary starts"));
    let stdout = child.0.stdout.take().unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let lines = Arc::clone(&output);
    let reader = std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if line.contains("listening") {
                if let Some(addr) = field_address(&line, "address") {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send((addr, field_address(&line, "admin_address")));
                    }
                }
            }
            lines.lock().unwrap().push(line);
        }
    });
    let (addr, admin) = tokio::time::timeout(Duration::from_secs(10), addr_rx)
        .await
        .expect("floodgate did not start within 10 s")
        .expect("floodgate exited before listening");
    BinaryApp {
        child,
        base: format!("http://{addr}"),
        port: addr.port(),
        admin,
        output,
        reader: Some(reader),
    }
}

/// A socket-address field of the `listening` line (JSON or pretty format); `None` when the
/// field is absent or `None`.
fn field_address(line: &str, field: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(field)? + field.len()..];
    let rest = rest.trim_start_matches(['"', ':', '=', ' ']);
    if rest.starts_with("None") {
        return None;
    }
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let rest = &rest[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A file under the system temp directory that lives as long as the value.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "floodgate-test-{}-{}-{name}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The SHA-256 of `key` as hex: the form API keys are configured in.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Held by the tests that load both cores for seconds (several servers hammered at once) and
/// by the tests that time answers under their own load: one at a time, so neither's load
/// decides the other's timing.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// `GET url` and its JSON body.
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// `GET url` and its text body.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}

/// A gRPC message as it goes on the wire: an uncompressed-flag byte, the length as four
/// big-endian bytes, then the encoded message.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0u8);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// A `/proc/{pid}/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How many whole responses (head and `Content-Length` body) `bytes` holds.
pub fn complete_responses(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut n = 0;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if rest.len() < end + 4 + length {
            break;
        }
        rest = &rest[end + 4 + length..];
        n += 1;
    }
    n
}
