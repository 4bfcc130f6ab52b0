//! The host side of the batch ABI, version 2 (`udfs/ABI.md`): types, the description, and the
//! layout of a batch in guest memory.

use arrow::datatypes::{DataType, TimeUnit};
use serde::Deserialize;

use crate::{Error, Result};

/// The ABI version this host speaks. Version 1 (scalar functions only) is a subset of version 2,
/// so version-1 guests load too.
pub(crate) const VERSION: i32 = 2;
/// The oldest version this host loads.
pub(crate) const OLDEST: i32 = 1;

/// Bytes of the batch header before the argument columns: rows, ncols, status, err_ptr, err_len
/// (5 × u32) and the result column (4 × u32).
pub(crate) const HEADER: usize = 5 * 4 + COLUMN;
/// Bytes of one column descriptor.
pub(crate) const COLUMN: usize = 4 * 4;
/// Offset of `status` in the header.
pub(crate) const STATUS: usize = 8;
/// Offset of `err_ptr` in the header (`err_len` follows).
pub(crate) const ERR: usize = 12;
/// Offset of the result column in the header.
pub(crate) const OUT: usize = 20;
/// Aggregate batches: offset of the number of groups.
pub(crate) const AGG_GROUPS: usize = HEADER;
/// Aggregate batches: offset of the group-id column (`u32` per row).
pub(crate) const AGG_GROUP_IDS: usize = HEADER + 4;
/// Aggregate batches: offset of the states column (binary, one row per group).
pub(crate) const AGG_STATES: usize = AGG_GROUP_IDS + COLUMN;
/// Bytes of an aggregate batch's header before its argument columns.
pub(crate) const AGG_HEADER: usize = AGG_STATES + COLUMN;

/// Per-record results of a record transform (one byte per record).
pub(crate) mod transform_code {
    /// New bytes, in the result column.
    pub(crate) const OK: u8 = 0;
    /// The record is dropped.
    pub(crate) const DROPPED: u8 = 1;
    /// The record failed; the result column holds the message.
    pub(crate) const FAILED: u8 = 2;
    /// The record passes unchanged (the host keeps its bytes; nothing is copied back).
    pub(crate) const UNCHANGED: u8 = 3;
    /// What the host fills the codes with before the call: a code left so fails the batch.
    pub(crate) const NOT_SET: u8 = 0xff;
}

/// A value type of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbiType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Boolean, one byte per value in guest memory.
    Bool,
    /// UTF-8 text.
    Utf8,
    /// Bytes.
    Binary,
    /// Microseconds since the Unix epoch, UTC.
    Timestamp,
}

impl AbiType {
    /// The Arrow type of columns of this type.
    pub fn data_type(self) -> DataType {
        match self {
            Self::I32 => DataType::Int32,
            Self::I64 => DataType::Int64,
            Self::F32 => DataType::Float32,
            Self::F64 => DataType::Float64,
            Self::Bool => DataType::Boolean,
            Self::Utf8 => DataType::Utf8,
            Self::Binary => DataType::Binary,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Bytes per value in guest memory, or `None` for variable width.
    pub(crate) fn width(self) -> Option<usize> {
        match self {
            Self::Bool => Some(1),
            Self::I32 | Self::F32 => Some(4),
            Self::I64 | Self::F64 | Self::Timestamp => Some(8),
            Self::Utf8 | Self::Binary => None,
        }
    }
}

/// What a function of a module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FunctionKind {
    /// Row in, value out: a DataFusion scalar function.
    Scalar,
    /// Rows of a group in, one value out; its state is bytes the host keeps (in window state and
    /// checkpoints).
    Aggregate,
    /// A raw record in, before decoding: new bytes, dropped, or failed with a message.
    Transform,
}

impl FunctionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Aggregate => "aggregate",
            Self::Transform => "transform",
        }
    }
}

impl std::fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A function a module exports, as its description says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct FunctionDescription {
    /// The name (SQL calls scalar functions and aggregates by it; a pipeline names its record
    /// transform by it).
    pub name: String,
    /// Scalar function, aggregate or record transform.
    pub kind: FunctionKind,
    /// Argument types.
    pub args: Vec<AbiType>,
    /// Result type.
    pub returns: AbiType,
}

