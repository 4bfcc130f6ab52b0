//! Windows over a stream's backlog, the way a first start at TRIM_HORIZON (or a restart after
//! downtime) meets it: four shards written before the pipeline starts, a split and a merge in the
//! middle of the writes, a third of the records KPL-aggregated, read by `rivulet run` against moto.
//!
//! The expected windows are computed here from the records as they were written (ids, keys,
//! event times) and, for ROWTIME, from the arrival times read back through the SDK — never with
//! rivulet's own SQL or window code.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use md5::{Digest, Md5};
use serde_json::Value;

use crate::kinesis::{
    client, json_lines, moto_stream, spawn_run, stop_gracefully, write_pipeline_file,
};
use crate::support::moto::MotoServer;

/// Event time of record 0; record `i` is `i × 10 ms` later.
const BASE_TS: i64 = 1_700_000_000_000;
/// Partition keys `k00` … `k39`.
const KEYS: i64 = 40;
/// Records per PutRecords call, and per block (every third block is sent KPL-aggregated).
const CALL: i64 = 300;
const BLOCK: i64 = 30;

/// A record as it was written.
#[derive(Debug, Clone)]
struct Written {
    id: i64,
    key: String,
    ts: i64,
    v: f64,
    /// `ApproximateArrivalTimestamp`, read back through the SDK.
    arrival_ms: i64,
}

fn key_of(id: i64) -> String {
    format!("k{:02}", id % KEYS)
}

fn value_of(id: i64) -> f64 {
    ((id * 7919) % 1000) as f64 / 10.0
}

fn payload_of(id: i64) -> String {
    format!(
        r#"{{"id":{id},"key":"{}","ts":{},"v":{}}}"#,
        key_of(id),
        BASE_TS + id * 10,
        value_of(id)
    )
}

