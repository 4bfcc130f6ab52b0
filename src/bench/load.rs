//! Synthetic load for a benchmark: the built-in scenarios' records, produced at a rate or as fast as
//! the pipeline takes them, and the time from each record's production to the commit that covers it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::{LoadOptions, Scenario};
use crate::record::{now_ms, Position, Record};
use crate::source::{paced, PartitionEvent, Source, SourceBatch, DEFAULT_PARTITION};
use crate::{Error, Result};

/// The position key of the load's one partition.
const PARTITION: &str = "load";

/// Most records in one batch.
const MAX_CHUNK: usize = 4096;

/// Sectors of the ticker scenario, as the Kinesis Data Analytics demo stream had them.
const SECTORS: &[&str] = &[
    "TECHNOLOGY",
    "HEALTHCARE",
    "ENERGY",
    "FINANCIAL",
    "RETAIL",
    "AUTOMOBILE",
];

/// Pages and actions of the clickstream scenario.
const PAGES: &[&str] = &["/", "/search", "/product", "/cart", "/checkout", "/account"];
const ACTIONS: &[&str] = &[
    "view",
    "view",
    "view",
    "click",
    "click",
    "add_to_cart",
    "buy",
];

/// Records produced and not yet covered by a commit, and the latencies of those that were.
#[derive(Debug)]
pub(super) struct Latencies {
    /// `(last sequence number, produced at, records)` of each batch, oldest first.
    outstanding: VecDeque<(u64, Instant, u64)>,
    /// Production-to-commit latency of each committed record, in microseconds.
    pub(super) histogram: Histogram<u64>,
}

impl Latencies {
    pub(super) fn new() -> Self {
        Self {
            outstanding: VecDeque::new(),
            // One microsecond to one hour, three significant digits.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("the bounds are valid"),
        }
    }

    /// Records produced but never committed.
    pub(super) fn uncommitted(&self) -> u64 {
        self.outstanding.iter().map(|b| b.2).sum()
    }

    /// `n` records up to sequence number `seq` (counted from 1 over the run) were produced `at`.
    pub(super) fn produced(&mut self, seq: u64, at: Instant, n: u64) {
        self.outstanding.push_back((seq, at, n));
    }

    /// Records up to sequence number `seq` are covered by a commit made `now`.
    pub(super) fn committed_through(&mut self, seq: u64, now: Instant) {
        while let Some(&(last, at, n)) = self.outstanding.front() {
            if last > seq {
                break;
            }
            let micros = now.duration_since(at).as_micros().max(1);
            self.histogram
                .saturating_record_n(u64::try_from(micros).unwrap_or(u64::MAX), n);
            self.outstanding.pop_front();
        }
    }
}

/// The records of one scenario; a run is reproducible given the same seed.
struct Generator {
    scenario: Scenario,
    rng: fastrand::Rng,
    keys: usize,
    /// Cumulative Zipf weights of the keys (clickstream only).
    zipf: Vec<f64>,
    /// The last value per key of a random walk (ticker prices, car temperatures).
    walk: Vec<f64>,
    record_bytes: usize,
    line: String,
}

