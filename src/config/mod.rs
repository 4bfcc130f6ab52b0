//! Pipeline configuration files (TOML), validated before anything starts.
//!
//! This file holds the schema (every table and key) and turns a file into a [`Pipeline`]; beside
//! it: `sinks` (each sink built, with its encryption, and checked), `source` (the Kinesis
//! source's settings), `reference` (reference tables and the `[[udfs]]` modules' functions),
//! `replay` (`rivulet replay` as a pipeline file) and `setup` (what `rivulet setup` reads).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[cfg(feature = "aws")]
use crate::aws::ClientOptions;
use crate::format::{parse_sql_type, Column, CsvOptions, JsonPath, OutputFormat, RecordFormat};
use crate::pipeline::{BatchSettings, Pipeline};
use crate::sink::{FileSink, Sink, StdoutSink};
use crate::source::{FileSource, Framing, GeneratorFormat, GeneratorSource, Source};
use crate::sql::WatermarkSettings;
use crate::{Error, Result};

mod reference;
mod replay;
#[cfg(feature = "setup")]
mod setup;
mod sinks;
mod source;
#[cfg(test)]
mod tests;

use reference::reference_tables;
pub use replay::ReplayOptions;
#[cfg(feature = "setup")]
pub(crate) use setup::SetupInputs;
use sinks::check_sink;

