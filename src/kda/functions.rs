//! Functions of the Kinesis Data Analytics SQL dialect that standard SQL lacks: `TSDIFF`,
//! `CHAR_TO_TIMESTAMP`, `CHAR_TO_DATE`, `CHAR_TO_TIME`, `TIMESTAMP_TO_CHAR`, `DATE_TO_CHAR` and
//! `TIME_TO_CHAR` (with KDA's Java-style date patterns), `UNIX_TIMESTAMP` and KDA's
//! `TO_TIMESTAMP` (milliseconds since the epoch), `MONOTONIC`,
//! `REGEX_REPLACE(original, regex, replacement, start, occurrence)`, and
//! `current_row_timestamp()`, which `CURRENT_ROW_TIMESTAMP` is translated to.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::common::exec_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The functions, for the SQL session.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    [
        Kind::TsDiff,
        Kind::CharToTimestamp,
        Kind::TimestampToChar,
        Kind::RegexReplace,
        Kind::CurrentRowTimestamp,
        Kind::CharToDate,
        Kind::CharToTime,
        Kind::DateToChar,
        Kind::TimeToChar,
        Kind::ToTimestamp,
        Kind::UnixTimestamp,
        Kind::Monotonic,
    ]
    .into_iter()
    .map(|kind| ScalarUDF::from(Kda::new(kind)))
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    TsDiff,
    CharToTimestamp,
    TimestampToChar,
    RegexReplace,
    CurrentRowTimestamp,
    CharToDate,
    CharToTime,
    DateToChar,
    TimeToChar,
    /// KDA's `TO_TIMESTAMP(milliseconds)` (DataFusion's `to_timestamp` takes seconds).
    ToTimestamp,
    UnixTimestamp,
    /// `MONOTONIC(x)`: declares `x` ascending; the value itself.
    Monotonic,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Kda {
    kind: Kind,
    signature: Signature,
}

impl Kda {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            signature: if kind == Kind::CurrentRowTimestamp {
                // Read for every batch, never folded into a constant at planning.
                Signature::nullary(Volatility::Volatile)
            } else {
                Signature::user_defined(Volatility::Immutable)
            },
        }
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// KDA's TIME, as DataFusion casts to it.
fn time() -> DataType {
    DataType::Time64(TimeUnit::Nanosecond)
}

const DAY_MS: i64 = 86_400_000;

