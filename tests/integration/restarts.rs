//! Restarts that always start: on a stream with nothing new, after the input's types changed, from
//! a damaged checkpoint. `rivulet run` as a user runs it, stopped and started again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;

use crate::kinesis::{
    json_lines, moto_stream, put_raw, spawn_run, stop_gracefully, write_pipeline_file,
};

async fn put_ids(c: &Client, stream: &str, ids: std::ops::Range<i64>) {
    let records = ids
        .map(|id| {
            (
                format!(r#"{{"id":{id},"key":"k{}"}}"#, id % 5),
                format!("k{}", id % 5),
            )
        })
        .collect();
    put_raw(c, stream, records).await;
}

/// Waits up to 30 s for `path` to hold `n` JSON lines.
async fn wait_for_lines(path: &Path, n: usize, log: &Path) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = json_lines(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines in {}; log:\n{}",
            lines.len(),
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_caught_up_stream_keeps_the_schema_it_inferred() {
    let Some((moto, c)) = moto_stream("quiet", 2).await else {
        return;
    };
    put_ids(&c, "quiet", 0..50).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |out: &str| -> PathBuf {
        write_pipeline_file(
            dir.path(),
            out,
            &format!(
                r#"
[source]
type = "kinesis"
stream = "quiet"
region = "us-east-1"
endpoint_url = "{}"
idle_poll_interval_ms = 200

[format]
type = "json"

[query]
sql = "SELECT id, key FROM source"

[[sinks]]
type = "file"
path = "{out}.ndjson"

[checkpoint]
path = "state/checkpoint"
interval_ms = 100
"#,
                moto.endpoint()
            ),
        )
    };
    // The first run infers the columns from the records, reads them all, and stops.
    let first = config("first");
    let mut child = spawn_run(&first, dir.path(), "0");
    wait_for_lines(
        &dir.path().join("first.ndjson"),
        50,
        &first.with_extension("log"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_gracefully(&mut child);
    // The second finds nothing new: it must start anyway (with the columns of the first run),
    // and not give up once the schema inference would have waited long enough.
    let second = config("second");
    let mut child = spawn_run(&second, dir.path(), "0");
    tokio::time::sleep(Duration::from_secs(12)).await;
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "the restart ended ({status}); its log:\n{}",
            std::fs::read_to_string(second.with_extension("log")).unwrap_or_default()
        );
    }
    put_ids(&c, "quiet", 50..60).await;
    let rows = wait_for_lines(
        &dir.path().join("second.ndjson"),
        10,
        &second.with_extension("log"),
    )
    .await;
    stop_gracefully(&mut child);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (50..60).collect::<Vec<_>>(), "only the new records");
    assert!(rows.iter().all(|r| r["key"].is_string()));
}

/// A windowed pipeline over a followed file, with a checkpoint; `key_type` is the key's SQL type.
fn windowed_config(dir: &Path, key_type: &str, out: &str) -> PathBuf {
    write_pipeline_file(
        dir,
        out,
        &format!(
            r#"
[source]
type = "file"
path = "input.ndjson"
follow = true

[format]
type = "json"
columns = [
  {{ name = "key", type = "{key_type}" }},
  {{ name = "ts", type = "BIGINT" }},
]

[query]
sql = "SELECT key, COUNT(*) AS n FROM source GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND)"

[[sinks]]
type = "file"
path = "{out}.ndjson"

[checkpoint]
path = "state/checkpoint"
interval_ms = 100
"#
        ),
    )
}

/// Runs the windowed pipeline over three seconds of input until it has emitted two windows, and
/// stops it: the checkpoint then holds the open third window.
fn first_windowed_run(dir: &Path) {
    let mut input = std::fs::File::create(dir.join("input.ndjson")).unwrap();
    for i in 0..30 {
        writeln!(
            input,
            r#"{{"key":"7","ts":{}}}"#,
            1_700_000_000_000i64 + i * 100
        )
        .unwrap();
    }
    drop(input);
    let config = windowed_config(dir, "VARCHAR(8)", "first");
    let mut child = spawn_run(&config, dir, "0");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(wait_for_lines(
        &dir.join("first.ndjson"),
        2,
        &config.with_extension("log"),
    ));
    std::thread::sleep(Duration::from_millis(500));
    stop_gracefully(&mut child);
}

/// `rivulet run`: its exit code and standard error, or `None` when it was still running after
/// 20 s (it started; it is stopped then).
fn run_once(config: &Path, dir: &Path) -> (Option<i32>, String) {
    let log = config.with_extension("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .arg("run")
        .arg(config)
        .env("HOME", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn a_restart_after_the_inputs_type_changed_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    first_windowed_run(dir.path());
    let config = windowed_config(dir.path(), "BIGINT", "second");
    let (code, stderr) = run_once(&config, dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`key`")
            && stderr.contains("Utf8")
            && stderr.contains("Int64")
            && stderr.contains("remove the checkpoint"),
        "{stderr}"
    );
}

#[test]
fn a_damaged_checkpoint_is_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    first_windowed_run(dir.path());
    let path = dir.path().join("state/checkpoint");
    let good = std::fs::read(&path).unwrap();
    let config = windowed_config(dir.path(), "VARCHAR(8)", "again");
    // The partitions' times in the window state no longer numbers (the same length, so that the
    // file's own framing still holds).
    let newest = (1_700_000_000_000i64 + 29 * 100).to_string();
    let at = good
        .windows(newest.len())
        .position(|w| w == newest.as_bytes())
        .expect("the newest event time is in the window state");
    let mut damaged = good.clone();
    damaged[at] = b'x';
    std::fs::write(&path, &damaged).unwrap();
    let (code, stderr) = run_once(&config, dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    // Truncated window state.
    std::fs::write(&path, &good[..good.len() - 7]).unwrap();
    let (code, stderr) = run_once(&config, dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("truncated window state"), "{stderr}");
    // Bytes of the window state changed in the middle.
    let mut scrambled = good.clone();
    let mid = good.len() - good.len() / 3;
    for b in &mut scrambled[mid..mid + 16] {
        *b = !*b;
    }
    std::fs::write(&path, &scrambled).unwrap();
    let (code, stderr) = run_once(&config, dir.path());
    assert!(code != Some(101) && code != Some(0), "{code:?} {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
