//! Staged load profiles: an open-loop ramp through floodgate whose per-second rate must
//! follow the profile by the client's own timeline and by the server's counters, read by
//! the test while the load runs; a closed-loop profile whose connections at work follow
//! their stages; the profile from a file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::floodgate_server::spawn_floodgate;
use crate::run::{load_command, quick_args, RUN_LIMIT};
use crate::stub::{spawn_stub, Stub};

/// The requests due in the first `t` seconds of 0 → `r`/s over 5 s, `r`/s for 5 s, `r` → 0
/// over 5 s.
fn due_by(r: f64, t: f64) -> f64 {
    let t = t.clamp(0.0, 15.0);
    let up = |x: f64| r * x * x / 10.0;
    if t <= 5.0 {
        up(t)
    } else if t <= 10.0 {
        up(5.0) + r * (t - 5.0)
    } else {
        let x = t - 10.0;
        up(5.0) + 5.0 * r + r * x - r * x * x / 10.0
    }
}

/// The server's `total_requests` at a time (ms on the test's clock), from samples taken
/// around it; the last sample (taken once the load was over) after the last one.
fn interpolate(samples: &[Sample], at: f64) -> f64 {
    let Some(after) = samples.iter().position(|s| s.at >= at) else {
        return samples.last().unwrap().count;
    };
    assert!(after > 0, "a sample before {at}");
    let (a, b) = (&samples[after - 1], &samples[after]);
    a.count + (b.count - a.count) * (at - a.at) / (b.at - a.at)
}

/// The server's counter read once: when (ms on the test's monotonic clock, the middle of
/// the read's round trip), what the wall clock said then, and the count.
struct Sample {
    at: f64,
    wall: f64,
    count: f64,
}

/// Times on the monotonic clock, which the client's schedule keeps too. The wall clock
/// can run at another rate: on some virtual machines it gains 5 ms a second on the
/// monotonic one, which over this run shifts the server's seconds by 75 ms against the
/// client's. The wall clock is used once, to place the client's start.
struct Clock(std::time::Instant);

impl Clock {
    /// ms since the clock was made.
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1e3
    }

    /// The wall clock's time, ms since 1970.
    fn wall() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1e3
    }
}

