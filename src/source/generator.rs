//! The stock-ticker demo stream, generated: the input of the quickstart.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use tokio::time::Instant;

use super::{PartitionEvent, Source, SourceBatch, DEFAULT_PARTITION};
use crate::record::now_ms;
use crate::record::{Position, Record};
use crate::{Error, Result};

/// The tickers of the Kinesis Analytics demo stream and their sectors.
const TICKERS: &[(&str, &str)] = &[
    ("AAPL", "TECHNOLOGY"),
    ("AMZN", "TECHNOLOGY"),
    ("MSFT", "TECHNOLOGY"),
    ("INTC", "TECHNOLOGY"),
    ("CRM", "TECHNOLOGY"),
    ("QXZ", "HEALTHCARE"),
    ("JNJ", "HEALTHCARE"),
    ("PFE", "HEALTHCARE"),
    ("ABC", "HEALTHCARE"),
    ("XOM", "ENERGY"),
    ("CVX", "ENERGY"),
    ("BP", "ENERGY"),
    ("JPM", "FINANCIAL"),
    ("BAC", "FINANCIAL"),
    ("WFC", "FINANCIAL"),
    ("GS", "FINANCIAL"),
    ("WMT", "RETAIL"),
    ("TGT", "RETAIL"),
    ("KSS", "RETAIL"),
    ("HD", "RETAIL"),
    ("TSLA", "AUTOMOBILE"),
    ("GM", "AUTOMOBILE"),
    ("F", "AUTOMOBILE"),
    ("TM", "AUTOMOBILE"),
];

/// Most records the generator puts in one batch.
const MAX_CHUNK: usize = 4096;

/// Payload encoding of generated records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GeneratorFormat {
    /// One JSON object per record (the default).
    #[default]
    Json,
    /// One CSV line per record, columns in the order `ticker_symbol,sector,change,price,event_time`.
    Csv,
}

/// Generates the stock-ticker stream that Kinesis Data Analytics shipped as its demo: records with
/// `ticker_symbol`, `sector`, `change`, `price` and `event_time` (ISO-8601, UTC).
///
/// Prices follow a random walk per ticker from a fixed seed, so a run is reproducible given the same
/// seed, limit and clock.
#[derive(Debug)]
pub struct GeneratorSource {
    rate: Option<f64>,
    limit: Option<u64>,
    format: GeneratorFormat,
    clock: Option<(i64, f64)>,
    rng: u64,
    prices: Vec<f64>,
    produced: u64,
    started: Option<Instant>,
    /// Its one partition has been declared.
    declared: bool,
}

/// Builder for [`GeneratorSource`].
#[derive(Debug, Clone)]
pub struct GeneratorSourceBuilder {
    rate: Option<f64>,
    limit: Option<u64>,
    seed: u64,
    format: GeneratorFormat,
    start_time_ms: Option<i64>,
}

