//! Limits on what SQL may allocate from data it does not control.
//!
//! A few built-in functions build a value whose size an argument decides: `lpad(s, n)`,
//! `rpad(s, n)`, `repeat(s, n)` and `array_repeat(x, n)`. DataFusion allows up to 2 GiB for one
//! value, so one input row with `n` = 2,000,000,000 would allocate that much. rivulet registers
//! each of them in front of DataFusion's with a check of the size it asks for: a row asking for
//! more than [`MAX_BUILT_VALUE_BYTES`] (or [`MAX_BUILT_ARRAY_ELEMENTS`]) fails, alone, into the
//! error output. DataFusion's own operators (sorts, joins, hash aggregates within a micro-batch)
//! reserve their memory from a pool of [`SQL_MEMORY_LIMIT`] bytes per statement.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{exec_err, Result as DfResult};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry as _, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// Largest value (in bytes, or characters for the padding functions) that `lpad`, `rpad` and
/// `repeat` may build for one row: 10 MiB, the default record size limit.
pub const MAX_BUILT_VALUE_BYTES: usize = 10 << 20;

/// Most elements `array_repeat` may build for one row.
pub const MAX_BUILT_ARRAY_ELEMENTS: usize = 1 << 20;

/// Memory DataFusion's operators may reserve for one statement (1 GiB). An operator that needs
/// more fails its micro-batch (its rows go to the error output) instead of growing the process.
pub const SQL_MEMORY_LIMIT: usize = 1 << 30;

/// A runtime whose memory pool holds [`SQL_MEMORY_LIMIT`].
pub(crate) fn runtime() -> Arc<RuntimeEnv> {
    Arc::new(
        RuntimeEnvBuilder::new()
            .with_memory_limit(SQL_MEMORY_LIMIT, 1.0)
            .build()
            .expect("a memory-limited runtime with default settings builds"),
    )
}

/// Which size argument a function takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `f(s, n, …)`: `n` characters.
    Pad,
    /// `repeat(s, n)`: `n` times the bytes of `s`.
    Repeat,
    /// `array_repeat(x, n)`: `n` elements.
    ArrayRepeat,
}

/// A built-in function with a check of the size it is asked to build.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    kind: Kind,
}

/// Registers the bounded versions of the functions that build values of a requested size in
/// place of DataFusion's.
pub(crate) fn register(state: &mut SessionState) {
    for (name, kind) in [
        ("lpad", Kind::Pad),
        ("rpad", Kind::Pad),
        ("repeat", Kind::Repeat),
        ("array_repeat", Kind::ArrayRepeat),
    ] {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let bounded = ScalarUDF::new_from_impl(Bounded {
            inner: inner.as_ref().clone(),
            kind,
        });
        let _ = state.register_udf(Arc::new(bounded));
    }
}

/// The `n` argument of each of `rows` rows (null where it is null or not an integer).
fn counts(arg: &ColumnarValue, rows: usize) -> DfResult<Vec<Option<i64>>> {
    let array = arg.to_array(rows)?;
    let array = arrow::compute::cast(&array, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

/// The first count over `limit`, if one is.
fn first_over(counts: &[Option<i64>], limit: usize) -> Option<i64> {
    counts.iter().flatten().copied().find(|n| *n > limit as i64)
}

/// Byte length of each of `rows` values of a string argument.
fn byte_lengths(arg: &ColumnarValue, rows: usize) -> DfResult<Vec<usize>> {
    let array: ArrayRef = arg.to_array(rows)?;
    let array = arrow::compute::cast(&array, &DataType::LargeUtf8)?;
    let strings = array.as_string::<i64>();
    Ok((0..strings.len())
        .map(|i| {
            if strings.is_null(i) {
                0
            } else {
                strings.value(i).len()
            }
        })
        .collect())
}

impl Bounded {
    fn check(&self, args: &ScalarFunctionArgs) -> DfResult<()> {
        let rows = args.number_rows;
        let Some(n) = args.args.get(1) else {
            return Ok(());
        };
        let name = self.inner.name();
        let counts = counts(n, rows)?;
        match self.kind {
            Kind::Pad => {
                if let Some(n) = first_over(&counts, MAX_BUILT_VALUE_BYTES) {
                    return exec_err!(
                        "{name}: a length of {n} is over the limit of {MAX_BUILT_VALUE_BYTES} \
                         characters (rivulet::MAX_BUILT_VALUE_BYTES)"
                    );
                }
            }
            Kind::Repeat => {
                let lengths = byte_lengths(&args.args[0], rows)?;
                for (len, n) in lengths.iter().zip(&counts) {
                    let n = n.unwrap_or(0).max(0);
                    if (*len as u128) * (n as u128) > MAX_BUILT_VALUE_BYTES as u128 {
                        return exec_err!(
                            "{name}: {n} times {len} bytes is over the limit of \
                             {MAX_BUILT_VALUE_BYTES} bytes (rivulet::MAX_BUILT_VALUE_BYTES)"
                        );
                    }
                }
            }
            Kind::ArrayRepeat => {
                if let Some(n) = first_over(&counts, MAX_BUILT_ARRAY_ELEMENTS) {
                    return exec_err!(
                        "{name}: a count of {n} is over the limit of {MAX_BUILT_ARRAY_ELEMENTS} \
                         elements (rivulet::MAX_BUILT_ARRAY_ELEMENTS)"
                    );
                }
            }
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
