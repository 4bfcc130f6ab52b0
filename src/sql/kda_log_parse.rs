//! The log-parsing functions of the Kinesis Data Analytics SQL dialect. Each returns a row (a
//! struct) whose columns a query reads by name, `(REGEX_LOG_PARSE(line, '(\w+) (\d+)')).COLUMN1`
//! or `t.r.COLUMN1` after `… AS r` in a nested query:
//!
//! - `REGEX_LOG_PARSE(text, 'regex')`: `COLUMN1` … `COLUMNn`, one per capturing group, when the
//!   whole text matches; a NULL row otherwise.
//! - `VARIABLE_COLUMN_LOG_PARSE(text, columns, 'delimiter' [, 'escape', 'quotes'])`: the text
//!   split at the delimiter; `columns` is a count (`COLUMN1` …) or a list
//!   `'NAME TYPE type, …'` whose values are cast to their types.
//! - `W3C_LOG_PARSE(text, 'COMMON' | 'COMMON WITH VHOST' | 'NCSA EXTENDED')`: the fields of a
//!   web server's access-log line, `[…]` and `"…"` taken as one field without their marks.
//!
//! Text columns are `VARCHAR(1024)` (longer values are cut). A value that does not cast to its
//! column's type fails the row, which goes to the error output with the reason.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray, StructArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// The longest value of a text column, as KDA's `VARCHAR(1024)`.
const TEXT_LIMIT: usize = 1024;

/// The functions, for the SQL session.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(LogParse::new(Kind::Regex)),
        ScalarUDF::from(LogParse::new(Kind::VariableColumn)),
        ScalarUDF::from(LogParse::new(Kind::W3c)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Regex,
    VariableColumn,
    W3c,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LogParse {
    kind: Kind,
    signature: Signature,
}

impl LogParse {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// A column of the row a parser returns: its name and type (`Utf8` with a length limit for text).
#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: String,
    data_type: DataType,
    /// For text: the longest value kept.
    limit: Option<usize>,
}

fn text_columns(n: usize) -> Vec<Column> {
    (1..=n)
        .map(|i| Column {
            name: format!("COLUMN{i}"),
            data_type: DataType::Utf8,
            limit: Some(TEXT_LIMIT),
        })
        .collect()
}

/// `'NAME TYPE type [NOT NULL], …'`, as `VARIABLE_COLUMN_LOG_PARSE` takes its columns.
fn column_list(text: &str) -> DfResult<Vec<Column>> {
    let mut out = Vec::new();
    // Split at commas outside parentheses (DECIMAL(10,2)).
    let mut depth = 0;
    let mut parts = vec![String::new()];
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("one part").push(c);
    }
    for part in parts {
        let part = part.trim();
        let upper = part.to_uppercase();
        let Some(at) = upper.find(" TYPE ") else {
            return plan_err!(
                "VARIABLE_COLUMN_LOG_PARSE: a column is `NAME TYPE type`, found `{part}`"
            );
        };
        let raw = part[..at].trim();
        let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => quoted.to_owned(),
            None => raw.to_uppercase(),
        };
        let ty = upper[at + 6..].trim().trim_end_matches("NOT NULL").trim();
        let (data_type, limit) = sql_type(ty).ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!(
                "VARIABLE_COLUMN_LOG_PARSE: column {name} has type {ty}, which is not a KDA type"
            ))
        })?;
        out.push(Column {
            name,
            data_type,
            limit,
        });
    }
    Ok(out)
}

