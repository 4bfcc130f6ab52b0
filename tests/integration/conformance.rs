//! One conformance suite that every sink passes, each against its real destination (a directory,
//! or moto on 127.0.0.1 for the AWS sinks):
//!
//! - **acks only after success**: whenever a batch's ack reports it stored, its rows can be read
//!   back from the destination at that moment;
//! - **flush on shutdown**: after `finish`, every batch is acknowledged and every row is there;
//! - **ordering where promised**: the file and S3 sinks keep the order rows were written in, the
//!   Kinesis sink the order within a partition key (with one request in flight); Firehose promises
//!   none, so only the set of rows is compared;
//! - **limits**: a record exactly at a per-record limit is delivered, one byte over goes to the
//!   error output as `oversized`;
//! - **failures never acknowledge**: a destination that does not exist fails the sink and leaves
//!   the batch unacknowledged.
//!
//! The stdout sink runs the suite writing to a buffer (`StdoutSink::to_writer`, the same code
//! with another writer); the command-line tests cover it on the real standard output.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use rivulet::{Ack, AckStatus, ErrorOutput, OutputBatch, OutputData, Sink};

type ReadBack<'a> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>> + Send + Sync + 'a>;

/// How a sink is checked.
struct Case<'a> {
    name: &'static str,
    sink: Box<dyn Sink>,
    /// Every row stored at the destination so far, as JSON lines, in stored order.
    read: ReadBack<'a>,
    ordered: bool,
}

fn batch(ids: std::ops::Range<i64>, text: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let n = (ids.end - ids.start) as usize;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(vec!["k"; n])),
            Arc::new(StringArray::from(vec![text; n])),
        ],
    )
    .unwrap()
}

fn ids(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:.200}"));
            v["id"].as_i64().unwrap()
        })
        .collect()
}

