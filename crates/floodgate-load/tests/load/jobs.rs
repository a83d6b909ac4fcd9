//! The jobs scenario against the stub: every fate a job can meet, counted,
//! and a wrong digest failing the run.

use serde_json::{json, Value};

use crate::run::{quick_args, run_load};
use crate::stub::{spawn_stub, JobFate, Stub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digests_are_reported_and_fail_the_run() {
    let (url, stub) = spawn_stub(Stub {
        jobs_mixed: true,
        ..Stub::default()
    })
    .await;
    let run = run_load(
        &quick_args(
            &url,
            &[
                "--scenario",
                "jobs",
                "-n",
                "50",
                "-c",
                "4",
                "--rounds",
                "100",
                "--poll-interval",
                "1ms",
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(
        run.code, 4,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr
            .contains("DIGEST MISMATCH: 5 succeeded jobs came back with a wrong digest or result"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["jobs_verified"], false);
    assert_eq!(report["thresholds_passed"], true);
    let s = &report["scenarios"][0];
    let j = &s["jobs"];
    // Of 50 jobs, 5 of each odd fate; the 5 that met a 503 first are right.
    for (field, expected) in [
        ("submitted", 50),
        ("submit_failed", 0),
        ("completed", 45),
        ("succeeded", 35),
        ("verified", 30),
        ("digest_mismatches", 5),
        ("failed", 5),
        ("cancelled", 5),
        ("lost", 5),
        ("unfinished", 0),
        // Two per job, one more for the 503s, one only for the lost ones.
        ("polls", 100),
        ("poll_errors", 10),
    ] {
        assert_eq!(j[field], expected, "{field}: {j}");
    }
    assert_eq!(j["rounds"], 100);
    assert_eq!(j["errors"], json!({"stub failure": 5}));
    let examples = j["mismatches"].as_array().unwrap();
    assert_eq!(examples.len(), 5);
    let jobs = stub.jobs.lock().unwrap();
    for m in examples {
        let job = &jobs[m["id"].as_str().unwrap()];
        assert_eq!(JobFate::of(job.seq), JobFate::WrongDigest, "{m}");
        assert_eq!(m["number"], job.number);
        assert_eq!(m["rounds"], 100);
        let expected = floodgate::pool::intensive_digest(job.number, 100);
        assert_eq!(m["expected_digest"], expected);
        assert_eq!(m["digest"], expected + 1);
        assert_eq!(m["result"], m["expected_result"]);
    }
    // Every job was submitted with the rounds asked for.
    assert!(jobs.values().all(|j| j.rounds == Some(100)));
    assert_eq!(jobs.len(), 50);
    drop(jobs);
    // Every request counted, and counted as the stub did.
    assert_eq!(s["requests"]["total"], 150);
    assert_eq!(
        s["status_codes"],
        json!({"200": 90, "202": 50, "404": 5, "503": 5})
    );
    assert_eq!(
        s["error_codes"],
        json!({"NOT_FOUND": 5, "DEPENDENCY_UNAVAILABLE": 5})
    );
    assert_eq!(s["server_metrics"]["status"], "match", "{s}");
    let ttc = &j["time_to_completion_ms"];
    assert!(ttc["p99_ms"].as_f64().unwrap() >= ttc["p50_ms"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_report_names_each_wrong_job() {
    let (url, _stub) = spawn_stub(Stub {
        jobs_mixed: true,
        ..Stub::default()
    })
    .await;
    let mut args = quick_args(
        &url,
        &[
            "-s",
            "jobs",
            "-n",
            "20",
            "-c",
            "2",
            "--poll-interval",
            "1ms",
        ],
    );
    let output = args.iter().position(|a| *a == "json").unwrap();
    args[output] = "text";
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    for needle in [
        "Jobs:               rounds the server's default, polled every 1.0ms",
        "succeeded       14 (12 verified, 2 DIGEST MISMATCH)",
        "failed          2",
        "cancelled       2",
        "Lost:             2",
        "Errors of failed jobs:",
        "stub failure",
        "DIGEST MISMATCH: job 00000000-0000-7000-8000-000000000000 (number ",
        "DIGEST MISMATCH: job 00000000-0000-7000-8000-00000000000a (number ",
        "rounds 10000): digest ",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            run.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_jobs_on_two_stubs() {
    let (a, stub_a) = spawn_stub(Stub::default()).await;
    let (b, stub_b) = spawn_stub(Stub::default()).await;
    let mut args = quick_args(
        &a,
        &[
            "-s",
            "jobs",
            "--rate",
            "200",
            "-n",
            "40",
            "-c",
            "8",
            "--poll-interval",
            "1ms",
        ],
    );
    args.extend(["--url", &b]);
    let run = run_load(&args, &[]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let s = &report["scenarios"][0];
    assert_eq!(s["load_model"]["type"], "open");
    assert_eq!(s["jobs"]["verified"], 40, "{s}");
    assert_eq!(s["jobs"]["rounds"], Value::Null);
    // Open loop: request i to target i % 2, and each job polled where it was submitted.
    for (t, stub) in s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&stub_a, &stub_b])
    {
        assert_eq!(t["jobs"]["verified"], 20, "{t}");
        let jobs = stub.jobs.lock().unwrap();
        assert_eq!(jobs.len(), 20);
        assert!(jobs.values().all(|j| j.polls == 2 && j.rounds.is_none()));
    }
}
