//! Records that are rows pushed as Arrow ([`PushHandle::push_rows`](crate::PushHandle::push_rows)):
//! decoded by taking their columns by name, cast to the input's types, with no text format in
//! between.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{cast_with_options, filter, CastOptions};

use super::{metadata_column, DecodeFailure, DecodeOutput, FailureKind, RecordDecoder};
use crate::record::Record;
use crate::Result;

/// A run of records decoded together: payloads, or consecutive rows of one Arrow batch.
enum Run {
    Payloads,
    Rows {
        batch: Arc<RecordBatch>,
        first: usize,
    },
}

impl RecordDecoder {
    /// Decodes records some of which are Arrow rows: each run of payload records through the
    /// format's decoder, each run of consecutive rows of one batch by [`Self::adopt`], the
    /// results joined in record order.
    pub(super) fn decode_runs(&mut self, records: &[Record]) -> Result<DecodeOutput> {
        let mut batches = Vec::new();
        let mut row_records = Vec::with_capacity(records.len());
        let mut failures = Vec::new();
        let mut start = 0;
        while start < records.len() {
            let (run, len) = run_at(&records[start..]);
            let part = &records[start..start + len];
            let out = match run {
                Run::Payloads => self.decode_payloads(part)?,
                Run::Rows { batch, first } => self.adopt(part, &batch.slice(first, len))?,
            };
            row_records.extend(out.row_records.iter().map(|i| i + start));
            failures.extend(out.failures.into_iter().map(|mut f| {
                f.index += start;
                f
            }));
            batches.push(out.batch);
            start += len;
        }
        let batch = match batches.len() {
            1 => batches.pop().expect("one batch"),
            _ => arrow::compute::concat_batches(&self.output_schema, &batches)?,
        };
        Ok(DecodeOutput {
            batch,
            row_records,
            failures,
        })
    }

    /// The rows of `rows` (the Arrow rows of `records`, in order) as input rows: each input
    /// column taken by name and cast to its type, a column the batch lacks as NULL. A row with a
    /// value that does not cast (a string that is not a number, a number out of range) fails
    /// alone, as a payload that does not decode does.
    fn adopt(&mut self, records: &[Record], rows: &RecordBatch) -> Result<DecodeOutput> {
        let inputs = self.output_schema.fields().len() - self.metadata.len() - 1;
        let n = rows.num_rows();
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output_schema.fields().len());
        // The first reason each row fails for, when some do.
        let mut bad: Option<Vec<Option<String>>> = None;
        for field in &self.output_schema.fields()[..inputs] {
            let Some(given) = rows.column_by_name(field.name()) else {
                columns.push(new_null_array(field.data_type(), n));
                continue;
            };
            if given.data_type() == field.data_type() {
                columns.push(Arc::clone(given));
                continue;
            }
            match cast_with_options(given, field.data_type(), &strict) {
                Ok(c) => columns.push(c),
                Err(_) => {
                    // Row by row, to find the rows that fail; the others are cast leniently
                    // (they cast strictly, so nothing turns NULL).
                    let reasons = bad.get_or_insert_with(|| vec![None; n]);
                    for (row, reason) in reasons.iter_mut().enumerate() {
                        if reason.is_some() {
                            continue;
                        }
                        if let Err(e) =
                            cast_with_options(&given.slice(row, 1), field.data_type(), &strict)
                        {
                            *reason = Some(format!(
                                "column `{}`: {} does not convert to {}: {e}",
                                field.name(),
                                given.data_type(),
                                field.data_type()
                            ));
                        }
                    }
                    columns.push(cast_with_options(
                        given,
                        field.data_type(),
                        &CastOptions::default(),
                    )?);
                }
            }
        }
        let mut failures = Vec::new();
        let mut row_records: Vec<usize> = (0..n).collect();
        if let Some(reasons) = bad {
            let keep = BooleanArray::from_iter(reasons.iter().map(|r| Some(r.is_none())));
            for c in &mut columns {
                *c = filter(c.as_ref(), &keep)?;
            }
            row_records.retain(|&i| reasons[i].is_none());
            failures.extend(reasons.into_iter().enumerate().filter_map(|(index, r)| {
                r.map(|reason| DecodeFailure {
                    index,
                    kind: FailureKind::Malformed,
                    reason,
                })
            }));
        }
        let rowtime =
            self.rowtimes(records, &mut columns, &mut row_records, &mut failures, None)?;
        for &m in &self.metadata {
            columns.push(metadata_column(m, row_records.iter().map(|&i| &records[i])));
        }
        columns.push(Arc::new(rowtime.with_timezone("UTC")));
        failures.sort_by_key(|f| f.index);
        match RecordBatch::try_new(Arc::clone(&self.output_schema), columns) {
            Ok(batch) => Ok(DecodeOutput {
                batch,
                row_records,
                failures,
            }),
            // Columns that do not fit the input's (NULLs in a column that may not hold them):
            // every row of the run fails, with the reason.
            Err(e) => Ok(DecodeOutput {
                batch: RecordBatch::new_empty(Arc::clone(&self.output_schema)),
                row_records: Vec::new(),
                failures: (0..n)
                    .map(|index| DecodeFailure {
                        index,
                        kind: FailureKind::Malformed,
                        reason: format!("the pushed rows do not fit the input's columns: {e}"),
                    })
                    .collect(),
            }),
        }
    }
}

