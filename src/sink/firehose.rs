//! [`FirehoseSink`]: rows to an Amazon Data Firehose delivery stream with PutRecordBatch.
//!
//! The sink is split the way every AWS sink is: settings checked up front, a batcher that turns rows
//! into encoded records and requests within the service's limits, the service call, and the retry
//! logic around it:
//!
//! - each output row becomes one record (a JSON line or a CSV row, newline-terminated);
//! - a record over [`MAX_RECORD_BYTES`] cannot be sent and goes to the error output;
//! - records are queued and sent in calls of at most [`MAX_RECORDS_PER_CALL`] records and
//!   [`MAX_BYTES_PER_CALL`] bytes, with at most `max_concurrent_requests` in flight;
//! - when a call succeeds with `FailedPutCount > 0`, only the failed records are sent again: they
//!   are queued again, due after a jittered back-off, and travel with a later call, until
//!   `max_attempts` or `max_retry_time`; records still failing go to the error output with their
//!   last error code and message;
//! - throttling (`ServiceUnavailableException`, `LimitExceededException`, `ThrottlingException`,
//!   of a call or of records) narrows the window of calls in flight in proportion to the share of
//!   records throttled, and a call refused whole pauses the sink (see the delivery module).
//!
//! A batch is acknowledged only when each of its records has either been accepted by Firehose or been
//! stored in the error output. Records can arrive more than once (a call that fails after Firehose
//! stored some of it is sent again), as with Firehose itself; ordering across requests is not kept.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::delivery::{
    classify, entries, outcomes, plan, CallResult, DeliverySettings, Dispatcher, Limits, Outbound,
    PutApi,
};
use super::{ErrorOutput, OutputBatch, OutputData, Sink};
use crate::crypto::{seal_records, EnvelopeEncryptor};
use crate::format::{Encoder, OutputFormat};
use crate::record::Record;
use crate::{Error, Result};

/// Most records in one PutRecordBatch call (Firehose API reference, PutRecordBatch).
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes in one PutRecordBatch call: 4 MiB for the whole request (Firehose quotas).
pub const MAX_BYTES_PER_CALL: usize = 4 * 1024 * 1024;
/// Largest record Firehose accepts: 1,000 KiB before base64 encoding (Firehose quotas).
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// Records grouped into PutRecordBatch requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestPlan {
    /// Requests of at most [`MAX_RECORDS_PER_CALL`] records and [`MAX_BYTES_PER_CALL`] bytes, in
    /// record order.
    pub requests: Vec<Vec<Bytes>>,
    /// Records over [`MAX_RECORD_BYTES`], which Firehose refuses.
    pub oversized: Vec<Bytes>,
}

/// Groups encoded records into requests within the PutRecordBatch limits, greedily and in order.
///
/// ```
/// use bytes::Bytes;
/// use rivulet::firehose::{plan_requests, MAX_RECORDS_PER_CALL};
///
/// let plan = plan_requests((0..1200).map(|i| Bytes::from(format!("{i}\n"))));
/// assert_eq!(plan.requests.len(), 3);
/// assert!(plan.requests.iter().all(|r| r.len() <= MAX_RECORDS_PER_CALL));
/// ```
pub fn plan_requests(records: impl IntoIterator<Item = Bytes>) -> RequestPlan {
    let (requests, oversized) = plan(records, LIMITS);
    RequestPlan {
        requests,
        oversized,
    }
}

/// The service's limits, for [`plan`].
const LIMITS: Limits = Limits {
    max_records: MAX_RECORDS_PER_CALL,
    max_call_bytes: MAX_BYTES_PER_CALL,
    max_record_bytes: MAX_RECORD_BYTES,
};

/// Error codes that ask the sink to slow down.
const THROTTLING: &[&str] = &[
    "ServiceUnavailableException",
    "LimitExceededException",
    "ThrottlingException",
];

