//! Amazon S3 (or any `object_store` store) as a sink: objects rolled by size and age, keyed like
//! Firehose keys them, named deterministically per checkpoint range.
//!
//! [`S3Sink`] (this module) routes each batch to the objects it belongs in and decides when an
//! object is rolled; `builder` holds and checks its settings, `partition` splits rows by
//! partition values and names the objects, `object` buffers the rows of an object in its format
//! and compression, and `upload` puts it into the store.

mod builder;
mod object;
mod partition;
mod upload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::ObjectStore;

pub use self::builder::S3SinkBuilder;
use self::object::OpenObject;
pub use self::object::{Compression, ObjectFormat};
use self::partition::group_key;
pub use self::upload::abort_uploads_in_progress;
use super::prefix::KeyPrefix;
use super::{CheckpointRanges, ErrorOutput, OutputBatch, OutputData, Sink};
use crate::ack::Ack;
pub use crate::aws::s3::ServerSideEncryption;
use crate::crypto::EnvelopeEncryptor;
use crate::format::Encoder;
use crate::{Error, Result};

/// S3's smallest part of a multipart upload (all parts but the last): 5 MiB.
/// Source: Amazon S3 User Guide, "Amazon S3 multipart upload limits".
pub const MIN_PART_BYTES: usize = 5 << 20;
/// S3's largest object uploaded in one `PutObject`: 5 GiB (same source).
pub const MAX_PUT_BYTES: usize = 5 << 30;
/// Default roll size, Firehose's default buffering size for S3: 5 MiB.
pub const DEFAULT_ROLL_BYTES: usize = 5 << 20;
/// Default bound on the objects open at once (one per partition value): Firehose's default
/// active-partition quota.
pub const DEFAULT_MAX_OPEN_PARTITIONS: usize = 500;

/// Default bound on the bytes buffered in open objects, all partitions together.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;

/// Default roll age. Firehose buffers up to 300 s by default; a minute keeps checkpoints (which
/// wait for the upload) closer to the data.
pub const DEFAULT_ROLL_INTERVAL: Duration = Duration::from_secs(60);
/// Objects at least this large are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 16 << 20;

/// Writes output to S3 objects (or to any [`ObjectStore`]).
///
/// Rows are buffered per key prefix (one per value of the partition columns) and uploaded as one
/// object once it holds [`roll_bytes`](S3SinkBuilder::with_roll_bytes) or has been open for
/// [`roll_interval`](S3SinkBuilder::with_roll_interval), and when the pipeline stops. Output is
/// acknowledged only when its object is uploaded.
///
/// Keys: the prefix (Firehose's expressions, `yyyy/MM/dd/HH/` added when it has no timestamp)
/// followed by `<name>-<range>-<n>.<format>[.<compression>]`, where `<range>` identifies the
/// checkpoint the output follows and `<n>` counts the objects of that prefix in the range. The
/// timestamp is that checkpoint's time. A replay from a checkpoint after a crash thus writes the
/// same keys again, overwriting rather than duplicating, as long as it rolls at the same points
/// (by size, with input read in the same order); objects rolled at other points can leave rows
/// twice, never lose them.
pub struct S3Sink {
    name: String,
    bucket: String,
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
    partition_columns: Vec<String>,
    format: ObjectFormat,
    encoder: Encoder,
    compression: Compression,
    roll_bytes: usize,
    roll_interval: Duration,
    max_open: usize,
    max_buffered: usize,
    multipart_threshold: usize,
    encryption: Option<EnvelopeEncryptor>,
    ranges: CheckpointRanges,
    counters_range: Arc<str>,
    counters: HashMap<String, u32>,
    /// The keys issued in the current range: no two objects of a run share a key (keys of
    /// different ranges differ in the range's id).
    issued: HashSet<String>,
    open: BTreeMap<String, OpenObject>,
    errors: Option<ErrorOutput>,
    objects_written: u64,
    closed_early: u64,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("open_objects", &self.open.len())
            .field("objects_written", &self.objects_written)
            .finish_non_exhaustive()
    }
}

