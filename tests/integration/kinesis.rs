//! The Kinesis source against a moto server on 127.0.0.1: start positions, resharding while
//! producing, KPL aggregation, throttling and iterator expiry, checkpoints across restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use rivulet::kinesis::{KinesisSource, PollSettings, StartPosition};
use rivulet::{
    Column, FileCheckpointStore, MemorySink, MemorySinkHandle, NullSink, Pipeline, PipelineReport,
};

use crate::support::fault_proxy::{FaultProxy, Faults};
use crate::support::moto::MotoServer;

const REGION: &str = "us-east-1";

pub(crate) fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        // Faults must reach the source, which retries and counts them itself.
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

pub(crate) async fn create_stream(c: &Client, name: &str, shards: i32) {
    c.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
}

/// Shard ids, in ListShards order.
async fn shard_ids(c: &Client, name: &str) -> Vec<(String, bool)> {
    let out = c
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .expect("list shards");
    out.shards()
        .iter()
        .map(|s| {
            (
                s.shard_id().to_owned(),
                s.sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none(),
            )
        })
        .collect()
}

/// Puts (payload, partition key) records; returns (shard, sequence number) of each, in order.
pub(crate) async fn put_raw(
    c: &Client,
    name: &str,
    records: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut placed = Vec::new();
    for chunk in records.chunks(250) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|(data, key)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data.as_bytes()))
                    .partition_key(key)
                    .build()
                    .unwrap()
            })
            .collect();
        let out = c
            .put_records()
            .stream_name(name)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(out.failed_record_count(), Some(0));
        placed.extend(out.records().iter().map(|r| {
            (
                r.shard_id().unwrap_or_default().to_owned(),
                r.sequence_number().unwrap_or_default().to_owned(),
            )
        }));
    }
    placed
}