/// The 128-bit hash key Kinesis routes a partition key by.
fn hash_of(key: &str) -> u128 {
    let digest = Md5::digest(key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// Open shards: (id, first hash key, last hash key).
async fn open_shards(c: &Client, stream: &str) -> Vec<(String, u128, u128)> {
    let out = c
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    out.shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .map(|s| {
            let r = s.hash_key_range().expect("hash range");
            (
                s.shard_id().to_owned(),
                r.starting_hash_key().parse().unwrap(),
                r.ending_hash_key().parse().unwrap(),
            )
        })
        .collect()
}

fn shard_for(shards: &[(String, u128, u128)], key: &str) -> usize {
    let h = hash_of(key);
    shards
        .iter()
        .position(|s| s.1 <= h && h <= s.2)
        .expect("an open shard owns every hash key")
}

/// Creates `stream` with four shards and writes `total` records `{"id", "key", "ts", "v"}` to it,
/// pausing `pace` between calls: shard 0 is split when two fifths are written, shards 2 and 3 are
/// merged at thirteen twentieths, and every third block of 30 records goes out as KPL aggregates
/// (one per shard, each holding only keys of that shard, in id order). Then reads every shard
/// back through the SDK for the arrival times.
async fn write_backlog(c: &Client, stream: &str, total: i64, pace: Duration) -> Vec<Written> {
    c.create_stream()
        .stream_name(stream)
        .shard_count(4)
        .send()
        .await
        .expect("create stream");
    let mut shards = open_shards(c, stream).await;
    assert_eq!(shards.len(), 4);
    let (split_at, merge_at) = (total * 2 / 5, total * 13 / 20);
    let (mut split, mut merged) = (false, false);
    // (shard, sequence number) → the ids the record holds.
    let mut placed: HashMap<(String, String), Vec<i64>> = HashMap::new();
    let mut next = 0;
    while next < total {
        if next >= split_at && !split {
            let (id, lo, hi) = shards[0].clone();
            c.split_shard()
                .stream_name(stream)
                .shard_to_split(&id)
                .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
                .send()
                .await
                .expect("split");
            split = true;
            shards = open_shards(c, stream).await;
        }
        if next >= merge_at && !merged {
            c.merge_shards()
                .stream_name(stream)
                .shard_to_merge("shardId-000000000002")
                .adjacent_shard_to_merge("shardId-000000000003")
                .send()
                .await
                .expect("merge");
            merged = true;
            shards = open_shards(c, stream).await;
        }
        let end = (next + CALL).min(total);
        let mut entries = Vec::new();
        let mut entry_ids: Vec<Vec<i64>> = Vec::new();
        for block in (next..end).step_by(BLOCK as usize) {
            let block_end = (block + BLOCK).min(end);
            if (block / BLOCK) % 3 == 0 {
                let mut groups: Vec<(usize, Vec<i64>)> = Vec::new();
                for id in block..block_end {
                    let s = shard_for(&shards, &key_of(id));
                    match groups.iter_mut().find(|g| g.0 == s) {
                        Some(g) => g.1.push(id),
                        None => groups.push((s, vec![id])),
                    }
                }
                for (_, ids) in groups {
                    let subs: Vec<(String, String)> =
                        ids.iter().map(|&i| (key_of(i), payload_of(i))).collect();
                    let packed = rivulet::kpl::aggregate(
                        subs.iter().map(|(k, p)| (k.as_str(), None, p.as_bytes())),
                    );
                    entries.push(
                        PutRecordsRequestEntry::builder()
                            .data(Blob::new(packed.to_vec()))
                            .partition_key(&subs[0].0)
                            .build()
                            .unwrap(),
                    );
                    entry_ids.push(ids);
                }
            } else {
                for id in block..block_end {
                    entries.push(
                        PutRecordsRequestEntry::builder()
                            .data(Blob::new(payload_of(id).into_bytes()))
                            .partition_key(key_of(id))
                            .build()
                            .unwrap(),
                    );
                    entry_ids.push(vec![id]);
                }
            }
        }
        let out = c
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(out.failed_record_count(), Some(0));
        for (r, ids) in out.records().iter().zip(entry_ids) {
            let at = (
                r.shard_id().unwrap_or_default().to_owned(),
                r.sequence_number().unwrap_or_default().to_owned(),
            );
            placed.insert(at, ids);
        }
        next = end;
        tokio::time::sleep(pace).await;
    }
    assert!(split && merged);

    // Arrival times, read back through the SDK from every shard (closed ones included).
    let mut arrival: HashMap<i64, i64> = HashMap::new();
    let listed = c.list_shards().stream_name(stream).send().await.unwrap();
    assert_eq!(
        listed.shards().len(),
        7,
        "4 shards, 2 split children, 1 merge child"
    );
    for (shard, r) in crate::kinesis::read_back(c, stream).await {
        let ids = &placed[&(shard, r.sequence_number().to_owned())];
        let ms = r
            .approximate_arrival_timestamp()
            .and_then(|t| t.to_millis().ok())
            .expect("an arrival time");
        for id in ids {
            arrival.insert(*id, ms);
        }
    }
    (0..total)
        .map(|id| Written {
            id,
            key: key_of(id),
            ts: BASE_TS + id * 10,
            v: value_of(id),
            arrival_ms: *arrival
                .get(&id)
                .unwrap_or_else(|| panic!("record {id} not read back")),
        })
        .collect()
}

/// A window's expected aggregates: count, sum of ids, least and largest `v`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Agg {
    n: i64,
    sum: i64,
    min: f64,
    max: f64,
}

impl Agg {
    fn add(entry: Option<Agg>, r: &Written) -> Agg {
        match entry {
            None => Agg {
                n: 1,
                sum: r.id,
                min: r.v,
                max: r.v,
            },
            Some(a) => Agg {
                n: a.n + 1,
                sum: a.sum + r.id,
                min: a.min.min(r.v),
                max: a.max.max(r.v),
            },
        }
    }
}

/// Expected windows (key, start) of `size` every `slide` over the time `time` gives, keeping only
/// those the largest time closes (an unbounded stream's newest windows stay open).
fn expected_windows(
    records: &[Written],
    slide: i64,
    size: i64,
    time: impl Fn(&Written) -> i64,
) -> BTreeMap<(String, i64), Agg> {
    let newest = records.iter().map(&time).max().unwrap();
    let mut out: BTreeMap<(String, i64), Agg> = BTreeMap::new();
    for r in records {
        let t = time(r);
        let mut start = t - t.rem_euclid(slide);
        while start + size > t {
            if start + size <= newest {
                let k = (r.key.clone(), start);
                let a = Agg::add(out.get(&k).copied(), r);
                out.insert(k, a);
            }
            start -= slide;
        }
    }
    out
}

/// A pipeline file for `rivulet run` over `stream` from TRIM_HORIZON with default settings, but
/// for a short idle timeout (so that the test's newest windows close once every shard is read to
/// its tip) and, when given, a checkpoint.
fn pipeline_file(
    dir: &Path,
    endpoint: &str,
    stream: &str,
    sql: &str,
    out: &str,
    checkpoint: bool,
) -> PathBuf {
    // With a checkpoint (the kill test), small pages: the backlog takes long enough to read that
    // the kills land in the middle of it.
    let (checkpoint, max_records) = if checkpoint {
        (
            "[checkpoint]\npath = \"state/checkpoint\"\ninterval_ms = 500\n",
            "max_records = 200",
        )
    } else {
        ("", "")
    };
    write_pipeline_file(
        dir,
        out,
        &format!(
            r#"
[source]
type = "kinesis"
stream = "{stream}"
region = "us-east-1"
endpoint_url = "{endpoint}"
idle_poll_interval_ms = 200
list_shards_interval_ms = 1000
{max_records}

[format]
type = "json"
columns = [
  {{ name = "id", type = "BIGINT" }},
  {{ name = "key", type = "VARCHAR(16)" }},
  {{ name = "ts", type = "BIGINT" }},
  {{ name = "v", type = "DOUBLE" }},
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

{checkpoint}
"#
        ),
    )
}

const TUMBLING: &str = "SELECT key, COUNT(*) AS n, SUM(id) AS s, MIN(v) AS lo, MAX(v) AS hi, \
     CAST(window_start AS BIGINT) AS w FROM source GROUP BY key, TUMBLE(ts, INTERVAL '1' SECOND)";

const HOPPING: &str = "SELECT key, COUNT(*) AS n, SUM(id) AS s, MIN(v) AS lo, MAX(v) AS hi, \
     CAST(HOP_START(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) AS BIGINT) AS w FROM source \
     GROUP BY key, HOP(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND)";

/// The original solution's application (per car: count, least and largest value per tumbling
/// window of ROWTIME, the arrival time), with 2-second windows instead of 30 so that a test's
/// backlog spans several, and the window's start selected so that rows can be matched to windows.
const KDA_APP: &str = r#"CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (car VARCHAR(16),
  vehicle_count INTEGER, low_v DOUBLE, high_v DOUBLE, window_start TIMESTAMP);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
SELECT STREAM "key", COUNT(*), MIN("v"), MAX("v"),
  FLOOR(("SOURCE_SQL_STREAM_001".ROWTIME - TIMESTAMP '1970-01-01 00:00:00') SECOND / 2 TO SECOND)
FROM "SOURCE_SQL_STREAM_001"
GROUP BY "key", FLOOR(("SOURCE_SQL_STREAM_001".ROWTIME - TIMESTAMP '1970-01-01 00:00:00') SECOND / 2 TO SECOND);"#;

/// A member of an output row, whatever the case of its name.
fn member<'a>(row: &'a Value, name: &str) -> &'a Value {
    row.as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no `{name}` in {row}"))
}

