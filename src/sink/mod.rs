//! Sinks: where output goes.
//!
//! A [`Sink`] accepts [`OutputBatch`]es — Arrow rows or already-encoded records — and acknowledges each
//! through its [`Ack`] once the data is stored. Acknowledgements drive checkpoints: a sink must never
//! acknowledge before the write that stores the data has succeeded, and must drop the `Ack` without
//! acknowledging when it gives up on the data.

mod error_output;
mod file;
mod memory;
mod stdout;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;

pub use error_output::{error_schema, ErrorRecord, ErrorStage, ERROR_STREAM};
pub use file::{FileSink, FileSinkBuilder};
pub use memory::{MemorySink, MemorySinkHandle, NullSink};
pub use stdout::StdoutSink;

use crate::ack::Ack;
use crate::format::Encoder;
use crate::Result;

/// Name of the output stream of a single-statement query.
pub const DESTINATION_STREAM: &str = "DESTINATION_SQL_STREAM";

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

/// A destination for output.
#[async_trait]
pub trait Sink: Send + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> &str;

    /// Accepts a batch. The sink may store it now or buffer it; either way it acknowledges
    /// `batch.ack` only once the data is stored. An error stops the pipeline.
    async fn write(&mut self, batch: OutputBatch) -> Result<()>;

    /// Stores everything accepted so far and acknowledges it. Called when the pipeline is idle, at
    /// least once a second, and before it stops; time-based rolling and buffering deadlines can be
    /// checked here.
    async fn flush(&mut self) -> Result<()>;
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
