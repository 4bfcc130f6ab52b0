//! Envelope encryption and object encoding, without the network: AES-256-GCM sealing of objects
//! and of single records, Firehose records with and without encryption, and the S3 sink's
//! Parquet and JSON objects (into an in-memory store).
//!
//! ```sh
//! taskset -c 0 cargo bench --bench encryption
//! ```
//!
//! The data key comes from a stand-in provider (a fixed key): KMS is called once per data key,
//! which the cache keeps for minutes, so it is not part of the per-byte cost.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::crypto::{
    DataKey, EncryptionContext, EnvelopeDecryptor, EnvelopeEncryptor, KeyProvider, Zeroizing,
};
use rivulet::firehose::plan_requests;
use rivulet::s3::{Compression, ObjectFormat, S3Sink};
use rivulet::{Encoder, OutputBatch, OutputFormat, Sink};

const ROWS: usize = 200_000;

/// A fixed data key: the bench measures the cipher, not KMS.
#[derive(Debug)]
struct FixedKey;

#[async_trait]
impl KeyProvider for FixedKey {
    async fn generate_data_key(&self, _: &EncryptionContext) -> rivulet::Result<DataKey> {
        Ok(DataKey {
            key_id: "arn:aws:kms:us-east-1:000000000000:key/bench".into(),
            plaintext: vec![7; 32].into(),
            encrypted: vec![9; 184],
        })
    }

    async fn decrypt_data_key(
        &self,
        _: &str,
        _: &[u8],
        _: &EncryptionContext,
    ) -> rivulet::Result<Zeroizing<Vec<u8>>> {
        Ok(vec![7; 32].into())
    }
}

fn encryptor() -> EnvelopeEncryptor {
    EnvelopeEncryptor::builder(Arc::new(FixedKey))
        .with_context("rivulet:pipeline", "bench")
        .with_context("rivulet:stream", "DESTINATION_SQL_STREAM")
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let batches = common::ticker_batches(ROWS);
    let encoder = Encoder::new(OutputFormat::JsonLines);
    let lines: Vec<_> = batches
        .iter()
        .map(|b| encoder.encode_lines(b).unwrap())
        .collect();
    let line_bytes: usize = lines.iter().flatten().map(|r| r.len()).sum();

    // Objects: 1 MiB messages.
    let object = vec![0x5au8; 1 << 20];
    let mut group = c.benchmark_group("envelope");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(object.len() as u64));
    let mut enc = encryptor();
    let mut sealed = Vec::with_capacity(object.len() + 512);
    group.bench_function(BenchmarkId::new("seal", "1MiB_object"), |b| {
        b.iter(|| {
            sealed.clear();
            rt.block_on(enc.seal(&object, &mut sealed)).unwrap();
            assert!(sealed.len() > object.len());
        })
    });
    let mut dec = EnvelopeDecryptor::new(Arc::new(FixedKey));
    let mut opened = Vec::with_capacity(object.len());
    group.bench_function(BenchmarkId::new("open", "1MiB_object"), |b| {
        b.iter(|| {
            opened.clear();
            rt.block_on(dec.open(&sealed, &mut opened)).unwrap();
            assert_eq!(opened.len(), object.len());
        })
    });
    // Records: each ticker JSON line its own envelope.
    group.throughput(Throughput::Bytes(line_bytes as u64));
    group.bench_function(BenchmarkId::new("seal", "each_record"), |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            rt.block_on(async {
                for r in lines.iter().flatten() {
                    out.clear();
                    enc.seal(r, &mut out).await.unwrap();
                }
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("firehose");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(line_bytes as u64));
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
    group.bench_function(
        BenchmarkId::new("encode_encrypt_and_batch", "json_lines"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut n = 0;
                    for batch in &batches {
                        let mut sealed = Vec::with_capacity(batch.num_rows());
                        for r in encoder.encode_lines(batch).unwrap() {
                            let mut out = Vec::with_capacity(r.len() + 320);
                            enc.seal(&r, &mut out).await.unwrap();
                            sealed.push(bytes::Bytes::from(out));
                        }
                        n += plan_requests(sealed).requests.len();
                    }
                    assert!(n > 0);
                })
            })
        },
    );
    group.finish();

    // S3 objects from output batches (the whole stream, one object per 8 MiB).
    let mut group = c.benchmark_group("s3");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, format, compression) in [
        ("parquet_snappy", ObjectFormat::Parquet, Compression::Snappy),
        ("parquet_zstd", ObjectFormat::Parquet, Compression::Zstd),
        (
            "json_gzip",
            ObjectFormat::Text(OutputFormat::JsonLines),
            Compression::Gzip,
        ),
        (
            "json_zstd",
            ObjectFormat::Text(OutputFormat::JsonLines),
            Compression::Zstd,
        ),
    ] {
        group.bench_function(BenchmarkId::new("encode_objects", name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let store = Arc::new(object_store::memory::InMemory::new());
                    let mut sink = S3Sink::builder("bench")
                        .with_store(store)
                        .with_format(format.clone())
                        .with_compression(compression)
                        .with_roll_bytes(8 << 20)
                        .build()
                        .await
                        .unwrap();
                    for batch in &batches {
                        sink.write(OutputBatch::rows("s", batch.clone()))
                            .await
                            .unwrap();
                    }
                    sink.finish().await.unwrap();
                    assert!(sink.objects_written() > 0);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
