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

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StructArray};
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
    [Kind::Regex, Kind::VariableColumn, Kind::W3c]
        .into_iter()
        .map(|kind| ScalarUDF::from(LogParse::new(kind)))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Regex,
    VariableColumn,
    W3c,
}

#[derive(Debug)]
struct LogParse {
    kind: Kind,
    signature: Signature,
    /// The last pattern compiled, kept: a pattern is a literal, the same for every batch.
    compiled: std::sync::Mutex<Option<(String, regex::Regex)>>,
    /// The last call's text column, other arguments and result. A query reading several columns
    /// of the row (`t.r.COLUMN1, t.r.COLUMN6`) calls the function once per column on the same
    /// batch; the later calls take the result of the first.
    last: std::sync::Mutex<Option<LastCall>>,
}

/// A call's text column, its other arguments, and its result.
type LastCall = (ArrayRef, Vec<Option<ScalarValue>>, ArrayRef);

impl PartialEq for LogParse {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for LogParse {}

impl std::hash::Hash for LogParse {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl LogParse {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
            compiled: std::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        }
    }

    /// `pattern` compiled, from the cache when it was the last one.
    fn regex(&self, pattern: &str) -> DfResult<regex::Regex> {
        let mut cache = lock(&self.compiled);
        if let Some((p, re)) = cache.as_ref() {
            if p == pattern {
                return Ok(re.clone());
            }
        }
        let re = compile(pattern)?;
        *cache = Some((pattern.to_owned(), re.clone()));
        Ok(re)
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
        let mut words = part.splitn(3, char::is_whitespace).map(str::trim);
        let (Some(raw), Some(kw), Some(ty)) = (words.next(), words.next(), words.next()) else {
            return plan_err!(
                "VARIABLE_COLUMN_LOG_PARSE: a column is `NAME TYPE type`, found `{part}`"
            );
        };
        if !kw.eq_ignore_ascii_case("TYPE") {
            return plan_err!(
                "VARIABLE_COLUMN_LOG_PARSE: a column is `NAME TYPE type`, found `{part}`"
            );
        }
        let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => quoted.to_owned(),
            None => raw.to_uppercase(),
        };
        let ty = ty.to_uppercase();
        let ty = ty.trim().trim_end_matches("NOT NULL").trim();
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
                let re = self.regex(&pattern)?;
                if re.captures_len() < 2 {
                    return plan_err!(
                        "REGEX_LOG_PARSE: the pattern `{pattern}` has no group `( … )`, so no \
                         column to return"
                    );
                }
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
        if let Some(output) = self.repeated(&arrays[0], &scalars) {
            return Ok(ColumnarValue::Array(output));
        }
        let refs: Vec<Option<&ScalarValue>> = scalars.iter().map(Option::as_ref).collect();
        let columns = self.columns(&refs)?;
        let text = arrays[0].as_string::<i32>();
        let parser = self.parser(&refs)?;
        let (builders, valid) = parse_rows(text, &parser, &columns, n);
        let array = self.rows(&columns, builders, valid)?;
        // Only a text column that is a column of the batch is the same on the next call.
        if matches!(args.args[0], ColumnarValue::Array(_)) {
            *lock(&self.last) = Some((Arc::clone(&arrays[0]), scalars, Arc::clone(&array)));
        }
        Ok(ColumnarValue::Array(array))
    }
}

impl LogParse {
    /// The last call's result, when this call has its text column and other arguments.
    fn repeated(&self, input: &ArrayRef, scalars: &[Option<ScalarValue>]) -> Option<ArrayRef> {
        let last = lock(&self.last);
        let (last_input, args, output) = last.as_ref()?;
        (Arc::ptr_eq(last_input, input) && args.as_slice() == scalars).then(|| Arc::clone(output))
    }

