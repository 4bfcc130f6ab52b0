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

pub(crate) const BUCKET: &str = "delivered";
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
pub(crate) async fn delivery_stream(moto: &MotoServer, name: &str, prefix: &str) {
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
pub(crate) fn delivered_lines(moto: &MotoServer, prefix: &str) -> Vec<String> {
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
            // Failures that spend attempts (a throttled record waits without spending them).
            record_internal_failure: true,
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
    // Retries resend only failed records: at most max_attempts counted sends per record, plus
    // the calls refused as throttled, which do not spend attempts.
    let sizes = proxy.put_record_batch_sizes();
    let total: usize = sizes.iter().sum();
    let throttled = injected.throttled_calls as usize * rivulet::firehose::MAX_RECORDS_PER_CALL;
    assert!(
        total > sent.len() && total <= sent.len() * 3 + throttled,
        "{total} records sent for {}",
        sent.len()
    );
    assert!(sizes
        .iter()
        .all(|&n| n <= rivulet::firehose::MAX_RECORDS_PER_CALL));

    // Each record sent is either in S3, once, or in the error output with the code of its last
    // failure, and nowhere else: the proxy takes failing records out of the calls it forwards,
    // and answers failed calls without forwarding them, so moto stores only the records reported
    // as written, and a record dropped by the sink would be missing from both.
    let delivered = delivered_lines(&moto, "out/");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut in_errors = Vec::new();
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
            in_errors.push(line.trim_end().to_owned());
        }
    }
    // The generator repeats a few lines (a price held at its floor of 1.00 with the same change),
    // so lines are counted rather than collected in sets: [sent, in S3, in the error output].
    let mut counts: std::collections::BTreeMap<&str, [usize; 3]> =
        std::collections::BTreeMap::new();
    for (column, lines) in [&sent, &delivered, &in_errors].into_iter().enumerate() {
        for line in lines {
            counts.entry(line.as_str()).or_default()[column] += 1;
        }
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, c)| c[1] > c[0]).collect();
    assert!(
        duplicated.is_empty(),
        "in S3 more often than sent [sent, in S3, errors]: {duplicated:?}"
    );
    let both: Vec<_> = counts
        .iter()
        .filter(|(_, c)| c[1] > 0 && c[2] > 0 && c[1] + c[2] > c[0])
        .collect();
    assert!(
        both.is_empty(),
        "both in S3 and in the error output [sent, in S3, errors]: {both:?}"
    );
    let extra: Vec<_> = counts.iter().filter(|(_, c)| c[1] + c[2] > c[0]).collect();
    assert!(
        extra.is_empty(),
        "delivered or handed over more often than sent [sent, in S3, errors]: {extra:?}"
    );
    let lost: Vec<_> = counts.iter().filter(|(_, c)| c[1] + c[2] < c[0]).collect();
    assert!(lost.is_empty(), "lost [sent, in S3, errors]: {lost:?}");
    assert_eq!(delivered.len() + in_errors.len(), sent.len());
    let mut accounted: Vec<&String> = delivered.iter().chain(&in_errors).collect();
    let mut sent_sorted: Vec<&String> = sent.iter().collect();
    accounted.sort();
    sent_sorted.sort();
    assert_eq!(
        accounted, sent_sorted,
        "S3 and the error output together hold what was sent"
    );
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
