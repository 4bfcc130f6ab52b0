//! The host side of the batch ABI, version 1 (`udfs/ABI.md`): types, the description, and the
//! layout of a batch in guest memory.

use arrow::datatypes::{DataType, TimeUnit};
use serde::Deserialize;

use crate::{Error, Result};

/// The ABI version this host speaks.
pub(crate) const VERSION: i32 = 1;

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

/// A function a module exports, as its description says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct FunctionDescription {
    /// The SQL name.
    pub name: String,
    /// `scalar` (the only kind of ABI version 1).
    pub kind: String,
    /// Argument types.
    pub args: Vec<AbiType>,
    /// Result type.
    pub returns: AbiType,
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
    if d.abi != VERSION {
        return Err(Error::Sql(format!(
            "WASM module `{module}` describes ABI version {}, this rivulet speaks version {VERSION}",
            d.abi
        )));
    }
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
        if f.kind != "scalar" {
            return Err(Error::Sql(format!(
                "WASM module `{module}`: function `{}` is of kind `{}`; ABI version 1 has scalar functions",
                f.name, f.kind
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
        for bad in [
            &br#"{"abi":2,"functions":[]}"#[..],
            br#"{"abi":1,"functions":[{"name":"Bad","kind":"scalar","args":[],"returns":"i32"}]}"#,
            br#"{"abi":1,"functions":[{"name":"f","kind":"scalar","args":["u8"],"returns":"i32"}]}"#,
            b"not json",
        ] {
            assert!(parse_description("m", bad).is_err());
        }
    }
}
