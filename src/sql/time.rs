//! Event times in the engine: epoch milliseconds read from a time column (timestamps, dates,
//! integers, ISO-8601 strings), and written back for people (durations and instants in errors
//! and `EXPLAIN`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::DataType;

use super::watermark::Millis;
use crate::format::epoch_millis;
use crate::{Error, Result};

/// A duration for people: `10 s`, `5 min`, `250 ms`.
pub(crate) fn fmt_millis(ms: Millis) -> String {
    if ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Converts a time column to epoch milliseconds: timestamps of any unit, dates, epoch
/// milliseconds as numbers, and ISO-8601 strings ([`crate::format::epoch_millis`]). Rows that have
/// a value that is not a time come back as `Err` positions.
pub(crate) fn time_to_millis(col: &ArrayRef) -> Result<(Int64Array, Vec<usize>)> {
    if col.data_type() == &DataType::Null {
        return Ok((Int64Array::new_null(col.len()), Vec::new()));
    }
    let Some(mut millis) = epoch_millis(col)? else {
        return Err(Error::Sql(format!(
            "a window's time column must be a timestamp, an ISO-8601 string or epoch \
             milliseconds; got {}",
            col.data_type()
        )));
    };
    // Times beyond ±285,000 years are not times: refusing them keeps window arithmetic
    // (start + size, t + gap) far from overflow.
    if millis
        .iter()
        .flatten()
        .any(|t| t.unsigned_abs() > MAX_ABS_MILLIS)
    {
        millis = millis
            .iter()
            .map(|t| t.filter(|t| t.unsigned_abs() <= MAX_ABS_MILLIS))
            .collect();
    }
    let mut bad = Vec::new();
    if millis.null_count() > col.null_count() {
        for i in 0..col.len() {
            if col.is_valid(i) && millis.is_null(i) {
                bad.push(i);
            }
        }
    }
    Ok((millis, bad))
}

/// Largest accepted distance of an event time from the epoch (2^53 ms).
const MAX_ABS_MILLIS: u64 = 1 << 53;

/// An instant for people (ISO-8601, UTC), or `-inf` / `+inf`.
pub(crate) fn fmt_time(t: Millis) -> String {
    match t {
        Millis::MIN => "-inf".into(),
        Millis::MAX => "+inf".into(),
        t => chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| t.to_string()),
    }
}

/// Epoch milliseconds as a UTC timestamp column.
pub(crate) fn time_array(values: Vec<Millis>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}
