//! The module layers of `src/`, checked from the source: a module may use the modules of its own
//! layer's lower neighbours and below, never one above it, and no two modules use each other.
//!
//! The layers (lowest first) are the table in [`LAYERS`]; the README's layout section draws the
//! same map. A `crate::…` path, a `use crate::{…}` group and a crate-root item (resolved through
//! `src/lib.rs`'s re-exports to the module defining it) all count as a use. Unit tests (a trailing
//! `#[cfg(test)] mod tests`), `src/fuzz.rs`, `src/bin/` and test doubles are not part of the
//! layering.
//!
//! The same walk bounds the length of functions: none over [`MAX_FUNCTION_LINES`] lines outside
//! tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may use modules of lower layers and of its
/// own layer when the pair is listed in [`SAME_LAYER`].
const LAYERS: &[&[&str]] = &[
    // The ground: types every part shares, and nothing else.
    &["error"],
    &["record"],
    &["ack", "checkpoint", "metrics", "transform"],
    // Codecs, AWS plumbing and encryption.
    &["format", "aws", "discover"],
    &["crypto"],
    // Sources, the KDA dialect's front end, the SQL engine, guest code.
    &["source"],
    &["kda"],
    &["sql"],
    &["wasm"],
    // Outputs and the Kinesis connector (its source, sink and the KPL).
    &["sink"],
    &["kinesis"],
    // The pipeline, then what configures it.
    &["pipeline"],
    &["config"],
    // Provisioning what a pipeline file names.
    &["setup"],
    // Benchmarks of whole pipelines.
    &["bench"],
];

/// Same-layer uses that are allowed (user, used).
const SAME_LAYER: &[(&str, &str)] = &[];

/// Files that are not part of the layering.
const OUTSIDE: &[&str] = &["fuzz.rs", "bin", "lib.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for files outside the layering).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    if OUTSIDE.contains(&first.as_str()) {
        return None;
    }
    let name = rel.file_name()?.to_str()?;
    // Unit-test files and test doubles.
    if rel.components().count() > 1 && (name == "tests.rs" || name == "fake.rs") {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// The source without comments and without a trailing unit-test module.
fn code(text: &str) -> String {
    // A trailing unit-test module (`mod tests;` in a file of its own is not one).
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Crate-root names (`crate::Record`) to the module they are re-exported from, from `lib.rs`.
fn root_items() -> BTreeMap<String, String> {
    let lib = code(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    let mut out = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(at) = stmt.find("pub use ") else {
            continue;
        };
        let rest = stmt[at + 8..].trim();
        let module = ident_at(rest).to_owned();
        let items = &rest[module.len()..];
        for word in items.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.is_empty() {
                out.entry(word.to_owned()).or_insert_with(|| module.clone());
            }
        }
    }
    out
}

/// The top-level modules `text` uses.
fn uses(
    text: &str,
    modules: &BTreeSet<String>,
    roots: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut name = |n: &str| {
        if modules.contains(n) {
            out.insert(n.to_owned());
        } else if let Some(m) = roots.get(n) {
            out.insert(m.clone());
        }
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, C, d::{..}}`: the first name of each top-level member.
            let mut depth = 0;
            let mut member = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => member = true,
                    c if member && (c.is_ascii_alphanumeric() || c == '_') => {
                        name(ident_at(&group[j..]));
                        member = false;
                    }
                    _ => {}
                }
            }
        } else {
            name(ident_at(rest));
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let roots = root_items();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(file).unwrap());
        let used = uses(&text, &modules, &roots);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(used.into_iter().filter(|u| *u != module));
    }
    graph
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/layers.rs"))
}

#[test]
fn no_module_uses_one_above_it() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (user, used) in &graph {
        for u in used {
            let (a, b) = (layer(user), layer(u));
            if b > a || (a == b && !SAME_LAYER.contains(&(user.as_str(), u.as_str()))) {
                wrong.push(format!("{user} (layer {a}) uses {u} (layer {b})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layers:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_import_cycle() {
    let graph = graph();
    // A cycle exists when some module reaches itself.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                cycles.push(start.clone());
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {cycles:?}\n{graph:#?}"
    );
}

#[test]
fn the_checker_sees_every_kind_of_use() {
    let modules: BTreeSet<String> = ["sql", "sink", "format"].map(String::from).into();
    let roots: BTreeMap<String, String> = [("Record".to_owned(), "record".to_owned())].into();
    let text = "use crate::{format::Column, Record};\nfn f() { crate::sink::x(); }";
    let found = uses(text, &modules, &roots);
    assert_eq!(
        found,
        ["format", "record", "sink"].map(String::from).into(),
        "paths, groups and root items"
    );
}

/// The longest a function may be, in lines from its signature to its closing brace.
const MAX_FUNCTION_LINES: usize = 120;

/// `(name, lines)` of each function in `code` (comments removed), by brace depth.
fn functions(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or(line);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(after) = rest.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name = ident_at(after).to_owned();
        // Counts braces outside string and character literals until the body closes.
        let (mut depth, mut opened, mut j) = (0i32, false, i);
        'lines: while j < lines.len() {
            let mut chars = lines[j].chars().peekable();
            let mut in_str = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_str => {
                        chars.next();
                    }
                    '"' => in_str = !in_str,
                    '\'' if !in_str => {
                        // A character literal ('{', '\'', '\\'); a lifetime has no closing quote.
                        let literal: String = chars.clone().take(3).collect();
                        if let Some(end) = literal.find('\'').filter(|&e| e > 0) {
                            for _ in 0..=end {
                                chars.next();
                            }
                        }
                    }
                    '{' if !in_str => {
                        depth += 1;
                        opened = true;
                    }
                    '}' if !in_str => depth -= 1,
                    ';' if !in_str && !opened => break 'lines,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                break;
            }
            j += 1;
        }
        if opened {
            out.push((name, j - i + 1));
        }
        i += 1;
    }
    out
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut long = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "fuzz.rs" || rel.ends_with("/tests.rs") {
            continue;
        }
        for (name, lines) in functions(&code(&std::fs::read_to_string(file).unwrap())) {
            if lines > MAX_FUNCTION_LINES {
                long.push((rel.clone(), name, lines));
            }
        }
    }
    let long: Vec<String> = long
        .iter()
        .map(|(f, n, l)| format!("{f}: {n} ({l} lines)"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: split them\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_length_of_a_function_is_counted_from_its_signature_to_its_closing_brace() {
    let code = "fn a() {\n    let s = \"}\";\n    let c = '{';\n}\nfn b<'x>(v: &'x str) -> &'x str {\n    v\n}\n";
    assert_eq!(
        functions(code),
        vec![("a".to_owned(), 4), ("b".to_owned(), 3)]
    );
}
