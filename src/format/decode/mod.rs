//! Payloads of a micro-batch → one Arrow `RecordBatch`, with bad records set aside.
//!
//! [`RecordDecoder`] (this module) runs the steps of a micro-batch: it sets oversized records
//! aside, decodes the rest in one go (the flat-JSON fast path, else arrow's push decoders of
//! `push`) and, when that fails, decodes each record alone to isolate the bad ones; then it maps
//! the decoded columns to the output schema (`layout`), adds `ROWTIME` (`rowtime`) and the
//! metadata columns. `builder` checks the columns and options and builds it.

mod arrow_rows;
mod builder;
mod layout;
mod push;
mod rowtime;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};

pub use self::builder::RecordDecoderBuilder;
use self::layout::Layout;
use self::push::{strip_arrow_prefix, PushDecoder};
pub use self::rowtime::PROCESSING_ROWTIME;
use super::flat_json::FlatJsonDecoder;
use super::{MetadataColumn, RecordFormat};
use crate::record::Record;
use crate::{Error, Result};

/// Default largest payload accepted: the Kinesis Data Streams record size limit (10 MiB).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 10 * 1024 * 1024;

/// Fewest records a decoding thread is given
/// ([`RecordDecoderBuilder::with_workers`]): below it, starting a thread costs more than it saves.
pub const MIN_ROWS_PER_WORKER: usize = 2048;

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
    /// Threads the flat-JSON fast path may use for one call.
    workers: usize,
    inner: PushDecoder,
    /// The fast path for flat JSON objects, when the columns allow it.
    flat: Option<FlatJsonDecoder>,
}

impl RecordDecoder {
    /// A builder for records in `format`. Columns are required (set them or infer them first with
    /// [`infer_schema`](crate::infer_schema)).
    pub fn builder(format: RecordFormat) -> RecordDecoderBuilder {
        RecordDecoderBuilder::new(format)
    }

    /// Whether `ROWTIME` is the time a record entered the pipeline ([`PROCESSING_ROWTIME`]).
    pub(crate) fn processing_rowtime(&self) -> bool {
        self.processing_rowtime
    }

    /// Threads that decode one call's records ([`RecordDecoderBuilder::with_workers`]).
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Schema of the batches produced: the columns, the metadata columns, then `ROWTIME`.
    pub fn schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    fn reset(&mut self) {
        self.inner = PushDecoder::new(&self.format, &self.decode_schema, self.batch_size);
    }

    /// Decodes `records` into one batch; records that do not decode are listed in
    /// [`DecodeOutput::failures`] and leave no row.
    pub fn decode(&mut self, records: &[Record]) -> Result<DecodeOutput> {
        if records.iter().any(|r| r.row().is_some()) {
            return self.decode_runs(records);
        }
        self.decode_payloads(records)
    }

    /// [`decode`](Self::decode) of records that all have payloads.
    fn decode_payloads(&mut self, records: &[Record]) -> Result<DecodeOutput> {
        let (candidates, mut failures) = self.screen_sizes(records);
        let (raw, mut row_records, times) =
            self.decode_candidates(records, candidates, &mut failures)?;
        let mut columns = self.layout.extract(&raw)?;
        let rowtime = self.rowtimes(
            records,
            &mut columns,
            &mut row_records,
            &mut failures,
            times,
        )?;
        for &m in &self.metadata {
            columns.push(metadata_column(m, row_records.iter().map(|&i| &records[i])));
        }
        columns.push(Arc::new(rowtime.with_timezone("UTC")));
        let batch = RecordBatch::try_new(Arc::clone(&self.output_schema), columns)?;
        Ok(DecodeOutput {
            batch,
            row_records,
            failures,
        })
    }

    /// The indexes of the records within `max_record_bytes`, and a failure for each other one.
    fn screen_sizes(&self, records: &[Record]) -> (Vec<usize>, Vec<DecodeFailure>) {
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
        (candidates, failures)
    }

