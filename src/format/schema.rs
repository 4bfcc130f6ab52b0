//! Column definitions, SQL type names, JSON paths and schema inference.

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::{CsvOptions, RecordFormat};
use crate::record::Record;
use crate::{Error, Result};

/// A path into a JSON object, written `$.a.b` or `$['a']['b c']`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPath {
    segments: Vec<String>,
}

impl JsonPath {
    /// The path `$.name`: a top-level member.
    pub fn member(name: &str) -> Self {
        Self {
            segments: vec![name.to_owned()],
        }
    }

    /// The member names from the root down.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl FromStr for JsonPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Format(format!("invalid JSON path `{s}`: {why}"));
        let rest = s
            .strip_prefix('$')
            .ok_or_else(|| bad("a path starts with `$`"))?;
        let mut segments = Vec::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '.' => {
                    let start = i + 1;
                    let mut end = rest.len();
                    while let Some(&(j, c)) = chars.peek() {
                        if c == '.' || c == '[' {
                            end = j;
                            break;
                        }
                        chars.next();
                    }
                    let name = &rest[start..end];
                    if name.is_empty() {
                        return Err(bad("empty member name"));
                    }
                    segments.push(name.to_owned());
                }
                '[' => {
                    let Some((_, q)) = chars.next() else {
                        return Err(bad("unclosed `[`"));
                    };
                    if q != '\'' && q != '"' {
                        return Err(bad(
                            "array indexes are not supported; use `['name']` for members",
                        ));
                    }
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == q {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed || chars.next().map(|(_, c)| c) != Some(']') {
                        return Err(bad("unclosed `['…']`"));
                    }
                    segments.push(name);
                }
                _ => return Err(bad("expected `.` or `[`")),
            }
        }
        if segments.is_empty() {
            return Err(bad("the path names no member"));
        }
        Ok(Self { segments })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for s in &self.segments {
            if s.chars().all(|c| c.is_alphanumeric() || c == '_') {
                write!(f, ".{s}")?;
            } else {
                write!(f, "['{s}']")?;
            }
        }
        Ok(())
    }
}

/// One column of an input stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name in SQL.
    pub name: String,
    /// Arrow type of the column.
    pub data_type: DataType,
    /// Where a JSON record holds the value; `None` means the top-level member named like the column.
    pub path: Option<JsonPath>,
}

impl Column {
    /// A column read from the top-level member of the same name.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            data_type,
            path: None,
        }
    }

    /// Reads the column from `path` instead.
    pub fn with_path(mut self, path: JsonPath) -> Self {
        self.path = Some(path);
        self
    }

    /// The path the value is read from.
    pub fn effective_path(&self) -> JsonPath {
        self.path
            .clone()
            .unwrap_or_else(|| JsonPath::member(&self.name))
    }
}

/// Parses a SQL type name (`VARCHAR(32)`, `BIGINT`, `DOUBLE`, `TIMESTAMP`, `DECIMAL(10,2)`, …) or an
/// Arrow type name (`Utf8`, `Int64`, …) into an Arrow type.
///
/// Timestamps are millisecond precision in UTC: the precision of Kinesis arrival times.
pub fn parse_sql_type(name: &str) -> Result<DataType> {
    let trimmed = name.trim();
    let upper = trimmed.to_ascii_uppercase();
    let (base, args) = match upper.find('(') {
        Some(i) if upper.ends_with(')') => {
            (upper[..i].trim(), Some(&upper[i + 1..upper.len() - 1]))
        }
        _ => (upper.as_str(), None),
    };
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let t = match base {
        "VARCHAR" | "CHAR" | "CHARACTER" | "STRING" | "TEXT" | "CHARACTER VARYING" => DataType::Utf8,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INTEGER" | "INT" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "REAL" | "FLOAT" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" => DataType::Float64,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => ts,
        "TIME" => DataType::Time64(TimeUnit::Microsecond),
        "VARBINARY" | "BINARY" | "BYTEA" => DataType::Binary,
        "DECIMAL" | "NUMERIC" => {
            let (p, s) = match args {
                None => (38, 0),
                Some(a) => {
                    let mut it = a.split(',').map(|x| x.trim().parse::<u8>());
                    let p = it.next().and_then(|r| r.ok());
                    let s = it.next().map(|r| r.ok()).unwrap_or(Some(0));
                    match (p, s) {
                        (Some(p), Some(s)) if (1..=38).contains(&p) && s <= p => (p, s),
                        _ => {
                            return Err(Error::Format(format!(
                                "invalid type `{trimmed}`: DECIMAL takes (precision 1..=38, scale <= precision)"
                            )))
                        }
                    }
                }
            };
            DataType::Decimal128(p, s as i8)
        }
        _ => DataType::from_str(trimmed).map_err(|_| {
            Error::Format(format!(
                "unknown type `{trimmed}`; use a SQL type such as VARCHAR, INTEGER, BIGINT, DOUBLE, \
                 BOOLEAN, TIMESTAMP, DATE or DECIMAL(p,s)"
            ))
        })?,
    };
    Ok(t)
}