/// A pipeline as described by a TOML file. Load with [`PipelineConfig::from_file`], then
/// [`build`](PipelineConfig::build) it. Unknown keys are errors; relative paths are relative to
/// the file. Every key:
///
/// ```toml
/// name = "ticker"           # optional: the pipeline's name (default: the file name without extension)
/// # transform = "clean_logs"  # optional: a record transform of a [[udfs]] module, applied to
///                             # every record before decoding
///
/// [source]
/// type = "generator"        # or "file", or "kinesis"
/// rate = 100                # generator: records per second; omit to go as fast as possible
/// limit = 1000              # generator: stop after this many; omit to run until stopped
/// seed = 42                 # generator: seed of the random walk
/// start_time_ms = 0         # generator: synthetic clock from this epoch time; omit for wall time
/// # path = "in.ndjson"      # file: the file to read
/// # follow = false          # file: keep reading as it grows
/// # stream = "ticker-stream" # kinesis: stream name or ARN
/// # region = "eu-west-1"    # kinesis: default from AWS_REGION / the AWS profile
/// # endpoint_url = "http://127.0.0.1:4566"  # kinesis: another endpoint (VPC endpoint, emulator)
/// # start_position = "trim_horizon"  # kinesis: or "latest", or "at_timestamp" (needs start_timestamp)
/// # start_timestamp = "2026-01-27T00:00:00Z"  # kinesis: RFC 3339 time or epoch milliseconds
/// # max_records = 10000     # kinesis: records per GetRecords call
/// # poll_interval_ms = 200  # kinesis: least time between calls on a shard (≥ 200)
/// # idle_poll_interval_ms = 1000  # kinesis: time between calls while a shard has nothing new
/// # list_shards_interval_ms = 60000  # kinesis: how often new shards are looked for
/// # filter_out_of_range_sub_records = false  # kinesis: KPL sub-records outside their shard's
///                           # hash-key range go to the error output (KCL-style) instead of on
///
/// [[reference]]            # optional, repeatable: a static table the SQL can join to the stream
/// name = "companies"
/// path = "companies.csv"    # JSON lines, or CSV with a header; or s3://bucket/key (region,
///                           # endpoint_url)
///
/// [[udfs]]                 # optional, repeatable: WASM modules whose functions SQL calls by name
/// path = "udfs/build/haversine.wasm"  # or s3://bucket/key
/// # region = "eu-west-1"    # s3 paths: default from AWS_REGION / the AWS profile
/// # endpoint_url = "http://127.0.0.1:4566"  # s3 paths: another endpoint
/// deadline_ms = 100         # per call (one micro-batch)
/// # fuel = 50000000         # optional deterministic budget per call
/// # max_memory_mb = 64
/// # max_state_kb = 64       # largest state an aggregate may keep per group
///
/// [checkpoint]              # optional: resume after a stop or crash
/// path = "state/checkpoint" # the checkpoint file (replaced atomically)
/// interval_ms = 10000       # time between checkpoints
///
/// [format]
/// type = "json"             # or "csv"
/// # delimiter = ","         # csv: one character, or "\t"
/// # quote = "\""            # csv
/// # escape = "\\"           # csv: none by default (quotes are doubled)
/// # header = false          # csv: the file starts with a header row
/// rowtime = "event_time"    # optional: ROWTIME from this column instead of the arrival time, or
///                           # "processing": the time the record entered the pipeline (KDA's)
/// infer_sample = 1000       # records read to infer columns when `columns` is omitted
/// max_record_bytes = 10485760
/// # columns = [{ name = "sym", type = "VARCHAR(8)", path = "$.ticker_symbol" }]
///
/// [query]
/// sql = "SELECT ticker_symbol, price FROM source WHERE price > 100"   # or sql_file = "q.sql"
/// # application = "app.json"  # a KDA application file (DescribeApplication output, or the
///                             # original solution's YAML): input format, columns, and code
/// allowed_lateness_ms = 0   # windows: how far behind the newest event time a row may arrive
/// idle_timeout_ms = 60000   # windows: a shard read to its tip and quiet this long stops holding the watermark
/// max_future_ms = 3600000   # windows: a row this far ahead of its arrival time is `bad_time`
/// max_alignment_ms = 60000  # windows: a shard this far ahead of the watermark pauses (0: never)
///
/// [[sinks]]                 # one or more
/// type = "stdout"           # or "stderr", "file", "firehose", "kinesis", or "s3"
/// format = "json"           # or "csv"
/// stream = "DESTINATION_SQL_STREAM"  # the stream it receives (`INSERT INTO name …` makes others)
/// # path = "out.ndjson"     # file: the file, or a directory when rolling
/// # roll_bytes = 67108864   # file: roll into a new file at this size
/// # roll_interval_secs = 300 # file: … or at this age
/// # truncate = false        # file: empty a single file at start instead of appending
/// # delivery_stream = "out" # firehose: the delivery stream (records: one JSON line or CSV row each)
/// # region, endpoint_url    # firehose: as for the kinesis source
/// # max_attempts = 8        # firehose: calls per record before it goes to the error output
/// # max_retry_ms = 60000    # firehose: … or this long after a request's first call
/// # max_concurrent_requests = 4
/// # stream_name = "out"     # kinesis (type = "kinesis"): the stream, name or ARN
/// # partition_key = "ticker_symbol"  # kinesis: the output column keying each record
/// # explicit_hash_key = "h" # kinesis: optional column with explicit hash keys
///                           # (region, endpoint_url, max_attempts, … as for firehose)
/// # bucket = "analytics"    # s3: the bucket
/// # prefix = "out/!{timestamp:yyyy/MM/dd/HH}/"  # s3: Firehose prefix expressions
/// # name = "ticker"         # s3: object name prefix (default: the pipeline's name)
/// # format = "parquet"      # s3: also "json", "csv"
/// # compression = "zstd"    # s3: "none", "gzip", "zstd", "snappy"
/// # roll_bytes = 5242880    # s3: upload an object at this size…
/// # roll_interval_ms = 60000 # s3: …or at this age
/// # max_open_partitions = 500 # s3: objects open at once (one per partition value); past
///                           # it the one opened first is uploaded early
/// # max_buffered_bytes = 268435456 # s3: bytes in open objects; past it the largest go early
/// # multipart_threshold = 16777216 # s3: objects this large go up in parts
/// # server_side_encryption = "kms"  # s3: or "aes256"; "kms" needs sse_kms_key_id
/// # [sinks.encryption]      # file, firehose, kinesis, s3: client-side KMS envelope encryption
/// # kms_key_id = "alias/k"  # the key (id, ARN, alias); region, endpoint_url optional
/// # context = { team = "x" } # extra encryption-context pairs
/// # max_key_age_secs = 300, max_bytes_per_key = 1073741824, max_messages_per_key = 1048576
///
/// [raw_copy]                # optional, any sink type: every input record as read, before decoding
/// type = "firehose"
/// delivery_stream = "raw-data"
///
/// [error_output]            # optional, any sink type; default: the first s3 sink's bucket under
///                           # processing-failed/, or the file processing-failed/<name>.ndjson
/// type = "file"
/// path = "errors.ndjson"
///
/// [batch]                   # optional
/// max_rows = 8192           # a micro-batch closes at this many records…
/// max_latency_ms = 200      # …or when its first record has waited this long
/// sink_queue = 4            # micro-batches queued per sink
///
/// [runtime]                 # optional
/// workers = 2               # threads decoding a micro-batch side by side (default: every core
///                           # the process may use; parts are at least 2,048 records)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline's name (default: the file name without extension): in encryption contexts and
    /// S3 object names.
    #[serde(default)]
    name: Option<String>,
    /// A record transform of one of the `[[udfs]]` modules, by name.
    #[serde(default)]
    transform: Option<String>,
    source: SourceConfig,
    #[serde(default)]
    format: FormatConfig,
    #[serde(default)]
    query: QueryConfig,
    #[serde(default)]
    sinks: Vec<SinkConfig>,
    #[serde(default)]
    error_output: Option<SinkConfig>,
    #[serde(default)]
    raw_copy: Option<SinkConfig>,
    #[serde(default)]
    batch: BatchConfig,
    #[serde(default)]
    runtime: RuntimeConfig,
    #[serde(default)]
    checkpoint: Option<CheckpointConfig>,
    #[serde(default)]
    udfs: Vec<UdfConfig>,
    #[serde(default)]
    reference: Vec<ReferenceConfig>,
    /// What `rivulet setup` provisions (feature `setup`); ignored by `rivulet run`.
    #[serde(default)]
    #[cfg_attr(not(feature = "setup"), allow(dead_code))]
    setup: Option<SetupSection>,
    #[serde(skip)]
    base_dir: PathBuf,
}