/// A KDA type name as an Arrow type (and, for text, its length).
fn sql_type(ty: &str) -> Option<(DataType, Option<usize>)> {
    let (base, params) = match ty.find('(') {
        Some(i) => (
            ty[..i].trim(),
            ty[i + 1..]
                .trim_end_matches(')')
                .split(',')
                .map(|p| p.trim().parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()?,
        ),
        None => (ty, Vec::new()),
    };
    Some(match base {
        "VARCHAR" | "CHAR" | "CHARACTER VARYING" | "CHARACTER" => (
            DataType::Utf8,
            Some(params.first().map_or(TEXT_LIMIT, |n| *n as usize)),
        ),
        "INTEGER" | "INT" => (DataType::Int32, None),
        "BIGINT" => (DataType::Int64, None),
        "SMALLINT" => (DataType::Int16, None),
        "TINYINT" => (DataType::Int8, None),
        "DOUBLE" | "DOUBLE PRECISION" => (DataType::Float64, None),
        "REAL" | "FLOAT" => (DataType::Float32, None),
        "BOOLEAN" => (DataType::Boolean, None),
        "DATE" => (DataType::Date32, None),
        "TIMESTAMP" => (DataType::Timestamp(TimeUnit::Millisecond, None), None),
        "DECIMAL" | "NUMERIC" => {
            let p = params.first().copied().unwrap_or(38).min(38) as u8;
            let s = params.get(1).copied().unwrap_or(0).min(u32::from(p)) as i8;
            (DataType::Decimal128(p, s), None)
        }
        _ => return None,
    })
}

/// The W3C formats `W3C_LOG_PARSE` reads, and their field counts.
const W3C_FORMATS: &[(&str, usize)] = &[
    ("COMMON", 7),
    ("COMMON WITH VHOST", 8),
    ("NCSA EXTENDED", 9),
];

fn literal(args: &[Option<&ScalarValue>], i: usize, what: &str, name: &str) -> DfResult<String> {
    match args.get(i).copied().flatten() {
        Some(ScalarValue::Utf8(Some(s)))
        | Some(ScalarValue::LargeUtf8(Some(s)))
        | Some(ScalarValue::Utf8View(Some(s))) => Ok(s.clone()),
        _ => plan_err!("{name}: {what} must be a string literal"),
    }
}

/// Java's regex syntax as far as Rust's `regex` shares it; what it does not is refused.
fn compile(pattern: &str) -> DfResult<regex::Regex> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        datafusion::error::DataFusionError::Plan(format!(
            "REGEX_LOG_PARSE: the pattern `{pattern}` is not supported ({e}); back-references, \
             look-around and possessive quantifiers are not"
        ))
    })
}

impl LogParse {
    /// The name as KDA spells it, for messages.
    fn label(&self) -> String {
        self.name().to_uppercase()
    }

