//! The module rules the README states, checked on the source: data flows one way between the
//! top-level modules (no cycle), the transport-free modules use no web framework, the
//! transports take nothing from each other, the pool or the store, and configuration depends
//! on nothing else in the crate. The load client (`crates/floodgate-load`)
//! is held to the first rule too, with its command line on top: none of its modules builds on
//! `cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that must not know which transport a call came from.
const TRANSPORT_FREE: &[&str] = &[
    "admission",
    "call",
    "dependency",
    "domain",
    "pool",
    "error",
    "config",
    "health",
];
/// Crates that are transports.
const FRAMEWORKS: &[&str] = &["axum::", "tonic::"];
/// The modules a transport-free one must not build on.
const TRANSPORT_BOUND: &[&str] = &["http", "grpc", "transport", "app", "state"];
/// Dependencies between top-level modules that must never be: `(module, on, why)`.
const NEVER: &[(&str, &str, &str)] = &[
    ("grpc", "http", "what the transports share is `call`'s"),
    ("http", "grpc", "what the transports share is `call`'s"),
    (
        "http",
        "pool",
        "a transport reaches the work through the domain",
    ),
    (
        "grpc",
        "pool",
        "a transport reaches the work through the domain",
    ),
    (
        "http",
        "store",
        "a transport names the domain's types, not the store's",
    ),
    (
        "grpc",
        "store",
        "a transport names the domain's types, not the store's",
    ),
];

/// `(top-level module, path, text)` of a source file.
type Source = (String, String, String);
/// Which top-level modules each one refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<Source>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let module = top.map_or(name.clone(), str::to_owned);
        if path.is_dir() {
            sources(&path, Some(&module), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((module, path.display().to_string(), text));
        }
    }
}

/// `crate::name` references in `text` (imports, paths and doc links alike).
fn crate_refs(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// The server's module graph and its sources.
fn graph() -> (Graph, Vec<Source>) {
    graph_of("src")
}

/// The module graph of the crate whose sources are in `src` (relative to the workspace root).
fn graph_of(src: &str) -> (Graph, Vec<Source>) {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(src),
        None,
        &mut files,
    );
    let mut deps = Graph::new();
    for (module, _, text) in &files {
        let entry = deps.entry(module.clone()).or_default();
        entry.extend(crate_refs(text).into_iter().filter(|d| d != module));
    }
    (deps, files)
}