/// The `[setup]` table: how `rivulet setup` provisions the pipeline's AWS resources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "setup"), allow(dead_code))]
pub(crate) struct SetupSection {
    /// Region and endpoint of the setup's calls (default: the source's, else the SDK's chain).
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    /// The bucket Firehose delivers to (created unless it exists).
    pub(crate) bucket: Option<String>,
    /// A KMS key (rotation on) for the streams, the delivery streams and the bucket. Default true.
    pub(crate) encryption: Option<bool>,
    /// Shards of a new source stream (default 2); `0` for on-demand capacity.
    pub(crate) source_shards: Option<u32>,
    /// Shards of new Kinesis output streams (default 1); `0` for on-demand capacity.
    pub(crate) output_shards: Option<u32>,
    /// Who may assume the runtime role: service names (`ecs-tasks.amazonaws.com`) or IAM ARNs.
    /// Default: the account itself (`arn:aws:iam::<account>:root`).
    #[serde(default)]
    pub(crate) runtime_principals: Vec<String>,
    /// Seconds to wait for a stream or delivery stream to become ACTIVE (default 300).
    pub(crate) wait_timeout_secs: Option<u64>,
    /// Destination settings per delivery stream name.
    #[serde(default)]
    pub(crate) delivery: std::collections::BTreeMap<String, DeliverySection>,
}

/// `[setup.delivery.<name>]`: one Firehose delivery stream's destination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "setup"), allow(dead_code))]
pub(crate) struct DeliverySection {
    /// `s3` (default), `redshift` or `opensearch`.
    pub(crate) destination: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) error_prefix: Option<String>,
    pub(crate) buffer_interval_secs: Option<u32>,
    pub(crate) buffer_size_mb: Option<u32>,
    /// `UNCOMPRESSED` (default), `GZIP`, `ZIP`, `Snappy`, `HADOOP_SNAPPY`.
    pub(crate) compression: Option<String>,
    /// Redshift: `jdbc:redshift://…`, the table, its columns, the user, and the environment
    /// variable holding the password (never written in the file).
    pub(crate) jdbc_url: Option<String>,
    pub(crate) table: Option<String>,
    pub(crate) columns: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) copy_options: Option<String>,
    /// OpenSearch: the domain's ARN, the index, and its rotation (`NoRotation`, `OneHour`,
    /// `OneDay` (default), `OneWeek`, `OneMonth`).
    pub(crate) domain_arn: Option<String>,
    pub(crate) index: Option<String>,
    pub(crate) index_rotation: Option<String>,
}

