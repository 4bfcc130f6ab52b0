//! End-to-end throughput through the public API, on one core: file → filter SQL → null sink.
//!
//! ```sh
//! cargo bench --bench pipeline
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use std::sync::atomic::Ordering;

use arrow::datatypes::DataType;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rivulet::{Column, FileSource, NullSink, Pipeline};

const ROWS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let path = common::ticker_file(ROWS);
    let lines = std::fs::read(&path)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(lines as u64));
    group.bench_function("file_filter_null", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let sink = NullSink::new();
                let rows = sink.counter();
                let report = Pipeline::builder()
                    .source(FileSource::builder(&path).build().unwrap())
                    .columns(vec![
                        Column::new("ticker_symbol", DataType::Utf8),
                        Column::new("sector", DataType::Utf8),
                        Column::new("change", DataType::Float64),
                        Column::new("price", DataType::Float64),
                        Column::new("event_time", DataType::Utf8),
                    ])
                    .sql("SELECT ticker_symbol, price FROM source WHERE price > 250")
                    .sink(sink)
                    .build()
                    .await
                    .unwrap()
                    .run()
                    .await
                    .unwrap();
                assert_eq!(report.metrics.records_in, lines as u64);
                assert_eq!(rows.load(Ordering::Relaxed), report.metrics.rows_out);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
