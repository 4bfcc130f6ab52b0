//! wasmtime: engines, compiled modules (cached on disk), sandboxed instances, and one batch call.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array,
    Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use wasmtime::{
    Config, Engine, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc,
};

use super::abi::{self, AbiType, FunctionDescription};
use super::WasmLimits;
use crate::{Error, Result};

/// How often the epoch advances: the resolution of call deadlines.
const TICK: Duration = Duration::from_millis(1);

/// One engine per configuration (fuel on or off, stack size), each with a thread advancing its
/// epoch.
fn engine_for(limits: &WasmLimits) -> Result<Engine> {
    static ENGINES: OnceLock<Mutex<HashMap<(bool, usize), Engine>>> = OnceLock::new();
    let key = (limits.fuel.is_some(), limits.max_stack_bytes);
    let mut engines = ENGINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(e) = engines.get(&key) {
        return Ok(e.clone());
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(key.0)
        .max_wasm_stack(key.1);
    let engine = Engine::new(&config)
        .map_err(|e| Error::Wasm(format!("cannot set up the WebAssembly engine: {e}")))?;
    let ticking = engine.clone();
    std::thread::Builder::new()
        .name("rivulet-wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            ticking.increment_epoch();
        })
        .map_err(|e| Error::Wasm(format!("cannot start the deadline thread: {e}")))?;
    engines.insert(key, engine.clone());
    Ok(engine)
}

/// A compiled module with the limits its instances get.
pub(crate) struct Loaded {
    name: String,
    engine: Engine,
    module: Module,
    limits: WasmLimits,
    /// The functions the module describes (set once, when it is loaded).
    pub(crate) functions: Vec<FunctionDescription>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A live instance of a module.
pub(crate) struct Live {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<(i32, i32), i32>,
    entries: HashMap<String, TypedFunc<i32, i32>>,
    /// The region the host writes batches into, and its size.
    region: Option<(u32, usize)>,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The instance trapped, ran out of time, fuel or memory, or returned a malformed result: it
    /// is discarded.
    Broken(String),
    /// The guest reported an error for the batch; the instance stays.
    Guest(String),
}

fn wasm_err(module: &str, e: impl std::fmt::Display) -> Error {
    Error::Wasm(format!("module `{module}`: {e}"))
}

/// A readable reason for a trap or a failed call.
fn describe_trap(e: &wasmtime::Error, limits: &WasmLimits) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "the call ran past its deadline of {} ms",
            limits.deadline.as_millis()
        ),
        Some(Trap::OutOfFuel) => format!(
            "the call used up its fuel budget of {}",
            limits.fuel.unwrap_or_default()
        ),
        Some(Trap::StackOverflow) => format!(
            "stack overflow (the stack is limited to {} KiB)",
            limits.max_stack_bytes / 1024
        ),
        Some(t) => format!("trap: {t}"),
        None => {
            let s = format!("{e:#}");
            if s.contains("memory") && s.contains("grow") || s.contains("limit") {
                format!(
                    "the guest's memory would pass its limit of {} MiB ({s})",
                    limits.max_memory_bytes >> 20
                )
            } else {
                s
            }
        }
    }
}

