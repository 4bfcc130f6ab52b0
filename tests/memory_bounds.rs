//! Each data path's memory bound, under the input that once broke it, measured on this process:
//! the peak resident memory of each scenario (Linux's `VmHWM`, reset before it) against a bound
//! the scenario states. One test running the scenarios one after another, alone in its binary, so
//! the process's memory is the scenario's.

use std::sync::Arc;

#[path = "integration/support/moto.rs"]
#[allow(dead_code)]
mod moto;

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
    // First: before the others' memory is freed into the allocator, where it would hide growth.
    push_backpressure().await;
    s3_partitions().await;
    kpl_amplification().await;
    held_acknowledgements().await;
    sql_built_values().await;
}

/// A producer pushing 384 MiB of 64 KiB records as fast as it can into a pipeline whose sink
/// takes 10 ms a write: the push queue's byte bound (8 MiB) and the pipeline's own queues hold
/// it back, so the process never holds more than a few micro-batches of it; every record is
/// stored. What is live is about 28 MiB (the queue and five micro-batches of 64 records: two
/// queued, one in the source task's hand, one decoding, one in the SQL); the resident peak is about
/// three times that, the allocator's per-thread arenas included. Without the bound: over 400 MiB.
async fn push_backpressure() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    struct SlowSink(Arc<AtomicU64>);

    #[async_trait::async_trait]
    impl rivulet::Sink for SlowSink {
        fn name(&self) -> &str {
            "slow"
        }
        async fn write(&mut self, batch: rivulet::OutputBatch) -> rivulet::Result<()> {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            self.0.fetch_add(batch.data.len() as u64, Ordering::SeqCst);
            batch.ack.acknowledge();
            Ok(())
        }
        async fn flush(&mut self) -> rivulet::Result<()> {
            Ok(())
        }
    }

    const RECORDS: u64 = 6_144;
    let pad = "x".repeat(64 << 10);
    let stored = Arc::new(AtomicU64::new(0));
    let grown = peak_growth(async {
        let (builder, handle) =
            Pipeline::builder().push_source(rivulet::PushSourceOptions::new().max_bytes(8 << 20));
        let pipeline = builder
            .columns(vec![Column::new("n", DataType::Int64)])
            .sql("SELECT n FROM source")
            .sink(SlowSink(Arc::clone(&stored)))
            .batch_settings(rivulet::BatchSettings {
                max_rows: 64,
                ..rivulet::BatchSettings::default()
            })
            .build()
            .await
            .unwrap();
        let run = tokio::spawn(pipeline.run());
        for n in 0..RECORDS {
            // Built at its exact size: `format!` would leave twice the capacity behind each.
            let mut payload = Vec::with_capacity(pad.len() + 32);
            write!(payload, "{{\"n\":{n},\"pad\":\"{pad}\"}}").unwrap();
            handle
                .push(rivulet::Record::new(payload.into(), 0))
                .await
                .unwrap();
        }
        drop(handle);
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.metrics.rows_out, RECORDS);
    })
    .await;
    assert_eq!(stored.load(Ordering::SeqCst), RECORDS);
    check("push source, 384 MiB behind a slow sink", grown, 128 << 20);
}

