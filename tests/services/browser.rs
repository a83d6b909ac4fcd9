//! The status page in headless Chromium (Debian's, driven by Playwright): it connects and its
//! numbers move while load is sent.

use std::time::Duration;

use crate::helpers::*;
use crate::test_tools::venv_python;

fn with_admin(s: &mut floodgate::Settings) {
    s.server.admin_address = Some("127.0.0.1:0".parse().unwrap());
    s.server.public_operational_routes = false;
}

/// Debian's Chromium, driven by Playwright (tests/clients/status_page.py says what it checks),
/// opens the page on the admin listener while this test sends load to the API; the
/// screenshot is kept under the test output directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_the_page_connects_and_its_numbers_move_under_load() {
    let app = spawn_with(with_admin).await;
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/status_page.py");
    let mut browser = tokio::process::Command::new(venv_python())
        .args([script, &app.admin_url("/status")])
        .arg(&screenshot)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut stdout = browser.stdout.take().unwrap();
    let mut stderr = browser.stderr.take().unwrap();
    let read_out = tokio::spawn(async move {
        let (mut out, mut err) = (String::new(), String::new());
        use tokio::io::AsyncReadExt;
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    });
    // Load until the browser is done: bounded by its own timeouts and by these limits.
    let mut sent = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        tokio::select! {
            status = browser.wait() => break status.unwrap(),
            _ = async {
                if sent.is_multiple_of(50) {
                    // A durable job now and then, for the jobs panel.
                    let _ = app
                        .client
                        .post(app.url("/api/v2/jobs"))
                        .header("content-type", "application/json")
                        .body(r#"{"number": 5, "rounds": 1000}"#)
                        .send()
                        .await;
                }
                let endpoint = if sent.is_multiple_of(10) { "intensive" } else { "fast" };
                let _ = app.compute(endpoint, 20 + u64::from(sent % 7)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }, if sent < 20_000 => sent += 1,
            _ = tokio::time::sleep_until(deadline) => panic!("the browser did not finish in 90 s"),
        }
    };
    let (out, err) = read_out.await.unwrap();
    assert!(status.success(), "the browser check failed:\n{out}\n{err}");
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(seen["jobs"]["hidden"], false, "{seen}");
    assert_eq!(seen["jobs"]["succeeded_drawn"], true, "{seen}");
    for chart in [
        "chart-rps",
        "chart-errors",
        "chart-latency",
        "chart-pool",
        "chart-jobs",
        "chart-admission",
        "chart-refusals",
    ] {
        assert!(
            seen["charts"][chart]["points"].as_u64().unwrap() >= 5,
            "{seen}"
        );
        assert!(
            seen["charts"][chart]["lines"].as_u64().unwrap() >= 1,
            "{seen}"
        );
    }
    assert!(
        seen["charts"]["chart-rps"]["max"].as_f64().unwrap() > 0.0,
        "{seen}"
    );
    // The adaptive limits: the intensive limit is drawn (its ceiling, with nothing to shed),
    // one line per class of refusals, and the tile reads "in flight / limit".
    assert!(
        seen["charts"]["chart-admission"]["max"].as_f64().unwrap() > 0.0,
        "{seen}"
    );
    assert_eq!(seen["charts"]["chart-refusals"]["lines"], 3, "{seen}");
    assert!(
        seen["admission"]
            .as_str()
            .is_some_and(|a| a.contains(" / ")),
        "{seen}"
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!(
        "status page: {sent} requests sent, saw {}; screenshot {}",
        seen["rps"],
        screenshot.display()
    );
}