/// A wall-clock time (ms since 1970) on the test's clock, by the sample read nearest it.
fn place(samples: &[Sample], wall: f64) -> f64 {
    let near = samples
        .iter()
        .min_by(|a, b| (a.wall - wall).abs().total_cmp(&(b.wall - wall).abs()))
        .unwrap();
    near.at + (wall - near.wall)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_ramp_follows_its_profile_second_by_second() {
    const R: f64 = 1000.0;
    let server = spawn_floodgate(|_| {}).await;
    let stats = format!("{}/api/v1/stats", server.url);
    let mut cmd = load_command();
    cmd.args(quick_args(
        &server.url,
        &[
            "-s",
            "fast",
            "-c",
            "64",
            "--stage",
            "up=5s:1000/s",
            "--stage",
            "hold=5s:1000/s",
            "--stage",
            "down=5s:0/s",
            "--fail-on-mismatch",
        ],
    ))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());

    // The server's counter, every 100 ms, until the run is over.
    let http = reqwest::Client::new();
    let clock = Clock(std::time::Instant::now());
    let read = || async {
        let before = clock.now();
        let v: Value = http.get(&stats).send().await.unwrap().json().await.unwrap();
        let after = clock.now();
        Sample {
            at: (before + after) / 2.0,
            wall: Clock::wall() - (after - before) / 2.0,
            count: v["total_requests"].as_f64().unwrap(),
        }
    };
    // The first before the client starts, so that its start falls between two samples
    // however long the client takes to start (a sample a few milliseconds after the
    // start, the first read's connection being slow, failed a run).
    let mut samples: Vec<Sample> = vec![read().await];
    let child = cmd.spawn().unwrap();
    let output = tokio::spawn(async move { child.wait_with_output().await });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let give_up = tokio::time::Instant::now() + RUN_LIMIT;
    while !output.is_finished() {
        assert!(tokio::time::Instant::now() < give_up, "the run did not end");
        tick.tick().await;
        samples.push(read().await);
    }
    // One more, now that the load is over.
    samples.push(read().await);
    let out = output.await.unwrap().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let s = &report["scenarios"][0];
    assert_eq!(s["requests"]["total"], 10_000, "{}", s["requests"]);
    assert_eq!(s["requests"]["unsent"], 0);
    assert_eq!(s["server_metrics"]["status"], "match");

    // Each stage: what the profile scheduled, sent in it.
    let stages = s["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["up", "hold", "down"]);
    let mut sum = 0;
    for (t, (scheduled, from, to)) in
        stages
            .iter()
            .zip([(2_500, 0.0, R), (5_000, R, R), (2_500, R, 0.0)])
    {
        assert_eq!(t["scheduled"], scheduled, "{t}");
        assert_eq!(
            (t["from"].as_f64(), t["to"].as_f64()),
            (Some(from), Some(to)),
            "{t}"
        );
        let requests = t["requests"].as_u64().unwrap();
        assert!(requests.abs_diff(scheduled) <= 2, "{t}");
        sum += requests;
    }
    assert_eq!(sum, 10_000);

    // Second by second, the client's timeline and the server's counter follow the profile.
    let points = s["timeline"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 15, "{}", s["timeline"]);
    let start = place(&samples, s["started_at_unix_ms"].as_f64().unwrap());
    for (k, point) in points.iter().enumerate() {
        let expected = due_by(R, k as f64 + 1.0) - due_by(R, k as f64);
        let client = point["requests"].as_f64().unwrap();
        assert!(
            (client - expected).abs() <= expected * 0.05,
            "second {k}: the client completed {client}, the profile has {expected}"
        );
        let at = |secs: f64| start + secs * 1e3;
        let server =
            interpolate(&samples, at(k as f64 + 1.0)) - interpolate(&samples, at(k as f64));
        assert!(
            (server - expected).abs() <= expected * 0.05,
            "second {k}: the server counted {server:.1}, the profile has {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_stages_set_the_connections_at_work() {
    // /paced answers in 20 ms: each connection at work carries about 50 requests/s.
    let (url, _stub) = spawn_stub(Stub::default()).await;
    let path =
        std::env::temp_dir().join(format!("floodgate-load-stages-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[stage]]\nname = \"four\"\nduration = \"0s\"\nconcurrency = 4\n\n[[stage]]\nname = \"hold-four\"\nduration = \"2s\"\nconcurrency = 4\n\n[[stage]]\nname = \"one\"\nduration = \"0s\"\nconcurrency = 1\n\n[[stage]]\nname = \"hold-one\"\nduration = \"2s\"\nconcurrency = 1\n",
    )
    .unwrap();
    let run = crate::run::run_load(
        &quick_args(
            &url,
            &[
                "--path",
                "/paced",
                "--no-server-metrics",
                "--stages",
                path.to_str().unwrap(),
            ],
        ),
        &[],
    )
    .await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let s = &report["scenarios"][0];
    assert_eq!(s["load_model"]["type"], "closed");
    assert_eq!(s["load_model"]["concurrency"], 4, "the peak");
    let stages = s["stages"].as_array().unwrap();
    let rps = |name: &str| {
        stages.iter().find(|t| t["name"] == name).unwrap()["rps"]
            .as_f64()
            .unwrap()
    };
    let (four, one) = (rps("hold-four"), rps("hold-one"));
    // At most 50/s per connection; a loaded test machine may give less, not more.
    assert!(
        (100.0..=210.0).contains(&four),
        "four connections: {four}/s"
    );
    assert!((25.0..=52.5).contains(&one), "one connection: {one}/s");
    assert!(four > 2.5 * one, "four connections {four}/s, one {one}/s");
    assert!(s["duration_secs"].as_f64().unwrap() < 4.5);
    assert_eq!(rps("four"), 0.0, "a jump lasts no time");
}

#[tokio::test]
async fn profiles_are_checked_before_anything_runs() {
    for args in [
        &["--stage", "5s:100/s", "--stage", "5s:10"][..],
        &["--stage", "5s:0/s"],
        &["--stage", "5s:100/s", "--rate", "10"],
        &["--stage", "5s:100/s", "--duration", "10s"],
        &["--stage", "5s"],
        &["--stages", "/nonexistent/stages.toml"],
    ] {
        let run = crate::run::run_load(args, &[]).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_follows_the_stages_by_time() {
    let (url, _stub) = spawn_stub(Stub::default()).await;
    // Closed loop: the profile's length is its time, not a count of requests.
    let run = crate::run::run_load(
        &[
            "--url",
            &url,
            "--warmup",
            "0",
            "--path",
            "/paced",
            "--stage",
            "up=1s:2",
            "--stage",
            "hold=1s:2",
            "--report-interval",
            "300ms",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("Progress: "))
        .collect();
    assert!(lines.len() >= 4, "{}", run.stderr);
    assert!(
        lines[0].starts_with("Progress: 0s/2s (") && lines[0].contains("| Stage up (1/2): "),
        "{}",
        lines[0]
    );
    let last = lines.last().unwrap();
    assert!(
        last.contains("s/2s (") && last.contains("| Stage hold (2/2): 2 connections | RPS: "),
        "{last}"
    );
    assert!(
        !run.stderr.contains("18,446,744"),
        "no count of an unbounded run: {}",
        run.stderr
    );
}