    /// Decodes the candidates into one batch of the decode schema; returns it with the record
    /// index of each row and, when the fast path read them, the times of the `ROWTIME` column.
    /// Candidates that do not decode go to `failures`.
    fn decode_candidates(
        &mut self,
        records: &[Record],
        candidates: Vec<usize>,
        failures: &mut Vec<DecodeFailure>,
    ) -> Result<(RecordBatch, Vec<usize>, Option<TimestampMillisecondArray>)> {
        // Fastest path: flat objects read straight into builders; it gives up on anything
        // unusual. Then the whole batch through arrow-json in one go. Any error, or a record count
        // that does not match the row count (a record holding two JSON values, or none), sends us
        // to the slow path, which isolates the bad records.
        if let Some((batch, times)) = self.decode_flat(records, &candidates)? {
            return Ok((batch, candidates, times));
        }
        let attempt = self.inner.decode_records(records, &candidates, true);
        let (batches, good) = match attempt {
            Ok(b) if row_count(&b) == candidates.len() => (b, candidates),
            _ => self.decode_around_failures(records, &candidates, failures)?,
        };
        let raw = match batches.len() {
            0 => RecordBatch::new_empty(Arc::clone(&self.decode_schema)),
            1 => batches.into_iter().next().expect("one batch"),
            _ => arrow::compute::concat_batches(&self.decode_schema, &batches)?,
        };
        Ok((raw, good, None))
    }

    /// The flat-JSON fast path over `candidates`, with the `ROWTIME` column's times, in
    /// contiguous parts on up to `workers` threads; `None` when it gives up on any part.
    fn decode_flat(
        &self,
        records: &[Record],
        candidates: &[usize],
    ) -> Result<Option<(RecordBatch, Option<TimestampMillisecondArray>)>> {
        let Some(flat) = &self.flat else {
            return Ok(None);
        };
        // The fast path's columns are the output columns (its layout is flat).
        let time_column = self.rowtime_column;
        let part = |indexes: &[usize]| -> Result<Option<FlatPart>> {
            let Ok(batch) = flat.decode(records, indexes) else {
                return Ok(None);
            };
            let times = match time_column {
                Some(c) => Some(rowtime::to_epoch_millis(batch.column(c))?),
                None => None,
            };
            Ok(Some((batch, times)))
        };
        let parts = (candidates.len() / MIN_ROWS_PER_WORKER).clamp(1, self.workers);
        if parts == 1 {
            return part(candidates);
        }
        let size = candidates.len().div_ceil(parts);
        let decoded: Vec<Result<Option<FlatPart>>> = std::thread::scope(|scope| {
            let others: Vec<_> = candidates[size..]
                .chunks(size)
                .map(|indexes| scope.spawn(move || part(indexes)))
                .collect();
            // The calling thread decodes the first part itself.
            let first = part(&candidates[..size]);
            std::iter::once(first)
                .chain(others.into_iter().map(|h| match h.join() {
                    Ok(r) => r,
                    Err(panic) => std::panic::resume_unwind(panic),
                }))
                .collect()
        });
        let mut batches = Vec::with_capacity(parts);
        let mut times = Vec::with_capacity(parts);
        for d in decoded {
            let Some((batch, t)) = d? else {
                return Ok(None);
            };
            batches.push(batch);
            times.extend(t);
        }
        let batch = arrow::compute::concat_batches(&self.decode_schema, &batches)?;
        let times = match times.is_empty() {
            true => None,
            false => {
                let parts: Vec<&dyn Array> = times.iter().map(|t| t as &dyn Array).collect();
                let all = arrow::compute::concat(&parts)?;
                Some(all.as_primitive::<TimestampMillisecondType>().clone())
            }
        };
        Ok(Some((batch, times)))
    }

