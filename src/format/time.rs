//! Event times as epoch milliseconds, read from a column of any type that can hold one: the one
//! conversion behind a decoded `ROWTIME` and a window's time column.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::kernels::cast_utils::string_to_datetime;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

use crate::Result;

/// Converts `array` to epoch milliseconds. It reads
/// - timestamps of any unit (a zoned one is an instant; a naive one is taken as UTC) and dates;
/// - integers and floating-point numbers as epoch milliseconds (fractions dropped);
/// - strings: ISO-8601, with or without a zone (no zone means UTC), or integer epoch milliseconds.
///
/// A value that is not a time (an unparsable string, a number past `i64`) becomes null. `None`
/// when the column's type cannot hold a time at all.
pub(crate) fn epoch_millis(array: &ArrayRef) -> Result<Option<Int64Array>> {
    let millis: ArrayRef = match array.data_type() {
        DataType::Int64 => Arc::clone(array),
        DataType::Utf8 => Arc::new(strings_to_millis(array)),
        DataType::LargeUtf8 | DataType::Utf8View => Arc::new(strings_to_millis(
            &arrow::compute::cast(array, &DataType::Utf8)?,
        )),
        // A zoned timestamp is an instant: cast between zones (which keeps the instant), never to
        // a naive type (which would shift it to local wall time).
        DataType::Timestamp(_, Some(_)) => {
            let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
            arrow::compute::cast(&arrow::compute::cast(array, &utc)?, &DataType::Int64)?
        }
        DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64 => {
            let naive = DataType::Timestamp(TimeUnit::Millisecond, None);
            arrow::compute::cast(&arrow::compute::cast(array, &naive)?, &DataType::Int64)?
        }
        t if t.is_integer() || t.is_floating() => arrow::compute::cast(array, &DataType::Int64)?,
        DataType::Null => Arc::new(Int64Array::new_null(array.len())),
        _ => return Ok(None),
    };
    Ok(Some(millis.as_primitive::<Int64Type>().clone()))
}

/// Epoch milliseconds of each string of a `Utf8` column; null where a value is not a time.
fn strings_to_millis(array: &ArrayRef) -> Int64Array {
    let strings = array.as_string::<i32>();
    let mut minutes = MinuteCache::default();
    let mut values = Vec::with_capacity(strings.len());
    let mut valid = arrow::array::BooleanBufferBuilder::new(strings.len());
    let mut all_valid = true;
    for v in strings.iter() {
        let t = v.and_then(|s| minutes.millis(s));
        values.push(t.unwrap_or(0));
        valid.append(t.is_some());
        all_valid &= t.is_some();
    }
    let nulls = (!all_valid).then(|| arrow::buffer::NullBuffer::new(valid.finish()));
    Int64Array::new(values.into(), nulls)
}

/// The last minute (`YYYY-MM-DD[T ]HH:MM:`) read and its epoch milliseconds. The times of a
/// stream advance slowly, so most strings share the minute of the string before and only their
/// seconds need reading.
#[derive(Default)]
struct MinuteCache {
    prefix: Option<[u8; MINUTE_LEN]>,
    base: i64,
}

/// The length of `YYYY-MM-DDTHH:MM:`.
const MINUTE_LEN: usize = 17;

impl MinuteCache {
    fn millis(&mut self, s: &str) -> Option<i64> {
        let b = s.as_bytes();
        if let (Some(prefix), Some(head)) = (&self.prefix, b.get(..MINUTE_LEN)) {
            if head == prefix {
                if let Some(ms) = second_millis(&b[MINUTE_LEN..]) {
                    return Some(self.base + ms);
                }
            }
        }
        if let Some(base) = b.get(..MINUTE_LEN).and_then(minute_millis) {
            if let Some(ms) = second_millis(&b[MINUTE_LEN..]) {
                self.prefix = b[..MINUTE_LEN].try_into().ok();
                self.base = base;
                return Some(base + ms);
            }
        }
        str_to_millis(s)
    }
}

/// Epoch milliseconds of one string: the common `2026-01-01T00:00:03.500Z` shape read directly,
/// integer epoch milliseconds, else Arrow's ISO-8601 parser.
fn str_to_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // `trim` is a no-op when both ends are visible ASCII: skip its Unicode scan.
    let s = match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => s,
        _ => s.trim(),
    };
    iso_utc_millis(s.as_bytes())
        .or_else(|| s.parse::<i64>().ok())
        .or_else(|| {
            string_to_datetime(&chrono::Utc, s)
                .ok()
                .map(|t| t.timestamp_millis())
        })
}

/// Epoch milliseconds of `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z]` (UTC), or `None` for any other
/// shape (which the general parser then handles).
pub(crate) fn iso_utc_millis(b: &[u8]) -> Option<i64> {
    let base = minute_millis(b.get(..MINUTE_LEN)?)?;
    Some(base + second_millis(&b[MINUTE_LEN..])?)
}

fn digits2(a: u8, b: u8) -> Option<i64> {
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
}