impl Generator {
    fn new(o: &LoadOptions) -> Self {
        let mut rng = fastrand::Rng::with_seed(o.seed);
        let keys = o.keys.unwrap_or(o.scenario.default_keys()).max(1);
        let zipf = if o.scenario == Scenario::Clickstream {
            let mut total = 0.0;
            (1..=keys)
                .map(|k| {
                    total += 1.0 / (k as f64).powf(ZIPF_EXPONENT);
                    total
                })
                .collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        let walk = (0..keys).map(|_| 20.0 + rng.f64() * 80.0).collect();
        Self {
            scenario: o.scenario,
            rng,
            keys,
            zipf,
            walk,
            record_bytes: o.record_bytes.unwrap_or(0),
            line: String::with_capacity(256),
        }
    }

    /// A key index: uniform, or Zipf-skewed for the clickstream.
    fn key(&mut self) -> usize {
        match self.zipf.last() {
            Some(&total) => {
                let u = self.rng.f64() * total;
                self.zipf.partition_point(|&c| c < u).min(self.keys - 1)
            }
            None => self.rng.usize(..self.keys),
        }
    }

    /// One record with event time `t` (epoch milliseconds), as a JSON object.
    fn record(&mut self, t: i64) -> &str {
        let k = self.key();
        let ts = chrono::DateTime::from_timestamp_millis(t)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.line.clear();
        let step = (self.rng.f64() - 0.5) * 2.0;
        self.walk[k] = (self.walk[k] + step).clamp(1.0, 1000.0);
        let v = (self.walk[k] * 100.0).round() / 100.0;
        // Writing to a String cannot fail.
        let _ = match self.scenario {
            Scenario::Ticker => write!(
                self.line,
                r#"{{"ticker_symbol":"T{k:03}","sector":"{}","change":{:.2},"price":{v},"event_time":"{ts}"}}"#,
                SECTORS[k % SECTORS.len()],
                step
            ),
            Scenario::Car => write!(
                self.line,
                r#"{{"car":"car-{k}","carid":{k},"engine_temp":{v},"speed":{:.1},"long":{:.5},"lat":{:.5},"event_time":"{ts}"}}"#,
                self.rng.f64() * 140.0,
                -122.4 + (k % 100) as f64 * 0.01 + step * 0.001,
                47.6 + (k / 100 % 100) as f64 * 0.01 + step * 0.001,
            ),
            Scenario::Clickstream => write!(
                self.line,
                r#"{{"user_id":"u{k}","page":"{}","action":"{}","latency_ms":{},"event_time":"{ts}"}}"#,
                PAGES[self.rng.usize(..PAGES.len())],
                ACTIONS[self.rng.usize(..ACTIONS.len())],
                self.rng.u32(5..900),
            ),
        };
        if self.line.len() < self.record_bytes {
            // Padding to the requested size, as a member the queries do not read.
            self.line.pop();
            self.line.push_str(r#","pad":""#);
            let pad = self.record_bytes.saturating_sub(self.line.len() + 2);
            self.line.extend(std::iter::repeat_n('x', pad));
            self.line.push_str("\"}");
        }
        &self.line
    }
}

/// Exponent of the clickstream's Zipf distribution of users.
const ZIPF_EXPONENT: f64 = 1.1;

/// The benchmark's source: one partition of generated records.
pub(super) struct LoadSource {
    generator: Generator,
    options: LoadOptions,
    produced: u64,
    started: Option<Instant>,
    /// Event time of the first record.
    epoch_ms: i64,
    declared: bool,
    latencies: Arc<Mutex<Latencies>>,
}

impl LoadSource {
    pub(super) fn new(options: LoadOptions, latencies: Arc<Mutex<Latencies>>) -> Result<Self> {
        if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(Error::config("bench.rate", "the rate must be above zero"));
        }
        if !(options.event_rate > 0.0 && options.event_rate.is_finite()) {
            return Err(Error::config(
                "bench.event_rate",
                "the event rate must be above zero",
            ));
        }
        if !(0.0..=1.0).contains(&options.out_of_order) {
            return Err(Error::config(
                "bench.out_of_order",
                "the out-of-order fraction is between 0 and 1",
            ));
        }
        Ok(Self {
            generator: Generator::new(&options),
            options,
            produced: 0,
            started: None,
            epoch_ms: now_ms(),
            declared: false,
            latencies,
        })
    }

    /// How many records may be produced now: the rest of the limit, no more than the rate allows
    /// by now, `None` once the run is over.
    async fn due(&mut self) -> Option<usize> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if self
            .options
            .duration
            .is_some_and(|d| started.elapsed() >= d)
        {
            return None;
        }
        let remaining = self
            .options
            .records
            .map_or(u64::MAX, |l| l.saturating_sub(self.produced));
        if remaining == 0 {
            return None;
        }
        let n = MAX_CHUNK.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        Some(match self.options.rate {
            Some(rate) => paced(rate, started, self.produced, n).await,
            None => n,
        })
    }

    /// The event time of record `i`: the wall clock when a rate is set, else a clock advancing at
    /// the event rate; an out-of-order record is set back by up to the lateness.
    fn event_time(&mut self, i: u64) -> i64 {
        let t = match self.options.rate {
            Some(_) => now_ms(),
            None => self.epoch_ms + (i as f64 * 1000.0 / self.options.event_rate) as i64,
        };
        let o = &self.options;
        if o.out_of_order > 0.0 && self.generator.rng.f64() < o.out_of_order {
            let back = (self.generator.rng.f64() * o.lateness.as_millis() as f64) as i64;
            return t - back;
        }
        t
    }

    fn fill(&mut self, n: usize) -> SourceBatch {
        let mut buf = BytesMut::with_capacity(n * (self.generator.record_bytes.max(96) + 32));
        let mut ends = Vec::with_capacity(n);
        let wall = now_ms();
        for _ in 0..n {
            let t = self.event_time(self.produced);
            buf.put_slice(self.generator.record(t).as_bytes());
            ends.push(buf.len());
            self.produced += 1;
        }
        let buf = buf.freeze();
        let mut start = 0;
        let records = ends
            .into_iter()
            .map(|end| {
                let r = Record::new(buf.slice(start..end), wall);
                start = end;
                r
            })
            .collect();
        let mut latencies = self.latencies.lock().expect("latencies lock");
        latencies.produced(self.produced, Instant::now(), n as u64);
        SourceBatch::new(
            records,
            Position::single(PARTITION, self.produced.to_string()),
        )
    }
}