/// The run that starts `records`, and its length.
fn run_at(records: &[Record]) -> (Run, usize) {
    match records[0].row() {
        None => {
            let len = records.iter().take_while(|r| r.row().is_none()).count();
            (Run::Payloads, len)
        }
        Some(first) => {
            let len = records
                .iter()
                .enumerate()
                .take_while(|(i, r)| {
                    r.row().is_some_and(|row| {
                        Arc::ptr_eq(&row.batch, &first.batch) && row.row == first.row + i
                    })
                })
                .count();
            (
                Run::Rows {
                    batch: Arc::clone(&first.batch),
                    first: first.row,
                },
                len,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
    use bytes::Bytes;

    use super::*;
    use crate::format::{Column, RecordFormat};

    fn decoder() -> RecordDecoder {
        RecordDecoder::builder(RecordFormat::Json)
            .with_columns(vec![
                Column::new("n", DataType::Int64),
                Column::new("price", DataType::Float64),
                Column::new("sym", DataType::Utf8),
            ])
            .build()
            .unwrap()
    }

    fn rows(batch: RecordBatch) -> Vec<Record> {
        let batch = Arc::new(batch);
        (0..batch.num_rows())
            .map(|i| Record::arrow_row(Arc::clone(&batch), i, 1_000 + i as i64))
            .collect()
    }

    #[test]
    fn arrow_rows_decode_as_the_same_rows_written_as_json_do() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sym", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            // Not a column of the input: ignored, as an extra JSON member is.
            Field::new("extra", DataType::Int64, true),
            // Float32 where the input wants Float64: cast.
            Field::new("price", DataType::Float32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("A"), None, Some("C")])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Int64Array::from(vec![9, 9, 9])),
                Arc::new(arrow::array::Float32Array::from(vec![1.5, 2.5, 3.5])),
            ],
        )
        .unwrap();
        let pushed = rows(batch);
        let as_json: Vec<Record> = [
            r#"{"sym":"A","n":1,"extra":9,"price":1.5}"#,
            r#"{"n":2,"extra":9,"price":2.5}"#,
            r#"{"sym":"C","n":3,"extra":9,"price":3.5}"#,
        ]
        .iter()
        .enumerate()
        .map(|(i, j)| Record::new(Bytes::from_static(j.as_bytes()), 1_000 + i as i64))
        .collect();
        let mut d = decoder();
        let a = d.decode(&pushed).unwrap();
        let j = d.decode(&as_json).unwrap();
        assert_eq!(a.batch, j.batch);
        assert_eq!(a.row_records, [0, 1, 2]);
        assert!(a.failures.is_empty());
    }

    #[test]
    fn a_row_that_does_not_cast_fails_alone_and_payloads_between_rows_keep_their_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["1", "two", "3"])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
            ],
        )
        .unwrap();
        let mut records = rows(batch);
        // A payload record between the second and third rows, and one that does not decode.
        records.insert(2, Record::new(Bytes::from_static(br#"{"n":10}"#), 0));
        records.insert(3, Record::new(Bytes::from_static(b"{nope"), 0));
        let out = decoder().decode(&records).unwrap();
        let n = out.batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(n.values(), &[1, 10, 3]);
        assert_eq!(out.row_records, [0, 2, 4]);
        assert_eq!(
            out.failures.iter().map(|f| f.index).collect::<Vec<_>>(),
            [1, 3]
        );
        assert!(
            out.failures[0].reason.contains("column `n`"),
            "{}",
            out.failures[0].reason
        );
        let price = out.batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(price.value(0), 1.0);
        assert!(price.is_null(1), "the payload record has no price");
        // The error output shows a failed row as the JSON object it was.
        assert_eq!(
            records[1].payload_or_row_json(),
            Bytes::from_static(br#"{"n":"two","price":2.0}"#)
        );
    }
}
