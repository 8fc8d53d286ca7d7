//! The module layers point one way (docs/architecture.md): a lower layer never imports a
//! higher one, and the engine's files import each other without a cycle. Read from the
//! sources, so a change that breaks the rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Files of the top-level module `module` whose code names `crate::X` for a forbidden `X`.
fn violations(module: &str, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src().join(module), &mut files);
    assert!(!files.is_empty(), "no sources under src/{module}");
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in forbidden {
                if code.contains(&format!("crate::{m}::"))
                    || code.contains(&format!("crate::{m}}}"))
                {
                    found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn lower_layers_import_nothing_above_them() {
    let above_stream = ["engine", "capi", "convert", "tokenizer", "sampling"];
    let rules: [(&str, &[&str]); 6] = [
        (
            "quant",
            &[
                "tensor", "format", "expert", "stream", "engine", "capi", "convert",
            ],
        ),
        (
            "tensor",
            &["format", "expert", "stream", "engine", "capi", "convert"],
        ),
        ("format", &["expert", "stream", "engine", "capi", "convert"]),
        ("expert", &["stream", "engine", "capi", "convert"]),
        ("stream", &above_stream),
        ("engine", &["capi", "convert"]),
    ];
    let mut all = Vec::new();
    for (module, forbidden) in rules {
        all.extend(violations(module, forbidden));
    }
    assert!(
        all.is_empty(),
        "imports against the layers:\n{}",
        all.join("\n")
    );
}

/// The engine module a file belongs to (`blocks` for `engine/blocks/ffn.rs`), `None` for
/// `engine/mod.rs`, which only declares and re-exports.
fn engine_node(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let node = first.trim_end_matches(".rs").to_string();
    (node != "mod").then_some(node)
}

/// Engine modules named by `text` through `crate::engine::X` or `super::X` (from a file at
/// `depth` directories below `engine/`).
fn engine_refs(text: &str, depth: usize) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let sup = "super::".repeat(depth + 1);
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for prefix in ["crate::engine::", sup.as_str()] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i + prefix.len()..];
                // `super::super::x` seen from a deeper file is handled by its own prefix.
                if prefix.starts_with("super") && rest.starts_with("super::") {
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name.chars().next().unwrap().is_lowercase() {
                    refs.insert(name);
                }
            }
        }
    }
    refs
}

#[test]
fn engine_files_import_each_other_without_a_cycle() {
    let engine = src().join("engine");
    let mut files = Vec::new();
    rust_files(&engine, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&engine).unwrap();
        let Some(node) = engine_node(rel) else {
            continue;
        };
        // Unit tests inside a file may use anything.
        let text = std::fs::read_to_string(f).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let depth = rel.components().count() - 1;
        let refs = engine_refs(text, depth);
        let e = edges.entry(node.clone()).or_default();
        e.extend(refs.into_iter().filter(|r| *r != node));
    }
    assert!(edges.len() > 5, "engine modules not found: {edges:?}");
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let i = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut state, &mut Vec::new()) {
            panic!(
                "engine modules import each other in a cycle: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The parser reads both spellings of an engine import.
    let refs = engine_refs("use super::model::Model;\nuse crate::engine::budget::X;", 0);
    assert_eq!(
        refs,
        BTreeSet::from(["budget".to_string(), "model".to_string()])
    );
    let deeper = engine_refs("use super::scratch::S;\nuse super::super::weights::W;", 1);
    assert_eq!(deeper, BTreeSet::from(["weights".to_string()]));
}
