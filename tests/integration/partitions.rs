//! Event time across the partitions a source declares: a partition that has not answered yet holds
//! the windows back; a clock that is wrong does not close them, before or after a restart.
//!
//! A scripted source plays what a Kinesis source would see (shards declared before their first
//! records, pages arriving out of step), so that the cases are exact and quick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use async_trait::async_trait;
use bytes::Bytes;
use rivulet::{
    Column, FileCheckpointStore, MemorySink, MemorySinkHandle, PartitionEvent, Pipeline, Position,
    Record, Source, SourceBatch, WatermarkSettings,
};

/// One step of a script: wait, then hand out these records `(shard, id, event time)` and events.
type Step = (Duration, Vec<(&'static str, i64, i64)>, Vec<PartitionEvent>);

/// Plays its steps, then stays open and quiet. Its position is the number of steps played.
#[derive(Debug)]
struct Scripted {
    steps: Vec<Step>,
    next: usize,
}

#[async_trait]
impl Source for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn resume(&mut self, position: &Position) -> rivulet::Result<()> {
        self.next = position.get("script").map_or(0, |n| n.parse().unwrap());
        Ok(())
    }

    async fn next_batch(&mut self) -> rivulet::Result<Option<SourceBatch>> {
        let Some((wait, records, events)) = self.steps.get(self.next).cloned() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Some(SourceBatch::new(Vec::new(), Position::new())));
        };
        tokio::time::sleep(wait).await;
        self.next += 1;
        let records = records
            .into_iter()
            .map(|(shard, id, ts)| {
                Record::new(
                    Bytes::from(format!(r#"{{"id":{id},"ts":{ts}}}"#)),
                    chrono::Utc::now().timestamp_millis(),
                )
                .with_shard_id(shard)
                .with_sequence_number(id.to_string())
            })
            .collect();
        Ok(Some(
            SourceBatch::new(records, Position::single("script", self.next.to_string()))
                .with_partitions(events),
        ))
    }
}

const SQL: &str = "SELECT COUNT(*) AS n, CAST(window_start AS BIGINT) AS w FROM source \
                   GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)";

/// Event times 0, 1 s, … (ids from `first`) on `shard`, one a second from `from_s` to `to_s`.
fn rows(shard: &'static str, from_s: i64, to_s: i64, first: i64) -> Vec<(&'static str, i64, i64)> {
    (from_s..to_s)
        .map(|s| (shard, first + s, s * 1000))
        .collect()
}

struct Run {
    out: MemorySinkHandle,
    errors: MemorySinkHandle,
    stop: rivulet::ShutdownHandle,
    task: tokio::task::JoinHandle<rivulet::Result<rivulet::PipelineReport>>,
}

async fn start(steps: Vec<Step>, checkpoint: Option<&std::path::Path>) -> Run {
    let out = MemorySink::new();
    let errors = MemorySink::new();
    let (out_h, errors_h) = (out.handle(), errors.handle());
    let mut b = Pipeline::builder()
        .source(Scripted { steps, next: 0 })
        .columns(vec![
            Column::new("id", DataType::Int64),
            Column::new("ts", DataType::Int64),
        ])
        .sql(SQL)
        .sink(out)
        .error_output(errors)
        .watermark(WatermarkSettings {
            idle_timeout: Duration::from_millis(100),
            ..WatermarkSettings::default()
        });
    if let Some(path) = checkpoint {
        b = b
            .checkpoint_store(FileCheckpointStore::new(path))
            .checkpoint_interval(Duration::from_millis(20));
    }
    let pipeline = b.build().await.expect("builds");
    let stop = pipeline.shutdown_handle();
    Run {
        out: out_h,
        errors: errors_h,
        stop,
        task: tokio::spawn(pipeline.run()),
    }
}

/// Window start → count, of every row out so far.
fn windows(out: &MemorySinkHandle) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for b in out.batches() {
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        let w = b.column_by_name("w").unwrap().as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(
                m.insert(w.value(i), n.value(i)).is_none(),
                "window {} twice",
                w.value(i)
            );
        }
    }
    m
}

