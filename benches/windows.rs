//! Window aggregation: decoded rows → window state → emitted rows, at 100 and 100,000 keys.
//!
//! `cargo bench --bench windows`
//!
//! The input is decoded once, outside the measurement; each iteration runs a fresh
//! [`SqlProgram`] over all batches and then ends the input, so every window is emitted.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rivulet::{SqlProgram, WatermarkSettings};

const ROWS: usize = 1 << 20;
const BATCH: usize = 8192;

/// Ticker-shaped batches: `keys` symbols, event time advancing 0.1 ms per row (like the
/// reference file), so a 10 s window holds 100,000 rows.
fn input(keys: u64) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ticker_symbol", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]));
    let mut x: u64 = 42;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = 1_767_225_600_000i64;
    (0..ROWS / BATCH)
        .map(|b| {
            let mut syms = Vec::with_capacity(BATCH);
            let mut prices = Vec::with_capacity(BATCH);
            let mut times = Vec::with_capacity(BATCH);
            for i in 0..BATCH {
                let row = b * BATCH + i;
                syms.push(format!("T{:06}", next() % keys));
                prices.push(1.0 + (next() % 49_900) as f64 / 100.0);
                times.push(t0 + row as i64 / 10);
            }
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(syms)),
                    Arc::new(Float64Array::from(prices)),
                    Arc::new(TimestampMillisecondArray::from(times).with_timezone("UTC")),
                ],
            )
            .expect("bench batch")
        })
        .collect()
}

const QUERY: &str = "SELECT ticker_symbol, TUMBLE_START(event_time, INTERVAL '10' SECOND) AS ws, \
     COUNT(*) AS n, AVG(price) AS avg_price, MIN(price) AS min_price, MAX(price) AS max_price \
     FROM source GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";

/// The busiest three symbols of each window (`ORDER BY … LIMIT` per window, as KDA's
/// `TOP_K_ITEMS_TUMBLING` runs), and the same counts without it, for the ratio.
const TOP_3: &str = "SELECT ticker_symbol, COUNT(*) AS n FROM source \
     GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND) \
     ORDER BY COUNT(*) DESC, ticker_symbol LIMIT 3";
const COUNTS: &str = "SELECT ticker_symbol, COUNT(*) AS n FROM source \
     GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)";

fn windows(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("windows");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    let cases = [
        ("tumbling_10s_count_avg_min_max", QUERY),
        ("tumbling_10s_count", COUNTS),
        ("tumbling_10s_top_3_per_window", TOP_3),
    ];
    for keys in [100u64, 100_000] {
        let batches = input(keys);
        let schema = batches[0].schema();
        for (name, query) in cases {
            group.bench_with_input(
                BenchmarkId::new(name, format!("{keys}_keys")),
                &batches,
                |b, batches| {
                    b.iter(|| {
                        runtime.block_on(async {
                            let settings = WatermarkSettings {
                                allowed_lateness: std::time::Duration::from_secs(1),
                                ..WatermarkSettings::default()
                            };
                            let mut program = SqlProgram::new(query, Arc::clone(&schema), settings)
                                .await
                                .expect("plan");
                            let mut rows = 0;
                            for (seq, batch) in batches.iter().enumerate() {
                                let out =
                                    program.process(batch, &[], seq as u64).await.expect("run");
                                rows += out.streams.iter().map(|s| s.1.num_rows()).sum::<usize>();
                            }
                            let out = program.finish(u64::MAX).await.expect("finish");
                            rows + out.streams.iter().map(|s| s.1.num_rows()).sum::<usize>()
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);