impl Loaded {
    pub(crate) fn new(name: &str, bytes: &[u8], limits: WasmLimits) -> Result<Self> {
        let engine = engine_for(&limits)?;
        let module = compile_cached(&engine, name, bytes, limits.cache_dir.as_deref())?;
        if let Some(import) = module.imports().next() {
            return Err(wasm_err(
                name,
                format!(
                    "imports `{}::{}`, and rivulet grants WASM functions no imports (no WASI, no \
                     host functions); build the module without them",
                    import.module(),
                    import.name()
                ),
            ));
        }
        for (export, what) in [
            ("memory", "its memory"),
            ("rivulet_abi_version", "rivulet_abi_version() -> i32"),
            ("rivulet_alloc", "rivulet_alloc(i32, i32) -> i32"),
            ("rivulet_describe", "rivulet_describe() -> i64"),
        ] {
            if module.get_export(export).is_none() {
                return Err(wasm_err(
                    name,
                    format!("does not export `{export}` ({what}): is it built with the rivulet-udf SDK?"),
                ));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            engine,
            module,
            limits,
            functions: Vec::new(),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn functions(&self) -> &[FunctionDescription] {
        &self.functions
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64
    }

    fn arm(&self, store: &mut Store<StoreLimits>) -> std::result::Result<(), String> {
        store.set_epoch_deadline(self.deadline_ticks());
        if let Some(fuel) = self.limits.fuel {
            store.set_fuel(fuel).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A store with the memory cap, deadline and fuel set, and an instance in it.
    fn new_instance(&self) -> std::result::Result<(Store<StoreLimits>, Instance), String> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory_bytes)
            .trap_on_grow_failure(true)
            .instances(1)
            .build();
        let mut store = Store::new(&self.engine, limits);
        store.limiter(|l| l);
        store.epoch_deadline_trap();
        self.arm(&mut store)?;
        let instance = Instance::new(&mut store, &self.module, &[])
            .map_err(|e| describe_trap(&e, &self.limits))?;
        Ok((store, instance))
    }

    /// A new instance serving `functions`.
    pub(crate) fn instantiate(
        &self,
        functions: &[FunctionDescription],
    ) -> std::result::Result<Live, String> {
        let (mut store, instance) = self.new_instance()?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("`memory` is not a memory")?;
        let alloc = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "rivulet_alloc")
            .map_err(|e| format!("rivulet_alloc: {e}"))?;
        let mut entries = HashMap::new();
        for f in functions {
            let export = format!("rivulet_scalar_{}", f.name);
            let func = instance
                .get_typed_func::<i32, i32>(&mut store, &export)
                .map_err(|e| format!("`{export}` (i32) -> i32: {e}"))?;
            entries.insert(f.name.clone(), func);
        }
        Ok(Live {
            store,
            memory,
            alloc,
            entries,
            region: None,
        })
    }

    /// The module's description, checked against the ABI version.
    pub(crate) fn describe(&self) -> Result<Vec<FunctionDescription>> {
        let (mut store, instance) = self.new_instance().map_err(|e| wasm_err(&self.name, e))?;
        let call_err = |e: wasmtime::Error| wasm_err(&self.name, describe_trap(&e, &self.limits));
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "rivulet_abi_version")
            .map_err(|e| wasm_err(&self.name, format!("rivulet_abi_version: {e}")))?
            .call(&mut store, ())
            .map_err(call_err)?;
        if version != abi::VERSION {
            return Err(wasm_err(
                &self.name,
                format!(
                    "speaks ABI version {version}; this rivulet speaks version {}",
                    abi::VERSION
                ),
            ));
        }
        let packed = instance
            .get_typed_func::<(), i64>(&mut store, "rivulet_describe")
            .map_err(|e| wasm_err(&self.name, format!("rivulet_describe: {e}")))?
            .call(&mut store, ())
            .map_err(call_err)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasm_err(&self.name, "`memory` is not a memory"))?;
        let live_store = &store;
        let (ptr, len) = (packed as u32 as usize, (packed as u64 >> 32) as usize);
        let json = memory
            .data(live_store)
            .get(ptr..ptr.saturating_add(len))
            .ok_or_else(|| wasm_err(&self.name, "the description points outside memory"))?;
        let functions = abi::parse_description(&self.name, json)?;
        // Every described function must have its entry point.
        self.instantiate(&functions)
            .map_err(|e| wasm_err(&self.name, e))?;
        Ok(functions)
    }

    /// Calls `f` on `args` (already of the argument types) for `rows` rows.
    pub(crate) fn call(
        &self,
        live: &mut Live,
        f: &FunctionDescription,
        args: &[ArrayRef],
        rows: usize,
    ) -> std::result::Result<ArrayRef, CallFailure> {
        let broken = CallFailure::Broken;
        // The batch: header, argument column descriptors, then each argument's buffers.
        let parts: Vec<ColumnBytes> = args.iter().map(|a| ColumnBytes::of(a.as_ref())).collect();
        let mut total = abi::HEADER + abi::COLUMN * args.len();
        for p in &parts {
            total = p.size_after(total);
        }
        let ptr = match live.region {
            Some((ptr, cap)) if cap >= total => ptr,
            _ => {
                let cap = total.next_power_of_two().max(64 << 10);
                let cap32 =
                    i32::try_from(cap).map_err(|_| broken("the batch is over 2 GiB".into()))?;
                self.arm(&mut live.store).map_err(broken)?;
                let p = live
                    .alloc
                    .call(&mut live.store, (cap32, 8))
                    .map_err(|e| broken(describe_trap(&e, &self.limits)))?;
                if p <= 0 {
                    return Err(broken(format!("the guest could not allocate {cap} bytes")));
                }
                live.region = Some((p as u32, cap));
                p as u32
            }
        };
        let base = ptr as usize;
        {
            let mem = live.memory.data_mut(&mut live.store);
            let region = mem
                .get_mut(base..base + total)
                .ok_or_else(|| broken("the guest allocated outside its memory".into()))?;
            region.fill(0);
            put(region, 0, rows as u32);
            put(region, 4, args.len() as u32);
            let mut at = abi::HEADER + abi::COLUMN * args.len();
            for (i, p) in parts.iter().enumerate() {
                let desc = abi::HEADER + abi::COLUMN * i;
                at = p.write(region, base, at, desc);
            }
        }
        let entry = live
            .entries
            .get(&f.name)
            .ok_or_else(|| broken(format!("no entry point for `{}`", f.name)))?
            .clone();
        self.arm(&mut live.store).map_err(broken)?;
        entry
            .call(&mut live.store, ptr as i32)
            .map_err(|e| broken(describe_trap(&e, &self.limits)))?;
        let mem = live.memory.data(&live.store);
        let header = &mem[base..base + abi::HEADER];
        if get(header, abi::STATUS) != 0 {
            let (p, l) = (
                get(header, abi::ERR) as usize,
                get(header, abi::ERR + 4) as usize,
            );
            let msg = mem
                .get(p..p.saturating_add(l))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| "(an error message outside memory)".into());
            return Err(CallFailure::Guest(msg));
        }
        read_result(mem, header, f.returns, rows).map_err(broken)
    }
}