impl GeneratorSource {
    /// A builder with defaults: as fast as possible, unbounded, seed 42, JSON, wall-clock time.
    pub fn builder() -> GeneratorSourceBuilder {
        GeneratorSourceBuilder {
            rate: None,
            limit: None,
            seed: 42,
            format: GeneratorFormat::Json,
            start_time_ms: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: small, fast and good enough for demo data.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, n: usize) -> SourceBatch {
        let mut buf = BytesMut::with_capacity(n * 128);
        let mut ends = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut line = String::with_capacity(160);
        let wall = now_ms();
        for _ in 0..n {
            let i = (self.next_u64() % TICKERS.len() as u64) as usize;
            let (symbol, sector) = TICKERS[i];
            let change = ((self.next_f64() - 0.5) * 10.0 * 100.0).round() / 100.0;
            let price = ((self.prices[i] + change).max(1.0) * 100.0).round() / 100.0;
            self.prices[i] = price;
            let t = match self.clock {
                Some((start, step)) => start + (self.produced as f64 * step) as i64,
                None => wall,
            };
            let ts = chrono::DateTime::from_timestamp_millis(t)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            line.clear();
            // Writing to a String cannot fail.
            let _ = match self.format {
                GeneratorFormat::Json => write!(
                    line,
                    r#"{{"ticker_symbol":"{symbol}","sector":"{sector}","change":{change},"price":{price},"event_time":"{ts}"}}"#
                ),
                GeneratorFormat::Csv => {
                    write!(line, "{symbol},{sector},{change},{price},{ts}")
                }
            };
            buf.put_slice(line.as_bytes());
            ends.push(buf.len());
            times.push(t);
            self.produced += 1;
        }
        let buf = buf.freeze();
        let mut start = 0;
        let records = ends
            .into_iter()
            .zip(times)
            .map(|(end, t)| {
                let r = Record::new(buf.slice(start..end), t);
                start = end;
                r
            })
            .collect();
        SourceBatch::new(
            records,
            Position::single("generator", self.produced.to_string()),
        )
    }
}

/// How many of at most `n` records may be produced now by a source producing `rate` records per
/// second since `started`, `produced` of them so far; waits until at least one is due.
pub(crate) async fn paced(rate: f64, started: Instant, produced: u64, n: usize) -> usize {
    loop {
        let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
        let owed = due.saturating_sub(produced);
        if owed > 0 {
            return n.min(usize::try_from(owed).unwrap_or(usize::MAX));
        }
        let next_at = (produced as f64 + 1.0) / rate;
        let wait = (next_at - started.elapsed().as_secs_f64()).clamp(0.001, 0.2);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

impl GeneratorSourceBuilder {
    /// Records per second; `None` (the default) generates as fast as the pipeline consumes.
    pub fn with_rate(mut self, records_per_second: Option<f64>) -> Self {
        self.rate = records_per_second;
        self
    }

    /// Stops after `limit` records; `None` (the default) never stops.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Seed of the random walk.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Payload encoding.
    pub fn with_format(mut self, format: GeneratorFormat) -> Self {
        self.format = format;
        self
    }

    /// Uses a synthetic clock instead of wall-clock time: record `i` gets event and arrival time
    /// `start_time_ms + i * 1000 / rate` (1 ms apart when no rate is set). Makes runs reproducible.
    pub fn with_start_time_ms(mut self, start_time_ms: Option<i64>) -> Self {
        self.start_time_ms = start_time_ms;
        self
    }

    /// Builds the source.
    pub fn build(self) -> Result<GeneratorSource> {
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Error::config(
                    "source.rate",
                    format!("must be a positive number of records per second, got {rate}"),
                ));
            }
        }
        let step = self.rate.map_or(1.0, |r| 1000.0 / r);
        let mut rng = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        if rng == 0 {
            rng = 1;
        }
        let mut source = GeneratorSource {
            rate: self.rate,
            limit: self.limit,
            format: self.format,
            clock: self.start_time_ms.map(|s| (s, step)),
            rng,
            prices: Vec::new(),
            produced: 0,
            started: None,
            declared: false,
        };
        source.prices = (0..TICKERS.len())
            .map(|_| (10.0 + source.next_f64() * 190.0).round())
            .collect();
        Ok(source)
    }
}

#[async_trait]
impl Source for GeneratorSource {
    fn name(&self) -> &str {
        "generator"
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        let remaining = self
            .limit
            .map_or(u64::MAX, |l| l.saturating_sub(self.produced));
        if remaining == 0 {
            return Ok(None);
        }
        let mut n = MAX_CHUNK.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            n = paced(rate, started, self.produced, n).await;
        }
        let batch = self.fill(n);
        if !std::mem::replace(&mut self.declared, true) {
            // The first batch declares the one partition.
            return Ok(Some(
                batch.with_partitions([PartitionEvent::declared(DEFAULT_PARTITION)]),
            ));
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_and_seed_make_runs_reproducible() {
        let mk = || {
            GeneratorSource::builder()
                .with_limit(Some(10))
                .with_start_time_ms(Some(0))
                .build()
                .unwrap()
        };
        let (mut a, mut b) = (mk(), mk());
        let ba = a.next_batch().await.unwrap().unwrap();
        let bb = b.next_batch().await.unwrap().unwrap();
        assert_eq!(ba.records.len(), 10);
        assert_eq!(ba.records, bb.records);
        assert!(a.next_batch().await.unwrap().is_none());
        let first: serde_json::Value = serde_json::from_slice(ba.records[0].payload()).unwrap();
        for key in ["ticker_symbol", "sector", "change", "price", "event_time"] {
            assert!(first.get(key).is_some(), "missing {key} in {first}");
        }
        assert_eq!(first["event_time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(ba.position.get("generator"), Some("10"));
    }

    #[tokio::test]
    async fn rate_limits_output() {
        let mut g = GeneratorSource::builder()
            .with_rate(Some(1000.0))
            .build()
            .unwrap();
        let b = g.next_batch().await.unwrap().unwrap();
        // At 1,000/s a batch right after start holds only the records due so far, not a full chunk.
        assert!(b.records.len() < MAX_CHUNK, "{}", b.records.len());
    }

    #[test]
    fn zero_rate_is_rejected() {
        let err = GeneratorSource::builder()
            .with_rate(Some(0.0))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("source.rate"), "{err}");
    }
}
