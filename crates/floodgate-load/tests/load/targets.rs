//! Several targets at once: stubs on their own loopback ports, loaded by one
//! floodgate-load run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::Barrier;

use crate::run::{quick_args, run_load};
use crate::stub::{spawn_stub, Stub};

/// `n` default stubs; their URLs and states.
async fn stubs(n: usize) -> (Vec<String>, Vec<Arc<Stub>>) {
    let mut urls = Vec::new();
    let mut states = Vec::new();
    for _ in 0..n {
        let (url, stub) = spawn_stub(Stub::default()).await;
        urls.push(url);
        states.push(stub);
    }
    (urls, states)
}

/// `--url` for each of `urls`, then `extra`, then [`quick_args`]' flags.
fn args_for<'a>(urls: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = quick_args(&urls[0], &[]);
    for url in &urls[1..] {
        args.extend(["--url", url.as_str()]);
    }
    args.extend_from_slice(extra);
    args
}

fn total(stub: &Stub) -> u64 {
    stub.total.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_round_robin() {
    // 6 connections over 3 stubs, 6 requests: every stub holds its requests
    // until all 6 are in flight at once, so each connection carries exactly
    // one, and what each stub holds at once is the number of connections it got.
    let barrier = Arc::new(Barrier::new(6));
    let mut urls = Vec::new();
    let mut states = Vec::new();
    for _ in 0..3 {
        let (url, stub) = spawn_stub(Stub {
            gate: Some(barrier.clone()),
            ..Stub::default()
        })
        .await;
        urls.push(url);
        states.push(stub);
    }
    let run = run_load(
        &args_for(
            &urls,
            &["--path", "/gate", "-n", "6", "-c", "6", "--timeout", "20s"],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    for stub in &states {
        assert_eq!(stub.max_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(total(stub), 2);
    }
    let s = &run.json()["scenarios"][0];
    assert_eq!(s["requests"]["total"], 6);
    assert_eq!(s["requests"]["timeouts"], 0);
    for (t, url) in s["targets"].as_array().unwrap().iter().zip(&urls) {
        assert_eq!(t["url"], format!("{url}/gate"));
        assert_eq!(t["connections"], 2, "{t}");
        assert_eq!(t["requests"]["total"], 2, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_per_target_and_summed_counters() {
    let (urls, states) = stubs(2).await;
    let run = run_load(
        &args_for(
            &urls,
            &[
                "--scenario",
                "fast",
                "-n",
                "200",
                "-c",
                "4",
                "--fail-on-mismatch",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    assert!(s.get("url").is_none(), "several targets have no single url");
    let expected_urls: Vec<String> = urls
        .iter()
        .map(|u| format!("{u}/api/v1/compute/fast"))
        .collect();
    assert_eq!(s["urls"], json!(expected_urls));
    assert_eq!(s["requests"]["total"], 200);
    let targets = s["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    let mut statuses = [0u64; 3];
    for (t, stub) in targets.iter().zip(&states) {
        assert_eq!(t["connections"], 2, "{t}");
        let n = t["requests"]["total"].as_u64().unwrap();
        assert!(n > 0, "both targets get load: {t}");
        assert_eq!(
            n,
            total(stub),
            "the client's count for {} is the stub's",
            t["url"]
        );
        assert_eq!(
            t["requests"]["successful"].as_u64().unwrap(),
            stub.success.load(Ordering::SeqCst)
        );
        for (i, code) in ["200", "429", "500"].iter().enumerate() {
            statuses[i] += t["status_codes"][code].as_u64().unwrap_or(0);
        }
        assert_eq!(stub.invalid.load(Ordering::SeqCst), 0);
    }
    assert_eq!(total(&states[0]) + total(&states[1]), 200);
    let codes = &s["status_codes"];
    assert_eq!(
        [&codes["200"], &codes["429"], &codes["500"]].map(|v| v.as_u64().unwrap_or(0)),
        statuses,
        "the per-target status codes add up to the scenario's"
    );

    let m = &s["server_metrics"];
    assert_eq!(m["status"], "match", "{m}");
    // The summed counters: both stubs started at zero.
    assert_eq!(m["before"]["total_requests"], 0);
    assert_eq!(m["after"]["total_requests"], 200);
    assert_eq!(m["check"]["counters"][0]["delta"], 200);
    let per_target = m["targets"].as_array().unwrap();
    assert_eq!(per_target.len(), 2);
    for ((t, url), stub) in per_target.iter().zip(&urls).zip(&states) {
        assert_eq!(&t["url"], url);
        assert_eq!(t["check"]["exact"], true, "{t}");
        assert_eq!(t["after"]["total_requests"], total(stub));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_miscounting_target_is_a_mismatch() {
    for output in ["json", "text"] {
        // Fresh stubs each time: the undercount shows in a first run only.
        let (good, _good) = spawn_stub(Stub::default()).await;
        let (bad, _bad) = spawn_stub(Stub {
            undercount: 1,
            ..Stub::default()
        })
        .await;
        let urls = [good, bad];
        let mut args = args_for(
            &urls,
            &["--path", "/ok", "-n", "40", "-c", "2", "--fail-on-mismatch"],
        );
        let format = args.iter().position(|a| *a == "--output").unwrap() + 1;
        args[format] = output;
        let run = run_load(&args, &[]).await;
        assert_eq!(run.code, 4, "stderr: {}", run.stderr);
        if output == "text" {
            for needle in [
                "Scenario custom: POST on 2 targets",
                "Server /metrics:    MISMATCH (summed over 2 targets)",
                "MISMATCH: server total_requests grew by 39, client received 40",
            ] {
                assert!(run.stdout.contains(needle), "{needle:?}:\n{}", run.stdout);
            }
            let bad_line = run
                .stdout
                .lines()
                .find(|l| {
                    l.trim_start()
                        .starts_with(&format!("{}  total_requests", urls[1]))
                })
                .unwrap_or_else(|| panic!("no per-target line for {}:\n{}", urls[1], run.stdout));
            assert!(bad_line.ends_with("MISMATCH"), "{bad_line}");
            continue;
        }
        let report = run.json();
        assert_eq!(report["counts_consistent"], false);
        let m = &report["scenarios"][0]["server_metrics"];
        assert_eq!(m["status"], "mismatch", "{m}");
        assert_eq!(m["check"]["counters"][0]["delta"], 39);
        assert_eq!(m["check"]["counters"][0]["client"], 40);
        assert_eq!(m["targets"][0]["check"]["ok"], true, "{m}");
        assert_eq!(m["targets"][1]["check"]["ok"], false, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_requests_round_robin() {
    let (urls, states) = stubs(2).await;
    let run = run_load(
        &args_for(
            &urls,
            &[
                "--path",
                "/ok",
                "--rate",
                "400",
                "-n",
                "100",
                "--duration",
                "10s",
                "-c",
                "4",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    assert_eq!(s["stop_reason"], "requests");
    assert_eq!(s["requests"]["total"], 100);
    for (t, stub) in s["targets"].as_array().unwrap().iter().zip(&states) {
        assert_eq!(t["requests"]["total"], 50, "{t}");
        assert_eq!(total(stub), 50);
    }
    assert_eq!(s["server_metrics"]["status"], "match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_list_from_the_environment_and_every_target_checked() {
    // FLOODGATE_LOAD_URL takes a comma-separated list.
    let (urls, states) = stubs(2).await;
    let list = format!("{}, {}", urls[0], urls[1]);
    let run = run_load(
        &[
            "--quiet", "--output", "json", "--warmup", "0", "--path", "/ok", "-n", "20", "-c", "2",
        ],
        &[("FLOODGATE_LOAD_URL", list.as_str())],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.json()["scenarios"][0];
    assert_eq!(s["urls"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(total(&states[0]) + total(&states[1]), 20);
    assert_eq!(s["server_metrics"]["status"], "match");

    // The health check covers every target: an unhealthy second one stops
    // the run before any load reaches the first.
    let (healthy, healthy_stub) = spawn_stub(Stub::default()).await;
    let (sick, _sick) = spawn_stub(Stub {
        unhealthy: true,
        ..Stub::default()
    })
    .await;
    let bounded = ["--quiet", "--warmup", "0", "-n", "10"];
    let mut args = vec!["--url", &healthy, "--url", &sick];
    args.extend(bounded);
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("server at {sick} is not healthy")),
        "{}",
        run.stderr
    );
    assert_eq!(
        total(&healthy_stub),
        0,
        "no load after a failed health check"
    );

    // The same server twice, or fewer connections than targets, is a usage error.
    let healthy_again = format!("{healthy}/");
    for extra in [
        &["--url", &healthy, "--url", &healthy_again][..],
        &["--url", &healthy, "--url", &sick, "-c", "1"],
    ] {
        let mut args = extra.to_vec();
        args.extend(bounded);
        let run = run_load(&args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    assert_eq!(total(&healthy_stub), 0);
}
