//! schemathesis checks the running service against its OpenAPI document, with authentication
//! off and on.

use std::process::Command;

use crate::helpers::*;
use crate::test_tools::tool;

/// Run schemathesis's standard checks (every check it has but one: no 5xx, status codes,
/// content types, headers and bodies as documented, negative data rejected, positive data
/// accepted, undocumented methods refused, and the stateful runs along the API's links)
/// against a running service.
fn schemathesis(base: &str, extra: &[&str]) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let out = Command::new(tool("st"))
        .current_dir(std::env::temp_dir())
        .args([
            "--config-file",
            config,
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "all",
            // DELETE /api/v2/jobs/{id} cancels a job, which stays readable as `cancelled`:
            // the API's contract, where this check expects the resource to disappear.
            "--exclude-checks",
            "use_after_free",
            "--max-examples",
            "50",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("No issues found"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let app = spawn_app().await;
    let base = format!("http://{}", app.addr);
    tokio::task::spawn_blocking(move || schemathesis(&base, &[]))
        .await
        .unwrap();
    // The run really reached the service.
    assert!(app.stats().await["total_requests"].as_u64().unwrap() > 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_with_authentication_on() {
    let key = "schemathesis-test-key";
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex(key)];
        // schemathesis sends wrong credentials on purpose, hundreds of them from one
        // address; throttling them (tested in hardening.rs) would hide the operations.
        s.auth.failed_attempts_burst = 1_000_000;
    })
    .await;
    let base = format!("http://{}", app.addr);
    let header = format!("X-API-Key: {key}");
    tokio::task::spawn_blocking(move || schemathesis(&base, &["-H", &header]))
        .await
        .unwrap();
    let text = app.exposition().await;
    let unauthorized = sum_series(&text, "http_server_request_duration_seconds_count", |l| {
        l.contains("http_response_status_code=\"401\"")
    });
    assert!(
        unauthorized > 0.0,
        "the ignored-auth check sent no request without the key"
    );
}
