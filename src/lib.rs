//! # rivulet
//!
//! Streaming analytics on AWS data streams, as a library: records from a source (Kinesis, a file,
//! the built-in generator) are decoded into Apache Arrow micro-batches, transformed with SQL on
//! Apache DataFusion, and written to sinks, with every record that cannot be processed sent to an
//! error output with its reason. Sinks acknowledge what they have stored, and those
//! acknowledgements drive the source's checkpoints.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rivulet::Result<()> {
//! use rivulet::{GeneratorSource, MemorySink, Pipeline};
//!
//! let sink = MemorySink::new();
//! let output = sink.handle();
//! let report = Pipeline::builder()
//!     .source(GeneratorSource::builder().with_limit(Some(500)).build()?)
//!     .sql("SELECT ticker_symbol, price FROM SOURCE_SQL_STREAM_001 WHERE price > 100")
//!     .sink(sink)
//!     .build()
//!     .await?
//!     .run()
//!     .await?;
//! assert_eq!(report.metrics.records_in, 500);
//! assert_eq!(output.num_rows() as u64, report.metrics.rows_out);
//! # Ok(()) }
//! ```
//!
//! The parts, from input to output: [`Source`] and [`Record`] (the Kinesis source is in
//! [`kinesis`], with the `aws` feature); [`RecordDecoder`] and [`RecordFormat`]; [`SqlProgram`]
//! (streaming SQL with event-time windows, see the `sql` notes in the README) and [`StreamQuery`];
//! [`Sink`], [`OutputBatch`] and [`Ack`]; [`CheckpointStore`] for resuming after a stop or a crash;
//! [`Pipeline`] ties them together, and [`PipelineConfig`] builds one from a TOML file.

mod ack;
#[cfg(feature = "aws")]
mod aws;
pub mod bench;
mod checkpoint;
mod config;
#[cfg(feature = "aws")]
pub mod crypto;
pub mod discover;
mod error;
mod format;
#[cfg(test)]
mod fuzz;
mod kda;
#[cfg(feature = "aws")]
pub mod kinesis;
#[cfg(feature = "aws")]
pub use kinesis::kpl;
mod metrics;
mod pipeline;
mod record;
#[cfg(feature = "setup")]
pub mod setup;
mod sink;
mod source;
mod sql;
pub mod transform;
#[cfg(feature = "wasm")]
pub mod wasm;

pub use ack::{Ack, AckReceipt, AckStatus};
pub use checkpoint::{Checkpoint, CheckpointStore, FileCheckpointStore};

pub use config::{PipelineConfig, ReplayOptions};
pub use error::{Error, Result};
pub use format::{
    infer_schema, parse_sql_type, Column, CsvOptions, DecodeFailure, DecodeOutput, Encoder,
    FailureKind, JsonPath, MetadataColumn, OutputFormat, RecordDecoder, RecordDecoderBuilder,
    RecordFormat, DEFAULT_MAX_RECORD_BYTES, MIN_ROWS_PER_WORKER, PROCESSING_ROWTIME, ROWTIME,
};
pub use kda::{KdaApplication, KdaReference};
#[cfg(feature = "aws")]
pub use kinesis::{KinesisSink, KinesisSinkBuilder};
pub use metrics::{MetricsSnapshot, PartitionHealth, PipelineMetrics, SourceHealth};
pub use pipeline::{
    BatchSettings, Pipeline, PipelineBuilder, PipelineReport, ShutdownHandle,
    DEFAULT_CHECKPOINT_INTERVAL,
};
pub use record::{
    Position, Record, RecordId, Rejection, DESTINATION_STREAM, ERROR_STREAM, RAW_STREAM,
    SOURCE_ALIAS, SOURCE_STREAM,
};
pub use sink::{
    error_schema, CheckpointRange, CheckpointRanges, ErrorOutput, ErrorRecord, ErrorStage,
    FileSink, FileSinkBuilder, MemorySink, MemorySinkHandle, NullSink, OutputBatch, OutputData,
    Sink, StdoutSink,
};
#[cfg(feature = "aws")]
pub use sink::{Compression, ObjectFormat, S3Sink, S3SinkBuilder, ServerSideEncryption};
#[cfg(feature = "aws")]
pub use sink::{DeliverySettings, FirehoseSink, FirehoseSinkBuilder};
pub use transform::{FnTransform, RecordTransform, Transformed};

/// Amazon Data Firehose: the sink and the service limits it batches by.
#[cfg(feature = "aws")]
pub mod firehose {
    pub use crate::sink::{
        plan_requests, DeliverySettings, FirehoseSink, FirehoseSinkBuilder, RequestPlan,
        MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, MAX_RECORD_BYTES,
    };
}
/// Amazon S3: the sink, its formats, and the limits and defaults it works with.
#[cfg(feature = "aws")]
pub mod s3 {
    pub use crate::aws::s3::{decompress, get_object, get_object_with};
    pub use crate::sink::abort_uploads_in_progress;
    pub use crate::sink::s3_limits::*;
    pub use crate::sink::{Compression, ObjectFormat, S3Sink, S3SinkBuilder, ServerSideEncryption};
}
pub use source::{
    FileSource, FileSourceBuilder, Framing, GeneratorFormat, GeneratorSource,
    GeneratorSourceBuilder, PartitionAlignment, PartitionEvent, PushHandle, PushReceipt,
    PushSource, PushSourceOptions, PushedError, Source, SourceBatch, TryPush, DEFAULT_PARTITION,
    DEFAULT_PUSH_MAX_BYTES, DEFAULT_PUSH_MAX_RECORDS,
};
pub use sql::{
    QueryOutput, RowFailure, SqlFunctions, SqlIssue, SqlOutput, SqlProgram, StreamQuery,
    WatermarkSettings, MAX_BUILT_ARRAY_ELEMENTS, MAX_BUILT_VALUE_BYTES, SQL_MEMORY_LIMIT,
};