/// Rows whose values ask `lpad`, `rpad`, `repeat` and `array_repeat` for 2 GB values: each such
/// row fails alone into the error output, the others pass.
async fn sql_built_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let sizes = [3i64, 2_000_000_000, 5, 1_000_000_000, 4];
    let input: String = sizes
        .iter()
        .map(|n| format!("{{\"s\":\"ab\",\"n\":{n}}}\n"))
        .collect();
    std::fs::write(&path, &input).unwrap();
    for (call, small) in [
        ("lpad(s, n)", 10_000i64),
        ("rpad(s, n)", 10_000),
        ("repeat(s, n)", 10_000),
        ("cardinality(array_repeat(s, n))", 10_000),
    ] {
        let out = MemorySink::new();
        let rows = out.handle();
        let errors = MemorySink::new();
        let error_rows = errors.handle();
        let grown = peak_growth(async {
            Pipeline::builder()
                .source(FileSource::builder(&path).build().unwrap())
                .format(RecordFormat::Json)
                .columns(vec![
                    Column::new("s", DataType::Utf8),
                    Column::new("n", DataType::Int64),
                ])
                .sql(format!("SELECT n, {call} AS v FROM source"))
                .sink(out)
                .error_output(errors)
                .build()
                .await
                .unwrap()
                .run()
                .await
                .unwrap();
        })
        .await;
        let passed: Vec<i64> = rows
            .batches()
            .iter()
            .flat_map(|b| {
                use arrow::array::AsArray as _;
                b.column_by_name("n")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        let want: Vec<i64> = sizes.iter().copied().filter(|n| *n < small).collect();
        assert_eq!(passed, want, "{call}: the rows within the limit");
        let failed: Vec<String> = error_rows
            .batches()
            .iter()
            .flat_map(|b| {
                use arrow::array::AsArray as _;
                let m = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| m.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(failed.len(), 2, "{call}: {failed:?}");
        assert!(
            failed.iter().all(|m| m.contains("over the limit")),
            "{call}: {failed:?}"
        );
        check(&format!("SQL {call} asked for 2 GB"), grown, 256 << 20);
    }
}

/// A session that keeps receiving rows for 6,000 micro-batches while sessions of other keys close
/// all along, with no checkpoint store: every batch waits for the long session, and their handles
/// (each output once took a handle of every waiting batch) stay bounded; at the end every batch
/// is committed.
async fn held_acknowledgements() {
    use arrow::datatypes::TimeUnit;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let rows = 6_000;
    // Each batch: a row of `long` and the only row of key `s<i>`, 10 minutes after the last.
    let input: String = (0..rows)
        .map(|i| {
            let t = 1_767_225_600_000i64 + i * 600_000;
            format!("{{\"k\":\"long\",\"t\":{t}}}\n{{\"k\":\"s{i}\",\"t\":{t}}}\n")
        })
        .collect();
    std::fs::write(&path, &input).unwrap();
    let out = MemorySink::new();
    let windows = out.handle();
    let mut committed = None;
    let grown = peak_growth(async {
        let report = Pipeline::builder()
            .source(FileSource::builder(&path).build().unwrap())
            .format(RecordFormat::Json)
            .columns(vec![
                Column::new("k", DataType::Utf8),
                Column::new(
                    "t",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                ),
            ])
            .sql("SELECT k, COUNT(*) AS n FROM source GROUP BY k, SESSION(t, INTERVAL '1' HOUR)")
            .sink(out)
            .error_output(MemorySink::new())
            .batch_settings(rivulet::BatchSettings {
                max_rows: 2,
                ..rivulet::BatchSettings::default()
            })
            .build()
            .await
            .unwrap()
            .run()
            .await
            .unwrap();
        committed = Some(report.committed);
    })
    .await;
    let mut sessions = std::collections::BTreeMap::new();
    for b in windows.batches() {
        use arrow::array::AsArray as _;
        let k = b.column_by_name("k").unwrap().as_string::<i32>();
        let n = b
            .column_by_name("n")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            assert!(sessions.insert(k.value(i).to_owned(), n.value(i)).is_none());
        }
    }
    assert_eq!(sessions.len() as i64, rows + 1, "a session per key");
    assert_eq!(
        sessions["long"], rows,
        "the long session holds a row of every batch"
    );
    let at = committed.unwrap();
    let offset = at
        .iter()
        .next()
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        offset,
        input.len().to_string(),
        "every batch committed at the end"
    );
    check(
        &format!("a session open over {rows} micro-batches"),
        grown,
        64 << 20,
    );
}

/// 32 KPL aggregates of about 900 KB, each of 110,000 sub-records of 2 bytes (3.5 million records
/// from 29 MB), in a backlog: the reader hands records on in bounded events as it unpacks, instead
/// of a page's million at once with up to 16 such pages queued.
async fn kpl_amplification() {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    let Some(moto) = moto::MotoServer::start() else {
        return;
    };
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(conf);
    client
        .create_stream()
        .stream_name("kpl")
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let per = 110_000;
    let aggregates = 32;
    let payload = b"{}";
    for _ in 0..aggregates {
        let data = rivulet::kinesis::kpl::aggregate((0..per).map(|_| ("k", None, &payload[..])));
        assert!(data.len() < 1 << 20, "{} bytes", data.len());
        client
            .put_record()
            .stream_name("kpl")
            .partition_key("k")
            .data(aws_sdk_kinesis::primitives::Blob::new(data.to_vec()))
            .send()
            .await
            .unwrap();
    }
    let grown = peak_growth(async {
        // Pages of at most 8 records (7 MB): within the service's 10 MB per call, which moto
        // does not apply.
        let source = rivulet::kinesis::KinesisSource::builder("kpl")
            .client(client.clone())
            .poll_settings(rivulet::kinesis::PollSettings {
                max_records: 8,
                ..rivulet::kinesis::PollSettings::default()
            })
            .build()
            .await
            .unwrap();
        let pipeline = Pipeline::builder()
            .source(source)
            .format(RecordFormat::Json)
            .columns(vec![Column::new("x", DataType::Int64)])
            .sql("SELECT x FROM source")
            .sink(rivulet::NullSink::new())
            .error_output(MemorySink::new())
            .build()
            .await
            .unwrap();
        let metrics = pipeline.metrics();
        let stop = pipeline.shutdown_handle();
        let run = tokio::spawn(pipeline.run());
        let want = (per * aggregates) as u64;
        while metrics.snapshot().records_in < want {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        stop.shutdown();
        run.await.unwrap().unwrap();
    })
    .await;
    check(
        &format!("Kinesis source, {aggregates} aggregates of {per} sub-records"),
        grown,
        // Measured: 240 MiB, the same with 16 aggregates; 560 MiB with pages handed on whole.
        400 << 20,
    );
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
        store
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    };
    assert_eq!(objects, values, "one object per value");
    check(
        &format!(
            "S3 sink, {values} partition values in {} KB",
            input.len() >> 10
        ),
        grown,
        256 << 20,
    );
}
