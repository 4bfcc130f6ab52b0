//! Amazon S3 (or any `object_store` store) as a sink: objects rolled by size and age, keyed like
//! Firehose keys them, named deterministically per checkpoint range.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tokio::time::Instant;

use super::prefix::KeyPrefix;
use super::{
    CheckpointRange, CheckpointRanges, ErrorOutput, ErrorRecord, ErrorStage, OutputBatch,
    OutputData, Sink,
};
use crate::ack::Ack;
pub use crate::aws::s3::ServerSideEncryption;
use crate::aws::s3::{build_s3, object_path};
use crate::crypto::EnvelopeEncryptor;
use crate::format::{Encoder, OutputFormat};
use crate::record::Record;
use crate::{Error, Result};

/// S3's smallest part of a multipart upload (all parts but the last): 5 MiB.
/// Source: Amazon S3 User Guide, "Amazon S3 multipart upload limits".
pub const MIN_PART_BYTES: usize = 5 << 20;
/// S3's largest object uploaded in one `PutObject`: 5 GiB (same source).
pub const MAX_PUT_BYTES: usize = 5 << 30;
/// Largest `roll_bytes` with envelope encryption: an envelope holds under 4 GiB, and an object can
/// pass its roll size by one batch.
const MAX_SEALED_OBJECT_BYTES: usize = 3 << 30;
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
/// Parts of one multipart upload sent at the same time.
const PARTS_IN_FLIGHT: usize = 4;
/// Objects at least this large are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 16 << 20;

/// How objects are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectFormat {
    /// JSON lines or CSV, as the other sinks write them.
    Text(OutputFormat),
    /// Apache Parquet, one file per object; compression applies to its pages.
    Parquet,
}

/// Compression of objects (JSON lines and CSV: the whole object; Parquet: its pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
    /// Snappy, framing format (`.snappy`); for Parquet, Snappy pages.
    Snappy,
}

impl Compression {
    fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Zstd => ".zst",
            Self::Snappy => ".snappy",
        }
    }

    /// Compresses a whole object.
    fn apply(self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        Ok(match self {
            Self::None => data,
            Self::Gzip => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::default(),
                );
                e.write_all(&data)?;
                e.finish()?
            }
            Self::Zstd => zstd::bulk::compress(&data, 3)?,
            Self::Snappy => {
                let mut e = snap::write::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
                e.write_all(&data)?;
                e.into_inner().map_err(|e| e.into_error())?
            }
        })
    }

    fn parquet(self) -> parquet::basic::Compression {
        use parquet::basic::{Compression as C, GzipLevel, ZstdLevel};
        match self {
            Self::None => C::UNCOMPRESSED,
            Self::Gzip => C::GZIP(GzipLevel::default()),
            Self::Zstd => C::ZSTD(ZstdLevel::default()),
            Self::Snappy => C::SNAPPY,
        }
    }
}

enum Body {
    Text(Vec<u8>),
    // In a mutex only to make the sink `Sync`: the writer's encoders are not.
    Parquet(Box<std::sync::Mutex<ArrowWriter<Vec<u8>>>>),
}

impl Body {
    fn bytes(&self) -> usize {
        match self {
            Self::Text(b) => b.len(),
            Self::Parquet(w) => {
                let w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                w.bytes_written() + w.in_progress_size()
            }
        }
    }
}

struct OpenObject {
    key: String,
    body: Body,
    rows: u64,
    opened: Instant,
    acks: Vec<Ack>,
}

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

/// Builder for [`S3Sink`].
#[derive(Debug)]
pub struct S3SinkBuilder {
    bucket: String,
    name: String,
    prefix: String,
    format: ObjectFormat,
    compression: Compression,
    roll_bytes: usize,
    roll_interval: Duration,
    max_open: usize,
    max_buffered: usize,
    multipart_threshold: usize,
    region: Option<String>,
    endpoint_url: Option<String>,
    sse: Option<ServerSideEncryption>,
    store: Option<Arc<dyn ObjectStore>>,
    aws_config: Option<aws_config::SdkConfig>,
    encryption: Option<EnvelopeEncryptor>,
}