fn put(region: &mut [u8], at: usize, v: u32) {
    region[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get(region: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(region[at..at + 4].try_into().expect("4 bytes"))
}

/// An argument column's buffers as the guest receives them.
struct ColumnBytes {
    validity: Option<Vec<u8>>,
    values: Vec<u8>,
    offsets: Option<Vec<u8>>,
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl ColumnBytes {
    fn of(a: &dyn Array) -> Self {
        let validity = a
            .nulls()
            .filter(|n| n.null_count() > 0)
            .map(|n| n.inner().sliced().as_slice()[..a.len().div_ceil(8)].to_vec());
        let (values, offsets) = match a.data_type() {
            arrow::datatypes::DataType::Utf8 => {
                let s = a.as_string::<i32>();
                var_bytes(s.value_offsets(), s.value_data())
            }
            arrow::datatypes::DataType::Binary => {
                let b = a.as_binary::<i32>();
                var_bytes(b.value_offsets(), b.value_data())
            }
            arrow::datatypes::DataType::Boolean => {
                (a.as_boolean().values().iter().map(u8::from).collect(), None)
            }
            arrow::datatypes::DataType::Int32 => (
                a.as_primitive::<Int32Type>()
                    .values()
                    .inner()
                    .as_slice()
                    .to_vec(),
                None,
            ),
            arrow::datatypes::DataType::Int64 => (
                a.as_primitive::<Int64Type>()
                    .values()
                    .inner()
                    .as_slice()
                    .to_vec(),
                None,
            ),
            arrow::datatypes::DataType::Float32 => (
                a.as_primitive::<Float32Type>()
                    .values()
                    .inner()
                    .as_slice()
                    .to_vec(),
                None,
            ),
            arrow::datatypes::DataType::Float64 => (
                a.as_primitive::<Float64Type>()
                    .values()
                    .inner()
                    .as_slice()
                    .to_vec(),
                None,
            ),
            arrow::datatypes::DataType::Timestamp(..) => (
                a.as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .inner()
                    .as_slice()
                    .to_vec(),
                None,
            ),
            other => unreachable!("arguments are cast to ABI types, not {other}"),
        };
        Self {
            validity,
            values,
            offsets,
        }
    }

    fn size_after(&self, mut at: usize) -> usize {
        for b in [
            self.validity.as_ref(),
            Some(&self.values),
            self.offsets.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            at = align8(at) + b.len();
        }
        align8(at)
    }

    /// Copies the buffers into `region` from `at`, fills the descriptor at `desc`, and returns the
    /// offset after them.
    fn write(&self, region: &mut [u8], base: usize, mut at: usize, desc: usize) -> usize {
        let mut place = |b: &[u8], region: &mut [u8]| {
            at = align8(at);
            region[at..at + b.len()].copy_from_slice(b);
            let ptr = (base + at) as u32;
            at += b.len();
            ptr
        };
        let validity = self.validity.as_ref().map_or(0, |v| place(v, region));
        let values = place(&self.values, region);
        let offsets = self.offsets.as_ref().map_or(0, |o| place(o, region));
        put(region, desc, validity);
        put(region, desc + 4, values);
        put(region, desc + 8, offsets);
        put(region, desc + 12, self.values.len() as u32);
        align8(at)
    }
}

/// Offsets rebased to start at 0, and the values they cover.
fn var_bytes(offsets: &[i32], data: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let first = offsets[0];
    let last = offsets[offsets.len() - 1];
    let values = data[first as usize..last as usize].to_vec();
    let rebased: Vec<u8> = offsets
        .iter()
        .flat_map(|o| (o - first).to_le_bytes())
        .collect();
    (values, Some(rebased))
}

/// Reads the result column the guest described, checking every pointer and length.
fn read_result(
    mem: &[u8],
    header: &[u8],
    ty: AbiType,
    rows: usize,
) -> std::result::Result<ArrayRef, String> {
    let out = abi::OUT;
    let (validity, values, offsets, values_len) = (
        get(header, out) as usize,
        get(header, out + 4) as usize,
        get(header, out + 8) as usize,
        get(header, out + 12) as usize,
    );
    let slice = |ptr: usize, len: usize, what: &str| {
        mem.get(ptr..ptr.saturating_add(len)).ok_or_else(|| {
            format!("the result's {what} ({len} bytes at {ptr}) lie outside the guest's memory")
        })
    };
    let nulls = if validity == 0 {
        None
    } else {
        let bits = slice(validity, rows.div_ceil(8), "validity bitmap")?;
        Some(NullBuffer::new(BooleanBuffer::new(
            Buffer::from(bits.to_vec()),
            0,
            rows,
        )))
    };
    let data = slice(values, values_len, "values")?;
    if let Some(width) = ty.width() {
        if values_len != rows * width {
            return Err(format!(
                "the result has {values_len} bytes of values for {rows} rows of {width} bytes"
            ));
        }
        let buf = Buffer::from(data.to_vec());
        let arr: ArrayRef = match ty {
            AbiType::I32 => {
                std::sync::Arc::new(Int32Array::new(ScalarBuffer::new(buf, 0, rows), nulls))
            }
            AbiType::I64 => {
                std::sync::Arc::new(Int64Array::new(ScalarBuffer::new(buf, 0, rows), nulls))
            }
            AbiType::F32 => {
                std::sync::Arc::new(Float32Array::new(ScalarBuffer::new(buf, 0, rows), nulls))
            }
            AbiType::F64 => {
                std::sync::Arc::new(Float64Array::new(ScalarBuffer::new(buf, 0, rows), nulls))
            }
            AbiType::Timestamp => std::sync::Arc::new(
                TimestampMicrosecondArray::new(ScalarBuffer::new(buf, 0, rows), nulls)
                    .with_timezone("UTC"),
            ),
            AbiType::Bool => {
                let bits = BooleanBuffer::from_iter(data.iter().map(|b| *b != 0));
                std::sync::Arc::new(BooleanArray::new(bits, nulls))
            }
            AbiType::Utf8 | AbiType::Binary => unreachable!("variable width"),
        };
        return Ok(arr);
    }
    let raw = slice(offsets, (rows + 1) * 4, "offsets")?;
    let offs: Vec<i32> = raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if offs[0] != 0 || offs.windows(2).any(|w| w[1] < w[0]) || offs[rows] as usize != values_len {
        return Err("the result's offsets are not increasing from 0 to its values' length".into());
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offs));
    let values = Buffer::from(data.to_vec());
    Ok(match ty {
        AbiType::Utf8 => std::sync::Arc::new(
            StringArray::try_new(offsets, values, nulls)
                .map_err(|e| format!("the result is not valid UTF-8 text: {e}"))?,
        ),
        _ => std::sync::Arc::new(
            BinaryArray::try_new(offsets, values, nulls).map_err(|e| e.to_string())?,
        ),
    })
}

/// Compiles `bytes`, or loads the compiled module from `cache_dir`, keyed by the module's digest
/// and the engine's compatibility hash; a cache entry that does not load is compiled again.
fn compile_cached(
    engine: &Engine,
    name: &str,
    bytes: &[u8],
    cache_dir: Option<&std::path::Path>,
) -> Result<Module> {
    let compile = || {
        Module::new(engine, bytes).map_err(|e| wasm_err(name, format!("cannot be compiled: {e:#}")))
    };
    let Some(dir) = cache_dir else {
        return compile();
    };
    let key = {
        use md5::Digest as _;
        let digest = md5::Md5::digest(bytes);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}.cwasm", h.finish())
    };
    let path = dir.join(key);
    // Read into memory rather than mapped: a cache file truncated by someone else while it is in
    // use must not crash the process.
    if let Ok(compiled) = std::fs::read(&path) {
        // SAFETY: the file was written by `Module::serialize` of an engine with the same
        // compatibility hash, into a directory rivulet owns; wasmtime checks the header too.
        match unsafe { Module::deserialize(engine, &compiled) } {
            Ok(m) => return Ok(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), "compiled module cache entry not used: {e}")
            }
        }
    }
    let module = compile()?;
    if let Ok(serialized) = module.serialize() {
        let tmp = path.with_extension("tmp");
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, serialized))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache the compiled module: {e}");
        }
    }
    Ok(module)
}
