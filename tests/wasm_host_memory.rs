//! The host process's memory stays bounded while a guest keeps filling its memory up to the cap:
//! each trapped instance's memory is returned. Alone in its test binary, so the process's
//! resident memory is this test's.

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
async fn memory_bombs_do_not_grow_the_host() {
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
}
