//! The push source: an application feeding a pipeline in-process, through its public API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use async_trait::async_trait;
use bytes::Bytes;
use rivulet::{
    Ack, BatchSettings, Column, FileCheckpointStore, MemorySink, MemorySinkHandle, OutputBatch,
    Pipeline, PushSourceOptions, Record, Sink, TryPush,
};

fn record(json: String) -> Record {
    Record::new(Bytes::from(json), 1_000)
}

fn int_columns(names: &[&str]) -> Vec<Column> {
    names
        .iter()
        .map(|n| Column::new(*n, DataType::Int64))
        .collect()
}

/// The values of an Int64 column over every batch a memory sink holds, in order.
fn int_values(rows: &MemorySinkHandle, column: &str) -> Vec<i64> {
    rows.batches()
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// A sink that stores rows but holds their acknowledgements until it is opened.
#[derive(Debug, Clone, Default)]
struct GatedSink {
    held: Arc<Mutex<Vec<Ack>>>,
    open: Arc<std::sync::atomic::AtomicBool>,
    rows: Arc<AtomicU64>,
}

impl GatedSink {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for ack in self.held.lock().unwrap().drain(..) {
            ack.acknowledge();
        }
    }
}

#[async_trait]
impl Sink for GatedSink {
    fn name(&self) -> &str {
        "gated"
    }

    async fn write(&mut self, batch: OutputBatch) -> rivulet::Result<()> {
        self.rows
            .fetch_add(batch.data.len() as u64, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            batch.ack.acknowledge();
        } else {
            self.held.lock().unwrap().push(batch.ack);
        }
        Ok(())
    }

