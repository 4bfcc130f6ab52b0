//! [`S3SinkBuilder`]: the sink's settings, checked before anything is written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use super::{
    Compression, ObjectFormat, S3Sink, ServerSideEncryption, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_OPEN_PARTITIONS, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_ROLL_BYTES,
    DEFAULT_ROLL_INTERVAL, MIN_PART_BYTES,
};
use crate::aws::s3::{build_s3, object_path};
use crate::crypto::EnvelopeEncryptor;
use crate::format::{Encoder, OutputFormat};
use crate::sink::prefix::KeyPrefix;
use crate::sink::{CheckpointRange, CheckpointRanges};
use crate::{Error, Result};

/// Largest `roll_bytes` with envelope encryption: an envelope holds under 4 GiB, and an object can
/// pass its roll size by one batch.
const MAX_SEALED_OBJECT_BYTES: usize = 3 << 30;

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

impl S3SinkBuilder {
    /// A builder writing into `bucket`, with the defaults.
    pub(super) fn new(bucket: String) -> Self {
        Self {
            bucket,
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
    pub async fn build(mut self) -> Result<S3Sink> {
        self.check_settings()?;
        let prefix = self.key_prefix()?;
        let partition_columns: Vec<String> = prefix.columns().map(str::to_owned).collect();
        let store = self.take_store().await?;
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

    /// Fails on a setting out of its range: the bucket, the roll and buffering bounds, the
    /// multipart threshold and the name.
    fn check_settings(&self) -> Result<()> {
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
        Ok(())
    }

    /// The parsed prefix, checked to form valid keys with the name.
    fn key_prefix(&self) -> Result<KeyPrefix> {
        let prefix = KeyPrefix::parse(&self.prefix, "prefix")?;
        // Partition values are encoded and cannot break a key; the prefix's own text can.
        let sample = prefix.render(0, &vec!["v"; prefix.columns().count()], 0);
        object_path(&format!("{sample}{}", self.name)).map_err(|e| Error::config("prefix", e))?;
        Ok(prefix)
    }

    /// The store given, or an S3 client from the AWS configuration given or loaded.
    async fn take_store(&mut self) -> Result<Arc<dyn ObjectStore>> {
        if let Some(store) = self.store.take() {
            return Ok(store);
        }
        let (region, endpoint_url) = (self.region.take(), self.endpoint_url.take());
        let shared = match self.aws_config.take() {
            Some(c) => {
                let mut b = c.into_builder();
                if let Some(r) = region {
                    b = b.region(aws_config::Region::new(r));
                }
                if let Some(u) = endpoint_url {
                    b = b.endpoint_url(u);
                }
                b.build()
            }
            None => crate::aws::load_config(region, endpoint_url, "s3").await?,
        };
        Ok(Arc::new(build_s3(
            &self.bucket,
            &shared,
            self.sse.as_ref(),
        )?))
    }
}
