//! `rivulet bench`: each built-in scenario end to end through the command line, its JSON summary,
//! and the comparison of two summaries.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn number(summary: &Value, key: &str) -> f64 {
    summary[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {summary}"))
}

#[test]
fn every_scenario_reports_plausible_figures_and_commits_every_record() {
    for (scenario, keys) in [
        ("ticker", 100.0),
        ("car", 1000.0),
        ("clickstream", 100_000.0),
    ] {
        let s = bench(&["--scenario", scenario, "--records", "30000"]);
        assert_eq!(s["scenario"], scenario, "{s}");
        assert_eq!(number(&s, "records"), 30_000.0, "{s}");
        // Every record was processed and its output stored: a latency for each, none left over.
        assert_eq!(number(&s, "latency_records"), 30_000.0, "{s}");
        assert_eq!(number(&s, "uncommitted"), 0.0, "{s}");
        assert_eq!(number(&s, "errors"), 0.0, "{s}");
        // 30,000 records at 10,000 per second of event time span 3 s: at most two 10-second
        // windows per key, and at least one row.
        let rows = number(&s, "rows_out");
        assert!(rows >= 1.0 && rows <= 2.0 * keys, "{scenario}: {rows} rows");
        for key in [
            "records_per_s",
            "mb_per_s",
            "cpu_s",
            "cpu_s_per_million",
            "peak_rss_mib",
        ] {
            assert!(number(&s, key) > 0.0, "{scenario}: {key} in {s}");
        }
        let l = &s["latency_ms"];
        let (p50, p99, p999, max) = (
            number(l, "p50"),
            number(l, "p99"),
            number(l, "p99_9"),
            number(l, "max"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max, "{l}");
    }
}

#[test]
fn out_of_order_records_are_late_only_past_the_allowed_lateness() {
    let run = |allowed: &str| {
        bench(&[
            "--scenario",
            "ticker",
            "--records",
            "50000",
            "--out-of-order",
            "0.3",
            "--lateness-ms",
            "3000",
            "--allowed-lateness-ms",
            allowed,
            "--sql",
            "SELECT ticker_symbol, COUNT(*) AS n FROM source \
             GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '1' SECOND)",
        ])
    };
    let within = run("3000");
    assert_eq!(number(&within, "late"), 0.0, "{within}");
    assert_eq!(number(&within, "errors"), 0.0, "{within}");
    assert_eq!(number(&within, "uncommitted"), 0.0, "{within}");
    // Set back by up to 3 s with no lateness allowed: some rows miss their window, and each of
    // them is counted as late in the error output, not lost.
    let past = run("0");
    let late = number(&past, "late");
    assert!(late > 0.0, "{past}");
    assert_eq!(number(&past, "errors"), late, "{past}");
    assert_eq!(number(&past, "uncommitted"), 0.0, "{past}");
}

#[test]
fn a_stateless_query_emits_one_row_per_record_and_compare_reads_two_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT car, speed FROM source";
    let first = bench(&["--scenario", "car", "--records", "20000", "--sql", sql]);
    assert_eq!(number(&first, "rows_out"), 20_000.0, "{first}");
    let path = dir.path().join("first.json");
    std::fs::write(&path, first.to_string()).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "bench",
            "--scenario",
            "car",
            "--records",
            "20000",
            "--sql",
            sql,
        ])
        .arg("--compare")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("change against"), "{stdout}");
    for figure in [
        "records/s",
        "latency p99 (ms)",
        "CPU s / M records",
        "peak RSS (MiB)",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(figure))
            .unwrap_or_else(|| panic!("no {figure} in {stdout}"));
        assert!(line.contains('→') && line.contains('%'), "{line}");
    }

    std::fs::write(&path, "{\"not\": \"a summary\"}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["bench", "--records", "10", "--compare"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a `rivulet bench --json` summary"),
        "{stderr}"
    );
}
