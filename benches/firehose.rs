//! The Firehose sink's CPU work, without the network: output rows → newline-terminated records →
//! PutRecordBatch requests within the service's limits.
//!
//! ```sh
//! taskset -c 0 cargo bench --bench firehose
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::firehose::plan_requests;
use rivulet::{Encoder, OutputFormat};

const ROWS: usize = 200_000;

fn bench(c: &mut Criterion) {
    let batches = common::ticker_batches(ROWS);
    let encoder = Encoder::new(OutputFormat::JsonLines);
    let encoded: Vec<_> = batches
        .iter()
        .map(|b| encoder.encode_lines(b).unwrap())
        .collect();
    let bytes: usize = encoded.iter().flatten().map(|r| r.len()).sum();

    let mut group = c.benchmark_group("firehose");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::new("batch", "encoded_records"), |b| {
        b.iter(|| {
            let n: usize = encoded
                .iter()
                .map(|records| plan_requests(records.iter().cloned()).requests.len())
                .sum();
            assert!(n > 0);
        })
    });
    group.bench_function(BenchmarkId::new("encode_and_batch", "json_lines"), |b| {
        b.iter(|| {
            let n: usize = batches
                .iter()
                .map(|batch| {
                    plan_requests(encoder.encode_lines(batch).unwrap())
                        .requests
                        .len()
                })
                .sum();
            assert!(n > 0);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