/// A reference table: static rows the SQL can join to the stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
struct ReferenceConfig {
    /// The table's name in SQL.
    name: String,
    /// A local path (relative to the pipeline file) or `s3://bucket/key`: JSON lines, or CSV with
    /// a header row (by the extension, or `format`).
    path: String,
    format: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

/// A WASM module whose functions SQL can call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
struct UdfConfig {
    /// A local path (relative to the pipeline file) or `s3://bucket/key`.
    path: String,
    /// For `s3://` paths.
    region: Option<String>,
    /// For `s3://` paths.
    endpoint_url: Option<String>,
    deadline_ms: Option<u64>,
    fuel: Option<u64>,
    max_memory_mb: Option<usize>,
    max_state_kb: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointConfig {
    path: PathBuf,
    #[serde(default = "default_checkpoint_interval_ms")]
    interval_ms: u64,
}

fn default_checkpoint_interval_ms() -> u64 {
    crate::pipeline::DEFAULT_CHECKPOINT_INTERVAL.as_millis() as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum StartPositionConfig {
    #[default]
    TrimHorizon,
    Latest,
    AtTimestamp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
enum TimestampConfig {
    Millis(i64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum SourceConfig {
    Generator {
        rate: Option<f64>,
        limit: Option<u64>,
        #[serde(default = "default_seed")]
        seed: u64,
        start_time_ms: Option<i64>,
    },
    File {
        path: PathBuf,
        #[serde(default)]
        follow: bool,
    },
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    Kinesis {
        stream: String,
        region: Option<String>,
        endpoint_url: Option<String>,
        #[serde(default)]
        start_position: StartPositionConfig,
        start_timestamp: Option<TimestampConfig>,
        max_records: Option<i32>,
        poll_interval_ms: Option<u64>,
        idle_poll_interval_ms: Option<u64>,
        list_shards_interval_ms: Option<u64>,
        #[serde(default)]
        filter_out_of_range_sub_records: bool,
    },
}

fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FormatKind {
    #[default]
    Json,
    Csv,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatConfig {
    #[serde(default, rename = "type")]
    kind: FormatKind,
    delimiter: Option<String>,
    quote: Option<String>,
    escape: Option<String>,
    #[serde(default)]
    header: bool,
    columns: Option<Vec<ColumnConfig>>,
    #[serde(default = "default_infer_sample")]
    infer_sample: usize,
    rowtime: Option<String>,
    max_record_bytes: Option<usize>,
}

impl Default for FormatConfig {
    fn default() -> Self {
        Self {
            kind: FormatKind::Json,
            delimiter: None,
            quote: None,
            escape: None,
            header: false,
            columns: None,
            infer_sample: default_infer_sample(),
            rowtime: None,
            max_record_bytes: None,
        }
    }
}

fn default_infer_sample() -> usize {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnConfig {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryConfig {
    sql: Option<String>,
    sql_file: Option<PathBuf>,
    /// A Kinesis Data Analytics application file: the input's format and columns, and the
    /// application code unless `sql` or `sql_file` gives it.
    application: Option<PathBuf>,
    #[serde(default)]
    allowed_lateness_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default = "default_max_future_ms")]
    max_future_ms: u64,
    #[serde(default = "default_max_alignment_ms")]
    max_alignment_ms: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            sql: None,
            sql_file: None,
            application: None,
            allowed_lateness_ms: 0,
            idle_timeout_ms: default_idle_timeout_ms(),
            max_future_ms: default_max_future_ms(),
            max_alignment_ms: default_max_alignment_ms(),
        }
    }
}

fn default_max_alignment_ms() -> u64 {
    60_000
}

fn default_max_future_ms() -> u64 {
    3_600_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EncodingConfig {
    /// Not given: CSV when a KDA application file's `OutputFormatType` says so, else JSON.
    #[default]
    #[serde(skip)]
    Unset,
    Json,
    Csv,
}

impl EncodingConfig {
    /// Whether rows are written as CSV, `application_csv` deciding when the file does not.
    fn csv(&self, application_csv: bool) -> bool {
        match self {
            Self::Unset => application_csv,
            Self::Json => false,
            Self::Csv => true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum SinkConfig {
    Stdout {
        #[serde(default)]
        format: EncodingConfig,
        stream: Option<String>,
    },
    Stderr {
        #[serde(default)]
        format: EncodingConfig,
        stream: Option<String>,
    },
    File {
        path: PathBuf,
        stream: Option<String>,
        #[serde(default)]
        format: EncodingConfig,
        roll_bytes: Option<u64>,
        roll_interval_secs: Option<u64>,
        #[serde(default)]
        truncate: bool,
        #[serde(default)]
        encryption: Option<EncryptionConfig>,
    },
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    Kinesis {
        stream_name: String,
        partition_key: String,
        explicit_hash_key: Option<String>,
        stream: Option<String>,
        #[serde(default)]
        format: EncodingConfig,
        region: Option<String>,
        endpoint_url: Option<String>,
        max_attempts: Option<u32>,
        max_retry_ms: Option<u64>,
        max_concurrent_requests: Option<usize>,
        #[serde(default)]
        encryption: Option<EncryptionConfig>,
    },
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    Firehose {
        delivery_stream: String,
        stream: Option<String>,
        #[serde(default)]
        format: EncodingConfig,
        region: Option<String>,
        endpoint_url: Option<String>,
        max_attempts: Option<u32>,
        max_retry_ms: Option<u64>,
        max_concurrent_requests: Option<usize>,
        #[serde(default)]
        encryption: Option<EncryptionConfig>,
    },
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    S3 {
        bucket: String,
        #[serde(default)]
        prefix: String,
        /// Object name prefix; default the pipeline's name.
        name: Option<String>,
        stream: Option<String>,
        #[serde(default)]
        format: ObjectFormatConfig,
        #[serde(default)]
        compression: CompressionConfig,
        roll_bytes: Option<usize>,
        roll_interval_ms: Option<u64>,
        max_open_partitions: Option<usize>,
        max_buffered_bytes: Option<usize>,
        multipart_threshold: Option<usize>,
        region: Option<String>,
        endpoint_url: Option<String>,
        /// `"aes256"` (SSE-S3) or `"kms"` (SSE-KMS with `sse_kms_key_id`).
        server_side_encryption: Option<SseConfig>,
        sse_kms_key_id: Option<String>,
        #[serde(default)]
        encryption: Option<EncryptionConfig>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ObjectFormatConfig {
    #[default]
    Json,
    Csv,
    Parquet,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CompressionConfig {
    #[default]
    None,
    Gzip,
    Zstd,
    Snappy,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SseConfig {
    Aes256,
    Kms,
}

impl SinkConfig {
    /// The stream the sink receives, when its table names one.
    fn stream(&self) -> Option<&str> {
        match self {
            Self::Stdout { stream, .. }
            | Self::Stderr { stream, .. }
            | Self::File { stream, .. }
            | Self::Firehose { stream, .. }
            | Self::Kinesis { stream, .. }
            | Self::S3 { stream, .. } => stream.as_deref(),
        }
    }

    /// The client-side encryption of the sink, when it has one.
    fn encryption(&self) -> Option<&EncryptionConfig> {
        match self {
            Self::File { encryption, .. }
            | Self::Kinesis { encryption, .. }
            | Self::Firehose { encryption, .. }
            | Self::S3 { encryption, .. } => encryption.as_ref(),
            Self::Stdout { .. } | Self::Stderr { .. } => None,
        }
    }

    /// The sink with `with` as its client-side encryption, unless it has its own (a stdout or
    /// stderr sink cannot encrypt and is returned as it is).
    fn encrypted_by_default(mut self, with: Option<&EncryptionConfig>) -> Self {
        if let (
            Self::File { encryption, .. }
            | Self::Kinesis { encryption, .. }
            | Self::Firehose { encryption, .. }
            | Self::S3 { encryption, .. },
            Some(with),
        ) = (&mut self, with)
        {
            if encryption.is_none() {
                *encryption = Some(with.clone());
            }
        }
        self
    }
}

/// Client-side envelope encryption of a sink's output with a KMS key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
struct EncryptionConfig {
    kms_key_id: String,
    region: Option<String>,
    endpoint_url: Option<String>,
    /// Extra encryption-context pairs (the pipeline and the stream are always there).
    #[serde(default)]
    context: std::collections::BTreeMap<String, String>,
    max_key_age_secs: Option<u64>,
    max_bytes_per_key: Option<u64>,
    max_messages_per_key: Option<u64>,
}

/// The `[runtime]` table: the threads a pipeline uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeConfig {
    /// Threads decoding a micro-batch (default: every core the process may use).
    #[serde(default)]
    workers: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchConfig {
    #[serde(default = "default_max_rows")]
    max_rows: usize,
    #[serde(default = "default_latency")]
    max_latency_ms: u64,
    #[serde(default = "default_sink_queue")]
    sink_queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            max_latency_ms: default_latency(),
            sink_queue: default_sink_queue(),
        }
    }
}

fn default_max_rows() -> usize {
    8192
}
fn default_latency() -> u64 {
    200
}
fn default_sink_queue() -> usize {
    4
}

fn single_byte(key: &str, value: &Option<String>, default: u8) -> Result<u8> {
    match value {
        None => Ok(default),
        Some(s) if s == "\\t" => Ok(b'\t'),
        Some(s) if s.len() == 1 => Ok(s.as_bytes()[0]),
        Some(s) => Err(Error::config(
            key,
            format!("must be a single ASCII character (or \"\\t\"), got {s:?}"),
        )),
    }
}

impl PipelineConfig {
    /// Reads and validates a configuration file. Relative paths in it are relative to its directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        Self::from_toml_str(&text, base)
            .map(|mut c| {
                if c.name.is_none() {
                    c.name = stem;
                }
                c
            })
            .map_err(|e| match e {
                Error::ConfigParse { message, .. } => Error::ConfigParse {
                    path: path.to_path_buf(),
                    message,
                },
                other => other,
            })
    }

    /// Parses and validates configuration text; relative paths are resolved against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: impl Into<PathBuf>) -> Result<Self> {
        let mut config: PipelineConfig = toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        config.base_dir = base_dir.into();
        config.validate()?;
        Ok(config)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Checks every setting that can be checked without running anything.
    pub fn validate(&self) -> Result<()> {
        match &self.source {
            SourceConfig::Generator { rate, .. } => {
                if let Some(r) = rate {
                    if !(r.is_finite() && *r > 0.0) {
                        return Err(Error::config(
                            "source.rate",
                            format!("must be a positive number of records per second, got {r}"),
                        ));
                    }
                }
            }
            SourceConfig::File { path, .. } => {
                let p = self.resolve(path);
                if !p.is_file() {
                    return Err(Error::config(
                        "source.path",
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
            SourceConfig::Kinesis { .. } => {
                self.kinesis_start()?;
                self.poll_settings()?;
            }
        }
        if let Some(c) = &self.checkpoint {
            if c.interval_ms == 0 {
                return Err(Error::config(
                    "checkpoint.interval_ms",
                    "must be at least 1",
                ));
            }
            if c.path.as_os_str().is_empty() {
                return Err(Error::config("checkpoint.path", "must name a file"));
            }
        }
        self.record_format()?;
        self.columns()?;
        if let (Some(rt), Some(cols)) = (&self.format.rowtime, &self.format.columns) {
            if rt != crate::format::PROCESSING_ROWTIME && !cols.iter().any(|c| &c.name == rt) {
                return Err(Error::config(
                    "format.rowtime",
                    format!("`{rt}` is not one of the columns"),
                ));
            }
        }
        if self.format.infer_sample == 0 {
            return Err(Error::config("format.infer_sample", "must be at least 1"));
        }
        match (&self.query.sql, &self.query.sql_file) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "query",
                    "give either `sql` or `sql_file`, not both",
                ))
            }
            (None, Some(f)) if !self.resolve(f).is_file() => {
                return Err(Error::config(
                    "query.sql_file",
                    format!("{} is not a readable file", self.resolve(f).display()),
                ))
            }
            (Some(s), None) if s.trim().is_empty() => {
                return Err(Error::config("query.sql", "is empty"))
            }
            _ => {}
        }
        if self.sinks.is_empty() {
            return Err(Error::config(
                "sinks",
                "at least one [[sinks]] entry is required",
            ));
        }
        for (i, s) in self.sinks.iter().enumerate() {
            check_sink(&format!("sinks[{i}]"), s)?;
        }
        if let Some(s) = &self.error_output {
            check_sink("error_output", s)?;
        }
        if let Some(s) = &self.raw_copy {
            check_sink("raw_copy", s)?;
        }
        self.check_s3_names()?;
        self.check_plaintext()?;
        if self.batch.max_rows == 0 {
            return Err(Error::config("batch.max_rows", "must be at least 1"));
        }
        if self.runtime.workers == Some(0) {
            return Err(Error::config("runtime.workers", "must be at least 1"));
        }
        if !(1..=3_600_000).contains(&self.batch.max_latency_ms) {
            return Err(Error::config(
                "batch.max_latency_ms",
                "must be between 1 and 3600000 (one hour)",
            ));
        }
        if self.batch.sink_queue == 0 {
            return Err(Error::config("batch.sink_queue", "must be at least 1"));
        }
        Ok(())
    }

    fn record_format(&self) -> Result<RecordFormat> {
        Ok(match self.format.kind {
            FormatKind::Json => {
                for (key, set) in [
                    ("format.delimiter", self.format.delimiter.is_some()),
                    ("format.quote", self.format.quote.is_some()),
                    ("format.escape", self.format.escape.is_some()),
                    ("format.header", self.format.header),
                ] {
                    if set {
                        return Err(Error::config(
                            key,
                            "applies to CSV only; set format.type = \"csv\"",
                        ));
                    }
                }
                RecordFormat::Json
            }
            FormatKind::Csv => RecordFormat::Csv(CsvOptions {
                delimiter: single_byte("format.delimiter", &self.format.delimiter, b',')?,
                quote: single_byte("format.quote", &self.format.quote, b'"')?,
                escape: match &self.format.escape {
                    None => None,
                    e => Some(single_byte("format.escape", e, b'\\')?),
                },
                has_header: self.format.header,
            }),
        })
    }

    /// The `[query] application` file, when there is one.
    fn kda_application(&self) -> Result<Option<crate::KdaApplication>> {
        let Some(path) = &self.query.application else {
            return Ok(None);
        };
        if self.format.columns.is_some() {
            return Err(Error::config(
                "format.columns",
                "the input's columns come from `query.application`; give one or the other",
            ));
        }
        crate::KdaApplication::load(&self.resolve(path))
            .map(Some)
            .map_err(|e| Error::config("query.application", e.to_string()))
    }

    fn columns(&self) -> Result<Option<Vec<Column>>> {
        let Some(cols) = &self.format.columns else {
            return Ok(None);
        };
        if cols.is_empty() {
            return Err(Error::config(
                "format.columns",
                "is empty; list the columns or remove the key to infer them",
            ));
        }
        cols.iter()
            .enumerate()
            .map(|(i, c)| {
                let data_type = parse_sql_type(&c.sql_type).map_err(|e| {
                    Error::config(format!("format.columns[{i}].type"), e.to_string())
                })?;
                let mut col = Column::new(&c.name, data_type);
                if let Some(p) = &c.path {
                    if matches!(self.format.kind, FormatKind::Csv) {
                        return Err(Error::config(
                            format!("format.columns[{i}].path"),
                            "CSV columns are read by position; paths apply to JSON",
                        ));
                    }
                    let path: JsonPath = p.parse().map_err(|e: Error| {
                        Error::config(format!("format.columns[{i}].path"), e.to_string())
                    })?;
                    col = col.with_path(path);
                }
                Ok(col)
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// The error output: `[error_output]`, or by default, like Firehose's error prefix, the prefix
    /// `processing-failed/` of the first S3 sink's bucket, or else the local file
    /// `processing-failed/<name>.ndjson` beside the pipeline file.
    ///
    /// When a sink encrypts its output, the default error output is encrypted with the first
    /// such sink's settings (an explicit one must encrypt by itself: see `check_plaintext`).
    fn error_output_config(&self) -> SinkConfig {
        if let Some(e) = &self.error_output {
            return e.clone();
        }
        self.default_error_output()
            .encrypted_by_default(self.sinks.iter().find_map(SinkConfig::encryption))
    }

    fn default_error_output(&self) -> SinkConfig {
        let first_s3 = self
            .sinks
            .iter()
            .find(|s| matches!(s, SinkConfig::S3 { .. }));
        if let Some(SinkConfig::S3 {
            bucket,
            name,
            region,
            endpoint_url,
            server_side_encryption,
            sse_kms_key_id,
            encryption,
            ..
        }) = first_s3
        {
            return SinkConfig::S3 {
                bucket: bucket.clone(),
                prefix: "processing-failed/".into(),
                name: name.clone(),
                stream: None,
                format: ObjectFormatConfig::Json,
                compression: CompressionConfig::None,
                roll_bytes: None,
                roll_interval_ms: None,
                max_open_partitions: None,
                max_buffered_bytes: None,
                multipart_threshold: None,
                region: region.clone(),
                endpoint_url: endpoint_url.clone(),
                server_side_encryption: *server_side_encryption,
                sse_kms_key_id: sse_kms_key_id.clone(),
                encryption: encryption.clone(),
            };
        }
        SinkConfig::File {
            path: PathBuf::from("processing-failed").join(format!("{}.ndjson", self.name())),
            stream: None,
            format: EncodingConfig::Json,
            roll_bytes: None,
            roll_interval_secs: None,
            truncate: false,
            encryption: None,
        }
    }

    /// When a sink encrypts its output, the error output and the raw copy (which keep input
    /// records as they were read) must encrypt too.
    fn check_plaintext(&self) -> Result<()> {
        let Some(i) = self.sinks.iter().position(|s| s.encryption().is_some()) else {
            return Ok(());
        };
        for (key, sink) in [
            ("error_output", &self.error_output),
            ("raw_copy", &self.raw_copy),
        ] {
            if sink.as_ref().is_some_and(|s| s.encryption().is_none()) {
                return Err(Error::config(
                    key,
                    format!(
                        "sinks[{i}] encrypts its output, but {key} would keep the records it \
                         receives in clear: give it an [{key}.encryption] table (a file, \
                         firehose, kinesis or s3 sink){}",
                        if key == "error_output" {
                            ", or leave it out: the default error output is encrypted like \
                             the sinks"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where the error output goes, for messages: a path, an S3 prefix, or a sink type.
    pub fn error_output_location(&self) -> String {
        match self.error_output_config() {
            SinkConfig::File { path, .. } => self.resolve(&path).display().to_string(),
            SinkConfig::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
            SinkConfig::Stdout { .. } => "standard output".into(),
            SinkConfig::Stderr { .. } => "standard error".into(),
            SinkConfig::Firehose {
                delivery_stream, ..
            } => format!("Firehose delivery stream {delivery_stream}"),
            SinkConfig::Kinesis { stream_name, .. } => format!("Kinesis stream {stream_name}"),
        }
    }

    /// The object name prefix of an S3 sink receiving `stream`: `name`, or the pipeline's name
    /// (with the stream's name for streams other than `DESTINATION_SQL_STREAM`).
    fn s3_object_name(&self, name: &Option<String>, stream: &str) -> String {
        match name {
            Some(n) => n.clone(),
            None if stream == crate::DESTINATION_STREAM => self.name().to_owned(),
            None => format!("{}-{stream}", self.name()),
        }
    }

    /// Two S3 sinks writing the same bucket, prefix and object name would overwrite each other's
    /// objects (the names are deterministic): refused.
    fn check_s3_names(&self) -> Result<()> {
        let mut seen = std::collections::HashMap::new();
        let mut all: Vec<(String, SinkConfig, &str)> = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let stream = match s {
                    SinkConfig::S3 { stream, .. } => stream.as_deref(),
                    _ => None,
                };
                (
                    format!("sinks[{i}]"),
                    s.clone(),
                    stream.unwrap_or(crate::DESTINATION_STREAM),
                )
            })
            .collect();
        if let Some(r) = &self.raw_copy {
            all.push(("raw_copy".into(), r.clone(), crate::RAW_STREAM));
        }
        all.push((
            "error_output".into(),
            self.error_output_config(),
            crate::ERROR_STREAM,
        ));
        for (key, s, stream) in &all {
            if let SinkConfig::S3 {
                bucket,
                prefix,
                name,
                ..
            } = s
            {
                let id = (
                    bucket.clone(),
                    prefix.clone(),
                    self.s3_object_name(name, stream),
                );
                if let Some(other) = seen.insert(id, key.clone()) {
                    return Err(Error::config(
                        format!("{key}.name"),
                        format!(
                            "writes the same bucket, prefix and object names as {other}: set a \
                             different `name` or `prefix`"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The pipeline's name: `name`, or the configuration file's name without extension.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("rivulet")
    }

    /// Builds the pipeline: opens the source and sinks and plans the query. A query the engine
    /// rejects is reported against the key `query.sql`.
    pub async fn build(&self) -> Result<Pipeline> {
        self.build_with(None).await
    }

    /// The pipeline this file describes, reading `source` in place of its `[source]` table (a
    /// benchmark's load, an application's own source); the rest of the file applies as written.
    pub async fn build_with_source(&self, source: Box<dyn Source>) -> Result<Pipeline> {
        self.build_with(Some(source)).await
    }

    async fn build_with(&self, source: Option<Box<dyn Source>>) -> Result<Pipeline> {
        let app = self.kda_application()?;
        let (format, columns) = match &app {
            Some(a) => (a.format.clone(), Some(a.columns.clone())),
            None => (self.record_format()?, self.columns()?),
        };
        let source = match source {
            Some(s) => s,
            None => self.build_source(&format, columns.is_some()).await?,
        };
        let sql = self.application_sql(app.as_ref())?;
        let mut b = Pipeline::builder()
            .boxed_source(source)
            .format(format)
            .infer_sample(self.format.infer_sample)
            .sql(sql)
            .batch_settings(BatchSettings {
                max_rows: self.batch.max_rows,
                max_latency: Duration::from_millis(self.batch.max_latency_ms),
                sink_queue: self.batch.sink_queue,
            });
        if let Some(w) = self.runtime.workers {
            b = b.workers(w);
        }
        if let Some(c) = columns {
            b = b.columns(c);
        }
        let (functions, transform) = self.functions().await?;
        b = b.functions(functions);
        if let Some(t) = transform {
            b = b.shared_transform(t);
        }
        if let Some(r) = &self.format.rowtime {
            b = b.rowtime_field(r.clone());
        }
        if let Some(m) = self.format.max_record_bytes {
            b = b.max_record_bytes(m);
        }
        for s in &self.sinks {
            let stream = s.stream().unwrap_or(crate::DESTINATION_STREAM);
            b = b.boxed_sink_for(stream, self.build_sink(s, stream).await?);
        }
        b = b.watermark(WatermarkSettings {
            allowed_lateness: Duration::from_millis(self.query.allowed_lateness_ms),
            idle_timeout: Duration::from_millis(self.query.idle_timeout_ms),
            max_future: Duration::from_millis(self.query.max_future_ms),
            max_alignment: (self.query.max_alignment_ms > 0)
                .then(|| Duration::from_millis(self.query.max_alignment_ms)),
        });
        let errors = self.error_output_config();
        b = b.boxed_error_output(self.build_sink(&errors, crate::ERROR_STREAM).await?);
        if let Some(r) = &self.raw_copy {
            b = b.boxed_raw_copy(self.build_sink(r, crate::RAW_STREAM).await?);
        }
        if let Some(c) = &self.checkpoint {
            b = b
                .checkpoint_store(crate::checkpoint::FileCheckpointStore::new(
                    self.resolve(&c.path),
                ))
                .checkpoint_interval(Duration::from_millis(c.interval_ms));
        }
        b.build().await.map_err(|e| match e {
            Error::Sql(message) => Error::config("query.sql", message),
            Error::Config { key, message } if key == "sinks" => Error::config("sinks", message),
            Error::Format(message) => Error::config("format", message),
            other => other,
        })
    }

    /// The query's SQL: `sql`, `sql_file`, or the KDA application file's code (with its
    /// application code turned into rivulet's, when an application file is given).
    fn application_sql(&self, app: Option<&crate::KdaApplication>) -> Result<String> {
        let code = match (&self.query.sql, &self.query.sql_file) {
            (Some(s), _) => s.clone(),
            (None, Some(f)) => {
                let p = self.resolve(f);
                std::fs::read_to_string(&p)
                    .map_err(|e| Error::io(format!("reading {}", p.display()), e))?
            }
            (None, None) => match app.and_then(|a| a.sql.clone()) {
                Some(code) => code,
                None if app.is_some() => {
                    return Err(Error::config(
                        "query.application",
                        "the application file holds no application code: give it with \
                         `sql` or `sql_file`",
                    ))
                }
                None => "SELECT * FROM source".to_owned(),
            },
        };
        match app {
            Some(a) => a.code(&code),
            None => Ok(code),
        }
    }
}
