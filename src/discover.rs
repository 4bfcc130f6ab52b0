//! Schema discovery, as Kinesis Data Analytics' `DiscoverInputSchema` did: sample records (JSON
//! lines or CSV) and propose the input's columns, with KDA's SQL types and JSON mappings.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{Error, Result};

/// A proposed input column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredColumn {
    /// The column's name, as KDA named discovered columns: the member's name as written (a
    /// nested member's path joined with `_`: `$.quote.price` is `quote_price`), with characters
    /// other than letters, digits and `_` made `_`, and `COL_` before a name that starts with a
    /// digit; for CSV the header's name, or `COL1`, `COL2`, …. (SQL then names a lower-case
    /// column in double quotes, as in KDA.)
    pub name: String,
    /// A KDA SQL type: `INTEGER`, `BIGINT`, `REAL` (numbers with a fraction, as KDA proposed
    /// them), `BOOLEAN`, or `VARCHAR(n)` with `n` the longest value seen.
    pub sql_type: String,
    /// The JSON path (`$.quote.price`); `None` for CSV.
    pub mapping: Option<String>,
}

/// What the values of one column were.
#[derive(Debug, Default, Clone)]
struct Seen {
    int32: bool,
    int64: bool,
    float: bool,
    boolean: bool,
    text: bool,
    max_len: usize,
    order: usize,
}

impl Seen {
    fn add_text(&mut self, s: &str) {
        if s.is_empty() {
            self.max_len = self.max_len.max(1);
            return;
        }
        if let Ok(i) = s.parse::<i64>() {
            self.add_int(i);
        } else if s.parse::<f64>().is_ok() {
            self.float = true;
        } else if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
            self.boolean = true;
        } else {
            self.text = true;
        }
        self.max_len = self.max_len.max(s.chars().count());
    }

    fn add_int(&mut self, i: i64) {
        if i32::try_from(i).is_ok() {
            self.int32 = true;
        } else {
            self.int64 = true;
        }
    }

    fn sql_type(&self) -> String {
        let numeric = self.int32 || self.int64 || self.float;
        if self.text || (self.boolean && numeric) {
            format!("VARCHAR({})", self.max_len.max(1))
        } else if self.float {
            "REAL".into()
        } else if self.int64 {
            "BIGINT".into()
        } else if self.int32 {
            "INTEGER".into()
        } else if self.boolean {
            "BOOLEAN".into()
        } else {
            // Only nulls seen.
            format!("VARCHAR({})", self.max_len.max(16))
        }
    }
}

fn walk(v: &Value, path: &mut Vec<String>, seen: &mut BTreeMap<Vec<String>, Seen>) {
    let next = seen.len();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                walk(x, path, seen);
                path.pop();
            }
        }
        _ if path.is_empty() => {}
        Value::Null => {
            seen.entry(path.clone()).or_insert_with(|| Seen {
                order: next,
                ..Seen::default()
            });
        }
        Value::Bool(_) => {
            let s = seen.entry(path.clone()).or_insert_with(|| Seen {
                order: next,
                ..Seen::default()
            });
            s.boolean = true;
            s.max_len = s.max_len.max(5);
        }
        Value::Number(n) => {
            let s = seen.entry(path.clone()).or_insert_with(|| Seen {
                order: next,
                ..Seen::default()
            });
            match n.as_i64() {
                Some(i) => s.add_int(i),
                None => s.float = true,
            }
            s.max_len = s.max_len.max(n.to_string().len());
        }
        Value::String(t) => {
            let s = seen.entry(path.clone()).or_insert_with(|| Seen {
                order: next,
                ..Seen::default()
            });
            s.text = true;
            s.max_len = s.max_len.max(t.chars().count());
        }
        Value::Array(_) => {
            // Kept as its JSON text.
            let s = seen.entry(path.clone()).or_insert_with(|| Seen {
                order: next,
                ..Seen::default()
            });
            s.text = true;
            s.max_len = s.max_len.max(v.to_string().chars().count());
        }
    }
}

