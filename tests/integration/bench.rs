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

/// `--kinesis`: the load goes into a 4-shard stream and back through the Kinesis source. Every
/// record put is read and committed once, and the windows are those of the records as the SDK
/// reads them back from the stream.
#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_kinesis_stream_every_record_is_read_and_its_windows_emitted() {
    use rivulet::bench::{Bench, KinesisLoad, LoadOptions, Scenario};

    let Some((_moto, c)) = crate::kinesis::moto_stream("bench", 4).await else {
        return;
    };
    const RECORDS: u64 = 4_000;
    let summary = Bench::new(LoadOptions {
        scenario: Scenario::Ticker,
        records: Some(RECORDS),
        // 20 s of event time, so that the run has several windows per ticker.
        event_rate: 200.0,
        ..LoadOptions::default()
    })
    .kinesis(KinesisLoad::new("bench").client(c.clone()))
    .run()
    .await
    .unwrap();
    assert_eq!(summary.records, RECORDS, "{summary:?}");
    assert_eq!(summary.latency_records, RECORDS, "{summary:?}");
    assert_eq!(summary.uncommitted, 0, "{summary:?}");
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert_eq!(summary.kinesis_stream.as_deref(), Some("bench"));

    // The (ticker, 10 s window) pairs of what is in the stream, read back shard by shard.
    let mut windows = std::collections::HashSet::new();
    let mut read = 0;
    for (_, r) in crate::kinesis::read_back(&c, "bench").await {
        let v: Value = serde_json::from_slice(r.data().as_ref()).unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(v["event_time"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        windows.insert((v["ticker_symbol"].as_str().unwrap().to_owned(), t / 10_000));
        read += 1;
    }
    assert_eq!(read, RECORDS, "records in the stream");
    assert_eq!(summary.rows_out, windows.len() as u64, "{summary:?}");
}

/// The peak memory reported is the bench's own, not that of the process that started it: on
/// Linux `getrusage`'s peak survives exec, so a bench started by a large harness used to report
/// the harness's peak.
#[cfg(target_os = "linux")]
#[test]
fn peak_memory_is_the_bench_process_own() {
    // This process holds 1 GiB, touched, while it starts the bench.
    let held: Vec<u8> = vec![1; 1 << 30];
    let s = bench(&["--records", "20000"]);
    let peak = number(&s, "peak_rss_mib");
    assert!(peak > 0.0 && peak < 768.0, "peak {peak} MiB: {s}");
    assert_eq!(
        held.iter()
            .step_by(4096)
            .map(|&b| b as usize)
            .sum::<usize>(),
        1 << 18
    );
}
