//! Payloads of a micro-batch → one Arrow `RecordBatch`, with bad records set aside.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use super::flat_json::FlatJsonDecoder;
use super::schema::Column;
use super::{CsvOptions, MetadataColumn, RecordFormat, ROWTIME};
use crate::record::Record;
use crate::{Error, Result};

/// Default largest payload accepted: the Kinesis Data Streams record size limit (10 MiB).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 10 * 1024 * 1024;

/// Why a record did not become a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The payload is not valid for the format or the schema.
    Malformed,
    /// The payload is larger than the decoder's limit.
    Oversized,
    /// The field chosen as `ROWTIME` is missing or not a time.
    BadRowtime,
}

impl FailureKind {
    /// A stable name for the error output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::BadRowtime => "bad_rowtime",
        }
    }
}

/// A record that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    /// Index of the record in the slice given to [`RecordDecoder::decode`].
    pub index: usize,
    /// Category of the failure.
    pub kind: FailureKind,
    /// What is wrong with the record.
    pub reason: String,
}

/// The rows decoded from a micro-batch and the records that did not decode.
#[derive(Debug, Clone)]
pub struct DecodeOutput {
    /// One row per good record, in record order, with the `ROWTIME` column last.
    pub batch: RecordBatch,
    /// Index (into the input slice) of the record each row came from.
    pub row_records: Vec<usize>,
    /// Records that did not decode, in record order.
    pub failures: Vec<DecodeFailure>,
}

/// How a decoded column is found in the decoder's (possibly nested) output.
#[derive(Debug, Clone)]
enum Layout {
    /// The decoder's columns are the output columns, in order.
    Flat,
    /// Each output column is reached by child indexes through struct columns.
    Nested(Vec<Vec<usize>>),
}

enum Inner {
    Json(arrow::json::reader::Decoder),
    /// The decoder and its batch size.
    Csv(Box<arrow::csv::reader::Decoder>, usize),
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(_) => f.write_str("Json"),
            Self::Csv(..) => f.write_str("Csv"),
        }
    }
}

impl Inner {
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
            Self::Csv(d, batch_size) => batch_size - d.capacity(),
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
}

/// Decodes record payloads (JSON objects or CSV rows) into Arrow record batches.
///
/// ```
/// use bytes::Bytes;
/// use rivulet::{Column, Record, RecordDecoder, RecordFormat};
/// use arrow::datatypes::DataType;
///
/// let mut decoder = RecordDecoder::builder(RecordFormat::Json)
///     .with_columns(vec![
///         Column::new("symbol", DataType::Utf8).with_path("$.quote.sym".parse()?),
///         Column::new("price", DataType::Float64).with_path("$.quote.px".parse()?),
///     ])
///     .build()?;
/// let records = [
///     Record::new(Bytes::from_static(br#"{"quote": {"sym": "AMZN", "px": 84.5}}"#), 0),
///     Record::new(Bytes::from_static(b"{not json"), 0),
/// ];
/// let out = decoder.decode(&records)?;
/// assert_eq!(out.batch.num_rows(), 1);
/// assert_eq!(out.failures[0].index, 1);
/// # Ok::<(), rivulet::Error>(())
/// ```
#[derive(Debug)]
pub struct RecordDecoder {
    format: RecordFormat,
    decode_schema: SchemaRef,
    output_schema: SchemaRef,
    layout: Layout,
    rowtime_column: Option<usize>,
    /// ROWTIME is the time a record entered the pipeline (never going back), not its arrival.
    processing_rowtime: bool,
    last_processing: i64,
    metadata: Vec<MetadataColumn>,
    max_record_bytes: usize,
    batch_size: usize,
    inner: Inner,
    /// The fast path for flat JSON objects, when the columns allow it.
    flat: Option<FlatJsonDecoder>,
}

/// The `rowtime` setting that makes `ROWTIME` the time a record entered the pipeline (one instant
/// per micro-batch, never going back), as Kinesis Data Analytics defined it, instead of the
/// record's arrival time in the stream.
pub const PROCESSING_ROWTIME: &str = "processing";

/// Builder for [`RecordDecoder`].
#[derive(Debug, Clone)]
pub struct RecordDecoderBuilder {
    format: RecordFormat,
    columns: Vec<Column>,
    rowtime_field: Option<String>,
    metadata: Vec<MetadataColumn>,
    max_record_bytes: usize,
    batch_size: usize,
}

