//! [`KinesisSink`]: rows to a Kinesis data stream with PutRecords.
//!
//! Each output row becomes one record (a JSON object or a CSV row, without a trailing newline),
//! keyed by the value of a column; an explicit hash key can come from another column. Requests hold
//! at most [`MAX_RECORDS_PER_CALL`] records and [`MAX_BYTES_PER_CALL`] bytes (data and partition
//! keys); a record over [`MAX_RECORD_BYTES`], or a row whose key is missing, empty or longer than
//! [`MAX_PARTITION_KEY_CHARS`], goes to the error output. Partial failures
//! (`FailedRecordCount > 0`) are retried record by record as in the Firehose sink. Order is not
//! kept across requests, so records of one key may arrive out of order after a retry.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use async_trait::async_trait;
use bytes::Bytes;

use crate::crypto::{seal_records, EnvelopeEncryptor};
use crate::format::{Encoder, OutputFormat};
use crate::record::Record;
use crate::sink::delivery::{
    classify, entries, outcomes, CallResult, DeliverySettings, Dispatcher, Limits, Outbound, PutApi,
};
use crate::sink::{ErrorOutput, OutputBatch, OutputData, Sink};
use crate::{Error, Result};

/// Most records in one PutRecords call (Kinesis API reference, PutRecords).
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes in one PutRecords call, data and partition keys: 5 MiB (Kinesis quotas; newer
/// streams allow 10 MiB, 5 MiB holds everywhere).
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// Largest record, data and partition key together: 1 MiB (Kinesis quotas).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Longest partition key, in Unicode characters (Kinesis API reference).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

const LIMITS: Limits = Limits {
    max_records: MAX_RECORDS_PER_CALL,
    max_call_bytes: MAX_BYTES_PER_CALL,
    max_record_bytes: MAX_RECORD_BYTES,
};

/// Error codes that ask the sink to slow down.
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "KMSThrottlingException",
    "ThrottlingException",
];

/// Error codes that retrying cannot fix.
const FATAL: &[&str] = &[
    "ResourceNotFoundException",
    "ResourceInUseException",
    "InvalidArgumentException",
    "AccessDeniedException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "UnrecognizedClientException",
    "ValidationException",
];

/// One record for PutRecords.
#[derive(Debug, Clone)]
pub(crate) struct KinesisRecord {
    data: Bytes,
    partition_key: Arc<str>,
    explicit_hash_key: Option<Arc<str>>,
}

impl Outbound for KinesisRecord {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    fn as_error_record(&self, now_ms: i64) -> Record {
        Record::new(self.data.clone(), now_ms).with_partition_key(Arc::clone(&self.partition_key))
    }
}

#[derive(Debug)]
struct SdkKinesis {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

#[async_trait]
impl PutApi<KinesisRecord> for SdkKinesis {
    async fn put(&self, records: &[KinesisRecord]) -> CallResult {
        let entries = entries(records, |r| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .data(aws_sdk_kinesis::primitives::Blob::new(r.data.to_vec()))
                .partition_key(&*r.partition_key)
                .set_explicit_hash_key(r.explicit_hash_key.as_deref().map(str::to_owned))
                .build()
        })?;
        let mut req = self.client.put_records().set_records(Some(entries));
        req = if self.stream.starts_with("arn:") {
            req.stream_arn(&self.stream)
        } else {
            req.stream_name(&self.stream)
        };
        match req.send().await {
            Ok(out) => outcomes(out.records, records.len(), |r| {
                r.error_code
                    .map(|code| (code, r.error_message.unwrap_or_default()))
            }),
            Err(err) => Err(classify(err, THROTTLING, FATAL)),
        }
    }

    fn throttling_codes(&self) -> &'static [&'static str] {
        THROTTLING
    }
}

/// Writes rows to a Kinesis data stream. Build with [`KinesisSink::builder`].
#[derive(Debug)]
pub struct KinesisSink {
    dispatcher: Dispatcher<KinesisRecord>,
    encoder: Encoder,
    partition_key: String,
    explicit_hash_key: Option<String>,
    encryption: Option<EnvelopeEncryptor>,
}

/// Builder for [`KinesisSink`].
#[derive(Debug, Clone)]
pub struct KinesisSinkBuilder {
    stream: String,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    aws: crate::aws::ClientOptions<aws_sdk_kinesis::Client>,
    format: OutputFormat,
    settings: DeliverySettings,
    encryption: Option<EnvelopeEncryptor>,
}

