//! Pipelines end to end through the public API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use async_trait::async_trait;
use bytes::Bytes;
use rivulet::{
    BatchSettings, FileSink, GeneratorSource, MemorySink, OutputBatch, Pipeline, PipelineBuilder,
    PipelineReport, Position, Record, Sink, Source, SourceBatch,
};

/// A finite source of fixed payloads in batches, recording the positions committed to it.
#[derive(Debug)]
struct ScriptedSource {
    batches: std::vec::IntoIter<Vec<&'static str>>,
    next_offset: u64,
    commits: Arc<Mutex<Vec<Position>>>,
}

impl ScriptedSource {
    fn new(batches: Vec<Vec<&'static str>>) -> (Self, Arc<Mutex<Vec<Position>>>) {
        let commits = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                batches: batches.into_iter(),
                next_offset: 0,
                commits: Arc::clone(&commits),
            },
            commits,
        )
    }
}

#[async_trait]
impl Source for ScriptedSource {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn next_batch(&mut self) -> rivulet::Result<Option<SourceBatch>> {
        let Some(payloads) = self.batches.next() else {
            return Ok(None);
        };
        let records = payloads
            .into_iter()
            .map(|p| {
                self.next_offset += 1;
                Record::new(Bytes::from_static(p.as_bytes()), 1_000)
                    .with_shard_id("shard-0")
                    .with_sequence_number(self.next_offset.to_string())
                    .with_partition_key("pk")
            })
            .collect();
        Ok(Some(SourceBatch::new(
            records,
            Position::single("shard-0", self.next_offset.to_string()),
        )))
    }

    async fn commit(&mut self, position: &Position) -> rivulet::Result<()> {
        self.commits.lock().unwrap().push(position.clone());
        Ok(())
    }
}

/// A sink that takes its time: each write sleeps.
#[derive(Debug)]
struct SlowSink {
    delay: Duration,
    rows: Arc<AtomicU64>,
}

#[async_trait]
impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow"
    }

    async fn write(&mut self, batch: OutputBatch) -> rivulet::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.rows
            .fetch_add(batch.data.len() as u64, Ordering::SeqCst);
        batch.ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> rivulet::Result<()> {
        Ok(())
    }
}

/// A sink whose writes fail.
#[derive(Debug)]
struct BrokenSink;

#[async_trait]
impl Sink for BrokenSink {
    fn name(&self) -> &str {
        "broken"
    }

    async fn write(&mut self, _batch: OutputBatch) -> rivulet::Result<()> {
        Err(std::io::Error::other("disk on fire").into_sink_error())
    }

    async fn flush(&mut self) -> rivulet::Result<()> {
        Ok(())
    }
}

trait IntoSinkError {
    fn into_sink_error(self) -> rivulet::Error;
}

impl IntoSinkError for std::io::Error {
    fn into_sink_error(self) -> rivulet::Error {
        rivulet::Error::Io {
            context: "writing to the broken sink".into(),
            source: self,
        }
    }
}

async fn run_to_end(builder: PipelineBuilder) -> PipelineReport {
    builder.build().await.unwrap().run().await.unwrap()
}

