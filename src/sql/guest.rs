//! Aggregates whose calls can fail a whole batch (WASM guests' aggregates), as the window
//! operator sees them.
//!
//! The window operator updates such an aggregate in two phases so that a failing call leaves
//! every aggregate of the batch as it was: it first has each one [`prepare`](PhasedGroups::prepare)
//! its new states for the batch, and stores them ([`commit`](PhasedGroups::commit)) only when all
//! succeeded. An aggregate takes part by returning its groups accumulator wrapped in
//! [`GuestGroups`] from `create_groups_accumulator`; the operator recognises the wrapper and nothing
//! else of the aggregate, so the engine does not depend on the code that implements it.

#![cfg_attr(not(feature = "wasm"), allow(dead_code))]

use std::any::Any;
use std::fmt::Debug;

use arrow::array::{ArrayRef, BooleanArray};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

/// An update computed by [`PhasedGroups::prepare`] and not yet stored; only the accumulator
/// that made it reads it.
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
pub(crate) type PreparedUpdate = Box<dyn Any + Send>;

/// A groups accumulator whose update can fail a batch, updated in two phases.
pub(crate) trait PhasedGroups: GroupsAccumulator + Debug {
    /// The new states an update of `group_indices` by `values` gives, without storing them
    /// (`None` when the update touches no group).
    fn prepare(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<Option<PreparedUpdate>>;

    /// Stores what [`prepare`](Self::prepare) computed.
    fn commit(&mut self, update: PreparedUpdate);

    /// Makes room for `total_num_groups` groups without updating any.
    fn grow(&mut self, total_num_groups: usize);
}

/// The groups accumulator of an aggregate whose calls can fail a batch.
#[derive(Debug)]
pub(crate) struct GuestGroups(Box<dyn PhasedGroups>);

impl GuestGroups {
    pub(crate) fn new(groups: impl PhasedGroups + 'static) -> Self {
        Self(Box::new(groups))
    }

    /// The two-phase interface behind `acc`, when it is a guest aggregate's accumulator.
    pub(crate) fn of(acc: &mut Box<dyn GroupsAccumulator>) -> Option<&mut dyn PhasedGroups> {
        let any: &mut dyn Any = acc.as_mut();
        any.downcast_mut::<Self>().map(|g| g.0.as_mut())
    }

    /// Whether `acc` is a guest aggregate's accumulator.
    pub(crate) fn is(acc: &dyn GroupsAccumulator) -> bool {
        let any: &dyn Any = acc;
        any.is::<Self>()
    }

    /// Whether `agg` is an aggregate whose calls can fail a whole batch (asked once, when a
    /// window operator is planned: it makes an accumulator).
    pub(crate) fn is_guest(agg: &AggregateFunctionExpr) -> bool {
        agg.groups_accumulator_supported()
            && agg
                .create_groups_accumulator()
                .is_ok_and(|acc| Self::is(acc.as_ref()))
    }
}

impl GroupsAccumulator for GuestGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.0
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        self.0.evaluate(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        self.0.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.0.merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        self.0.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.0.size()
    }
}