fn error_kinds(errors: &MemorySinkHandle) -> Vec<String> {
    errors
        .batches()
        .iter()
        .flat_map(|b: &RecordBatch| {
            let kinds = b.column_by_name("errorCode").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| kinds.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Run {
    /// Waits (up to 10 s) until `n` windows are out; the pipeline keeps running.
    async fn wait_for_windows(&self, n: usize) -> BTreeMap<i64, i64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w = windows(&self.out);
            if w.len() >= n {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} windows: {w:?}; errors {:?}",
                w.len(),
                error_kinds(&self.errors)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> (BTreeMap<i64, i64>, Vec<String>) {
        self.stop.shutdown();
        self.task.await.unwrap().unwrap();
        (windows(&self.out), error_kinds(&self.errors))
    }
}

#[tokio::test]
async fn a_declared_partition_holds_the_windows_until_its_rows_come() {
    // Shards A and B are declared; long after (several idle timeouts), one micro-batch brings a
    // page of A far ahead and then B's first page; then both move on together.
    let steps: Vec<Step> = vec![
        (
            Duration::ZERO,
            Vec::new(),
            vec![PartitionEvent::declared("A"), PartitionEvent::declared("B")],
        ),
        (
            Duration::from_millis(400),
            [rows("A", 0, 10, 0), rows("B", 0, 10, 100)].concat(),
            Vec::new(),
        ),
        (
            Duration::ZERO,
            [rows("A", 10, 20, 0), rows("B", 10, 20, 100)].concat(),
            Vec::new(),
        ),
    ];
    let run = start(steps, None).await;
    // Both shards are at 19 s: windows [0 s, 19 s) are complete, [19 s, 20 s) stays open.
    let got = run.wait_for_windows(19).await;
    let (last, errors) = run.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    let want: BTreeMap<i64, i64> = (0..19).map(|s| (s * 1000, 2)).collect();
    assert_eq!(got, want);
    assert_eq!(last, want, "nothing more before the end of the input");
}

#[tokio::test]
async fn a_child_partition_holds_the_windows_at_its_parents_time_until_it_answers() {
    // P is split into C; P is read to its end while C is slow to answer; Q moves far ahead.
    let steps: Vec<Step> = vec![
        (
            Duration::ZERO,
            Vec::new(),
            vec![
                PartitionEvent::declared("P"),
                PartitionEvent::declared("Q"),
                PartitionEvent::Declared {
                    partition: Arc::from("C"),
                    parents: vec![Arc::from("P")],
                },
            ],
        ),
        (
            Duration::ZERO,
            [rows("P", 0, 5, 0), rows("Q", 0, 30, 100)].concat(),
            vec![PartitionEvent::Finished {
                partition: Arc::from("P"),
                children: vec![Arc::from("C")],
            }],
        ),
        (
            Duration::from_millis(400),
            rows("C", 5, 30, 200),
            Vec::new(),
        ),
    ];
    let run = start(steps, None).await;
    let got = run.wait_for_windows(29).await;
    let (_, errors) = run.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    let want: BTreeMap<i64, i64> = (0..29).map(|s| (s * 1000, 2)).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_far_future_event_time_is_a_bad_time_and_closes_nothing_before_or_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    // Year 9999 in the middle of shard A's rows.
    let far = 253_402_300_799_000;
    let script = vec![
        (
            Duration::ZERO,
            Vec::new(),
            vec![PartitionEvent::declared("A")],
        ),
        (
            Duration::ZERO,
            [
                rows("A", 0, 5, 0),
                vec![("A", 99, far)],
                rows("A", 5, 10, 0),
            ]
            .concat(),
            Vec::new(),
        ),
        (Duration::ZERO, rows("A", 10, 16, 0), Vec::new()),
    ];
    let first: Vec<Step> = script[..2].to_vec();
    let run = start(first, Some(&checkpoint)).await;
    let got = run.wait_for_windows(9).await;
    let (_, errors) = run.stop().await;
    assert_eq!(errors, ["bad_time"]);
    assert_eq!(
        got,
        (0..9).map(|s| (s * 1000, 1)).collect::<BTreeMap<_, _>>()
    );
    // The restart resumes after the first two steps, with the window [9 s, 10 s) open.
    let run = start(script, Some(&checkpoint)).await;
    let got = run.wait_for_windows(6).await;
    let (_, errors) = run.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        got,
        (9..15).map(|s| (s * 1000, 1)).collect::<BTreeMap<_, _>>(),
        "windows 9 s to 14 s close as their time passes"
    );
}