    /// How this function splits a line, from its literal arguments.
    fn parser(&self, refs: &[Option<&ScalarValue>]) -> DfResult<Parser> {
        let string_arg = |i: usize| -> Option<String> {
            refs.get(i).copied().flatten().and_then(|v| match v {
                ScalarValue::Utf8(s) => s.clone(),
                _ => None,
            })
        };
        Ok(match self.kind {
            Kind::Regex => {
                Parser::Regex(self.regex(&literal(refs, 1, "the pattern", &self.label())?)?)
            }
            Kind::VariableColumn => {
                let Some(delimiter) = string_arg(2).filter(|d| !d.is_empty()) else {
                    return exec_err!(
                        "VARIABLE_COLUMN_LOG_PARSE: the delimiter must be a non-empty string literal"
                    );
                };
                let quotes = string_arg(4).unwrap_or_default();
                let mut q = quotes.chars();
                Parser::Split {
                    delimiter,
                    escape: string_arg(3).and_then(|e| e.chars().next()),
                    quotes: q.next().map(|open| (open, q.next().unwrap_or(open))),
                }
            }
            Kind::W3c => Parser::W3c,
        })
    }

    /// The row array: the columns' values, cast to their types, and NULL rows where a line
    /// did not parse.
    fn rows(
        &self,
        columns: &[Column],
        builders: Vec<arrow::array::StringBuilder>,
        valid: Vec<bool>,
    ) -> DfResult<ArrayRef> {
        let nulls = NullBuffer::from(valid);
        let mut out_fields = Vec::with_capacity(columns.len());
        let mut out_arrays = Vec::with_capacity(columns.len());
        for (c, mut b) in columns.iter().zip(builders) {
            let values: ArrayRef = Arc::new(b.finish());
            out_arrays.push(self.cast(c, values)?);
            out_fields.push(Field::new(&c.name, c.data_type.clone(), true));
        }
        Ok(Arc::new(StructArray::try_new(
            Fields::from(out_fields),
            out_arrays,
            Some(nulls),
        )?))
    }

    /// A column's text values as its type.
    fn cast(&self, c: &Column, values: ArrayRef) -> DfResult<ArrayRef> {
        if c.data_type == DataType::Utf8 {
            return Ok(values);
        }
        // A value that is not of its column's type fails the row (the batch is split until the
        // failing row is found).
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
        })
    }
}

/// `m` locked, even when a panic poisoned it (what it guards is a cache).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a log-parsing function splits a line into fields.
enum Parser {
    Regex(regex::Regex),
    Split {
        delimiter: String,
        escape: Option<char>,
        quotes: Option<(char, char)>,
    },
    W3c,
}

impl Parser {
    /// The fields of `line`, into `fields`; false when the line does not parse.
    fn fields<'a>(&self, line: &'a str, fields: &mut Vec<Option<Cow<'a, str>>>) -> bool {
        match self {
            Parser::Regex(re) => match re.captures(line) {
                Some(caps) => {
                    fields.extend(
                        caps.iter()
                            .skip(1)
                            .map(|g| g.map(|m| Cow::Borrowed(m.as_str()))),
                    );
                    true
                }
                None => false,
            },
            Parser::Split {
                delimiter,
                escape,
                quotes,
            } => {
                split_fields(line, delimiter, *escape, *quotes, fields);
                true
            }
            Parser::W3c => {
                w3c_fields(line, fields);
                true
            }
        }
    }
}

/// The `n` lines of `text` parsed: one text builder per column, and whether each line parsed.
fn parse_rows(
    text: &arrow::array::StringArray,
    parser: &Parser,
    columns: &[Column],
    n: usize,
) -> (Vec<arrow::array::StringBuilder>, Vec<bool>) {
    // Each row's fields go straight into one builder per column: slices of the text where
    // they can be (no copy but the builder's), owned only where escapes were removed.
    let mut builders: Vec<arrow::array::StringBuilder> = columns
        .iter()
        .map(|_| arrow::array::StringBuilder::with_capacity(n, text.values().len() / 4))
        .collect();
    let mut valid = Vec::with_capacity(n);
    let mut fields: Vec<Option<Cow<'_, str>>> = Vec::new();
    for i in 0..n {
        fields.clear();
        let parsed = text.is_valid(i) && parser.fields(text.value(i), &mut fields);
        valid.push(parsed);
        for (k, (c, b)) in columns.iter().zip(&mut builders).enumerate() {
            match fields.get(k).and_then(|f| f.as_deref()).filter(|_| parsed) {
                Some(v) => b.append_value(match c.limit {
                    Some(limit) => cut(v, limit),
                    None => v.trim(),
                }),
                None => b.append_null(),
            }
        }
    }
    (builders, valid)
}

