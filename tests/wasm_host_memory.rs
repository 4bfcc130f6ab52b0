//! The host process's memory stays bounded under hostile guests: one that keeps filling its memory
//! up to the cap (each trapped instance's memory is returned), and an aggregate that returns 1 MiB
//! of state for every group (refused, so no window keeps it). One test, alone in its test binary,
//! so the process's resident memory is this test's.

use std::path::PathBuf;

use rivulet::wasm::{WasmLimits, WasmModule};
use rivulet::{FileSource, MemorySink, Pipeline, RecordFormat};

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_do_not_grow_the_host() {
    let text = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("udfs/hostile/memory_bomb.wat"),
    )
    .unwrap();
    let cap = 64usize << 20;
    let limits = WasmLimits {
        max_memory_bytes: cap,
        deadline: std::time::Duration::from_secs(10),
        ..WasmLimits::default()
    };
    let module = WasmModule::from_bytes("memory_bomb", &text, limits).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let batches = 40;
    let input: String = (0..batches * 10)
        .map(|i| format!("{{\"x\":{i}}}\n"))
        .collect();
    std::fs::write(&path, input).unwrap();

    let before = rss();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    Pipeline::builder()
        .source(FileSource::builder(&path).build().unwrap())
        .format(RecordFormat::Json)
        .functions(module.sql_functions())
        .sql("SELECT f(CAST(x AS DOUBLE)) AS y FROM source")
        .sink(MemorySink::new())
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows: 10,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    let after = rss();
    let failed: usize = error_rows.batches().iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        failed,
        batches * 10,
        "every batch filled its memory and failed"
    );
    // 40 instances each wrote up to 64 MiB (2.5 GiB in all); at most a few can be alive at once.
    let grown = after.saturating_sub(before);
    eprintln!(
        "the host grew by {} MiB over {batches} memory bombs",
        grown >> 20
    );
    assert!(
        grown < 4 * cap,
        "the host grew by {} MiB over {batches} memory bombs",
        grown >> 20
    );

    state_bombs_do_not_grow_the_host().await;
}

/// 1,000 groups, each given 1 MiB of state by the guest: 1 GB if the host kept them.
async fn state_bombs_do_not_grow_the_host() {
    use arrow::datatypes::{DataType, TimeUnit};
    let text = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("udfs/hostile/state_bomb.wat"),
    )
    .unwrap();
    let module = WasmModule::from_bytes("state_bomb", &text, WasmLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let groups = 1000;
    let input: String = (0..groups)
        .map(|i| {
            format!(
                "{{\"k\":\"k{i}\",\"x\":{i},\"t\":{}}}\n",
                1_767_225_600_000i64 + i
            )
        })
        .collect();
    std::fs::write(&path, input).unwrap();
    let before = rss();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    Pipeline::builder()
        .source(FileSource::builder(&path).build().unwrap())
        .format(RecordFormat::Json)
        .columns(vec![
            rivulet::Column::new("k", DataType::Utf8),
            rivulet::Column::new("x", DataType::Float64),
            rivulet::Column::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ),
        ])
        .functions(module.sql_functions())
        .sql("SELECT k, f(x) AS y FROM source GROUP BY k, TUMBLE(t, INTERVAL '1' HOUR)")
        .sink(MemorySink::new())
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows: 10,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    let after = rss();
    let failed: usize = error_rows.batches().iter().map(|b| b.num_rows()).sum();
    assert_eq!(failed, groups as usize, "every update's state was refused");
    let grown = after.saturating_sub(before);
    eprintln!(
        "the host grew by {} MiB over {groups} groups of 1 MiB states",
        grown >> 20
    );
    assert!(
        grown < 256 << 20,
        "the host grew by {} MiB over {groups} groups of 1 MiB states",
        grown >> 20
    );
}
