//! Sandboxed WebAssembly functions (cargo feature `wasm`): scalar functions and aggregates called
//! from SQL, and record transforms applied before decoding.
//!
//! A [`WasmModule`] is a core WebAssembly module that speaks rivulet's columnar batch ABI
//! (`udfs/ABI.md`, version 2): the host copies each argument column's Arrow buffers into the
//! guest's memory once per batch, calls one entry point, and copies the result column back into
//! an Arrow array. No call per row, no serialisation.
//!
//! - [`WasmScalarFunction`]: a DataFusion scalar function.
//! - [`WasmAggregateFunction`]: a DataFusion aggregate whose state is bytes the guest defines and
//!   the host keeps (in window state and checkpoints); one call per batch for all groups.
//! - [`WasmRecordTransform`]: a [`RecordTransform`](crate::RecordTransform) with Firehose's
//!   contract per record: new bytes, dropped, or failed with a message (to the error output).
//!
//! The functions of a module share its instances: a caller takes an idle instance or creates one,
//! so each worker has its own, reused across batches.
//!
//! The guest runs in wasmtime with:
//! - a deadline per call (epoch interruption, [`WasmLimits::deadline`], default 100 ms per batch),
//! - an optional fuel budget per call, for deterministic cost limits,
//! - a memory cap ([`WasmLimits::max_memory_bytes`], default 64 MiB) and a bounded stack,
//! - no imports: a module that imports anything is refused when it is loaded.
//!
//! A trap, a deadline, a memory overrun or a malformed result fails the batch's rows (they go to
//! the pipeline's error output with the reason); the instance is discarded and a new one serves
//! the next batch. An aggregate's failed call changes no state.
//!
//! ```no_run
//! # async fn f() -> rivulet::Result<()> {
//! use rivulet::wasm::{WasmLimits, WasmModule};
//! let module = WasmModule::load("udfs/haversine.wasm", WasmLimits::default()).await?;
//! let functions = module.sql_functions(); // register with PipelineBuilder::functions
//! # Ok(()) }
//! ```

mod abi;
mod cache;
mod codec;
mod engine;
mod udf;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use abi::{AbiType, FunctionDescription, FunctionKind};
pub use udf::{WasmAggregateFunction, WasmRecordTransform, WasmScalarFunction};

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

use crate::sql::SqlFunctions;
use crate::{Error, Result};

/// Most tables a guest instance may have (Rust guests have one, for indirect calls).
pub const MAX_TABLES: usize = 4;
/// Most elements of one table of a guest instance (8 bytes each to the host).
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What a guest may use per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmLimits {
    /// Longest a call (one batch) may run. Default 100 ms.
    pub deadline: Duration,
    /// Fuel (roughly, WebAssembly instructions) per call; `None` (default) for no fuel metering.
    pub fuel: Option<u64>,
    /// Largest linear memory of an instance. Default 64 MiB. An instance has one linear memory
    /// (multi-memory and 64-bit memories are switched off), at most
    /// [`MAX_TABLES`](crate::wasm::MAX_TABLES) tables of at most
    /// [`MAX_TABLE_ELEMENTS`](crate::wasm::MAX_TABLE_ELEMENTS) elements each.
    pub max_memory_bytes: usize,
    /// Largest WebAssembly stack. Default 512 KiB.
    pub max_stack_bytes: usize,
    /// Largest state an aggregate may return for one group. Default 64 KiB. The host keeps every
    /// group's state in the window's state and in checkpoints, so a call returning a larger state
    /// fails its batch (the rows go to the error output) and no state changes.
    pub max_state_bytes: usize,
    /// Directory for compiled modules (wasmtime's serialisation, keyed by the module's digest and
    /// the engine's configuration); `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            fuel: None,
            max_memory_bytes: 64 << 20,
            max_stack_bytes: 512 << 10,
            max_state_bytes: 64 << 10,
            cache_dir: None,
        }
    }
}

/// A loaded guest module and the functions it exports.
#[derive(Debug, Clone)]
pub struct WasmModule {
    /// The compiled module and its idle instances, shared by all its functions.
    inner: Arc<engine::Instances>,
    functions: Vec<FunctionDescription>,
}

