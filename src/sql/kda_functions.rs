//! Functions of the Kinesis Data Analytics SQL dialect that standard SQL lacks: `TSDIFF`,
//! `CHAR_TO_TIMESTAMP` and `TIMESTAMP_TO_CHAR` (with KDA's Java-style date patterns).
//! (`CURRENT_ROW_TIMESTAMP` is translated to `now()`.)

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
    vec![
        ScalarUDF::from(Kda::new(Kind::TsDiff)),
        ScalarUDF::from(Kda::new(Kind::CharToTimestamp)),
        ScalarUDF::from(Kda::new(Kind::TimestampToChar)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    TsDiff,
    CharToTimestamp,
    TimestampToChar,
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
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

impl ScalarUDFImpl for Kda {
    fn name(&self) -> &str {
        match self.kind {
            Kind::TsDiff => "tsdiff",
            Kind::CharToTimestamp => "char_to_timestamp",
            Kind::TimestampToChar => "timestamp_to_char",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 2 {
            return datafusion::common::plan_err!("{} takes 2 arguments", self.name());
        }
        Ok(match self.kind {
            Kind::TsDiff => vec![timestamp(), timestamp()],
            Kind::CharToTimestamp => vec![DataType::Utf8, DataType::Utf8],
            Kind::TimestampToChar => vec![DataType::Utf8, timestamp()],
        })
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::TsDiff => DataType::Int64,
            Kind::CharToTimestamp => timestamp(),
            Kind::TimestampToChar => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let a = args.args[0].to_array(rows)?;
        let b = args.args[1].to_array(rows)?;
        let out: ArrayRef = match self.kind {
            Kind::TsDiff => {
                // TSDIFF(a, b): a - b in milliseconds.
                let (a, b) = (
                    a.as_primitive::<TimestampMillisecondType>(),
                    b.as_primitive::<TimestampMillisecondType>(),
                );
                Arc::new(Int64Array::from_iter((0..rows).map(|i| {
                    (a.is_valid(i) && b.is_valid(i)).then(|| a.value(i) - b.value(i))
                })))
            }
            Kind::CharToTimestamp => {
                let (fmt, text) = (a.as_string::<i32>(), b.as_string::<i32>());
                let mut out = Vec::with_capacity(rows);
                for i in 0..rows {
                    if fmt.is_null(i) || text.is_null(i) {
                        out.push(None);
                        continue;
                    }
                    let pattern = java_pattern(fmt.value(i));
                    match parse(text.value(i), &pattern) {
                        Some(ms) => out.push(Some(ms)),
                        None => {
                            return exec_err!(
                                "CHAR_TO_TIMESTAMP: `{}` does not match the format `{}`",
                                text.value(i),
                                fmt.value(i)
                            )
                        }
                    }
                }
                Arc::new(TimestampMillisecondArray::from(out))
            }
            Kind::TimestampToChar => {
                let (fmt, ts) = (
                    a.as_string::<i32>(),
                    b.as_primitive::<TimestampMillisecondType>(),
                );
                Arc::new(StringArray::from_iter((0..rows).map(|i| {
                    if fmt.is_null(i) || ts.is_null(i) {
                        return None;
                    }
                    let t = chrono::DateTime::from_timestamp_millis(ts.value(i))?;
                    Some(t.format(&java_pattern(fmt.value(i))).to_string())
                })))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Milliseconds since the epoch of `text` read with a chrono `pattern` (a date alone is
/// midnight).
fn parse(text: &str, pattern: &str) -> Option<i64> {
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, pattern) {
        return Some(t.and_utc().timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(text, pattern)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// A Java `SimpleDateFormat` pattern (what KDA's functions take) as a chrono format string.
pub(crate) fn java_pattern(java: &str) -> String {
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
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('z' | 'Z' | 'X', _) => "%z",
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(java_pattern("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
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
    }
}
