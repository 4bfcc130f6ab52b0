//! Sinks: where output goes.
//!
//! A [`Sink`] accepts [`OutputBatch`]es — Arrow rows or already-encoded records — and acknowledges each
//! through its [`Ack`] once the data is stored. Acknowledgements drive checkpoints: a sink must never
//! acknowledge before the write that stores the data has succeeded, and must drop the `Ack` without
//! acknowledging when it gives up on the data.

#[cfg(feature = "aws")]
pub(crate) mod delivery;
mod error_output;
mod file;
#[cfg(feature = "aws")]
mod firehose;
mod memory;
#[cfg(feature = "aws")]
mod prefix;
#[cfg(feature = "aws")]
mod s3;
mod stdout;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;

#[cfg(feature = "aws")]
pub use delivery::DeliverySettings;
pub(crate) use error_output::KdaErrorColumns;
pub use error_output::{error_schema, ErrorRecord, ErrorStage};
pub use file::{FileSink, FileSinkBuilder};
#[cfg(feature = "aws")]
pub use firehose::{
    plan_requests, FirehoseSink, FirehoseSinkBuilder, RequestPlan, MAX_BYTES_PER_CALL,
    MAX_RECORDS_PER_CALL, MAX_RECORD_BYTES,
};
#[cfg(feature = "aws")]
pub use s3::{
    abort_uploads_in_progress, Compression, ObjectFormat, S3Sink, S3SinkBuilder,
    ServerSideEncryption,
};
/// The S3 sink's limits and defaults (re-exported as `rivulet::s3`).
#[cfg(feature = "aws")]
pub(crate) mod s3_limits {
    pub use super::s3::{
        DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_OPEN_PARTITIONS, DEFAULT_MULTIPART_THRESHOLD,
        DEFAULT_ROLL_BYTES, DEFAULT_ROLL_INTERVAL, MAX_PUT_BYTES, MIN_PART_BYTES,
    };
}
pub use memory::{MemorySink, MemorySinkHandle, NullSink};
pub use stdout::StdoutSink;

use crate::ack::Ack;
use crate::format::Encoder;
use crate::record::ERROR_STREAM;
use crate::{Error, Result};

/// The content of an [`OutputBatch`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OutputData {
    /// Rows, to be encoded by the sink.
    Rows(RecordBatch),
    /// Records already encoded (e.g. a raw copy of the input); each is one output record.
    Encoded(Vec<Bytes>),
}

impl OutputData {
    /// Number of rows or records.
    pub fn len(&self) -> usize {
        match self {
            Self::Rows(b) => b.num_rows(),
            Self::Encoded(v) => v.len(),
        }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Output for a sink: data of one stream and the handle to acknowledge once it is stored.
#[derive(Debug)]
pub struct OutputBatch {
    /// The output stream the data belongs to (`DESTINATION_SQL_STREAM`, `error_stream`, …).
    pub stream: Arc<str>,
    /// The data.
    pub data: OutputData,
    /// Acknowledge once stored; drop unacknowledged to give up on the data.
    pub ack: Ack,
}

impl OutputBatch {
    /// Rows of `stream`, untracked: for using a sink outside a pipeline.
    pub fn rows(stream: &str, batch: RecordBatch) -> Self {
        Self {
            stream: Arc::from(stream),
            data: OutputData::Rows(batch),
            ack: Ack::untracked(),
        }
    }
}

/// The pipeline's error output, as a sink sees it: where a sink puts records it gives up on
/// (too large for the service, or still failing after every retry).
#[derive(Debug, Clone)]
pub struct ErrorOutput {
    tx: tokio::sync::mpsc::Sender<OutputBatch>,
}

impl ErrorOutput {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<OutputBatch>) -> Self {
        Self { tx }
    }

    /// An error output whose batches arrive on the returned receiver: for testing a sink, or for
    /// using one outside a pipeline. `capacity` batches are buffered.
    pub fn channel(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<OutputBatch>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Sends `errors` to the error output; `ack` is acknowledged once they are stored there.
    pub async fn send(&self, errors: Vec<ErrorRecord>, ack: Ack) -> Result<()> {
        let batch = OutputBatch {
            stream: Arc::from(ERROR_STREAM),
            data: OutputData::Rows(ErrorRecord::to_batch(&errors, crate::record::now_ms())),
            ack,
        };
        self.tx
            .send(batch)
            .await
            .map_err(|_| Error::Pipeline("the error output has stopped".into()))
    }
}

/// A stretch of output between two checkpoints: what a replay after a crash produces again.
///
/// Sinks that name what they write (the S3 sink) derive names from the range and a counter, so
/// that a replay from the range's checkpoint writes under the same names, overwriting instead of
/// duplicating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRange {
    /// 16 hex digits identifying the checkpoint the range starts from.
    pub id: Arc<str>,
    /// When that checkpoint was taken (or the run started, without one), milliseconds since the
    /// epoch.
    pub started_ms: i64,
}

impl CheckpointRange {
    /// The range starting after `position`, checkpointed at `at_ms`.
    pub fn after(position: &crate::Position, at_ms: i64) -> Self {
        use md5::Digest as _;
        let mut h = md5::Md5::new();
        for (partition, offset) in position.iter() {
            h.update((partition.len() as u64).to_be_bytes());
            h.update(partition.as_bytes());
            h.update((offset.len() as u64).to_be_bytes());
            h.update(offset.as_bytes());
        }
        h.update(at_ms.to_be_bytes());
        let digest = h.finalize();
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id: Arc::from(id),
            started_ms: at_ms,
        }
    }
}

