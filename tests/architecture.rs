//! The module graph of `src/` has no circle: every file's `crate::` and `super::` paths (and the
//! bare child paths of `api/mod.rs`) are read into a graph of modules, top-level modules as nodes
//! and `api`'s submodules as nodes of their own, and a circle fails the test, named.
//!
//! `http` must stay a leaf: the envelope and the route matcher are imported by everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules whose submodules are nodes of their own.
const SPLIT: &[&str] = &["api"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/api/tasks.rs` is `[api, tasks]`, `src/api/mod.rs` `[api]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The graph node of an absolute module path (after `crate::`).
fn node(
    path: &[String],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> String {
    let Some(first) = path.first() else {
        return String::new();
    };
    if !modules.contains(first) {
        // An item the crate root re-exports, such as `crate::App`.
        return reexports.get(first).cloned().unwrap_or_default();
    }
    match path.get(1) {
        Some(sub)
            if SPLIT.contains(&first.as_str()) && modules.contains(&format!("{first}::{sub}")) =>
        {
            format!("{first}::{sub}")
        }
        _ => first.clone(),
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every path starting at `rest` (the text right after `crate::` or `super::`), as segments:
/// `a::b::X` gives `[a, b, X]`; `a::{b, c::D}` gives `[a, b]` and `[a, c]`.
fn paths_at(rest: &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    let mut s = rest;
    loop {
        if let Some(group) = s.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            return group[..end]
                .split(',')
                .map(|item| {
                    let mut p = prefix.clone();
                    p.push(ident(item.trim()).to_string());
                    p
                })
                .filter(|p: &Vec<String>| p.last().is_some_and(|l| !l.is_empty()))
                .collect();
        }
        let id = ident(s);
        if id.is_empty() {
            return vec![prefix];
        }
        prefix.push(id.to_string());
        match s[id.len()..].strip_prefix("::") {
            Some(next) => s = next,
            None => return vec![prefix],
        }
    }
}

/// Starts of `needle` in `line` not inside a longer path or identifier.
fn starts<'a>(line: &'a str, needle: &str) -> Vec<&'a str> {
    line.match_indices(needle)
        .filter(|(i, _)| {
            let before = line[..*i].chars().last();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| &line[i + needle.len()..])
        .collect()
}

/// The modules of `src/`: every file, the module names (`api::tasks` for split ones) and the
/// items the crate root re-exports, by the module that owns them.
struct Crate {
    files: Vec<PathBuf>,
    modules: BTreeSet<String>,
    reexports: BTreeMap<String, String>,
}

fn read_crate() -> Crate {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let mut modules = BTreeSet::new();
    for f in &files {
        let m = module_path(f);
        if let Some(first) = m.first() {
            modules.insert(first.clone());
            if SPLIT.contains(&first.as_str()) && m.len() > 1 {
                modules.insert(format!("{first}::{}", m[1]));
            }
        }
    }
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut reexports = BTreeMap::new();
    for line in lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use "))
    {
        for p in paths_at(line) {
            if let (Some(m), Some(item)) = (p.first(), p.last()) {
                reexports.insert(item.clone(), m.clone());
            }
        }
    }
    Crate {
        files,
        modules,
        reexports,
    }
}

/// The submodules a split module's `mod.rs` declares (its bare paths to them are edges too).
fn declared_children(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("pub ");
            l.strip_prefix("mod ")?.strip_suffix(';').map(String::from)
        })
        .collect()
}

/// Every module path the file at module path `here` names, made absolute.
fn named_paths(text: &str, here: &[String], children: &[String]) -> Vec<Vec<String>> {
    // Inside an inline `mod tests { .. }` (always last in a file), `super` is the file.
    let mut scope = here.to_vec();
    let mut targets = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let decl = code.trim_start_matches("pub ");
        if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(" {")) {
            scope.push(name.to_string());
        }
        for rest in starts(line, "crate::") {
            targets.extend(paths_at(rest));
        }
        for rest in starts(line, "super::") {
            let mut up = scope[..scope.len() - 1].to_vec();
            let mut rest = rest;
            while let Some(r) = rest.strip_prefix("super::") {
                up.pop();
                rest = r;
            }
            targets.extend(paths_at(rest).into_iter().map(|p| [up.clone(), p].concat()));
        }
        for child in children {
            if !starts(line, &format!("{child}::")).is_empty() {
                targets.push(vec![here[0].clone(), child.clone()]);
            }
        }
    }
    targets
}

fn build_graph() -> Graph {
    let krate = read_crate();
    let mut graph = Graph::new();
    for f in &krate.files {
        let here = module_path(f);
        if here.is_empty() {
            continue; // lib.rs: the index of modules, resolved through `reexports`.
        }
        let from = node(&here, &krate.modules, &krate.reexports);
        let text = std::fs::read_to_string(f).unwrap();
        let children = if f.ends_with("mod.rs") && SPLIT.contains(&here[0].as_str()) {
            declared_children(&text)
        } else {
            Vec::new()
        };
        let edges = graph.entry(from.clone()).or_default();
        for t in named_paths(&text, &here, &children) {
            let to = node(&t, &krate.modules, &krate.reexports);
            if !to.is_empty() && to != from {
                edges.insert(to);
            }
        }
    }
    graph
}

/// A circle of `graph`, as the nodes met along it (first and last the same).
fn find_circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut circle = stack[i..].to_vec();
            circle.push(n.to_string());
            return Some(circle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circle_under_src() {
    let graph = build_graph();
    // The reading works: edges that exist are found, split modules are nodes of their own.
    let edge = |a: &str, b: &str| graph.get(a).is_some_and(|e| e.contains(b));
    assert!(edge("api::tasks", "http"), "{graph:#?}");
    assert!(edge("api", "api::catalogue"), "{graph:#?}");
    assert!(edge("api::task_route", "api::refusal"), "{graph:#?}");
    assert!(edge("server", "app"), "{graph:#?}");
    if let Some(circle) = find_circle(&graph) {
        panic!(
            "modules import each other in a circle: {}",
            circle.join(" -> ")
        );
    }
}

#[test]
fn http_is_a_leaf() {
    let graph = build_graph();
    let out = graph.get("http").cloned().unwrap_or_default();
    assert!(
        out.is_empty(),
        "src/http imports {out:?}; it must import nothing of the crate"
    );
}

#[test]
fn a_circle_is_found_and_named() {
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(find_circle(&g).unwrap().join(" -> "), "a -> b -> c -> a");
    g.get_mut("c").unwrap().remove("a");
    assert_eq!(find_circle(&g), None);
}
