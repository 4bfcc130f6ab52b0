//! The error output: records and rows that could not be processed, each with its reason.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use base64::Engine as _;

use crate::record::Record;

/// Name of the error output stream.
pub const ERROR_STREAM: &str = "error_stream";

/// Where in the pipeline a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStage {
    /// Transforming the raw record before decoding (a [`RecordTransform`](crate::RecordTransform)).
    Transform,
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
            Self::Transform => "transform",
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
    /// A short stable category, e.g. `malformed`, `oversized`, `bad_rowtime`, `late`, or the
    /// service's error code for a record a sink could not deliver.
    pub kind: String,
    /// A human-readable reason.
    pub reason: String,
    /// How many times the stage tried (1 for decoding and SQL; the calls made by a sink).
    pub attempts: u32,
    /// The record as it came from the source (payload and metadata, shared, not copied).
    pub record: Record,
}

/// Schema of error-output batches, shaped like the processing-failed records Firehose writes (so
/// tools that read those read these), plus where the record came from.
///
/// | column | type | meaning |
/// | --- | --- | --- |
/// | `attemptsMade` | int64 | tries before giving up |
/// | `arrivalTimestamp` | int64 | the record's arrival (`ROWTIME`), milliseconds since the epoch |
/// | `errorCode` | utf8 | stable category: `processing_failed`, `transform_failed`, `malformed`, `oversized`, `bad_rowtime`, `sql`, `late`, `bad_time`, or a service error code |
/// | `errorMessage` | utf8 | what is wrong |
/// | `attemptEndingTimestamp` | int64 | when the last try failed, milliseconds since the epoch |
/// | `rawData` | utf8 | the payload, base64 (lossless) |
/// | `stage` | utf8 | `transform`, `decode`, `sql`, `sink` |
/// | `recordId` | utf8, nullable | `shard/sequence/sub-sequence`, when the source has them |
/// | `partitionKey`, `shardId`, `sequenceNumber` | utf8, nullable | source metadata |
/// | `subSequenceNumber` | uint64, nullable | KPL sub-record index |
pub fn error_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("attemptsMade", DataType::Int64, false),
        Field::new("arrivalTimestamp", DataType::Int64, false),
        Field::new("errorCode", DataType::Utf8, false),
        Field::new("errorMessage", DataType::Utf8, false),
        Field::new("attemptEndingTimestamp", DataType::Int64, false),
        Field::new("rawData", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("recordId", DataType::Utf8, true),
        Field::new("partitionKey", DataType::Utf8, true),
        Field::new("shardId", DataType::Utf8, true),
        Field::new("sequenceNumber", DataType::Utf8, true),
        Field::new("subSequenceNumber", DataType::UInt64, true),
    ]))
}

impl ErrorRecord {
    /// Builds the error-output batch for `errors`, whose last tries failed at `now_ms`.
    pub fn to_batch(errors: &[ErrorRecord], now_ms: i64) -> RecordBatch {
        let b64 = base64::engine::general_purpose::STANDARD;
        let n = errors.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                errors.iter().map(|e| i64::from(e.attempts)),
            )),
            Arc::new(Int64Array::from_iter_values(
                errors.iter().map(|e| e.record.arrival_time_ms()),
            )),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| e.kind.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| e.reason.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(now_ms, n))),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| b64.encode(e.record.payload())),
            )),
            Arc::new(StringArray::from_iter_values(
                errors.iter().map(|e| e.stage.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                errors
                    .iter()
                    .map(|e| e.record.id().map(|id| id.to_string())),
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
                attempts: 1,
                record: rec,
            }],
            9,
        );
        let col = |name: &str| batch.column_by_name(name).unwrap();
        let raw = col("rawData").as_string::<i32>().value(0);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        assert_eq!(decoded, b"\xff\x00bad");
        assert_eq!(col("partitionKey").as_string::<i32>().value(0), "pk");
        assert!(col("shardId").is_null(0) && col("recordId").is_null(0));
        assert_eq!(
            col("arrivalTimestamp")
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            5
        );
        assert_eq!(
            col("attemptEndingTimestamp")
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            9
        );
        assert_eq!(
            col("attemptsMade")
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            1
        );
    }
}
