//! Kinesis Data Analytics application files: the input schema (and the application code) as a
//! KDA user has them.
//!
//! Three shapes load, in YAML or JSON:
//! - KDA's `DescribeApplication` output (`{"ApplicationDetail": {"ApplicationCode": …,
//!   "InputDescriptions": [{"InputSchema": …}]}}`), the `kinesisanalyticsv2` one (code and inputs
//!   under `ApplicationConfigurationDescription`), the `CreateApplication` requests of both, or
//!   just an `InputSchema` (`RecordFormat`, `RecordEncoding`,
//!   `RecordColumns: [{Name, SqlType, Mapping}]`);
//! - the original Streaming Analytics Pipeline solution's configuration file: `InputFormatType`
//!   (`JSON` or `CSV`), `RecordRowPath`, `RecordColumnDelimiter`, `RecordRowDelimiter`,
//!   `columns: [{Name, SqlType, Mapping}]`, `OutputFormatType`, and the SQL (`SQL`,
//!   `ApplicationCode` or `SqlCode`).

use std::path::Path;

use serde_json::Value;

use crate::format::{parse_sql_type, Column, CsvOptions, JsonPath, RecordFormat};
use crate::{Error, Result};

/// What an application file says.
#[derive(Debug, Clone)]
pub struct KdaApplication {
    /// The application code, when the file has it.
    pub sql: Option<String>,
    /// The record format.
    pub format: RecordFormat,
    /// The input columns, with their JSON paths.
    pub columns: Vec<Column>,
    /// `JSON` or `CSV`, when the file says how all output is written (the original solution's
    /// `OutputFormatType`).
    pub output_format: Option<String>,
    /// Each output's stream and its `JSON` or `CSV` (`DestinationSchema`).
    pub output_formats: Vec<(String, String)>,
    /// The input's in-application stream when its `NamePrefix` is not `SOURCE_SQL_STREAM`
    /// (`{NamePrefix}_001`); [`KdaApplication::code`] renames it to `SOURCE_SQL_STREAM_001`.
    pub input_stream: Option<String>,
    /// The application's reference tables.
    pub references: Vec<KdaReference>,
}

fn get<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| v.get(*k))
}

fn text(v: &Value, keys: &[&str]) -> Option<String> {
    get(v, keys).and_then(Value::as_str).map(str::to_owned)
}

impl KdaApplication {
    /// `code` (this application's, or another file's) with the input stream named as rivulet
    /// names it: `SOURCE_SQL_STREAM_001`, whatever `NamePrefix` the application gave it.
    pub fn code(&self, code: &str) -> Result<String> {
        match &self.input_stream {
            Some(name) => super::rename_stream(code, name, "SOURCE_SQL_STREAM_001"),
            None => Ok(code.to_owned()),
        }
    }

    /// Reads an application file.
    pub fn load(path: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&raw).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses an application file's text (YAML or JSON).
    pub fn parse(raw: &str) -> Result<Self> {
        let v: Value = serde_yaml::from_str(raw)
            .map_err(|e| Error::Format(format!("not a YAML or JSON application file: {e}")))?;
        let detail = v.get("ApplicationDetail").unwrap_or(&v);
        // kinesisanalyticsv2 nests code and inputs in the application's configuration
        // (`…ConfigurationDescription` as described, `ApplicationConfiguration` as created).
        let v2 = get(
            detail,
            &[
                "ApplicationConfigurationDescription",
                "ApplicationConfiguration",
            ],
        );
        let v2_sql = v2.and_then(|c| {
            get(
                c,
                &[
                    "SqlApplicationConfigurationDescription",
                    "SqlApplicationConfiguration",
                ],
            )
        });
        let sql = text(detail, &["ApplicationCode", "SQL", "Sql", "sql", "SqlCode"])
            .or_else(|| v2.and_then(v2_code));
        // Inputs, reference tables and outputs: v2's in its SQL configuration, v1's in the
        // application (described or as created).
        let sections = [v2_sql, Some(detail)];
        let input = sections
            .into_iter()
            .flatten()
            .find_map(|c| get(c, &["InputDescriptions", "Inputs"]).and_then(|d| d.get(0)));
        let input_stream = input
            .and_then(|i| text(i, &["NamePrefix"]))
            .filter(|p| p != "SOURCE_SQL_STREAM")
            .map(|p| format!("{p}_001"));
        let schema = input
            .and_then(|d| d.get("InputSchema"))
            .or_else(|| detail.get("InputSchema"))
            .or_else(|| detail.get("RecordColumns").map(|_| detail));
        let (kind, row_path, col_delim, row_delim, columns) = match schema {
            Some(s) => schema_parts(s),
            None => (
                text(detail, &["InputFormatType"]).unwrap_or_else(|| "JSON".into()),
                text(detail, &["RecordRowPath"]),
                text(detail, &["RecordColumnDelimiter"]),
                text(detail, &["RecordRowDelimiter"]),
                get(detail, &["columns", "Columns", "RecordColumns"]),
            ),
        };
        let columns = columns
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Format("the application file lists no input columns".into()))?;
        let (format, out) = read_schema(&kind, row_path, col_delim, row_delim, columns)?;
        let references = references(sections)?;
        // The output format: the original solution's OutputFormatType, and each output's
        // DestinationSchema.
        let output_format = text(detail, &["OutputFormatType"]);
        let output_formats = output_formats(sections);
        Ok(Self {
            sql,
            format,
            columns: out,
            output_format,
            output_formats,
            input_stream,
            references,
        })
    }
}