impl std::fmt::Debug for LoadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadSource")
            .field("scenario", &self.options.scenario)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Source for LoadSource {
    fn name(&self) -> &str {
        "bench load"
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        let Some(n) = self.due().await else {
            return Ok(None);
        };
        let batch = self.fill(n);
        if !std::mem::replace(&mut self.declared, true) {
            return Ok(Some(
                batch.with_partitions([PartitionEvent::declared(DEFAULT_PARTITION)]),
            ));
        }
        Ok(Some(batch))
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        if let Some(seq) = position.get(PARTITION).and_then(|s| s.parse().ok()) {
            let mut latencies = self.latencies.lock().expect("latencies lock");
            latencies.committed_through(seq, Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn options(scenario: Scenario) -> LoadOptions {
        LoadOptions {
            scenario,
            records: Some(5000),
            ..LoadOptions::default()
        }
    }

    #[tokio::test]
    async fn every_scenario_writes_json_with_its_documented_members() {
        for (scenario, members) in [
            (
                Scenario::Ticker,
                &["ticker_symbol", "sector", "change", "price", "event_time"][..],
            ),
            (
                Scenario::Car,
                &[
                    "car",
                    "carid",
                    "engine_temp",
                    "speed",
                    "long",
                    "lat",
                    "event_time",
                ][..],
            ),
            (
                Scenario::Clickstream,
                &["user_id", "page", "action", "latency_ms", "event_time"][..],
            ),
        ] {
            let mut s =
                LoadSource::new(options(scenario), Arc::new(Mutex::new(Latencies::new()))).unwrap();
            let batch = s.next_batch().await.unwrap().unwrap();
            for r in &batch.records {
                let v: serde_json::Value = serde_json::from_slice(r.payload()).unwrap();
                for m in members {
                    assert!(v.get(m).is_some(), "{scenario:?}: no {m} in {v}");
                }
            }
        }
    }

    #[tokio::test]
    async fn clickstream_keys_are_skewed_and_records_padded_to_size() {
        let mut o = options(Scenario::Clickstream);
        o.keys = Some(1000);
        o.record_bytes = Some(300);
        let mut s = LoadSource::new(o, Arc::new(Mutex::new(Latencies::new()))).unwrap();
        let mut counts = std::collections::HashMap::<String, usize>::new();
        let mut seen = 0;
        while let Some(b) = s.next_batch().await.unwrap() {
            for r in &b.records {
                assert_eq!(r.payload().len(), 300);
                let v: serde_json::Value = serde_json::from_slice(r.payload()).unwrap();
                *counts
                    .entry(v["user_id"].as_str().unwrap().into())
                    .or_default() += 1;
                seen += 1;
            }
        }
        assert_eq!(seen, 5000);
        // Zipf(1.1) over 1,000 keys: the first key alone draws about a sixth of the records,
        // uniform keys would give it 5.
        let top = counts.get("u0").copied().unwrap_or(0);
        assert!(top > 500, "u0 drew {top} of 5000");
    }

    #[tokio::test]
    async fn out_of_order_records_are_set_back_within_the_lateness() {
        let mut o = options(Scenario::Ticker);
        o.out_of_order = 0.5;
        o.lateness = Duration::from_secs(2);
        let mut s = LoadSource::new(o, Arc::new(Mutex::new(Latencies::new()))).unwrap();
        let batch = s.next_batch().await.unwrap().unwrap();
        let times: Vec<i64> = batch
            .records
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(r.payload()).unwrap();
                chrono::DateTime::parse_from_rfc3339(v["event_time"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            })
            .collect();
        let mut max = i64::MIN;
        let mut back = 0;
        for t in times {
            if t < max {
                back += 1;
                assert!(max - t <= 2000, "set back {} ms", max - t);
            }
            max = max.max(t);
        }
        assert!(back > 0, "no record out of order");
    }

    #[test]
    fn a_commit_records_the_latency_of_every_batch_it_covers() {
        let mut l = Latencies::new();
        let t0 = Instant::now();
        l.outstanding.push_back((10, t0, 10));
        l.outstanding.push_back((30, t0, 20));
        l.committed_through(10, t0 + Duration::from_millis(5));
        assert_eq!(l.histogram.len(), 10);
        assert_eq!(l.uncommitted(), 20);
        l.committed_through(30, t0 + Duration::from_millis(50));
        assert_eq!(l.histogram.len(), 30);
        assert_eq!(l.uncommitted(), 0);
        assert!(l.histogram.value_at_quantile(1.0) >= 49_000);
    }
}