impl RecordDecoder {
    /// A builder for records in `format`. Columns are required (set them or infer them first with
    /// [`infer_schema`](crate::infer_schema)).
    pub fn builder(format: RecordFormat) -> RecordDecoderBuilder {
        RecordDecoderBuilder {
            format,
            columns: Vec::new(),
            rowtime_field: None,
            metadata: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            batch_size: 8192,
        }
    }

    /// Whether `ROWTIME` is the time a record entered the pipeline ([`PROCESSING_ROWTIME`]).
    pub(crate) fn processing_rowtime(&self) -> bool {
        self.processing_rowtime
    }

    /// Schema of the batches produced: the columns, the metadata columns, then `ROWTIME`.
    pub fn schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    fn new_inner(format: &RecordFormat, schema: &SchemaRef, batch_size: usize) -> Inner {
        match format {
            RecordFormat::Json => Inner::Json(
                arrow::json::ReaderBuilder::new(Arc::clone(schema))
                    .with_batch_size(batch_size)
                    // A number or boolean in a text column is kept as its text.
                    .with_coerce_primitive(true)
                    .build_decoder()
                    .expect("a JSON decoder builds for any schema accepted by the builder"),
            ),
            RecordFormat::Csv(opts) => Inner::Csv(
                Box::new(csv_builder(schema, opts, batch_size).build_decoder()),
                batch_size,
            ),
        }
    }

    fn reset(&mut self) {
        self.inner = Self::new_inner(&self.format, &self.decode_schema, self.batch_size);
    }

    /// Feeds the given records and returns what the decoder made of them.
    ///
    /// With `checked`, every record must end exactly one whole row: a record that leaves a value
    /// open, or holds none or several, is an error even when the bytes happen to parse together
    /// (an unclosed object continued by the next record would otherwise shift rows silently).
    fn try_decode(
        &mut self,
        records: &[Record],
        indexes: &[usize],
        checked: bool,
    ) -> std::result::Result<Vec<RecordBatch>, ArrowError> {
        let json = matches!(self.format, RecordFormat::Json);
        let mut batches = Vec::new();
        let mut flushed = 0usize;
        for (k, &i) in indexes.iter().enumerate() {
            let payload = records[i].payload();
            self.feed(payload, &mut batches, &mut flushed)?;
            // A JSON object ends itself; anything else needs a separator from the next record.
            if !(json && payload.last() == Some(&b'}')) {
                self.feed(b"\n", &mut batches, &mut flushed)?;
            }
            if checked && (self.inner.has_partial() || flushed + self.inner.buffered() != k + 1) {
                return Err(ArrowError::ParseError(
                    "a record does not hold exactly one whole row".into(),
                ));
            }
        }
        if let Some(b) = self.inner.flush()? {
            batches.push(b);
        }
        Ok(batches)
    }