/// Proposes columns for JSON lines (objects; nested objects are flattened) or CSV rows, from at
/// most `sample` records of `data`.
pub fn discover_schema(
    data: &str,
    csv: bool,
    header: bool,
    sample: usize,
) -> Result<Vec<DiscoveredColumn>> {
    let lines = data.lines().filter(|l| !l.trim().is_empty());
    if csv {
        let mut rows = lines.map(|l| l.split(',').map(str::trim).collect::<Vec<_>>());
        let names: Option<Vec<String>> = if header {
            rows.next()
                .map(|h| h.iter().map(|n| kda_name(&[n.to_string()])).collect())
        } else {
            None
        };
        let mut seen: Vec<Seen> = Vec::new();
        let mut count = 0;
        for row in rows.take(sample) {
            count += 1;
            if seen.len() < row.len() {
                seen.resize(row.len(), Seen::default());
            }
            for (s, v) in seen.iter_mut().zip(&row) {
                s.add_text(v.trim_matches('"'));
            }
        }
        if count == 0 {
            return Err(Error::Format("no records to discover a schema from".into()));
        }
        return Ok(seen
            .iter()
            .enumerate()
            .map(|(i, s)| DiscoveredColumn {
                name: names
                    .as_ref()
                    .and_then(|n| n.get(i).cloned())
                    .unwrap_or_else(|| format!("COL{}", i + 1)),
                sql_type: s.sql_type(),
                mapping: None,
            })
            .collect());
    }
    let mut seen: BTreeMap<Vec<String>, Seen> = BTreeMap::new();
    let mut count = 0;
    for (i, line) in lines.take(sample).enumerate() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::Format(format!("record {}: not JSON: {e}", i + 1)))?;
        if !v.is_object() {
            return Err(Error::Format(format!(
                "record {}: not a JSON object",
                i + 1
            )));
        }
        walk(&v, &mut Vec::new(), &mut seen);
        count += 1;
    }
    if count == 0 {
        return Err(Error::Format("no records to discover a schema from".into()));
    }
    let mut columns: Vec<(usize, DiscoveredColumn)> = seen
        .into_iter()
        .map(|(path, s)| {
            (
                s.order,
                DiscoveredColumn {
                    name: kda_name(&path),
                    sql_type: s.sql_type(),
                    mapping: Some(json_path(&path)),
                },
            )
        })
        .collect();
    columns.sort_by_key(|(o, _)| *o);
    Ok(columns.into_iter().map(|(_, c)| c).collect())
}

/// KDA's column name for a member path (see [`DiscoveredColumn::name`]).
fn kda_name(path: &[String]) -> String {
    let name: String = path
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_");
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("COL_{name}")
    } else {
        name
    }
}

fn json_path(path: &[String]) -> String {
    let mut p = String::from("$");
    for seg in path {
        if seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            p.push('.');
            p.push_str(seg);
        } else {
            p.push_str(&format!("['{}']", seg.replace('\'', "\\'")));
        }
    }
    p
}

/// The columns as KDA's `InputSchema` (JSON), which `rivulet replay --app` loads.
pub fn input_schema(columns: &[DiscoveredColumn], csv: bool) -> Value {
    let mapping = if csv {
        json!({"CSVMappingParameters": {"RecordRowDelimiter": "\n", "RecordColumnDelimiter": ","}})
    } else {
        json!({"JSONMappingParameters": {"RecordRowPath": "$"}})
    };
    json!({
        "InputSchema": {
            "RecordFormat": {
                "RecordFormatType": if csv { "CSV" } else { "JSON" },
                "MappingParameters": mapping,
            },
            "RecordEncoding": "UTF-8",
            "RecordColumns": columns.iter().map(|c| {
                let mut o = json!({"Name": c.name, "SqlType": c.sql_type});
                if let Some(m) = &c.mapping {
                    o["Mapping"] = json!(m);
                }
                o
            }).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_is_flattened_with_kda_names_and_types() {
        let data = r#"{"ticker_symbol":"AMZN","quote":{"price":120.5,"volume":1000},"live":true,"note":null}
{"ticker_symbol":"MSFT","quote":{"price":300,"volume":5000000000},"live":false,"note":"x y"}"#;
        let cols = discover_schema(data, false, false, 100).unwrap();
        let got: Vec<(&str, &str, Option<&str>)> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.sql_type.as_str(), c.mapping.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("ticker_symbol", "VARCHAR(4)", Some("$.ticker_symbol")),
                ("quote_price", "REAL", Some("$.quote.price")),
                ("quote_volume", "BIGINT", Some("$.quote.volume")),
                ("live", "BOOLEAN", Some("$.live")),
                ("note", "VARCHAR(3)", Some("$.note")),
            ]
        );
        assert!(discover_schema("[1,2]", false, false, 10).is_err());
        let odd = discover_schema(r#"{"1x":1,"a-b":2}"#, false, false, 10).unwrap();
        assert_eq!(odd[0].name, "COL_1x");
        assert_eq!(odd[1].name, "a_b");
        assert!(discover_schema("", false, false, 10).is_err());
    }

    #[test]
    fn csv_columns_are_numbered_or_named_by_the_header() {
        let cols = discover_schema("car,temp\nA,80\nBB,90.5\n", true, true, 100).unwrap();
        assert_eq!(cols[0].name, "car");
        assert_eq!(cols[0].sql_type, "VARCHAR(2)");
        assert_eq!(cols[1].sql_type, "REAL");
        let cols = discover_schema("A,80\n", true, false, 100).unwrap();
        assert_eq!(cols[1].name, "COL2");
        assert_eq!(cols[1].sql_type, "INTEGER");
        let schema = input_schema(&cols, true);
        assert_eq!(
            schema["InputSchema"]["RecordFormat"]["RecordFormatType"],
            "CSV"
        );
    }
}