/// Writes three batches of 100 rows, each followed by a flush as the pipeline does when it is
/// caught up, checking after each that what is acknowledged is readable; then finishes and checks
/// that everything is acknowledged and readable.
async fn conforms(case: Case<'_>) {
    let Case {
        name,
        mut sink,
        read,
        ordered,
    } = case;
    let (errors, mut error_rx) = ErrorOutput::channel(16);
    sink.set_error_output(errors);
    let mut receipts = Vec::new();
    for i in 0..3 {
        let (ack, receipt) = Ack::with_receipt();
        sink.write(OutputBatch {
            stream: Arc::from("DESTINATION_SQL_STREAM"),
            data: OutputData::Rows(batch(i * 100..(i + 1) * 100, "row")),
            ack,
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: write: {e}"));
        receipts.push(receipt);
        sink.flush()
            .await
            .unwrap_or_else(|e| panic!("{name}: flush: {e}"));
        let stored = ids(&read().await);
        for (b, r) in receipts.iter().enumerate() {
            let status = r.status();
            assert_ne!(status, AckStatus::GivenUp, "{name}: batch {b} given up");
            if status == AckStatus::Stored {
                let b = b as i64;
                assert!(
                    (b * 100..(b + 1) * 100).all(|id| stored.contains(&id)),
                    "{name}: batch {b} acknowledged before its rows were stored"
                );
            }
        }
    }
    sink.finish()
        .await
        .unwrap_or_else(|e| panic!("{name}: finish: {e}"));
    for (b, r) in receipts.iter().enumerate() {
        assert_eq!(
            r.status(),
            AckStatus::Stored,
            "{name}: batch {b} after finish"
        );
    }
    let mut stored = ids(&read().await);
    if !ordered {
        stored.sort_unstable();
    }
    assert_eq!(
        stored,
        (0..300).collect::<Vec<_>>(),
        "{name}: every row, once"
    );
    assert!(
        error_rx.try_recv().is_err(),
        "{name}: nothing in the error output"
    );
}

#[cfg(feature = "aws")]
/// A JSON line of exactly `len` bytes (newline included) for this suite's schema.
fn row_of_encoded_len(id: i64, len: usize) -> RecordBatch {
    let empty = format!("{{\"id\":{id},\"key\":\"k\",\"text\":\"\"}}\n").len();
    batch(id..id + 1, &"x".repeat(len - empty))
}

#[cfg(feature = "aws")]
/// A record at `limit` bytes is delivered; one at `limit + 1` goes to the error output as
/// `oversized`, and the batch is acknowledged once it is there.
async fn limit_holds(name: &str, sink: &mut dyn Sink, limit: usize, read: &ReadBack<'_>) {
    let (errors, mut error_rx) = ErrorOutput::channel(16);
    sink.set_error_output(errors);
    let (ack, at_limit) = Ack::with_receipt();
    sink.write(OutputBatch {
        stream: Arc::from("DESTINATION_SQL_STREAM"),
        data: OutputData::Rows(row_of_encoded_len(1000, limit)),
        ack,
    })
    .await
    .unwrap();
    let (ack, over) = Ack::with_receipt();
    sink.write(OutputBatch {
        stream: Arc::from("DESTINATION_SQL_STREAM"),
        data: OutputData::Rows(row_of_encoded_len(1001, limit + 1)),
        ack,
    })
    .await
    .unwrap();
    sink.finish().await.unwrap();
    assert!(at_limit.is_stored(), "{name}: the record at the limit");
    let stored = ids(&read().await);
    assert!(
        stored.contains(&1000),
        "{name}: the record at the limit is delivered"
    );
    assert!(
        !stored.contains(&1001),
        "{name}: the record over the limit is not"
    );
    let err = error_rx.recv().await.expect("an error record");
    let OutputData::Rows(rows) = &err.data else {
        panic!("{name}: error rows")
    };
    let code = rows
        .column_by_name("errorCode")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_owned();
    assert_eq!(code, "oversized", "{name}");
    err.ack.acknowledge();
    assert!(
        over.is_stored(),
        "{name}: acknowledged once in the error output"
    );
}

#[tokio::test]
async fn file_sinks_conform() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("out.ndjson");
    let sink = rivulet::FileSink::builder(&single).build().unwrap();
    let path = single.clone();
    conforms(Case {
        name: "file",
        sink: Box::new(sink),
        read: Box::new(move || {
            let path = path.clone();
            Box::pin(async move {
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
        }),
        ordered: true,
    })
    .await;

    let rolled = dir.path().join("rolled");
    let sink = rivulet::FileSink::builder(&rolled)
        .with_roll_bytes(Some(4096))
        .build()
        .unwrap();
    let path = rolled.clone();
    conforms(Case {
        name: "file (rolled)",
        sink: Box::new(sink),
        read: Box::new(move || {
            let path = path.clone();
            Box::pin(async move {
                let mut files: Vec<_> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                files.sort();
                files
                    .iter()
                    .flat_map(|f| {
                        std::fs::read_to_string(f)
                            .unwrap()
                            .lines()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
        }),
        ordered: true,
    })
    .await;
    assert!(std::fs::read_dir(&rolled).unwrap().count() > 1, "rolled");
}

/// A writer appending to a shared buffer.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for SharedBuf {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn the_stdout_sink_conforms() {
    let buf = SharedBuf::default();
    let sink =
        rivulet::StdoutSink::to_writer("stdout", buf.clone(), rivulet::OutputFormat::JsonLines);
    conforms(Case {
        name: "stdout",
        sink: Box::new(sink),
        read: Box::new(move || {
            let buf = buf.clone();
            Box::pin(async move {
                String::from_utf8(buf.0.lock().unwrap().clone())
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
        }),
        ordered: true,
    })
    .await;
}

#[tokio::test]
async fn the_memory_sink_conforms() {
    let sink = rivulet::MemorySink::new();
    let handle = sink.handle();
    conforms(Case {
        name: "memory",
        sink: Box::new(sink),
        read: Box::new(move || {
            let handle = handle.clone();
            Box::pin(async move {
                let enc = rivulet::Encoder::new(rivulet::OutputFormat::JsonLines);
                handle
                    .batches()
                    .iter()
                    .flat_map(|b| enc.encode_rows(b).unwrap())
                    .map(|r| String::from_utf8(r.to_vec()).unwrap())
                    .collect()
            })
        }),
        ordered: true,
    })
    .await;
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use crate::support::moto::MotoServer;
    use crate::support::s3;
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};

    fn sdk_config(moto: &MotoServer) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(aws_sdk_kinesis::config::SharedCredentialsProvider::new(
                Credentials::new("test", "test", None, None, "tests"),
            ))
            .build()
    }

    fn object_lines(moto: &MotoServer, bucket: &str, prefix: &str) -> Vec<String> {
        s3::list_keys(moto.port(), bucket)
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .flat_map(|k| {
                String::from_utf8(s3::get_object(moto.port(), bucket, &k))
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_s3_sink_conforms() {
        let Some(moto) = MotoServer::start() else {
            return;
        };
        s3::create_bucket(moto.port(), "conformance");
        let sink = rivulet::S3Sink::builder("conformance")
            .with_aws_config(sdk_config(&moto))
            .with_prefix("rows/")
            .with_roll_bytes(8 << 10)
            .build()
            .await
            .unwrap();
        let m = &moto;
        conforms(Case {
            name: "s3",
            sink: Box::new(sink),
            read: Box::new(move || {
                Box::pin(async move { object_lines(m, "conformance", "rows/") })
            }),
            ordered: true,
        })
        .await;

        // A bucket that does not exist: the upload fails, and nothing is acknowledged.
        let mut sink = rivulet::S3Sink::builder("no-such-bucket")
            .with_aws_config(sdk_config(&moto))
            .build()
            .await
            .unwrap();
        never_acknowledges_a_failure("s3", &mut sink).await;
    }

    async fn never_acknowledges_a_failure(name: &str, sink: &mut dyn Sink) {
        let (errors, _error_rx) = ErrorOutput::channel(16);
        sink.set_error_output(errors);
        let (ack, receipt) = Ack::with_receipt();
        let wrote = sink
            .write(OutputBatch {
                stream: Arc::from("DESTINATION_SQL_STREAM"),
                data: OutputData::Rows(batch(0..10, "row")),
                ack,
            })
            .await;
        let finished = match wrote {
            Ok(()) => sink.finish().await,
            Err(e) => Err(e),
        };
        let err = finished.expect_err("a missing destination fails the sink");
        assert!(!err.to_string().is_empty());
        assert_ne!(
            receipt.status(),
            AckStatus::Stored,
            "{name}: acknowledged a failure"
        );
    }

    async fn firehose_stream(moto: &MotoServer, name: &str, bucket: &str, prefix: &str) {
        use aws_sdk_firehose::types::ExtendedS3DestinationConfiguration;
        aws_sdk_firehose::Client::new(&sdk_config(moto))
            .create_delivery_stream()
            .delivery_stream_name(name)
            .extended_s3_destination_configuration(
                ExtendedS3DestinationConfiguration::builder()
                    .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                    .role_arn("arn:aws:iam::123456789012:role/firehose-delivery")
                    .prefix(prefix)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("create delivery stream");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_firehose_sink_conforms() {
        let Some(moto) = MotoServer::start() else {
            return;
        };
        s3::create_bucket(moto.port(), "firehose-out");
        firehose_stream(&moto, "conformance", "firehose-out", "rows/").await;
        let client = aws_sdk_firehose::Client::new(&sdk_config(&moto));
        let sink = rivulet::FirehoseSink::builder("conformance")
            .client(client.clone())
            .build()
            .await
            .unwrap();
        let m = &moto;
        conforms(Case {
            name: "firehose",
            sink: Box::new(sink),
            read: Box::new(move || {
                Box::pin(async move { object_lines(m, "firehose-out", "rows/") })
            }),
            ordered: false,
        })
        .await;

        firehose_stream(&moto, "limits", "firehose-out", "limits/").await;
        let mut sink = rivulet::FirehoseSink::builder("limits")
            .client(client.clone())
            .build()
            .await
            .unwrap();
        let read: ReadBack<'_> =
            Box::new(move || Box::pin(async move { object_lines(m, "firehose-out", "limits/") }));
        limit_holds(
            "firehose",
            &mut sink,
            rivulet::firehose::MAX_RECORD_BYTES,
            &read,
        )
        .await;

        let mut sink = rivulet::FirehoseSink::builder("no-such-stream")
            .client(client)
            .build()
            .await
            .unwrap();
        never_acknowledges_a_failure("firehose", &mut sink).await;
    }

    /// Every record of the single-shard stream `name`, in shard order.
    async fn stream_lines(client: &aws_sdk_kinesis::Client, name: &str) -> Vec<String> {
        let shard = client
            .list_shards()
            .stream_name(name)
            .send()
            .await
            .unwrap()
            .shards()[0]
            .shard_id()
            .to_owned();
        let mut it = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        let mut lines = Vec::new();
        while let Some(i) = it {
            let out = client.get_records().shard_iterator(i).send().await.unwrap();
            if out.records().is_empty() {
                break;
            }
            for r in out.records() {
                let text = String::from_utf8(r.data().as_ref().to_vec()).unwrap();
                lines.push(text.trim_end().to_owned());
            }
            it = out.next_shard_iterator().map(str::to_owned);
        }
        lines
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_kinesis_sink_conforms() {
        let Some(moto) = MotoServer::start() else {
            return;
        };
        let client = aws_sdk_kinesis::Client::new(&sdk_config(&moto));
        for name in ["conformance", "limits"] {
            client
                .create_stream()
                .stream_name(name)
                .shard_count(1)
                .send()
                .await
                .unwrap();
        }
        let settings = rivulet::DeliverySettings {
            // moto's PutRecords is not safe for concurrent calls (see the Kinesis tests).
            max_concurrent_requests: 1,
            ..rivulet::DeliverySettings::default()
        };
        let build = |stream: &'static str| {
            rivulet::KinesisSink::builder(stream)
                .client(client.clone())
                .partition_key_column("key")
                .delivery_settings(settings)
                .build()
        };
        let c = &client;
        conforms(Case {
            name: "kinesis",
            sink: Box::new(build("conformance").await.unwrap()),
            read: Box::new(move || Box::pin(async move { stream_lines(c, "conformance").await })),
            ordered: true,
        })
        .await;

        // The limit counts the partition key ("k", 1 byte) with the data, and Kinesis records
        // carry no newline: a JSON line of MAX_RECORD_BYTES with its newline is a record of
        // MAX_RECORD_BYTES - 1 bytes plus the key, exactly at the limit.
        let mut sink = build("limits").await.unwrap();
        let read: ReadBack<'_> =
            Box::new(move || Box::pin(async move { stream_lines(c, "limits").await }));
        let limit = rivulet::kinesis::sink_limits::MAX_RECORD_BYTES;
        limit_holds("kinesis", &mut sink, limit, &read).await;

        let mut sink = build("no-such-stream").await.unwrap();
        never_acknowledges_a_failure("kinesis", &mut sink).await;
    }
}