    fn feed(
        &mut self,
        mut buf: &[u8],
        batches: &mut Vec<RecordBatch>,
        flushed: &mut usize,
    ) -> std::result::Result<(), ArrowError> {
        while !buf.is_empty() {
            let n = self.inner.decode(buf)?;
            buf = &buf[n..];
            if !buf.is_empty() {
                // The decoder's batch is full.
                match self.inner.flush()? {
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

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Decodes `records` into one batch; records that do not decode are listed in
    /// [`DecodeOutput::failures`] and leave no row.
    pub fn decode(&mut self, records: &[Record]) -> Result<DecodeOutput> {
        let mut failures = Vec::new();
        let mut candidates = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if r.payload().len() > self.max_record_bytes {
                failures.push(DecodeFailure {
                    index: i,
                    kind: FailureKind::Oversized,
                    reason: format!(
                        "record of {} bytes exceeds the limit of {} bytes",
                        r.payload().len(),
                        self.max_record_bytes
                    ),
                });
            } else {
                candidates.push(i);
            }
        }

        // Fastest path: flat objects read straight into builders; it gives up on anything
        // unusual. Then the whole batch through arrow-json in one go. Any error, or a record count
        // that does not match the row count (a record holding two JSON values, or none), sends us
        // to the slow path, which isolates the bad records.
        let flat = self
            .flat
            .as_ref()
            .and_then(|f| f.decode(records, &candidates).ok());
        let attempt = match flat {
            Some(b) => Ok(vec![b]),
            None => self.try_decode(records, &candidates, true),
        };
        let (batches, good) = match attempt {
            Ok(b) if Self::rows(&b) == candidates.len() => (b, candidates),
            _ => {
                self.reset();
                let good = self.isolate_failures(records, &candidates, &mut failures);
                let batches = self.try_decode(records, &good, true).map_err(|e| {
                    Error::Format(format!("records that decoded alone failed together: {e}"))
                })?;
                if Self::rows(&batches) != good.len() {
                    return Err(Error::Format(
                        "records that decoded alone gave a different row count together".into(),
                    ));
                }
                failures.sort_by_key(|f| f.index);
                (batches, good)
            }
        };

        let raw = match batches.len() {
            0 => RecordBatch::new_empty(Arc::clone(&self.decode_schema)),
            1 => batches.into_iter().next().expect("one batch"),
            _ => arrow::compute::concat_batches(&self.decode_schema, &batches)?,
        };
        let mut columns = self.extract(&raw)?;
        let mut row_records = good;

        let rowtime = match self.rowtime_column {
            None if self.processing_rowtime => {
                // One instant for the whole micro-batch: its records entered together.
                let now = crate::record::now_ms().max(self.last_processing);
                self.last_processing = now;
                TimestampMillisecondArray::from_iter_values(row_records.iter().map(|_| now))
            }
            None => TimestampMillisecondArray::from_iter_values(
                row_records.iter().map(|&i| records[i].arrival_time_ms()),
            ),
            Some(c) => {
                let times = to_epoch_millis(&columns[c])?;
                if times.null_count() > 0 {
                    let keep: BooleanArray = times.iter().map(|t| Some(t.is_some())).collect();
                    for (row, t) in times.iter().enumerate() {
                        if t.is_none() {
                            failures.push(DecodeFailure {
                                index: row_records[row],
                                kind: FailureKind::BadRowtime,
                                reason: format!(
                                    "ROWTIME field `{}` is missing or is not an ISO-8601 time or \
                                     epoch milliseconds",
                                    self.output_schema.field(c).name()
                                ),
                            });
                        }
                    }
                    failures.sort_by_key(|f| f.index);
                    for col in &mut columns {
                        *col = arrow::compute::filter(col, &keep)?;
                    }
                    row_records = row_records
                        .iter()
                        .zip(times.iter())
                        .filter_map(|(&i, t)| t.map(|_| i))
                        .collect();
                    arrow::compute::filter(&times, &keep)?
                        .as_primitive()
                        .clone()
                } else {
                    times
                }
            }
        };
        for m in &self.metadata {
            let rows = row_records.iter().map(|&i| &records[i]);
            let array: ArrayRef = match m {
                MetadataColumn::PartitionKey => {
                    Arc::new(StringArray::from_iter(rows.map(Record::partition_key)))
                }
                MetadataColumn::SequenceNumber => {
                    Arc::new(StringArray::from_iter(rows.map(Record::sequence_number)))
                }
                MetadataColumn::ShardId => {
                    Arc::new(StringArray::from_iter(rows.map(Record::shard_id)))
                }
                MetadataColumn::SubSequenceNumber => {
                    Arc::new(Int64Array::from_iter(rows.map(|r| {
                        r.sequence_number()
                            .map(|_| r.sub_sequence_number().unwrap_or(0) as i64)
                    })))
                }
                MetadataColumn::ApproximateArrivalTime => Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.map(Record::arrival_time_ms))
                        .with_timezone("UTC"),
                ),
            };
            columns.push(array);
        }
        columns.push(Arc::new(rowtime.with_timezone("UTC")));
        let batch = RecordBatch::try_new(Arc::clone(&self.output_schema), columns)?;
        Ok(DecodeOutput {
            batch,
            row_records,
            failures,
        })
    }

    /// Decodes each candidate alone; returns those that give exactly one row.
    fn isolate_failures(
        &mut self,
        records: &[Record],
        candidates: &[usize],
        failures: &mut Vec<DecodeFailure>,
    ) -> Vec<usize> {
        let mut good = Vec::with_capacity(candidates.len());
        let what = match self.format {
            RecordFormat::Json => "JSON",
            RecordFormat::Csv(_) => "CSV",
        };
        for &i in candidates {
            let attempt = self.try_decode(records, &[i], false);
            if !matches!(&attempt, Ok(b) if Self::rows(b) == 1) {
                // Whatever the decoder holds now (an open quote, half an object) must not leak into
                // the next record.
                self.reset();
            }
            match attempt {
                Ok(b) if Self::rows(&b) == 1 => good.push(i),
                Ok(b) => failures.push(DecodeFailure {
                    index: i,
                    kind: FailureKind::Malformed,
                    reason: match (&self.format, Self::rows(&b)) {
                        (RecordFormat::Json, 0) => "record holds no JSON value".to_owned(),
                        (RecordFormat::Json, n) => {
                            format!("record holds {n} JSON values; expected one object")
                        }
                        (RecordFormat::Csv(_), n) => {
                            format!("record holds {n} CSV rows; expected one")
                        }
                    },
                }),
                Err(e) => failures.push(DecodeFailure {
                    index: i,
                    kind: FailureKind::Malformed,
                    reason: format!("invalid {what}: {}", strip_arrow_prefix(&e)),
                }),
            }
        }
        good
    }

    fn extract(&self, raw: &RecordBatch) -> Result<Vec<ArrayRef>> {
        match &self.layout {
            Layout::Flat => Ok(raw.columns().to_vec()),
            Layout::Nested(paths) => paths
                .iter()
                .map(|path| {
                    let mut array = Arc::clone(raw.column(path[0]));
                    let mut nulls: Option<NullBuffer> = None;
                    for &child in &path[1..] {
                        nulls = NullBuffer::union(nulls.as_ref(), array.logical_nulls().as_ref());
                        let s = array.as_struct();
                        array = Arc::clone(s.column(child));
                    }
                    if nulls.is_none() {
                        return Ok(array);
                    }
                    let nulls = NullBuffer::union(nulls.as_ref(), array.logical_nulls().as_ref());
                    let data = array.to_data().into_builder().nulls(nulls).build()?;
                    Ok(arrow::array::make_array(data))
                })
                .collect(),
        }
    }
}

fn strip_arrow_prefix(e: &ArrowError) -> String {
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

/// Converts a column to epoch milliseconds; values that are not times become null.
fn to_epoch_millis(array: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
    Ok(match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let strings = arrow::compute::cast(array, &DataType::Utf8)?;
            strings
                .as_string::<i32>()
                .iter()
                .map(|v| v.and_then(parse_time_ms))
                .collect()
        }
        // A zoned timestamp is an instant: cast it between zones (which keeps the instant), not to
        // a naive type (which would shift it to local wall time). A naive one is taken as UTC.
        DataType::Timestamp(_, Some(_)) => arrow::compute::cast(
            array,
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        )?
        .as_primitive()
        .clone(),
        DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64 => {
            arrow::compute::cast(array, &ms)?.as_primitive().clone()
        }
        t if t.is_integer() || t.is_floating() => {
            let ints = arrow::compute::cast(array, &DataType::Int64)?;
            ints.as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .collect()
        }
        other => {
            return Err(Error::Format(format!(
                "a ROWTIME field must hold ISO-8601 strings, epoch milliseconds or timestamps, not {other}"
            )))
        }
    })
}