impl S3Sink {
    /// A builder writing into `bucket`.
    pub fn builder(bucket: impl Into<String>) -> S3SinkBuilder {
        S3SinkBuilder {
            bucket: bucket.into(),
            name: "rivulet".into(),
            prefix: String::new(),
            format: ObjectFormat::Text(OutputFormat::JsonLines),
            compression: Compression::None,
            roll_bytes: DEFAULT_ROLL_BYTES,
            roll_interval: DEFAULT_ROLL_INTERVAL,
            max_open: DEFAULT_MAX_OPEN_PARTITIONS,
            max_buffered: DEFAULT_MAX_BUFFERED_BYTES,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            region: None,
            endpoint_url: None,
            sse: None,
            store: None,
            aws_config: None,
            encryption: None,
        }
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

    fn extension(&self) -> String {
        let (base, compression) = match &self.format {
            ObjectFormat::Parquet => ("parquet", Compression::None),
            ObjectFormat::Text(OutputFormat::Csv { .. }) => ("csv", self.compression),
            ObjectFormat::Text(_) => ("json", self.compression),
        };
        let envelope = if self.encryption.is_some() {
            ".rve"
        } else {
            ""
        };
        format!(".{base}{}{envelope}", compression.extension())
    }

    /// The key of the next object for partition `values` in the current range: the next number
    /// of that partition whose key this run has not issued yet (the same keys, in the same order,
    /// when a replay of the range writes the same objects).
    fn next_key(&mut self, values: &[String], range: &CheckpointRange) -> String {
        if self.counters_range != range.id {
            self.counters.clear();
            self.issued.clear();
            self.counters_range = Arc::clone(&range.id);
        }
        let group = group_key(values);
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let extension = self.extension();
        loop {
            let n = self.counters.entry(group.clone()).or_insert(0);
            let seq = *n;
            *n += 1;
            let seed = {
                use md5::Digest as _;
                let d = md5::Md5::digest(format!("{}\u{1f}{group}\u{1f}{seq}", range.id));
                u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
            };
            let prefix = self.prefix.render(range.started_ms, &refs, seed);
            let key = format!("{prefix}{}-{}-{seq:05}{extension}", self.name, range.id);
            if self.issued.insert(key.clone()) {
                return key;
            }
        }
    }

    fn new_body(&self, schema: Option<arrow::datatypes::SchemaRef>) -> Result<Body> {
        Ok(match (&self.format, schema) {
            (ObjectFormat::Parquet, Some(schema)) => {
                let props = WriterProperties::builder()
                    .set_compression(self.compression.parquet())
                    .build();
                Body::Parquet(Box::new(std::sync::Mutex::new(
                    ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| {
                        Error::sink(&self.name, format!("starting a Parquet object: {e}"))
                    })?,
                )))
            }
            (ObjectFormat::Parquet, None) => return Err(Error::sink(
                &self.name,
                "encoded records (a raw copy) cannot be written as Parquet; use format \"json\"",
            )),
            _ => Body::Text(Vec::new()),
        })
    }

