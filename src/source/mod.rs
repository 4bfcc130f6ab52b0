//! Sources: where records come from.
//!
//! A [`Source`] yields [`SourceBatch`]es: records plus the [`Position`] the source has reached after
//! them. The pipeline hands positions back through [`Source::commit`] once everything derived from
//! the records before them has been stored by every sink; that is where a source persists its
//! checkpoint.
//!
//! # Partitions
//!
//! A source reads one or more *partitions* (Kinesis shards; a file or the generator is one
//! partition). Event time is tracked per partition, and a window closes only once every partition
//! that may still hold rows for it has moved past it. For that the pipeline must know the
//! partitions before their first row, so a source *declares* them, and says how each stands, with
//! the [`PartitionEvent`]s of its [`SourceBatch`]es:
//!
//! - [`PartitionEvent::Declared`]: the source will read this partition (a shard assigned to it, a
//!   child shard waiting for its parents). From then on, until it has rows, the partition holds the
//!   watermark back: at its parents' event time when it has parents, else at the very start. A
//!   source declares every partition it will read as soon as it knows it, before it reads any.
//! - [`PartitionEvent::Reading`]: records are being read (the default state after a declaration).
//! - [`PartitionEvent::CaughtUp`]: the partition is read to its tip (a Kinesis page that came back
//!   empty with `MillisBehindLatest` 0). A partition caught up and then quiet for the idle timeout
//!   no longer holds the watermark back; records from it make it [`Reading`](PartitionEvent::Reading)
//!   again. A partition that is slow to answer or throttled is *not* caught up.
//! - [`PartitionEvent::Finished`]: read to its end (Kinesis `SHARD_END`), with the partitions that
//!   continue it. It stops holding the watermark back once those are declared.
//!
//! The events of a batch describe the partitions as they stand *after* the batch's records. A
//! source that declares nothing keeps the older rule: a partition is known from its first row and
//! idle after `idle_timeout` without rows. Records whose shard id is unset belong to the partition
//! named [`DEFAULT_PARTITION`].
//!
//! A source that gains and loses partitions at run time (leases) declares a partition when it gains
//! it; one it loses it reports as finished without children.

mod file;
mod generator;
mod push;

use std::fmt::Debug;

use async_trait::async_trait;

pub use file::{FileSource, FileSourceBuilder, Framing};
pub(crate) use generator::paced;
pub use generator::{GeneratorFormat, GeneratorSource, GeneratorSourceBuilder};
pub(crate) use push::PushErrors;
pub use push::{
    PushHandle, PushReceipt, PushSource, PushSourceOptions, PushedError, TryPush,
    DEFAULT_PUSH_MAX_BYTES, DEFAULT_PUSH_MAX_RECORDS,
};

use crate::metrics::SourceHealth;
use crate::record::{Position, Record};
use crate::{Error, Result};
use std::sync::Arc;

/// Which partitions should pause their reads because their event time runs too far ahead of the
/// pipeline's watermark (catch-up alignment, `[query] max_alignment_ms`).
///
/// The pipeline sets it after each micro-batch; a source with several partitions checks
/// [`is_paused`](Self::is_paused) before each read of a partition and waits while it is. A paused
/// partition is never the one holding the watermark back, so the pipeline always moves on.
#[derive(Debug, Default)]
pub struct PartitionAlignment {
    paused: std::sync::RwLock<std::collections::HashSet<Arc<str>>>,
}

impl PartitionAlignment {
    /// Whether reads of `partition` should wait.
    pub fn is_paused(&self, partition: &str) -> bool {
        self.paused
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(partition)
    }

    /// Pauses exactly the partitions in `paused`.
    pub(crate) fn set(&self, paused: std::collections::HashSet<Arc<str>>) {
        let mut now = self
            .paused
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *now != paused {
            *now = paused;
        }
    }
}

/// The partition of records whose shard id is unset (a file, the generator).
pub const DEFAULT_PARTITION: &str = "";