/// A path around a cycle through `start`, if there is one.
fn cycle_through(
    deps: &Graph,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in deps.get(at).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_owned());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_through(deps, start, next, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

/// A cycle anywhere in `deps`, if there is one.
fn any_cycle(deps: &Graph) -> Option<Vec<String>> {
    deps.keys().find_map(|module| {
        let mut path = vec![module.clone()];
        cycle_through(deps, module, module, &mut path)
    })
}

#[test]
fn top_level_modules_depend_on_each_other_one_way() {
    let (deps, _) = graph();
    assert!(deps.contains_key("http") && deps.contains_key("admission"));
    if let Some(cycle) = any_cycle(&deps) {
        panic!("modules import each other: {}", cycle.join(" -> "));
    }
}

#[test]
fn load_client_modules_depend_on_each_other_one_way() {
    let (deps, _) = graph_of("crates/floodgate-load/src");
    assert!(deps.contains_key("cli") && deps.contains_key("run"));
    if let Some(cycle) = any_cycle(&deps) {
        panic!(
            "floodgate-load modules import each other: {}",
            cycle.join(" -> ")
        );
    }
    // The crate root only re-exports what the binary calls.
    for (module, uses) in deps.iter().filter(|(m, _)| *m != "cli" && *m != "lib") {
        assert!(
            !uses.contains("cli"),
            "floodgate-load's {module} depends on cli, the command line"
        );
    }
}

/// Where a transport-free module knows a transport: a web framework in its source, or a
/// dependency on a module that serves one.
fn transport_bound(deps: &Graph, files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for (module, path, text) in files {
        if TRANSPORT_FREE.contains(&module.as_str()) {
            for framework in FRAMEWORKS.iter().filter(|f| text.contains(**f)) {
                found.push(format!("{path} uses {framework}"));
            }
            let uses = deps.get(module).into_iter().flatten();
            for transport in uses.filter(|d| TRANSPORT_BOUND.contains(&d.as_str())) {
                found.push(format!("{module} ({path}) depends on {transport}"));
            }
        }
    }
    found
}

/// The dependencies in `deps` that [`NEVER`] forbids, each with why.
fn forbidden(deps: &Graph) -> Vec<String> {
    NEVER
        .iter()
        .filter(|(module, on, _)| deps.get(*module).is_some_and(|d| d.contains(*on)))
        .map(|(module, on, why)| format!("{module} depends on {on}: {why}"))
        .collect()
}

#[test]
fn transport_free_modules_use_no_web_framework() {
    let (deps, files) = graph();
    let found = transport_bound(&deps, &files);
    assert!(found.is_empty(), "{}", found.join("\n"));
    assert!(
        deps["config"].is_empty(),
        "config depends on {:?}",
        deps["config"]
    );
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let mut deps = Graph::new();
    deps.entry("a".into()).or_default().insert("b".into());
    deps.entry("b".into()).or_default().insert("c".into());
    deps.entry("c".into()).or_default().insert("a".into());
    let cycle = cycle_through(&deps, "a", "a", &mut vec!["a".into()]).unwrap();
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    assert_eq!(any_cycle(&deps).unwrap(), ["a", "b", "c", "a"]);
    deps.get_mut("c").unwrap().clear();
    assert!(cycle_through(&deps, "a", "a", &mut vec!["a".into()]).is_none());
    assert!(any_cycle(&deps).is_none());
}

#[test]
fn transports_take_nothing_from_each_other_the_pool_or_the_store() {
    let (deps, _) = graph();
    assert!(deps.contains_key("grpc") && deps.contains_key("call"));
    let found = forbidden(&deps);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_transport_that_takes_from_another_the_pool_or_the_store() {
    let mut deps = Graph::new();
    for (module, on, _) in NEVER {
        deps.entry((*module).into())
            .or_default()
            .insert((*on).into());
    }
    let found = forbidden(&deps);
    assert_eq!(found.len(), NEVER.len(), "{found:?}");
    for (module, on) in [
        ("grpc", "http"),
        ("http", "grpc"),
        ("http", "pool"),
        ("grpc", "pool"),
        ("http", "store"),
        ("grpc", "store"),
    ] {
        let prefix = format!("{module} depends on {on}:");
        assert!(found.iter().any(|f| f.starts_with(&prefix)), "{found:?}");
    }
    let mut allowed = Graph::new();
    for transport in ["http", "grpc"] {
        let uses = allowed.entry(transport.into()).or_default();
        uses.extend(["call", "domain", "admission"].map(String::from));
    }
    assert!(forbidden(&allowed).is_empty());
}

#[test]
fn the_checker_sees_call_knowing_a_transport() {
    let mut deps = Graph::new();
    deps.entry("call".into())
        .or_default()
        .extend(["http", "grpc", "observability"].map(String::from));
    let files = [(
        "call".to_owned(),
        "src/call/mod.rs".to_owned(),
        "use axum::extract::ConnectInfo;\nuse tonic::Status;".to_owned(),
    )];
    let found = transport_bound(&deps, &files);
    assert_eq!(
        found,
        [
            "src/call/mod.rs uses axum::",
            "src/call/mod.rs uses tonic::",
            "call (src/call/mod.rs) depends on grpc",
            "call (src/call/mod.rs) depends on http",
        ]
    );
    deps.get_mut("call")
        .unwrap()
        .retain(|d| d == "observability");
    let clean = [(
        files[0].0.clone(),
        files[0].1.clone(),
        "use http::HeaderMap;".to_owned(),
    )];
    assert!(transport_bound(&deps, &clean).is_empty());
}