/// Parses ISO-8601 (with or without zone; no zone means UTC) or integer epoch milliseconds.
fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    string_to_timestamp_nanos(s)
        .ok()
        .map(|ns| ns.div_euclid(1_000_000))
}

impl RecordDecoderBuilder {
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
    /// Rows whose value is missing or unparsable go to the failures with [`FailureKind::BadRowtime`].
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

    /// Records larger than this go to the failures as [`FailureKind::Oversized`].
    pub fn with_max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// Rows per internal decoder batch (a capacity hint; output is one batch per call).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Builds the decoder, checking that the columns make sense together.
    pub fn build(self) -> Result<RecordDecoder> {
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
        let (decode_schema, layout) = match self.format {
            RecordFormat::Json => json_layout(&self.columns)?,
            RecordFormat::Csv(_) => (
                Arc::new(Schema::new(
                    self.columns
                        .iter()
                        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                        .collect::<Vec<_>>(),
                )),
                Layout::Flat,
            ),
        };
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect();
        for m in &self.metadata {
            fields.push(Field::new(m.name(), m.data_type(), true));
        }
        fields.push(Field::new(
            ROWTIME,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ));
        let output_schema = Arc::new(Schema::new(fields));
        let processing_rowtime = self.rowtime_field.as_deref() == Some(PROCESSING_ROWTIME);
        let rowtime_column = match &self.rowtime_field {
            None => None,
            Some(_) if processing_rowtime => None,
            Some(name) => Some(
                self.columns
                    .iter()
                    .position(|c| &c.name == name)
                    .ok_or_else(|| {
                        Error::Format(format!(
                            "ROWTIME field `{name}` is not a column of the input (columns: {})",
                            self.columns
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?,
            ),
        };
        if let Some(c) = rowtime_column {
            let t = &self.columns[c].data_type;
            let ok = t.is_integer()
                || t.is_floating()
                || matches!(
                    t,
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Timestamp(_, _)
                        | DataType::Date32
                        | DataType::Date64
                );
            if !ok {
                return Err(Error::Format(format!(
                    "ROWTIME field `{}` has type {t}; it must be a string, an integer or a timestamp",
                    self.columns[c].name
                )));
            }
        }
        let inner = RecordDecoder::new_inner(&self.format, &decode_schema, self.batch_size);
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
            inner,
            flat,
        })
    }
}

/// A tree of JSON members, built from the column paths.
#[derive(Debug, Default)]
struct Node {
    children: Vec<(String, Node)>,
    leaf: Option<(DataType, String)>,
}

impl Node {
    fn fields(&self) -> Fields {
        self.children
            .iter()
            .map(|(name, n)| match &n.leaf {
                Some((t, _)) => Field::new(name, t.clone(), true),
                None => Field::new(name, DataType::Struct(n.fields()), true),
            })
            .collect()
    }
}

fn json_layout(columns: &[Column]) -> Result<(SchemaRef, Layout)> {
    let mut root = Node::default();
    let mut paths = Vec::with_capacity(columns.len());
    for c in columns {
        let path = c.effective_path();
        let mut node = &mut root;
        let mut indexes = Vec::new();
        let segs = path.segments();
        for (depth, seg) in segs.iter().enumerate() {
            if let Some((_, owner)) = &node.leaf {
                return Err(Error::Format(format!(
                    "column `{}` reads {path} inside the member that column `{owner}` reads as a value",
                    c.name
                )));
            }
            let pos = match node.children.iter().position(|(n, _)| n == seg) {
                Some(p) => p,
                None => {
                    node.children.push((seg.clone(), Node::default()));
                    node.children.len() - 1
                }
            };
            indexes.push(pos);
            node = &mut node.children[pos].1;
            if depth + 1 == segs.len() {
                if !node.children.is_empty() {
                    return Err(Error::Format(format!(
                        "column `{}` reads {path} as a value, but other columns read members inside it",
                        c.name
                    )));
                }
                match &node.leaf {
                    Some((t, owner)) if t != &c.data_type => {
                        return Err(Error::Format(format!(
                        "columns `{owner}` and `{}` read {path} with different types ({t} and {})",
                        c.name, c.data_type
                    )))
                    }
                    Some(_) => {}
                    None => node.leaf = Some((c.data_type.clone(), c.name.clone())),
                }
            }
        }
        paths.push(indexes);
    }
    let flat = paths
        .iter()
        .enumerate()
        .all(|(i, p)| p.len() == 1 && p[0] == i)
        && root.children.len() == columns.len();
    let schema = Arc::new(Schema::new(root.fields()));
    let layout = if flat {
        Layout::Flat
    } else {
        Layout::Nested(paths)
    };
    Ok((schema, layout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Float64Type, Int64Type};
    use bytes::Bytes;

    fn recs(payloads: &[&[u8]]) -> Vec<Record> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Record::new(Bytes::copy_from_slice(p), 1000 + i as i64))
            .collect()
    }

    fn json(columns: Vec<Column>) -> RecordDecoder {
        RecordDecoder::builder(RecordFormat::Json)
            .with_columns(columns)
            .build()
            .unwrap()
    }

    fn ab() -> Vec<Column> {
        vec![
            Column::new("a", DataType::Int64),
            Column::new("b", DataType::Utf8),
        ]
    }

    #[test]
    fn processing_rowtime_is_when_the_batch_was_decoded_and_never_goes_back() {
        let mut d = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(ab())
            .with_rowtime_field(Some(PROCESSING_ROWTIME.into()))
            .build()
            .unwrap();
        let rowtimes = |d: &mut RecordDecoder| {
            let out = d
                .decode(&recs(&[br#"{"a":1,"b":"x"}"#, br#"{"a":2,"b":"y"}"#]))
                .unwrap();
            out.batch
                .column(2)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                .values()
                .to_vec()
        };
        let before = crate::record::now_ms();
        let first = rowtimes(&mut d);
        let after = crate::record::now_ms();
        // Not the arrival times (1000, 1001): one instant of this decode for both rows.
        assert_eq!(first[0], first[1]);
        assert!((before..=after).contains(&first[0]), "{first:?}");
        let second = rowtimes(&mut d);
        assert!(second[0] >= first[0]);
    }

    #[test]
    fn valid_json_with_rowtime_from_arrival() {
        let mut d = json(ab());
        let out = d
            .decode(&recs(&[
                br#"{"a":1,"b":"x"}"#,
                br#"{"b":"y","a":2,"extra":true}"#,
            ]))
            .unwrap();
        assert!(out.failures.is_empty());
        let b = &out.batch;
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert_eq!(b.schema().field(2).name(), ROWTIME);
        let rt = b
            .column(2)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(rt.values(), &[1000, 1001]);
    }

    #[test]
    fn bad_records_are_isolated_and_good_ones_kept() {
        let mut d = json(ab());
        let input = recs(&[
            br#"{"a":1,"b":"x"}"#,
            br#"{"a":"#,                     // truncated
            br#"{"a":"not a number"}"#,      // wrong type
            b"{\"a\":3,\"b\":\"\xff\xfe\"}", // not UTF-8
            br#"{"a":4}{"a":5}"#,            // two values in one record
            b"   ",                          // nothing
            br#"{"a":6,"b":"z"}"#,
        ]);
        let out = d.decode(&input).unwrap();
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.row_records, vec![0, 6]);
        assert_eq!(
            out.batch.column(0).as_primitive::<Int64Type>().values(),
            &[1, 6]
        );
        let failed: Vec<usize> = out.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, vec![1, 2, 3, 4, 5]);
        assert!(out
            .failures
            .iter()
            .all(|f| f.kind == FailureKind::Malformed));
        assert!(
            out.failures[4].reason.contains("no JSON value"),
            "{:?}",
            out.failures[4]
        );
        assert!(
            out.failures[3].reason.contains("2 JSON values"),
            "{:?}",
            out.failures[3]
        );
        // The decoder is healthy afterwards.
        let again = d.decode(&recs(&[br#"{"a":7}"#])).unwrap();
        assert_eq!(again.batch.num_rows(), 1);
    }

    #[test]
    fn an_unclosed_record_cannot_swallow_the_next_one() {
        // Concatenated, these two parse as two rows; but neither record is a row on its own.
        let mut d = json(ab());
        let out = d
            .decode(&recs(&[
                br#"{"a":1,"b":{"x":1}"#,
                br#","z":2}{"a":3}"#,
                br#"{"a":4}"#,
            ]))
            .unwrap();
        assert_eq!(out.row_records, vec![2]);
        let failed: Vec<usize> = out.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, vec![0, 1]);

        let mut c = RecordDecoder::builder(RecordFormat::Csv(CsvOptions::default()))
            .with_columns(vec![
                Column::new("s", DataType::Utf8),
                Column::new("n", DataType::Int64),
            ])
            .build()
            .unwrap();
        let out = c
            .decode(&recs(&[b"\"open,1", b"x\",1\ny,2", b"z,3"]))
            .unwrap();
        assert_eq!(out.row_records, vec![2]);
    }

    #[test]
    fn an_unclosed_csv_quote_does_not_leak_into_other_records() {
        let mut c = RecordDecoder::builder(RecordFormat::Csv(CsvOptions::default()))
            .with_columns(vec![
                Column::new("n", DataType::Int64),
                Column::new("s", DataType::Utf8),
            ])
            .build()
            .unwrap();
        for (input, good) in [
            (vec![&b"1,a"[..], b"2,\"b"], vec![0]),
            (vec![&b"2,\"b"[..], b"1,a", b"3,c"], vec![1, 2]),
        ] {
            let out = c.decode(&recs(&input)).unwrap();
            assert_eq!(out.row_records, good, "{:?}", out.failures);
        }
    }

    #[test]
    fn batches_larger_than_the_decoder_batch_size() {
        let mut d = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(ab())
            .with_batch_size(3)
            .build()
            .unwrap();
        let input: Vec<Record> = (0..10)
            .map(|i| Record::new(Bytes::from(format!(r#"{{"a":{i}}}"#)), 0))
            .collect();
        let out = d.decode(&input).unwrap();
        assert_eq!(out.batch.num_rows(), 10);
        assert_eq!(
            out.batch.column(0).as_primitive::<Int64Type>().values(),
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        );
    }

    #[test]
    fn huge_records_decode_and_oversized_ones_fail() {
        let big = format!(r#"{{"a":1,"b":"{}"}}"#, "x".repeat(1_500_000));
        let mut d = json(ab());
        let out = d.decode(&recs(&[big.as_bytes()])).unwrap();
        assert_eq!(out.batch.num_rows(), 1);
        assert_eq!(
            out.batch.column(1).as_string::<i32>().value(0).len(),
            1_500_000
        );

        let mut small = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(ab())
            .with_max_record_bytes(1 << 20)
            .build()
            .unwrap();
        let out = small
            .decode(&recs(&[big.as_bytes(), br#"{"a":2}"#]))
            .unwrap();
        assert_eq!(out.batch.num_rows(), 1);
        assert_eq!(out.failures[0].kind, FailureKind::Oversized);
    }

    #[test]
    fn json_paths_map_nested_members_with_null_propagation() {
        let mut d = json(vec![
            Column::new("sym", DataType::Utf8).with_path("$.q.sym".parse().unwrap()),
            Column::new("px", DataType::Float64).with_path("$.q.px".parse().unwrap()),
            Column::new("venue", DataType::Utf8)
                .with_path("$['meta']['venue name']".parse().unwrap()),
            Column::new("id", DataType::Int64),
        ]);
        let out = d
            .decode(&recs(&[
                br#"{"id":1,"q":{"sym":"A","px":1.5},"meta":{"venue name":"X"}}"#,
                br#"{"id":2,"q":null}"#,
                br#"{"id":3,"q":{"px":2.5}}"#,
            ]))
            .unwrap();
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let b = out.batch;
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["sym", "px", "venue", "id", "ROWTIME"]);
        let sym = b.column(0).as_string::<i32>();
        assert_eq!(sym.value(0), "A");
        assert!(sym.is_null(1) && sym.is_null(2));
        let px = b.column(1).as_primitive::<Float64Type>();
        assert!(px.is_null(1));
        assert_eq!(px.value(2), 2.5);
        assert_eq!(b.column(2).as_string::<i32>().value(0), "X");
    }

    #[test]
    fn numbers_in_text_columns_keep_their_text() {
        let mut d = json(ab());
        let out = d
            .decode(&recs(&[
                br#"{"a":1,"b":1767225600000}"#,
                br#"{"a":2,"b":true}"#,
            ]))
            .unwrap();
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        let b = out.batch.column(1).as_string::<i32>();
        assert_eq!((b.value(0), b.value(1)), ("1767225600000", "true"));
    }

    #[test]
    fn conflicting_paths_are_rejected() {
        let err = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(vec![
                Column::new("a", DataType::Utf8),
                Column::new("ab", DataType::Utf8).with_path("$.a.b".parse().unwrap()),
            ])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("inside"), "{err}");
    }

    #[test]
    fn csv_quotes_embedded_delimiters_and_bad_rows() {
        let mut d = RecordDecoder::builder(RecordFormat::Csv(CsvOptions {
            delimiter: b';',
            ..CsvOptions::default()
        }))
        .with_columns(vec![
            Column::new("name", DataType::Utf8),
            Column::new("n", DataType::Int32),
        ])
        .build()
        .unwrap();
        let out = d
            .decode(&recs(&[
                b"\"a;b\";1",
                b"\"say \"\"hi\"\"\";2",
                b"\"multi\nline\";3",
                b"x;notanumber",
                b"too;many;fields",
                b"ok;4",
            ]))
            .unwrap();
        let names = out.batch.column(0).as_string::<i32>();
        assert_eq!(names.value(0), "a;b");
        assert_eq!(names.value(1), "say \"hi\"");
        assert_eq!(names.value(2), "multi\nline");
        assert_eq!(out.row_records, vec![0, 1, 2, 5]);
        let failed: Vec<usize> = out.failures.iter().map(|f| f.index).collect();
        assert_eq!(failed, vec![3, 4]);
    }

    #[test]
    fn rowtime_from_iso_or_epoch_field() {
        let mut d = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(vec![Column::new("t", DataType::Utf8)])
            .with_rowtime_field(Some("t".into()))
            .build()
            .unwrap();
        let out = d
            .decode(&recs(&[
                br#"{"t":"2026-01-01T00:00:01.500Z"}"#,
                br#"{"t":"1767225600000"}"#,
                br#"{"t":"yesterday"}"#,
                br#"{}"#,
            ]))
            .unwrap();
        let rt = out
            .batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(rt.values(), &[1_767_225_601_500, 1_767_225_600_000]);
        let kinds: Vec<_> = out.failures.iter().map(|f| (f.index, f.kind)).collect();
        assert_eq!(
            kinds,
            vec![(2, FailureKind::BadRowtime), (3, FailureKind::BadRowtime)]
        );
    }

    #[test]
    fn rowtime_from_a_zoned_timestamp_keeps_the_instant() {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into()));
        let mut d = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(vec![Column::new("t", ts)])
            .with_rowtime_field(Some("t".into()))
            .build()
            .unwrap();
        let out = d
            .decode(&recs(&[br#"{"t":"2026-01-01T02:00:00+02:00"}"#]))
            .unwrap();
        let rt = out
            .batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(rt.value(0), 1_767_225_600_000);
    }

    #[test]
    fn unknown_rowtime_field_is_a_build_error() {
        let err = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(ab())
            .with_rowtime_field(Some("ts".into()))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`ts`"), "{err}");
    }
}

#[cfg(test)]
mod flat_json_tests {
    use super::*;
    use bytes::Bytes;

    fn decoder() -> RecordDecoder {
        RecordDecoder::builder(RecordFormat::Json)
            .with_columns(vec![
                Column::new("s", DataType::Utf8),
                Column::new("i", DataType::Int64),
                Column::new("n", DataType::Int32),
                Column::new("f", DataType::Float64),
                Column::new("g", DataType::Float32),
                Column::new("b", DataType::Boolean),
            ])
            .build()
            .unwrap()
    }

    fn recs(lines: &[&str]) -> Vec<Record> {
        lines
            .iter()
            .map(|l| Record::new(Bytes::from(l.to_string()), 7))
            .collect()
    }

    /// Decodes with the fast path and with arrow-json alone; both must agree exactly.
    fn both(lines: &[&str]) -> (bool, DecodeOutput) {
        let records = recs(lines);
        let mut fast = decoder();
        let all: Vec<usize> = (0..records.len()).collect();
        let took_fast = fast.flat.as_ref().unwrap().decode(&records, &all).is_ok();
        let a = fast.decode(&records).unwrap();
        let mut general = decoder();
        general.flat = None;
        let b = general.decode(&records).unwrap();
        assert_eq!(a.batch, b.batch, "{lines:?}");
        assert_eq!(a.row_records, b.row_records);
        assert_eq!(
            a.failures
                .iter()
                .map(|f| (f.index, f.kind))
                .collect::<Vec<_>>(),
            b.failures
                .iter()
                .map(|f| (f.index, f.kind))
                .collect::<Vec<_>>()
        );
        (took_fast, a)
    }

    #[test]
    fn fast_path_agrees_with_arrow_json_on_what_it_accepts() {
        let (fast, out) = both(&[
            r#"{"s":"plain","i":1,"n":-2,"f":1.5,"g":2.25,"b":true}"#,
            r#"  { "b" : false , "f" : -0.0 , "s" : "esc \"q\" \\ \/ \n\t \u00e9 \ud83d\ude00" }  "#,
            r#"{"s":12,"i":-0,"f":1e3,"g":3}"#,
            r#"{"s":1.50,"f":2.5E-3}"#,
            r#"{"s":true}"#,
            r#"{"s":null,"i":null,"f":null,"b":null}"#,
            r#"{}"#,
            r#"{"other":{"a":[1,2,{"b":"}\"]"}],"c":null},"s":"after nested","more":[[],{}],"x":"\\"}"#,
            r#"{"i":9223372036854775807,"n":2147483647,"f":123456789012345678901234567890}"#,
            "{\"s\":\"ünïcödé\"}",
        ]);
        assert!(fast, "these records should take the fast path");
        assert_eq!(out.batch.num_rows(), 10);
        assert!(out.failures.is_empty());
    }

    #[test]
    fn anything_unusual_falls_back_to_the_same_result() {
        for lines in [
            vec![r#"{"f":"12.5"}"#, r#"{"f":1}"#],
            vec![r#"{"i":1.5}"#],
            vec![r#"{"i":1e2}"#],
            vec![r#"{"n":3000000000}"#],
            vec![r#"{"s":"a","s":"b"}"#],
            vec![r#"{"s":"a"} {"s":"b"}"#, r#"{"s":"c"}"#],
            vec![r#"{"s":"a""#, r#"{"s":"c"}"#],
            vec![r#"[1,2]"#, r#"{"s":"c"}"#],
            vec![r#"{"b":"yes"}"#],
            vec![r#"{"s":{"nested":1}}"#, r#"{"s":"ok"}"#],
            vec![r#"{"f":01}"#, r#"{"f":1}"#],
            vec![r#"{"f":1e999}"#],
            vec!["", r#"{"s":"x"}"#],
            vec![r#"{"s":"a","junk":"\q"}"#, r#"{"s":"b"}"#],
            vec![r#"{"s":"a","junk":"\u12"}"#],
            vec![r#"{"s":"a","junk":"\ud800"}"#],
        ] {
            let (fast, _) = both(&lines);
            assert!(!fast, "{lines:?} should not take the fast path");
        }
    }
}
