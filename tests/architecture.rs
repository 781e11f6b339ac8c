//! The structure ARCHITECTURE.md describes, checked from the sources so it cannot drift:
//! top-level modules form layers with no import loop, SQL lives only in `src/catalog/`, and
//! the code and docs cite only documents that are in the repository.
// A test fails by panicking, so unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom layer up. A module may use only those listed before
/// it (and itself); ARCHITECTURE.md explains each layer.
const LAYERS: &[&str] = &[
    "codec", "locks", "glacier", "config", "client", "catalog", "store", "engine", "fs", "daemon",
    "cli",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/engine/retrieve.rs` -> `engine`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Every top-level module a source text names through `crate::`, including the members of
/// grouped imports (`use crate::{a, b::c}`).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names inside the braces, at brace depth 0 only.
            let mut depth = 0;
            let mut word = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => {
                        word.push(c)
                    }
                    _ => {
                        if !word.is_empty() {
                            out.insert(std::mem::take(&mut word));
                        }
                        if !c.is_whitespace() {
                            at_start = false;
                        }
                    }
                }
            }
            if !word.is_empty() {
                out.insert(word);
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(word);
        }
    }
    out
}

#[test]
fn top_level_modules_form_layers_without_loops() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(top) = top_module(&src, f) else {
            continue;
        };
        assert!(
            LAYERS.contains(&top.as_str()),
            "src/{top} is not in a layer: add it to LAYERS here and to ARCHITECTURE.md"
        );
        let text = std::fs::read_to_string(f).expect("source");
        for used in crate_refs(&text) {
            if used != top && LAYERS.contains(&used.as_str()) {
                uses.entry(top.clone())
                    .or_default()
                    .insert(format!("{used} ({})", f.display()));
            }
        }
    }
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m).expect("a layer");
    let mut upward = Vec::new();
    for (from, tos) in &uses {
        for to in tos {
            let to_mod = to.split(' ').next().unwrap_or_default();
            if rank(to_mod) > rank(from) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up a layer (a loop waiting to happen):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layer_check_sees_grouped_and_nested_imports() {
    let refs = crate_refs(
        "use crate::{codec::{names, timefmt}, glacier};\nlet x = crate::store::cache::f();",
    );
    let want: BTreeSet<String> = ["codec", "glacier", "store"].map(String::from).into();
    assert_eq!(refs, want);
}

/// Text that only SQL would hold: a statement keyword at the start of a string literal, or a
/// call that runs SQL.
fn sql_sites(text: &str) -> Vec<String> {
    const STATEMENTS: &[&str] = &[
        "\"SELECT ",
        "\"INSERT ",
        "\"UPDATE ",
        "\"DELETE FROM",
        "\"CREATE ",
        "\"DROP ",
        "\"PRAGMA ",
        "\"WITH ",
        "\"REPLACE ",
        "\"ALTER ",
        "\"BEGIN",
        "\"VACUUM",
    ];
    const CALLS: &[&str] = &[
        "rusqlite::",
        ".prepare_cached(",
        ".query_row(",
        ".execute_batch(",
        ".prepare(",
    ];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if STATEMENTS.iter().chain(CALLS).any(|s| line.contains(s)) {
            out.push(format!("{}: {}", i + 1, trimmed));
        }
    }
    out
}

#[test]
fn no_sql_outside_the_catalog() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f.starts_with(src.join("catalog")) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("source");
        for site in sql_sites(&text) {
            found.push(format!(
                "{}:{site}",
                f.strip_prefix(root()).unwrap_or(&f).display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside src/catalog/ (give the catalog a typed method instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_sql_check_finds_statements_and_calls() {
    assert_eq!(sql_sites("let q = \"SELECT ino FROM nodes\";").len(), 1);
    assert_eq!(sql_sites("c.query_row(q, [], f)").len(), 1);
    assert_eq!(sql_sites("// \"SELECT in a comment\"").len(), 0);
    assert_eq!(sql_sites("println!(\"selected {n}\")").len(), 0);
}

/// The project's own documents; anything else a file cites would leave its reader stranded.
#[test]
fn files_cite_only_documents_in_the_repository() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "scripts", "systemd", "examples", "emulator"] {
        let d = root.join(dir);
        if d.is_dir() {
            all_files(&d, &mut files);
        }
    }
    for f in std::fs::read_dir(&root).expect("root") {
        let p = f.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md" || x == "toml") {
            files.push(p);
        }
    }
    let mut cited = BTreeSet::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for word in text.split(|c: char| !(c.is_alphanumeric() || "-_./".contains(c))) {
            let Some(stem) = word.strip_suffix(".md") else {
                continue;
            };
            let name = stem.rsplit('/').next().unwrap_or(stem);
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || "-_".contains(c))
            {
                cited.insert((format!("{name}.md"), f.clone()));
            }
        }
    }
    let missing: Vec<String> = cited
        .iter()
        .filter(|(doc, _)| !root.join(doc).exists())
        .map(|(doc, f)| format!("{} cites {doc}", f.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "citations of documents not in the repository:\n{}",
        missing.join("\n")
    );
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("directory") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}
