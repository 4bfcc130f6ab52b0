//! End-to-end throughput through the public API, on one core: file → filter SQL → null sink, and
//! an application pushing records (the push source) through a projection into a null sink.
//!
//! ```sh
//! cargo bench --bench pipeline
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use std::sync::atomic::Ordering;

use arrow::datatypes::DataType;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rivulet::{Column, FileSource, NullSink, Pipeline, PushSourceOptions, Record};

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
    push(c, &runtime, &path);
}

/// Records pushed by a producer task, one `push` at a time or in batches of 1,024, through
/// `SELECT ticker_symbol, price FROM source` into a null sink (the JSON decode is part of it).
fn push(c: &mut Criterion, runtime: &tokio::runtime::Runtime, path: &std::path::Path) {
    const PUSHED: usize = 500_000;
    let data = Bytes::from(std::fs::read(path).unwrap());
    let mut records = Vec::with_capacity(PUSHED);
    let mut start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            records.push(Record::new(data.slice(start..i), 0));
            start = i + 1;
            if records.len() == PUSHED {
                break;
            }
        }
    }
    let mut group = c.benchmark_group("push");
    group.sample_size(10);
    group.throughput(Throughput::Elements(records.len() as u64));
    for batched in [false, true] {
        let name = if batched {
            "batches_of_1024"
        } else {
            "one_at_a_time"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let sink = NullSink::new();
                    let rows = sink.counter();
                    let (builder, handle) =
                        Pipeline::builder().push_source(PushSourceOptions::new());
                    let pipeline = builder
                        .columns(common::ticker_columns())
                        .sql("SELECT ticker_symbol, price FROM source")
                        .sink(sink)
                        .build()
                        .await
                        .unwrap();
                    let input = records.clone();
                    let producer = tokio::spawn(async move {
                        if batched {
                            let mut input = input.into_iter().peekable();
                            while input.peek().is_some() {
                                handle.push_batch(input.by_ref().take(1024)).await.unwrap();
                            }
                        } else {
                            for r in input {
                                handle.push(r).await.unwrap();
                            }
                        }
                    });
                    let report = pipeline.run().await.unwrap();
                    producer.await.unwrap();
                    assert_eq!(report.metrics.records_in, PUSHED as u64);
                    assert_eq!(rows.load(Ordering::Relaxed), PUSHED as u64);
                })
            })
        });
    }
    // The same rows as Arrow batches of 1,024 (no text format in between), through a
    // projection into a null sink.
    let mut decoder = rivulet::RecordDecoder::builder(rivulet::RecordFormat::Json)
        .with_columns(common::ticker_columns())
        .build()
        .unwrap();
    let batches: Vec<_> = records
        .chunks(1024)
        .map(|c| {
            let b = decoder.decode(c).unwrap().batch;
            // The decoder's ROWTIME column is the pipeline's to add.
            b.project(&(0..b.num_columns() - 1).collect::<Vec<_>>())
                .unwrap()
        })
        .collect();
    group.bench_function("arrow_batches_of_1024", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let sink = NullSink::new();
                let rows = sink.counter();
                let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
                let pipeline = builder
                    .columns(common::ticker_columns())
                    .sql("SELECT ticker_symbol, price FROM source")
                    .sink(sink)
                    .build()
                    .await
                    .unwrap();
                let input = batches.clone();
                let producer = tokio::spawn(async move {
                    for b in input {
                        handle.push_rows(b).await.unwrap();
                    }
                });
                let report = pipeline.run().await.unwrap();
                producer.await.unwrap();
                assert_eq!(report.metrics.records_in, PUSHED as u64);
                assert_eq!(rows.load(Ordering::Relaxed), PUSHED as u64);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
