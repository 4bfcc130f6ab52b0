//! Event times in the engine: epoch milliseconds read from a time column (timestamps, dates,
//! integers, ISO-8601 strings), and written back for people (durations and instants in errors
//! and `EXPLAIN`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::compute::kernels::cast::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

use super::watermark::Millis;
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
/// milliseconds as integers, and ISO-8601 strings. Rows that have a value that is not a time come
/// back as `Err` positions.
pub(crate) fn time_to_millis(col: &ArrayRef) -> Result<(Int64Array, Vec<usize>)> {
    let target = DataType::Timestamp(TimeUnit::Millisecond, None);
    let converted: ArrayRef = match col.data_type() {
        DataType::Int64 => Arc::clone(col),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => cast_with_options(
            col,
            &DataType::Int64,
            &CastOptions {
                safe: true,
                ..Default::default()
            },
        )?,
        DataType::Utf8 => {
            // The common `2026-01-01T00:00:03.500Z` shape is read directly; anything else goes
            // through Arrow's parser, value by value.
            let text = col.as_string::<i32>();
            Arc::new(
                text.iter()
                    .map(|v| {
                        v.and_then(|s| {
                            iso_utc_millis(s.as_bytes()).or_else(|| {
                                arrow::compute::kernels::cast_utils::string_to_datetime(
                                    &chrono::Utc,
                                    s,
                                )
                                .ok()
                                .map(|t| t.timestamp_millis())
                            })
                        })
                    })
                    .collect::<Int64Array>(),
            )
        }
        DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::LargeUtf8
        | DataType::Utf8View => {
            let ts = cast_with_options(
                col,
                &target,
                &CastOptions {
                    safe: true,
                    ..Default::default()
                },
            )?;
            cast_with_options(&ts, &DataType::Int64, &CastOptions::default())?
        }
        DataType::Null => {
            let bad = Vec::new();
            return Ok((Int64Array::new_null(col.len()), bad));
        }
        other => {
            return Err(Error::Sql(format!(
                "a window's time column must be a timestamp, an ISO-8601 string or epoch \
                 milliseconds; got {other}"
            )))
        }
    };
    let mut millis = converted.as_primitive::<Int64Type>().clone();
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

/// Epoch milliseconds of `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z]` (UTC), or `None` for any other
/// shape (which the general parser then handles).
pub(crate) fn iso_utc_millis(b: &[u8]) -> Option<Millis> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let Some((b'.', frac)) = rest.split_first() {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let mut scale = 100;
        for &c in &frac[..digits.min(3)] {
            millis += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[digits..];
    }
    if !(rest.is_empty() || rest == b"Z") {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_fast_path_agrees_with_the_general_parser() {
        for s in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:03.500Z",
            "2026-01-01 23:59:59.999",
            "1970-01-01T00:00:00.0001Z",
            "1969-12-31T23:59:59.999Z",
            "2000-02-29T12:34:56.789123456Z",
            "1900-03-01T00:00:00Z",
            "2400-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ] {
            let general = arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, s)
                .unwrap()
                .timestamp_millis();
            assert_eq!(iso_utc_millis(s.as_bytes()), Some(general), "{s}");
        }
        for s in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+02:00",
            "2026-01-01",
            "2026-01-01T00:00:00.Z",
            "not a time at all!!",
        ] {
            assert_eq!(iso_utc_millis(s.as_bytes()), None, "{s}");
        }
    }
}
