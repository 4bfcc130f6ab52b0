//! The stateful stream operators a statement can have between its per-batch plans, behind one
//! trait: group windows (tumbling, hopping, session and stagger windows of a `GROUP BY`, in
//! [`group`]) and `OVER` windows (sliding aggregates, in [`over`]).
//!
//! A windowed statement runs as `pre` (a DataFusion plan run on every micro-batch) → operator →
//! `post` (a plan run on what the operator emits). The operator keeps state across micro-batches,
//! tracks the event-time watermark of what it was given, emits rows once the watermark passes
//! them, and saves and restores its state for checkpoints.

mod group;
mod over;

use std::time::Instant;

use arrow::array::RecordBatch;

pub(crate) use group::{
    BatchContext, GroupColumn, RowIssue, WindowAggregate, WindowAggregatePlan, WindowSpec,
};
pub(crate) use over::{OverAggregate, OverPlan};

use super::watermark::{PartitionTable, WatermarkTracker};
use crate::Result;

/// A stateful operator of a streaming statement.
///
/// The program calls [`process_batch`](Self::process_batch) with each micro-batch's rows (as the
/// `pre` plan produced them), then [`on_time`](Self::on_time) (or [`finish`](Self::finish) at the
/// end of the input) and takes what is ready with [`emit_ready`](Self::emit_ready).
pub(crate) trait StreamOperator: Send {
    /// Takes a micro-batch's rows into the state; the rows it refuses (late, without a time),
    /// with why.
    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &BatchContext<'_>,
    ) -> Result<Vec<RowIssue>>;

    /// Lets the watermark move on with the wall clock and the source's partitions (idle ones
    /// stop holding it back).
    fn on_time(&mut self, now: Instant, table: &PartitionTable);

    /// The input has ended: everything still open becomes ready.
    fn finish(&mut self);

    /// Rows ready to leave the operator (a group window gives one batch per window).
    fn emit_ready(&mut self) -> Result<Vec<RecordBatch>>;

    /// Emitted rows that carry a value the operator could not compute, with the reason; they go
    /// to the error output too.
    fn take_emit_issues(&mut self) -> Vec<(RecordBatch, String)> {
        Vec::new()
    }

    /// The operator's event-time watermark.
    fn watermark(&self) -> &WatermarkTracker;

    /// Window states (or partitions) held open.
    fn live_states(&self) -> usize;

    /// The oldest micro-batch whose rows the state still holds (its acknowledgement waits).
    fn oldest_seq(&self) -> Option<u64>;

    /// The state, for a checkpoint.
    fn snapshot(&mut self) -> Result<Vec<u8>>;

    /// Puts back a state [`snapshot`](Self::snapshot) gave.
    fn restore(&mut self, bytes: &[u8]) -> Result<()>;

    /// One line for `EXPLAIN`: the window, its time, keys and aggregates.
    fn describe(&self) -> String;
}