impl KinesisSink {
    /// A builder for the stream `stream` (a name or an ARN).
    pub fn builder(stream: impl Into<String>) -> KinesisSinkBuilder {
        KinesisSinkBuilder {
            stream: stream.into(),
            partition_key: None,
            explicit_hash_key: None,
            aws: Default::default(),
            format: OutputFormat::JsonLines,
            settings: DeliverySettings::default(),
            encryption: None,
        }
    }

    /// The values of column `name` as text, or why not.
    fn keys(rows: &RecordBatch, name: &str) -> Result<arrow::array::ArrayRef> {
        let column = rows.column_by_name(name).ok_or_else(|| {
            Error::config(
                "sinks.partition_key",
                format!(
                    "the output has no column `{name}` (columns: {})",
                    rows.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        Ok(arrow::compute::cast(column, &DataType::Utf8)?)
    }
    /// One record per row, keyed by the key columns; the second list holds those whose keys the
    /// service would refuse.
    async fn keyed_records(
        &mut self,
        rows: &RecordBatch,
    ) -> Result<(Vec<KinesisRecord>, Vec<KinesisRecord>)> {
        let payloads = seal_records(&mut self.encryption, self.encoder.encode_rows(rows)?).await?;
        let keys = Self::keys(rows, &self.partition_key)?;
        let keys = keys.as_string::<i32>();
        let hash_keys = match &self.explicit_hash_key {
            Some(name) => Some(Self::keys(rows, name)?),
            None => None,
        };
        let hash_keys = hash_keys.as_ref().map(|h| h.as_string::<i32>());
        let mut records = Vec::with_capacity(payloads.len());
        let mut bad_keys = Vec::new();
        for (i, data) in payloads.into_iter().enumerate() {
            let key = (!keys.is_null(i)).then(|| keys.value(i));
            let valid =
                key.filter(|k| !k.is_empty() && k.chars().count() <= MAX_PARTITION_KEY_CHARS);
            let hash_key = hash_keys.filter(|h| !h.is_null(i)).map(|h| h.value(i));
            // A hash key the service would refuse fails the whole call: checked here.
            let hash_key_ok = hash_key.is_none_or(|h| super::kpl::hash_key("", Some(h)).is_some());
            let record = KinesisRecord {
                data,
                partition_key: Arc::from(key.unwrap_or_default()),
                explicit_hash_key: hash_key.map(Arc::from),
            };
            if valid.is_some() && hash_key_ok {
                records.push(record);
            } else {
                bad_keys.push(record);
            }
        }
        Ok((records, bad_keys))
    }
}

#[async_trait]
impl Sink for KinesisSink {
    fn name(&self) -> &str {
        self.dispatcher.name()
    }

    fn set_error_output(&mut self, errors: ErrorOutput) {
        self.dispatcher.set_error_output(errors);
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        let OutputBatch { data, ack, .. } = batch;
        let (records, bad_keys) = match &data {
            OutputData::Rows(rows) => self.keyed_records(rows).await?,
            // Records without columns (a raw copy) are spread over the shards.
            OutputData::Encoded(payloads) => {
                let records = seal_records(&mut self.encryption, payloads.clone())
                    .await?
                    .into_iter()
                    .map(|data| KinesisRecord {
                        data,
                        partition_key: Arc::from(format!("{:016x}", fastrand::u64(..))),
                        explicit_hash_key: None,
                    })
                    .collect();
                (records, Vec::new())
            }
        };
        let why = |r: &KinesisRecord| {
            format!(
                "{} bytes with its partition key: larger than Kinesis's limit of \
                 {MAX_RECORD_BYTES} bytes per record",
                r.size()
            )
        };
        self.dispatcher.send_planned(records, why, &ack).await?;
        if !bad_keys.is_empty() {
            let column = self.partition_key.clone();
            let why = move |r: &KinesisRecord| match &r.explicit_hash_key {
                Some(h) if super::kpl::hash_key("", Some(h)).is_none() => {
                    format!("explicit hash key `{h}` is not a decimal number from 0 to 2^128 - 1")
                }
                _ => format!(
                    "partition key column `{column}` is null, empty or longer than \
                         {MAX_PARTITION_KEY_CHARS} characters ({} characters)",
                    r.partition_key.chars().count()
                ),
            };
            self.dispatcher
                .reject(bad_keys, "bad_partition_key", why, ack.split())
                .await?;
        }
        ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.dispatcher.flush().await
    }
}

impl KinesisSinkBuilder {
    /// The output column whose value is each record's partition key (required).
    pub fn partition_key_column(mut self, column: impl Into<String>) -> Self {
        self.partition_key = Some(column.into());
        self
    }

    /// An output column with each record's explicit hash key (a decimal 128-bit number).
    pub fn explicit_hash_key_column(mut self, column: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(column.into());
        self
    }

    crate::aws::client_setters!(aws_sdk_kinesis::Client);

    crate::sink::delivery::record_sink_setters!(
        /// How rows are written (default: one JSON object per record).
    );

    /// Checks the settings and creates the client.
    pub async fn build(self) -> Result<KinesisSink> {
        if self.stream.trim().is_empty() {
            return Err(Error::config(
                "sinks.stream_name",
                "a stream name or ARN is required",
            ));
        }
        let partition_key = self.partition_key.ok_or_else(|| {
            Error::config(
                "sinks.partition_key",
                "the column whose value keys each record is required",
            )
        })?;
        self.settings.validate("sinks")?;
        let client = (self.aws)
            .client("sinks", |shared| {
                crate::aws::sdk_client!(aws_sdk_kinesis, *shared)
            })
            .await?;
        let name = format!(
            "kinesis:{}",
            self.stream.rsplit('/').next().unwrap_or(&self.stream)
        );
        Ok(KinesisSink {
            dispatcher: Dispatcher::new(
                name,
                Arc::new(SdkKinesis {
                    client,
                    stream: self.stream,
                }),
                self.settings,
                LIMITS,
            ),
            encoder: Encoder::new(self.format),
            partition_key,
            explicit_hash_key: self.explicit_hash_key,
            encryption: self.encryption,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use tokio::sync::mpsc;

    use super::*;
    use crate::ack::Ack;

    #[derive(Debug, Default)]
    struct Accepting {
        seen: Mutex<Vec<(String, Option<String>, String)>>,
    }

    #[async_trait]
    impl PutApi<KinesisRecord> for Accepting {
        async fn put(&self, records: &[KinesisRecord]) -> CallResult {
            let mut seen = self.seen.lock().unwrap();
            for r in records {
                seen.push((
                    r.partition_key.to_string(),
                    r.explicit_hash_key.as_deref().map(str::to_owned),
                    String::from_utf8(r.data.to_vec()).unwrap(),
                ));
            }
            Ok(vec![None; records.len()])
        }

        fn throttling_codes(&self) -> &'static [&'static str] {
            THROTTLING
        }
    }

    #[tokio::test]
    async fn keys_come_from_columns_and_bad_keys_go_to_the_error_output() {
        let api = Arc::new(Accepting::default());
        let mut sink = KinesisSink {
            dispatcher: Dispatcher::new(
                "kinesis:test".into(),
                Arc::clone(&api) as Arc<dyn PutApi<KinesisRecord>>,
                DeliverySettings::default(),
                LIMITS,
            ),
            encoder: Encoder::new(OutputFormat::JsonLines),
            partition_key: "k".into(),
            explicit_hash_key: Some("h".into()),
            encryption: None,
        };
        let (etx, mut errors) = mpsc::channel(8);
        sink.set_error_output(ErrorOutput::new(etx));
        let long = "x".repeat(MAX_PARTITION_KEY_CHARS + 1);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("h", DataType::Int64, true),
        ]));
        let rows = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some(""),
                    Some(long.as_str()),
                    Some("b"),
                    Some("c"),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(7),
                    None,
                    None,
                    None,
                    None,
                    Some(-1),
                ])),
            ],
        )
        .unwrap();
        sink.write(OutputBatch {
            stream: Arc::from("DESTINATION_SQL_STREAM"),
            data: OutputData::Rows(rows),
            ack: Ack::untracked(),
        })
        .await
        .unwrap();
        sink.flush().await.unwrap();
        let seen = api.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("a".into(), Some("7".into()), r#"{"k":"a","h":7}"#.into()),
                ("b".into(), None, r#"{"k":"b","h":null}"#.into()),
            ]
        );
        let bad = errors.recv().await.unwrap();
        let OutputData::Rows(bad) = &bad.data else {
            panic!("rows")
        };
        assert_eq!(bad.num_rows(), 4);
        let codes = bad.column_by_name("errorCode").unwrap().as_string::<i32>();
        assert!((0..4).all(|i| codes.value(i) == "bad_partition_key"));
        let reasons = bad
            .column_by_name("errorMessage")
            .unwrap()
            .as_string::<i32>();
        assert!(
            reasons.value(3).contains("explicit hash key `-1`"),
            "{}",
            reasons.value(3)
        );
    }
}
