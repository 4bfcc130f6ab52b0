//! The Firehose sink against moto on 127.0.0.1, through the tests' fault proxy: records per
//! second delivered with no fault, and with 30 % of the records of every PutRecordBatch refused
//! with `ServiceUnavailableException` (the service asking to slow down). Both are measured in one
//! run, so their ratio compares like with like; the target is at least 0.5.
//!
//! ```sh
//! RIVULET_MOTO_SERVER=… cargo bench --bench firehose_faults
//! ```
//!
//! Without a moto server (`RIVULET_MOTO_SERVER` or `moto_server` on `PATH`) the bench does
//! nothing.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

#[allow(dead_code)]
#[path = "../tests/integration/support/fault_proxy.rs"]
mod fault_proxy;
#[allow(dead_code)]
#[path = "../tests/integration/support/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/integration/support/s3.rs"]
mod s3;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use aws_sdk_firehose::config::retry::RetryConfig;
use aws_sdk_firehose::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_firehose::types::ExtendedS3DestinationConfiguration;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::{FirehoseSink, OutputBatch, Sink as _};

use fault_proxy::{FaultProxy, Faults};
use moto::MotoServer;

/// Records per iteration: 40 full PutRecordBatch calls when nothing fails.
const RECORDS: usize = 20_000;

fn client(endpoint: &str) -> aws_sdk_firehose::Client {
    aws_sdk_firehose::Client::from_conf(
        aws_sdk_firehose::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// Ticker-shaped rows (~100 bytes each), in micro-batches of 500.
fn batches() -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]));
    (0..RECORDS / 500)
        .map(|b| {
            let lines: Vec<String> = (0..500)
                .map(|i| {
                    format!(
                        "{{\"ticker_symbol\":\"T{:03}\",\"sector\":\"TECH\",\"price\":{}.25,\"n\":{}}}",
                        i % 100,
                        i,
                        b * 500 + i
                    )
                })
                .collect();
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(StringArray::from(lines))])
                .unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let Some(moto) = MotoServer::start() else {
        eprintln!("firehose_faults: no moto server; nothing measured");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    s3::create_bucket(moto.port(), "bench");
    runtime.block_on(async {
        client(&moto.endpoint())
            .create_delivery_stream()
            .delivery_stream_name("bench")
            .extended_s3_destination_configuration(
                ExtendedS3DestinationConfiguration::builder()
                    .bucket_arn("arn:aws:s3:::bench")
                    .role_arn("arn:aws:iam::123456789012:role/firehose-delivery")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("create the delivery stream");
    });
    let input = batches();
    let mut group = c.benchmark_group("firehose_faults");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (label, failure) in [("fault_free", 0.0), ("30pct_records_throttled", 0.3)] {
        // Both through the proxy, so that only the faults differ.
        let proxy = FaultProxy::start(
            moto.port(),
            Faults {
                record_failure: failure,
                seed: 5,
                ..Faults::default()
            },
        );
        let endpoint = proxy.endpoint();
        group.bench_function(BenchmarkId::new("deliver", label), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut sink = FirehoseSink::builder("bench")
                        .client(client(&endpoint))
                        .build()
                        .await
                        .unwrap();
                    let (errors, mut rx) = rivulet::ErrorOutput::channel(16);
                    let drain = tokio::spawn(async move {
                        let mut rows = 0;
                        while let Some(b) = rx.recv().await {
                            rows += b.data.len();
                            b.ack.acknowledge();
                        }
                        rows
                    });
                    sink.set_error_output(errors);
                    for batch in &input {
                        sink.write(OutputBatch::rows("s", batch.clone()))
                            .await
                            .unwrap();
                    }
                    sink.finish().await.unwrap();
                    drop(sink);
                    assert_eq!(drain.await.unwrap(), 0, "nothing runs out of attempts");
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
