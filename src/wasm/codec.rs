//! The Arrow ↔ guest codec: an argument column's buffers laid out in guest memory, and a result
//! column read back with every pointer and length checked against the guest's memory.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array,
    Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};

use super::abi::AbiType;
pub(super) fn put(region: &mut [u8], at: usize, v: u32) {
    region[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn get(region: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(region[at..at + 4].try_into().expect("4 bytes"))
}

/// An argument column's buffers as the guest receives them.
pub(super) struct ColumnBytes {
    pub(super) validity: Option<Vec<u8>>,
    pub(super) values: Vec<u8>,
    pub(super) offsets: Option<Vec<u8>>,
}

pub(super) fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl ColumnBytes {
    pub(super) fn of(a: &dyn Array) -> Self {
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

    pub(super) fn size_after(&self, mut at: usize) -> usize {
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
    pub(super) fn write(
        &self,
        region: &mut [u8],
        base: usize,
        mut at: usize,
        desc: usize,
    ) -> usize {
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
pub(super) fn var_bytes(offsets: &[i32], data: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let first = offsets[0];
    let last = offsets[offsets.len() - 1];
    let values = data[first as usize..last as usize].to_vec();
    let rebased: Vec<u8> = offsets
        .iter()
        .flat_map(|o| (o - first).to_le_bytes())
        .collect();
    (values, Some(rebased))
}

/// Reads the column the guest described at `out` in `header`, checking every pointer and length.
pub(super) fn read_column(
    mem: &[u8],
    header: &[u8],
    out: usize,
    ty: AbiType,
    rows: usize,
) -> std::result::Result<ArrayRef, String> {
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
