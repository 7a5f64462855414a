//! Rules of the source tree that a merge must not break, checked by reading `src/` as text:
//!
//! - **no import circles**: no file module imports another that (directly or through others) imports it
//!   back, and no top-level module (`run_dir`, `serve`, `cli`, ...) does either; a child naming its own
//!   folder module (`super::x` in `serve/app.rs`) is ordinary Rust and not counted;
//! - **short functions**: no function outside a test module is longer than 60 lines;
//! - **clap stays in `src/cli/`**: the library parses its values from strings (`FromStr`), and only the
//!   command line knows clap.
//!
//! The import graph is read from every `crate::`, `super::` and `self::` path (with their `{...}` groups,
//! nested or not), and a folder module naming its children; comments and `#[cfg(test)]` modules are left
//! out.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file module's path below `src/`: `["run_dir", "config"]`; `["run_dir"]` for `run_dir/mod.rs`, `[]`
/// for `lib.rs`, `["main"]` for the binary's `main.rs`.
type ModulePath = Vec<String>;

/// Every `.rs` file below `src/`, by module path, with its text (test modules and comments removed).
fn source_files() -> BTreeMap<ModulePath, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.insert(module_path(&src, &path), without_tests_and_comments(&read(&path)));
            }
        }
    }
    files
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn module_path(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The text without `#[cfg(test)] mod ... { ... }` blocks and `//` comments.
fn without_tests_and_comments(text: &str) -> String {
    let comments = Regex::new(r"//[^\n]*").unwrap();
    let text = comments.replace_all(text, "").into_owned();
    let test_module = Regex::new(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{").unwrap();
    let mut kept = String::new();
    let mut from = 0;
    for found in test_module.find_iter(&text) {
        if found.start() < from {
            continue;
        }
        kept.push_str(&text[from..found.start()]);
        let mut depth = 1;
        let mut end = found.end();
        for (offset, c) in text[found.end()..].char_indices() {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            if depth == 0 {
                end = found.end() + offset + 1;
                break;
            }
        }
        from = end;
    }
    kept.push_str(&text[from..]);
    kept
}

/// The longest prefix of `path` that is a file module.
fn resolve(files: &BTreeMap<ModulePath, String>, path: &[String]) -> Option<ModulePath> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|prefix| files.contains_key(prefix))
}

/// The paths a `use`-tree names, read from just after `crate::`, `super::` or `self::`: `a::b`,
/// `a::{b, c::{d, e}}`, `{a, b::c}`. Returns them and how many bytes of `text` the tree took.
fn tree_paths(text: &str) -> (Vec<Vec<String>>, usize) {
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut prefix = Vec::new();
    loop {
        let start = at;
        while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
            at += 1;
        }
        if at > start {
            prefix.push(text[start..at].to_string());
        }
        if text[at..].starts_with("::") && at > start {
            at += 2;
            continue;
        }
        if at == start && bytes.get(at) == Some(&b'{') {
            let mut paths = Vec::new();
            at += 1;
            loop {
                while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace() || *b == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    return (paths, at + 1);
                }
                let (inner, used) = tree_paths(&text[at..]);
                paths.extend(inner.into_iter().map(|p| prefix.iter().cloned().chain(p).collect()));
                at += used.max(1);
            }
        }
        return (vec![prefix], at);
    }
}

/// Which file modules each file module imports.
fn import_graph(files: &BTreeMap<ModulePath, String>) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let anchor = Regex::new(r"\b(crate|super|self)::").unwrap();
    let mut graph = BTreeMap::new();
    for (module, text) in files {
        let mut targets: Vec<ModulePath> = Vec::new();
        for found in anchor.captures_iter(text) {
            let whole = found.get(0).unwrap();
            let (paths, _) = tree_paths(&text[whole.end()..]);
            let base: ModulePath = match &found[1] {
                "crate" => Vec::new(),
                "super" => module[..module.len().saturating_sub(1)].to_vec(),
                _ => module.clone(),
            };
            for path in paths {
                // `super::super::x`: one folder up per `super`.
                let ups = path.iter().take_while(|p| p.as_str() == "super").count();
                let base = &base[..base.len().saturating_sub(ups)];
                targets.push(base.iter().cloned().chain(path.into_iter().skip(ups)).collect());
            }
        }
        for child in files.keys().filter(|other| other.len() == module.len() + 1 && other.starts_with(module)) {
            let bare = Regex::new(&format!(r"(?:^|[^\w:]){}::", regex::escape(child.last().unwrap()))).unwrap();
            if bare.is_match(text) {
                targets.push(child.clone());
            }
        }
        let imports: BTreeSet<ModulePath> = targets
            .iter()
            .map(|t| t.iter().filter(|p| !p.is_empty() && p.as_str() != "self").cloned().collect::<Vec<_>>())
            .filter_map(|t| resolve(files, &t))
            // A child using its own folder module (`super::x` into mod.rs) is not a circle.
            .filter(|target| target != module && !module.starts_with(target))
            .collect();
        graph.insert(module.clone(), imports);
    }
    graph
}

