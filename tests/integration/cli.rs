//! The `rivulet` binary: replay and run.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::data;

fn rivulet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rivulet"))
}

/// Runs `cmd` and asserts that it succeeded, showing its standard error when it did not.
fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `rivulet run` of a fixture that must be refused as a configuration error (exit status 2).
fn run_config_error(config: &str) -> String {
    let out = rivulet().arg("run").arg(data(config)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// `rivulet replay` of a fixture with ROWTIME from `rowtime`, writing into `dir`.
fn replay_into(dir: &Path, sql: &Path, input: &str, rowtime: &str, csv: bool) -> Output {
    let mut cmd = rivulet();
    cmd.arg("replay")
        .arg("--sql")
        .arg(sql)
        .arg("--input")
        .arg(data(input));
    if csv {
        cmd.args(["--input-format", "csv"]);
    }
    succeed(cmd.args(["--rowtime", rowtime, "--output-dir"]).arg(dir))
}

#[test]
fn replay_to_stdout_gives_the_expected_json_lines() {
    let out = rivulet()
        .args(["replay", "--sql"])
        .arg(data("replay_filter.sql"))
        .arg("--input")
        .arg(data("ticker_sample.ndjson"))
        .args(["--rowtime", "event_time"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = std::fs::read_to_string(data("replay_filter.expected.ndjson")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    // The line that is not JSON went to the error output (standard error here), not nowhere.
    assert!(stderr.contains("\"errorCode\":\"malformed\""), "{stderr}");
}

#[test]
fn replay_to_output_dir_writes_one_file_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay_into(
        dir.path(),
        &data("replay_filter.sql"),
        "ticker_sample.ndjson",
        "event_time",
        false,
    );
    assert!(out.stdout.is_empty());
    let expected = std::fs::read_to_string(data("replay_filter.expected.ndjson")).unwrap();
    let got = std::fs::read_to_string(dir.path().join("DESTINATION_SQL_STREAM.ndjson")).unwrap();
    assert_eq!(got, expected);
    let errors = std::fs::read_to_string(dir.path().join("error_stream.ndjson")).unwrap();
    assert_eq!(errors.lines().count(), 1);
    let e: serde_json::Value = serde_json::from_str(errors.trim()).unwrap();
    assert_eq!(e["errorCode"], "malformed");
    assert_eq!(e["rawData"], "bm90IGpzb24gYXQgYWxs"); // base64 of "not json at all"
}

#[test]
fn replay_with_no_output_rows_still_writes_empty_stream_files() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("none.sql");
    std::fs::write(&sql, "SELECT * FROM source WHERE price < 0").unwrap();
    let clean = dir.path().join("clean.ndjson");
    std::fs::write(&clean, "{\"price\": 1.0}\n").unwrap();
    succeed(
        rivulet()
            .arg("replay")
            .arg("--sql")
            .arg(&sql)
            .arg("--input")
            .arg(&clean)
            .arg("--output-dir")
            .arg(dir.path()),
    );
    for stream in ["DESTINATION_SQL_STREAM", "error_stream"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{stream}.ndjson"))).unwrap();
        assert_eq!(text, "", "{stream}");
    }
}

#[test]
fn replay_csv_with_epoch_millisecond_rowtime() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("q.sql");
    std::fs::write(
        &sql,
        "SELECT ticker_symbol, CAST(price AS DOUBLE) * 2 AS p2, ROWTIME FROM source",
    )
    .unwrap();
    replay_into(dir.path(), &sql, "ticks.csv", "event_ms", true);
    let got = std::fs::read_to_string(dir.path().join("DESTINATION_SQL_STREAM.ndjson")).unwrap();
    assert_eq!(
        got,
        "{\"ticker_symbol\":\"AMZN\",\"p2\":169.02,\"ROWTIME\":\"2026-01-01T00:00:00Z\"}\n\
         {\"ticker_symbol\":\"BRK,B\",\"p2\":801.0,\"ROWTIME\":\"2026-01-01T00:00:01Z\"}\n"
    );
    let errors = std::fs::read_to_string(dir.path().join("error_stream.ndjson")).unwrap();
    assert_eq!(errors.lines().count(), 1, "{errors}");
}

#[test]
fn run_with_an_unknown_key_exits_non_zero_naming_it() {
    let stderr = run_config_error("bad_key.toml");
    assert!(stderr.contains("rate_per_sec"), "{stderr}");
}

#[test]
fn run_with_a_stateful_query_exits_non_zero_naming_query_sql() {
    let stderr = run_config_error("bad_sql.toml");
    assert!(stderr.contains("query.sql"), "{stderr}");
    assert!(stderr.contains("without a window"), "{stderr}");
}

#[test]
fn run_quickstart_config_writes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml"),
    )
    .unwrap()
    .replace("rate = 2000", "rate = 50000");
    let cfg = dir.path().join("quickstart.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = rivulet()
        .arg("run")
        .arg(&cfg)
        .args(["--progress-interval", "0.05"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("10000 records in"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let file =
        std::fs::read_to_string(dir.path().join("quickstart-output/tech-movers.ndjson")).unwrap();
    assert_eq!(stdout, file);
    assert!(file.lines().count() > 0);
    for line in file.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["sector"], "TECHNOLOGY");
        assert!(v["change"].as_f64().unwrap().abs() > 4.0, "{line}");
    }
}

#[cfg(unix)]
#[test]
fn sigterm_stops_run_gracefully_and_flushes_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("forever.toml");
    std::fs::write(
        &cfg,
        "[source]\ntype = \"generator\"\nrate = 20000\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"all.ndjson\"\n",
    )
    .unwrap();
    let child = rivulet()
        .arg("run")
        .arg(&cfg)
        .args(["--progress-interval", "0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The summary line reports what was read; every one of those records is in the file.
    let summary = stderr
        .lines()
        .find(|l| l.contains("done in"))
        .unwrap_or_else(|| panic!("no summary line in: {stderr}"));
    let records_in: usize = summary
        .split(": ")
        .nth(2)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the count in {summary:?}"));
    assert!(records_in > 0, "{summary}");
    let lines = std::fs::read_to_string(dir.path().join("all.ndjson"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, records_in, "{summary}");
}

#[test]
fn explain_prints_the_streaming_plan() {
    let sql = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sql/having_and_post_projection/query.sql");
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sql/having_and_post_projection/input.ndjson");
    let out = succeed(
        rivulet()
            .arg("explain")
            .arg("--sql")
            .arg(&sql)
            .arg("--input")
            .arg(&input)
            .args(["--lateness-ms", "2500"]),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("statement 1 → stream DESTINATION_SQL_STREAM"),
        "{text}"
    );
    assert!(text.contains("window: tumbling"), "{text}");
    assert!(text.contains("on event time `ts`"), "{text}");
    assert!(text.contains("2500 ms allowed lateness"), "{text}");
    assert!(text.contains("per batch, before the window"), "{text}");
}
