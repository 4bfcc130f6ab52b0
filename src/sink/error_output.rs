//! The error output: records and rows that could not be processed, each with its reason.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use base64::Engine as _;

use crate::record::Record;

/// Where in the pipeline a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorStage {
    /// Reading: the source set the record aside (see [`Record::with_rejection`](crate::Record::with_rejection)).
    Source,
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
            Self::Source => "source",
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
    /// For a row that failed in SQL, the statement it failed in: a Kinesis Data Analytics pump's
    /// name, or the stream a statement writes.
    pub statement: Option<Arc<str>>,
}

/// Schema of error-output batches, shaped like the processing-failed records Firehose writes (so
/// tools that read those read these), plus where the record came from.
///
/// | column | type | meaning |
/// | --- | --- | --- |
/// | `attemptsMade` | int64 | tries before giving up |
/// | `arrivalTimestamp` | int64 | the record's arrival (`ROWTIME`), milliseconds since the epoch |
/// | `errorCode` | utf8 | stable category: `processing_failed`, `transform_failed`, `malformed`, `oversized`, `bad_rowtime`, `sql`, `late`, `bad_time`, `out_of_shard_range`, `partition_key_missing`, or a service error code |
/// | `errorMessage` | utf8 | what is wrong |
/// | `attemptEndingTimestamp` | int64 | when the last try failed, milliseconds since the epoch |
/// | `rawData` | utf8 | the payload, base64 (lossless) |
/// | `stage` | utf8 | `source`, `transform`, `decode`, `sql`, `sink` |
/// | `recordId` | utf8, nullable | `shard/sequence/sub-sequence`, when the source has them |
/// | `partitionKey`, `shardId`, `sequenceNumber` | utf8, nullable | source metadata |
/// | `subSequenceNumber` | uint64, nullable | KPL sub-record index |
/// | `statement` | utf8, nullable | the SQL statement a row failed in (a KDA pump's name, or the stream the statement writes) |
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
        Field::new("statement", DataType::Utf8, true),
    ]))
}

impl ErrorRecord {
    /// `record`, which failed in `stage` on its first try: `kind` is the short stable category,
    /// `reason` what is wrong.
    pub fn new(
        stage: ErrorStage,
        kind: impl Into<String>,
        reason: impl Into<String>,
        record: Record,
    ) -> Self {
        Self {
            stage,
            kind: kind.into(),
            reason: reason.into(),
            attempts: 1,
            record,
            statement: None,
        }
    }

    /// The same, after `attempts` tries.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The same, failed in `statement` (a KDA pump's name, or the stream a statement writes).
    pub fn with_statement(mut self, statement: Option<Arc<str>>) -> Self {
        self.statement = statement;
        self
    }

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
                errors
                    .iter()
                    .map(|e| b64.encode(e.record.payload_or_row_json())),
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
            Arc::new(StringArray::from_iter(
                errors.iter().map(|e| e.statement.as_deref()),
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
            &[ErrorRecord::new(
                ErrorStage::Decode,
                "malformed",
                "invalid JSON",
                rec,
            )],
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

/// Wraps the error output of a Kinesis Data Analytics application: each error row also gets the
/// columns of KDA's in-application `error_stream` — `ERROR_TIME`, `ERROR_LEVEL`, `ERROR_NAME`,
/// `MESSAGE`, `DATA_ROWTIME`, `DATA_ROW` (the record, hex-encoded) and `PUMP_NAME` (the pump a row
/// failed in; null for records that failed before SQL) — so that what read KDA's error stream
/// reads these.
#[derive(Debug)]
pub(crate) struct KdaErrorColumns {
    inner: Box<dyn super::Sink>,
}

impl KdaErrorColumns {
    pub(crate) fn new(inner: Box<dyn super::Sink>) -> Self {
        Self { inner }
    }
}

/// `batch` (shaped by [`error_schema`]) with KDA's error-stream columns after its own.
pub(crate) fn with_kda_error_columns(batch: &RecordBatch) -> crate::Result<RecordBatch> {
    use arrow::array::{AsArray, TimestampMillisecondArray};
    use arrow::datatypes::{Int64Type, TimeUnit};
    let col = |name: &str| batch.column_by_name(name).cloned();
    let (Some(ending), Some(code), Some(message), Some(arrival), Some(raw), Some(pump)) = (
        col("attemptEndingTimestamp"),
        col("errorCode"),
        col("errorMessage"),
        col("arrivalTimestamp"),
        col("rawData"),
        col("statement"),
    ) else {
        return Ok(batch.clone());
    };
    let n = batch.num_rows();
    let b64 = base64::engine::general_purpose::STANDARD;
    // KDA's DATA_ROW is the record hex-encoded.
    let data_row: StringArray = raw
        .as_string::<i32>()
        .iter()
        .map(|v| {
            v.and_then(|v| b64.decode(v).ok()).map(|b| {
                let mut hex = String::with_capacity(b.len() * 2);
                for byte in b {
                    hex.push_str(&format!("{byte:02x}"));
                }
                hex
            })
        })
        .collect();
    // MESSAGE is a VARCHAR(4096) and ERROR_NAME a VARCHAR(32) in KDA.
    let cut = |a: &ArrayRef, n: usize| -> ArrayRef {
        Arc::new(
            a.as_string::<i32>()
                .iter()
                .map(|v| v.map(|v| v.chars().take(n).collect::<String>()))
                .collect::<StringArray>(),
        )
    };
    let ts = |a: &ArrayRef| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from(a.as_primitive::<Int64Type>().values().to_vec())
                .with_timezone("UTC"),
        )
    };
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let stamp = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    fields.extend([
        Field::new("ERROR_TIME", stamp.clone(), false),
        Field::new("ERROR_LEVEL", DataType::Utf8, false),
        Field::new("ERROR_NAME", DataType::Utf8, false),
        Field::new("MESSAGE", DataType::Utf8, false),
        Field::new("DATA_ROWTIME", stamp, false),
        Field::new("DATA_ROW", DataType::Utf8, true),
        Field::new("PUMP_NAME", DataType::Utf8, true),
    ]);
    let mut columns = batch.columns().to_vec();
    columns.extend([
        ts(&ending),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            "ERROR", n,
        ))) as ArrayRef,
        cut(&code, 32),
        cut(&message, 4096),
        ts(&arrival),
        Arc::new(data_row) as ArrayRef,
        pump,
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[async_trait::async_trait]
impl super::Sink for KdaErrorColumns {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn set_error_output(&mut self, errors: super::ErrorOutput) {
        self.inner.set_error_output(errors)
    }

    fn set_checkpoint_ranges(&mut self, ranges: super::CheckpointRanges) {
        self.inner.set_checkpoint_ranges(ranges)
    }

    async fn write(&mut self, mut batch: super::OutputBatch) -> crate::Result<()> {
        if let super::OutputData::Rows(rows) = &batch.data {
            batch.data = super::OutputData::Rows(with_kda_error_columns(rows)?);
        }
        self.inner.write(batch).await
    }

    async fn flush(&mut self) -> crate::Result<()> {
        self.inner.flush().await
    }

    async fn finish(&mut self) -> crate::Result<()> {
        self.inner.finish().await
    }
}
