//! The two test tiers stay apart, checked on the test sources: the in-process tier (this
//! binary and the load client's tests/load) starts no program but the binaries under test
//! and the base system's `kill`, `mount`, `umount` and `df`; and every program the services
//! tier asks for is checked by scripts/check-test-tools.sh, which scripts/test.sh runs before
//! compiling, so a missing one fails there, by name.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The files a test binary is made of: its `main.rs` and the modules it declares there
/// (`#[path]` ones included).
fn binary_sources(main: &str) -> Vec<(PathBuf, String)> {
    let main = Path::new(ROOT).join(main);
    let dir = main.parent().unwrap().to_owned();
    let text = std::fs::read_to_string(&main).unwrap();
    let mut files = vec![main.clone()];
    let mut path_attr = None;
    for line in text.lines().map(str::trim) {
        if let Some(p) = line
            .strip_prefix("#[path = \"")
            .and_then(|p| p.strip_suffix("\"]"))
        {
            path_attr = Some(p.to_owned());
        } else if let Some(name) = line.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
            files.push(match path_attr.take() {
                Some(p) => dir.join(p),
                None => dir.join(format!("{name}.rs")),
            });
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f, text)
        })
        .collect()
}

/// The first argument of each `Command::new(…)` in `text`, as written.
fn commands(text: &str) -> Vec<String> {
    text.match_indices("Command::new(")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let mut depth = 0;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => return true,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(rest.len(), |(j, _)| j);
            rest[..end].trim().to_owned()
        })
        .collect()
}

/// The text of scripts/check-test-tools.sh.
fn preflight() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("scripts/check-test-tools.sh")).unwrap()
}

/// Whether scripts/check-test-tools.sh checks `program` (a `deb` or a `tools` line).
fn preflight_checks(program: &str) -> bool {
    let script = preflight();
    script.lines().any(|l| {
        l.starts_with(&format!("deb {program} ")) || l.starts_with(&format!("tools {program} "))
    })
}

#[test]
fn the_in_process_tier_starts_no_outside_program() {
    let allowed = [
        "\"kill\"",
        "\"mount\"",
        "\"umount\"",
        "\"df\"",
        "env!(\"CARGO_BIN_EXE_floodgate\")",
        "LOAD_BIN",
    ];
    let mut found = Vec::new();
    for main in [
        "tests/api/main.rs",
        "crates/floodgate-load/tests/load/main.rs",
    ] {
        // This file names what it looks for.
        for (file, text) in binary_sources(main)
            .into_iter()
            .filter(|(f, _)| !f.ends_with("tiers.rs"))
        {
            for command in commands(&text) {
                if !allowed.contains(&command.as_str()) {
                    found.push(format!("{}: Command::new({command})", file.display()));
                }
            }
            for helper in [
                "test_tools",
                "redis_server",
                "postgres_server",
                "venv_python",
            ] {
                if text.contains(helper) {
                    found.push(format!("{}: uses {helper}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the in-process tier must need nothing but the Rust build; move these tests to \
         tests/services/:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_program_the_services_tier_asks_for_is_checked_before_compiling() {
    let mut unchecked = Vec::new();
    let mut asked = 0;
    for main in [
        "tests/services/main.rs",
        "crates/floodgate-load/tests/services/main.rs",
    ] {
        for (file, text) in binary_sources(main) {
            // `Command::new("name")`, and `tool("name")` (which finds an installed tool).
            let named = commands(&text)
                .into_iter()
                .filter_map(|c| Some(c.strip_prefix('"')?.strip_suffix('"')?.to_owned()))
                .chain(
                    text.match_indices("tool(\"")
                        .map(|(i, m)| text[i + m.len()..].split('"').next().unwrap().to_owned()),
                );
            for program in named {
                asked += 1;
                if !["kill", "id", "setpriv"].contains(&program.as_str())
                    && !preflight_checks(&program)
                {
                    unchecked.push(format!("{}: {program}", file.display()));
                }
            }
        }
    }
    assert!(
        asked >= 8,
        "the services tier's programs were not found ({asked})"
    );
    let script = preflight();
    for other in ["postgresql", "tools venv", "python modules"] {
        assert!(script.contains(&format!("\"{other}\"")), "{other}");
    }
    assert!(
        unchecked.is_empty(),
        "scripts/check-test-tools.sh does not check these programs:\n{}",
        unchecked.join("\n")
    );
}