impl ScalarUDFImpl for Kda {
    fn name(&self) -> &str {
        match self.kind {
            Kind::TsDiff => "tsdiff",
            Kind::CharToTimestamp => "char_to_timestamp",
            Kind::TimestampToChar => "timestamp_to_char",
            Kind::RegexReplace => "regex_replace",
            Kind::CurrentRowTimestamp => "current_row_timestamp",
            Kind::CharToDate => "char_to_date",
            Kind::CharToTime => "char_to_time",
            Kind::DateToChar => "date_to_char",
            Kind::TimeToChar => "time_to_char",
            Kind::ToTimestamp => "kda_to_timestamp",
            Kind::UnixTimestamp => "unix_timestamp",
            Kind::Monotonic => "monotonic",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let want = match self.kind {
            Kind::RegexReplace => 5,
            Kind::CurrentRowTimestamp => 0,
            Kind::ToTimestamp | Kind::UnixTimestamp | Kind::Monotonic => 1,
            _ => 2,
        };
        if arg_types.len() != want {
            return datafusion::common::plan_err!("{} takes {want} arguments", self.name());
        }
        Ok(match self.kind {
            Kind::TsDiff => vec![timestamp(), timestamp()],
            Kind::CharToTimestamp => vec![DataType::Utf8, DataType::Utf8],
            Kind::TimestampToChar => vec![DataType::Utf8, timestamp()],
            Kind::CharToDate | Kind::CharToTime => vec![DataType::Utf8, DataType::Utf8],
            Kind::DateToChar => vec![DataType::Utf8, DataType::Date32],
            Kind::TimeToChar => vec![DataType::Utf8, time()],
            Kind::ToTimestamp => vec![DataType::Int64],
            Kind::UnixTimestamp => vec![timestamp()],
            Kind::Monotonic => arg_types.to_vec(),
            Kind::CurrentRowTimestamp => vec![],
            Kind::RegexReplace => vec![
                DataType::Utf8,
                DataType::Utf8,
                DataType::Utf8,
                DataType::Int64,
                DataType::Int64,
            ],
        })
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::TsDiff | Kind::UnixTimestamp => DataType::Int64,
            Kind::CharToTimestamp | Kind::ToTimestamp => timestamp(),
            Kind::TimestampToChar | Kind::RegexReplace => DataType::Utf8,
            Kind::DateToChar | Kind::TimeToChar => DataType::Utf8,
            Kind::CurrentRowTimestamp => timestamp(),
            Kind::CharToDate => DataType::Date32,
            Kind::CharToTime => time(),
            Kind::Monotonic => arg_types.first().cloned().unwrap_or(DataType::Null),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        if self.kind == Kind::CurrentRowTimestamp {
            let now = chrono::Utc::now().timestamp_millis();
            return Ok(ColumnarValue::Array(Arc::new(
                TimestampMillisecondArray::from_value(now, rows),
            )));
        }
        let args = &args.args;
        let a = args[0].to_array(rows)?;
        let out = match self.kind {
            Kind::CurrentRowTimestamp => unreachable!("answered above"),
            Kind::Monotonic => return Ok(args[0].clone()),
            Kind::ToTimestamp => to_timestamp(&a),
            Kind::UnixTimestamp => unix_timestamp(&a),
            Kind::RegexReplace => regex_replace_rows(&a, args, rows)?,
            Kind::TsDiff => tsdiff(&a, args, rows)?,
            Kind::CharToTimestamp | Kind::CharToDate | Kind::CharToTime => {
                self.char_to_time(&a, args, rows)?
            }
            Kind::TimestampToChar | Kind::DateToChar | Kind::TimeToChar => {
                self.time_to_char(&a, args, rows)?
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

impl Kda {
    /// `CHAR_TO_TIMESTAMP(format, text)`, `CHAR_TO_DATE` and `CHAR_TO_TIME`: the text read with
    /// the Java-style format.
    fn char_to_time(
        &self,
        a: &ArrayRef,
        args: &[ColumnarValue],
        rows: usize,
    ) -> DfResult<ArrayRef> {
        let b = args[1].to_array(rows)?;
        let (fmt, text) = (a.as_string::<i32>(), b.as_string::<i32>());
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            if fmt.is_null(i) || text.is_null(i) {
                out.push(None);
                continue;
            }
            let pattern = java_pattern_at(fmt.value(i), None).map_err(|c| {
                datafusion::error::DataFusionError::Execution(format!(
                    "CHAR_TO_TIMESTAMP: the pattern letter {c} of `{}` is only written, \
                     not read",
                    fmt.value(i)
                ))
            })?;
            match parse(text.value(i), &pattern) {
                Some(ms) => out.push(Some(ms)),
                None => {
                    return exec_err!(
                        "{}: `{}` does not match the format `{}`",
                        self.name().to_uppercase(),
                        text.value(i),
                        fmt.value(i)
                    )
                }
            }
        }
        Ok(match self.kind {
            Kind::CharToDate => Arc::new(arrow::array::Date32Array::from_iter(
                out.iter()
                    .map(|ms| ms.map(|ms| ms.div_euclid(DAY_MS) as i32)),
            )),
            Kind::CharToTime => Arc::new(arrow::array::Time64NanosecondArray::from_iter(
                out.iter()
                    .map(|ms| ms.map(|ms| ms.rem_euclid(DAY_MS) * 1_000_000)),
            )),
            _ => Arc::new(TimestampMillisecondArray::from(out)),
        })
    }

    /// `TIMESTAMP_TO_CHAR(format, ts)`, `DATE_TO_CHAR` and `TIME_TO_CHAR`: the instant written
    /// with the Java-style format.
    fn time_to_char(
        &self,
        a: &ArrayRef,
        args: &[ColumnarValue],
        rows: usize,
    ) -> DfResult<ArrayRef> {
        let b = args[1].to_array(rows)?;
        // Dates and times as the instant they start (times on 1970-01-01).
        let b = match self.kind {
            Kind::DateToChar => arrow::compute::cast(&b, &timestamp())?,
            Kind::TimeToChar => {
                let t = b.as_primitive::<arrow::datatypes::Time64NanosecondType>();
                Arc::new(TimestampMillisecondArray::from_iter(
                    t.iter().map(|ns| ns.map(|ns| ns / 1_000_000)),
                ))
            }
            _ => b,
        };
        let (fmt, ts) = (
            a.as_string::<i32>(),
            b.as_primitive::<TimestampMillisecondType>(),
        );
        Ok(Arc::new(StringArray::from_iter((0..rows).map(|i| {
            if fmt.is_null(i) || ts.is_null(i) {
                return None;
            }
            let t = chrono::DateTime::from_timestamp_millis(ts.value(i))?;
            let pattern = java_pattern_at(fmt.value(i), Some(&t.naive_utc())).ok()?;
            Some(t.format(&pattern).to_string())
        }))))
    }
}

/// KDA's `TO_TIMESTAMP(milliseconds)`.
fn to_timestamp(a: &ArrayRef) -> ArrayRef {
    let ms = a.as_primitive::<arrow::datatypes::Int64Type>();
    Arc::new(TimestampMillisecondArray::from_iter(ms.iter()))
}

/// `UNIX_TIMESTAMP(ts)`: milliseconds since the epoch.
fn unix_timestamp(a: &ArrayRef) -> ArrayRef {
    let ts = a.as_primitive::<TimestampMillisecondType>();
    Arc::new(Int64Array::from_iter(ts.iter()))
}

/// `TSDIFF(start, end)`: end - start in milliseconds.
fn tsdiff(a: &ArrayRef, args: &[ColumnarValue], rows: usize) -> DfResult<ArrayRef> {
    let b = args[1].to_array(rows)?;
    let (a, b) = (
        a.as_primitive::<TimestampMillisecondType>(),
        b.as_primitive::<TimestampMillisecondType>(),
    );
    Ok(Arc::new(Int64Array::from_iter((0..rows).map(|i| {
        (a.is_valid(i) && b.is_valid(i)).then(|| b.value(i) - a.value(i))
    }))))
}

/// `REGEX_REPLACE(original, regex, replacement, start, occurrence)` row by row, each pattern
/// compiled once while it repeats.
fn regex_replace_rows(a: &ArrayRef, args: &[ColumnarValue], rows: usize) -> DfResult<ArrayRef> {
    let b = args[1].to_array(rows)?;
    let c = args[2].to_array(rows)?;
    let d = args[3].to_array(rows)?;
    let e = args[4].to_array(rows)?;
    let (text, re, rep) = (
        a.as_string::<i32>(),
        b.as_string::<i32>(),
        c.as_string::<i32>(),
    );
    let (start, nth) = (
        d.as_primitive::<arrow::datatypes::Int64Type>(),
        e.as_primitive::<arrow::datatypes::Int64Type>(),
    );
    let mut compiled: Option<(String, regex::Regex)> = None;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        if [
            text.is_null(i),
            re.is_null(i),
            rep.is_null(i),
            start.is_null(i),
            nth.is_null(i),
        ]
        .contains(&true)
        {
            out.push(None);
            continue;
        }
        if compiled.as_ref().is_none_or(|(p, _)| p != re.value(i)) {
            let r = regex::Regex::new(re.value(i)).map_err(|e| {
                datafusion::error::DataFusionError::Execution(format!(
                    "REGEX_REPLACE: invalid regular expression `{}`: {e}",
                    re.value(i)
                ))
            })?;
            compiled = Some((re.value(i).to_owned(), r));
        }
        let r = &compiled.as_ref().expect("compiled above").1;
        out.push(Some(regex_replace(
            text.value(i),
            r,
            rep.value(i),
            start.value(i),
            nth.value(i),
        )?));
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// KDA's `REGEX_REPLACE`: matches of `re` from character `start` (1-based) on are replaced, all of
/// them when `occurrence` is 0, else only the `occurrence`-th. `$1`… in `replacement` name groups.
fn regex_replace(
    text: &str,
    re: &regex::Regex,
    replacement: &str,
    start: i64,
    occurrence: i64,
) -> DfResult<String> {
    if start < 1 || occurrence < 0 {
        return exec_err!(
            "REGEX_REPLACE: the start position ({start}) must be at least 1 and the occurrence \
             ({occurrence}) at least 0"
        );
    }
    let at = text
        .char_indices()
        .nth(start as usize - 1)
        .map_or(text.len(), |(b, _)| b);
    let (head, tail) = text.split_at(at);
    let replacement = java_replacement(replacement);
    let replacement = replacement.as_str();
    let replaced = if occurrence == 0 {
        re.replace_all(tail, replacement).into_owned()
    } else {
        let mut out = String::with_capacity(tail.len());
        let mut last = 0;
        for (n, caps) in re.captures_iter(tail).enumerate() {
            let m = caps.get(0).expect("the whole match");
            if n as i64 + 1 == occurrence {
                out.push_str(&tail[last..m.start()]);
                caps.expand(replacement, &mut out);
                last = m.end();
                break;
            }
        }
        out.push_str(&tail[last..]);
        out
    };
    Ok(format!("{head}{replaced}"))
}

/// A Java replacement string (`$1` a group, `\$` a dollar) in the regex crate's syntax (`${1}`,
/// `$$`).
fn java_replacement(java: &str) -> String {
    let mut out = String::with_capacity(java.len() + 4);
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(x) => out.push(x),
                None => out.push('\\'),
            },
            '$' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    out.push_str("$$");
                } else {
                    out.push_str(&format!("${{{digits}}}"));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch of `text` read with a chrono `pattern` (a date alone is
/// midnight).
fn parse(text: &str, pattern: &str) -> Option<i64> {
    use chrono::format::{parse_and_remainder, Parsed, StrftimeItems};
    let mut p = Parsed::new();
    // As Java's SimpleDateFormat: text after the pattern's last field is ignored.
    parse_and_remainder(&mut p, text, StrftimeItems::new(pattern)).ok()?;
    // Fields the pattern does not give are those of 1970-01-01 00:00:00.
    let week_based =
        p.isoweek().is_some() || p.week_from_mon().is_some() || p.week_from_sun().is_some();
    if p.year().is_none()
        && p.year_div_100().is_none()
        && p.year_mod_100().is_none()
        && p.isoyear().is_none()
    {
        p.set_year(1970).ok()?;
    }
    if p.month().is_none() && p.ordinal().is_none() && !week_based {
        p.set_month(1).ok()?;
    }
    if p.day().is_none() && p.ordinal().is_none() && !week_based {
        p.set_day(1).ok()?;
    }
    match (p.hour_div_12(), p.hour_mod_12()) {
        (None, None) => p.set_hour(0).ok()?,
        // `h` without `a`: a morning hour.
        (None, Some(_)) => p.set_ampm(false).ok()?,
        _ => {}
    }
    if p.minute().is_none() {
        p.set_minute(0).ok()?;
    }
    if p.second().is_none() {
        p.set_second(0).ok()?;
    }
    match p.offset() {
        // A pattern with a zone offset: the instant it names.
        Some(_) => p.to_datetime().ok().map(|t| t.timestamp_millis()),
        None => p
            .to_naive_datetime_with_offset(0)
            .ok()
            .map(|t| t.and_utc().timestamp_millis()),
    }
}

/// A Java `SimpleDateFormat` pattern (what KDA's functions take) as a chrono format string.
/// Java's pattern letters with no chrono equivalent, which need the instant to be written: `k`
/// (hour 1-24), `K` (hour 0-11), `w` (week in year), `W` (week in month), `F` (day of week in
/// month).
const COMPUTED_LETTERS: &[char] = &['k', 'K', 'w', 'W', 'F'];

/// The value of a computed pattern letter at `t` (weeks as Java's default US calendar counts
/// them: they start on Sunday, and week 1 is the one holding January 1).
fn computed_letter(c: char, t: &chrono::NaiveDateTime) -> u32 {
    use chrono::{Datelike, Timelike};
    let sunday_based = |d: chrono::NaiveDate| d.weekday().num_days_from_sunday();
    match c {
        'k' => match t.hour() {
            0 => 24,
            h => h,
        },
        'K' => t.hour() % 12,
        'w' => {
            let date = t.date();
            // The week holding next January 1 is week 1 already.
            let next_jan1 = chrono::NaiveDate::from_ymd_opt(date.year() + 1, 1, 1);
            if next_jan1.is_some_and(|n| {
                let days = (n - date).num_days();
                days > 0 && days <= i64::from(sunday_based(n))
            }) {
                return 1;
            }
            let jan1 = date.with_ordinal(1).unwrap_or(date);
            (date.ordinal0() + sunday_based(jan1)) / 7 + 1
        }
        'W' => {
            let first = t.date().with_day(1).unwrap_or(t.date());
            (t.day0() + sunday_based(first)) / 7 + 1
        }
        _ => t.day0() / 7 + 1,
    }
}

/// A Java date pattern as a chrono format. The letters of [`COMPUTED_LETTERS`] are written as
/// their values at `at`; without an instant (to parse) they are refused, the letter returned.
fn java_pattern_at(java: &str, at: Option<&chrono::NaiveDateTime>) -> Result<String, char> {
    let chars: Vec<char> = java.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted text; '' is a quote.
            let mut j = i + 1;
            if chars.get(j) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            while j < chars.len() && chars[j] != '\'' {
                if chars[j] == '%' {
                    out.push('%');
                }
                out.push(chars[j]);
                j += 1;
            }
            i = j + 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let spec = match (c, n) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', _) => "%3f",
            ('a', _) => "%p",
            ('D', _) => "%j",
            ('u', _) => "%u",
            ('Y', 2) => "%g",
            ('Y', _) => "%G",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('z' | 'Z' | 'X', _) => "%z",
            (c, _) if COMPUTED_LETTERS.contains(&c) => {
                let t = at.ok_or(c)?;
                out.push_str(&format!("{:0n$}", computed_letter(c, t)));
                i += n;
                continue;
            }
            ('%', _) => {
                out.push_str(&"%%".repeat(n));
                i += n;
                continue;
            }
            _ => {
                for _ in 0..n {
                    out.push(c);
                }
                i += n;
                continue;
            }
        };
        out.push_str(spec);
        i += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn java_pattern(java: &str) -> String {
        java_pattern_at(java, None).unwrap()
    }

    #[test]
    fn missing_fields_default_to_the_epoch_and_trailing_text_is_ignored() {
        assert_eq!(parse("08:30", &java_pattern("HH:mm")), Some(30_600_000));
        assert_eq!(
            parse("2026-01-27 and more", &java_pattern("yyyy-MM-dd")),
            Some(1_769_472_000_000)
        );
        assert_eq!(parse("03/15", &java_pattern("MM/dd")), Some(6_307_200_000));
        assert_eq!(
            parse("07:05 PM", &java_pattern("hh:mm a")),
            Some(68_700_000)
        );
        assert_eq!(parse("07:05", &java_pattern("hh:mm")), Some(25_500_000));
    }

    #[test]
    fn letters_without_a_chrono_equivalent_are_written_from_the_instant() {
        let at = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        let write = |p: &str, t: &str| {
            let t = at(t);
            t.format(&java_pattern_at(p, Some(&t)).unwrap()).to_string()
        };
        // 2026-01-01 is a Thursday.
        assert_eq!(write("k K w W F", "2026-01-01 00:15"), "24 0 1 1 1");
        assert_eq!(write("kk:mm KK", "2026-01-01 13:05"), "13:05 01");
        // The week holding January 1 (Sunday 28 December on) is week 1 of the new year.
        assert_eq!(write("w", "2025-12-31 12:00"), "1");
        assert_eq!(write("w", "2025-12-27 12:00"), "52");
        assert_eq!(write("w W", "2026-01-04 12:00"), "2 2");
        assert_eq!(write("F 'F'", "2026-01-15 12:00"), "3 F");
        assert_eq!(java_pattern_at("yyyy w", None), Err('w'));
    }

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(java_pattern("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(java_pattern("YYYY-DDD u"), "%G-%j %u");
        assert_eq!(
            java_pattern("dd/MMM/yyyy:HH:mm:ss Z"),
            "%d/%b/%Y:%H:%M:%S %z"
        );
        assert_eq!(
            java_pattern("yyyy-MM-dd'T'HH:mm:ss.SSS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(
            parse("2026-01-27 08:30:00", &java_pattern("yyyy-MM-dd HH:mm:ss")),
            Some(1_769_502_600_000)
        );
        assert_eq!(
            parse("2026-01-27", &java_pattern("yyyy-MM-dd")),
            Some(1_769_472_000_000)
        );
        assert_eq!(parse("27/01", &java_pattern("yyyy-MM-dd")), None);
        // An offset is honoured: 22:01:02 at -0700 is 05:01:02 UTC the next day.
        assert_eq!(
            parse(
                "24/May/2004:22:01:02 -0700",
                &java_pattern("dd/MMM/yyyy:HH:mm:ss Z")
            ),
            Some(1_085_461_262_000)
        );
    }

    #[test]
    fn regex_replace_counts_from_its_start_and_picks_its_occurrence() {
        let digits = regex::Regex::new("[0-9]+").unwrap();
        assert_eq!(
            regex_replace("a1b22c333", &digits, "#", 1, 0).unwrap(),
            "a#b#c#"
        );
        assert_eq!(
            regex_replace("a1b22c333", &digits, "#", 1, 2).unwrap(),
            "a1b#c333"
        );
        assert_eq!(
            regex_replace("a1b22c333", &digits, "#", 5, 0).unwrap(),
            "a1b2#c#"
        );
        let named = regex::Regex::new("(\\w+)@(\\w+)").unwrap();
        assert_eq!(
            regex_replace("x jo@ex y", &named, "$2:$1", 1, 1).unwrap(),
            "x ex:jo y"
        );
        assert!(regex_replace("x", &digits, "#", 0, 0).is_err());
        // Java's `$1a` is group 1 then "a"; `\$` is a dollar.
        let one = regex::Regex::new("(b)").unwrap();
        assert_eq!(regex_replace("abc", &one, "$1a\\$", 1, 0).unwrap(), "aba$c");
    }
}