/// Epoch milliseconds of a number or a timestamp as rivulet writes it.
fn millis(v: &Value) -> i64 {
    if let Some(n) = v.as_i64() {
        return n;
    }
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_millis();
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .unwrap_or_else(|e| panic!("not a time: {s}: {e}"))
        .and_utc()
        .timestamp_millis()
}

/// An output row as (key, window start) and its aggregates (the sum 0 where the query has none).
fn parse_row(
    row: &Value,
    key: &str,
    start: &str,
    n: &str,
    lo: &str,
    hi: &str,
) -> ((String, i64), Agg) {
    let get = |name: &str| member(row, name);
    (
        (get(key).as_str().unwrap().to_owned(), millis(get(start))),
        Agg {
            n: get(n).as_i64().unwrap(),
            sum: row.get("s").and_then(Value::as_i64).unwrap_or_default(),
            min: get(lo).as_f64().unwrap(),
            max: get(hi).as_f64().unwrap(),
        },
    )
}

/// Checks one emitted window against its expected value.
fn check(what: &str, k: &(String, i64), got: &Agg, expected: &BTreeMap<(String, i64), Agg>) {
    let want = expected
        .get(k)
        .unwrap_or_else(|| panic!("{what}: window {k:?} was not expected (got {got:?})"));
    assert_eq!(got, want, "{what}: window {k:?}");
}

