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

/// The configuration file the Helm chart renders, for every values file it is tested with,
/// is accepted by the real binary (the chart and the settings cannot drift apart).
#[test]
fn every_configuration_the_chart_renders_is_accepted() {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/floodgate");
    let mut values: Vec<_> = std::fs::read_dir(chart.join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    values.sort();
    values.push(chart.join("values.yaml"));
    let dir = std::env::temp_dir().join(format!("floodgate-chart-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in &values {
        let out = std::process::Command::new(crate::helpers::tool("helm"))
            .args(["template", "t"])
            .arg(&chart)
            .arg("-f")
            .arg(file)
            .args(["--show-only", "templates/configmap.yaml"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8_lossy(&out.stdout);
        // The block scalar under `floodgate.toml: |`, indented by four spaces.
        let toml: String = rendered
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("floodgate.toml:"))
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        assert!(toml.contains("[server]"), "{}: {rendered}", file.display());
        let path = dir.join("floodgate.toml");
        std::fs::write(&path, &toml).unwrap();
        let run = floodgate()
            .arg("--config")
            .arg(&path)
            .arg("--print-config")
            .env("ENVIRONMENT", "production")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{} renders a configuration floodgate refuses:\n{toml}\n{}",
            file.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