/// Error codes that retrying cannot fix.
const FATAL: &[&str] = &[
    "ResourceNotFoundException",
    "InvalidArgumentException",
    "AccessDeniedException",
    "InvalidKMSResourceException",
    "InvalidSourceException",
    "UnrecognizedClientException",
    "ValidationException",
];

/// A Firehose record is its bytes.
impl Outbound for Bytes {
    fn size(&self) -> usize {
        self.len()
    }

    fn as_error_record(&self, now_ms: i64) -> Record {
        Record::new(self.clone(), now_ms)
    }
}

#[derive(Debug)]
struct SdkFirehose {
    client: aws_sdk_firehose::Client,
    delivery_stream: String,
}

#[async_trait]
impl PutApi<Bytes> for SdkFirehose {
    async fn put(&self, records: &[Bytes]) -> CallResult {
        let entries = entries(records, |r| {
            aws_sdk_firehose::types::Record::builder()
                .data(aws_sdk_firehose::primitives::Blob::new(r.to_vec()))
                .build()
        })?;
        let sent = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.delivery_stream)
            .set_records(Some(entries))
            .send()
            .await;
        match sent {
            Ok(out) => outcomes(out.request_responses, records.len(), |r| {
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

/// Writes rows to a Firehose delivery stream. Build with [`FirehoseSink::builder`].
#[derive(Debug)]
pub struct FirehoseSink {
    dispatcher: Dispatcher<Bytes>,
    encoder: Encoder,
    encryption: Option<EnvelopeEncryptor>,
}

/// Builder for [`FirehoseSink`].
#[derive(Debug, Clone)]
pub struct FirehoseSinkBuilder {
    delivery_stream: String,
    aws: crate::aws::ClientOptions<aws_sdk_firehose::Client>,
    format: OutputFormat,
    settings: DeliverySettings,
    encryption: Option<EnvelopeEncryptor>,
}

impl FirehoseSink {
    /// A builder for the delivery stream `delivery_stream`.
    pub fn builder(delivery_stream: impl Into<String>) -> FirehoseSinkBuilder {
        FirehoseSinkBuilder {
            delivery_stream: delivery_stream.into(),
            aws: Default::default(),
            format: OutputFormat::JsonLines,
            settings: DeliverySettings::default(),
            encryption: None,
        }
    }

    fn with_encryptor(mut self, encryption: Option<EnvelopeEncryptor>) -> Self {
        self.encryption = encryption;
        self
    }

    pub(crate) fn with_api(
        name: String,
        api: Arc<dyn PutApi<Bytes>>,
        format: OutputFormat,
        settings: DeliverySettings,
    ) -> Self {
        Self {
            dispatcher: Dispatcher::new(name, api, settings, LIMITS),
            encoder: Encoder::new(format),
            encryption: None,
        }
    }
}

#[async_trait]
impl Sink for FirehoseSink {
    fn name(&self) -> &str {
        self.dispatcher.name()
    }

    fn set_error_output(&mut self, errors: ErrorOutput) {
        self.dispatcher.set_error_output(errors);
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        let OutputBatch { data, ack, .. } = batch;
        let records = match &data {
            OutputData::Rows(rows) => self.encoder.encode_lines(rows)?,
            OutputData::Encoded(records) => records
                .iter()
                .map(|r| {
                    if r.ends_with(b"\n") {
                        r.clone()
                    } else {
                        let mut v = Vec::with_capacity(r.len() + 1);
                        v.extend_from_slice(r);
                        v.push(b'\n');
                        Bytes::from(v)
                    }
                })
                .collect(),
        };
        let records = seal_records(&mut self.encryption, records).await?;
        let why = |r: &Bytes| {
            format!(
                "{} bytes: larger than Firehose's limit of {MAX_RECORD_BYTES} bytes per record",
                r.len()
            )
        };
        self.dispatcher.send_planned(records, why, &ack).await?;
        ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.dispatcher.flush().await
    }
}

impl FirehoseSinkBuilder {
    crate::aws::client_setters!(aws_sdk_firehose::Client);

    crate::sink::delivery::record_sink_setters!(
        /// How rows are written (default JSON lines).
    );

    /// Checks the settings and creates the client.
    pub async fn build(self) -> Result<FirehoseSink> {
        if self.delivery_stream.trim().is_empty() {
            return Err(Error::config(
                "sinks.delivery_stream",
                "a delivery stream name is required",
            ));
        }
        self.settings.validate("sinks")?;
        let client = (self.aws)
            .client("sinks", |shared| {
                crate::aws::sdk_client!(aws_sdk_firehose, *shared)
            })
            .await?;
        let name = format!("firehose:{}", self.delivery_stream);
        Ok(FirehoseSink::with_api(
            name,
            Arc::new(SdkFirehose {
                client,
                delivery_stream: self.delivery_stream,
            }),
            self.format,
            self.settings,
        )
        .with_encryptor(self.encryption))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;
    use crate::ack::{Ack, AckEvent, TrackerMsg};
    use crate::sink::delivery::CallError;

    /// (attempt number of this record, record) → failure code.
    type FailRule = fn(u32, &[u8]) -> Option<&'static str>;

    /// A Firehose that fails records by a rule, and remembers what it accepted.
    #[derive(Debug, Default)]
    struct Fake {
        fail: Option<FailRule>,
        fatal: bool,
        seen: Mutex<HashMap<Vec<u8>, u32>>,
        accepted: Mutex<Vec<Vec<u8>>>,
        calls: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl PutApi<Bytes> for Fake {
        async fn put(&self, records: &[Bytes]) -> CallResult {
            let bytes: usize = records.iter().map(Bytes::len).sum();
            assert!(records.len() <= MAX_RECORDS_PER_CALL && bytes <= MAX_BYTES_PER_CALL);
            self.calls.lock().unwrap().push(records.len());
            if self.fatal {
                return Err(CallError::Fatal("no such delivery stream".into()));
            }
            let mut seen = self.seen.lock().unwrap();
            let mut accepted = self.accepted.lock().unwrap();
            Ok(records
                .iter()
                .map(|r| {
                    let n = seen.entry(r.to_vec()).or_default();
                    *n += 1;
                    match self.fail.and_then(|f| f(*n, r)) {
                        Some(code) => Some((code.to_owned(), "injected".to_owned())),
                        None => {
                            accepted.push(r.to_vec());
                            None
                        }
                    }
                })
                .collect())
        }

        fn throttling_codes(&self) -> &'static [&'static str] {
            THROTTLING
        }
    }

    fn settings() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..DeliverySettings::default()
        }
    }

    fn rows(values: impl IntoIterator<Item = String>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, false)]));
        let values: Vec<String> = values.into_iter().collect();
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values))]).unwrap()
    }

    struct Harness {
        sink: FirehoseSink,
        api: Arc<Fake>,
        acks: mpsc::UnboundedReceiver<TrackerMsg>,
        acks_tx: mpsc::UnboundedSender<TrackerMsg>,
        errors: mpsc::Receiver<OutputBatch>,
    }

    fn harness(api: Fake) -> Harness {
        let api = Arc::new(api);
        let mut sink = FirehoseSink::with_api(
            "firehose:test".into(),
            Arc::clone(&api) as Arc<dyn PutApi<Bytes>>,
            OutputFormat::JsonLines,
            settings(),
        );
        let (etx, errors) = mpsc::channel(64);
        sink.set_error_output(ErrorOutput::new(etx));
        let (acks_tx, acks) = mpsc::unbounded_channel();
        Harness {
            sink,
            api,
            acks,
            acks_tx,
            errors,
        }
    }

    impl Harness {
        async fn write(&mut self, seq: u64, batch: RecordBatch) -> Result<()> {
            self.sink
                .write(OutputBatch {
                    stream: Arc::from("DESTINATION_SQL_STREAM"),
                    data: OutputData::Rows(batch),
                    ack: Ack::new(seq, Some(self.acks_tx.clone())),
                })
                .await
        }

        fn done(&mut self) -> Vec<AckEvent> {
            let mut v = Vec::new();
            while let Ok(m) = self.acks.try_recv() {
                if let TrackerMsg::Done(e) = m {
                    v.push(e);
                }
            }
            v
        }

        /// Error rows received so far, acknowledged as the error sink would.
        fn error_rows(&mut self) -> Vec<(String, String)> {
            let mut out = Vec::new();
            while let Ok(b) = self.errors.try_recv() {
                let OutputData::Rows(rows) = &b.data else {
                    panic!("rows")
                };
                let kind = rows.column_by_name("errorCode").unwrap();
                let raw = rows.column_by_name("rawData").unwrap();
                use arrow::array::AsArray;
                for i in 0..rows.num_rows() {
                    out.push((
                        kind.as_string::<i32>().value(i).to_owned(),
                        raw.as_string::<i32>().value(i).to_owned(),
                    ));
                }
                b.ack.acknowledge();
            }
            out
        }
    }

    #[tokio::test]
    async fn requests_respect_the_record_and_byte_limits_and_oversized_records_are_errors() {
        let mut h = harness(Fake::default());
        // 1,234 small rows, 9 of ~600 KiB (only 6 fit in 4 MiB), 1 over the record limit.
        let mut values: Vec<String> = (0..1234).map(|i| format!("r{i}")).collect();
        values.extend((0..9).map(|i| format!("{i}{}", "x".repeat(600 * 1024))));
        values.push("y".repeat(MAX_RECORD_BYTES + 1));
        h.write(1, rows(values)).await.unwrap();
        h.sink.flush().await.unwrap();
        let calls = h.api.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 1234 + 9);
        assert!(
            calls.iter().all(|&n| n <= MAX_RECORDS_PER_CALL),
            "{calls:?}"
        );
        let errors = h.error_rows();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "oversized");
        assert_eq!(
            h.done(),
            vec![AckEvent {
                seq: 1,
                failed: false
            }]
        );
    }

    #[tokio::test]
    async fn failed_records_are_resent_alone_until_accepted() {
        // Every record fails its first attempt, and one in three its second.
        let mut h = harness(Fake {
            fail: Some(|attempt, r| {
                (attempt == 1 || (attempt == 2 && r.len() % 3 == 0))
                    .then_some("ServiceUnavailableException")
            }),
            ..Fake::default()
        });
        let values: Vec<String> = (0..700).map(|i| format!("row-{i}")).collect();
        h.write(7, rows(values.clone())).await.unwrap();
        h.sink.flush().await.unwrap();
        let mut accepted: Vec<String> = h
            .api
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8(r.clone()).unwrap())
            .collect();
        accepted.sort();
        let mut want: Vec<String> = values
            .iter()
            .map(|v| format!("{{\"v\":\"{v}\"}}\n"))
            .collect();
        want.sort();
        assert_eq!(accepted, want, "each record accepted exactly once");
        // The second attempt carried only the records that failed the first.
        let calls = h.api.calls.lock().unwrap().clone();
        assert_eq!(
            calls.iter().sum::<usize>(),
            700 * 2 + accepted.iter().filter(|r| (r.len()) % 3 == 0).count()
        );
        assert!(h.error_rows().is_empty());
        assert_eq!(
            h.done(),
            vec![AckEvent {
                seq: 7,
                failed: false
            }]
        );
    }

    #[tokio::test]
    async fn records_out_of_attempts_go_to_the_error_output_with_their_code() {
        let mut h = harness(Fake {
            fail: Some(|_, r| r.starts_with(b"{\"v\":\"bad").then_some("InternalFailure")),
            ..Fake::default()
        });
        h.write(3, rows(["good-1".into(), "bad-1".into(), "good-2".into()]))
            .await
            .unwrap();
        h.sink.flush().await.unwrap();
        assert!(
            h.done().is_empty(),
            "not stored until the error output has it"
        );
        let errors = h.error_rows();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "InternalFailure");
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&errors[0].1)
            .unwrap();
        assert_eq!(raw, b"{\"v\":\"bad-1\"}\n");
        // Exactly max_attempts calls carried the bad record.
        assert_eq!(h.api.seen.lock().unwrap()[&raw], settings().max_attempts);
        assert_eq!(
            h.done(),
            vec![AckEvent {
                seq: 3,
                failed: false
            }]
        );
    }

    #[tokio::test]
    async fn throttled_records_wait_without_spending_their_attempts() {
        // Throttled five times (more than max_attempts = 3), then accepted.
        let mut h = harness(Fake {
            fail: Some(|attempt, _| (attempt <= 5).then_some("ServiceUnavailableException")),
            ..Fake::default()
        });
        let started = Instant::now();
        h.write(4, rows(["slow".into()])).await.unwrap();
        h.sink.flush().await.unwrap();
        assert!(h.error_rows().is_empty());
        assert_eq!(h.api.accepted.lock().unwrap().len(), 1);
        assert_eq!(h.api.calls.lock().unwrap().len(), 6);
        // The sink paused between the calls (1, 2, 2, 2, 2 ms at least, jittered by half).
        assert!(started.elapsed() >= Duration::from_millis(4));
        assert_eq!(
            h.done(),
            vec![AckEvent {
                seq: 4,
                failed: false
            }]
        );
    }

    #[tokio::test]
    async fn a_failing_record_does_not_hold_up_the_records_behind_it() {
        // One call at a time; the first batch's only record is throttled three times.
        let api = Arc::new(Fake {
            fail: Some(|attempt, r| {
                (r.starts_with(b"{\"v\":\"stuck") && attempt <= 3)
                    .then_some("ServiceUnavailableException")
            }),
            ..Fake::default()
        });
        let mut sink = FirehoseSink::with_api(
            "firehose:test".into(),
            Arc::clone(&api) as Arc<dyn PutApi<Bytes>>,
            OutputFormat::JsonLines,
            DeliverySettings {
                max_concurrent_requests: 1,
                initial_backoff: Duration::from_millis(40),
                max_backoff: Duration::from_millis(80),
                ..DeliverySettings::default()
            },
        );
        let (acks_tx, mut acks) = mpsc::unbounded_channel();
        let write = |seq: u64, values: Vec<String>| OutputBatch {
            stream: Arc::from("DESTINATION_SQL_STREAM"),
            data: OutputData::Rows(rows(values)),
            ack: Ack::new(seq, Some(acks_tx.clone())),
        };
        sink.write(write(1, vec!["stuck".into()])).await.unwrap();
        sink.write(write(2, (0..10).map(|i| format!("free-{i}")).collect()))
            .await
            .unwrap();
        sink.flush().await.unwrap();
        let mut done = Vec::new();
        while let Ok(m) = acks.try_recv() {
            if let TrackerMsg::Done(e) = m {
                done.push(e.seq);
            }
        }
        assert_eq!(done, vec![2, 1], "the later batch is stored first");
        assert_eq!(api.accepted.lock().unwrap().len(), 11);
    }

    #[tokio::test]
    async fn a_fatal_error_fails_the_sink_and_never_acknowledges() {
        let mut h = harness(Fake {
            fatal: true,
            ..Fake::default()
        });
        h.write(9, rows(["a".into()])).await.unwrap();
        let err = h.sink.flush().await.unwrap_err().to_string();
        assert!(err.contains("no such delivery stream"), "{err}");
        assert_eq!(
            h.done(),
            vec![AckEvent {
                seq: 9,
                failed: true
            }]
        );
    }
}
