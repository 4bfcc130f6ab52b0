//! wasmtime: engines, compiled modules, sandboxed instances, and one batch call. The compiled-module
//! cache is in `cache`, the layout of columns in guest memory in `codec`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use wasmtime::{
    Config, Engine, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc,
};

use super::abi::{self, AbiType, FunctionDescription};
use super::cache::compile_cached;
use super::codec::{get, put, read_column, ColumnBytes};
use super::WasmLimits;
use crate::{Error, Result};

/// Longest error message taken from a guest, in bytes.
const MAX_MESSAGE: usize = 1024;

/// A guest's message as the host keeps it: UTF-8 (lossy), cut to [`MAX_MESSAGE`] bytes with a note
/// of its whole length.
pub(crate) fn guest_message(bytes: &[u8]) -> String {
    if bytes.len() <= MAX_MESSAGE {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut msg = String::from_utf8_lossy(&bytes[..MAX_MESSAGE]).into_owned();
    msg.push_str(&format!("… ({} bytes in all)", bytes.len()));
    msg
}

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
        .max_wasm_stack(key.1)
        // One linear memory per guest, 32-bit: what the memory cap counts.
        .wasm_multi_memory(false)
        .wasm_memory64(false);
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
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<(i32, i32), i32>,
    /// Entry points looked up so far, by export name.
    entries: HashMap<String, TypedFunc<i32, i32>>,
    /// The region the host writes batches into, and its size.
    region: Option<(u32, usize)>,
}

impl Live {
    fn entry(&mut self, export: &str) -> std::result::Result<TypedFunc<i32, i32>, String> {
        if let Some(f) = self.entries.get(export) {
            return Ok(f.clone());
        }
        let f = self
            .instance
            .get_typed_func::<i32, i32>(&mut self.store, export)
            .map_err(|e| format!("`{export}` (i32) -> i32: {e}"))?;
        self.entries.insert(export.to_owned(), f.clone());
        Ok(f)
    }
}

/// Idle instances of a module, shared by its functions: a call takes one (or creates one), and
/// gives it back unless the call broke it. Concurrent callers (DataFusion partitions, pipelines
/// sharing a module) each get their own instance; a single worker reuses one across batches.
pub(crate) struct Instances {
    module: std::sync::Arc<Loaded>,
    idle: Mutex<Vec<Live>>,
}

/// Most idle instances kept per module.
const MAX_IDLE: usize = 16;

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("module", &self.module.name)
            .finish_non_exhaustive()
    }
}

impl Instances {
    pub(crate) fn new(module: std::sync::Arc<Loaded>) -> Self {
        Self {
            module,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn module(&self) -> &Loaded {
        &self.module
    }

    /// Runs `f` on an instance. An instance the call broke is dropped, and the next call gets a
    /// fresh one.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&Loaded, &mut Live) -> std::result::Result<R, CallFailure>,
    ) -> std::result::Result<R, CallFailure> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut live = match idle {
            Some(live) => live,
            None => self
                .module
                .instantiate()
                .map_err(|e| CallFailure::Broken(format!("cannot be instantiated: {e}")))?,
        };
        let result = f(&self.module, &mut live);
        if !matches!(result, Err(CallFailure::Broken(_))) {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(live);
            }
        }
        result
    }
}

/// One batch for a guest entry point: where each column's descriptor goes in the header, and
/// header words the host sets besides `rows` and `ncols`.
struct BatchLayout<'a> {
    export: &'a str,
    rows: usize,
    ncols: usize,
    /// Bytes of header and column descriptors; buffers follow.
    header: usize,
    words: &'a [(usize, u32)],
    columns: &'a [(usize, &'a ColumnBytes)],
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