/// Runs `rivulet run` on `config` until `done` holds for its output (or 180 s), then stops it with
/// SIGTERM; returns its output rows and its error-output rows.
async fn run_until(
    dir: &Path,
    config: &Path,
    out: &str,
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Vec<Value>) {
    let mut child = spawn_run(config, dir, "0.3");
    let output = dir.join(format!("{out}.ndjson"));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        // Running (its progress line printed), and done.
        let running = std::fs::read_to_string(config.with_extension("log"))
            .is_ok_and(|l| l.contains("records in ("));
        if running && done(&json_lines(&output)) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "rivulet run ended early ({status}); its log:\n{}",
                std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{out}: the windows did not all come within 180 s ({} rows); errors: {:?}; log:\n{}",
            json_lines(&output).len(),
            json_lines(&dir.join(format!("{out}.errors.ndjson")))
                .iter()
                .take(2)
                .map(|e| e["errorMessage"].clone())
                .collect::<Vec<_>>(),
            std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_gracefully(&mut child);
    (
        json_lines(&output),
        json_lines(&dir.join(format!("{out}.errors.ndjson"))),
    )
}

/// Every expected window emitted (identically, however often), nothing else, no error rows.
fn assert_exact(
    what: &str,
    rows: &[Value],
    errors: &[Value],
    expected: &BTreeMap<(String, i64), Agg>,
    parse: impl Fn(&Value) -> ((String, i64), Agg),
) {
    let late = errors.iter().filter(|e| e["kind"] == "late").count();
    assert_eq!(
        late,
        0,
        "{what}: {late} late rows, e.g. {:?}",
        errors.first()
    );
    assert!(
        errors.is_empty(),
        "{what}: error rows, e.g. {:?}",
        errors.first()
    );
    let mut seen = BTreeMap::new();
    for row in rows {
        let (k, got) = parse(row);
        check(what, &k, &got, expected);
        seen.insert(k, got);
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} windows never emitted, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(3)]
    );
}

fn covers(
    expected: &BTreeMap<(String, i64), Agg>,
    parse: fn(&Value) -> ((String, i64), Agg),
) -> impl Fn(&[Value]) -> bool + '_ {
    move |rows: &[Value]| {
        let seen: std::collections::HashSet<(String, i64)> =
            rows.iter().map(|r| parse(r).0).collect();
        expected.keys().all(|k| seen.contains(k))
    }
}

fn tumbling_row(r: &Value) -> ((String, i64), Agg) {
    parse_row(r, "key", "w", "n", "lo", "hi")
}

