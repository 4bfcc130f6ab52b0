//! The whole path under faults and crashes: Kinesis → SQL → Firehose → S3 on moto, every call
//! through the fault proxy, the pipeline killed with SIGKILL ten times at random points and
//! restarted from its checkpoint, then run to the end. Ground truth is the records as written to
//! the stream (their shard, sequence number and id, as the service returned them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rivulet::FileCheckpointStore;

use crate::firehose::{delivered_lines, delivery_stream};
use crate::kinesis::{
    client, create_stream, put_raw, spawn_run, stop_gracefully, write_pipeline_file,
};
use crate::support::fault_proxy::{FaultProxy, Faults};
use crate::support::moto::MotoServer;

const STREAM: &str = "killed-in";
const DELIVERY: &str = "killed-out";
const KILLS: usize = 10;

fn config(dir: &std::path::Path, endpoint: &str, run: usize) -> std::path::PathBuf {
    write_pipeline_file(
        dir,
        &format!("run{run}"),
        &format!(
            r#"
[source]
type = "kinesis"
stream = "{STREAM}"
region = "us-east-1"
endpoint_url = "{endpoint}"
max_records = 50
idle_poll_interval_ms = 200
list_shards_interval_ms = 1000

[format]
columns = [{{ name = "id", type = "BIGINT" }}, {{ name = "key", type = "VARCHAR" }}]

[query]
sql = "SELECT id, SHARD_ID, SEQUENCE_NUMBER, {run} AS run FROM source"

[[sinks]]
type = "firehose"
delivery_stream = "{DELIVERY}"
region = "us-east-1"
endpoint_url = "{endpoint}"

[error_output]
type = "file"
path = "errors-run{run}.ndjson"

[checkpoint]
path = "state/checkpoint"
interval_ms = 150

[batch]
max_rows = 100
max_latency_ms = 50
"#
        ),
    )
}

/// Puts records `next..next + n` (`{"id", "key"}`, 17 keys); remembers where each landed.
async fn produce(
    c: &aws_sdk_kinesis::Client,
    next: &mut i64,
    n: i64,
    placed: &mut HashMap<i64, (String, u128)>,
) {
    let records: Vec<(String, String)> = (*next..*next + n)
        .map(|i| {
            let key = format!("k{}", i % 17);
            (format!(r#"{{"id":{i},"key":"{key}"}}"#), key)
        })
        .collect();
    for ((shard, seq), i) in put_raw(c, STREAM, records).await.into_iter().zip(*next..) {
        placed.insert(i, (shard, seq.parse().unwrap()));
    }
    *next += n;
}

/// Every output line of every run: from S3 (through Firehose) and from the error outputs.
fn outputs(moto: &MotoServer, dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut rows: Vec<serde_json::Value> = delivered_lines(moto, "out/")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    for run in 0..=KILLS {
        let path = dir.join(format!("errors-run{run}.ndjson"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let error: serde_json::Value = serde_json::from_str(line).unwrap();
            let raw = b64
                .decode(error["rawData"].as_str().unwrap())
                .expect("base64");
            rows.push(serde_json::from_slice(&raw).expect("an output row in the error output"));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ten_times_under_faults_every_record_is_in_s3_or_the_error_output() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let direct = client(&moto.endpoint());
    create_stream(&direct, STREAM, 4).await;
    delivery_stream(&moto, DELIVERY, "out/").await;
    let proxy = FaultProxy::start(
        moto.port(),
        Faults {
            throttle: 0.05,
            expire: 0.10,
            get_records_error: 0.05,
            // A run makes some 40 to 100 PutRecordBatch calls: at 10 % each kind of call fault is
            // all but sure to be injected (at 5 %, a run of 83 calls once drew no failed call).
            batch_throttle: 0.10,
            batch_error: 0.10,
            record_failure: 0.05,
            seed: 0x6b11,
            ..Faults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::new(dir.path().join("state/checkpoint"));
    let mut rng = fastrand::Rng::with_seed(0x6b11);
    let mut placed = HashMap::new();
    let mut next = 0i64;
    // A backlog on four shards before the first start, and more records before every restart.
    produce(&direct, &mut next, 600, &mut placed).await;
    let mut starts = Vec::new();
    for run in 0..=KILLS {
        produce(&direct, &mut next, 150, &mut placed).await;
        let config = config(dir.path(), &proxy.endpoint(), run);
        let start = rivulet::CheckpointStore::load(&store).await.unwrap();
        starts.push(start.clone());
        let mut child = spawn_run(&config, dir.path(), "0");
        if run < KILLS {
            // After this run's first checkpoint, at a random moment.
            let deadline = Instant::now() + Duration::from_secs(60);
            while rivulet::CheckpointStore::load(&store).await.unwrap() == start {
                assert!(
                    Instant::now() < deadline,
                    "run {run} wrote no checkpoint; its log:\n{}",
                    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(0..800))).await;
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
        } else {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let ids: HashSet<i64> = outputs(&moto, dir.path())
                    .iter()
                    .map(|r| r["id"].as_i64().unwrap())
                    .collect();
                if ids.len() == next as usize {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} of {next} records delivered; the last run's log:\n{}",
                    ids.len(),
                    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            stop_gracefully(&mut child);
        }
    }

    let rows = outputs(&moto, dir.path());
    // Nothing lost: every record written is in S3 or in the error output.
    let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &rows {
        *copies.entry(r["id"].as_i64().unwrap()).or_default() += 1;
    }
    let missing: Vec<i64> = (0..next).filter(|i| !copies.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // Duplicates only after a checkpoint: no run delivered a record its starting checkpoint
    // already covered (each row says which run wrote it, and from where it was read).
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        let run = r["run"].as_u64().unwrap() as usize;
        let (shard, seq) = &placed[&id];
        assert_eq!(r["SHARD_ID"], shard.as_str(), "id {id}");
        assert_eq!(r["SEQUENCE_NUMBER"], seq.to_string().as_str(), "id {id}");
        let committed = starts[run]
            .as_ref()
            .and_then(|c| c.position.get(shard))
            .and_then(|o| o.parse::<u128>().ok());
        assert!(
            committed.is_none_or(|c| *seq > c),
            "run {run} delivered id {id} (shard {shard}, sequence {seq}), which the checkpoint \
             it started from covers ({committed:?})"
        );
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    let (throttles, expiries) = proxy.injected();
    let firehose = proxy.firehose_injected();
    eprintln!(
        "kill loop: {next} records, {KILLS} kills, {} rows delivered, {duplicates} duplicates \
         (all after a checkpoint); injected: {throttles} GetRecords throttles, {expiries} \
         expiries, {} GetRecords server errors, {firehose:?}",
        rows.len(),
        proxy.get_records_errors()
    );
    assert!(
        throttles > 0 && expiries > 0 && proxy.get_records_errors() > 0,
        "every Kinesis fault was injected"
    );
    assert!(
        firehose.throttled_calls > 0 && firehose.failed_calls > 0 && firehose.failed_records > 0,
        "every Firehose fault was injected: {firehose:?}"
    );
}