pub(super) fn wasm_err(module: &str, e: impl std::fmt::Display) -> Error {
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
            if s.contains("table") {
                format!(
                    "the guest's table would pass its limit of {} elements ({s})",
                    super::MAX_TABLE_ELEMENTS
                )
            } else if s.contains("memory") && s.contains("grow") || s.contains("limit") {
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
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
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
            .memories(1)
            .tables(super::MAX_TABLES)
            .table_elements(super::MAX_TABLE_ELEMENTS)
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

    /// A new instance.
    pub(crate) fn instantiate(&self) -> std::result::Result<Live, String> {
        let (mut store, instance) = self.new_instance()?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("`memory` is not a memory")?;
        let alloc = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "rivulet_alloc")
            .map_err(|e| format!("rivulet_alloc: {e}"))?;
        Ok(Live {
            store,
            instance,
            memory,
            alloc,
            entries: HashMap::new(),
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
        if !(abi::OLDEST..=abi::VERSION).contains(&version) {
            return Err(wasm_err(
                &self.name,
                format!(
                    "speaks ABI version {version}; this rivulet speaks versions {} to {}",
                    abi::OLDEST,
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
        // Every described function must have its entry points.
        let mut live = self.instantiate().map_err(|e| wasm_err(&self.name, e))?;
        for f in &functions {
            for export in f.exports() {
                live.entry(&export).map_err(|e| {
                    wasm_err(
                        &self.name,
                        format!("describes {} function `{}` but lacks {e}", f.kind, f.name),
                    )
                })?;
            }
        }
        Ok(functions)
    }

    /// Writes a batch into the instance's region, calls the entry point, and hands the guest's
    /// memory and the batch's address to `read`.
    fn run<R>(
        &self,
        live: &mut Live,
        layout: &BatchLayout<'_>,
        read: impl FnOnce(&[u8], usize) -> std::result::Result<R, String>,
    ) -> std::result::Result<R, CallFailure> {
        let broken = CallFailure::Broken;
        let mut total = layout.header;
        for (_, c) in layout.columns {
            total = c.size_after(total);
        }
        let ptr = match live.region {
            Some((ptr, cap)) if cap >= total => ptr,
            _ => {
                // A quarter more than needed, so that slightly larger batches reuse the region
                // (not the next power of two, which would double a large batch's memory).
                let cap = (total + total / 4).max(64 << 10).next_multiple_of(8);
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
            region[..layout.header].fill(0);
            put(region, 0, layout.rows as u32);
            put(region, 4, layout.ncols as u32);
            for &(at, v) in layout.words {
                put(region, at, v);
            }
            let mut at = layout.header;
            for (desc, c) in layout.columns {
                at = c.write(region, base, at, *desc);
            }
        }
        let entry = live.entry(layout.export).map_err(broken)?;
        self.arm(&mut live.store).map_err(broken)?;
        let returned = entry
            .call(&mut live.store, ptr as i32)
            .map_err(|e| broken(describe_trap(&e, &self.limits)))?;
        let mem = live.memory.data(&live.store);
        let header = &mem[base..base + abi::HEADER];
        if get(header, abi::STATUS) != 0 {
            let (p, l) = (
                get(header, abi::ERR) as usize,
                get(header, abi::ERR + 4) as usize,
            );
            // The message goes into every failed row's error record: a guest cannot make the
            // host copy its whole memory per row.
            let msg = mem
                .get(p..p.saturating_add(l))
                .map(guest_message)
                .unwrap_or_else(|| "(an error message outside memory)".into());
            return Err(CallFailure::Guest(msg));
        }
        if returned != 0 {
            return Err(CallFailure::Guest(format!(
                "the entry point returned {returned} without reporting an error"
            )));
        }
        read(mem, base).map_err(broken)
    }

    /// Calls scalar function `f` on `args` (already of the argument types) for `rows` rows.
    pub(crate) fn call(
        &self,
        live: &mut Live,
        f: &FunctionDescription,
        args: &[ArrayRef],
        rows: usize,
    ) -> std::result::Result<ArrayRef, CallFailure> {
        let parts: Vec<ColumnBytes> = args.iter().map(|a| ColumnBytes::of(a.as_ref())).collect();
        let columns: Vec<(usize, &ColumnBytes)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (abi::HEADER + abi::COLUMN * i, p))
            .collect();
        let export = format!("rivulet_scalar_{}", f.name);
        let layout = BatchLayout {
            export: &export,
            rows,
            ncols: args.len(),
            header: abi::HEADER + abi::COLUMN * args.len(),
            words: &[],
            columns: &columns,
        };
        self.run(live, &layout, |mem, base| {
            read_column(mem, &mem[base..], abi::OUT, f.returns, rows)
        })
    }

    /// An aggregate's update (`args`, one row per input row) or merge (`args`: one binary column of
    /// partial states): `group_ids` gives each row's group among `states` (one per group, null
    /// for a new group). Returns the groups' new states.
    pub(crate) fn aggregate_step(
        &self,
        live: &mut Live,
        f: &FunctionDescription,
        merge: bool,
        group_ids: &[u32],
        states: &BinaryArray,
        args: &[ArrayRef],
    ) -> std::result::Result<BinaryArray, CallFailure> {
        let groups = states.len();
        let ids = ColumnBytes {
            validity: None,
            values: group_ids.iter().flat_map(|g| g.to_le_bytes()).collect(),
            offsets: None,
        };
        let state_bytes = ColumnBytes::of(states);
        let parts: Vec<ColumnBytes> = args.iter().map(|a| ColumnBytes::of(a.as_ref())).collect();
        let mut columns: Vec<(usize, &ColumnBytes)> =
            vec![(abi::AGG_GROUP_IDS, &ids), (abi::AGG_STATES, &state_bytes)];
        columns.extend(
            parts
                .iter()
                .enumerate()
                .map(|(i, p)| (abi::AGG_HEADER + abi::COLUMN * i, p)),
        );
        let export = format!(
            "rivulet_agg_{}_{}",
            if merge { "merge" } else { "update" },
            f.name
        );
        let layout = BatchLayout {
            export: &export,
            rows: group_ids.len(),
            ncols: args.len(),
            header: abi::AGG_HEADER + abi::COLUMN * args.len(),
            words: &[(abi::AGG_GROUPS, groups as u32)],
            columns: &columns,
        };
        let max_state = self.limits.max_state_bytes;
        self.run(live, &layout, |mem, base| {
            let out = read_column(mem, &mem[base..], abi::OUT, AbiType::Binary, groups)?;
            let out = out.as_binary::<i32>().clone();
            // Each state is kept per group in window state and checkpoints: a guest cannot make
            // the host hold an unbounded amount for one group.
            if let Some(i) = (0..out.len()).find(|&i| out.value_length(i) as usize > max_state) {
                return Err(format!(
                    "the aggregate returned a state of {} bytes for one group, over the limit of \
                     {max_state} bytes (max_state_bytes)",
                    out.value_length(i)
                ));
            }
            Ok(out)
        })
    }

    /// An aggregate's results for `states` (one per group).
    pub(crate) fn aggregate_evaluate(
        &self,
        live: &mut Live,
        f: &FunctionDescription,
        states: &BinaryArray,
    ) -> std::result::Result<ArrayRef, CallFailure> {
        let groups = states.len();
        let state_bytes = ColumnBytes::of(states);
        let ids = ColumnBytes {
            validity: None,
            values: Vec::new(),
            offsets: None,
        };
        let export = format!("rivulet_agg_evaluate_{}", f.name);
        let layout = BatchLayout {
            export: &export,
            rows: 0,
            ncols: 0,
            header: abi::AGG_HEADER,
            words: &[(abi::AGG_GROUPS, groups as u32)],
            columns: &[(abi::AGG_GROUP_IDS, &ids), (abi::AGG_STATES, &state_bytes)],
        };
        self.run(live, &layout, |mem, base| {
            read_column(mem, &mem[base..], abi::OUT, f.returns, groups)
        })
    }

    /// A record transform over `records`: one result code per record, and the result column
    /// (new bytes, or a failure's message).
    pub(crate) fn transform(
        &self,
        live: &mut Live,
        f: &FunctionDescription,
        records: &[&[u8]],
    ) -> std::result::Result<(Vec<u8>, BinaryArray), CallFailure> {
        let rows = records.len();
        let mut values = Vec::with_capacity(records.iter().map(|r| r.len()).sum());
        let mut offsets = Vec::with_capacity((rows + 1) * 4);
        offsets.extend_from_slice(&0i32.to_le_bytes());
        for r in records {
            values.extend_from_slice(r);
            let end = i32::try_from(values.len())
                .map_err(|_| CallFailure::Broken("the batch is over 2 GiB".into()))?;
            offsets.extend_from_slice(&end.to_le_bytes());
        }
        let input = ColumnBytes {
            validity: None,
            values,
            offsets: Some(offsets),
        };
        // A code the guest does not write stays NOT_SET, which fails the batch: no record passes
        // by default.
        let codes = ColumnBytes {
            validity: None,
            values: vec![abi::transform_code::NOT_SET; rows],
            offsets: None,
        };
        let export = format!("rivulet_transform_{}", f.name);
        let layout = BatchLayout {
            export: &export,
            rows,
            ncols: 2,
            header: abi::HEADER + 2 * abi::COLUMN,
            words: &[],
            columns: &[(abi::HEADER, &input), (abi::HEADER + abi::COLUMN, &codes)],
        };
        self.run(live, &layout, |mem, base| {
            let header = &mem[base..];
            // The guest writes the codes in place, into the buffer the host allocated.
            let codes_at = get(header, abi::HEADER + abi::COLUMN + 4) as usize;
            let codes = mem
                .get(codes_at..codes_at.saturating_add(rows))
                .ok_or("the result codes lie outside the guest's memory")?
                .to_vec();
            if let Some(bad) = codes.iter().find(|c| **c > abi::transform_code::UNCHANGED) {
                return Err(format!(
                    "the guest returned result code {bad}, which is not 0 to 3"
                ));
            }
            let out = read_column(mem, header, abi::OUT, AbiType::Binary, rows)?;
            Ok((codes, out.as_binary::<i32>().clone()))
        })
    }
}