impl WasmModule {
    /// Loads a module from a local path or an `s3://bucket/key` URL (the `aws` feature; credentials,
    /// region and endpoint from the SDK's default chain).
    pub async fn load(location: &str, limits: WasmLimits) -> Result<Self> {
        if location.starts_with("s3://") {
            #[cfg(feature = "aws")]
            {
                let config = crate::aws::load_config(None, None, "udfs").await?;
                return Self::load_s3(location, &config, limits).await;
            }
            #[cfg(not(feature = "aws"))]
            {
                return Err(Error::config(
                    "udfs.path",
                    "loading from S3 needs rivulet built with the `aws` feature",
                ));
            }
        }
        let path = Path::new(location);
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::from_bytes(location, &bytes, limits)
    }

    /// Loads a module from an `s3://bucket/key` URL with the credentials, region and endpoint of
    /// `config`.
    #[cfg(feature = "aws")]
    pub async fn load_s3(
        url: &str,
        config: &aws_config::SdkConfig,
        limits: WasmLimits,
    ) -> Result<Self> {
        let (bucket, key) = url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| Error::config("udfs.path", format!("`{url}` is not s3://bucket/key")))?;
        let bytes = crate::aws::s3::get_object_with(bucket, key, config).await?;
        Self::from_bytes(url, &bytes, limits)
    }

    /// Loads a module from its bytes (binary, or text with the `.wat` syntax); `name` is used in
    /// errors.
    pub fn from_bytes(name: &str, bytes: &[u8], limits: WasmLimits) -> Result<Self> {
        let loaded = engine::Loaded::new(name, bytes, limits)?;
        let functions = loaded.describe()?;
        Ok(Self {
            inner: Arc::new(engine::Instances::new(Arc::new(loaded))),
            functions,
        })
    }

    /// The functions the module exports.
    pub fn functions(&self) -> &[FunctionDescription] {
        &self.functions
    }

    fn find(&self, name: &str, kind: FunctionKind) -> Result<FunctionDescription> {
        let of_kind: Vec<&str> = self
            .functions
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.name.as_str())
            .collect();
        match self.functions.iter().find(|f| f.name == name) {
            Some(f) if f.kind == kind => Ok(f.clone()),
            found => Err(Error::Wasm(format!(
                "module `{}` has no {kind} function `{name}`{} (its {kind} functions: {})",
                self.inner.module().name(),
                found.map_or(String::new(), |f| format!(
                    " (`{name}` is {} function)",
                    f.kind
                )),
                if of_kind.is_empty() {
                    "none".to_owned()
                } else {
                    of_kind.join(", ")
                }
            ))),
        }
    }

    /// A scalar function of the module, for DataFusion.
    pub fn scalar(&self, name: &str) -> Result<WasmScalarFunction> {
        let desc = self.find(name, FunctionKind::Scalar)?;
        Ok(WasmScalarFunction::new(Arc::clone(&self.inner), desc))
    }

    /// An aggregate of the module, for DataFusion.
    pub fn aggregate(&self, name: &str) -> Result<WasmAggregateFunction> {
        let desc = self.find(name, FunctionKind::Aggregate)?;
        Ok(WasmAggregateFunction::new(Arc::clone(&self.inner), desc))
    }

    /// A record transform of the module, for
    /// [`PipelineBuilder::transform`](crate::PipelineBuilder::transform).
    pub fn transform(&self, name: &str) -> Result<WasmRecordTransform> {
        let desc = self.find(name, FunctionKind::Transform)?;
        Ok(WasmRecordTransform::new(Arc::clone(&self.inner), desc))
    }

    /// Every scalar function and aggregate of the module, ready for
    /// [`PipelineBuilder::functions`](crate::PipelineBuilder::functions).
    pub fn sql_functions(&self) -> SqlFunctions {
        self.add_to(SqlFunctions::new())
    }

    /// Adds every scalar function and aggregate of the module to `functions`.
    pub fn add_to(&self, mut functions: SqlFunctions) -> SqlFunctions {
        for desc in &self.functions {
            let instances = Arc::clone(&self.inner);
            functions = match desc.kind {
                FunctionKind::Scalar => functions.with_udf(ScalarUDF::new_from_impl(
                    WasmScalarFunction::new(instances, desc.clone()),
                )),
                FunctionKind::Aggregate => functions.with_udaf(AggregateUDF::new_from_impl(
                    WasmAggregateFunction::new(instances, desc.clone()),
                )),
                FunctionKind::Transform => functions,
            };
        }
        functions
    }
}