/// The groups of more than one node that reach each other (strongly connected components).
fn circles<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    let reach = |from: &N| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<N, BTreeSet<N>> = graph.keys().map(|n| (n.clone(), reach(n))).collect();
    let mut groups: Vec<Vec<N>> = Vec::new();
    for node in graph.keys() {
        let group: Vec<N> = graph
            .keys()
            .filter(|other| *other == node || (reachable[node].contains(*other) && reachable[*other].contains(node)))
            .cloned()
            .collect();
        if group.len() > 1 && !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups
}

fn shown(module: &ModulePath) -> String {
    if module.is_empty() { "lib".into() } else { module.join("/") }
}

#[test]
fn no_file_module_imports_one_that_imports_it_back() {
    let graph = import_graph(&source_files());
    let found: Vec<String> =
        circles(&graph).iter().map(|group| group.iter().map(shown).collect::<Vec<_>>().join(" ↔ ")).collect();
    assert!(found.is_empty(), "import circles in src/: {found:#?}");
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, imports) in import_graph(&source_files()) {
        let top = module.first().cloned().unwrap_or_else(|| "lib".into());
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(imports.iter().filter_map(|t| t.first().cloned()).filter(|t| *t != top));
    }
    // lib.rs and main.rs declare and start everything: they sit above every module.
    graph.remove("lib");
    graph.remove("main");
    let found = circles(&graph);
    assert!(found.is_empty(), "import circles between top-level modules of src/: {found:?}");
}

#[test]
fn the_circle_check_finds_a_circle() {
    let module = |path: &str| path.split('/').map(String::from).collect::<ModulePath>();
    let files: BTreeMap<ModulePath, String> = [
        ("a", "use crate::b::Thing;"),
        ("b", "fn f() { crate::c::g() }"),
        ("c", "use crate::{d::{self, Z}, a::X};"),
        ("d", "// use crate::a;"),
        ("e", ""),
        ("e/f", "use super::super::a::Y;"),
    ]
    .into_iter()
    .map(|(path, text)| (module(path), without_tests_and_comments(text)))
    .collect();
    let graph = import_graph(&files);
    assert_eq!(graph[&module("c")], [module("a"), module("d")].into_iter().collect());
    assert_eq!(graph[&module("e/f")], [module("a")].into_iter().collect());
    assert!(graph[&module("d")].is_empty(), "a comment is no import");
    assert_eq!(circles(&graph), vec![vec![module("a"), module("b"), module("c")]]);
}

/// `(file, first line, length)` of every function outside test modules, by counting braces from its
/// `fn` line.
fn function_lengths(path: &str, text: &str) -> Vec<(String, usize, usize)> {
    let start =
        Regex::new(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\S+\s+)?fn\s+\w+").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if !start.is_match(line) || line.trim_end().ends_with(';') {
            continue;
        }
        let (mut depth, mut opened) = (0i32, false);
        for (offset, body_line) in lines[index..].iter().enumerate() {
            for c in body_line.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                found.push((path.to_string(), index + 1, offset + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_is_longer_than_60_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    for (module, _) in source_files() {
        let candidates = [src.join(module.join("/")).with_extension("rs"), src.join(module.join("/")).join("mod.rs")];
        let Some(path) = candidates.iter().find(|p| p.is_file()) else { continue };
        // Line numbers of the file as it is, with test modules blanked (not removed).
        let text = read(path);
        let kept = without_tests_and_comments(&text);
        let shown = path.strip_prefix(&src).unwrap().display().to_string();
        long.extend(function_lengths(&shown, &kept).into_iter().filter(|(_, _, n)| *n > 60));
    }
    assert!(long.is_empty(), "functions over 60 lines (file, line in the file without tests, length): {long:?}");
}

#[test]
fn the_length_check_measures_a_function() {
    let text = "fn short() {\n    1\n}\n\npub fn longer(x: u8) -> u8 {\n    if x > 0 {\n        x\n    } else {\n        0\n    }\n}\n";
    assert_eq!(function_lengths("f.rs", text), vec![("f.rs".into(), 1, 3), ("f.rs".into(), 5, 7)]);
}

#[test]
fn clap_is_used_only_by_the_command_line() {
    let uses_clap = Regex::new(r"\bclap::|\buse clap\b").unwrap();
    let outside: Vec<String> = source_files()
        .into_iter()
        .filter(|(module, text)| {
            !matches!(module.first().map(String::as_str), Some("cli" | "main")) && uses_clap.is_match(text)
        })
        .map(|(module, _)| shown(&module))
        .collect();
    assert!(outside.is_empty(), "clap outside src/cli/: {outside:?}");
}