#[tokio::test]
async fn generator_sql_file_sink_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/expensive.ndjson");
    let report = run_to_end(
        Pipeline::builder()
            .source(
                GeneratorSource::builder()
                    .with_limit(Some(25_000))
                    .with_start_time_ms(Some(0))
                    .build()
                    .unwrap(),
            )
            .sql("SELECT ticker_symbol, price, ROWTIME FROM source WHERE price > 150")
            .sink(FileSink::builder(&path).build().unwrap()),
    )
    .await;
    let m = report.metrics;
    assert_eq!(m.records_in, 25_000);
    assert_eq!(m.records_error, 0);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count() as u64, m.rows_out);
    assert!(m.rows_out > 0 && m.rows_out < 25_000);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["price"].as_f64().unwrap() > 150.0, "{line}");
        assert!(
            v["ROWTIME"].as_str().unwrap().starts_with("1970-01-01T"),
            "{line}"
        );
    }
    assert_eq!(report.committed.get("generator"), Some("25000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_every_accepted_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.ndjson");
    let pipeline = Pipeline::builder()
        .source(GeneratorSource::builder().build().unwrap()) // unbounded, as fast as possible
        .sql("SELECT * FROM source")
        .sink(FileSink::builder(&path).build().unwrap())
        .build()
        .await
        .unwrap();
    let handle = pipeline.shutdown_handle();
    let running = tokio::spawn(pipeline.run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("shutdown completes")
        .unwrap()
        .unwrap();
    let m = report.metrics;
    assert!(m.records_in > 0);
    let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
    assert_eq!(m.records_in, lines + m.records_error, "{m:?}");
    assert_eq!(m.records_error, 0);
    // Everything accepted was stored, so the committed position covers all of it.
    assert_eq!(
        report.committed.get("generator"),
        Some(m.records_in.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_in_flight_records_when_a_sink_is_slow() {
    let rows = Arc::new(AtomicU64::new(0));
    let settings = BatchSettings {
        max_rows: 500,
        max_latency: Duration::from_millis(50),
        sink_queue: 2,
    };
    let pipeline = Pipeline::builder()
        .source(GeneratorSource::builder().build().unwrap())
        .sql("SELECT ticker_symbol FROM source")
        .sink(SlowSink {
            delay: Duration::from_millis(20),
            rows: Arc::clone(&rows),
        })
        .batch_settings(settings)
        .build()
        .await
        .unwrap();
    let metrics = pipeline.metrics();
    let handle = pipeline.shutdown_handle();
    let running = tokio::spawn(pipeline.run());
    // Generator chunks are at most 4,096 records: two queued, one being cut into micro-batches,
    // plus the sink queue, the batch the sink holds and, with more than one worker, the
    // micro-batch decoded ahead while the one before it is finished.
    let bound = 3 * 4096 + (settings.sink_queue as u64 + 3) * settings.max_rows as u64;
    let mut max_seen = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let read = metrics.snapshot().records_in;
        let stored = rows.load(Ordering::SeqCst);
        max_seen = max_seen.max(read.saturating_sub(stored));
    }
    handle.shutdown();
    let report = running.await.unwrap().unwrap();
    assert!(
        max_seen <= bound,
        "{max_seen} records in flight, more than the bound {bound}"
    );
    // The slow sink stored far fewer than an unthrottled generator would make in a second.
    assert!(report.metrics.records_in < 200_000, "{:?}", report.metrics);
    assert_eq!(report.metrics.records_in, rows.load(Ordering::SeqCst));
}

#[tokio::test]
async fn bad_records_reach_the_error_output_and_good_ones_are_kept() {
    let (source, commits) = ScriptedSource::new(vec![
        vec![
            r#"{"sym":"A","px":1.5}"#,
            r#"{"sym":"B","px":"#,
            r#"{"sym":"C","px":3.5}"#,
        ],
        vec![r#"{"sym":"D","px":"high"}"#, r#"{"sym":"E","px":5.5}"#],
    ]);
    let out = MemorySink::new();
    let out_rows = out.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    let report = run_to_end(
        Pipeline::builder()
            .source(source)
            .columns(vec![
                rivulet::Column::new("sym", arrow::datatypes::DataType::Utf8),
                rivulet::Column::new("px", arrow::datatypes::DataType::Float64),
            ])
            .sql("SELECT sym, px FROM source")
            .sink(out)
            .error_output(errors),
    )
    .await;
    let m = report.metrics;
    assert_eq!((m.records_in, m.rows_out, m.records_error), (5, 3, 2));
    let good: Vec<f64> = out_rows
        .batches()
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Float64Type>().values().to_vec())
        .collect();
    assert_eq!(good, vec![1.5, 3.5, 5.5]);
    let errs = error_rows.batches();
    let errs = arrow::compute::concat_batches(&errs[0].schema(), &errs).unwrap();
    let col = |name: &str| errs.column_by_name(name).unwrap().as_string::<i32>();
    let kinds: Vec<&str> = col("errorCode").iter().flatten().collect();
    assert_eq!(kinds, vec!["malformed", "malformed"]);
    let seqs: Vec<&str> = col("sequenceNumber").iter().flatten().collect();
    assert_eq!(seqs, vec!["2", "4"]);
    let ids: Vec<&str> = col("recordId").iter().flatten().collect();
    assert_eq!(ids, vec!["shard-0/2/0", "shard-0/4/0"]);
    assert!(col("errorMessage").value(0).contains("JSON"));
    // Acknowledgements drove the commits, in order, up to the last record.
    let commits = commits.lock().unwrap();
    assert_eq!(commits.last().unwrap().get("shard-0"), Some("5"));
    let offsets: Vec<u64> = commits
        .iter()
        .map(|p| p.get("shard-0").unwrap().parse().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
}

#[tokio::test]
async fn a_failing_sink_stops_the_pipeline_without_committing() {
    let (source, commits) = ScriptedSource::new(vec![vec![r#"{"a":1}"#], vec![r#"{"a":2}"#]]);
    let err = Pipeline::builder()
        .source(source)
        .sink(BrokenSink)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(
        commits.lock().unwrap().is_empty(),
        "nothing was stored, so nothing may be committed"
    );
}

/// An error output that gives up on everything it is sent, as an AWS sink out of attempts does:
/// each row goes on to its own error output.
#[derive(Debug, Default)]
struct GivingUpErrorOutput {
    errors: Option<rivulet::ErrorOutput>,
}

#[async_trait]
impl Sink for GivingUpErrorOutput {
    fn name(&self) -> &str {
        "giving-up"
    }

    fn set_error_output(&mut self, errors: rivulet::ErrorOutput) {
        self.errors = Some(errors);
    }

    async fn write(&mut self, batch: OutputBatch) -> rivulet::Result<()> {
        let failed = (0..batch.data.len())
            .map(|_| rivulet::ErrorRecord {
                stage: rivulet::ErrorStage::Sink,
                kind: "ServiceUnavailableException".into(),
                reason: "out of attempts".into(),
                attempts: 5,
                record: Record::new(Bytes::from_static(b"{}"), 0),
                statement: None,
            })
            .collect();
        self.errors
            .as_ref()
            .expect("an error output")
            .send(failed, batch.ack)
            .await
    }

    async fn flush(&mut self) -> rivulet::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn error_records_the_error_output_cannot_store_are_not_committed() {
    // The malformed record of the first batch goes to an error output that cannot store it.
    let (source, commits) = ScriptedSource::new(vec![
        vec![r#"{"a":1}"#, r#"{"a":"#, r#"{"a":2}"#],
        vec![r#"{"a":3}"#],
    ]);
    let err = Pipeline::builder()
        .source(source)
        .columns(vec![rivulet::Column::new(
            "a",
            arrow::datatypes::DataType::Int64,
        )])
        .sink(MemorySink::new())
        .error_output(GivingUpErrorOutput::default())
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("giving-up") && err.contains("could not store 1 error record"),
        "{err}"
    );
    // Standard error showed the record, but it is not storage: no commit covers the batch.
    let commits = commits.lock().unwrap();
    assert!(
        commits.iter().all(|p| p
            .get("shard-0")
            .is_none_or(|o| o.parse::<u64>().unwrap() < 3)),
        "{commits:?}"
    );
}

#[tokio::test]
async fn inferred_schema_sample_records_are_processed_too() {
    let (source, _) = ScriptedSource::new(vec![
        vec![r#"{"n":1,"s":"x"}"#, r#"{"n":2,"s":"y"}"#],
        vec![r#"{"n":3,"s":"z"}"#],
    ]);
    let out = MemorySink::new();
    let rows = out.handle();
    let report = run_to_end(
        Pipeline::builder()
            .source(source)
            .infer_sample(2)
            .sql("SELECT n * 10 AS n10 FROM source")
            .sink(out),
    )
    .await;
    assert_eq!(report.metrics.records_in, 3);
    assert_eq!(rows.num_rows(), 3);
}

#[tokio::test]
async fn a_stateful_query_is_refused_at_build() {
    let err = Pipeline::builder()
        .source(
            GeneratorSource::builder()
                .with_limit(Some(1))
                .build()
                .unwrap(),
        )
        .sql("SELECT sector, AVG(price) FROM source GROUP BY sector")
        .sink(MemorySink::new())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, rivulet::Error::Sql(_)), "{err:?}");
    assert!(err.to_string().contains("without a window"), "{err}");
}

#[tokio::test]
async fn inference_on_a_followed_file_returns_once_the_file_goes_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.ndjson");
    std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n").unwrap();
    let source = rivulet::FileSource::builder(&path)
        .with_follow(true)
        .with_poll_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let out = MemorySink::new();
    let rows = out.handle();
    let pipeline = tokio::time::timeout(
        Duration::from_secs(5),
        Pipeline::builder().source(source).sink(out).build(),
    )
    .await
    .expect("build() returns although the followed file has fewer records than the sample size")
    .unwrap();
    let handle = pipeline.shutdown_handle();
    let running = tokio::spawn(pipeline.run());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rows.num_rows() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "sampled records were not processed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.shutdown();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.metrics.records_in, 2);
    let committed = report.committed.get(&path.display().to_string()).unwrap();
    assert_eq!(committed.split(';').next(), Some("16"), "{committed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_overflow_fails_its_row_into_the_error_output_instead_of_wrapping() {
    use arrow::datatypes::{DataType, Int64Type};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let xs = [1i64, i64::MAX, 2, i64::MIN, 3];
    let input: String = xs.iter().map(|x| format!("{{\"x\":{x}}}\n")).collect();
    std::fs::write(&path, input).unwrap();
    for (expr, ok) in [
        ("x + 1", vec![1i64, 2, 3, i64::MIN]),
        ("x - 1", vec![1, i64::MAX, 2, 3]),
        ("x * 2", vec![1, 2, 3]),
    ] {
        let out = MemorySink::new();
        let rows = out.handle();
        let errors = MemorySink::new();
        let error_rows = errors.handle();
        Pipeline::builder()
            .source(rivulet::FileSource::builder(&path).build().unwrap())
            .format(rivulet::RecordFormat::Json)
            .columns(vec![rivulet::Column::new("x", DataType::Int64)])
            // In the projection and in the filter.
            .sql(format!(
                "SELECT x, {expr} AS y FROM source WHERE {expr} IS NOT NULL"
            ))
            .sink(out)
            .error_output(errors)
            .build()
            .await
            .unwrap()
            .run()
            .await
            .unwrap();
        let mut got = Vec::new();
        for b in rows.batches() {
            let x = b.column_by_name("x").unwrap().as_primitive::<Int64Type>();
            let y = b.column_by_name("y").unwrap().as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let want = match expr {
                    "x + 1" => x.value(i) + 1,
                    "x - 1" => x.value(i) - 1,
                    _ => x.value(i) * 2,
                };
                assert_eq!(y.value(i), want, "{expr} for {}", x.value(i));
                got.push(x.value(i));
            }
        }
        let mut want = ok.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{expr}: the rows that do not overflow");
        let failed: Vec<String> = error_rows
            .batches()
            .iter()
            .flat_map(|b| {
                let m = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| m.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(failed.len(), xs.len() - ok.len(), "{expr}: {failed:?}");
        assert!(
            failed.iter().all(|m| m.contains("verflow")),
            "{expr}: {failed:?}"
        );
    }
}

/// A backlog of four shards read out of step: each batch is one shard's next 3,000 records, the
/// shards' event times 25 s apart, one record in 97 malformed and one in 89 with a time that is
/// not one. Declared up front and finished at the end, as the Kinesis source says of shards.
#[derive(Debug)]
struct FourShardBacklog {
    batches: std::vec::IntoIter<SourceBatch>,
}

/// The payloads of the backlog, by shard: `(payload, good)`.
fn four_shard_payloads() -> Vec<Vec<(String, bool)>> {
    (0..4)
        .map(|shard| {
            (0..9_000i64)
                .map(|i| {
                    let ms = 1_767_225_600_000 + i * 37 - shard * 25_000;
                    let t = chrono::DateTime::from_timestamp_millis(ms)
                        .unwrap()
                        .format("%Y-%m-%dT%H:%M:%S%.3fZ");
                    let key = (i * 7 + shard) % 11;
                    if i % 97 == 5 {
                        (format!(r#"{{"k":"k{key}","v":{i},"t":"#), false)
                    } else if i % 89 == 3 {
                        (format!(r#"{{"k":"k{key}","v":{i},"t":"soon"}}"#), false)
                    } else {
                        (format!(r#"{{"k":"k{key}","v":{i},"t":"{t}"}}"#), true)
                    }
                })
                .collect()
        })
        .collect()
}

impl FourShardBacklog {
    fn new() -> Self {
        let shards = four_shard_payloads();
        let mut batches = Vec::new();
        for part in 0..3 {
            for (s, payloads) in shards.iter().enumerate() {
                let shard = format!("shard-{s}");
                let records: Vec<Record> = payloads[part * 3000..(part + 1) * 3000]
                    .iter()
                    .enumerate()
                    .map(|(i, (p, _))| {
                        // Arrived after every event time of the backlog (none is in the future).
                        Record::new(Bytes::from(p.clone()), 1_767_226_000_000)
                            .with_shard_id(shard.as_str())
                            .with_sequence_number((part * 3000 + i).to_string())
                    })
                    .collect();
                let mut batch =
                    SourceBatch::new(records, Position::single(&shard, (part + 1).to_string()));
                if part == 0 && s == 0 {
                    batch = batch.with_partitions(
                        (0..4).map(|s| rivulet::PartitionEvent::declared(format!("shard-{s}"))),
                    );
                }
                if part == 2 {
                    batch = batch.with_partitions([rivulet::PartitionEvent::Finished {
                        partition: shard.as_str().into(),
                        children: Vec::new(),
                    }]);
                }
                batches.push(batch);
            }
        }
        Self {
            batches: batches.into_iter(),
        }
    }
}

#[async_trait]
impl Source for FourShardBacklog {
    fn name(&self) -> &str {
        "four-shard backlog"
    }

    async fn next_batch(&mut self) -> rivulet::Result<Option<SourceBatch>> {
        Ok(self.batches.next())
    }
}

/// Decoding on several threads, and a micro-batch decoded while the one before it runs through
/// the windows, must change nothing: every good record counted in its window, every bad one in
/// the error output, whatever the number of workers. The expected windows are computed here from
/// the payloads as written.
#[tokio::test]
async fn a_four_shard_backlog_gives_the_same_windows_and_errors_with_any_number_of_workers() {
    use std::collections::BTreeMap;
    let mut expected: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    let mut bad = 0;
    for (shard, payloads) in four_shard_payloads().iter().enumerate() {
        for (i, (_, good)) in payloads.iter().enumerate() {
            if !good {
                bad += 1;
                continue;
            }
            let i = i as i64;
            let ms = 1_767_225_600_000 + i * 37 - shard as i64 * 25_000;
            let key = format!("k{}", (i * 7 + shard as i64) % 11);
            let e = expected
                .entry((key, ms - ms.rem_euclid(10_000)))
                .or_default();
            e.0 += 1;
            e.1 += i;
        }
    }
    for workers in [1, 2, 3] {
        let out = MemorySink::new();
        let rows = out.handle();
        let errors = MemorySink::new();
        let error_rows = errors.handle();
        let report = run_to_end(
            Pipeline::builder()
                .source(FourShardBacklog::new())
                .columns(vec![
                    rivulet::Column::new("k", arrow::datatypes::DataType::Utf8),
                    rivulet::Column::new("v", arrow::datatypes::DataType::Int64),
                    rivulet::Column::new("t", arrow::datatypes::DataType::Utf8),
                ])
                .rowtime_field("t")
                .sql(
                    "SELECT k, CAST(window_start AS BIGINT) AS w, COUNT(*) AS n, SUM(v) AS s \
                     FROM source GROUP BY k, TUMBLE(t, INTERVAL '10' SECOND)",
                )
                .workers(workers)
                .sink(out)
                .error_output(errors),
        )
        .await;
        let mut got: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        for b in rows.batches() {
            let k = b.column_by_name("k").unwrap().as_string::<i32>();
            let int = |name: &str| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .clone()
            };
            let (w, n, s) = (int("w"), int("n"), int("s"));
            for r in 0..b.num_rows() {
                let before = got.insert(
                    (k.value(r).to_owned(), w.value(r)),
                    (n.value(r), s.value(r)),
                );
                assert!(
                    before.is_none(),
                    "{workers} workers: a window emitted twice"
                );
            }
        }
        if got != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(5)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|(k, v)| expected.get(*k) != Some(v))
                .take(5)
                .collect();
            panic!(
                "{workers} workers: {} windows out, {} expected; expected but not out: {missing:?}; \
                 out but not expected: {extra:?}; errors: {:?}",
                got.len(),
                expected.len(),
                report.metrics
            );
        }
        let errs = error_rows.batches();
        assert_eq!(
            errs.iter().map(|b| b.num_rows()).sum::<usize>(),
            bad,
            "{workers} workers"
        );
        assert_eq!(
            report.metrics.records_error, bad as u64,
            "{workers} workers"
        );
        assert_eq!(report.metrics.records_in, 36_000, "{workers} workers");
    }
}