/// The application code of a kinesisanalyticsv2 configuration.
fn v2_code(configuration: &Value) -> Option<String> {
    get(
        configuration,
        &[
            "ApplicationCodeConfigurationDescription",
            "ApplicationCodeConfiguration",
        ],
    )
    .and_then(|c| get(c, &["CodeContentDescription", "CodeContent"]))
    .and_then(|c| text(c, &["TextContent"]))
}

/// The reference tables of the sections that list them.
fn references(sections: [Option<&Value>; 2]) -> Result<Vec<KdaReference>> {
    let mut references = Vec::new();
    for list in sections.into_iter().flatten().filter_map(|c| {
        get(
            c,
            &["ReferenceDataSourceDescriptions", "ReferenceDataSources"],
        )
        .and_then(Value::as_array)
    }) {
        for r in list {
            references.push(KdaReference::parse(r)?);
        }
    }
    Ok(references)
}

/// Each output's stream and its `DestinationSchema`'s format, from the sections that list them.
fn output_formats(sections: [Option<&Value>; 2]) -> Vec<(String, String)> {
    sections
        .into_iter()
        .flatten()
        .filter_map(|c| get(c, &["OutputDescriptions", "Outputs"]).and_then(Value::as_array))
        .flatten()
        .filter_map(|o| {
            let format = o
                .get("DestinationSchema")
                .and_then(|d| text(d, &["RecordFormatType"]))?;
            Some((text(o, &["Name"])?, format))
        })
        .collect()
}

/// A record format and its columns, from a schema's parts.
fn read_schema(
    kind: &str,
    row_path: Option<String>,
    col_delim: Option<String>,
    row_delim: Option<String>,
    columns: &[Value],
) -> Result<(RecordFormat, Vec<Column>)> {
    let csv = match kind.to_ascii_uppercase().as_str() {
        "JSON" => false,
        "CSV" => true,
        other => {
            return Err(Error::Format(format!(
                "input format `{other}` is not JSON or CSV"
            )))
        }
    };
    if let Some(p) = row_path.as_deref().filter(|p| *p != "$") {
        return Err(Error::Format(format!(
            "RecordRowPath `{p}` is not supported yet: each record must be one row (`$`)"
        )));
    }
    if let Some(d) = row_delim.as_deref().filter(|d| *d != "\n" && *d != "\\n") {
        return Err(Error::Format(format!(
            "RecordRowDelimiter {d:?} is not supported: rows end with a newline"
        )));
    }
    let mut out = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let name = text(c, &["Name", "name"])
            .ok_or_else(|| Error::Format(format!("input column {i} has no Name")))?;
        let ty = text(c, &["SqlType", "sqlType", "Type"])
            .ok_or_else(|| Error::Format(format!("input column {name} has no SqlType")))?;
        let data_type =
            parse_sql_type(&ty).map_err(|e| Error::Format(format!("input column {name}: {e}")))?;
        let mut column = Column::new(&name, data_type);
        if let (false, Some(m)) = (csv, text(c, &["Mapping", "mapping"])) {
            let path: JsonPath = m
                .parse()
                .map_err(|e| Error::Format(format!("input column {name}: {e}")))?;
            column = column.with_path(path);
        }
        out.push(column);
    }
    let format = if csv {
        let delimiter = match col_delim.as_deref() {
            None => b',',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some("\\t") => b'\t',
            Some(d) => {
                return Err(Error::Format(format!(
                    "RecordColumnDelimiter {d:?} is not one character"
                )))
            }
        };
        RecordFormat::Csv(CsvOptions {
            delimiter,
            has_header: false,
            ..CsvOptions::default()
        })
    } else {
        RecordFormat::Json
    };
    Ok((format, out))
}