/// What a source tells the pipeline about one of its partitions (see [the module
/// docs](self#partitions)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionEvent {
    /// The source will read `partition`. `parents` are the partitions it continues (a child
    /// shard's parents), whose event time it starts at.
    Declared {
        /// The partition (a shard id; [`DEFAULT_PARTITION`] for records without one).
        partition: Arc<str>,
        /// The partitions this one continues; empty for an original partition.
        parents: Vec<Arc<str>>,
    },
    /// Records of the partition are being read.
    Reading(Arc<str>),
    /// The partition is read to its tip: nothing newer was there.
    CaughtUp(Arc<str>),
    /// The partition is read to its end and will have no more records. `children` continue it.
    Finished {
        /// The partition.
        partition: Arc<str>,
        /// The partitions that continue it (a closed shard's children); empty when none do.
        children: Vec<Arc<str>>,
    },
}

impl PartitionEvent {
    /// A partition declared without parents.
    pub fn declared(partition: impl Into<Arc<str>>) -> Self {
        Self::Declared {
            partition: partition.into(),
            parents: Vec::new(),
        }
    }

    /// The partition the event is about.
    pub fn partition(&self) -> &str {
        match self {
            Self::Declared { partition, .. } | Self::Finished { partition, .. } => partition,
            Self::Reading(p) | Self::CaughtUp(p) => p,
        }
    }
}

/// Records read from a source, with the position reached after them.
#[derive(Debug, Clone, Default)]
pub struct SourceBatch {
    /// The records, in source order.
    pub records: Vec<Record>,
    /// The position after the last record; committing it means none of these is read again.
    pub position: Position,
    /// How the source's partitions stand after these records (declarations, caught up,
    /// finished); see [the module docs](self#partitions). Empty when nothing changed.
    pub partitions: Vec<PartitionEvent>,
}

impl SourceBatch {
    /// A batch of records ending at `position`, with no partition events.
    pub fn new(records: Vec<Record>, position: Position) -> Self {
        Self {
            records,
            position,
            partitions: Vec::new(),
        }
    }

    /// Adds partition events.
    pub fn with_partitions(mut self, events: impl IntoIterator<Item = PartitionEvent>) -> Self {
        self.partitions.extend(events);
        self
    }
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

    /// The pipeline's largest record (`max_record_bytes`): a source that frames records itself
    /// should stop framing one at this size, so a record without an end cannot grow its memory,
    /// and set it aside ([`Record::with_rejection`](crate::Record::with_rejection)) for the error
    /// output. The default ignores it.
    fn set_max_record_bytes(&mut self, max: usize) {
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

    /// Takes the pipeline's catch-up alignment: partitions it pauses should not be read until it
    /// lets them go. Called once, before the first batch, for a pipeline with windows. The default
    /// ignores it (a source with one partition has nothing to align).
    fn set_alignment(&mut self, alignment: Arc<PartitionAlignment>) {
        let _ = alignment;
    }

    /// Live per-partition health (lag, throttling, paused for alignment), for sources that have
    /// partitions.
    fn health(&self) -> Option<Arc<SourceHealth>> {
        None
    }

    /// A graceful stop was requested ([`ShutdownHandle`](crate::ShutdownHandle)). A source that
    /// holds records it has accepted and that nobody can read again (a push source) stops taking
    /// more, returns `true`, and then returns what it holds from
    /// [`next_batch`](Source::next_batch) until `Ok(None)`: the pipeline processes and stores all
    /// of it before it stops. The default returns `false`: the source is read no further, and
    /// what it has not returned is read again after a restart.
    fn drain_on_shutdown(&mut self) -> bool {
        false
    }

    /// Every record up to `position` has been processed and its output stored. A source with
    /// checkpoints persists `position` here. The default does nothing.
    async fn commit(&mut self, position: &Position) -> Result<()> {
        let _ = position;
        Ok(())
    }
}