    /// The slow path: sets aside the candidates that do not decode alone, then decodes the others
    /// together.
    fn decode_around_failures(
        &mut self,
        records: &[Record],
        candidates: &[usize],
        failures: &mut Vec<DecodeFailure>,
    ) -> Result<(Vec<RecordBatch>, Vec<usize>)> {
        self.reset();
        let good = self.isolate_failures(records, candidates, failures);
        let batches = self
            .inner
            .decode_records(records, &good, true)
            .map_err(|e| {
                Error::Format(format!("records that decoded alone failed together: {e}"))
            })?;
        if row_count(&batches) != good.len() {
            return Err(Error::Format(
                "records that decoded alone gave a different row count together".into(),
            ));
        }
        failures.sort_by_key(|f| f.index);
        Ok((batches, good))
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
            let attempt = self.inner.decode_records(records, &[i], false);
            if !matches!(&attempt, Ok(b) if row_count(b) == 1) {
                // Whatever the decoder holds now (an open quote, half an object) must not leak into
                // the next record.
                self.reset();
            }
            match attempt {
                Ok(b) if row_count(&b) == 1 => good.push(i),
                Ok(b) => failures.push(DecodeFailure {
                    index: i,
                    kind: FailureKind::Malformed,
                    reason: match (&self.format, row_count(&b)) {
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
}

/// One part of the fast path's output: its rows, and the times of their `ROWTIME` column.
type FlatPart = (RecordBatch, Option<TimestampMillisecondArray>);

fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The metadata column `m` of the records of `rows`.
fn metadata_column<'a>(m: MetadataColumn, rows: impl Iterator<Item = &'a Record>) -> ArrayRef {
    match m {
        MetadataColumn::PartitionKey => {
            Arc::new(StringArray::from_iter(rows.map(Record::partition_key)))
        }
        MetadataColumn::SequenceNumber => {
            Arc::new(StringArray::from_iter(rows.map(Record::sequence_number)))
        }
        MetadataColumn::ShardId => Arc::new(StringArray::from_iter(rows.map(Record::shard_id))),
        MetadataColumn::SubSequenceNumber => Arc::new(Int64Array::from_iter(rows.map(|r| {
            r.sequence_number()
                .map(|_| r.sub_sequence_number().unwrap_or(0) as i64)
        }))),
        MetadataColumn::ApproximateArrivalTime => Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.map(Record::arrival_time_ms))
                .with_timezone("UTC"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Column, CsvOptions, ROWTIME};
    use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
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

    fn csv(columns: Vec<Column>) -> RecordDecoder {
        RecordDecoder::builder(RecordFormat::Csv(CsvOptions::default()))
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

        let mut c = csv(vec![
            Column::new("s", DataType::Utf8),
            Column::new("n", DataType::Int64),
        ]);
        let out = c
            .decode(&recs(&[b"\"open,1", b"x\",1\ny,2", b"z,3"]))
            .unwrap();
        assert_eq!(out.row_records, vec![2]);
    }

    #[test]
    fn an_unclosed_csv_quote_does_not_leak_into_other_records() {
        let mut c = csv(vec![
            Column::new("n", DataType::Int64),
            Column::new("s", DataType::Utf8),
        ]);
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
    use crate::format::Column;
    use arrow::datatypes::DataType;
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

    /// Thousands of generated records, numbers of every length and strings with every kind of
    /// byte near the scanner's eight-byte steps, members in shifting orders: the fast path must
    /// give arrow-json's result bit for bit, and must take most batches.
    /// Parallel decoding must not change a single row, index or failure: records of one call are
    /// split into parts, and each part's rows, `ROWTIME`s and failures must come back in order.
    #[test]
    fn several_workers_decode_exactly_as_one() {
        let mut rng = fastrand::Rng::with_seed(7);
        let lines: Vec<String> = (0..3 * MIN_ROWS_PER_WORKER + 123)
            .map(|i| match rng.u8(0..50) {
                // A time that is not one: a BadRowtime failure, in whichever part it falls.
                0 => format!(r#"{{"k":"k{i}","v":{i},"t":"yesterday"}}"#),
                // A member without a value: decodes (as null) but the time is missing.
                1 => format!(r#"{{"k":"k{i}","v":{i}}}"#),
                _ => format!(
                    r#"{{"k":"k{}","v":{}.{},"t":"2026-03-0{}T10:{:02}:{:02}.{:03}Z"}}"#,
                    rng.u8(0..9),
                    i,
                    rng.u16(0..1000),
                    rng.u8(1..9),
                    rng.u8(0..60),
                    rng.u8(0..60),
                    rng.u16(0..1000)
                ),
            })
            .collect();
        let columns = vec![
            Column::new("k", DataType::Utf8),
            Column::new("v", DataType::Float64),
            Column::new("t", DataType::Utf8),
        ];
        let decoder = |workers: usize| {
            RecordDecoder::builder(RecordFormat::Json)
                .with_columns(columns.clone())
                .with_rowtime_field(Some("t".into()))
                .with_workers(workers)
                .build()
                .unwrap()
        };
        let payloads: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut fast = recs(&payloads);
        // A record the fast path gives up on (nested object), then one that is not JSON: both
        // the fast path of every part and the slow path must agree on them.
        let mut unusual = fast.clone();
        unusual[2 * MIN_ROWS_PER_WORKER + 5] =
            Record::new(Bytes::from_static(br#"{"k":{"x":1},"v":1}"#), 7);
        unusual[MIN_ROWS_PER_WORKER + 1] = Record::new(Bytes::from_static(b"{no"), 8);
        fast.truncate(fast.len() - 1);
        for records in [&fast, &unusual] {
            let one = decoder(1).decode(records).unwrap();
            assert!(one.failures.len() > 10, "{:?}", one.failures.len());
            for workers in [2, 3, 8] {
                let many = decoder(workers).decode(records).unwrap();
                assert_eq!(many.batch, one.batch, "{workers} workers");
                assert_eq!(many.row_records, one.row_records, "{workers} workers");
                assert_eq!(many.failures, one.failures, "{workers} workers");
            }
        }
    }

    #[test]
    fn generated_records_decode_as_arrow_json_decodes_them() {
        use arrow::array::{AsArray, Float32Array, Float64Array};
        let mut rng = fastrand::Rng::with_seed(21);
        let number = |rng: &mut fastrand::Rng| {
            let mut n = String::new();
            if rng.bool() {
                n.push('-');
            }
            let int_digits = rng.usize(1..=20);
            n.push(char::from(b'0' + rng.u8(1..=9)));
            for _ in 1..int_digits {
                n.push(char::from(b'0' + rng.u8(0..=9)));
            }
            if rng.u8(0..4) == 0 {
                n = if n.starts_with('-') {
                    "-0".into()
                } else {
                    "0".into()
                };
            }
            if rng.bool() {
                n.push('.');
                for _ in 0..rng.usize(1..=25) {
                    n.push(char::from(b'0' + rng.u8(0..=9)));
                }
            }
            if rng.u8(0..8) == 0 {
                n.push_str(["e", "E", "e-", "e+"][rng.usize(0..4)]);
                n.push_str(&rng.u32(0..40).to_string());
            }
            n
        };
        let text = |rng: &mut fastrand::Rng| {
            const PIECES: [&str; 12] = [
                "a", "Z", "09", " ", "~", "\\\"", "\\\\", "\\n", "\\u00e9", "é", "😀", "\u{7f}",
            ];
            (0..rng.usize(0..30))
                .map(|_| PIECES[rng.usize(0..PIECES.len())])
                .collect::<String>()
        };
        let mut fast_batches = 0;
        for _ in 0..200 {
            let lines: Vec<String> = (0..20)
                .map(|_| {
                    let mut members = vec![
                        format!("\"s\":\"{}\"", text(&mut rng)),
                        format!(
                            "\"i\":{}",
                            number(&mut rng).split(['.', 'e', 'E']).next().unwrap()
                        ),
                        format!("\"f\":{}", number(&mut rng)),
                        format!("\"g\":{}", number(&mut rng)),
                        format!("\"ss\":\"{}\"", text(&mut rng)),
                        format!("\"b\":{}", rng.bool()),
                    ];
                    if rng.u8(0..10) == 0 {
                        rng.shuffle(&mut members);
                    }
                    if rng.u8(0..10) == 0 {
                        members.truncate(rng.usize(0..members.len()));
                    }
                    format!("{{{}}}", members.join(","))
                })
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let (fast, out) = both(&lines);
            fast_batches += usize::from(fast);
            // `==` on arrays treats 0.0 and -0.0 as equal: compare the bits as well.
            let mut general = decoder();
            general.flat = None;
            let b = general.decode(&recs(&lines)).unwrap().batch;
            for name in ["f", "g"] {
                let (x, y) = (
                    out.batch.column_by_name(name).unwrap(),
                    b.column_by_name(name).unwrap(),
                );
                if let Some(x) = x.as_any().downcast_ref::<Float64Array>() {
                    let y = y.as_primitive::<arrow::datatypes::Float64Type>();
                    let bits = |a: &Float64Array| {
                        a.iter().map(|v| v.map(f64::to_bits)).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(x), bits(y), "{lines:?}");
                } else {
                    let x = x.as_any().downcast_ref::<Float32Array>().unwrap();
                    let y = y.as_primitive::<arrow::datatypes::Float32Type>();
                    let bits = |a: &Float32Array| {
                        a.iter().map(|v| v.map(f32::to_bits)).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(x), bits(y), "{lines:?}");
                }
            }
        }
        assert!(
            fast_batches > 20,
            "only {fast_batches} of 200 batches took the fast path"
        );
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