    fn columns(&self, scalars: &[Option<&ScalarValue>]) -> DfResult<Vec<Column>> {
        match self.kind {
            Kind::Regex => {
                let pattern = literal(scalars, 1, "the pattern", &self.label())?;
                let re = compile(&pattern)?;
                Ok(text_columns(re.captures_len() - 1))
            }
            Kind::VariableColumn => match scalars.get(1).copied().flatten() {
                Some(v) if v.data_type().is_integer() => {
                    let n = match v.cast_to(&DataType::Int64)? {
                        ScalarValue::Int64(Some(n)) if (1..=1000).contains(&n) => n as usize,
                        _ => return plan_err!("VARIABLE_COLUMN_LOG_PARSE: 1 to 1000 columns"),
                    };
                    Ok(text_columns(n))
                }
                _ => column_list(&literal(
                    scalars,
                    1,
                    "the columns (a count or 'NAME TYPE type, …')",
                    &self.label(),
                )?),
            },
            Kind::W3c => {
                let format = literal(scalars, 1, "the format", &self.label())?;
                let wanted = format.trim().to_uppercase();
                match W3C_FORMATS.iter().find(|(f, _)| *f == wanted) {
                    Some((_, n)) => Ok(text_columns(*n)),
                    None => plan_err!(
                        "W3C_LOG_PARSE: format '{format}' is not supported; the formats are {}",
                        W3C_FORMATS
                            .iter()
                            .map(|(f, _)| format!("'{f}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        }
    }
}

impl ScalarUDFImpl for LogParse {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Regex => "regex_log_parse",
            Kind::VariableColumn => "variable_column_log_parse",
            Kind::W3c => "w3c_log_parse",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let counts: &[usize] = match self.kind {
            Kind::Regex | Kind::W3c => &[2],
            Kind::VariableColumn => &[3, 4, 5],
        };
        if !counts.contains(&arg_types.len()) {
            return plan_err!(
                "{} takes {} arguments, not {}",
                self.label(),
                counts
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
                arg_types.len()
            );
        }
        Ok(arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if self.kind == Kind::VariableColumn && i == 1 && t.is_integer() {
                    DataType::Int64
                } else {
                    DataType::Utf8
                }
            })
            .collect())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        exec_err!("{}: the return type depends on its arguments", self.label())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let fields: Fields = self
            .columns(args.scalar_arguments)?
            .into_iter()
            .map(|c| Field::new(c.name, c.data_type, true))
            .collect();
        Ok(Arc::new(Field::new(
            self.label(),
            DataType::Struct(fields),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<DfResult<_>>()?;
        let scalars: Vec<Option<ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s.clone()),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let refs: Vec<Option<&ScalarValue>> = scalars.iter().map(Option::as_ref).collect();
        let columns = self.columns(&refs)?;
        let text = arrays[0].as_string::<i32>();
        let string_arg = |i: usize| -> Option<String> {
            refs.get(i).copied().flatten().and_then(|v| match v {
                ScalarValue::Utf8(s) => s.clone(),
                _ => None,
            })
        };
        // Each row's fields, or None for a NULL row.
        let rows: Vec<Option<Vec<Option<String>>>> = match self.kind {
            Kind::Regex => {
                let re = compile(&literal(&refs, 1, "the pattern", &self.label())?)?;
                text.iter()
                    .map(|v| {
                        v.and_then(|v| re.captures(v)).map(|caps| {
                            (1..caps.len())
                                .map(|g| caps.get(g).map(|m| m.as_str().to_owned()))
                                .collect()
                        })
                    })
                    .collect()
            }
            Kind::VariableColumn => {
                let Some(delimiter) = string_arg(2).filter(|d| !d.is_empty()) else {
                    return exec_err!(
                        "VARIABLE_COLUMN_LOG_PARSE: the delimiter must be a non-empty string literal"
                    );
                };
                let escape = string_arg(3).and_then(|e| e.chars().next());
                let quotes = string_arg(4).unwrap_or_default();
                let mut q = quotes.chars();
                let quotes = q.next().map(|open| (open, q.next().unwrap_or(open)));
                text.iter()
                    .map(|v| v.map(|v| split_fields(v, &delimiter, escape, quotes)))
                    .collect()
            }
            Kind::W3c => text.iter().map(|v| v.map(w3c_fields)).collect(),
        };
        let nulls = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
        let mut out_fields = Vec::with_capacity(columns.len());
        let mut out_arrays = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            let values: StringArray = rows
                .iter()
                .map(|r| {
                    r.as_ref()
                        .and_then(|f| f.get(i).cloned().flatten())
                        .map(|v| match c.limit {
                            Some(limit) => v.chars().take(limit).collect(),
                            None => v.trim().to_owned(),
                        })
                })
                .collect();
            let values: ArrayRef = Arc::new(values);
            let array = if c.data_type == DataType::Utf8 {
                values
            } else {
                // A value that is not of its column's type fails the row (the batch is split
                // until the failing row is found).
                let options = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(&values, &c.data_type, &options).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "{}: column {}: {e}",
                        self.label(),
                        c.name
                    ))
                })?
            };
            out_fields.push(Field::new(&c.name, c.data_type.clone(), true));
            out_arrays.push(array);
        }
        let array = StructArray::try_new(Fields::from(out_fields), out_arrays, Some(nulls))?;
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// `text` split at `delimiter`; `escape` makes the next character literal, and text between the
/// quote marks keeps its delimiters (the marks themselves are dropped).
fn split_fields(
    text: &str,
    delimiter: &str,
    escape: Option<char>,
    quotes: Option<(char, char)>,
) -> Vec<Option<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if Some(c) == escape {
            let mut it = rest.chars();
            it.next();
            if let Some(next) = it.next() {
                field.push(next);
                rest = &rest[c.len_utf8() + next.len_utf8()..];
                continue;
            }
        }
        match quotes {
            Some((open, _)) if !quoted && c == open => {
                quoted = true;
                rest = &rest[c.len_utf8()..];
                continue;
            }
            Some((_, close)) if quoted && c == close => {
                quoted = false;
                rest = &rest[c.len_utf8()..];
                continue;
            }
            _ => {}
        }
        if !quoted && rest.starts_with(delimiter) {
            fields.push(Some(std::mem::take(&mut field)));
            rest = &rest[delimiter.len()..];
            continue;
        }
        field.push(c);
        rest = &rest[c.len_utf8()..];
    }
    fields.push(Some(field));
    fields
}

