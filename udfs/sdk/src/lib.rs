//! Write rivulet WASM functions in Rust.
//!
//! This crate is the guest side of rivulet's columnar batch ABI (`udfs/ABI.md`, version 1): it
//! provides the allocation and description exports and, through [`export!`], one batch entry
//! point per function, with the loop over rows and the null handling generated.
//!
//! ```ignore
//! fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
//!     // …
//! }
//!
//! rivulet_udf::export! {
//!     fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64;
//! }
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown` (`scripts/build-udfs.sh` in the
//! rivulet repository) and give the `.wasm` file to rivulet; SQL then calls `haversine_km(…)`.
//!
//! The exports exist only when the crate is built for `wasm32`; built natively (for tests, or to
//! compare with the WASM build), it is a plain library of the same functions.
//!
//! A row whose argument is NULL gets a NULL result without the function being called. Argument
//! types: `i32`, `i64`, `f32`, `f64`, `bool`, `&str`, `&[u8]`, and [`Timestamp`]; result types the
//! same with `String` and `Vec<u8>` in place of `&str` and `&[u8]`. A panic aborts the call: the
//! host fails the batch's rows and sends them to the error output.

use std::alloc::Layout;
use std::cell::UnsafeCell;

/// The ABI version this crate implements.
pub const ABI_VERSION: i32 = 1;

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
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub ret: &'static str,
}

/// `rivulet_describe`: the JSON description, packed as `ptr | len << 32`.
#[doc(hidden)]
pub fn describe(functions: &[FnDesc]) -> i64 {
    let mut json = String::from("{\"abi\":1,\"functions\":[");
    for (i, f) in functions.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"name\":\"");
        json.push_str(f.name);
        json.push_str("\",\"kind\":\"scalar\",\"args\":[");
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

/// Exports functions to rivulet: the ABI's exports and one batch entry point per function.
///
/// ```ignore
/// fn shout(s: &str) -> String { s.to_uppercase() }
/// rivulet_udf::export! {
///     fn shout(s: &str) -> String;
/// }
/// ```
#[macro_export]
macro_rules! export {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; )*) => {
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
            $crate::describe(&[$(
                $crate::FnDesc {
                    name: stringify!($name),
                    args: &[$(<$ty as $crate::Arg>::TYPE),*],
                    ret: <$ret as $crate::Ret>::TYPE,
                }
            ),*])
        }

        $(
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
        )*
    };
}
