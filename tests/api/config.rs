use crate::helpers::floodgate_command as floodgate;

#[test]
fn invalid_settings_exit_64_naming_setting_source_and_value() {
    for (var, value, setting) in [
        ("WORKER_COUNT", "abc", "pool.workers"),
        ("QUEUE_SIZE", "0", "pool.queue_size"),
        ("RATE_LIMIT", "-1", "rate_limit.requests_per_second"),
        ("REQUEST_TIMEOUT", "forever", "server.request_timeout"),
        ("SERVER_PORT", "nowhere", "server.address"),
    ] {
        let out = floodgate().env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(setting), "{err}");
        assert!(err.contains(var), "{err}");
        assert!(err.contains(value), "{err}");
    }
}

#[test]
fn an_access_log_path_that_cannot_be_opened_exits_64_naming_it() {
    let out = floodgate()
        .env("SERVER_PORT", "127.0.0.1:0")
        .env(
            "FLOODGATE__LOG__ACCESS_LOG_PATH",
            "/nonexistent-dir/access.log",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.access_log_path"), "{err}");
    assert!(err.contains("/nonexistent-dir/access.log"), "{err}");
}

#[test]
fn unknown_keys_in_a_config_file_are_rejected() {
    let dir = std::env::temp_dir().join(format!("floodgate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\nrequest_timout = \"5s\"\n").unwrap();
    let out = floodgate().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("request_timout"), "{err}");
}

#[test]
fn print_config_shows_the_effective_layers() {
    let dir = std::env::temp_dir().join(format!("floodgate-test-pc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extra.toml");
    std::fs::write(&file, "[pool]\nqueue_size = 123\nworkers = 3\n").unwrap();
    let out = floodgate()
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .env("ENVIRONMENT", "production")
        .env("WORKER_COUNT", "5")
        .env("FLOODGATE__COMPUTE__INTENSIVE_ROUNDS", "77")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("environment = \"production\""), "{text}");
    assert!(text.contains("queue_size = 123"), "file layer: {text}");
    assert!(
        text.contains("workers = 5"),
        "environment beats the file: {text}"
    );
    assert!(text.contains("intensive_rounds = 77"), "{text}");
    assert!(
        text.contains("format = \"json\""),
        "config/production.toml applies: {text}"
    );
}

/// jemalloc reads the binary's built-in options when it starts and skips, with a warning on
/// stderr, any it does not know: a misspelt one would silently not apply.
#[test]
fn the_allocator_accepts_every_built_in_option() {
    let out = floodgate().arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("<jemalloc>"), "{err}");
    // The check can fail: the same binary warns about an option it does not know.
    let out = floodgate()
        .arg("--print-config")
        .env("_RJEM_MALLOC_CONF", "tcache_gc_incr_byte:1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<jemalloc>: Invalid conf pair"), "{err}");
}

/// No value the configuration accepts makes start-up, a request or shutdown panic; values
/// out of range are refused by the loader (checked here as: a refusal is never a panic).
#[test]
fn no_accepted_setting_panics_at_start_request_or_stop() {
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_owned()),
            Just("1".to_owned()),
            Just("-1".to_owned()),
            Just("4294967296".to_owned()),
            Just("18446744073709551615".to_owned()),
            Just("1000000000000".to_owned()),
            (0u64..2_000_000).prop_map(|n| n.to_string()),
        ]
    }
    fn duration() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0s".to_owned()),
            Just("1ns".to_owned()),
            Just("100y".to_owned()),
            Just("500000000000y".to_owned()),
            (1u64..3000).prop_map(|n| format!("{n}ms")),
        ]
    }
    let numbers = [
        "QUEUE_SIZE",
        "FLOODGATE__SERVER__MAX_CONNECTIONS",
        "FLOODGATE__SERVER__MAX_BODY_BYTES",
        "FLOODGATE__SERVER__MAX_HEADER_BYTES",
        "INTENSIVE_ROUNDS",
        "RATE_LIMIT",
        "FLOODGATE__RATE_LIMIT__BURST",
        "FLOODGATE__CACHE__MAX_ENTRIES",
        "FLOODGATE__OTEL__MAX_QUEUE_SIZE",
    ];
    let durations = [
        "REQUEST_TIMEOUT",
        "SHUTDOWN_TIMEOUT",
        "FLOODGATE__SERVER__HEADER_READ_TIMEOUT",
        "FLOODGATE__SERVER__KEEP_ALIVE_TIMEOUT",
        "FLOODGATE__CACHE__TTL",
        "FLOODGATE__AUTH__JWT_LEEWAY",
        "FLOODGATE__CORS__MAX_AGE",
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let strategy = (
        proptest::collection::vec(number(), numbers.len()),
        proptest::collection::vec(duration(), durations.len()),
        0u32..10,
        -2i32..25,
    );
    proptest!(config, |((nums, durs, workers, nice) in strategy)| {
        let mut env: BTreeMap<String, String> = numbers
            .iter()
            .zip(&nums)
            .chain(durations.iter().zip(&durs))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        env.insert("WORKER_COUNT".into(), workers.to_string());
        env.insert("FLOODGATE__POOL__WORKER_NICENESS".into(), nice.to_string());
        env.insert("FLOODGATE__CACHE__ENABLED".into(), "true".into());
        env.insert("SERVER_PORT".into(), "127.0.0.1:0".into());
        let opts = floodgate::config::LoadOptions {
            config_dir: Some("/nonexistent".into()),
            config_file: None,
        };
        let Ok(settings) = floodgate::Settings::load_from(&opts, &|k| env.get(k).cloned(), &env)
        else {
            return Ok(());
        };
        rt.block_on(async {
            let app = floodgate::Application::build(settings).await.unwrap();
            let addr = app.local_addr();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(app.run_until_stopped(async {
                let _ = stopped.await;
            }));
            let r = reqwest::get(format!("http://{addr}/health/live")).await.unwrap();
            assert_eq!(r.status(), 200);
            let _ = stop.send(());
            running.await.expect("no panic while running or stopping").unwrap();
        });
    });
}
