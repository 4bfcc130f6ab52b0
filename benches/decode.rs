//! Decode throughput: record payloads → Arrow RecordBatch.
//!
//! ```sh
//! cargo bench --bench decode
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use common::{decode_all, ticker_columns, BATCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::{CsvOptions, Record, RecordDecoder, RecordFormat};

const ROWS: usize = 200_000;

fn bench(c: &mut Criterion) {
    let (records, bytes) = common::ticker_records(ROWS);
    let mut group = c.benchmark_group("decode");
    group.sample_size(20);

    for (name, throughput) in [
        ("ndjson_bytes", Throughput::Bytes(bytes as u64)),
        ("ndjson_rows", Throughput::Elements(records.len() as u64)),
    ] {
        group.throughput(throughput);
        let mut decoder = RecordDecoder::builder(RecordFormat::Json)
            .with_columns(ticker_columns())
            .with_batch_size(BATCH)
            .build()
            .unwrap();
        group.bench_function(BenchmarkId::new(name, BATCH), |b| {
            b.iter(|| assert_eq!(decode_all(&mut decoder, &records), records.len()))
        });
    }

    // For scale: arrow-json's decoder alone on the same bytes as one contiguous buffer (no
    // per-record framing, no error isolation, no ROWTIME) — the ceiling of the path above.
    let mut contiguous = Vec::with_capacity(bytes + records.len());
    for r in &records {
        contiguous.extend_from_slice(r.payload());
        contiguous.push(b'\n');
    }
    group.throughput(Throughput::Bytes(bytes as u64));
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
        ticker_columns()
            .into_iter()
            .map(|c| arrow::datatypes::Field::new(c.name, c.data_type, true))
            .collect::<Vec<_>>(),
    ));
    group.bench_function(BenchmarkId::new("arrow_json_alone_bytes", BATCH), |b| {
        b.iter(|| {
            let mut d = arrow::json::ReaderBuilder::new(std::sync::Arc::clone(&schema))
                .with_batch_size(BATCH)
                .build_decoder()
                .unwrap();
            let mut buf = &contiguous[..];
            let mut rows = 0;
            while !buf.is_empty() {
                let n = d.decode(buf).unwrap();
                buf = &buf[n..];
                if let Some(batch) = d.flush().unwrap() {
                    rows += batch.num_rows();
                }
            }
            assert_eq!(rows, records.len());
        })
    });

    // The same rows as CSV.
    let mut decoder = RecordDecoder::builder(RecordFormat::Json)
        .with_columns(ticker_columns())
        .build()
        .unwrap();
    let batch = decoder
        .decode(&records[..BATCH.min(records.len())])
        .unwrap()
        .batch;
    let mut csv = Vec::new();
    rivulet::Encoder::new(rivulet::OutputFormat::Csv {
        delimiter: b',',
        header: false,
    })
    .encode(&batch.project(&[0, 1, 2, 3, 4]).unwrap(), false, &mut csv)
    .unwrap();
    let csv = bytes::Bytes::from(csv);
    let mut csv_records = Vec::new();
    let mut start = 0;
    for (i, &c) in csv.iter().enumerate() {
        if c == b'\n' {
            csv_records.push(Record::new(csv.slice(start..i), 0));
            start = i + 1;
        }
    }
    let csv_bytes: usize = csv_records.iter().map(|r| r.payload().len()).sum();
    group.throughput(Throughput::Bytes(csv_bytes as u64));
    let mut decoder = RecordDecoder::builder(RecordFormat::Csv(CsvOptions::default()))
        .with_columns(ticker_columns())
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("csv_bytes", BATCH), |b| {
        b.iter(|| assert_eq!(decode_all(&mut decoder, &csv_records), csv_records.len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
