//! The arrow-json and arrow-csv push decoders behind [`RecordDecoder`](super::RecordDecoder), fed
//! one record payload at a time.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use crate::format::{CsvOptions, RecordFormat};
use crate::record::Record;

/// An arrow push decoder for one record format.
pub(super) enum PushDecoder {
    Json(arrow::json::reader::Decoder),
    /// The decoder and its batch size.
    Csv(Box<arrow::csv::reader::Decoder>, usize),
}

impl fmt::Debug for PushDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(_) => f.write_str("Json"),
            Self::Csv(..) => f.write_str("Csv"),
        }
    }
}

impl PushDecoder {
    /// A fresh decoder of `format` into `schema`, flushing every `batch_size` rows.
    pub(super) fn new(format: &RecordFormat, schema: &SchemaRef, batch_size: usize) -> Self {
        match format {
            RecordFormat::Json => Self::Json(
                arrow::json::ReaderBuilder::new(Arc::clone(schema))
                    .with_batch_size(batch_size)
                    // A number or boolean in a text column is kept as its text.
                    .with_coerce_primitive(true)
                    .build_decoder()
                    .expect("a JSON decoder builds for any schema accepted by the builder"),
            ),
            RecordFormat::Csv(opts) => Self::Csv(
                Box::new(csv_builder(schema, opts, batch_size).build_decoder()),
                batch_size,
            ),
        }
    }

    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, ArrowError> {
        match self {
            Self::Json(d) => d.decode(buf),
            Self::Csv(d, _) => d.decode(buf),
        }
    }

    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, ArrowError> {
        match self {
            Self::Json(d) => d.flush(),
            Self::Csv(d, _) => d.flush(),
        }
    }

    /// Rows buffered since the last flush (for JSON, including one being decoded).
    fn buffered(&self) -> usize {
        match self {
            Self::Json(d) => d.len(),
            Self::Csv(d, batch_size) => *batch_size - d.capacity(),
        }
    }

    /// True while a JSON value is open.
    fn has_partial(&self) -> bool {
        match self {
            Self::Json(d) => d.has_partial_record(),
            // A CSV row that is not finished is not counted by `buffered`.
            Self::Csv(..) => false,
        }
    }

    /// Feeds the payloads of `records` at `indexes` and returns the batches they decode into.
    ///
    /// With `checked`, every record must end exactly one whole row: a record that leaves a value
    /// open, or holds none or several, is an error even when the bytes happen to parse together
    /// (an unclosed object continued by the next record would otherwise shift rows silently).
    pub(super) fn decode_records(
        &mut self,
        records: &[Record],
        indexes: &[usize],
        checked: bool,
    ) -> std::result::Result<Vec<RecordBatch>, ArrowError> {
        let json = matches!(self, Self::Json(_));
        let mut batches = Vec::new();
        let mut flushed = 0usize;
        for (k, &i) in indexes.iter().enumerate() {
            let payload = records[i].payload();
            self.feed(payload, &mut batches, &mut flushed)?;
            // A JSON object ends itself; anything else needs a separator from the next record.
            if !(json && payload.last() == Some(&b'}')) {
                self.feed(b"\n", &mut batches, &mut flushed)?;
            }
            if checked && (self.has_partial() || flushed + self.buffered() != k + 1) {
                return Err(ArrowError::ParseError(
                    "a record does not hold exactly one whole row".into(),
                ));
            }
        }
        if let Some(b) = self.flush()? {
            batches.push(b);
        }
        Ok(batches)
    }

    /// Decodes all of `buf`, flushing whenever the decoder's batch fills.
    fn feed(
        &mut self,
        mut buf: &[u8],
        batches: &mut Vec<RecordBatch>,
        flushed: &mut usize,
    ) -> std::result::Result<(), ArrowError> {
        while !buf.is_empty() {
            let n = self.decode(buf)?;
            buf = &buf[n..];
            if !buf.is_empty() {
                // The decoder's batch is full.
                match self.flush()? {
                    Some(b) => {
                        *flushed += b.num_rows();
                        batches.push(b);
                    }
                    None if n == 0 => {
                        return Err(ArrowError::ParseError(
                            "the decoder made no progress".into(),
                        ))
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }
}

fn csv_builder(
    schema: &SchemaRef,
    opts: &CsvOptions,
    batch_size: usize,
) -> arrow::csv::ReaderBuilder {
    let mut b = arrow::csv::ReaderBuilder::new(Arc::clone(schema))
        .with_header(false)
        .with_delimiter(opts.delimiter)
        .with_quote(opts.quote)
        .with_batch_size(batch_size);
    if let Some(e) = opts.escape {
        b = b.with_escape(e);
    }
    b
}

/// An arrow error's message without the kind arrow puts before it.
pub(super) fn strip_arrow_prefix(e: &ArrowError) -> String {
    let s = e.to_string();
    for prefix in [
        "Json error: ",
        "Parser error: ",
        "Csv error: ",
        "Invalid argument error: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    s
}
