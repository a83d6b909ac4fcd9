//! Where the tests find the external tools scripts/install-test-tools.sh installs (on PATH,
//! or under `$FLOODGATE_TOOLS`, by default `~/.cache/floodgate-tools`), shared by the test
//! binaries that run them.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Where scripts/install-test-tools.sh puts the test tools.
fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("FLOODGATE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/floodgate-tools")))
}

/// Find an external tool on PATH or where `scripts/install-test-tools.sh` puts it; fail with
/// the way to install it otherwise (a test that needs a real tool never passes without it).
pub fn tool(name: &str) -> PathBuf {
    let tools = tools_dir();
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(t) = tools {
        dirs.push(t.join("bin"));
        dirs.push(t.join("venv/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is required by this test and was not found; install the test tools with scripts/install-test-tools.sh")
        })
}

/// The Python of the test tools' virtual environment, where their client libraries
/// (websockets, grpcio, Playwright) are (never the system's, which lacks them).
pub fn venv_python() -> PathBuf {
    tools_dir()
        .map(|t| t.join("venv/bin/python"))
        .filter(|p| p.is_file())
        .expect("the test tools' Python is required; install it with scripts/install-test-tools.sh")
}