fn kda_row(r: &Value) -> ((String, i64), Agg) {
    parse_row(r, "car", "window_start", "vehicle_count", "low_v", "high_v")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_from_trim_horizon_gives_every_window_exactly() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let c = client(&moto.endpoint());
    // 20,000 records over some 15 s of writing: the 2-second ROWTIME windows are several.
    let written = write_backlog(&c, "backlog", 20_000, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let tumbling = expected_windows(&written, 1000, 1000, |r| r.ts);
    let hopping = expected_windows(&written, 1000, 3000, |r| r.ts);
    // The application sums nothing.
    let kda: BTreeMap<_, _> = expected_windows(&written, 2000, 2000, |r| r.arrival_ms)
        .into_iter()
        .map(|(k, a)| (k, Agg { sum: 0, ..a }))
        .collect();
    assert!(
        tumbling.len() > 7000 && hopping.len() > 7000,
        "{} tumbling and {} hopping windows",
        tumbling.len(),
        hopping.len()
    );
    assert!(
        kda.len() >= 3 * KEYS as usize,
        "{} ROWTIME windows",
        kda.len()
    );

    let runs = [
        ("tumbling", TUMBLING),
        ("hopping", HOPPING),
        ("kda", KDA_APP),
    ];
    let mut handles = Vec::new();
    for (name, sql) in runs {
        let config = pipeline_file(dir.path(), &moto.endpoint(), "backlog", sql, name, false);
        let dir = dir.path().to_owned();
        let expected = match name {
            "tumbling" => tumbling.clone(),
            "hopping" => hopping.clone(),
            _ => kda.clone(),
        };
        handles.push(tokio::spawn(async move {
            let parse: fn(&Value) -> ((String, i64), Agg) =
                if name == "kda" { kda_row } else { tumbling_row };
            let (rows, errors) = run_until(&dir, &config, name, covers(&expected, parse)).await;
            assert_exact(name, &rows, &errors, &expected, parse);
        }));
    }
    for h in handles {
        h.await.expect("a run's checks");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_with_kills_and_restarts_gives_every_window_exactly() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let c = client(&moto.endpoint());
    let written = write_backlog(&c, "killed", 20_000, Duration::ZERO).await;
    let expected = expected_windows(&written, 1000, 1000, |r| r.ts);
    let dir = tempfile::tempdir().unwrap();
    let store = rivulet::FileCheckpointStore::new(dir.path().join("state/checkpoint"));
    let mut rng = fastrand::Rng::with_seed(0x0bac_1097);
    let mut all_rows = Vec::new();
    let mut killed_mid_backlog = 0;
    let kills = 5;
    for run in 0..=kills {
        let name = format!("run{run}");
        let config = pipeline_file(
            dir.path(),
            &moto.endpoint(),
            "killed",
            TUMBLING,
            &name,
            true,
        );
        let start = rivulet::CheckpointStore::load(&store).await.unwrap();
        if run > 0 {
            // Each kill came after a checkpoint: each restart resumes with window state.
            let start = start.as_ref().expect("a checkpoint before every restart");
            assert!(
                start.state.iter().any(|s| !s.is_empty()),
                "run {run} starts without window state"
            );
        }
        if run < kills {
            let mut child = spawn_run(&config, dir.path(), "0");
            // Wait for this run's first checkpoint, then kill it at a random moment after.
            let deadline = Instant::now() + Duration::from_secs(60);
            while rivulet::CheckpointStore::load(&store).await.unwrap() == start {
                assert!(Instant::now() < deadline, "run {run} wrote no checkpoint");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(0..1500))).await;
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            let rows = json_lines(&dir.path().join(format!("{name}.ndjson")));
            let errors = json_lines(&dir.path().join(format!("{name}.errors.ndjson")));
            assert!(
                errors.is_empty(),
                "run {run}: error rows, e.g. {:?}",
                errors.first()
            );
            eprintln!("run {run}: {} windows", rows.len());
            killed_mid_backlog += usize::from(rows.len() < expected.len() / 2);
            all_rows.extend(rows);
        } else {
            let seen: Vec<Value> = all_rows.clone();
            let (rows, errors) = run_until(dir.path(), &config, &name, |rows| {
                let mut both = seen.clone();
                both.extend_from_slice(rows);
                covers(&expected, tumbling_row)(&both)
            })
            .await;
            assert!(
                errors.is_empty(),
                "last run: error rows, e.g. {:?}",
                errors.first()
            );
            all_rows.extend(rows);
        }
    }
    assert!(
        killed_mid_backlog >= 3,
        "only {killed_mid_backlog} kills came before half the windows were out"
    );
    // Every window emitted by any run equals its expected value (one emitted again after a
    // restart is emitted identically), and every expected window was emitted.
    assert_exact("killed", &all_rows, &[], &expected, tumbling_row);
}

/// Peak window states while `stream`'s backlog is read with catch-up alignment `max_alignment`.
async fn peak_window_states(
    c: &Client,
    stream: &str,
    total: u64,
    max_alignment: Option<Duration>,
) -> u64 {
    use arrow::datatypes::DataType;
    use rivulet::kinesis::{KinesisSource, PollSettings, StartPosition};
    let source = KinesisSource::builder(stream)
        .client(c.clone())
        .start_position(StartPosition::TrimHorizon)
        .poll_settings(PollSettings {
            max_records: 100,
            idle_interval: Duration::from_millis(200),
            list_shards_interval: Duration::from_secs(1),
            ..PollSettings::default()
        })
        .build()
        .await
        .unwrap();
    let pipeline = rivulet::Pipeline::builder()
        .source(source)
        .columns(vec![
            rivulet::Column::new("id", DataType::Int64),
            rivulet::Column::new("key", DataType::Utf8),
            rivulet::Column::new("ts", DataType::Int64),
            rivulet::Column::new("v", DataType::Float64),
        ])
        .sql(TUMBLING)
        .sink(rivulet::NullSink::new())
        .error_output(rivulet::NullSink::new())
        .watermark(rivulet::WatermarkSettings {
            idle_timeout: Duration::from_secs(3),
            max_alignment,
            ..rivulet::WatermarkSettings::default()
        })
        .build()
        .await
        .unwrap();
    let metrics = pipeline.metrics();
    let stop = pipeline.shutdown_handle();
    let run = tokio::spawn(pipeline.run());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = 0;
    loop {
        let now = metrics.snapshot();
        peak = peak.max(now.window_states);
        if now.records_in >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} records read",
            now.records_in
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.metrics.rows_late, 0);
    assert_eq!(report.metrics.records_error, 0);
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_alignment_keeps_window_state_bounded_while_a_backlog_is_read() {
    let Some((_moto, c)) = moto_stream("skewed", 2).await else {
        return;
    };
    let shards = open_shards(&c, "skewed").await;
    // Ten keys on each shard: shard 0 dense (a record every 10 ms of event time), shard 1 sparse
    // (every 50 ms). Read 100 records a call, shard 1 runs five times as fast through event time.
    let (mut dense, mut sparse) = (Vec::new(), Vec::new());
    for i in 0.. {
        let k = format!("k{i}");
        match shard_for(&shards, &k) {
            0 if dense.len() < 10 => dense.push(k),
            1 if sparse.len() < 10 => sparse.push(k),
            _ => {}
        }
        if dense.len() == 10 && sparse.len() == 10 {
            break;
        }
    }
    let mut entries = Vec::new();
    for (id, t) in (0..60_000i64).step_by(10).enumerate() {
        let id = id as i64;
        let mut put = |key: &str, id: i64| {
            let data = format!(
                r#"{{"id":{id},"key":"{key}","ts":{},"v":1.0}}"#,
                BASE_TS + t
            );
            entries.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data.into_bytes()))
                    .partition_key(key)
                    .build()
                    .unwrap(),
            );
        };
        put(&dense[id as usize % 10], id);
        if t % 50 == 0 {
            put(&sparse[(t / 50) as usize % 10], 1_000_000 + id);
        }
    }
    let total = entries.len() as u64;
    while !entries.is_empty() {
        let rest = entries.split_off(entries.len().min(500));
        let out = c
            .put_records()
            .stream_name("skewed")
            .set_records(Some(std::mem::replace(&mut entries, rest)))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let aligned = peak_window_states(&c, "skewed", total, Some(Duration::from_secs(5))).await;
    let unaligned = peak_window_states(&c, "skewed", total, None).await;
    eprintln!("peak window states: {aligned} aligned, {unaligned} unaligned");
    // Aligned: shard 1 runs at most 5 s and a page (5 s) ahead: some 11 windows of its 10 keys,
    // and a few of shard 0's. Unaligned: it reads its whole minute while shard 0 is at its start.
    assert!(aligned <= 250, "{aligned} window states with alignment");
    assert!(
        unaligned >= 3 * aligned,
        "{unaligned} window states without alignment, {aligned} with"
    );
}