    /// Appends `data` to the open object of `values`, opening one if needed; returns its group.
    fn append(&mut self, values: Vec<String>, data: &OutputData, ack: Ack) -> Result<String> {
        let group = group_key(&values);
        if !self.open.contains_key(&group) {
            let range = self.ranges.current();
            let key = self.next_key(&values, &range);
            let schema = match data {
                OutputData::Rows(b) => Some(b.schema()),
                OutputData::Encoded(_) => None,
            };
            let body = self.new_body(schema)?;
            self.open.insert(
                group.clone(),
                OpenObject {
                    key,
                    body,
                    rows: 0,
                    opened: Instant::now(),
                    acks: Vec::new(),
                },
            );
        }
        let obj = self.open.get_mut(&group).expect("opened above");
        match (&mut obj.body, data) {
            (Body::Text(buf), data) => {
                let first = buf.is_empty();
                super::encode_data(&self.encoder, data, first, buf)?;
            }
            (Body::Parquet(w), OutputData::Rows(b)) => w
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .write(b)
                .map_err(|e| Error::sink(&self.name, format!("encoding Parquet: {e}")))?,
            (Body::Parquet(_), OutputData::Encoded(_)) => return Err(Error::sink(
                &self.name,
                "encoded records (a raw copy) cannot be written as Parquet; use format \"json\"",
            )),
        }
        obj.rows += data.len() as u64;
        obj.acks.push(ack);
        Ok(group)
    }

    /// Uploads and acknowledges the object of `group`.
    async fn close(&mut self, group: &str) -> Result<()> {
        let Some(obj) = self.open.remove(group) else {
            return Ok(());
        };
        let raw = match obj.body {
            Body::Text(b) => self
                .compression
                .apply(b)
                .map_err(|e| Error::io(format!("compressing {}", obj.key), e))?,
            Body::Parquet(w) => w
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .into_inner()
                .map_err(|e| Error::sink(&self.name, format!("finishing Parquet: {e}")))?,
        };
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

    async fn upload(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let path = object_path(key).map_err(|e| Error::sink(&self.name, e))?;
        let fail = |e: object_store::Error| {
            Error::sink(
                &self.name,
                format!("uploading s3://{}/{key}: {e}", self.bucket),
            )
        };
        if data.len() < self.multipart_threshold && data.len() <= MAX_PUT_BYTES {
            self.store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(fail)?;
            return Ok(());
        }
        let upload = OpenUpload::new(self.store.put_multipart(&path).await.map_err(fail)?);
        let part = (self.multipart_threshold / 2).max(MIN_PART_BYTES);
        let data = Bytes::from(data);
        let mut parts = Vec::new();
        for at in (0..data.len()).step_by(part) {
            let payload = PutPayload::from(data.slice(at..(at + part).min(data.len())));
            parts.push(upload.put_part(payload).await.map_err(fail)?);
        }
        // At most a few parts in flight. The upload is aborted (not left open and billed) when
        // any part or the completion fails, and when this future is dropped before it is done.
        let sent = futures::stream::iter(parts)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await;
        let done = match sent {
            Ok(_) => upload.complete().await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(sink = %self.name, key, "aborting the multipart upload failed: {abort}");
            }
            return Err(fail(e));
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

    /// Splits rows by their partition values. Rows with a null or empty value go to the error
    /// output, as Firehose's dynamic partitioning sends them to its error prefix.
    /// Rows without a value are sent to the error output under a split of `ack`, so the batch is
    /// stored only once they are stored there.
    async fn partition(
        &self,
        batch: &RecordBatch,
        ack: &Ack,
    ) -> Result<Vec<(Vec<String>, RecordBatch)>> {
        if self.partition_columns.is_empty() {
            return Ok(vec![(Vec::new(), batch.clone())]);
        }
        let (groups, bad) = self.group_rows(batch)?;
        if !bad.is_empty() {
            self.reject(batch, bad, ack.split()).await?;
        }
        let mut out = Vec::with_capacity(groups.len());
        for (values, rows) in groups {
            let taken = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow::compute::take_record_batch(batch, &UInt32Array::from(rows))?
            };
            out.push((values, taken));
        }
        Ok(out)
    }

    /// Row indices per partition values, and the rows without a value (with the column).
    #[allow(clippy::type_complexity)]
    fn group_rows(
        &self,
        batch: &RecordBatch,
    ) -> Result<(BTreeMap<Vec<String>, Vec<u32>>, Vec<(u32, String)>)> {
        let mut columns = Vec::with_capacity(self.partition_columns.len());
        for name in &self.partition_columns {
            let idx = batch.schema().index_of(name).map_err(|_| {
                Error::sink(
                    &self.name,
                    format!("the prefix names column `{name}`, which the output does not have"),
                )
            })?;
            columns.push(Arc::clone(batch.column(idx)));
        }
        let options = FormatOptions::default();
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut groups: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
        let mut bad = Vec::new();
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(columns.len());
            let mut missing = None;
            for (i, (col, fmt)) in columns.iter().zip(&formatters).enumerate() {
                let v = fmt.value(row).to_string();
                if col.is_null(row) || v.is_empty() {
                    missing = Some(&self.partition_columns[i]);
                    break;
                }
                values.push(v);
            }
            match missing {
                Some(col) => bad.push((row as u32, col.clone())),
                None => groups.entry(values).or_default().push(row as u32),
            }
        }
        Ok((groups, bad))
    }