/// `v` cut to `limit` characters.
fn cut(v: &str, limit: usize) -> &str {
    match v.char_indices().nth(limit) {
        Some((at, _)) => &v[..at],
        None => v,
    }
}

/// `text` split at `delimiter`, into `fields`; `escape` makes the next character literal, and
/// text between the quote marks keeps its delimiters (the marks themselves are dropped).
fn split_fields<'a>(
    text: &'a str,
    delimiter: &str,
    escape: Option<char>,
    quotes: Option<(char, char)>,
    fields: &mut Vec<Option<Cow<'a, str>>>,
) {
    let special = |c: char| Some(c) == escape || quotes.is_some_and(|(o, e)| c == o || c == e);
    if !text.chars().any(special) {
        fields.extend(text.split(delimiter).map(|f| Some(Cow::Borrowed(f))));
        return;
    }
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
            fields.push(Some(Cow::Owned(std::mem::take(&mut field))));
            rest = &rest[delimiter.len()..];
            continue;
        }
        field.push(c);
        rest = &rest[c.len_utf8()..];
    }
    fields.push(Some(Cow::Owned(field)));
}

/// The fields of an access-log line, into `fields`: separated by spaces, with `[…]` and `"…"`
/// (where `\"` is a quote) each one field, without their marks.
fn w3c_fields<'a>(line: &'a str, fields: &mut Vec<Option<Cow<'a, str>>>) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            b'[' => {
                let end = line[i + 1..].find(']').map_or(line.len(), |e| i + 1 + e);
                fields.push(Some(Cow::Borrowed(&line[i + 1..end])));
                i = end + 1;
            }
            b'"' => {
                // Up to the first quote not escaped by a backslash.
                let mut j = i + 1;
                let mut escaped = false;
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' if bytes.get(j + 1) == Some(&b'"') => {
                            escaped = true;
                            j += 2;
                        }
                        b'"' => break,
                        _ => j += 1,
                    }
                }
                let inner = &line[i + 1..j.min(line.len())];
                fields.push(Some(if escaped {
                    Cow::Owned(inner.replace("\\\"", "\""))
                } else {
                    Cow::Borrowed(inner)
                }));
                i = j + 1;
            }
            _ => {
                let end = line[i..].find(' ').map_or(line.len(), |e| i + e);
                fields.push(Some(Cow::Borrowed(&line[i..end])));
                i = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: Vec<Option<Cow<'_, str>>>) -> Vec<String> {
        v.into_iter()
            .map(|f| f.map(Cow::into_owned).unwrap_or_default())
            .collect()
    }

    fn split(
        text: &str,
        delimiter: &str,
        escape: Option<char>,
        quotes: Option<(char, char)>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        split_fields(text, delimiter, escape, quotes, &mut out);
        texts(out)
    }

    fn w3c(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        w3c_fields(line, &mut out);
        texts(out)
    }

    #[test]
    fn delimited_fields_honour_escapes_and_quotes() {
        assert_eq!(split("a,b,,c", ",", None, None), ["a", "b", "", "c"]);
        assert_eq!(split(r"a\,b,c", ",", Some('\\'), None), ["a,b", "c"]);
        assert_eq!(
            split("x::'y::z'::w", "::", None, Some(('\'', '\''))),
            ["x", "y::z", "w"]
        );
        assert_eq!(split("[a|b]|c", "|", None, Some(('[', ']'))), ["a|b", "c"]);
    }

    #[test]
    fn access_log_lines_split_into_their_fields() {
        let line = r#"192.168.254.30 - John [24/May/2004:22:01:02 -0700] "GET /icons/apache_pb.gif HTTP/1.1" 304 0"#;
        assert_eq!(
            w3c(line),
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
        let f = w3c(combined);
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
        // Names whose upper case is longer or shorter than they are.
        assert_eq!(column_list("aı type INTEGER").unwrap()[0].name, "AI");
        assert_eq!(
            column_list("\"straße\" TYPE INTEGER").unwrap()[0].name,
            "straße"
        );
        assert!(column_list("a TYPE BLOB").is_err());
    }
}