/// The checkpoint range output currently belongs to, as the pipeline moves it on.
#[derive(Debug, Clone)]
pub struct CheckpointRanges {
    rx: tokio::sync::watch::Receiver<CheckpointRange>,
}

impl CheckpointRanges {
    /// A range that never changes: for using a sink outside a pipeline.
    pub fn fixed(range: CheckpointRange) -> Self {
        Self::channel(range).1
    }

    pub(crate) fn channel(
        initial: CheckpointRange,
    ) -> (tokio::sync::watch::Sender<CheckpointRange>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(initial);
        (tx, Self { rx })
    }

    /// The current range.
    pub fn current(&self) -> CheckpointRange {
        self.rx.borrow().clone()
    }
}

/// A destination for output.
#[async_trait]
pub trait Sink: Send + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> &str;

    /// Gives the sink the pipeline's error output, for records it cannot deliver. Called once,
    /// before the first write. The default ignores it.
    fn set_error_output(&mut self, errors: ErrorOutput) {
        let _ = errors;
    }

    /// Gives the sink the pipeline's checkpoint ranges, for naming output deterministically.
    /// Called once, before the first write. The default ignores it.
    fn set_checkpoint_ranges(&mut self, ranges: CheckpointRanges) {
        let _ = ranges;
    }

    /// Accepts a batch. The sink may store it now or buffer it; either way it acknowledges
    /// `batch.ack` only once the data is stored. An error stops the pipeline.
    async fn write(&mut self, batch: OutputBatch) -> Result<()>;

    /// Stores what is due and acknowledges it. Called when the pipeline is idle and at least once a
    /// second: most sinks store everything accepted so far; a buffering sink (the S3 sink) may
    /// keep data until its buffering deadline, which it checks here. [`finish`](Sink::finish)
    /// stores the rest before the pipeline stops.
    async fn flush(&mut self) -> Result<()>;

    /// Stores everything accepted so far before the pipeline stops. Sinks that hold data beyond a
    /// flush (the S3 sink buffers objects until they are due) store it all here. The default
    /// flushes.
    async fn finish(&mut self) -> Result<()> {
        self.flush().await
    }
}

/// Encodes the data of a batch as newline-terminated bytes.
pub(crate) fn encode_data(
    encoder: &Encoder,
    data: &OutputData,
    first: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    match data {
        OutputData::Rows(b) => encoder.encode(b, first, out),
        OutputData::Encoded(records) => {
            for r in records {
                out.extend_from_slice(r);
                if !r.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            Ok(())
        }
    }
}