    async fn reject(&self, batch: &RecordBatch, bad: Vec<(u32, String)>, ack: Ack) -> Result<()> {
        let Some(errors) = &self.errors else {
            return Err(Error::sink(
                &self.name,
                format!("{} rows have no partition value", bad.len()),
            ));
        };
        let rows = UInt32Array::from(bad.iter().map(|(r, _)| *r).collect::<Vec<_>>());
        let taken = arrow::compute::take_record_batch(batch, &rows)?;
        let lines = Encoder::new(OutputFormat::JsonLines).encode_lines(&taken)?;
        let now = crate::record::now_ms();
        let records = lines
            .into_iter()
            .zip(bad)
            .map(|(line, (_, col))| {
                ErrorRecord::new(
                    ErrorStage::Sink,
                    "partition_key_missing",
                    format!("partition column `{col}` is null or empty"),
                    Record::new(line, now),
                )
            })
            .collect();
        errors.send(records, ack).await
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

impl S3SinkBuilder {
    /// Name used in object names and logs (default `rivulet`), like a Firehose stream's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Key prefix, with Firehose's expressions (`!{timestamp:yyyy/MM/dd}`,
    /// `!{partitionKeyFromQuery:column}`, `!{firehose:random-string}`); `yyyy/MM/dd/HH/` is
    /// appended when it has no timestamp.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Object format (default JSON lines).
    pub fn with_format(mut self, format: ObjectFormat) -> Self {
        self.format = format;
        self
    }

    /// Compression (default none).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Uploads an object once it holds this many bytes; default 5 MiB. JSON and CSV are counted
    /// before compression; Parquet as the writer's estimate (pages written, compressed, plus the
    /// row group in memory).
    pub fn with_roll_bytes(mut self, bytes: usize) -> Self {
        self.roll_bytes = bytes;
        self
    }

    /// Uploads an object once it has been open this long; default 60 s.
    pub fn with_roll_interval(mut self, interval: Duration) -> Self {
        self.roll_interval = interval;
        self
    }

    /// At most this many objects are open at once, one per value of the partition columns
    /// (default [`DEFAULT_MAX_OPEN_PARTITIONS`], 500). Rows of a new value while that many are
    /// open first upload the object opened earliest, before its roll size or age: output with
    /// more distinct values than this per roll interval lands in more, smaller objects, and
    /// nothing goes to the error output (where Firehose sends such rows, as
    /// `activePartitionExceeded`).
    pub fn with_max_open_partitions(mut self, partitions: usize) -> Self {
        self.max_open = partitions;
        self
    }

    /// At most this many bytes are buffered in open objects, all partitions together (default
    /// [`DEFAULT_MAX_BUFFERED_BYTES`], 256 MiB); past it the largest open objects are uploaded
    /// early.
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered = bytes;
        self
    }

    /// Objects at least this large are uploaded in parts of half this size (at least 5 MiB);
    /// default 16 MiB.
    pub fn with_multipart_threshold(mut self, bytes: usize) -> Self {
        self.multipart_threshold = bytes;
        self
    }

    /// AWS region (default: from the environment or profile).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Endpoint URL, e.g. a local emulator or a VPC endpoint. Path-style requests are used with it.
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Server-side encryption of every object.
    pub fn with_server_side_encryption(mut self, sse: ServerSideEncryption) -> Self {
        self.sse = Some(sse);
        self
    }

    /// Client-side envelope encryption of every object (after compression).
    pub fn with_encryption(mut self, encryptor: EnvelopeEncryptor) -> Self {
        self.encryption = Some(encryptor);
        self
    }

    /// Takes region, endpoint and credentials from this AWS configuration instead of the default
    /// chain (`with_region` and `with_endpoint_url` still override it).
    pub fn with_aws_config(mut self, config: aws_config::SdkConfig) -> Self {
        self.aws_config = Some(config);
        self
    }

    /// Writes to this store instead of building an S3 client (region, endpoint and server-side
    /// encryption are then the store's business).
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Checks the settings and builds the sink; credentials come from the AWS SDK's default chain.
    pub async fn build(self) -> Result<S3Sink> {
        if self.bucket.is_empty() {
            return Err(Error::config("bucket", "must name a bucket"));
        }
        if self.roll_bytes == 0 || self.roll_interval.is_zero() {
            return Err(Error::config(
                "roll_bytes",
                "roll_bytes and roll_interval_ms must be above zero",
            ));
        }
        if self.max_open == 0 || self.max_buffered == 0 {
            return Err(Error::config(
                "max_open_partitions",
                "max_open_partitions and max_buffered_bytes must be above zero",
            ));
        }
        if self.multipart_threshold < MIN_PART_BYTES * 2 {
            return Err(Error::config(
                "multipart_threshold",
                format!(
                    "must be at least {} bytes (two parts of S3's 5 MiB minimum)",
                    MIN_PART_BYTES * 2
                ),
            ));
        }
        if self.encryption.is_some() && self.roll_bytes > MAX_SEALED_OBJECT_BYTES {
            return Err(Error::config(
                "roll_bytes",
                "with envelope encryption, objects must stay under 4 GiB: use roll_bytes of at most 3 GiB",
            ));
        }
        if self.name.is_empty() || self.name.contains('/') {
            return Err(Error::config("name", "must be non-empty and without `/`"));
        }
        let prefix = KeyPrefix::parse(&self.prefix, "prefix")?;
        // Partition values are encoded and cannot break a key; the prefix's own text can.
        let sample = prefix.render(0, &vec!["v"; prefix.columns().count()], 0);
        object_path(&format!("{sample}{}", self.name)).map_err(|e| Error::config("prefix", e))?;
        let partition_columns: Vec<String> = prefix.columns().map(str::to_owned).collect();
        let store = match self.store {
            Some(store) => store,
            None => {
                let shared = match self.aws_config {
                    Some(c) => {
                        let mut b = c.into_builder();
                        if let Some(r) = self.region {
                            b = b.region(aws_config::Region::new(r));
                        }
                        if let Some(u) = self.endpoint_url {
                            b = b.endpoint_url(u);
                        }
                        b.build()
                    }
                    None => crate::aws::load_config(self.region, self.endpoint_url, "s3").await?,
                };
                Arc::new(build_s3(&self.bucket, &shared, self.sse.as_ref())?)
            }
        };
        let encoder = Encoder::new(match &self.format {
            ObjectFormat::Text(f) => f.clone(),
            ObjectFormat::Parquet => OutputFormat::JsonLines,
        });
        let start = CheckpointRange::after(&crate::Position::new(), crate::record::now_ms());
        Ok(S3Sink {
            name: self.name,
            bucket: self.bucket,
            store,
            prefix,
            partition_columns,
            format: self.format,
            encoder,
            compression: self.compression,
            roll_bytes: self.roll_bytes,
            roll_interval: self.roll_interval,
            max_open: self.max_open,
            max_buffered: self.max_buffered,
            multipart_threshold: self.multipart_threshold,
            encryption: self.encryption,
            counters_range: Arc::clone(&start.id),
            ranges: CheckpointRanges::fixed(start),
            counters: HashMap::new(),
            issued: HashSet::new(),
            open: BTreeMap::new(),
            errors: None,
            objects_written: 0,
            closed_early: 0,
        })
    }
}

/// A multipart upload shared by its uploader and the registry of uploads in progress.
type SharedUpload = Arc<tokio::sync::Mutex<Option<Box<dyn MultipartUpload>>>>;

/// Multipart uploads in progress in this process, for [`abort_uploads_in_progress`].
static IN_PROGRESS: std::sync::Mutex<Vec<(u64, SharedUpload)>> = std::sync::Mutex::new(Vec::new());
static NEXT_UPLOAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn in_progress() -> std::sync::MutexGuard<'static, Vec<(u64, SharedUpload)>> {
    IN_PROGRESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A multipart upload that is aborted unless it completes: when its uploader fails, when the
/// uploader's future is dropped (a task aborted, a pipeline stopped), and by
/// [`abort_uploads_in_progress`].
struct OpenUpload {
    id: u64,
    upload: SharedUpload,
}

impl OpenUpload {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        let id = NEXT_UPLOAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let upload = Arc::new(tokio::sync::Mutex::new(Some(upload)));
        in_progress().push((id, Arc::clone(&upload)));
        Self { id, upload }
    }

