//! A WASM function as a DataFusion scalar UDF.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::abi::FunctionDescription;
use super::engine::{CallFailure, Live, Loaded};
use crate::sql::BatchFailure;

/// A scalar function of a [`WasmModule`](super::WasmModule), callable from SQL by its name.
pub struct WasmScalarFunction {
    module: Arc<Loaded>,
    desc: FunctionDescription,
    signature: Signature,
    /// The instance this function (and the module's other functions) run in; `None` until the
    /// first call, and after a call broke it.
    instance: Arc<Mutex<Option<Live>>>,
}

impl std::fmt::Debug for WasmScalarFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmScalarFunction")
            .field("module", &self.module.name())
            .field("function", &self.desc)
            .finish_non_exhaustive()
    }
}

impl PartialEq for WasmScalarFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.module, &other.module) && self.desc == other.desc
    }
}

impl Eq for WasmScalarFunction {}

impl Hash for WasmScalarFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.module.name().hash(state);
        self.desc.hash(state);
    }
}

impl WasmScalarFunction {
    pub(crate) fn new(
        module: Arc<Loaded>,
        desc: FunctionDescription,
        instance: Arc<Mutex<Option<Live>>>,
    ) -> Self {
        Self {
            module,
            desc,
            signature: Signature::user_defined(Volatility::Immutable),
            instance,
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
        if arg_types.len() != self.desc.args.len() {
            return plan_err!(
                "WASM function `{}` takes {} arguments, not {}",
                self.desc.name,
                self.desc.args.len(),
                arg_types.len()
            );
        }
        Ok(self.desc.args.iter().map(|t| t.data_type()).collect())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.desc.returns.data_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let mut arrays = Vec::with_capacity(args.args.len());
        for (value, ty) in args.args.iter().zip(&self.desc.args) {
            let a = value.to_array(rows)?;
            let want = ty.data_type();
            arrays.push(if a.data_type() == &want {
                a
            } else {
                arrow::compute::cast(&a, &want)?
            });
        }
        let mut slot = self.instance.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let live = self.module.instantiate(&self.desc_list()).map_err(|e| {
                batch_failure(format!(
                    "WASM module `{}` cannot be instantiated: {e}",
                    self.module.name()
                ))
            })?;
            *slot = Some(live);
        }
        let live = slot.as_mut().expect("instantiated above");
        match self.module.call(live, &self.desc, &arrays, rows) {
            Ok(result) => Ok(ColumnarValue::Array(result)),
            Err(CallFailure::Broken(reason)) => {
                // A trapped or misbehaving instance is not reused.
                *slot = None;
                Err(batch_failure(format!(
                    "WASM function `{}` failed: {reason}",
                    self.desc.name
                )))
            }
            Err(CallFailure::Guest(message)) => {
                exec_err!("WASM function `{}` reported: {message}", self.desc.name)
                    .map_err(|e| batch_failure(e.to_string()))
            }
        }
    }
}

impl WasmScalarFunction {
    /// The functions the shared instance serves: every function of the module registered with it
    /// is looked up by name, so the instance gets this one's entry point at least.
    fn desc_list(&self) -> Vec<FunctionDescription> {
        self.module.functions().to_vec()
    }
}

/// An error that fails the whole batch (no row-by-row retry: a runaway guest would be called
/// once per row).
fn batch_failure(reason: String) -> DataFusionError {
    DataFusionError::External(Box::new(BatchFailure(reason)))
}