/// The fields of an access-log line: separated by spaces, with `[…]` and `"…"` (where `\"` is a
/// quote) each one field, without their marks.
fn w3c_fields(line: &str) -> Vec<Option<String>> {
    let mut fields = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut field = String::new();
        match c {
            '[' => {
                chars.next();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    field.push(c);
                }
            }
            '"' => {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' if chars.peek() == Some(&'"') => {
                            field.push('"');
                            chars.next();
                        }
                        '"' => break,
                        c => field.push(c),
                    }
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    field.push(c);
                    chars.next();
                }
            }
        }
        fields.push(Some(field));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: Vec<Option<String>>) -> Vec<String> {
        v.into_iter().map(Option::unwrap_or_default).collect()
    }

    #[test]
    fn delimited_fields_honour_escapes_and_quotes() {
        assert_eq!(
            texts(split_fields("a,b,,c", ",", None, None)),
            ["a", "b", "", "c"]
        );
        assert_eq!(
            texts(split_fields(r"a\,b,c", ",", Some('\\'), None)),
            ["a,b", "c"]
        );
        assert_eq!(
            texts(split_fields("x::'y::z'::w", "::", None, Some(('\'', '\'')))),
            ["x", "y::z", "w"]
        );
        assert_eq!(
            texts(split_fields("[a|b]|c", "|", None, Some(('[', ']')))),
            ["a|b", "c"]
        );
    }

    #[test]
    fn access_log_lines_split_into_their_fields() {
        let line = r#"192.168.254.30 - John [24/May/2004:22:01:02 -0700] "GET /icons/apache_pb.gif HTTP/1.1" 304 0"#;
        assert_eq!(
            texts(w3c_fields(line)),
            [
                "192.168.254.30",
                "-",
                "John",
                "24/May/2004:22:01:02 -0700",
                "GET /icons/apache_pb.gif HTTP/1.1",
                "304",
                "0"
            ]
        );
        let combined = r#"h - - [d] "r \"q\"" 200 5 "http://ref" "Mozilla/5.0 (X11)""#;
        let f = texts(w3c_fields(combined));
        assert_eq!(f.len(), 9);
        assert_eq!(f[4], "r \"q\"");
        assert_eq!(f[8], "Mozilla/5.0 (X11)");
    }

    #[test]
    fn column_lists_name_and_type_the_columns() {
        let cols = column_list(
            "col_1 TYPE VARCHAR(16), \"Amount\" TYPE DECIMAL(10,2), n TYPE INTEGER NOT NULL",
        )
        .unwrap();
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["COL_1", "Amount", "N"]
        );
        assert_eq!(cols[0].limit, Some(16));
        assert_eq!(cols[1].data_type, DataType::Decimal128(10, 2));
        assert_eq!(cols[2].data_type, DataType::Int32);
        assert!(column_list("a VARCHAR(3)").is_err());
        assert!(column_list("a TYPE BLOB").is_err());
    }
}
