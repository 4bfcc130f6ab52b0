//! WASM functions as DataFusion scalar functions and aggregates, and as record transforms.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use bytes::Bytes;
use datafusion::common::{plan_err, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDFImpl, Signature, Volatility,
};

use super::abi::{self, FunctionDescription};
use super::engine::{CallFailure, Instances};
use crate::record::Record;
use crate::sql::{BatchFailure, GuestGroups, PhasedGroups, PreparedUpdate};
use crate::transform::{RecordTransform, Transformed};

/// `Debug`, `PartialEq`, `Eq` and `Hash` of a function of a module: it is the same function when
/// it is the same description in the same module.
macro_rules! identity_by_module_and_description {
    ($t:ident) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("module", &self.instances.module().name())
                    .field("function", &self.desc)
                    .finish_non_exhaustive()
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.instances, &other.instances) && self.desc == other.desc
            }
        }

        impl Eq for $t {}

        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.instances.module().name().hash(state);
                self.desc.hash(state);
            }
        }
    };
}

/// A scalar function of a [`WasmModule`](super::WasmModule), callable from SQL by its name.
pub struct WasmScalarFunction {
    instances: Arc<Instances>,
    desc: FunctionDescription,
    signature: Signature,
}

identity_by_module_and_description!(WasmScalarFunction);

