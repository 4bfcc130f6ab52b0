//! The Kinesis read path without the network: GetRecords-shaped pages of records (plain and KPL
//! aggregated) → de-aggregation → decoded Arrow batches.
//!
//! ```sh
//! taskset -c 0 cargo bench --bench kinesis
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use common::{decode_all, ticker_columns, BATCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::kinesis::{RecordUnpacker, MAX_RECORDS_PER_CALL};
use rivulet::{kpl, Record, RecordDecoder, RecordFormat};

const ROWS: usize = 200_000;
/// Sub-records per aggregated record (a KPL producer packs up to its 1 MB record limit).
const PER_AGGREGATE: usize = 100;

/// One raw record of a GetRecords response, as the SDK hands it over.
struct RawRecord {
    data: Bytes,
    partition_key: String,
    sequence: String,
    arrival_ms: i64,
}

fn sequence(i: usize) -> String {
    // Kinesis sequence numbers are 56-digit decimals.
    format!("4959033827149025660855969253836157109592157598913{:07}", i)
}

/// Records split into pages of at most 10,000, as GetRecords returns them.
fn pages(records: Vec<RawRecord>) -> Vec<Vec<RawRecord>> {
    let mut pages = Vec::new();
    let mut it = records.into_iter().peekable();
    while it.peek().is_some() {
        pages.push(it.by_ref().take(MAX_RECORDS_PER_CALL as usize).collect());
    }
    pages
}

fn unpack(unpacker: &mut RecordUnpacker, pages: &[Vec<RawRecord>], out: &mut Vec<Record>) {
    out.clear();
    for page in pages {
        for r in page {
            unpacker.unpack(&r.data, &r.partition_key, &r.sequence, r.arrival_ms, out);
        }
    }
}

fn bench(c: &mut Criterion) {
    let (records, _) = common::ticker_records(ROWS);
    let keys: Vec<String> = (0..1000).map(|k| format!("user-{k}")).collect();
    // Keys whose hash falls in the lower half of the key space: a shard of a two-shard stream.
    let lower: Vec<&String> = keys
        .iter()
        .filter(|k| kpl::hash_key(k, None).is_some_and(|h| h < 1u128 << 127))
        .collect();

    let plain = pages(
        records
            .iter()
            .enumerate()
            .map(|(i, r)| RawRecord {
                data: r.payload().clone(),
                partition_key: keys[i % keys.len()].clone(),
                sequence: sequence(i),
                arrival_ms: 1_767_225_600_000 + i as i64,
            })
            .collect(),
    );
    let aggregated = pages(
        records
            .chunks(PER_AGGREGATE)
            .enumerate()
            .map(|(i, chunk)| RawRecord {
                data: kpl::aggregate(chunk.iter().enumerate().map(|(j, r)| {
                    (
                        lower[(i * PER_AGGREGATE + j) % lower.len()].as_str(),
                        None,
                        &r.payload()[..],
                    )
                })),
                partition_key: lower[i % lower.len()].clone(),
                sequence: sequence(i),
                arrival_ms: 1_767_225_600_000 + i as i64,
            })
            .collect(),
    );

    let mut group = c.benchmark_group("kinesis");
    group.sample_size(20);
    group.throughput(Throughput::Elements(records.len() as u64));
    let mut out = Vec::with_capacity(records.len());

    let mut unpacker = RecordUnpacker::new("shardId-000000000000");
    group.bench_function(BenchmarkId::new("deaggregate", "whole_key_space"), |b| {
        b.iter(|| {
            unpack(&mut unpacker, &aggregated, &mut out);
            assert_eq!(out.len(), records.len());
        })
    });
    let mut shard =
        RecordUnpacker::new("shardId-000000000000").with_hash_range(0, (1u128 << 127) - 1);
    group.bench_function(BenchmarkId::new("deaggregate", "half_key_space"), |b| {
        b.iter(|| {
            unpack(&mut shard, &aggregated, &mut out);
            assert_eq!(out.len(), records.len());
        })
    });

    let mut decoder = RecordDecoder::builder(RecordFormat::Json)
        .with_columns(ticker_columns())
        .with_batch_size(BATCH)
        .build()
        .unwrap();
    group.bench_function(BenchmarkId::new("to_batches", "plain"), |b| {
        b.iter(|| {
            unpack(&mut unpacker, &plain, &mut out);
            assert_eq!(decode_all(&mut decoder, &out), records.len());
        })
    });
    group.bench_function(BenchmarkId::new("to_batches", "aggregated"), |b| {
        b.iter(|| {
            unpack(&mut shard, &aggregated, &mut out);
            assert_eq!(decode_all(&mut decoder, &out), records.len());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