/// Puts `{"id": i, "key": k}` records with partition key `k`; returns (shard, sequence) per id.
async fn put(c: &Client, name: &str, items: &[(i64, String)]) -> Vec<(String, String)> {
    let records = items
        .iter()
        .map(|(id, key)| (format!(r#"{{"id":{id},"key":"{key}"}}"#), key.clone()))
        .collect();
    put_raw(c, name, records).await
}

/// Every record in `stream`, read back through the SDK from the start of every shard (closed
/// ones included), with the id of the shard it was read from.
pub(crate) async fn read_back(
    c: &Client,
    stream: &str,
) -> Vec<(String, aws_sdk_kinesis::types::Record)> {
    let mut out = Vec::new();
    let listed = c.list_shards().stream_name(stream).send().await.unwrap();
    for shard in listed.shards() {
        let mut it = c
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        while let Some(current) = it {
            let page = c
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            it = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
            for r in page.records {
                out.push((shard.shard_id().to_owned(), r));
            }
        }
    }
    out
}

/// A moto server with a new stream, and a client for it; `None` when moto is missing (the test is
/// skipped, or fails where moto is required).
pub(crate) async fn moto_stream(name: &str, shards: i32) -> Option<(MotoServer, Client)> {
    let moto = MotoServer::start()?;
    let c = client(&moto.endpoint());
    create_stream(&c, name, shards).await;
    Some((moto, c))
}

/// A source on `name` through `c`, polling fast.
async fn kinesis(c: &Client, name: &str, start: StartPosition) -> KinesisSource {
    KinesisSource::builder(name)
        .client(c.clone())
        .start_position(start)
        .poll_settings(fast_polling())
        .build()
        .await
        .unwrap()
}

fn fast_polling() -> PollSettings {
    PollSettings {
        idle_interval: Duration::from_millis(200),
        list_shards_interval: Duration::from_secs(1),
        ..PollSettings::default()
    }
}

/// Runs `sql` over the stream into a memory sink until `wanted` rows have arrived (or 60 s).
struct Running {
    rows: MemorySinkHandle,
    shutdown: rivulet::ShutdownHandle,
    task: tokio::task::JoinHandle<rivulet::Result<PipelineReport>>,
    health: Arc<rivulet::SourceHealth>,
}

/// A pipeline over `{"id", "key"}` records into `sink`.
fn id_key_pipeline(source: KinesisSource, sql: &str, sink: MemorySink) -> rivulet::PipelineBuilder {
    Pipeline::builder()
        .source(source)
        .columns(vec![
            Column::new("id", arrow::datatypes::DataType::Int64),
            Column::new("key", arrow::datatypes::DataType::Utf8),
        ])
        .sql(sql)
        .sink(sink)
}

async fn start(source: KinesisSource, sql: &str) -> Running {
    let sink = MemorySink::new();
    let rows = sink.handle();
    let pipeline = id_key_pipeline(source, sql, sink)
        .error_output(NullSink::new())
        .build()
        .await
        .expect("pipeline builds");
    let shutdown = pipeline.shutdown_handle();
    let health = pipeline.source_health().expect("kinesis reports health");
    let task = tokio::spawn(pipeline.run());
    Running {
        rows,
        shutdown,
        task,
        health,
    }
}

impl Running {
    async fn wait_for(&self, wanted: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.rows.num_rows() < wanted {
            assert!(
                Instant::now() < deadline,
                "only {} of {wanted} rows after 60 s",
                self.rows.num_rows()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> (Vec<RecordBatch>, PipelineReport) {
        self.shutdown.shutdown();
        let report = self.task.await.expect("joined").expect("pipeline ran");
        (self.rows.batches(), report)
    }
}

/// Rows as (id, key, shard, sequence, sub-sequence), in output order.
fn rows(batches: &[RecordBatch]) -> Vec<(i64, String, String, String, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str| b.column_by_name(name).unwrap_or_else(|| panic!("{name}"));
        let id = col("id").as_primitive::<Int64Type>();
        let key = col("key").as_string::<i32>();
        let shard = col("SHARD_ID").as_string::<i32>();
        let seq = col("SEQUENCE_NUMBER").as_string::<i32>();
        let sub = col("SUB_SEQUENCE_NUMBER").as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(!shard.is_null(i) && !seq.is_null(i) && !sub.is_null(i));
            out.push((
                id.value(i),
                key.value(i).to_owned(),
                shard.value(i).to_owned(),
                seq.value(i).to_owned(),
                sub.value(i),
            ));
        }
    }
    out
}

const META_SQL: &str =
    "SELECT id, key, SHARD_ID, SEQUENCE_NUMBER, SUB_SEQUENCE_NUMBER, PARTITION_KEY FROM source";

/// Every id exactly once, and ids increasing within each key in output order.
fn assert_exactly_once_in_key_order(got: &[(i64, String, String, String, i64)], expected: usize) {
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (id, key, ..) in got {
        assert!(seen.insert(*id), "id {id} read twice");
        if let Some(prev) = last.insert(key, *id) {
            assert!(prev < *id, "key {key}: id {id} came after {prev}");
        }
    }
    assert_eq!(seen.len(), expected, "ids read: {}", seen.len());
}

fn items(ids: std::ops::Range<i64>, keys: i64) -> Vec<(i64, String)> {
    ids.map(|i| (i, format!("key-{}", i % keys))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_two_shards_from_trim_horizon_with_metadata() {
    let Some((_moto, c)) = moto_stream("two", 2).await else {
        return;
    };
    let input = items(0..400, 37);
    let placed = put(&c, "two", &input).await;
    assert!(
        placed.iter().map(|p| &p.0).collect::<HashSet<_>>().len() == 2,
        "records land on both shards"
    );
    let source = kinesis(&c, "two", StartPosition::TrimHorizon).await;
    let run = start(source, META_SQL).await;
    run.wait_for(400).await;
    let health = run.health.partitions();
    let (batches, report) = run.stop().await;
    let got = rows(&batches);
    assert_exactly_once_in_key_order(&got, 400);
    // The metadata columns are the ones PutRecords reported.
    for (id, key, shard, seq, sub) in &got {
        let (want_shard, want_seq) = &placed[*id as usize];
        assert_eq!((shard, seq, *sub), (want_shard, want_seq, 0), "id {id}");
        assert_eq!(key, &format!("key-{}", id % 37));
    }
    assert_eq!(health.len(), 2);
    assert_eq!(health.values().map(|h| h.records).sum::<u64>(), 400);
    // The committed position names both shards at their last sequence numbers.
    for (shard, _) in shard_ids(&c, "two").await {
        let last = placed
            .iter()
            .filter(|p| p.0 == shard)
            .map(|p| p.1.parse::<u128>().unwrap())
            .max()
            .unwrap();
        assert_eq!(
            report.committed.get(&shard),
            Some(last.to_string().as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_reads_only_what_is_written_after_the_start() {
    let Some((_moto, c)) = moto_stream("late", 2).await else {
        return;
    };
    put(&c, "late", &items(0..50, 7)).await;
    let source = kinesis(&c, "late", StartPosition::Latest).await;
    let run = start(source, META_SQL).await;
    // Both readers have made their first call once they report a lag.
    let deadline = Instant::now() + Duration::from_secs(30);
    while run
        .health
        .partitions()
        .values()
        .filter(|h| h.millis_behind.is_some())
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "readers did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(&c, "late", &items(1000..1060, 7)).await;
    run.wait_for(60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (batches, _) = run.stop().await;
    let got = rows(&batches);
    assert_eq!(got.len(), 60);
    assert!(got.iter().all(|r| r.0 >= 1000), "an old record was read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_skips_earlier_records() {
    let Some((_moto, c)) = moto_stream("ts", 2).await else {
        return;
    };
    put(&c, "ts", &items(0..40, 5)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let from = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(&c, "ts", &items(100..130, 5)).await;
    let source = kinesis(&c, "ts", StartPosition::AtTimestamp(from)).await;
    let run = start(source, META_SQL).await;
    run.wait_for(30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (batches, _) = run.stop().await;
    let got = rows(&batches);
    assert_exactly_once_in_key_order(&got, 30);
    assert!(got.iter().all(|r| r.0 >= 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_producing_keep_every_record_once_and_in_key_order() {
    let Some((_moto, c)) = moto_stream("reshard", 2).await else {
        return;
    };
    let source = kinesis(&c, "reshard", StartPosition::TrimHorizon).await;
    let run = start(source, META_SQL).await;
    let mut next = 0i64;
    let mut produce = |n: i64| {
        let batch = items(next..next + n, 23);
        next += n;
        batch
    };
    for round in 0..30 {
        put(&c, "reshard", &produce(20)).await;
        if round == 8 {
            // Split the first shard in the middle of its range.
            let shards = c.list_shards().stream_name("reshard").send().await.unwrap();
            let s = &shards.shards()[0];
            let range = s.hash_key_range().unwrap();
            let lo: u128 = range.starting_hash_key().parse().unwrap();
            let hi: u128 = range.ending_hash_key().parse().unwrap();
            c.split_shard()
                .stream_name("reshard")
                .shard_to_split(s.shard_id())
                .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
                .send()
                .await
                .expect("split");
        }
        if round == 18 {
            // Merge the split's two children back together.
            let open: Vec<_> = c
                .list_shards()
                .stream_name("reshard")
                .send()
                .await
                .unwrap()
                .shards()
                .iter()
                .filter(|s| {
                    s.parent_shard_id().is_some()
                        && s.sequence_number_range()
                            .is_some_and(|r| r.ending_sequence_number().is_none())
                })
                .map(|s| s.shard_id().to_owned())
                .collect();
            assert_eq!(open.len(), 2, "the split's children: {open:?}");
            c.merge_shards()
                .stream_name("reshard")
                .shard_to_merge(&open[0])
                .adjacent_shard_to_merge(&open[1])
                .send()
                .await
                .expect("merge");
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    run.wait_for(600).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let health = run.health.partitions();
    let (batches, report) = run.stop().await;
    let got = rows(&batches);
    assert_exactly_once_in_key_order(&got, 600);
    // 2 original shards, 2 children of the split, 1 of the merge; 3 closed and read to the end.
    assert_eq!(health.len(), 5, "{health:?}");
    assert_eq!(health.values().filter(|h| h.finished).count(), 3);
    let ended: Vec<_> = report
        .committed
        .iter()
        .filter(|(_, o)| *o == "SHARD_END")
        .collect();
    assert_eq!(ended.len(), 3, "{:?}", report.committed);
    // Every shard contributed records: children were read, not skipped.
    let shards: HashSet<&str> = got.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(shards.len(), 5, "{shards:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_aggregates_unpack_with_sub_sequence_numbers_and_every_sub_record_is_delivered() {
    kpl_aggregates_unpack(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl_style_filtering_sends_sub_records_outside_the_shard_to_the_error_output() {
    kpl_aggregates_unpack(true).await;
}

/// Aggregates (rivulet's, an independent encoder's, a corrupt one) written to shard 0 of two,
/// some of whose sub-records carry hash keys of shard 1. Every sub-record comes out once: in the
/// output, or (with `filter`, those of shard 1) in the error output with the reason.
async fn kpl_aggregates_unpack(filter: bool) {
    let Some((_moto, c)) = moto_stream("kpl", 2).await else {
        return;
    };
    let shards = shard_ids(&c, "kpl").await;
    // Shard 1 owns the upper half of the hash-key space.
    let upper = (1u128 << 127).to_string();
    let payloads: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"id":{i},"key":"k{i}"}}"#))
        .collect();
    let aggregated = rivulet::kpl::aggregate(
        payloads
            .iter()
            .enumerate()
            // MD5("a") and MD5("c") both fall in shard 0's half of the hash-key space.
            .map(|(i, p)| (if i % 2 == 0 { "a" } else { "c" }, None, p.as_bytes())),
    );
    // Sent with an explicit hash key of 1 so it lands on shard 0; one sub-record carries an
    // explicit hash key of shard 1 (as aggregators that route by the first record's key write).
    let mut with_stray: Vec<(&str, Option<&str>, &[u8])> = Vec::new();
    let stray = r#"{"id":99,"key":"stray"}"#;
    let kept = r#"{"id":10,"key":"k10"}"#;
    with_stray.push(("c", Some("1"), kept.as_bytes()));
    with_stray.push(("c", Some(upper.as_str()), stray.as_bytes()));
    let with_stray = rivulet::kpl::aggregate(with_stray);
    // The fixture written by an independent encoder, and its corrupted twin.
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kpl/aggregated.bin"
    ))
    .unwrap();
    let corrupt = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kpl/corrupt.bin"
    ))
    .unwrap();
    let mut sent = Vec::new();
    for (data, name) in [
        (aggregated.to_vec(), "aggregated"),
        (with_stray.to_vec(), "stray"),
        (fixture.clone(), "fixture"),
        (corrupt.clone(), "corrupt"),
    ] {
        let out = c
            .put_record()
            .stream_name("kpl")
            .partition_key("outer")
            .explicit_hash_key("1")
            .data(Blob::new(data))
            .send()
            .await
            .unwrap();
        assert_eq!(out.shard_id(), shards[0].0);
        sent.push((name, out.sequence_number().to_owned()));
    }
    let sink = MemorySink::new();
    let out = sink.handle();
    let error_sink = MemorySink::new();
    let errors = error_sink.handle();
    let source = KinesisSource::builder("kpl")
        .client(c.clone())
        .poll_settings(fast_polling())
        .filter_out_of_range_sub_records(filter)
        .build()
        .await
        .unwrap();
    let health = rivulet::Source::health(&source).unwrap();
    let pipeline = Pipeline::builder()
        .source(source)
        .columns(vec![Column::new("id", arrow::datatypes::DataType::Int64)])
        .sql("SELECT id, SEQUENCE_NUMBER, SUB_SEQUENCE_NUMBER, PARTITION_KEY FROM source")
        .sink(sink)
        .error_output(error_sink)
        .build()
        .await
        .unwrap();
    let stop = pipeline.shutdown_handle();
    let task = tokio::spawn(pipeline.run());
    let fixture_expected: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kpl/expected.json"
        ))
        .unwrap(),
    )
    .unwrap();
    // The fixture's sub-records route by their own hash keys (computed independently, in
    // Python): those of the upper half belong to shard 1.
    let in_shard0 = |want: &serde_json::Value| {
        want["hash_key"].as_str().unwrap().parse::<u128>().unwrap() < (1u128 << 127)
    };
    let fixture_kept = fixture_expected.iter().filter(|w| in_shard0(w)).count();
    assert!(fixture_kept > 0 && fixture_kept < fixture_expected.len());
    // 5 + 2 + the fixture's sub-records + the corrupt record passed through as one.
    let total = 5 + 2 + fixture_expected.len() + 1;
    let outside = 1 + fixture_expected.len() - fixture_kept;
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.num_rows() + errors.num_rows() < total {
        assert!(Instant::now() < deadline, "{:?}", health.partitions());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.shutdown();
    task.await.unwrap().unwrap();
    let shard0 = &health.partitions()[&shards[0].0];
    assert_eq!(
        shard0.out_of_range as usize,
        if filter { outside } else { 0 }
    );
    assert_eq!(shard0.records as usize, total);
    // With the filter, the sub-records of shard 1 are in the error output, saying why.
    let mut set_aside = 0;
    for b in errors.batches() {
        let kind = b.column_by_name("errorCode").unwrap().as_string::<i32>();
        let stage = b.column_by_name("stage").unwrap().as_string::<i32>();
        let reason = b.column_by_name("errorMessage").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            if kind.value(i) == "out_of_shard_range" {
                assert_eq!(stage.value(i), "source");
                assert!(
                    reason.value(i).contains("outside the range"),
                    "{}",
                    reason.value(i)
                );
                set_aside += 1;
            }
        }
    }
    assert_eq!(set_aside, if filter { outside } else { 0 });

    // (sequence, sub-sequence) → (id or raw payload, partition key), over output and errors.
    let mut got: BTreeMap<(String, i64), (String, String)> = BTreeMap::new();
    for b in out.batches() {
        let id = b.column(0).as_primitive::<Int64Type>();
        let seq = b.column(1).as_string::<i32>();
        let sub = b.column(2).as_primitive::<Int64Type>();
        let pk = b.column(3).as_string::<i32>();
        for i in 0..b.num_rows() {
            let key = (seq.value(i).to_owned(), sub.value(i));
            let id = if id.is_null(i) {
                "null".to_owned()
            } else {
                id.value(i).to_string()
            };
            let was = got.insert(key, (id, pk.value(i).to_owned()));
            assert!(was.is_none(), "a sub-record read twice");
        }
    }
    for b in errors.batches() {
        let col = |n: &str| Arc::clone(b.column_by_name(n).unwrap());
        let (raw, pk, seq, sub) = (
            col("rawData"),
            col("partitionKey"),
            col("sequenceNumber"),
            col("subSequenceNumber"),
        );
        let sub = sub.as_primitive::<arrow::datatypes::UInt64Type>();
        for i in 0..b.num_rows() {
            let key = (
                seq.as_string::<i32>().value(i).to_owned(),
                if sub.is_null(i) {
                    -1
                } else {
                    sub.value(i) as i64
                },
            );
            got.insert(
                key,
                (
                    raw.as_string::<i32>().value(i).to_owned(),
                    pk.as_string::<i32>().value(i).to_owned(),
                ),
            );
        }
    }
    let seq_of = |name: &str| sent.iter().find(|s| s.0 == name).unwrap().1.clone();
    for i in 0..5i64 {
        let pk = if i % 2 == 0 { "a" } else { "c" };
        assert_eq!(
            got[&(seq_of("aggregated"), i)],
            (i.to_string(), pk.to_owned())
        );
    }
    assert_eq!(
        got[&(seq_of("stray"), 0)],
        ("10".to_owned(), "c".to_owned())
    );
    // The stray sub-record is delivered (a row, id 99) or, filtered, its bytes are in the
    // error output.
    let (stray_value, _) = &got[&(seq_of("stray"), 1)];
    if filter {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(stray_value)
            .unwrap();
        assert_eq!(raw, stray.as_bytes());
    } else {
        assert_eq!(stray_value, "99");
    }
    // Every sub-record of the independently encoded fixture, with its key and payload.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    for want in &fixture_expected {
        let sub = want["sub_sequence_number"].as_i64().unwrap();
        let key = (seq_of("fixture"), sub);
        let (value, pk) = &got[&key];
        assert_eq!(pk, want["partition_key"].as_str().unwrap());
        let data = b64.decode(want["data_base64"].as_str().unwrap()).unwrap();
        if filter && !in_shard0(want) {
            assert_eq!(
                value,
                want["data_base64"].as_str().unwrap(),
                "sub-record {sub}"
            );
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(&data) {
            Ok(v) if v.is_object() => {
                let id = v.get("id").map_or("null".to_owned(), |i| i.to_string());
                assert_eq!(value, &id);
            }
            // Not a row: it reached the error output with its bytes intact.
            _ => assert_eq!(value, want["data_base64"].as_str().unwrap()),
        }
    }
    // The corrupt aggregate passed through whole as one plain record: not JSON, so an error.
    let (raw, pk) = &got[&(seq_of("corrupt"), -1)];
    assert_eq!(pk, "outer");
    assert_eq!(b64.decode(raw).unwrap(), corrupt);
}

/// Credentials that fail to load on the next `fail_next` calls (or always), as an
/// instance-metadata or STS hiccup does.
#[derive(Debug, Default)]
struct FlakyCredentials {
    calls: std::sync::atomic::AtomicU64,
    fail_next: std::sync::atomic::AtomicU64,
    always_fail: bool,
}

impl aws_credential_types::provider::ProvideCredentials for FlakyCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        use aws_credential_types::provider::{error::CredentialsError, future};
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        let fail = self.always_fail
            || self
                .fail_next
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok();
        future::ProvideCredentials::ready(if fail {
            Err(CredentialsError::provider_error(
                "timed out reading instance metadata (injected)",
            ))
        } else {
            Ok(Credentials::new("test", "test", None, None, "flaky"))
        })
    }
}

/// A client whose credentials are loaded for every call (no cache) from `credentials`.
fn flaky_client(endpoint: &str, credentials: &Arc<FlakyCredentials>) -> Client {
    let provider: Arc<dyn aws_credential_types::provider::ProvideCredentials> =
        Arc::clone(credentials) as _;
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::SharedCredentialsProvider::new(
            provider,
        ))
        .identity_cache(aws_sdk_kinesis::config::IdentityCache::no_cache())
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_fail_to_load_for_a_while_are_retried_and_nothing_is_lost() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some((moto, c)) = moto_stream("creds", 2).await else {
        return;
    };
    put(&c, "creds", &items(0..200, 7)).await;
    // Five failures at the start (the first ListShards), four in a row later (while reading).
    let credentials = Arc::new(FlakyCredentials::default());
    credentials.fail_next.store(5, SeqCst);
    let source = KinesisSource::builder("creds")
        .client(flaky_client(&moto.endpoint(), &credentials))
        .poll_settings(PollSettings {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..fast_polling()
        })
        .build()
        .await
        .unwrap();
    let run = start(source, META_SQL).await;
    run.wait_for(200).await;
    credentials.fail_next.store(4, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while credentials.fail_next.load(SeqCst) > 0 {
        assert!(Instant::now() < deadline, "the readers stopped calling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put(&c, "creds", &items(200..300, 7)).await;
    run.wait_for(300).await;
    let (batches, _) = run.stop().await;
    assert_exactly_once_in_key_order(&rows(&batches), 300);

    // Credentials that never load stop the source after a bounded number of attempts.
    let never = Arc::new(FlakyCredentials {
        always_fail: true,
        ..FlakyCredentials::default()
    });
    let source = KinesisSource::builder("creds")
        .client(flaky_client(&moto.endpoint(), &never))
        .poll_settings(PollSettings {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            ..fast_polling()
        })
        .build()
        .await
        .unwrap();
    let err = id_key_pipeline(source, META_SQL, MemorySink::new())
        .error_output(NullSink::new())
        .build()
        .await
        .expect("builds without a call")
        .run()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("listing shards failed 8 times"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_expired_iterators_lose_and_repeat_nothing() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let direct = client(&moto.endpoint());
    create_stream(&direct, "faulty", 2).await;
    put(&direct, "faulty", &items(0..500, 11)).await;
    let proxy = FaultProxy::start(
        moto.port(),
        Faults {
            throttle: 0.3,
            expire: 0.2,
            seed: 7,
            ..Faults::default()
        },
    );
    let through = client(&proxy.endpoint());
    let source = KinesisSource::builder("faulty")
        .client(through)
        .poll_settings(PollSettings {
            // Small reads: many calls, so many faults.
            max_records: 25,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..fast_polling()
        })
        .build()
        .await
        .unwrap();
    let run = start(source, META_SQL).await;
    // Records keep coming while faults are injected.
    put(&direct, "faulty", &items(500..600, 11)).await;
    run.wait_for(600).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = run.health.partitions();
    let (batches, _) = run.stop().await;
    let got = rows(&batches);
    assert_exactly_once_in_key_order(&got, 600);
    // Within each shard, sequence numbers strictly increase: nothing repeated, nothing reordered.
    let mut last: HashMap<String, u128> = HashMap::new();
    for (_, _, shard, seq, _) in &got {
        let seq: u128 = seq.parse().unwrap();
        if let Some(prev) = last.insert(shard.clone(), seq) {
            assert!(prev < seq, "shard {shard}: {seq} after {prev}");
        }
    }
    // Faults go on until the readers stop: the proxy may count a few more than the readers saw.
    let (throttles, expiries) = proxy.injected();
    let seen_throttles = health.values().map(|h| h.throttles).sum::<u64>();
    let seen_expiries = health.values().map(|h| h.renewals).sum::<u64>();
    assert!(seen_throttles > 5 && seen_expiries > 3, "{health:?}");
    assert!(seen_throttles <= throttles && seen_expiries <= expiries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_resumes_after_the_last_committed_record() {
    let Some((_moto, c)) = moto_stream("resume", 2).await else {
        return;
    };
    put(&c, "resume", &items(0..100, 9)).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint");
    let run_once = |expect: usize| {
        let c = c.clone();
        let cp = cp.clone();
        async move {
            let source = KinesisSource::builder("resume")
                .client(c)
                .poll_settings(fast_polling())
                .build()
                .await
                .unwrap();
            let sink = MemorySink::new();
            let rows_handle = sink.handle();
            let pipeline = id_key_pipeline(source, META_SQL, sink)
                .checkpoint_store(FileCheckpointStore::new(&cp))
                .checkpoint_interval(Duration::from_millis(100))
                .build()
                .await
                .unwrap();
            let resumed = pipeline.resumed_from().clone();
            let stop = pipeline.shutdown_handle();
            let task = tokio::spawn(pipeline.run());
            let deadline = Instant::now() + Duration::from_secs(30);
            while rows_handle.num_rows() < expect {
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            stop.shutdown();
            let report = task.await.unwrap().unwrap();
            (resumed, rows(&rows_handle.batches()), report)
        }
    };
    let (resumed, first, report) = run_once(100).await;
    assert!(resumed.is_empty());
    assert_exactly_once_in_key_order(&first, 100);
    assert!(report.metrics.checkpoints >= 1);
    put(&c, "resume", &items(100..150, 9)).await;
    let (resumed, second, _) = run_once(50).await;
    assert_eq!(resumed, report.committed);
    // Only the new records: the restart resumed right after the checkpoint.
    assert_eq!(
        second.len(),
        50,
        "{:?}",
        second.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(second.iter().all(|r| r.0 >= 100));
    let stored = rivulet::CheckpointStore::load(&FileCheckpointStore::new(&cp))
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.state.is_empty(),
        "stateless SQL keeps no window state"
    );
    assert_eq!(stored.position.iter().count(), 2, "{:?}", stored.position);
}

/// One `rivulet run` child process of a crash test.
pub(crate) fn spawn_run(
    config: &std::path::Path,
    home: &std::path::Path,
    progress: &str,
) -> std::process::Child {
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .arg("run")
        .arg(config)
        .args(["--progress-interval", progress])
        // Credentials for the emulator; nothing is looked up anywhere else.
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home)
        .env_remove("AWS_PROFILE")
        .env("RUST_LOG", "rivulet=info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rivulet run")
}

/// Writes the pipeline file `<name>.toml` into `dir`; returns its path.
pub(crate) fn write_pipeline_file(
    dir: &std::path::Path,
    name: &str,
    toml: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Stops a `rivulet run` child with SIGTERM and asserts that it stopped gracefully.
pub(crate) fn stop_gracefully(child: &mut std::process::Child) {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop: {status}");
}

/// JSON lines of a file; a line torn by a kill (the last one, unparseable) is left out.
pub(crate) fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn crash_config(
    dir: &std::path::Path,
    endpoint: &str,
    stream: &str,
    sql: &str,
    out: &str,
) -> std::path::PathBuf {
    write_pipeline_file(
        dir,
        out,
        &format!(
            r#"
[source]
type = "kinesis"
stream = "{stream}"
region = "{REGION}"
endpoint_url = "{endpoint}"
max_records = 40
idle_poll_interval_ms = 200
list_shards_interval_ms = 1000

[format]
type = "json"
rowtime = "ts"
columns = [
  {{ name = "id", type = "BIGINT" }},
  {{ name = "key", type = "VARCHAR(16)" }},
  {{ name = "ts", type = "BIGINT" }},
]

[query]
sql = """{sql}"""
idle_timeout_ms = 3000

[[sinks]]
type = "file"
path = "{out}.ndjson"

[error_output]
type = "file"
path = "{out}.errors.ndjson"

[checkpoint]
path = "state/checkpoint"
interval_ms = 150

[batch]
max_rows = 60
max_latency_ms = 50
"#
        ),
    )
}

/// Puts `n` records `{"id", "key", "ts"}` (event time 10 ms apart) on a new 2-shard stream;
/// returns the sequence numbers per shard in order, with the id at each.
async fn produce_for_crash(c: &Client, stream: &str, n: i64) -> HashMap<String, Vec<(u128, i64)>> {
    create_stream(c, stream, 2).await;
    let records = (0..n)
        .map(|i| {
            let key = format!("k{}", i % 13);
            let ts = 1_700_000_000_000 + i * 10;
            (format!(r#"{{"id":{i},"key":"{key}","ts":{ts}}}"#), key)
        })
        .collect();
    let mut placed: HashMap<String, Vec<(u128, i64)>> = HashMap::new();
    for ((shard, seq), i) in put_raw(c, stream, records).await.into_iter().zip(0..) {
        placed
            .entry(shard)
            .or_default()
            .push((seq.parse().unwrap(), i));
    }
    placed
}

/// Kills a `rivulet run` with SIGKILL at several random points and restarts it from its checkpoint;
/// returns the outputs of every run and the checkpoint each run began from. Each kill comes a random
/// time after the run's first checkpoint, so that every restart resumes mid-stream.
async fn crash_and_restart(
    dir: &std::path::Path,
    endpoint: &str,
    stream: &str,
    sql: &str,
    kills: usize,
    done: impl Fn(&[Vec<serde_json::Value>]) -> bool,
) -> (
    Vec<Vec<serde_json::Value>>,
    Vec<Option<rivulet::Checkpoint>>,
) {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let store = FileCheckpointStore::new(dir.join("state/checkpoint"));
    let mut outputs = Vec::new();
    let mut starts = Vec::new();
    for run in 0..=kills {
        let name = format!("run{run}");
        let config = crash_config(dir, endpoint, stream, sql, &name);
        let start = rivulet::CheckpointStore::load(&store).await.unwrap();
        // The last run prints its progress line, shard by shard.
        let progress = if run < kills { "0" } else { "0.3" };
        let mut child = spawn_run(&config, dir, progress);
        if run < kills {
            // Wait for this run's first checkpoint, then kill at a random moment after it.
            let deadline = Instant::now() + Duration::from_secs(60);
            while rivulet::CheckpointStore::load(&store).await.unwrap() == start {
                assert!(Instant::now() < deadline, "run {run} wrote no checkpoint");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(0..900))).await;
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            starts.push(start);
            outputs.push(json_lines(&dir.join(format!("{name}.ndjson"))));
        } else {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let mut all = outputs.clone();
                all.push(json_lines(&dir.join(format!("{name}.ndjson"))));
                let printed = std::fs::read_to_string(config.with_extension("log"))
                    .is_ok_and(|l| l.contains("records in ("));
                if done(&all) && printed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the last run did not finish the input; its log:\n{}",
                    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stop_gracefully(&mut child);
            let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
            let line = log
                .lines()
                .find(|l| l.contains("records in ("))
                .unwrap_or_else(|| panic!("no progress line in {log}"));
            assert!(
                line.contains("shardId-000000000000 ") && line.contains(" ms throttled "),
                "{line}"
            );
            starts.push(start);
            outputs.push(json_lines(&dir.join(format!("{name}.ndjson"))));
        }
    }
    (outputs, starts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_loses_nothing_and_repeats_only_after_the_checkpoint() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let c = client(&moto.endpoint());
    let total = 2500i64;
    let placed = produce_for_crash(&c, "crash", total).await;
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT id, SHARD_ID, SEQUENCE_NUMBER FROM source";
    let (outputs, starts) =
        crash_and_restart(dir.path(), &moto.endpoint(), "crash", sql, 3, |all| {
            all.iter()
                .flatten()
                .map(|r| r["id"].as_i64().unwrap())
                .collect::<HashSet<_>>()
                .len()
                == total as usize
        })
        .await;
    // No loss: every record is in some run's output.
    let union: HashSet<i64> = outputs
        .iter()
        .flatten()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(union.len(), total as usize);
    // Each run reads each shard from exactly after the checkpoint it started from: its records
    // of a shard are the next ones in sequence order, none skipped, none before the checkpoint.
    for (run, (out, start)) in outputs.iter().zip(&starts).enumerate() {
        let mut resumed_mid_stream = 0;
        let start = start
            .as_ref()
            .map(|c| c.position.clone())
            .unwrap_or_default();
        for (shard, seqs) in &placed {
            let after: Vec<i64> = match start.get(shard) {
                None | Some("TRIM_HORIZON") => seqs.iter().map(|s| s.1).collect(),
                Some(offset) => {
                    let offset: u128 = offset.parse().unwrap();
                    resumed_mid_stream += 1;
                    seqs.iter().filter(|s| s.0 > offset).map(|s| s.1).collect()
                }
            };
            let read: Vec<i64> = out
                .iter()
                .filter(|r| r["SHARD_ID"] == shard.as_str())
                .map(|r| r["id"].as_i64().unwrap())
                .collect();
            assert!(
                after.starts_with(&read),
                "run {run}, shard {shard}: read {:?}… but the records after its checkpoint are {:?}…",
                &read[..read.len().min(5)],
                &after[..after.len().min(5)]
            );
        }
        // Each kill came after a checkpoint: every restart resumes mid-stream.
        assert!(
            run == 0 || resumed_mid_stream > 0,
            "run {run} started from scratch"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_windowed_pipeline_restores_window_state_from_its_checkpoint() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let c = client(&moto.endpoint());
    let total = 2500i64;
    produce_for_crash(&c, "windows", total).await;
    // Expected: count per (key, 1-second window of event time).
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for i in 0..total {
        let ts = 1_700_000_000_000 + i * 10;
        *expected
            .entry((format!("k{}", i % 13), ts - ts.rem_euclid(1000)))
            .or_default() += 1;
    }
    // The newest window stays open: an unbounded stream has no later event time to close it.
    let newest = 1_700_000_000_000 + (total - 1) * 10;
    let newest = newest - newest.rem_euclid(1000);
    expected.retain(|(_, w), _| *w < newest);
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT key, COUNT(*) AS n, CAST(window_start AS BIGINT) AS w FROM source \
               GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND)";
    let key_of = |r: &serde_json::Value| {
        (
            r["key"].as_str().unwrap().to_owned(),
            r["w"].as_i64().unwrap(),
        )
    };
    let (outputs, starts) =
        crash_and_restart(dir.path(), &moto.endpoint(), "windows", sql, 3, |all| {
            all.iter()
                .flatten()
                .map(key_of)
                .collect::<HashSet<_>>()
                .len()
                == expected.len()
        })
        .await;
    // Event times arrive in order per shard: no row may be late, before or after a restart.
    for run in 0..outputs.len() {
        let errors = json_lines(&dir.path().join(format!("run{run}.errors.ndjson")));
        assert!(
            errors.is_empty(),
            "run {run} errors: {:?}",
            &errors[..errors.len().min(3)]
        );
    }
    // Every window, and every time a window was emitted (again, after a crash), it has its full
    // count: the rows it held at the checkpoint came back with the window state.
    let mut emitted = 0;
    for r in outputs.iter().flatten() {
        let k = key_of(r);
        let want = expected
            .get(&k)
            .unwrap_or_else(|| panic!("unexpected window {k:?}"));
        assert_eq!(r["n"].as_i64().unwrap(), *want, "window {k:?}");
        emitted += 1;
    }
    assert!(emitted >= expected.len());
    // Every restart restored window state (the kills come after a checkpoint, mid-stream).
    for (run, start) in starts.iter().enumerate().skip(1) {
        let start = start.as_ref().expect("a checkpoint before every restart");
        assert!(
            start.state.iter().any(|s| !s.is_empty()),
            "run {run} started without window state"
        );
    }
    let stored = rivulet::CheckpointStore::load(&FileCheckpointStore::new(
        dir.path().join("state/checkpoint"),
    ))
    .await
    .unwrap()
    .expect("a checkpoint");
    assert!(
        !stored.state.is_empty(),
        "window state is part of the checkpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinesis_sink_writes_every_row_keyed_by_its_column() {
    let Some((_moto, c)) = moto_stream("out", 2).await else {
        return;
    };
    let reference = MemorySink::new();
    let sent = reference.handle();
    let write_errors = MemorySink::new();
    let write_errors_rows = write_errors.handle();
    let report = Pipeline::builder()
        .source(
            rivulet::GeneratorSource::builder()
                .with_limit(Some(1500))
                .with_start_time_ms(Some(1_700_000_000_000))
                .build()
                .unwrap(),
        )
        .sql("SELECT ticker_symbol, sector, price FROM source")
        .sink(
            rivulet::KinesisSink::builder("out")
                .partition_key_column("ticker_symbol")
                // moto numbers records of concurrent PutRecords calls racily (two records can
                // get one sequence number, and one is lost): one request at a time.
                .delivery_settings(rivulet::DeliverySettings {
                    max_concurrent_requests: 1,
                    ..rivulet::DeliverySettings::default()
                })
                .client(c.clone())
                .build()
                .await
                .unwrap(),
        )
        .sink(reference)
        .error_output(write_errors)
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.committed.get("generator"), Some("1500"));
    assert_eq!(
        write_errors_rows.num_rows(),
        0,
        "{:?}",
        write_errors_rows.batches()
    );

    // Read the stream back with the source.
    let read_errors = MemorySink::new();
    let read_errors_rows = read_errors.handle();
    let sink = MemorySink::new();
    let got = sink.handle();
    let pipeline = Pipeline::builder()
        .source(kinesis(&c, "out", StartPosition::TrimHorizon).await)
        .columns(vec![
            Column::new("ticker_symbol", arrow::datatypes::DataType::Utf8),
            Column::new("sector", arrow::datatypes::DataType::Utf8),
            Column::new("price", arrow::datatypes::DataType::Float64),
        ])
        .sql("SELECT ticker_symbol, sector, price, PARTITION_KEY FROM source")
        .sink(sink)
        .error_output(read_errors)
        .build()
        .await
        .unwrap();
    let stop = pipeline.shutdown_handle();
    let task = tokio::spawn(pipeline.run());
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.num_rows() < 1500 {
        assert!(
            Instant::now() < deadline,
            "read back {}; errors {:?}",
            got.num_rows(),
            read_errors_rows.batches()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.shutdown();
    task.await.unwrap().unwrap();
    let rows = |batches: Vec<RecordBatch>| {
        let mut out = Vec::new();
        for b in batches {
            let t = b.column(0).as_string::<i32>();
            let s = b.column(1).as_string::<i32>();
            let p = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
            for i in 0..b.num_rows() {
                if b.num_columns() > 3 {
                    assert_eq!(b.column(3).as_string::<i32>().value(i), t.value(i));
                }
                out.push(format!("{}|{}|{}", t.value(i), s.value(i), p.value(i)));
            }
        }
        out.sort();
        out
    };
    assert_eq!(rows(got.batches()), rows(sent.batches()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rivulet_run_takes_a_kda_application_file_against_a_kinesis_stream() {
    let Some((moto, c)) = moto_stream("kda-trades", 2).await else {
        return;
    };
    // 40 trades; those over 100 pass the application's filter.
    let trades: Vec<(String, String)> = (0..40)
        .map(|i| {
            let sym = ["AMZN", "XOM", "MSFT"][i % 3];
            let price = 80 + (i * 7) % 50;
            (
                format!(r#"{{"sym": "{sym}", "quote": {{"price": {price}}}}}"#),
                sym.to_owned(),
            )
        })
        .collect();
    let mut expected: Vec<String> = trades
        .iter()
        .filter_map(|(t, _)| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            let price = v["quote"]["price"].as_f64().unwrap();
            (price > 100.0).then(|| format!("{},{:.1}", v["sym"].as_str().unwrap(), price))
        })
        .collect();
    expected.sort();
    put_raw(&c, "kda-trades", trades).await;

    // The application as kinesisanalyticsv2 describes it: code, an input named TRADES (so its
    // stream is TRADES_001), nested JSON mapped to columns, and CSV output.
    let dir = tempfile::tempdir().unwrap();
    let code = "CREATE OR REPLACE STREAM \"BIG_TRADES\" (ticker VARCHAR(4), price DOUBLE);\n\
                CREATE OR REPLACE PUMP \"FILTER_PUMP\" AS INSERT INTO \"BIG_TRADES\"\n\
                SELECT STREAM ticker_symbol, price FROM \"TRADES_001\" WHERE price > 100;";
    let app = serde_json::json!({"ApplicationDetail": {
        "ApplicationName": "trades", "RuntimeEnvironment": "SQL-1_0",
        "ApplicationConfigurationDescription": {
            "ApplicationCodeConfigurationDescription": {
                "CodeContentType": "PLAINTEXT",
                "CodeContentDescription": {"TextContent": code}},
            "SqlApplicationConfigurationDescription": {
                "InputDescriptions": [{"InputId": "1.1", "NamePrefix": "TRADES",
                    "InputSchema": {
                        "RecordFormat": {"RecordFormatType": "JSON",
                            "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
                        "RecordEncoding": "UTF-8",
                        "RecordColumns": [
                            {"Name": "TICKER_SYMBOL", "SqlType": "VARCHAR(4)", "Mapping": "$.sym"},
                            {"Name": "PRICE", "SqlType": "DOUBLE", "Mapping": "$.quote.price"}]}}],
                "OutputDescriptions": [{"Name": "BIG_TRADES",
                    "DestinationSchema": {"RecordFormatType": "CSV"}}]}}}});
    std::fs::write(dir.path().join("app.json"), app.to_string()).unwrap();
    let config = dir.path().join("trades.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
type = "kinesis"
stream = "kda-trades"
region = "{REGION}"
endpoint_url = "{endpoint}"
start_position = "trim_horizon"
idle_poll_interval_ms = 200

[query]
application = "app.json"

[[sinks]]
type = "file"
path = "big.csv"
stream = "BIG_TRADES"
"#,
            endpoint = moto.endpoint()
        ),
    )
    .unwrap();
    let mut child = spawn_run(&config, dir.path(), "0");
    let out = dir.path().join("big.csv");
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        // The CSV header, then one line per trade over 100.
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() > expected.len() || Instant::now() > deadline {
            break lines;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "rivulet run stopped ({status}): {}",
                std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        rows.first().map(String::as_str),
        Some("TICKER,PRICE"),
        "{rows:?}"
    );
    let mut got: Vec<String> = rows[1..].to_vec();
    got.sort();
    assert_eq!(got, expected);
}
