//! Sources: where records come from.
//!
//! A [`Source`] yields [`SourceBatch`]es: records plus the [`Position`] the source has reached after
//! them. The pipeline hands positions back through [`Source::commit`] once everything derived from
//! the records before them has been stored by every sink; that is where a source persists its
//! checkpoint.

mod file;
mod generator;

use std::fmt::Debug;

use async_trait::async_trait;

pub use file::{FileSource, FileSourceBuilder, Framing};
pub use generator::{GeneratorFormat, GeneratorSource, GeneratorSourceBuilder};

use crate::metrics::SourceHealth;
use crate::record::{Position, Record};
use crate::{Error, Result};
use std::sync::Arc;

/// Records read from a source, with the position reached after them.
#[derive(Debug, Clone, Default)]
pub struct SourceBatch {
    /// The records, in source order.
    pub records: Vec<Record>,
    /// The position after the last record; committing it means none of these is read again.
    pub position: Position,
}

/// A stream of records.
///
/// Implementations must be cancel safe in one sense: the pipeline may drop a pending
/// [`next_batch`](Source::next_batch) future at shutdown. Records not yet returned are simply read
/// again after a restart, from the last committed position.
#[async_trait]
pub trait Source: Send + Debug {
    /// A short name for logs and errors.
    fn name(&self) -> &str;

    /// The next records. `Ok(None)` means a finite source has ended. An idle unbounded source should
    /// return an empty batch every few hundred milliseconds rather than block indefinitely, so that
    /// commits and time-based batching keep flowing.
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>>;

    /// The pipeline's micro-batch size: a source that can cut its batches there saves the
    /// pipeline from copying records between batches. The default ignores it.
    fn set_max_batch_records(&mut self, max: usize) {
        let _ = max;
    }

    /// Continues after `position`, which this source produced in an earlier run (read back from a
    /// checkpoint). Called once, before the first [`next_batch`](Source::next_batch). The default
    /// accepts only an empty position: such a source cannot resume.
    async fn resume(&mut self, position: &Position) -> Result<()> {
        if position.is_empty() {
            return Ok(());
        }
        Err(Error::source(
            self.name(),
            "this source cannot resume from a checkpoint",
        ))
    }

    /// Live per-partition health (lag, throttling), for sources that have partitions.
    fn health(&self) -> Option<Arc<SourceHealth>> {
        None
    }

    /// Every record up to `position` has been processed and its output stored. A source with
    /// checkpoints persists `position` here. The default does nothing.
    async fn commit(&mut self, position: &Position) -> Result<()> {
        let _ = position;
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
