//! The Firehose sink against moto on 127.0.0.1: delivery into S3 objects, and partial failures,
//! failed calls and throttling injected by a proxy.

use std::time::Duration;

use arrow::array::AsArray;
use aws_sdk_firehose::config::retry::RetryConfig;
use aws_sdk_firehose::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_firehose::types::ExtendedS3DestinationConfiguration;
use aws_sdk_firehose::Client;
use base64::Engine as _;
use rivulet::{
    DeliverySettings, Encoder, FirehoseSink, GeneratorSource, MemorySink, MemorySinkHandle,
    OutputFormat, Pipeline, PipelineReport,
};

use crate::support::fault_proxy::{FaultProxy, Faults};
use crate::support::moto::MotoServer;
use crate::support::s3;

const BUCKET: &str = "delivered";
const RECORDS: u64 = 3000;

fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// A bucket and a delivery stream writing into it under `prefix`.
async fn delivery_stream(moto: &MotoServer, name: &str, prefix: &str) {
    s3::create_bucket(moto.port(), BUCKET);
    client(&moto.endpoint())
        .create_delivery_stream()
        .delivery_stream_name(name)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .bucket_arn(format!("arn:aws:s3:::{BUCKET}"))
                .role_arn("arn:aws:iam::123456789012:role/firehose-delivery")
                .prefix(prefix)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create delivery stream");
}

/// Every line of every object in the bucket under `prefix`.
fn delivered_lines(moto: &MotoServer, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for key in s3::list_keys(moto.port(), BUCKET) {
        if !key.starts_with(prefix) {
            continue;
        }
        let body = String::from_utf8(s3::get_object(moto.port(), BUCKET, &key)).unwrap();
        assert!(body.ends_with('\n'), "records are newline-terminated");
        lines.extend(body.lines().map(str::to_owned));
    }
    lines
}

/// Runs the generator (3,000 records) through a projection into the Firehose sink, with a memory
/// sink on the same stream as the reference of what was sent.
async fn run(
    sink: FirehoseSink,
    max_rows: usize,
) -> (PipelineReport, Vec<String>, MemorySinkHandle) {
    let reference = MemorySink::new();
    let sent = reference.handle();
    let errors = MemorySink::new();
    let error_rows = errors.handle();
    let report = Pipeline::builder()
        .source(
            GeneratorSource::builder()
                .with_limit(Some(RECORDS))
                .with_start_time_ms(Some(1_700_000_000_000))
                .build()
                .unwrap(),
        )
        .sql("SELECT ticker_symbol, sector, price, change FROM source")
        .sink(sink)
        .sink(reference)
        .error_output(errors)
        .batch_settings(rivulet::BatchSettings {
            max_rows,
            ..rivulet::BatchSettings::default()
        })
        .build()
        .await
        .unwrap()
        .run()
        .await
        .expect("the pipeline runs");
    let encoder = Encoder::new(OutputFormat::JsonLines);
    let mut lines = Vec::new();
    for b in sent.batches() {
        for r in encoder.encode_rows(&b).unwrap() {
            lines.push(String::from_utf8(r.to_vec()).unwrap());
        }
    }
    (report, lines, error_rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_s3_exactly_as_sent() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    delivery_stream(&moto, "clean", "out/").await;
    let sink = FirehoseSink::builder("clean")
        .client(client(&moto.endpoint()))
        .build()
        .await
        .unwrap();
    let (report, mut sent, errors) = run(sink, 700).await;
    assert_eq!(sent.len() as u64, RECORDS);
    assert_eq!(errors.num_rows(), 0);
    assert_eq!(report.committed.get("generator"), Some("3000"));
    let mut delivered = delivered_lines(&moto, "out/");
    sent.sort();
    delivered.sort();
    assert_eq!(delivered, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_and_failed_calls_lose_nothing_and_retry_within_bounds() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    delivery_stream(&moto, "flaky", "out/").await;
    let proxy = FaultProxy::start(
        moto.port(),
        Faults {
            record_failure: 0.3,
            batch_throttle: 0.1,
            batch_error: 0.1,
            seed: 11,
            ..Faults::default()
        },
    );
    let settings = DeliverySettings {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..DeliverySettings::default()
    };
    let sink = FirehoseSink::builder("flaky")
        .client(client(&proxy.endpoint()))
        .delivery_settings(settings)
        .build()
        .await
        .unwrap();
    // Small micro-batches: many calls, so many injected faults.
    let (report, sent, errors) = run(sink, 50).await;
    // Everything was acknowledged: the source position reached the end.
    assert_eq!(report.committed.get("generator"), Some("3000"));

    let injected = proxy.firehose_injected();
    assert!(
        injected.failed_records > 100 && injected.throttled_calls > 0 && injected.failed_calls > 0,
        "{injected:?}"
    );
    // Retries resend only failed records: at most max_attempts sends per record.
    let sizes = proxy.put_record_batch_sizes();
    let resent: usize = sizes.iter().sum::<usize>() - sent.len();
    assert!(
        resent > 0 && sizes.iter().sum::<usize>() <= sent.len() * 3,
        "{resent}"
    );
    assert!(sizes
        .iter()
        .all(|&n| n <= rivulet::firehose::MAX_RECORDS_PER_CALL));

    // Each record is in S3 (a record reported failed may be there too: moto stored it) or in
    // the error output with the code of its last failure.
    let delivered: std::collections::HashSet<String> =
        delivered_lines(&moto, "out/").into_iter().collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut in_errors = std::collections::HashSet::new();
    for b in errors.batches() {
        let kind = b.column_by_name("errorCode").unwrap().as_string::<i32>();
        let raw = b.column_by_name("rawData").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(
                ["ServiceUnavailableException", "InternalFailure"].contains(&kind.value(i)),
                "{}",
                kind.value(i)
            );
            let line = String::from_utf8(b64.decode(raw.value(i)).unwrap()).unwrap();
            in_errors.insert(line.trim_end().to_owned());
        }
    }
    for line in &sent {
        assert!(
            delivered.contains(line) || in_errors.contains(line),
            "lost: {line}"
        );
    }
    // With these fault rates about one record in 20 fails three times running.
    assert!(!in_errors.is_empty(), "no record ran out of attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_copy_holds_every_input_record_as_read() {
    let Some(moto) = MotoServer::start() else {
        return;
    };
    delivery_stream(&moto, "raw", "raw/").await;
    let generator = || {
        GeneratorSource::builder()
            .with_limit(Some(2000))
            .with_start_time_ms(Some(1_700_000_000_000))
            .build()
            .unwrap()
    };
    // The input, as the generator makes it (it is deterministic for a seed and start time).
    let mut input = Vec::new();
    let mut g = generator();
    while let Some(batch) = rivulet::Source::next_batch(&mut g).await.unwrap() {
        input.extend(
            batch
                .records
                .iter()
                .map(|r| String::from_utf8(r.payload().to_vec()).unwrap()),
        );
    }
    let out = MemorySink::new();
    let rows = out.handle();
    let report = Pipeline::builder()
        .source(generator())
        .sql("SELECT ticker_symbol FROM source WHERE sector = 'TECHNOLOGY'")
        .sink(out)
        .raw_copy(
            FirehoseSink::builder("raw")
                .client(client(&moto.endpoint()))
                .build()
                .await
                .unwrap(),
        )
        .build()
        .await
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(report.committed.get("generator"), Some("2000"));
    assert!(
        rows.num_rows() < input.len(),
        "the query filters; the copy does not"
    );
    let mut copied = delivered_lines(&moto, "raw/");
    copied.sort();
    input.sort();
    assert_eq!(copied, input);
}
