//! Runs the SQL cases of `tests/sql/` through `rivulet replay` and compares every output stream
//! with the expected rows (see `tests/sql/README.md` for the layout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql")
}

fn read_rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

fn as_instant(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return t.and_utc().timestamp_nanos_opt();
        }
    }
    None
}

/// Equal as the cases mean it: numbers within 1e-9 relative, timestamps as instants.
fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
        }
        (Value::String(a), Value::String(b)) => {
            a == b || matches!((as_instant(a), as_instant(b)), (Some(x), Some(y)) if x == y)
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (a, b) => a == b,
    }
}

/// Differences between two multisets of rows, or `None` when they match.
fn compare(expected: &[Value], actual: &[Value]) -> Option<String> {
    let mut unmatched: Vec<&Value> = actual.iter().collect();
    let mut missing = Vec::new();
    for e in expected {
        match unmatched.iter().position(|a| same(e, a)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => missing.push(e),
        }
    }
    if missing.is_empty() && unmatched.is_empty() {
        return None;
    }
    let mut msg = String::new();
    for m in missing {
        msg.push_str(&format!("    missing:    {m}\n"));
    }
    for u in unmatched {
        msg.push_str(&format!("    unexpected: {u}\n"));
    }
    Some(msg)
}

/// Error-output rows as the cases give them: kind and the original record as JSON.
fn error_rows(path: &Path) -> Vec<Value> {
    read_rows(path)
        .into_iter()
        .map(|row| {
            let raw = row["rawData"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default();
            let record: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            serde_json::json!({ "kind": row["errorCode"], "record": record })
        })
        .collect()
}

fn run_case(dir: &Path) -> Result<(), String> {
    let out = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rivulet"));
    cmd.arg("replay")
        .arg("--sql")
        .arg(dir.join("query.sql"))
        .arg("--input")
        .arg(dir.join("input.ndjson"))
        .arg("--output-dir")
        .arg(out.path());
    if let Ok(args) = std::fs::read_to_string(dir.join("args")) {
        cmd.args(args.split_whitespace());
    }
    let output = cmd.output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "  replay failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut problems = String::new();
    let expected_dir = dir.join("expected");
    let mut expected: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(&expected_dir).map_err(|e| e.to_string())? {
        let p = entry.map_err(|e| e.to_string())?.path();
        if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            expected.insert(name.to_owned(), p.clone());
        }
    }
    for (name, path) in &expected {
        let actual_path = out.path().join(name);
        let diff = if name == "error_stream.ndjson" {
            compare(&read_rows(path), &error_rows(&actual_path))
        } else {
            compare(&read_rows(path), &read_rows(&actual_path))
        };
        if let Some(d) = diff {
            problems.push_str(&format!("  {name}:\n{d}"));
        }
    }
    for entry in std::fs::read_dir(out.path()).map_err(|e| e.to_string())? {
        let p = entry.map_err(|e| e.to_string())?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !expected.contains_key(&name) {
            let rows = if name == "error_stream.ndjson" {
                error_rows(&p)
            } else {
                read_rows(&p)
            };
            if !rows.is_empty() {
                problems.push_str(&format!("  {name} (expected empty):\n"));
                for r in rows {
                    problems.push_str(&format!("    unexpected: {r}\n"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[test]
fn sql_cases_match_their_expected_output() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/sql exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("query.sql").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "the SQL cases are missing");
    let only = std::env::var("RIVULET_SQL_CASE").ok();
    let mut failures = String::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        if let Err(e) = run_case(dir) {
            failures.push_str(&format!("case {name}:\n{e}\n"));
        }
    }
    assert!(failures.is_empty(), "SQL cases failed:\n{failures}");
}