/// Epoch milliseconds of the minute `YYYY-MM-DD[T ]HH:MM:` (exactly [`MINUTE_LEN`] bytes).
fn minute_millis(b: &[u8]) -> Option<i64> {
    if b.len() != MINUTE_LEN
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits2(b[0], b[1])? * 100 + digits2(b[2], b[3])?;
    let (month, day) = (digits2(b[5], b[6])?, digits2(b[8], b[9])?);
    let (hour, minute) = (digits2(b[11], b[12])?, digits2(b[14], b[15])?);
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
    {
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
    Some(((days * 24 + hour) * 60 + minute) * 60_000)
}

/// Milliseconds of the rest of the time after the minute: `SS[.fraction][Z]`.
fn second_millis(b: &[u8]) -> Option<i64> {
    let second = digits2(*b.first()?, *b.get(1)?)?;
    if second > 59 {
        return None;
    }
    let mut rest = &b[2..];
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
    Some(second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, Float64Array, LargeStringArray, StringArray, TimestampMillisecondArray,
        TimestampSecondArray, UInt64Array,
    };

    fn millis(array: ArrayRef) -> Vec<Option<i64>> {
        epoch_millis(&array).unwrap().unwrap().iter().collect()
    }

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
            let general = string_to_datetime(&chrono::Utc, s)
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

    #[test]
    fn the_minute_cache_never_changes_a_result() {
        // Neighbours that share a minute, differ in it by one field, or share it and then fail.
        let strings = [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:59.999Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:07",
            "2026-01-01T00:00:07+01:00",
            "2026-01-01T00:00:7Z",
            "2026-01-01T00:00:07.Z",
            "2026-01-01T00:01:00Z",
            "2026-01-02T00:01:00Z",
            "2026-01-02 00:01:00.5",
            "2026-01-02T00:01:00.5",
            " 2026-01-02T00:01:00.5Z",
            "2026-01-02T00:01:00.5Z ",
            "2026-02-29T00:01:00Z",
            "2024-02-29T00:01:00Z",
            "2024-02-29T00:01:01.123456789Z",
            "2024-02-29T00:01:01.1234567890Z",
            "1767225600000",
            "",
        ];
        let got = millis(Arc::new(StringArray::from(strings.to_vec())));
        let alone: Vec<Option<i64>> = strings.iter().map(|s| str_to_millis(s)).collect();
        assert_eq!(got, alone);
        for (s, t) in strings.iter().zip(&got) {
            let general = string_to_datetime(&chrono::Utc, s.trim())
                .ok()
                .map(|t| t.timestamp_millis())
                .or_else(|| s.parse().ok());
            assert_eq!(*t, general, "{s:?}");
        }
    }

    /// 2026-01-01T00:00:00Z, worked out by hand: 56 years of days (14 of them leap) since 1970.
    const NEW_YEAR_2026: i64 = (56 * 365 + 14) * 86_400_000;

    #[test]
    fn strings_of_every_accepted_shape_and_the_rest_as_null() {
        let got = millis(Arc::new(StringArray::from(vec![
            Some("2026-01-01T00:00:00Z"),
            Some("2026-01-01T02:00:00+02:00"),
            Some("  2026-01-01T00:00:00.250Z "),
            Some("1767225600000"),
            Some("yesterday"),
            None,
            Some("9999-12-31T23:59:59Z"),
        ])));
        assert_eq!(
            got,
            vec![
                Some(NEW_YEAR_2026),
                Some(NEW_YEAR_2026),
                Some(NEW_YEAR_2026 + 250),
                Some(NEW_YEAR_2026),
                None,
                None,
                Some(253_402_300_799_000),
            ]
        );
        let large = millis(Arc::new(LargeStringArray::from(vec![
            "2026-01-01T00:00:00Z",
        ])));
        assert_eq!(large, vec![Some(NEW_YEAR_2026)]);
    }

    #[test]
    fn a_zoned_timestamp_keeps_its_instant_and_a_naive_one_is_utc() {
        let secs = NEW_YEAR_2026 / 1000;
        let zoned = TimestampSecondArray::from(vec![secs]).with_timezone("+05:00");
        assert_eq!(millis(Arc::new(zoned)), vec![Some(NEW_YEAR_2026)]);
        let naive = TimestampMillisecondArray::from(vec![NEW_YEAR_2026]);
        assert_eq!(millis(Arc::new(naive)), vec![Some(NEW_YEAR_2026)]);
        let date = Date32Array::from(vec![(NEW_YEAR_2026 / 86_400_000) as i32]);
        assert_eq!(millis(Arc::new(date)), vec![Some(NEW_YEAR_2026)]);
    }

    #[test]
    fn numbers_are_epoch_milliseconds_and_those_past_i64_are_null() {
        let floats = Float64Array::from(vec![1.767_225_600_000_5e12, f64::NAN]);
        assert_eq!(millis(Arc::new(floats)), vec![Some(NEW_YEAR_2026), None]);
        let unsigned = UInt64Array::from(vec![NEW_YEAR_2026 as u64, u64::MAX]);
        assert_eq!(millis(Arc::new(unsigned)), vec![Some(NEW_YEAR_2026), None]);
    }

    #[test]
    fn a_type_that_cannot_hold_a_time_is_named_by_the_caller() {
        let bools: ArrayRef = Arc::new(arrow::array::BooleanArray::from(vec![true]));
        assert!(epoch_millis(&bools).unwrap().is_none());
    }
}
