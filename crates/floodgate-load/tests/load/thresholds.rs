//! Thresholds: a run that misses one exits with status 3 and says which; one with `:abort`
//! stops the run within a second of the moment the server broke; expressions that are not
//! thresholds are usage errors.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::floodgate_server::spawn_floodgate;
use crate::run::{quick_args, run_load};
use crate::stub::{spawn_stub, Stub};

/// The outcome of the threshold named `name` in the first scenario.
fn outcome<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"][0]["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no threshold {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_that_must_fail_fails_with_status_3() {
    let server = spawn_floodgate(|_| {}).await;
    let held = [
        "error_rate<0.1",
        "5xx==0",
        "2xx>=100%",
        "server_check==match",
        "requests==300",
        "p99<10s",
    ];
    let mut args = vec!["-s", "fast", "-n", "300", "-c", "4"];
    for t in held {
        args.extend(["--threshold", t]);
    }
    let run = run_load(&quick_args(&server.url, &args), &[]).await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["thresholds_passed"], true);
    for t in held {
        assert_eq!(
            outcome(&report, t)["passed"],
            true,
            "{}",
            outcome(&report, t)
        );
    }
    assert_eq!(outcome(&report, "requests==300")["actual"], 300.0);
    assert_eq!(outcome(&report, "server_check==match")["actual"], "match");

    // No server answers in under a nanosecond, nor serves a million requests a second here.
    args.extend([
        "--threshold",
        "p99<0.000001ms",
        "--threshold",
        "rps>1000000",
    ]);
    let run = run_load(&quick_args(&server.url, &args), &[]).await;
    assert_eq!(
        run.code, 3,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["thresholds_passed"], false);
    let p99 = outcome(&report, "p99<0.000001ms");
    assert_eq!(p99["passed"], false);
    assert_eq!(
        (&p99["metric"], &p99["op"], &p99["unit"]),
        (&"p99".into(), &"<".into(), &"ms".into())
    );
    assert_eq!(
        p99["actual"],
        report["scenarios"][0]["latency_ms"]["p99_ms"]
    );
    assert_eq!(outcome(&report, "rps>1000000")["passed"], false);
    assert_eq!(outcome(&report, "error_rate<0.1")["passed"], true);
    assert_eq!(
        report["scenarios"][0]["stop_reason"], "requests",
        "checked at the end only"
    );

    // The text report says which failed.
    let text = run_load(
        &[
            "--url",
            &server.url,
            "-s",
            "fast",
            "-n",
            "50",
            "-c",
            "2",
            "--warmup",
            "0",
            "--quiet",
            "--threshold",
            "rps>1000000",
        ],
        &[],
    )
    .await;
    assert_eq!(text.code, 3);
    assert!(
        text.stdout.contains("Threshold rps>1000000: ") && text.stdout.contains("FAIL"),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_the_run_within_a_second_of_the_breach() {
    let (url, stub) = spawn_stub(Stub {
        degrade_after: Duration::from_secs(2),
        ..Stub::default()
    })
    .await;
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--path",
                "/degrade",
                "--body",
                "{}",
                "--rate",
                "200",
                "--duration",
                "30s",
                "-c",
                "8",
                "--threshold",
                "5xx<1:abort",
                "--threshold",
                "p99<10s",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 3,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let s = &report["scenarios"][0];
    assert_eq!(s["stop_reason"], "aborted", "{s}");
    let t = outcome(&report, "5xx<1:abort");
    assert_eq!(
        (&t["passed"], &t["abort"]),
        (&false.into(), &true.into()),
        "{t}"
    );
    assert_eq!(outcome(&report, "p99<10s")["passed"], true);

    // The server's first 500, and the end of the phase, by the wall clock.
    let breach = stub
        .first_failure
        .lock()
        .unwrap()
        .expect("the stub broke")
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = s["started_at_unix_ms"].as_f64().unwrap() / 1e3;
    let end = start + s["duration_secs"].as_f64().unwrap();
    assert!(
        end - breach < 1.0,
        "the phase ended {:.3} s after the breach",
        end - breach
    );
    let at = t["aborted_at_secs"].as_f64().unwrap();
    assert!(
        at - (breach - start) < 1.0,
        "noticed {at} s in, broke {} s in",
        breach - start
    );
    assert!(s["duration_secs"].as_f64().unwrap() < 5.0);
}

#[tokio::test]
async fn what_is_not_a_threshold_is_a_usage_error() {
    for args in [
        &["--threshold", "p99<"][..],
        &["--threshold", "p98<10ms"],
        &["--threshold", "server_check==match:abort"],
        &["--threshold", "p99<10ms", "--sweep", "auto"],
    ] {
        let run = run_load(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}
