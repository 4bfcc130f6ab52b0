//! The error output: records and rows that could not be processed, each with its reason.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use base64::Engine as _;

use crate::record::Record;

/// Name of the error output stream.
pub const ERROR_STREAM: &str = "error_stream";

/// Where in the pipeline a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStage {
    /// Decoding the payload into a row.
    Decode,
    /// Evaluating SQL on the row.
    Sql,
    /// Delivering the output to a sink.
    Sink,
}

impl ErrorStage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Sql => "sql",
            Self::Sink => "sink",
        }
    }
}

/// A record that could not be processed, with why.
#[derive(Debug, Clone)]
pub struct ErrorRecord {
    /// The failing stage.
    pub stage: ErrorStage,
    /// A short stable category, e.g. `malformed`, `oversized`, `bad_rowtime`, `late`.
    pub kind: String,
    /// A human-readable reason.
    pub reason: String,
    /// The record as it came from the source (payload and metadata, shared, not copied).
    pub record: Record,
}

/// Schema of error-output batches.
///
/// | column | type | meaning |
/// | --- | --- | --- |
/// | `error_time` | timestamp(ms, UTC) | when the failure was seen |
/// | `stage` | utf8 | `decode`, `sql`, `sink` |
/// | `kind` | utf8 | stable category |
/// | `reason` | utf8 | what is wrong |
/// | `raw_data` | utf8 | the payload, base64 (lossless, as Firehose reports failed records) |
/// | `partition_key`, `shard_id`, `sequence_number` | utf8, nullable | source metadata |
/// | `sub_sequence_number` | uint64, nullable | KPL sub-record index |
/// | `arrival_time` | timestamp(ms, UTC) | the record's `ROWTIME` |
pub fn error_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("error_time", ts.clone(), false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw_data", DataType::Utf8, false),
        Field::new("partition_key", DataType::Utf8, true),
        Field::new("shard_id", DataType::Utf8, true),
        Field::new("sequence_number", DataType::Utf8, true),
        Field::new("sub_sequence_number", DataType::UInt64, true),
        Field::new("arrival_time", ts, false),
    ]))
}

impl ErrorRecord {
    /// Builds the error-output batch for `errors`, stamped with `now_ms`.
    pub fn to_batch(errors: &[ErrorRecord], now_ms: i64) -> RecordBatch {
        let b64 = base64::engine::general_purpose::STANDARD;
        let n = errors.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(std::iter::repeat_n(now_ms, n))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| e.stage.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| e.kind.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| e.reason.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| b64.encode(e.record.payload())),
            )),
            Arc::new(StringArray::from_iter(
                errors.iter().map(|e| e.record.partition_key()),
            )),
            Arc::new(StringArray::from_iter(
                errors.iter().map(|e| e.record.shard_id()),
            )),
            Arc::new(StringArray::from_iter(
                errors.iter().map(|e| e.record.sequence_number()),
            )),
            Arc::new(UInt64Array::from_iter(
                errors.iter().map(|e| e.record.sub_sequence_number()),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    errors.iter().map(|e| e.record.arrival_time_ms()),
                )
                .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(error_schema(), columns)
            .expect("error columns are built to match the error schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use bytes::Bytes;

    #[test]
    fn payload_survives_as_base64() {
        let rec = Record::new(Bytes::from_static(b"\xff\x00bad"), 5).with_partition_key("pk");
        let batch = ErrorRecord::to_batch(
            &[ErrorRecord {
                stage: ErrorStage::Decode,
                kind: "malformed".into(),
                reason: "invalid JSON".into(),
                record: rec,
            }],
            9,
        );
        let raw = batch.column(4).as_string::<i32>().value(0);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        assert_eq!(decoded, b"\xff\x00bad");
        assert_eq!(batch.column(5).as_string::<i32>().value(0), "pk");
        assert!(batch.column(6).is_null(0));
    }
}