    async fn flush(&mut self) -> rivulet::Result<()> {
        if self.open.load(Ordering::SeqCst) {
            for ack in self.held.lock().unwrap().drain(..) {
                ack.acknowledge();
            }
        }
        Ok(())
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_comes_only_once_the_sink_has_stored_the_record_and_names_its_errors() {
    let sink = GatedSink::default();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
    let pipeline = builder
        .columns(int_columns(&["n"]))
        .sql("SELECT n FROM source")
        .sink(sink.clone())
        .error_output(errors)
        .build()
        .await
        .unwrap();
    let run = tokio::spawn(pipeline.run());

    let pushing = handle.clone();
    let receipt =
        tokio::spawn(async move { pushing.push_acked(record(r#"{"n":1}"#.into())).await });
    let rows = Arc::clone(&sink.rows);
    wait_for("the sink to receive the row", || {
        rows.load(Ordering::SeqCst) == 1
    })
    .await;
    // The row is in the sink but not acknowledged: well past a micro-batch and a commit round,
    // the receipt has not come.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !receipt.is_finished(),
        "a receipt came before the sink acknowledged the row"
    );
    sink.open();
    let receipt = receipt.await.unwrap().unwrap();
    assert!(receipt.is_clean(), "{receipt:?}");
    assert_eq!(receipt.sequence, 1);

    // A record that cannot be decoded: its receipt says where it went.
    let bad = handle
        .push_acked(record(r#"{"n": not json"#.into()))
        .await
        .unwrap();
    assert_eq!(bad.sequence, 2);
    assert_eq!(bad.errors.len(), 1, "{bad:?}");
    assert_eq!(bad.errors[0].stage, "decode");
    assert!(!bad.errors[0].kind.is_empty());
    assert_eq!(error_rows.num_rows(), 1);
    let good = handle
        .push_acked(record(r#"{"n":3}"#.into()))
        .await
        .unwrap();
    assert!(good.is_clean(), "{good:?}");

    drop(handle);
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.metrics.records_in, 3);
    assert_eq!(report.committed.get("push"), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_producers_lose_nothing_and_each_keeps_its_order() {
    const PRODUCERS: i64 = 8;
    const EACH: i64 = 5_000;
    let sink = MemorySink::new();
    let rows = sink.handle();
    // A small queue, so producers wait on each other and on the pipeline all the time.
    let (builder, handle) =
        Pipeline::builder().push_source(PushSourceOptions::new().max_records(97));
    let pipeline = builder
        .columns(int_columns(&["producer", "n"]))
        .sql("SELECT producer, n FROM source")
        .sink(sink)
        .batch_settings(BatchSettings {
            max_rows: 256,
            ..BatchSettings::default()
        })
        .build()
        .await
        .unwrap();
    let run = tokio::spawn(pipeline.run());
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let handle = handle.clone();
        producers.push(tokio::spawn(async move {
            for n in 0..EACH {
                let r = record(format!(r#"{{"producer":{p},"n":{n}}}"#));
                // Every third record in a batch of its own, the others one by one.
                if n % 3 == 0 {
                    handle.push_batch([r]).await.unwrap();
                } else {
                    handle.push(r).await.unwrap();
                }
            }
        }));
    }
    drop(handle);
    for p in producers {
        p.await.unwrap();
    }
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.metrics.records_in, (PRODUCERS * EACH) as u64);

    let producer = int_values(&rows, "producer");
    let n = int_values(&rows, "n");
    let mut seen: HashMap<i64, Vec<i64>> = HashMap::new();
    for (p, n) in producer.into_iter().zip(n) {
        seen.entry(p).or_default().push(n);
    }
    assert_eq!(seen.len(), PRODUCERS as usize);
    let expected: Vec<i64> = (0..EACH).collect();
    for (p, ns) in seen {
        assert!(
            ns == expected,
            "producer {p}: its records came out of order or not once each"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_stores_everything_pushed_before_it() {
    let sink = MemorySink::new();
    let rows = sink.handle();
    let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
    let pipeline = builder
        .columns(int_columns(&["n"]))
        .sql("SELECT n FROM source")
        .sink(sink)
        .build()
        .await
        .unwrap();
    handle
        .push_batch((0..10_000).map(|n| record(format!(r#"{{"n":{n}}}"#))))
        .await
        .unwrap();
    // The stop comes before the pipeline has read a record.
    pipeline.shutdown_handle().shutdown();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.metrics.records_in, 10_000);
    assert_eq!(int_values(&rows, "n"), (0..10_000).collect::<Vec<_>>());
    assert_eq!(report.committed.get("push"), Some("10000"));
    // The handle is still held, but the source is closed.
    let err = handle.push(record(r#"{"n":1}"#.into())).await.unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
    assert!(handle.try_push(record(r#"{"n":1}"#.into())).is_err());
}

/// A sink that sleeps on each write.
#[derive(Debug)]
struct SlowSink {
    rows: Arc<AtomicU64>,
}

#[async_trait]
impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow"
    }

    async fn write(&mut self, batch: OutputBatch) -> rivulet::Result<()> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.rows
            .fetch_add(batch.data.len() as u64, Ordering::SeqCst);
        batch.ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> rivulet::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_producers_back_at_the_queue_bound() {
    const QUEUE: usize = 100;
    const BATCH: usize = 50;
    const RECORDS: u64 = 4_000;
    let stored = Arc::new(AtomicU64::new(0));
    let (builder, handle) =
        Pipeline::builder().push_source(PushSourceOptions::new().max_records(QUEUE));
    let pipeline = builder
        .columns(int_columns(&["n"]))
        .sql("SELECT n FROM source")
        .sink(SlowSink {
            rows: Arc::clone(&stored),
        })
        .batch_settings(BatchSettings {
            max_rows: BATCH,
            max_latency: Duration::from_millis(20),
            sink_queue: 1,
        })
        .build()
        .await
        .unwrap();
    let run = tokio::spawn(pipeline.run());
    let mut most_in_flight = 0;
    let mut full = 0;
    for n in 0..RECORDS {
        let r = record(format!(r#"{{"n":{n}}}"#));
        // Without waiting first; when the queue is full, waiting for room.
        if let TryPush::Full(back) = handle.try_push(r).unwrap() {
            full += 1;
            handle.push(back).await.unwrap();
        }
        most_in_flight = most_in_flight.max(n + 1 - stored.load(Ordering::SeqCst));
    }
    drop(handle);
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.metrics.rows_out, RECORDS);
    assert!(full > 0, "the producer never found the queue full");
    // In flight at most: the queue, and a micro-batch in each place the pipeline holds one (the
    // source task, its two-batch queue to processing, processing's pending records, the batch
    // decoding beside the one in the SQL, the sink's queue and the sink's write), with slack.
    let bound = (QUEUE + 10 * BATCH) as u64;
    assert!(
        most_in_flight <= bound,
        "{most_in_flight} records were pushed and not stored, over the bound of {bound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pipeline_numbers_records_on_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    let run = |n: usize| {
        let path = path.clone();
        async move {
            let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
            let pipeline = builder
                .columns(int_columns(&["n"]))
                .sql("SELECT n FROM source")
                .sink(MemorySink::new())
                .checkpoint_store(FileCheckpointStore::new(path))
                .build()
                .await
                .unwrap();
            let run = tokio::spawn(pipeline.run());
            let mut last = None;
            for i in 0..n {
                last = Some(
                    handle
                        .push_acked(record(format!(r#"{{"n":{i}}}"#)))
                        .await
                        .unwrap(),
                );
            }
            drop(handle);
            let report = run.await.unwrap().unwrap();
            (last.unwrap().sequence, report)
        }
    };
    let (last, first) = run(3).await;
    assert_eq!(last, 3);
    assert_eq!(first.committed.get("push"), Some("3"));
    let (last, second) = run(2).await;
    assert_eq!(
        last, 5,
        "the second run's records are numbered on after the checkpoint"
    );
    assert_eq!(second.committed.get("push"), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_rows_run_through_the_sql_like_the_same_rows_as_json() {
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};

    let schema = Arc::new(Schema::new(vec![
        Field::new("sym", DataType::Utf8, true),
        Field::new("n", DataType::Utf8, true),
    ]));
    let batch = |syms: Vec<&str>, ns: Vec<&str>| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(syms)),
                Arc::new(StringArray::from(ns)),
            ],
        )
        .unwrap()
    };
    let columns = vec![
        Column::new("sym", DataType::Utf8),
        Column::new("n", DataType::Int64),
    ];
    let sql = "SELECT sym, n * 2 AS doubled FROM source WHERE n > 1";

    // Once as Arrow rows, once as the same rows in JSON; "x" is not a number either way.
    let run_with = |arrow: bool| {
        let columns = columns.clone();
        let batch = &batch;
        async move {
            let sink = MemorySink::new();
            let rows = sink.handle();
            let errors = MemorySink::new();
            let error_rows = errors.handle();
            let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
            let pipeline = builder
                .columns(columns)
                .sql(sql)
                .sink(sink)
                .error_output(errors)
                .build()
                .await
                .unwrap();
            let run = tokio::spawn(pipeline.run());
            let parts = [
                (vec!["A", "B", "C"], vec!["1", "2", "x"]),
                (vec!["D"], vec!["4"]),
            ];
            for (syms, ns) in parts {
                if arrow {
                    handle.push_rows(batch(syms, ns)).await.unwrap();
                } else {
                    for (s, n) in syms.iter().zip(&ns) {
                        let n = if *n == "x" {
                            "\"x\"".to_string()
                        } else {
                            n.to_string()
                        };
                        handle
                            .push(record(format!(r#"{{"sym":"{s}","n":{n}}}"#)))
                            .await
                            .unwrap();
                    }
                }
            }
            drop(handle);
            run.await.unwrap().unwrap();
            let out: Vec<(String, i64)> = rows
                .batches()
                .iter()
                .flat_map(|b| {
                    let s = b.column_by_name("sym").unwrap().as_string::<i32>();
                    let d = b
                        .column_by_name("doubled")
                        .unwrap()
                        .as_primitive::<Int64Type>();
                    (0..b.num_rows())
                        .map(|i| (s.value(i).to_owned(), d.value(i)))
                        .collect::<Vec<_>>()
                })
                .collect();
            let failed: Vec<String> = error_rows
                .batches()
                .iter()
                .flat_map(|b| {
                    let raw = b.column_by_name("rawData").unwrap().as_string::<i32>();
                    (0..b.num_rows())
                        .map(|i| {
                            use base64::Engine as _;
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(raw.value(i))
                                .unwrap();
                            String::from_utf8(bytes).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            (out, failed)
        }
    };
    let (arrow_out, arrow_failed) = run_with(true).await;
    let (json_out, json_failed) = run_with(false).await;
    let expected = vec![("B".to_string(), 4), ("D".to_string(), 8)];
    assert_eq!(arrow_out, expected);
    assert_eq!(json_out, expected);
    assert_eq!(json_failed, [r#"{"sym":"C","n":"x"}"#]);
    assert_eq!(
        arrow_failed,
        [r#"{"sym":"C","n":"x"}"#],
        "shown as the JSON object it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_columns_the_first_arrow_batch_gives_the_schema() {
    use arrow::array::{Float64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};

    let schema = Arc::new(Schema::new(vec![
        Field::new("sym", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
    ]));
    let sink = MemorySink::new();
    let rows = sink.handle();
    let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["A", "B"])),
            Arc::new(Float64Array::from(vec![10.5, 99.0])),
        ],
    )
    .unwrap();
    // Pushed before the build: inference waits for the first records.
    handle.push_rows(batch).await.unwrap();
    drop(handle);
    let report = builder
        .sql("SELECT sym FROM source WHERE price > 50")
        .sink(sink)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.metrics.records_in, 2);
    let b = &rows.batches()[0];
    assert_eq!(b.column(0).as_string::<i32>().value(0), "B");
    assert_eq!(rows.num_rows(), 1);
}