impl FunctionDescription {
    /// The module's exports that implement the function.
    pub(crate) fn exports(&self) -> Vec<String> {
        let n = &self.name;
        match self.kind {
            FunctionKind::Scalar => vec![format!("rivulet_scalar_{n}")],
            FunctionKind::Aggregate => vec![
                format!("rivulet_agg_update_{n}"),
                format!("rivulet_agg_merge_{n}"),
                format!("rivulet_agg_evaluate_{n}"),
            ],
            FunctionKind::Transform => vec![format!("rivulet_transform_{n}")],
        }
    }
}

#[derive(Debug, Deserialize)]
struct Description {
    abi: i32,
    functions: Vec<FunctionDescription>,
}

/// Parses and checks a module's description.
pub(crate) fn parse_description(module: &str, json: &[u8]) -> Result<Vec<FunctionDescription>> {
    let d: Description = serde_json::from_slice(json).map_err(|e| {
        Error::Sql(format!(
            "WASM module `{module}`: its description is not valid: {e}"
        ))
    })?;
    if !(OLDEST..=VERSION).contains(&d.abi) {
        return Err(Error::Sql(format!(
            "WASM module `{module}` describes ABI version {}, this rivulet speaks versions \
             {OLDEST} to {VERSION}",
            d.abi
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &d.functions {
        let ok = !f.name.is_empty()
            && f.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !f.name.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(Error::Sql(format!(
                "WASM module `{module}`: function name `{}` is not [a-z_][a-z0-9_]*",
                f.name
            )));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(Error::Sql(format!(
                "WASM module `{module}` describes function `{}` twice",
                f.name
            )));
        }
        if f.kind != FunctionKind::Scalar && d.abi < 2 {
            return Err(Error::Sql(format!(
                "WASM module `{module}`: function `{}` is {} function, which needs ABI version 2 \
                 (the module describes version {})",
                f.name, f.kind, d.abi
            )));
        }
        if f.kind == FunctionKind::Aggregate && f.args.is_empty() {
            return Err(Error::Sql(format!(
                "WASM module `{module}`: aggregate `{}` takes no arguments; an aggregate takes at \
                 least one (COUNT(*) counts rows without a function)",
                f.name
            )));
        }
        if f.kind == FunctionKind::Transform
            && (f.args != [AbiType::Binary] || f.returns != AbiType::Binary)
        {
            return Err(Error::Sql(format!(
                "WASM module `{module}`: record transform `{}` must take `binary` and return \
                 `binary`",
                f.name
            )));
        }
    }
    Ok(d.functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_checked() {
        let ok = br#"{"abi":1,"functions":[{"name":"f_1","kind":"scalar","args":["f64","utf8"],"returns":"bool"}]}"#;
        let f = parse_description("m", ok).unwrap();
        assert_eq!(f[0].args, vec![AbiType::F64, AbiType::Utf8]);
        let v2 = br#"{"abi":2,"functions":[{"name":"avg2","kind":"aggregate","args":["f64"],"returns":"f64"},{"name":"t","kind":"transform","args":["binary"],"returns":"binary"}]}"#;
        let f = parse_description("m", v2).unwrap();
        assert_eq!(f[0].kind, FunctionKind::Aggregate);
        assert_eq!(
            f[0].exports(),
            [
                "rivulet_agg_update_avg2",
                "rivulet_agg_merge_avg2",
                "rivulet_agg_evaluate_avg2"
            ]
        );
        assert_eq!(f[1].exports(), ["rivulet_transform_t"]);
        for bad in [
            &br#"{"abi":3,"functions":[]}"#[..],
            // Aggregates need version 2.
            br#"{"abi":1,"functions":[{"name":"a","kind":"aggregate","args":["f64"],"returns":"f64"}]}"#,
            // A transform maps bytes to bytes.
            br#"{"abi":2,"functions":[{"name":"t","kind":"transform","args":["utf8"],"returns":"binary"}]}"#,
            br#"{"abi":2,"functions":[{"name":"f","kind":"scalar","args":[],"returns":"i32"},{"name":"f","kind":"scalar","args":[],"returns":"i32"}]}"#,
            br#"{"abi":2,"functions":[{"name":"f","kind":"window","args":[],"returns":"i32"}]}"#,
            br#"{"abi":2,"functions":[{"name":"n","kind":"aggregate","args":[],"returns":"i64"}]}"#,
            br#"{"abi":1,"functions":[{"name":"Bad","kind":"scalar","args":[],"returns":"i32"}]}"#,
            br#"{"abi":1,"functions":[{"name":"f","kind":"scalar","args":["u8"],"returns":"i32"}]}"#,
            b"not json",
        ] {
            assert!(parse_description("m", bad).is_err());
        }
    }
}
