//! Each data path's memory bound, under the input that once broke it, measured on this process:
//! the peak resident memory of each scenario (Linux's `VmHWM`, reset before it) against a bound
//! the scenario states. One test running the scenarios one after another, alone in its binary, so
//! the process's memory is the scenario's.

use std::sync::Arc;

use arrow::datatypes::DataType;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use rivulet::{Column, FileSource, MemorySink, ObjectFormat, Pipeline, RecordFormat, S3Sink};

/// A field of `/proc/self/status`, in bytes.
fn status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs `scenario` and returns its peak resident memory above the resident memory before it.
async fn peak_growth<F: std::future::Future<Output = ()>>(scenario: F) -> usize {
    // Writing 5 resets the peak to the current resident memory (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status("VmRSS:");
    scenario.await;
    status("VmHWM:").saturating_sub(before)
}

fn check(name: &str, grown: usize, bound: usize) {
    eprintln!("{name}: peak {} MiB above the start", grown >> 20);
    assert!(
        grown < bound,
        "{name}: peak {} MiB above the start, over the bound of {} MiB",
        grown >> 20,
        bound >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_path_stays_within_its_memory_bound() {
    s3_partitions().await;
}

/// 20,000 distinct partition values in about 1 MB of input, written as Parquet (a writer per open
/// object): the open objects stay within `max_open_partitions` (500).
async fn s3_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let values = 20_000;
    let input: String = (0..values)
        .map(|i| format!("{{\"k\":\"v{i}\",\"x\":{i}}}\n"))
        .collect();
    std::fs::write(&path, &input).unwrap();
    let store = Arc::new(InMemory::new());
    let grown = peak_growth(async {
        let sink = S3Sink::builder("b")
            .with_store(Arc::clone(&store) as Arc<dyn ObjectStore>)
            .with_prefix("p/!{partitionKeyFromQuery:k}/")
            .with_format(ObjectFormat::Parquet)
            .build()
            .await
            .unwrap();
        Pipeline::builder()
            .source(FileSource::builder(&path).build().unwrap())
            .format(RecordFormat::Json)
            .columns(vec![
                Column::new("k", DataType::Utf8),
                Column::new("x", DataType::Int64),
            ])
            .sql("SELECT k, x FROM source")
            .sink(sink)
            .error_output(MemorySink::new())
            .build()
            .await
            .unwrap()
            .run()
            .await
            .unwrap();
    })
    .await;
    let objects = {
        use futures::TryStreamExt as _;
        store.list(None).try_collect::<Vec<_>>().await.unwrap().len()
    };
    assert_eq!(objects, values, "one object per value");
    check(
        &format!("S3 sink, {values} partition values in {} KB", input.len() >> 10),
        grown,
        256 << 20,
    );
}