/// The parts of a KDA `InputSchema` / `ReferenceSchema` object.
#[allow(clippy::type_complexity)]
fn schema_parts(
    s: &Value,
) -> (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<&Value>,
) {
    let fmt = s.get("RecordFormat");
    let kind = fmt
        .and_then(|f| text(f, &["RecordFormatType"]))
        .unwrap_or_else(|| "JSON".into());
    let mapping = fmt.and_then(|f| f.get("MappingParameters"));
    let json = mapping.and_then(|m| m.get("JSONMappingParameters"));
    let csv = mapping.and_then(|m| m.get("CSVMappingParameters"));
    (
        kind,
        json.and_then(|j| text(j, &["RecordRowPath"])),
        csv.and_then(|c| text(c, &["RecordColumnDelimiter"])),
        csv.and_then(|c| text(c, &["RecordRowDelimiter"])),
        s.get("RecordColumns"),
    )
}

/// A reference table of an application: its name, where KDA read it, and its schema.
#[derive(Debug, Clone)]
pub struct KdaReference {
    /// The table's name in the application code.
    pub table: String,
    /// Where KDA read it: `s3://bucket/key`, from the bucket's ARN and the file key.
    pub location: Option<String>,
    /// The file's record format.
    pub format: RecordFormat,
    /// Its columns, typed.
    pub columns: Vec<Column>,
}

