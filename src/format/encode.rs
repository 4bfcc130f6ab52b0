//! Arrow batches → output bytes (JSON lines or CSV).

use arrow::array::RecordBatch;
use bytes::Bytes;

use crate::Result;

/// How output rows are written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutputFormat {
    /// One JSON object per line; nulls are written as `null`, timestamps as ISO-8601.
    #[default]
    JsonLines,
    /// CSV rows.
    Csv {
        /// Field delimiter.
        delimiter: u8,
        /// Whether each new output (file, object) starts with a header row.
        header: bool,
    },
}

/// Encodes record batches in an [`OutputFormat`].
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    format: OutputFormat,
}

impl Encoder {
    /// An encoder for `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    /// The format written.
    pub fn format(&self) -> &OutputFormat {
        &self.format
    }

    /// Appends every row of `batch` to `out`, each terminated by a newline. `first` says whether
    /// this is the start of an output, where a CSV header (when configured) is written.
    pub fn encode(&self, batch: &RecordBatch, first: bool, out: &mut Vec<u8>) -> Result<()> {
        match &self.format {
            OutputFormat::JsonLines => {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(out);
                w.write(batch)?;
                w.finish()?;
            }
            OutputFormat::Csv { delimiter, header } => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_delimiter(*delimiter)
                    .with_header(*header && first)
                    .build(out);
                w.write(batch)?;
            }
        }
        Ok(())
    }

    /// Encodes each row as its own record, without a trailing newline: the shape record-oriented
    /// sinks (Firehose, Kinesis) send.
    pub fn encode_rows(&self, batch: &RecordBatch) -> Result<Vec<Bytes>> {
        self.encode_records(batch, false)
    }

    /// Encodes each row as its own newline-terminated record: what a record-oriented sink sends
    /// when its records are concatenated downstream (Firehose into S3 objects).
    pub fn encode_lines(&self, batch: &RecordBatch) -> Result<Vec<Bytes>> {
        self.encode_records(batch, true)
    }

    fn encode_records(&self, batch: &RecordBatch, newline: bool) -> Result<Vec<Bytes>> {
        let mut rows = Vec::with_capacity(batch.num_rows());
        let keep = usize::from(newline);
        match &self.format {
            OutputFormat::JsonLines => {
                // JSON strings never hold a raw newline, so lines are rows: every record is a
                // slice of one buffer.
                let mut buf = Vec::new();
                self.encode(batch, false, &mut buf)?;
                let buf = Bytes::from(buf);
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &buf) {
                    rows.push(buf.slice(start..end + keep));
                    start = end + 1;
                }
            }
            OutputFormat::Csv { .. } => {
                // A quoted CSV field may hold a newline: encode row by row.
                for i in 0..batch.num_rows() {
                    let mut buf = Vec::new();
                    self.encode(&batch.slice(i, 1), false, &mut buf)?;
                    if !newline && buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    rows.push(Bytes::from(buf));
                }
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(2.0)])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_767_225_600_123), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn json_lines_with_explicit_nulls_and_iso_times() {
        let mut out = Vec::new();
        Encoder::new(OutputFormat::JsonLines)
            .encode(&batch(), true, &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"s\":\"a,b\",\"x\":1.5,\"t\":\"2026-01-01T00:00:00.123Z\"}\n{\"s\":null,\"x\":2.0,\"t\":null}\n"
        );
    }

    #[test]
    fn csv_header_only_at_start_and_quoting() {
        let enc = Encoder::new(OutputFormat::Csv {
            delimiter: b',',
            header: true,
        });
        let mut out = Vec::new();
        enc.encode(&batch(), true, &mut out).unwrap();
        enc.encode(&batch(), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("s,x,t").count(), 1, "{text}");
        assert!(text.contains("\"a,b\",1.5"), "{text}");
    }

    #[test]
    fn rows_as_separate_records() {
        let rows = Encoder::new(OutputFormat::JsonLines)
            .encode_rows(&batch())
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].starts_with(b"{\"s\":\"a,b\""));
        assert!(!rows[1].ends_with(b"\n"));
    }
}
