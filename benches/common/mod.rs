//! Bench input: the reference stock-ticker file.
//!
//! Set `RIVULET_TICKER_FILE` to a file made by the project's ticker generator (`gen_ticker.py N FILE`,
//! see the benchmarks notes). Without it, an equivalent file (same record shape and size: 100
//! tickers, ~126 bytes per record) is synthesised.

// Each bench uses part of these helpers.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

use arrow::datatypes::DataType;
use bytes::Bytes;
use rivulet::{Column, Record, RecordDecoder};

/// Micro-batch size of the decode benches.
pub(crate) const BATCH: usize = 8192;

/// The ticker columns.
pub(crate) fn ticker_columns() -> Vec<Column> {
    vec![
        Column::new("ticker_symbol", DataType::Utf8),
        Column::new("sector", DataType::Utf8),
        Column::new("change", DataType::Float64),
        Column::new("price", DataType::Float64),
        Column::new("event_time", DataType::Utf8),
    ]
}

/// Decodes `records` in micro-batches; returns the rows decoded.
pub(crate) fn decode_all(decoder: &mut RecordDecoder, records: &[Record]) -> usize {
    records
        .chunks(BATCH)
        .map(|c| decoder.decode(c).expect("decode").batch.num_rows())
        .sum()
}

/// Path of a ticker file with at least `n` records: the configured one, or a synthesised one.
pub(crate) fn ticker_file(n: usize) -> PathBuf {
    if let Ok(p) = std::env::var("RIVULET_TICKER_FILE") {
        return PathBuf::from(p);
    }
    let path = std::env::temp_dir().join(format!("rivulet-bench-ticker-{n}.ndjson"));
    if path.is_file() {
        return path;
    }
    let sectors = [
        "TECHNOLOGY",
        "HEALTHCARE",
        "ENERGY",
        "FINANCIAL",
        "RETAIL",
        "AUTOMOBILE",
    ];
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create bench file"));
    let mut x: u64 = 42;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = 1_767_225_600_000i64;
    for i in 0..n {
        let k = next() % 100;
        let price = 1.0 + (next() % 49_900) as f64 / 100.0;
        let change = (next() % 1000) as f64 / 100.0 - 5.0;
        let ts = chrono::DateTime::from_timestamp_millis(t0 + i as i64 / 10)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        writeln!(
            out,
            r#"{{"ticker_symbol": "T{k:03}", "sector": "{}", "change": {change:.2}, "price": {price:.2}, "event_time": "{ts}"}}"#,
            sectors[(k % 6) as usize]
        )
        .unwrap();
    }
    out.flush().unwrap();
    path
}

/// The first `n` lines of the ticker file as records sharing one buffer.
pub(crate) fn ticker_records(n: usize) -> (Vec<Record>, usize) {
    let text = Bytes::from(std::fs::read(ticker_file(n)).expect("read ticker file"));
    let mut records = Vec::with_capacity(n);
    let mut start = 0;
    let mut bytes = 0;
    for end in memchr_iter(&text) {
        if records.len() == n {
            break;
        }
        records.push(Record::new(text.slice(start..end), 0));
        bytes += end - start;
        start = end + 1;
    }
    (records, bytes)
}

fn memchr_iter(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
    b.iter()
        .enumerate()
        .filter_map(|(i, &c)| (c == b'\n').then_some(i))
}

/// `n` ticker records decoded into micro-batches of [`BATCH`] rows: output rows as a query passing
/// them through would emit them.
pub(crate) fn ticker_batches(n: usize) -> Vec<arrow::array::RecordBatch> {
    let (records, _) = ticker_records(n);
    let mut decoder = RecordDecoder::builder(rivulet::RecordFormat::Json)
        .with_columns(ticker_columns())
        .with_batch_size(BATCH)
        .build()
        .unwrap();
    records
        .chunks(BATCH)
        .map(|c| decoder.decode(c).unwrap().batch)
        .collect()
}
