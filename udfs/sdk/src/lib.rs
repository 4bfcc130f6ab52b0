//! Write rivulet WASM functions in Rust: scalar functions, aggregates and record transforms.
//!
//! This crate is the guest side of rivulet's columnar batch ABI (`udfs/ABI.md`, version 2): it
//! provides the allocation and description exports and, through [`export!`], the batch entry
//! points of each function, with the loop over rows and the null handling generated.
//!
//! ```ignore
//! // A scalar function: SQL calls haversine_km(…).
//! fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
//!     // …
//! }
//!
//! // An aggregate: its state implements `Aggregate` and has an `update` method taking the
//! // arguments; SQL calls mean_of(x) in a GROUP BY or a window.
//! #[derive(Default)]
//! struct Mean { sum: f64, n: u64 }
//! impl Mean {
//!     fn update(&mut self, x: f64) { self.sum += x; self.n += 1; }
//! }
//! impl rivulet_udf::Aggregate for Mean {
//!     type Output = f64;
//!     fn merge(&mut self, other: Self) { self.sum += other.sum; self.n += other.n; }
//!     fn evaluate(&self) -> Option<f64> { (self.n > 0).then(|| self.sum / self.n as f64) }
//!     fn save(&self) -> Vec<u8> { /* bytes */ }
//!     fn load(bytes: &[u8]) -> Option<Self> { /* from bytes */ }
//! }
//!
//! // A record transform: the pipeline applies it to each raw record before decoding.
//! fn drop_empty(record: &[u8]) -> rivulet_udf::Transformed {
//!     if record.is_empty() { rivulet_udf::Transformed::Dropped } else { rivulet_udf::Transformed::Unchanged }
//! }
//!
//! rivulet_udf::export! {
//!     fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64;
//!     aggregate mean_of(x: f64) -> f64 = Mean;
//!     transform drop_empty;
//! }
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown` (`scripts/build-udfs.sh` in the
//! rivulet repository) and give the `.wasm` file to rivulet.
//!
//! The exports exist only when the crate is built for `wasm32`; built natively (for tests, or to
//! compare with the WASM build), it is a plain library of the same functions and types.
//!
//! A row whose argument is NULL gets a NULL result without the function being called; an
//! aggregate skips such rows. Argument types: `i32`, `i64`, `f32`, `f64`, `bool`, `&str`, `&[u8]`,
//! and [`Timestamp`]; result types the same with `String` and `Vec<u8>` in place of `&str` and
//! `&[u8]`. A panic aborts the call: the host fails the batch's rows and sends them to the error
//! output.

use std::alloc::Layout;
use std::cell::UnsafeCell;

/// The ABI version this crate implements.
pub const ABI_VERSION: i32 = 2;

/// A column as the ABI lays it out (see `ABI.md`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Validity bitmap pointer, or 0 when every value is present.
    pub validity: u32,
    /// Values pointer.
    pub values: u32,
    /// Offsets pointer (utf8 / binary), else 0.
    pub offsets: u32,
    /// Length of the values in bytes.
    pub values_len: u32,
}

/// The batch header; the argument columns follow it.
#[repr(C)]
#[derive(Debug)]
pub struct Batch {
    /// Number of rows.
    pub rows: u32,
    /// Number of argument columns.
    pub ncols: u32,
    /// 0 ok, 1 failed.
    pub status: u32,
    /// Error message pointer when failed.
    pub err_ptr: u32,
    /// Error message length when failed.
    pub err_len: u32,
    /// The result column.
    pub out: Column,
}

/// The header of an aggregate's batch; the argument columns follow it.
#[repr(C)]
#[derive(Debug)]
pub struct AggBatch {
    /// Rows (input rows, or partial states to merge), columns, status, error and result.
    pub base: Batch,
    /// Number of groups.
    pub groups: u32,
    /// The group (`u32`, below `groups`) of each row.
    pub group_ids: Column,
    /// Each group's state so far (binary, null for a new group).
    pub states: Column,
}

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

struct Arena(UnsafeCell<Vec<Vec<u8>>>);
// wasm32-unknown-unknown runs one thread.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena(UnsafeCell::new(Vec::new()));

/// Frees the previous call's results. Called at the start of every entry point.
#[doc(hidden)]
pub fn reset_arena() {
    unsafe { (*ARENA.0.get()).clear() }
}

/// Moves `buf` into the arena (kept until the next call) and returns its address.
fn keep(buf: Vec<u8>) -> u32 {
    let ptr = buf.as_ptr() as u32;
    unsafe { (*ARENA.0.get()).push(buf) };
    ptr
}

/// `rivulet_alloc`: memory for the host to write a batch into.
#[doc(hidden)]
pub fn alloc(size: i32, align: i32) -> i32 {
    let Ok(layout) = Layout::from_size_align(size.max(1) as usize, align.max(1) as usize) else {
        return 0;
    };
    unsafe { std::alloc::alloc(layout) as i32 }
}

/// A function's description, for `rivulet_describe`.
#[doc(hidden)]
pub struct FnDesc {
    pub kind: &'static str,
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub ret: &'static str,
}

/// `rivulet_describe`: the JSON description, packed as `ptr | len << 32`.
#[doc(hidden)]
pub fn describe(functions: &[FnDesc]) -> i64 {
    let mut json = format!("{{\"abi\":{ABI_VERSION},\"functions\":[");
    for (i, f) in functions.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"name\":\"");
        json.push_str(f.name);
        json.push_str("\",\"kind\":\"");
        json.push_str(f.kind);
        json.push_str("\",\"args\":[");
        for (j, a) in f.args.iter().enumerate() {
            if j > 0 {
                json.push(',');
            }
            json.push('"');
            json.push_str(a);
            json.push('"');
        }
        json.push_str("],\"returns\":\"");
        json.push_str(f.ret);
        json.push_str("\"}");
    }
    json.push_str("]}");
    let bytes = json.into_bytes();
    let len = bytes.len() as i64;
    // Leaked on purpose: the description is read once, when the module is loaded.
    let ptr = Box::leak(bytes.into_boxed_slice()).as_ptr() as i64;
    ptr | (len << 32)
}

/// Reads one argument column.
#[doc(hidden)]
pub struct ColumnRef<T> {
    col: Column,
    _t: std::marker::PhantomData<T>,
}

impl<T: Arg> ColumnRef<T> {
    /// The `index`th argument column of `batch`.
    ///
    /// # Safety
    /// `batch` is a batch the host wrote, with more than `index` columns.
    pub unsafe fn new(batch: *const Batch, index: usize) -> Self {
        let cols = (batch as *const u8).add(std::mem::size_of::<Batch>()) as *const Column;
        Self {
            col: *cols.add(index),
            _t: std::marker::PhantomData,
        }
    }

    /// The `index`th argument column of an aggregate's `batch`.
    ///
    /// # Safety
    /// `batch` is an aggregate batch the host wrote, with more than `index` columns.
    pub unsafe fn of_aggregate(batch: *const AggBatch, index: usize) -> Self {
        let cols = (batch as *const u8).add(std::mem::size_of::<AggBatch>()) as *const Column;
        Self::from_column(*cols.add(index))
    }

    /// A column from its descriptor.
    pub fn from_column(col: Column) -> Self {
        Self {
            col,
            _t: std::marker::PhantomData,
        }
    }

    /// Whether row `row` has a value.
    pub fn valid(&self, row: usize) -> bool {
        if self.col.validity == 0 {
            return true;
        }
        let byte = unsafe { *(self.col.validity as *const u8).add(row / 8) };
        byte & (1 << (row % 8)) != 0
    }

    /// The value of row `row`.
    pub fn get(&self, row: usize) -> T {
        unsafe { T::read(&self.col, row) }
    }
}

/// An argument type.
pub trait Arg: Sized {
    /// The ABI type name.
    const TYPE: &'static str;
    /// Reads row `row` of `col`.
    ///
    /// # Safety
    /// `col` is a valid column of this type with more than `row` rows.
    unsafe fn read(col: &Column, row: usize) -> Self;
}

macro_rules! fixed_arg {
    ($t:ty, $name:literal) => {
        impl Arg for $t {
            const TYPE: &'static str = $name;
            unsafe fn read(col: &Column, row: usize) -> Self {
                (col.values as *const $t).add(row).read_unaligned()
            }
        }
    };
}
fixed_arg!(i32, "i32");
fixed_arg!(i64, "i64");
fixed_arg!(f32, "f32");
fixed_arg!(f64, "f64");

impl Arg for bool {
    const TYPE: &'static str = "bool";
    unsafe fn read(col: &Column, row: usize) -> Self {
        *(col.values as *const u8).add(row) != 0
    }
}

impl Arg for Timestamp {
    const TYPE: &'static str = "timestamp";
    unsafe fn read(col: &Column, row: usize) -> Self {
        Timestamp((col.values as *const i64).add(row).read_unaligned())
    }
}

unsafe fn slice<'a>(col: &Column, row: usize) -> &'a [u8] {
    let offsets = col.offsets as *const i32;
    let start = offsets.add(row).read_unaligned() as usize;
    let end = offsets.add(row + 1).read_unaligned() as usize;
    std::slice::from_raw_parts((col.values as *const u8).add(start), end - start)
}

impl<'a> Arg for &'a [u8] {
    const TYPE: &'static str = "binary";
    unsafe fn read(col: &Column, row: usize) -> Self {
        slice(col, row)
    }
}

impl<'a> Arg for &'a str {
    const TYPE: &'static str = "utf8";
    unsafe fn read(col: &Column, row: usize) -> Self {
        // The host writes Arrow utf8 columns, which are valid UTF-8.
        std::str::from_utf8_unchecked(slice(col, row))
    }
}

/// A result type.
pub trait Ret: Sized {
    /// The ABI type name.
    const TYPE: &'static str;
    /// Writes the results (None: null) into `out`, allocating in the arena.
    fn write(results: Vec<Option<Self>>, out: &mut Column);
}

fn validity(results: &[Option<impl Sized>]) -> u32 {
    if results.iter().all(Option::is_some) {
        return 0;
    }
    let mut bits = vec![0u8; results.len().div_ceil(8)];
    for (i, r) in results.iter().enumerate() {
        if r.is_some() {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    keep(bits)
}

macro_rules! fixed_ret {
    ($t:ty, $name:literal) => {
        impl Ret for $t {
            const TYPE: &'static str = $name;
            fn write(results: Vec<Option<Self>>, out: &mut Column) {
                out.validity = validity(&results);
                let mut values = Vec::with_capacity(results.len() * std::mem::size_of::<$t>());
                for r in &results {
                    values.extend_from_slice(&r.unwrap_or_default().to_le_bytes());
                }
                out.values_len = values.len() as u32;
                out.values = keep(values);
                out.offsets = 0;
            }
        }
    };
}
fixed_ret!(i32, "i32");
fixed_ret!(i64, "i64");
fixed_ret!(f32, "f32");
fixed_ret!(f64, "f64");

impl Ret for bool {
    const TYPE: &'static str = "bool";
    fn write(results: Vec<Option<Self>>, out: &mut Column) {
        out.validity = validity(&results);
        let values: Vec<u8> = results.iter().map(|r| r.unwrap_or(false) as u8).collect();
        out.values_len = values.len() as u32;
        out.values = keep(values);
        out.offsets = 0;
    }
}

impl Ret for Timestamp {
    const TYPE: &'static str = "timestamp";
    fn write(results: Vec<Option<Self>>, out: &mut Column) {
        let micros = results.into_iter().map(|r| r.map(|t| t.0)).collect();
        i64::write(micros, out)
    }
}

fn write_var(results: Vec<Option<Vec<u8>>>, out: &mut Column) {
    out.validity = validity(&results);
    let mut offsets = Vec::with_capacity((results.len() + 1) * 4);
    let mut values = Vec::new();
    offsets.extend_from_slice(&0i32.to_le_bytes());
    for r in &results {
        if let Some(v) = r {
            values.extend_from_slice(v);
        }
        offsets.extend_from_slice(&(values.len() as i32).to_le_bytes());
    }
    out.values_len = values.len() as u32;
    out.values = keep(values);
    out.offsets = keep(offsets);
}

impl Ret for Vec<u8> {
    const TYPE: &'static str = "binary";
    fn write(results: Vec<Option<Self>>, out: &mut Column) {
        write_var(results, out)
    }
}

impl Ret for String {
    const TYPE: &'static str = "utf8";
    fn write(results: Vec<Option<Self>>, out: &mut Column) {
        write_var(
            results
                .into_iter()
                .map(|r| r.map(String::into_bytes))
                .collect(),
            out,
        )
    }
}

/// Stores the results of a call in the batch's `out` column.
///
/// # Safety
/// `batch` is a batch the host wrote.
#[doc(hidden)]
pub unsafe fn finish<R: Ret>(batch: *mut Batch, results: Vec<Option<R>>) -> i32 {
    R::write(results, &mut (*batch).out);
    (*batch).status = 0;
    0
}

/// Fails the call with `message` (the host fails the batch's rows and reports the message).
///
/// # Safety
/// `batch` is a batch the host wrote.
#[doc(hidden)]
pub unsafe fn fail(batch: *mut Batch, message: String) -> i32 {
    let bytes = message.into_bytes();
    (*batch).err_len = bytes.len() as u32;
    (*batch).err_ptr = keep(bytes);
    (*batch).status = 1;
    1
}

/// The state of an aggregate, for one group. Besides these methods, the type has an inherent
/// `update(&mut self, …)` method taking the aggregate's arguments (rows with a NULL argument are
/// skipped).
///
/// The host keeps the state as the bytes [`Aggregate::save`] returns (in window state and in
/// checkpoints), so it must survive a round trip through [`Aggregate::load`]; a new group starts
/// from `Default`.
pub trait Aggregate: Default + Sized {
    /// The aggregate's result type.
    type Output: Ret;
    /// Folds another state of the same group into this one (partial aggregates, restored
    /// checkpoints, merging session windows).
    fn merge(&mut self, other: Self);
    /// The result; `None` is SQL NULL.
    fn evaluate(&self) -> Option<Self::Output>;
    /// The state as bytes.
    fn save(&self) -> Vec<u8>;
    /// A state from [`Aggregate::save`]'s bytes; `None` when they are not a state.
    fn load(bytes: &[u8]) -> Option<Self>;
}

/// The groups' states of an aggregate batch.
///
/// # Safety
/// `batch` is an aggregate batch the host wrote.
#[doc(hidden)]
pub unsafe fn aggregate_states<S: Aggregate>(batch: *const AggBatch) -> Result<Vec<S>, String> {
    let groups = (*batch).groups as usize;
    let states = ColumnRef::<&[u8]>::from_column((*batch).states);
    (0..groups)
        .map(|g| {
            if states.valid(g) {
                S::load(states.get(g))
                    .ok_or_else(|| format!("the state of group {g} cannot be loaded"))
            } else {
                Ok(S::default())
            }
        })
        .collect()
}

/// The group of each row of an aggregate batch.
///
/// # Safety
/// `batch` is an aggregate batch the host wrote.
#[doc(hidden)]
pub unsafe fn group_ids<'a>(batch: *const AggBatch) -> &'a [u32] {
    let rows = (*batch).base.rows as usize;
    if rows == 0 {
        return &[];
    }
    std::slice::from_raw_parts((*batch).group_ids.values as *const u32, rows)
}

/// Stores the groups' new states as the batch's result.
///
/// # Safety
/// `batch` is an aggregate batch the host wrote.
#[doc(hidden)]
pub unsafe fn finish_states<S: Aggregate>(batch: *mut AggBatch, states: Vec<S>) -> i32 {
    let saved: Vec<Option<Vec<u8>>> = states.iter().map(|s| Some(s.save())).collect();
    write_var(saved, &mut (*batch).base.out);
    (*batch).base.status = 0;
    0
}

/// `rivulet_agg_merge_<name>`: folds partial states into the groups' states.
///
/// # Safety
/// `batch` is an aggregate batch the host wrote, with one binary column.
#[doc(hidden)]
pub unsafe fn aggregate_merge<S: Aggregate>(batch: *mut AggBatch) -> i32 {
    reset_arena();
    // A group without a state takes its first partial state as it is, so `Default` never has
    // to be an identity of `merge` (a minimum, a first value).
    let groups = (*batch).groups as usize;
    let current = ColumnRef::<&[u8]>::from_column((*batch).states);
    let mut states: Vec<Option<S>> = Vec::with_capacity(groups);
    for g in 0..groups {
        if !current.valid(g) {
            states.push(None);
            continue;
        }
        match S::load(current.get(g)) {
            Some(s) => states.push(Some(s)),
            None => {
                return fail(
                    batch as *mut Batch,
                    format!("the state of group {g} cannot be loaded"),
                )
            }
        }
    }
    let partial = ColumnRef::<&[u8]>::of_aggregate(batch, 0);
    for (row, &g) in group_ids(batch).iter().enumerate() {
        if !partial.valid(row) {
            continue;
        }
        let Some(other) = S::load(partial.get(row)) else {
            return fail(
                batch as *mut Batch,
                format!("partial state {row} cannot be loaded"),
            );
        };
        match &mut states[g as usize] {
            Some(s) => s.merge(other),
            slot => *slot = Some(other),
        }
    }
    finish_states(
        batch,
        states.into_iter().map(Option::unwrap_or_default).collect(),
    )
}

/// `rivulet_agg_evaluate_<name>`: the groups' results.
///
/// # Safety
/// `batch` is an aggregate batch the host wrote.
#[doc(hidden)]
pub unsafe fn aggregate_evaluate<S: Aggregate>(batch: *mut AggBatch) -> i32 {
    reset_arena();
    let states = match aggregate_states::<S>(batch) {
        Ok(s) => s,
        Err(e) => return fail(batch as *mut Batch, e),
    };
    let results: Vec<Option<S::Output>> = states.iter().map(S::evaluate).collect();
    finish(batch as *mut Batch, results)
}

/// What a record transform made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// The record continues with these bytes.
    Ok(Vec<u8>),
    /// The record continues as it is (nothing is copied back to the host).
    Unchanged,
    /// The record is dropped on purpose.
    Dropped,
    /// The record failed; it goes to the error output with this message.
    Failed(String),
}

/// `rivulet_transform_<name>`: applies `f` to each record of the batch.
///
/// # Safety
/// `batch` is a transform batch the host wrote: the records, then one result byte per record.
#[doc(hidden)]
pub unsafe fn run_transform(batch: *mut Batch, f: impl Fn(&[u8]) -> Transformed) -> i32 {
    reset_arena();
    let rows = (*batch).rows as usize;
    let records = ColumnRef::<&[u8]>::new(batch, 0);
    let codes = ColumnRef::<u8>::new_raw(batch, 1);
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows);
    for row in 0..rows {
        let (code, bytes) = match f(records.get(row)) {
            Transformed::Ok(b) => (0u8, Some(b)),
            Transformed::Dropped => (1, None),
            Transformed::Failed(m) => (2, Some(m.into_bytes())),
            Transformed::Unchanged => (3, None),
        };
        *(codes.col.values as *mut u8).add(row) = code;
        out.push(bytes);
    }
    write_var(out, &mut (*batch).out);
    (*batch).status = 0;
    0
}

impl ColumnRef<u8> {
    /// The `index`th column of `batch`, whatever its type.
    ///
    /// # Safety
    /// `batch` is a batch the host wrote, with more than `index` columns.
    unsafe fn new_raw(batch: *const Batch, index: usize) -> Self {
        let cols = (batch as *const u8).add(std::mem::size_of::<Batch>()) as *const Column;
        Self {
            col: *cols.add(index),
            _t: std::marker::PhantomData,
        }
    }
}

/// Exports functions to rivulet: the ABI's exports and the batch entry points of each function.
///
/// ```ignore
/// rivulet_udf::export! {
///     fn shout(s: &str) -> String;                   // a scalar function `fn shout(&str) -> String`
///     aggregate mean_of(x: f64) -> f64 = Mean;       // `Mean: Aggregate<Output = f64>` with `fn update(&mut self, x: f64)`
///     transform drop_empty;                          // `fn drop_empty(&[u8]) -> Transformed`
/// }
/// ```
#[macro_export]
macro_rules! export {
    ($($items:tt)*) => {
        $crate::__export_items!([] $($items)*);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_items {
    ([$($desc:expr,)*]) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn rivulet_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn rivulet_alloc(size: i32, align: i32) -> i32 {
            $crate::alloc(size, align)
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn rivulet_describe() -> i64 {
            $crate::describe(&[$($desc),*])
        }
    };

    ([$($desc:expr,)*] fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; $($rest:tt)*) => {
        #[cfg(target_arch = "wasm32")]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[export_name = concat!("rivulet_scalar_", stringify!($name))]
            pub unsafe extern "C" fn entry(batch: i32) -> i32 {
                $crate::reset_arena();
                let batch = batch as usize as *mut $crate::Batch;
                let rows = (*batch).rows as usize;
                let mut index = 0usize;
                $(
                    let $arg = $crate::ColumnRef::<$ty>::new(batch, index);
                    index += 1;
                )*
                let _ = index;
                let results: Vec<Option<$ret>> = (0..rows)
                    .map(|row| {
                        if false $(|| !$arg.valid(row))* {
                            None
                        } else {
                            Some(super::$name($($arg.get(row)),*))
                        }
                    })
                    .collect();
                $crate::finish(batch, results)
            }
        }
        $crate::__export_items!([$($desc,)* $crate::FnDesc {
            kind: "scalar",
            name: stringify!($name),
            args: &[$(<$ty as $crate::Arg>::TYPE),*],
            ret: <$ret as $crate::Ret>::TYPE,
        },] $($rest)*);
    };

    ([$($desc:expr,)*] aggregate $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty = $state:ty ; $($rest:tt)*) => {
        // The declared result type is the state's output type.
        const _: fn(<$state as $crate::Aggregate>::Output) -> $ret = |x| x;

        #[cfg(target_arch = "wasm32")]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[export_name = concat!("rivulet_agg_update_", stringify!($name))]
            pub unsafe extern "C" fn update(batch: i32) -> i32 {
                $crate::reset_arena();
                let batch = batch as usize as *mut $crate::AggBatch;
                let mut states = match $crate::aggregate_states::<$state>(batch) {
                    Ok(s) => s,
                    Err(e) => return $crate::fail(batch as *mut $crate::Batch, e),
                };
                let ids = $crate::group_ids(batch);
                let mut index = 0usize;
                $(
                    let $arg = $crate::ColumnRef::<$ty>::of_aggregate(batch, index);
                    index += 1;
                )*
                let _ = index;
                for (row, &group) in ids.iter().enumerate() {
                    if false $(|| !$arg.valid(row))* {
                        continue;
                    }
                    <$state>::update(&mut states[group as usize], $($arg.get(row)),*);
                }
                $crate::finish_states(batch, states)
            }

            #[export_name = concat!("rivulet_agg_merge_", stringify!($name))]
            pub unsafe extern "C" fn merge(batch: i32) -> i32 {
                $crate::aggregate_merge::<$state>(batch as usize as *mut $crate::AggBatch)
            }

            #[export_name = concat!("rivulet_agg_evaluate_", stringify!($name))]
            pub unsafe extern "C" fn evaluate(batch: i32) -> i32 {
                $crate::aggregate_evaluate::<$state>(batch as usize as *mut $crate::AggBatch)
            }
        }
        $crate::__export_items!([$($desc,)* $crate::FnDesc {
            kind: "aggregate",
            name: stringify!($name),
            args: &[$(<$ty as $crate::Arg>::TYPE),*],
            ret: <$ret as $crate::Ret>::TYPE,
        },] $($rest)*);
    };

    ([$($desc:expr,)*] transform $name:ident ; $($rest:tt)*) => {
        // The transform's signature.
        const _: fn(&[u8]) -> $crate::Transformed = $name;

        #[cfg(target_arch = "wasm32")]
        mod $name {
            #[export_name = concat!("rivulet_transform_", stringify!($name))]
            pub unsafe extern "C" fn entry(batch: i32) -> i32 {
                $crate::run_transform(batch as usize as *mut $crate::Batch, super::$name)
            }
        }
        $crate::__export_items!([$($desc,)* $crate::FnDesc {
            kind: "transform",
            name: stringify!($name),
            args: &["binary"],
            ret: "binary",
        },] $($rest)*);
    };
}