/// Infers a schema from sample records. Members keep the order in which they first appear.
///
/// Records that do not parse are skipped; an error is returned only when no record does.
pub fn infer_schema(format: &RecordFormat, sample: &[Record]) -> Result<SchemaRef> {
    match format {
        RecordFormat::Json => infer_json(sample),
        RecordFormat::Csv(opts) => infer_csv(opts, sample),
    }
}

fn infer_json(sample: &[Record]) -> Result<SchemaRef> {
    let values: Vec<serde_json::Value> = sample
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.payload()).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    if values.is_empty() {
        return Err(Error::Format(format!(
            "cannot infer a schema: none of the {} sample records is a JSON object",
            sample.len()
        )));
    }
    let mut order: Vec<String> = Vec::new();
    for v in &values {
        if let Some(obj) = v.as_object() {
            for k in obj.keys() {
                if !order.iter().any(|o| o == k) {
                    order.push(k.clone());
                }
            }
        }
    }
    let inferred =
        arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok::<_, _>))?;
    let fields: Vec<Field> = order
        .iter()
        .filter_map(|name| inferred.field_with_name(name).ok())
        .map(|f| f.clone().with_data_type(null_as_text(f.data_type())))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// A member that was null in every sampled record has no type to infer; text accepts whatever
/// value comes later (numbers and booleans keep their text), where `Null` would reject it.
fn null_as_text(t: &DataType) -> DataType {
    match t {
        DataType::Null => DataType::Utf8,
        DataType::List(item) => DataType::List(Arc::new(
            item.as_ref()
                .clone()
                .with_data_type(null_as_text(item.data_type())),
        )),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| {
                    f.as_ref()
                        .clone()
                        .with_data_type(null_as_text(f.data_type()))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn infer_csv(opts: &CsvOptions, sample: &[Record]) -> Result<SchemaRef> {
    if sample.is_empty() {
        return Err(Error::Format(
            "cannot infer a schema from an empty sample".into(),
        ));
    }
    let mut text = Vec::new();
    for r in sample {
        text.extend_from_slice(r.payload());
        text.push(b'\n');
    }
    let mut format = arrow::csv::reader::Format::default()
        .with_header(opts.has_header)
        .with_delimiter(opts.delimiter)
        .with_quote(opts.quote);
    if let Some(e) = opts.escape {
        format = format.with_escape(e);
    }
    let (schema, _) = format.infer_schema(Cursor::new(text), Some(sample.len()))?;
    Ok(Arc::new(schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn json_paths() {
        let p: JsonPath = "$.a.b".parse().unwrap();
        assert_eq!(p.segments(), ["a", "b"]);
        let p: JsonPath = "$['a b'].c".parse().unwrap();
        assert_eq!(p.segments(), ["a b", "c"]);
        assert_eq!(p.to_string(), "$['a b'].c");
        for bad in ["a.b", "$", "$.", "$.a..b", "$[0]", "$['a'"] {
            assert!(bad.parse::<JsonPath>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn sql_types() {
        assert_eq!(parse_sql_type("varchar(8)").unwrap(), DataType::Utf8);
        assert_eq!(parse_sql_type("BIGINT").unwrap(), DataType::Int64);
        assert_eq!(
            parse_sql_type("DECIMAL(10, 2)").unwrap(),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(parse_sql_type("Float64").unwrap(), DataType::Float64);
        let err = parse_sql_type("VARCHARR").unwrap_err().to_string();
        assert!(err.contains("VARCHARR"), "{err}");
        assert!(parse_sql_type("DECIMAL(40,2)").is_err());
    }

    #[test]
    fn infers_json_in_first_seen_order_skipping_bad_records() {
        let rec = |s: &'static str| Record::new(Bytes::from_static(s.as_bytes()), 0);
        let sample = [
            rec(r#"{"z": 1, "a": "x"}"#),
            rec("not json"),
            rec(r#"{"a": "y", "m": 2.5, "z": 3}"#),
        ];
        let s = infer_schema(&RecordFormat::Json, &sample).unwrap();
        let names: Vec<_> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["z", "a", "m"]);
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(2).data_type(), &DataType::Float64);
    }

    #[test]
    fn members_null_in_the_whole_sample_become_text() {
        let rec = |s: &'static str| Record::new(Bytes::from_static(s.as_bytes()), 0);
        let s = infer_schema(
            &RecordFormat::Json,
            &[rec(r#"{"a": 1, "d": null, "o": {"x": null}}"#)],
        )
        .unwrap();
        assert_eq!(s.field(1).data_type(), &DataType::Utf8);
        let DataType::Struct(inner) = s.field(2).data_type() else {
            panic!("{:?}", s.field(2))
        };
        assert_eq!(inner[0].data_type(), &DataType::Utf8);
    }

    #[test]
    fn infers_csv_with_header() {
        let rec = |s: &'static str| Record::new(Bytes::from_static(s.as_bytes()), 0);
        let opts = CsvOptions {
            has_header: true,
            delimiter: b'|',
            ..CsvOptions::default()
        };
        let s = infer_schema(&RecordFormat::Csv(opts), &[rec("sym|price"), rec("A|1.5")]).unwrap();
        assert_eq!(s.field(0).name(), "sym");
        assert_eq!(s.field(1).data_type(), &DataType::Float64);
    }
}