    fn gone() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "the multipart upload was aborted".into(),
        }
    }

    async fn put_part(&self, data: PutPayload) -> object_store::Result<object_store::UploadPart> {
        match self.upload.lock().await.as_mut() {
            Some(u) => Ok(u.put_part(data)),
            None => Err(Self::gone()),
        }
    }

    async fn complete(&self) -> object_store::Result<()> {
        let mut slot = self.upload.lock().await;
        let Some(u) = slot.as_mut() else {
            return Err(Self::gone());
        };
        u.complete().await?;
        *slot = None;
        Ok(())
    }

    async fn abort(&self) -> object_store::Result<()> {
        match self.upload.lock().await.take() {
            Some(mut u) => u.abort().await,
            None => Ok(()),
        }
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        in_progress().retain(|(id, _)| *id != self.id);
        // Still open: the uploader stopped before it completed or aborted the upload.
        let open = match self.upload.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        if let (Some(mut upload), Ok(runtime)) = (open, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!("aborting an interrupted multipart upload failed: {e}");
                }
            });
        }
    }
}

/// Aborts every multipart upload of the S3 sinks of this process that is still in progress, so
/// that none is left open (and billed) when the process exits without finishing them: the CLI
/// calls it when a second Ctrl-C aborts a run. The sinks whose uploads it aborts fail.
pub async fn abort_uploads_in_progress() {
    let open: Vec<SharedUpload> = in_progress().drain(..).map(|(_, u)| u).collect();
    for upload in open {
        if let Some(mut u) = upload.lock().await.take() {
            if let Err(e) = u.abort().await {
                tracing::warn!("aborting a multipart upload failed: {e}");
            }
        }
    }
}

/// A map key for partition values: each value with its length, so no two lists collide.
fn group_key(values: &[String]) -> String {
    values.iter().map(|v| format!("{}:{v}", v.len())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use object_store::memory::InMemory;
    use object_store::path::Path as ObjectPath;

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
        let mut s = S3Sink::builder("b")
            .with_store(Arc::clone(&store) as Arc<dyn ObjectStore>)
            .with_prefix("by/!{partitionKeyFromQuery:sector}/")
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
        let mut s = S3Sink::builder("b")
            .with_store(Arc::clone(&store) as Arc<dyn ObjectStore>)
            .with_prefix("by/!{partitionKeyFromQuery:sector}/")
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