impl WasmScalarFunction {
    pub(crate) fn new(instances: Arc<Instances>, desc: FunctionDescription) -> Self {
        Self {
            instances,
            desc,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// What the module says about the function.
    pub fn description(&self) -> &FunctionDescription {
        &self.desc
    }
}

impl ScalarUDFImpl for WasmScalarFunction {
    fn name(&self) -> &str {
        &self.desc.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        coerce(&self.desc, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.desc.returns.data_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let mut arrays = Vec::with_capacity(args.args.len());
        for value in &args.args {
            arrays.push(value.to_array(rows)?);
        }
        let arrays = cast_args(&self.desc, arrays)?;
        let result = self
            .instances
            .with(|m, live| m.call(live, &self.desc, &arrays, rows));
        Ok(ColumnarValue::Array(
            result.map_err(|e| failure("function", &self.desc, e))?,
        ))
    }
}

/// The argument types the function declares, for DataFusion's coercion.
fn coerce(desc: &FunctionDescription, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
    if arg_types.len() != desc.args.len() {
        return plan_err!(
            "WASM {} `{}` takes {} arguments, not {}",
            if desc.kind == abi::FunctionKind::Aggregate {
                "aggregate"
            } else {
                "function"
            },
            desc.name,
            desc.args.len(),
            arg_types.len()
        );
    }
    Ok(desc.args.iter().map(|t| t.data_type()).collect())
}

/// `arrays` cast to the declared argument types where they differ.
fn cast_args(desc: &FunctionDescription, arrays: Vec<ArrayRef>) -> DfResult<Vec<ArrayRef>> {
    arrays
        .into_iter()
        .zip(&desc.args)
        .map(|(a, ty)| {
            let want = ty.data_type();
            Ok(if a.data_type() == &want {
                a
            } else {
                arrow::compute::cast(&a, &want)?
            })
        })
        .collect()
}

/// A failed call as an error that fails the batch's rows.
fn failure(what: &str, desc: &FunctionDescription, e: CallFailure) -> DataFusionError {
    match e {
        CallFailure::Broken(reason) => {
            batch_failure(format!("WASM {what} `{}` failed: {reason}", desc.name))
        }
        CallFailure::Guest(message) => {
            batch_failure(format!("WASM {what} `{}` reported: {message}", desc.name))
        }
    }
}

/// An aggregate of a [`WasmModule`](super::WasmModule), callable from SQL by its name, in
/// windowed and plain `GROUP BY` queries.
///
/// Its state is bytes the guest defines and the host keeps: one value per group, in the window's
/// state and in checkpoints (a binary state column). A call that fails changes no state.
pub struct WasmAggregateFunction {
    instances: Arc<Instances>,
    desc: FunctionDescription,
    signature: Signature,
}

identity_by_module_and_description!(WasmAggregateFunction);

impl WasmAggregateFunction {
    pub(crate) fn new(instances: Arc<Instances>, desc: FunctionDescription) -> Self {
        Self {
            instances,
            desc,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// What the module says about the aggregate.
    pub fn description(&self) -> &FunctionDescription {
        &self.desc
    }

    fn groups(&self) -> WasmGroups {
        WasmGroups {
            instances: Arc::clone(&self.instances),
            desc: self.desc.clone(),
            states: Vec::new(),
            bytes: 0,
            dense: Vec::new(),
        }
    }
}

impl AggregateUDFImpl for WasmAggregateFunction {
    fn name(&self) -> &str {
        &self.desc.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        coerce(&self.desc, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.desc.returns.data_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "wasm_state"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(WasmAccumulator(self.groups())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(GuestGroups::new(self.groups())))
    }
}

/// The state of a WASM aggregate for many groups: each group's state bytes (`None` until the
/// group has been updated). One guest call per batch, whatever the number of groups.
pub(crate) struct WasmGroups {
    instances: Arc<Instances>,
    desc: FunctionDescription,
    states: Vec<Option<Bytes>>,
    /// Total bytes of `states`.
    bytes: usize,
    /// Scratch: group index → dense index of the groups a batch touches (`u32::MAX`: none).
    dense: Vec<u32>,
}

impl std::fmt::Debug for WasmGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmGroups")
            .field("function", &self.desc.name)
            .field("groups", &self.states.len())
            .finish_non_exhaustive()
    }
}

impl WasmGroups {
    /// Runs an update (or a merge of partial states) for rows in `group_indices`, and stores the
    /// touched groups' new states only when the call succeeded.
    fn step(
        &mut self,
        merge: bool,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        if let Some(p) =
            self.prepare_step(merge, values, group_indices, opt_filter, total_num_groups)?
        {
            self.commit(p);
        }
        Ok(())
    }

    /// Makes room for `total_num_groups` groups.
    fn grow(&mut self, total_num_groups: usize) {
        if self.states.len() < total_num_groups {
            self.states.resize(total_num_groups, None);
        }
    }

    /// Stores prepared states.
    fn commit(&mut self, p: Prepared) {
        let offsets = p.states.value_offsets();
        for (i, &g) in p.touched.iter().enumerate() {
            let old = self.states[g].as_ref().map_or(0, Bytes::len);
            // Each group gets its own copy: a slice of the call's buffer would keep all of it
            // alive for as long as any one group lives.
            self.states[g] = p.states.is_valid(i).then(|| {
                Bytes::copy_from_slice(
                    &p.states.value_data()[offsets[i] as usize..offsets[i + 1] as usize],
                )
            });
            let now = self.states[g].as_ref().map_or(0, Bytes::len);
            self.bytes = self.bytes + now - old;
        }
    }

    fn prepare_step(
        &mut self,
        merge: bool,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<Option<Prepared>> {
        self.grow(total_num_groups);
        let (values, group_indices): (Vec<ArrayRef>, std::borrow::Cow<'_, [usize]>) =
            match opt_filter {
                Some(f) => {
                    let keep: Vec<usize> = (0..group_indices.len())
                        .filter(|&i| f.is_valid(i) && f.value(i))
                        .map(|i| group_indices[i])
                        .collect();
                    let mask = match f.nulls() {
                        Some(n) => BooleanArray::new(f.values() & n.inner(), None),
                        None => f.clone(),
                    };
                    let values = values
                        .iter()
                        .map(|v| arrow::compute::filter(v, &mask))
                        .collect::<Result<_, _>>()?;
                    (values, keep.into())
                }
                None => (values.to_vec(), group_indices.into()),
            };
        if group_indices.is_empty() {
            return Ok(None);
        }
        let values = if merge {
            values
        } else {
            cast_args(&self.desc, values)?
        };
        // The touched groups, numbered densely in order of first appearance.
        self.dense.resize(self.states.len(), u32::MAX);
        let mut touched: Vec<usize> = Vec::new();
        let mut ids = Vec::with_capacity(group_indices.len());
        for &g in group_indices.iter() {
            if self.dense[g] == u32::MAX {
                self.dense[g] = touched.len() as u32;
                touched.push(g);
            }
            ids.push(self.dense[g]);
        }
        for &g in &touched {
            self.dense[g] = u32::MAX;
        }
        let states: BinaryArray = touched.iter().map(|&g| self.states[g].as_deref()).collect();
        let result = self
            .instances
            .with(|m, live| m.aggregate_step(live, &self.desc, merge, &ids, &states, &values));
        let states = result.map_err(|e| failure("aggregate", &self.desc, e))?;
        Ok(Some(Prepared { touched, states }))
    }

    /// Takes the states `emit_to` selects.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Option<Bytes>> {
        let taken = emit_to.take_needed(&mut self.states);
        self.bytes -= taken.iter().flatten().map(Bytes::len).sum::<usize>();
        taken
    }

    fn evaluate_states(&self, states: &[Option<Bytes>]) -> DfResult<ArrayRef> {
        if states.is_empty() {
            return Ok(arrow::array::new_empty_array(
                &self.desc.returns.data_type(),
            ));
        }
        let states: BinaryArray = states.iter().map(|s| s.as_deref()).collect();
        self.instances
            .with(|m, live| m.aggregate_evaluate(live, &self.desc, &states))
            .map_err(|e| failure("aggregate", &self.desc, e))
    }
}

/// The window operator prepares every guest aggregate of a batch, and commits only when all
/// succeeded.
impl PhasedGroups for WasmGroups {
    fn prepare(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<Option<PreparedUpdate>> {
        Ok(self
            .prepare_step(false, values, group_indices, opt_filter, total_num_groups)?
            .map(|p| Box::new(p) as PreparedUpdate))
    }

    fn commit(&mut self, update: PreparedUpdate) {
        let p = update
            .downcast::<Prepared>()
            .expect("an update this accumulator prepared");
        WasmGroups::commit(self, *p);
    }

    fn grow(&mut self, total_num_groups: usize) {
        WasmGroups::grow(self, total_num_groups);
    }
}

impl GroupsAccumulator for WasmGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.step(false, values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let states = self.take(emit_to);
        self.evaluate_states(&states)
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        let states = self.take(emit_to);
        let array: BinaryArray = states.iter().map(|s| s.as_deref()).collect();
        Ok(vec![Arc::new(array)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups);
        // A partial state that is null (a group never updated) has nothing to merge. A group
        // without a state takes its first partial state as it is: restoring a checkpoint (and
        // putting state back after a snapshot) installs the saved bytes without calling the
        // guest, so it cannot fail, and a guest's `Default` never has to be a merge identity.
        let partial = values[0].as_binary::<i32>();
        let mut keep = Vec::new();
        let mut groups = Vec::new();
        for (i, &g) in group_indices.iter().enumerate().take(partial.len()) {
            if !partial.is_valid(i) {
                continue;
            }
            if self.states[g].is_none() {
                let bytes = Bytes::copy_from_slice(partial.value(i));
                self.bytes += bytes.len();
                self.states[g] = Some(bytes);
            } else {
                keep.push(i as u32);
                groups.push(g);
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        let partial = arrow::compute::take(partial, &arrow::array::UInt32Array::from(keep), None)?;
        self.step(true, &[partial], &groups, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        // Each row becomes the state of a group of its own.
        let rows = values.first().map_or(0, |v| v.len());
        let ids: Vec<u32> = (0..rows as u32).collect();
        let values = cast_args(&self.desc, values.to_vec())?;
        let fresh = BinaryArray::new_null(rows);
        let states = self
            .instances
            .with(|m, live| m.aggregate_step(live, &self.desc, false, &ids, &fresh, &values))
            .map_err(|e| failure("aggregate", &self.desc, e))?;
        let states: BinaryArray = match opt_filter {
            Some(f) => states
                .iter()
                .enumerate()
                .map(|(i, s)| s.filter(|_| f.is_valid(i) && f.value(i)))
                .collect(),
            None => states,
        };
        Ok(vec![Arc::new(states)])
    }

    fn size(&self) -> usize {
        self.bytes + self.states.capacity() * std::mem::size_of::<Option<Bytes>>()
    }
}

/// New states an update computed, not yet stored.
#[derive(Debug)]
struct Prepared {
    touched: Vec<usize>,
    states: BinaryArray,
}

/// A WASM aggregate for one group (no `GROUP BY`, session windows).
#[derive(Debug)]
struct WasmAccumulator(WasmGroups);

impl Accumulator for WasmAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let rows = values.first().map_or(0, |v| v.len());
        self.0.step(false, values, &vec![0; rows], None, 1)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let states = [self.0.states.first().cloned().flatten()];
        let out = self.0.evaluate_states(&states)?;
        ScalarValue::try_from_array(&out, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let state = self.0.states.first().cloned().flatten();
        Ok(vec![ScalarValue::Binary(state.map(|b| b.to_vec()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let rows = states.first().map_or(0, |v| v.len());
        self.0.merge_batch(states, &vec![0; rows], 1)
    }
}

/// A record transform of a [`WasmModule`](super::WasmModule), for
/// [`PipelineBuilder::transform`](crate::PipelineBuilder::transform).
#[derive(Debug, Clone)]
pub struct WasmRecordTransform {
    instances: Arc<Instances>,
    desc: FunctionDescription,
}

impl WasmRecordTransform {
    pub(crate) fn new(instances: Arc<Instances>, desc: FunctionDescription) -> Self {
        Self { instances, desc }
    }
}

impl RecordTransform for WasmRecordTransform {
    fn name(&self) -> &str {
        &self.desc.name
    }

    fn transform(&self, records: &[Record]) -> Result<Vec<Transformed>, String> {
        let inputs: Vec<&[u8]> = records.iter().map(|r| r.payload().as_ref()).collect();
        let (codes, out) = self
            .instances
            .with(|m, live| m.transform(live, &self.desc, &inputs))
            .map_err(|e| match e {
                CallFailure::Broken(reason) => {
                    format!("WASM transform `{}` failed: {reason}", self.desc.name)
                }
                CallFailure::Guest(message) => {
                    format!("WASM transform `{}` reported: {message}", self.desc.name)
                }
            })?;
        // New payloads are slices of one buffer copied out of the guest.
        let data = Bytes::from(out.value_data().to_vec());
        let base = out.value_offsets()[0] as usize;
        let offsets = out.value_offsets();
        let value =
            |i: usize| data.slice(offsets[i] as usize - base..offsets[i + 1] as usize - base);
        Ok(codes
            .iter()
            .enumerate()
            .map(|(i, code)| match *code {
                abi::transform_code::OK => Transformed::Ok(value(i)),
                abi::transform_code::DROPPED => Transformed::Dropped,
                abi::transform_code::FAILED => {
                    Transformed::ProcessingFailed(super::engine::guest_message(&value(i)))
                }
                _ => Transformed::Ok(records[i].payload().clone()),
            })
            .collect())
    }
}

/// An error that fails the whole batch (no row-by-row retry: a runaway guest would be called
/// once per row).
fn batch_failure(reason: String) -> DataFusionError {
    DataFusionError::External(Box::new(BatchFailure(reason)))
}