impl KdaReference {
    fn parse(r: &Value) -> Result<Self> {
        let table = text(r, &["TableName"])
            .ok_or_else(|| Error::Format("a reference data source has no TableName".into()))?;
        let s3 = get(
            r,
            &["S3ReferenceDataSourceDescription", "S3ReferenceDataSource"],
        );
        let location = s3.and_then(|s| {
            let bucket = text(s, &["BucketARN"])?;
            let bucket = bucket.rsplit(':').next().unwrap_or(&bucket).to_owned();
            Some(format!("s3://{bucket}/{}", text(s, &["FileKey"])?))
        });
        let schema_value = r.get("ReferenceSchema").ok_or_else(|| {
            Error::Format(format!("reference table {table} has no ReferenceSchema"))
        })?;
        let (kind, row_path, col_delim, row_delim, columns) = schema_parts(schema_value);
        let columns = columns
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Format(format!("reference table {table} lists no columns")))?;
        let (format, columns) = read_schema(&kind, row_path, col_delim, row_delim, columns)
            .map_err(|e| Error::Format(format!("reference table {table}: {e}")))?;
        Ok(Self {
            table,
            location,
            format,
            columns,
        })
    }

    /// The table's rows from its file's bytes: one record per line, typed by the schema. A first
    /// line that names the columns (a CSV header) is skipped; a line that does not decode is an
    /// error naming it.
    pub fn rows(&self, bytes: &[u8]) -> Result<arrow::array::RecordBatch> {
        let text = String::from_utf8_lossy(bytes);
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if let (RecordFormat::Csv(o), Some(first)) = (&self.format, lines.first()) {
            let delimiter = char::from(o.delimiter);
            let names: Vec<String> = first
                .split(delimiter)
                .map(|n| n.trim().trim_matches('"').to_ascii_uppercase())
                .collect();
            let header = names.len() == self.columns.len()
                && names
                    .iter()
                    .zip(&self.columns)
                    .all(|(n, c)| *n == c.name.to_ascii_uppercase());
            if header {
                lines.remove(0);
            }
        }
        let records: Vec<crate::Record> = lines
            .iter()
            .map(|l| crate::Record::new(bytes::Bytes::from(l.to_string()), 0))
            .collect();
        let mut decoder = crate::RecordDecoder::builder(self.format.clone())
            .with_columns(self.columns.clone())
            .with_batch_size(records.len().max(1))
            .build()?;
        let out = decoder.decode(&records)?;
        if let Some(f) = out.failures.first() {
            return Err(Error::Format(format!(
                "reference table {}, row {}: {}",
                self.table,
                f.index + 1,
                f.reason
            )));
        }
        // The decoder adds ROWTIME, which a table does not have.
        let keep: Vec<usize> = (0..out.batch.num_columns())
            .filter(|&i| out.batch.schema().field(i).name() != crate::format::ROWTIME)
            .collect();
        Ok(out.batch.project(&keep)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_application_output_loads() {
        let app = KdaApplication::parse(
            r#"{"ApplicationDetail": {
                 "ApplicationCode": "CREATE OR REPLACE STREAM ...",
                 "InputDescriptions": [{"NamePrefix": "SOURCE_SQL_STREAM", "InputSchema": {
                   "RecordFormat": {"RecordFormatType": "JSON",
                     "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
                   "RecordEncoding": "UTF-8",
                   "RecordColumns": [
                     {"Name": "TICKER_SYMBOL", "Mapping": "$.ticker_symbol", "SqlType": "VARCHAR(4)"},
                     {"Name": "PRICE", "Mapping": "$.quote.price", "SqlType": "DOUBLE"}]}}]}}"#,
        )
        .unwrap();
        assert!(app.sql.unwrap().starts_with("CREATE OR REPLACE STREAM"));
        assert_eq!(app.columns.len(), 2);
        assert_eq!(app.columns[1].name, "PRICE");
        assert_eq!(
            app.columns[1].effective_path().segments(),
            ["quote", "price"]
        );
        assert!(matches!(app.format, RecordFormat::Json));
    }

    #[test]
    fn kinesisanalyticsv2_descriptions_and_create_requests_load() {
        let code = "CREATE OR REPLACE STREAM \"D\" (a INTEGER);\n\
                    CREATE OR REPLACE PUMP p AS INSERT INTO \"D\" SELECT STREAM a FROM \"TRADES_001\";";
        let schema = r#"{"RecordFormat": {"RecordFormatType": "CSV",
              "MappingParameters": {"CSVMappingParameters":
                {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": "|"}}},
            "RecordColumns": [{"Name": "A", "SqlType": "INTEGER"}]}"#;
        let described = format!(
            r#"{{"ApplicationDetail": {{"RuntimeEnvironment": "SQL-1_0",
                "ApplicationConfigurationDescription": {{
                  "ApplicationCodeConfigurationDescription": {{"CodeContentType": "PLAINTEXT",
                    "CodeContentDescription": {{"TextContent": {code:?}}}}},
                  "SqlApplicationConfigurationDescription": {{
                    "InputDescriptions": [{{"InputId": "1.1", "NamePrefix": "TRADES",
                      "InputSchema": {schema}}}],
                    "OutputDescriptions": [{{"Name": "D",
                      "DestinationSchema": {{"RecordFormatType": "CSV"}}}}]}}}}}}}}"#
        );
        let created = format!(
            r#"{{"ApplicationName": "a", "RuntimeEnvironment": "SQL-1_0",
                "ApplicationConfiguration": {{
                  "ApplicationCodeConfiguration": {{"CodeContentType": "PLAINTEXT",
                    "CodeContent": {{"TextContent": {code:?}}}}},
                  "SqlApplicationConfiguration": {{
                    "Inputs": [{{"NamePrefix": "TRADES", "InputSchema": {schema}}}],
                    "Outputs": [{{"Name": "D",
                      "DestinationSchema": {{"RecordFormatType": "CSV"}}}}]}}}}}}"#
        );
        for text in [described, created] {
            let app = KdaApplication::parse(&text).unwrap();
            assert_eq!(app.sql.as_deref(), Some(code));
            assert!(matches!(app.format, RecordFormat::Csv(ref o) if o.delimiter == b'|'));
            assert_eq!(app.columns[0].name, "A");
            assert_eq!(app.output_formats, [("D".to_owned(), "CSV".to_owned())]);
            assert_eq!(app.input_stream.as_deref(), Some("TRADES_001"));
            assert!(app
                .code(code)
                .unwrap()
                .ends_with("FROM \"SOURCE_SQL_STREAM_001\";"));
        }
    }

    #[test]
    fn the_original_solutions_yaml_loads_and_mistakes_are_named() {
        let app = KdaApplication::parse(
            "InputFormatType: CSV\nRecordColumnDelimiter: \";\"\nRecordRowDelimiter: \"\\n\"\n\
             columns:\n  - Name: car\n    SqlType: VARCHAR(8)\n  - Name: engine_temp\n    SqlType: INTEGER\n\
             OutputFormatType: JSON\nSQL: |\n  CREATE OR REPLACE STREAM \"X\" (a INTEGER);\n",
        )
        .unwrap();
        assert!(matches!(app.format, RecordFormat::Csv(ref o) if o.delimiter == b';'));
        assert_eq!(app.columns[0].name, "car");
        assert_eq!(app.output_format.as_deref(), Some("JSON"));
        assert!(app.sql.unwrap().contains("CREATE OR REPLACE STREAM"));
        // Every KDA type loads.
        let all = KdaApplication::parse(
            "columns:\n  - {Name: a, SqlType: TIME, Mapping: $.a}\n  - {Name: b, SqlType: VARBINARY(8), Mapping: $.b}\n",
        )
        .unwrap();
        assert_eq!(all.columns.len(), 2);
        for bad in [
            "InputFormatType: AVRO\ncolumns: []\n",
            "columns:\n  - Name: a\n",
            "RecordRowPath: \"$.records[0:]\"\ncolumns: []\n",
            "nothing: here\n",
        ] {
            assert!(KdaApplication::parse(bad).is_err(), "{bad}");
        }
    }
}
