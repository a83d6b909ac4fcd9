//! The Helm chart's rendered configuration, read by the real binary.

use crate::helpers::floodgate_command as floodgate;
use crate::test_tools::tool;

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
        let out = std::process::Command::new(tool("helm"))
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