impl S3Sink {
    /// A builder writing into `bucket`.
    pub fn builder(bucket: impl Into<String>) -> S3SinkBuilder {
        S3SinkBuilder::new(bucket.into())
    }

    /// Objects uploaded so far.
    pub fn objects_written(&self) -> u64 {
        self.objects_written
    }

    /// Objects uploaded before their roll size or age, to keep the open objects within
    /// [`max_open_partitions`](S3SinkBuilder::with_max_open_partitions) and
    /// [`max_buffered_bytes`](S3SinkBuilder::with_max_buffered_bytes).
    pub fn objects_closed_early(&self) -> u64 {
        self.closed_early
    }

    /// Makes room for one more open object: uploads the one opened first while
    /// `max_open_partitions` are open.
    async fn make_room(&mut self) -> Result<()> {
        while self.open.len() >= self.max_open {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, o)| o.opened)
                .map(|(g, _)| g.clone())
                .expect("the sink holds open objects");
            self.close(&oldest).await?;
            self.closed_early += 1;
        }
        Ok(())
    }

    /// Uploads the largest open objects while those open hold more than `max_buffered_bytes`.
    async fn shed_bytes(&mut self) -> Result<()> {
        loop {
            let sizes: Vec<(usize, &String)> =
                self.open.iter().map(|(g, o)| (o.body.bytes(), g)).collect();
            let total: usize = sizes.iter().map(|(b, _)| b).sum();
            if total <= self.max_buffered {
                return Ok(());
            }
            let largest = sizes
                .iter()
                .max_by_key(|(b, _)| *b)
                .map(|(_, g)| (*g).clone())
                .expect("over the bound, so something is open");
            self.close(&largest).await?;
            self.closed_early += 1;
        }
    }

    /// Uploads and acknowledges the object of `group`.
    async fn close(&mut self, group: &str) -> Result<()> {
        let Some(obj) = self.open.remove(group) else {
            return Ok(());
        };
        let raw = obj.body.finish(self.compression, &obj.key, &self.name)?;
        let data = match &mut self.encryption {
            Some(enc) => {
                let mut out = Vec::with_capacity(raw.len() + 512);
                enc.seal(&raw, &mut out).await?;
                out
            }
            None => raw,
        };
        self.upload(&obj.key, data).await?;
        self.objects_written += 1;
        tracing::debug!(sink = %self.name, key = %obj.key, rows = obj.rows, "object uploaded");
        for ack in obj.acks {
            ack.acknowledge();
        }
        Ok(())
    }

    async fn roll_due(&mut self, all: bool) -> Result<()> {
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| {
                all || o.body.bytes() >= self.roll_bytes || o.opened.elapsed() >= self.roll_interval
            })
            .map(|(g, _)| g.clone())
            .collect();
        for group in due {
            self.close(&group).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_error_output(&mut self, errors: ErrorOutput) {
        self.errors = Some(errors);
    }

    fn set_checkpoint_ranges(&mut self, ranges: CheckpointRanges) {
        self.ranges = ranges;
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        if batch.data.is_empty() {
            batch.ack.acknowledge();
            return Ok(());
        }
        let parts: Vec<(Vec<String>, OutputData)> = match &batch.data {
            OutputData::Rows(b) => self
                .partition(b, &batch.ack)
                .await?
                .into_iter()
                .map(|(v, b)| (v, OutputData::Rows(b)))
                .collect(),
            OutputData::Encoded(_) if !self.partition_columns.is_empty() => {
                return Err(Error::sink(
                    &self.name,
                    "encoded records (a raw copy) have no columns to partition by; remove the partitionKeyFromQuery expressions",
                ))
            }
            OutputData::Encoded(_) => vec![(Vec::new(), batch.data.clone())],
        };
        // One handle per object the batch goes into; with no object (every row rejected), the
        // error output's handle alone completes the batch.
        let mut acks: Vec<Ack> = (1..parts.len()).map(|_| batch.ack.split()).collect();
        if parts.is_empty() {
            batch.ack.acknowledge();
        } else {
            acks.push(batch.ack);
        }
        let mut touched = Vec::with_capacity(parts.len());
        for ((values, data), ack) in parts.into_iter().zip(acks) {
            if !self.open.contains_key(&group_key(&values)) {
                self.make_room().await?;
            }
            touched.push(self.append(values, &data, ack)?);
        }
        for group in touched {
            if self
                .open
                .get(&group)
                .is_some_and(|o| o.body.bytes() >= self.roll_bytes)
            {
                self.close(&group).await?;
            }
        }
        self.shed_bytes().await
    }

    async fn flush(&mut self) -> Result<()> {
        self.roll_due(false).await
    }

    async fn finish(&mut self) -> Result<()> {
        self.roll_due(true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::CheckpointRange;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt as _;
    use object_store::memory::InMemory;
    use object_store::path::Path as ObjectPath;
    use object_store::ObjectStoreExt as _;

    fn rows(n: usize, sector: &str) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sector", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![sector; n])),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ],
        )
        .unwrap()
    }

    async fn keys(store: &InMemory) -> Vec<String> {
        let mut k: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        k.sort();
        k
    }

    async fn sink(store: &Arc<InMemory>, prefix: &str, roll: usize) -> S3Sink {
        let mut s = S3Sink::builder("b")
            .with_store(Arc::clone(store) as Arc<dyn ObjectStore>)
            .with_prefix(prefix)
            .with_roll_bytes(roll)
            .build()
            .await
            .unwrap();
        s.set_checkpoint_ranges(CheckpointRanges::fixed(CheckpointRange::after(
            &crate::Position::single("p", "1"),
            1_795_835_045_000,
        )));
        s
    }

    #[tokio::test]
    async fn objects_roll_by_size_and_are_acknowledged_only_once_uploaded() {
        let store = Arc::new(InMemory::new());
        let mut s = sink(&store, "out/", 100).await;
        let (ack, probe) = crate::ack::Ack::with_receipt();
        s.write(OutputBatch {
            stream: "s".into(),
            data: OutputData::Rows(rows(2, "A")),
            ack,
        })
        .await
        .unwrap();
        assert!(
            keys(&store).await.is_empty(),
            "under the roll size: buffered"
        );
        assert!(!probe.is_stored());
        s.write(OutputBatch::rows("s", rows(5, "A"))).await.unwrap();
        let k = keys(&store).await;
        assert_eq!(k.len(), 1, "{k:?}");
        assert!(probe.is_stored(), "acknowledged with the upload");
        let range = CheckpointRange::after(&crate::Position::single("p", "1"), 1_795_835_045_000);
        assert_eq!(
            k[0],
            format!("out/2026/11/28/03/rivulet-{}-00000.json", range.id)
        );
        let body = store.get(&ObjectPath::parse(&k[0]).unwrap()).await.unwrap();
        let text = String::from_utf8(body.bytes().await.unwrap().to_vec()).unwrap();
        assert_eq!(text.lines().count(), 7);
    }

    #[tokio::test]
    async fn a_replay_in_the_same_range_writes_the_same_keys_and_contents() {
        let store = Arc::new(InMemory::new());
        let batches = [rows(40, "A"), rows(50, "A"), rows(60, "A")];
        let mut first = sink(&store, "r/", 100).await;
        for b in &batches {
            first
                .write(OutputBatch::rows("s", b.clone()))
                .await
                .unwrap();
        }
        let before = keys(&store).await;
        assert_eq!(before.len(), 3, "one object per batch over 100 bytes");
        let mut contents = Vec::new();
        for k in &before {
            let b = store.get(&ObjectPath::parse(k).unwrap()).await.unwrap();
            contents.push(b.bytes().await.unwrap());
        }
        // A crash, then a replay of the same range: the same names, overwritten.
        drop(first);
        let mut replay = sink(&store, "r/", 100).await;
        for b in &batches {
            replay
                .write(OutputBatch::rows("s", b.clone()))
                .await
                .unwrap();
        }
        replay.finish().await.unwrap();
        assert_eq!(keys(&store).await, before);
        for (k, c) in before.iter().zip(contents) {
            let b = store.get(&ObjectPath::parse(k).unwrap()).await.unwrap();
            assert_eq!(b.bytes().await.unwrap(), c);
        }
        // A new range starts its own numbering.
        replay.set_checkpoint_ranges(CheckpointRanges::fixed(CheckpointRange::after(
            &crate::Position::single("p", "2"),
            1_795_835_046_000,
        )));
        replay
            .write(OutputBatch::rows("s", rows(40, "A")))
            .await
            .unwrap();
        let after = keys(&store).await;
        assert_eq!(after.len(), 4);
        assert!(after.iter().filter(|k| k.ends_with("-00000.json")).count() == 2);
    }

    /// A sink into `store` with one object per sector (in `by/<sector>/`).
    fn by_sector(store: &Arc<InMemory>) -> S3SinkBuilder {
        S3Sink::builder("b")
            .with_store(Arc::clone(store) as Arc<dyn ObjectStore>)
            .with_prefix("by/!{partitionKeyFromQuery:sector}/")
    }

    /// `n` rows, row `i` of sector `s{i % values}`.
    fn spread(n: usize, values: usize) -> RecordBatch {
        let schema = rows(0, "").schema();
        let sectors: Vec<String> = (0..n).map(|i| format!("s{}", i % values)).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(sectors)),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ],
        )
        .unwrap()
    }

    /// Every (sector, n) row in the store's objects.
    async fn stored_rows(store: &InMemory) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for k in keys(store).await {
            let b = store.get(&ObjectPath::parse(&k).unwrap()).await.unwrap();
            let text = String::from_utf8(b.bytes().await.unwrap().to_vec()).unwrap();
            let sector = k.split('/').nth(1).unwrap().to_owned();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(
                    v["sector"],
                    sector.as_str(),
                    "a row in its partition's object"
                );
                out.push((sector.clone(), v["n"].as_i64().unwrap()));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn open_partitions_stay_within_their_bound_and_every_row_is_stored() {
        let store = Arc::new(InMemory::new());
        let mut s = by_sector(&store)
            .with_max_open_partitions(50)
            .build()
            .await
            .unwrap();
        // 2,000 distinct values in batches of 400 rows.
        let mut acks = Vec::new();
        for b in 0..10 {
            let n = Int64Array::from_iter_values((0..400).map(|i| b * 400 + i));
            let sectors: Vec<String> = (0..400)
                .map(|i| format!("s{}", (b * 400 + i) % 2_000))
                .collect();
            let batch = RecordBatch::try_new(
                rows(0, "").schema(),
                vec![Arc::new(StringArray::from(sectors)), Arc::new(n)],
            )
            .unwrap();
            let (ack, probe) = crate::ack::Ack::with_receipt();
            s.write(OutputBatch {
                stream: "s".into(),
                data: OutputData::Rows(batch),
                ack,
            })
            .await
            .unwrap();
            acks.push(probe);
            assert!(s.open.len() <= 50, "{} objects open", s.open.len());
        }
        s.finish().await.unwrap();
        assert!(acks.iter().all(|p| p.is_stored()));
        assert!(s.objects_closed_early() > 0);
        let want: Vec<(String, i64)> = {
            let mut w: Vec<_> = (0..4_000).map(|i| (format!("s{}", i % 2_000), i)).collect();
            w.sort();
            w
        };
        assert_eq!(
            stored_rows(&store).await,
            want,
            "every row once, in its partition"
        );
    }

    #[tokio::test]
    async fn buffered_bytes_stay_within_their_bound() {
        let store = Arc::new(InMemory::new());
        let mut s = by_sector(&store)
            .with_max_buffered_bytes(10_000)
            .build()
            .await
            .unwrap();
        for _ in 0..20 {
            s.write(OutputBatch::rows("s", spread(300, 7)))
                .await
                .unwrap();
            let held: usize = s.open.values().map(|o| o.body.bytes()).sum();
            assert!(held <= 10_000, "{held} bytes buffered");
        }
        s.finish().await.unwrap();
        assert_eq!(stored_rows(&store).await.len(), 6_000);
    }

    #[tokio::test]
    async fn partition_columns_split_objects_and_nulls_go_to_the_error_output() {
        let store = Arc::new(InMemory::new());
        let mut s = sink(&store, "by/!{partitionKeyFromQuery:sector}/", 1 << 20).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        s.set_error_output(ErrorOutput::new(tx));
        let mixed =
            arrow::compute::concat_batches(&rows(1, "A").schema(), &[rows(2, "A"), rows(3, "B")])
                .unwrap();
        let with_null = RecordBatch::try_new(
            mixed.schema(),
            vec![
                Arc::new(StringArray::from(vec![Some("A"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        s.write(OutputBatch::rows("s", mixed)).await.unwrap();
        s.write(OutputBatch::rows("s", with_null)).await.unwrap();
        s.finish().await.unwrap();
        let k = keys(&store).await;
        assert_eq!(k.len(), 2, "{k:?}");
        assert!(k[0].starts_with("by/A/2026/11/28/03/"), "{k:?}");
        assert!(k[1].starts_with("by/B/2026/11/28/03/"), "{k:?}");
        let err = rx.recv().await.unwrap();
        let OutputData::Rows(b) = err.data else {
            panic!()
        };
        assert_eq!(b.num_rows(), 1);
    }

    #[tokio::test]
    async fn distinct_partition_values_never_share_an_object_key() {
        let store = Arc::new(InMemory::new());
        let mut s = sink(&store, "data/!{partitionKeyFromQuery:sector}/", 1 << 20).await;
        let values = ["home", "/home", "home/", "a//b", "a/b"];
        for (i, v) in values.iter().enumerate() {
            s.write(OutputBatch::rows("s", rows(i + 1, v)))
                .await
                .unwrap();
        }
        s.finish().await.unwrap();
        let k = keys(&store).await;
        assert_eq!(k.len(), values.len(), "one object per value: {k:?}");
        // Each object holds exactly the rows of its own value.
        let mut seen = Vec::new();
        for key in &k {
            let body = store.get(&ObjectPath::parse(key).unwrap()).await.unwrap();
            let text = String::from_utf8(body.bytes().await.unwrap().to_vec()).unwrap();
            let sectors: HashSet<String> = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["sector"].to_string()
                })
                .collect();
            assert_eq!(sectors.len(), 1, "{key}: {text}");
            seen.push((text.lines().count(), sectors.into_iter().next().unwrap()));
        }
        seen.sort();
        let want: Vec<(usize, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i + 1, serde_json::Value::from(*v).to_string()))
            .collect();
        assert_eq!(seen, want);
        assert!(k.contains(&format!(
            "data/a%2F%2Fb/2026/11/28/03/rivulet-{}-00000.json",
            CheckpointRange::after(&crate::Position::single("p", "1"), 1_795_835_045_000).id
        )));
    }

    #[tokio::test]
    async fn two_objects_of_a_run_never_share_a_key() {
        // With two adjacent values and no separator, ("ab", "c") and ("a", "bc") render the
        // same prefix; the second object takes the next number instead of overwriting the first.
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Utf8, false),
            Field::new("y", DataType::Utf8, false),
        ]));
        let batch = |x: &str, y: &str| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(vec![x])),
                    Arc::new(StringArray::from(vec![y])),
                ],
            )
            .unwrap()
        };
        let store = Arc::new(InMemory::new());
        let mut s = sink(
            &store,
            "!{partitionKeyFromQuery:x}!{partitionKeyFromQuery:y}/",
            1 << 20,
        )
        .await;
        s.write(OutputBatch::rows("s", batch("ab", "c")))
            .await
            .unwrap();
        s.write(OutputBatch::rows("s", batch("a", "bc")))
            .await
            .unwrap();
        s.finish().await.unwrap();
        let k = keys(&store).await;
        assert_eq!(k.len(), 2, "{k:?}");
        assert!(
            k[0].starts_with("abc/") && k[1].starts_with("abc/"),
            "{k:?}"
        );
    }

    #[tokio::test]
    async fn a_prefix_that_cannot_form_a_key_is_refused_at_build() {
        let err = S3Sink::builder("b")
            .with_store(Arc::new(InMemory::new()) as Arc<dyn ObjectStore>)
            .with_prefix("data//x/")
            .build()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix") && err.contains("//"), "{err}");
    }
}
