//! The crate's top-level modules import one another in one direction only,
//! read from the source (`src/**/*.rs`): every mention of `crate::NAME`,
//! in code or in a doc link, is an import of `NAME`.
//!
//! - No two modules import each other (nor any longer cycle).
//! - Imports go down the layers of [`LAYERS`] (or stay in one): the model
//!   knows nothing; stores, connectors and configuration know the model;
//!   the engine knows those; the API and the metrics exposition ask the
//!   engine; the command line is a client of the API (it reads its typed
//!   answers); the server (and the demo, which runs it) put the engine and
//!   the API on the network and run `serve`, which the command line only
//!   parses (`main` hands it over). So the engine never names the API
//!   (`crate::api`), nor the model the engine, nor the CLI the server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may import modules of its own layer or below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &["model", "data_dir", "duration", "mapping", "redact", "tls"],
    ),
    (
        "storage and configuration",
        &["store", "connectors", "config", "log", "auth"],
    ),
    ("engine", &["engine"]),
    ("HTTP surface", &["api", "metrics"]),
    ("command line", &["cli"]),
    ("server", &["server", "demo"]),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, members))| members.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// Where a module mentions another: `file:line`, the first one found.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The modules a line names after `crate::`: `crate::a::b` gives `a`,
/// `crate::{a, b::c}` gives `a` and `b`.
fn named(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let before = line[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `my_crate::`
        }
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            out.push(ident(&group[start..]));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            modules.entry(name).or_insert_with(Vec::new).push(path);
        }
    }
    let mut graph = Graph::new();
    for (module, paths) in &modules {
        let imports = graph.entry(module.clone()).or_default();
        let mut files = Vec::new();
        for path in paths {
            rust_files(path, &mut files);
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for other in named(line) {
                    if &other != module && modules.contains_key(&other) {
                        let at = format!(
                            "{}:{}",
                            file.strip_prefix(src.parent().unwrap()).unwrap().display(),
                            n + 1
                        );
                        imports.entry(other).or_insert(at);
                    }
                }
            }
        }
    }
    graph
}

/// The import graph, one module a line: `api -> auth config …`.
fn picture(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, imports)| {
            let names: Vec<&str> = imports.keys().map(String::as_str).collect();
            format!("{m} -> {}\n", names.join(" "))
        })
        .collect()
}

#[test]
fn the_source_is_read() {
    assert_eq!(named("use crate::engine::{Daemon, Site};"), ["engine"]);
    assert_eq!(
        named("use crate::{api, engine::Daemon};"),
        ["api", "engine"]
    );
    assert_eq!(named("/// see [`crate::api::router`]"), ["api"]);
    assert_eq!(
        named("$crate::routes!(x); my_crate::a"),
        Vec::<String>::new()
    );
    let graph = graph();
    for module in ["api", "engine", "model", "server", "store"] {
        assert!(graph.contains_key(module), "{module}: {graph:?}");
    }
    assert!(graph["engine"].contains_key("model"), "{}", picture(&graph));
    // `cargo test --test architecture -- --nocapture` shows it.
    println!("{}", picture(&graph));
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = graph();
    let mut pairs = Vec::new();
    for (a, imports) in &graph {
        for (b, at) in imports {
            if a < b {
                if let Some(back) = graph.get(b).and_then(|i| i.get(a)) {
                    pairs.push(format!(
                        "{a} imports {b} ({at}) and {b} imports {a} ({back})"
                    ));
                }
            }
        }
    }
    assert!(
        pairs.is_empty(),
        "{}\n\nthe graph:\n{}",
        pairs.join("\n"),
        picture(&graph)
    );
}

#[test]
fn there_is_no_cycle() {
    fn visit(
        graph: &Graph,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|m| m == module) {
            let mut cycle = path[i..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flat_map(|i| i.keys()) {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let graph = graph();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(&graph, module, &mut Vec::new(), &mut done) {
            panic!(
                "a cycle: {}\n\nthe graph:\n{}",
                cycle.join(" -> "),
                picture(&graph)
            );
        }
    }
}

#[test]
fn imports_go_down_the_layers() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        let Some((layer, layer_name)) = layer_of(module) else {
            wrong.push(format!(
                "src/{module} is in no layer: place it in LAYERS (tests/architecture.rs)"
            ));
            continue;
        };
        for (other, at) in imports {
            if let Some((other_layer, other_name)) = layer_of(other) {
                if other_layer > layer {
                    wrong.push(format!(
                        "{module} ({layer_name}) imports {other} ({other_name}, above it) at {at}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n\nthe graph:\n{}",
        wrong.join("\n"),
        picture(&graph)
    );
}

/// The one rule said by name: nothing under the engine names the API.
#[test]
fn the_engine_and_below_never_name_the_api() {
    let graph = graph();
    for module in ["engine", "store", "connectors", "model"] {
        if let Some(at) = graph.get(module).and_then(|i| i.get("api")) {
            panic!("{module} names crate::api at {at}");
        }
    }
}
