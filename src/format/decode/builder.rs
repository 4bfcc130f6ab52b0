//! [`RecordDecoderBuilder`]: the columns and options of a decoder, checked together at build.

use arrow::datatypes::Schema;

use super::layout::{decode_layout, output_schema, Layout};
use super::push::PushDecoder;
use super::rowtime::{rowtime_column, PROCESSING_ROWTIME};
use super::{RecordDecoder, DEFAULT_MAX_RECORD_BYTES};
use crate::format::flat_json::FlatJsonDecoder;
use crate::format::{Column, MetadataColumn, RecordFormat, ROWTIME};
use crate::{Error, Result};

/// Builder for [`RecordDecoder`].
#[derive(Debug, Clone)]
pub struct RecordDecoderBuilder {
    format: RecordFormat,
    columns: Vec<Column>,
    rowtime_field: Option<String>,
    metadata: Vec<MetadataColumn>,
    max_record_bytes: usize,
    batch_size: usize,
    workers: usize,
}

impl RecordDecoderBuilder {
    /// A builder for records in `format`, with no columns yet.
    pub(super) fn new(format: RecordFormat) -> Self {
        Self {
            format,
            columns: Vec::new(),
            rowtime_field: None,
            metadata: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            batch_size: 8192,
            workers: 1,
        }
    }

    /// The columns to decode, in output order.
    pub fn with_columns(mut self, columns: Vec<Column>) -> Self {
        self.columns = columns;
        self
    }

    /// The columns of `schema`, each read from the top-level member of its name.
    pub fn with_schema(mut self, schema: &Schema) -> Self {
        self.columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f.name(), f.data_type().clone()))
            .collect();
        self
    }

    /// Takes `ROWTIME` from this column (ISO-8601 or epoch milliseconds) instead of the arrival time.
    /// [`PROCESSING_ROWTIME`] (`"processing"`) makes it the time the record entered the pipeline
    /// instead, as Kinesis Data Analytics did.
    /// Rows whose value is missing or unparsable go to the failures with
    /// [`FailureKind::BadRowtime`](super::FailureKind::BadRowtime).
    pub fn with_rowtime_field(mut self, field: Option<String>) -> Self {
        self.rowtime_field = field;
        self
    }

    /// Adds record metadata columns (partition key, sequence number, …) after the payload's
    /// columns.
    pub fn with_metadata(mut self, metadata: Vec<MetadataColumn>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Records larger than this go to the failures as
    /// [`FailureKind::Oversized`](super::FailureKind::Oversized).
    pub fn with_max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// Rows per internal decoder batch (a capacity hint; output is one batch per call).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Threads that decode one call's records together (default 1). With more than one, the
    /// fast path for flat JSON objects splits the records into contiguous parts of at least
    /// [`MIN_ROWS_PER_WORKER`](super::MIN_ROWS_PER_WORKER) and decodes them side by side; the
    /// output is the same as with one thread. Other paths decode on the calling thread.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Builds the decoder, checking that the columns make sense together.
    pub fn build(self) -> Result<RecordDecoder> {
        self.check_columns()?;
        let (decode_schema, layout) = decode_layout(&self.format, &self.columns)?;
        let output_schema = output_schema(&self.columns, &self.metadata);
        let processing_rowtime = self.rowtime_field.as_deref() == Some(PROCESSING_ROWTIME);
        let rowtime_column = rowtime_column(&self.columns, self.rowtime_field.as_deref())?;
        let inner = PushDecoder::new(&self.format, &decode_schema, self.batch_size);
        let flat = match (&self.format, &layout) {
            (RecordFormat::Json, Layout::Flat) => FlatJsonDecoder::new(&decode_schema),
            _ => None,
        };
        Ok(RecordDecoder {
            format: self.format,
            decode_schema,
            output_schema,
            layout,
            rowtime_column,
            processing_rowtime,
            last_processing: i64::MIN,
            metadata: self.metadata,
            max_record_bytes: self.max_record_bytes,
            batch_size: self.batch_size,
            workers: self.workers,
            inner,
            flat,
        })
    }

    /// Fails unless there are columns, each with a name of its own and read the way the format
    /// can read it.
    fn check_columns(&self) -> Result<()> {
        if self.columns.is_empty() {
            return Err(Error::Format(
                "no columns: give a schema or infer one from a sample".into(),
            ));
        }
        for (i, c) in self.columns.iter().enumerate() {
            if c.name.eq_ignore_ascii_case(ROWTIME) {
                return Err(Error::Format(format!(
                    "column `{}` clashes with the built-in ROWTIME column; rename it",
                    c.name
                )));
            }
            if let Some(m) = self.metadata.iter().find(|m| c.name == m.name()) {
                return Err(Error::Format(format!(
                    "column `{}` clashes with the metadata column {}; rename it or leave the \
                     metadata out",
                    c.name,
                    m.name()
                )));
            }
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::Format(format!(
                    "column `{}` is defined twice",
                    c.name
                )));
            }
            if c.path.is_some() && matches!(self.format, RecordFormat::Csv(_)) {
                return Err(Error::Format(format!(
                    "column `{}` has a JSON path, but CSV columns are read by position",
                    c.name
                )));
            }
        }
        Ok(())
    }
}
