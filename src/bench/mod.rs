//! `rivulet bench`: what a pipeline costs, measured in-process on synthetic load.
//!
//! A benchmark runs a query (or a whole pipeline file) over one of the built-in scenarios — the
//! stock-ticker stream, the original solution's car telemetry, a clickstream with Zipf-skewed users
//! — at a rate or as fast as the pipeline takes it, and reports throughput, the latency from a
//! record's production to the commit that covers it (so a windowed row counts until its window's
//! output is stored), CPU time per million records and the process's peak resident memory.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rivulet::Result<()> {
//! use rivulet::bench::{Bench, LoadOptions, Scenario};
//!
//! let summary = Bench::new(LoadOptions {
//!     scenario: Scenario::Car,
//!     records: Some(20_000),
//!     ..LoadOptions::default()
//! })
//! .sql("SELECT car, MAX(engine_temp) AS hottest FROM source \
//!       GROUP BY car, TUMBLE(event_time, INTERVAL '1' SECOND)")
//! .run()
//! .await?;
//! assert_eq!(summary.records, 20_000);
//! assert!(summary.latency_ms.p50 <= summary.latency_ms.p99);
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::PipelineMetrics;
use crate::pipeline::Pipeline;
use crate::sink::NullSink;
use crate::{Error, PipelineConfig, Result};

#[cfg(feature = "aws")]
mod kinesis;
mod load;

#[cfg(feature = "aws")]
pub use kinesis::KinesisLoad;
use load::{Latencies, LoadSource};

/// The built-in load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Scenario {
    /// The stock-ticker stream of the Kinesis Data Analytics demo: `ticker_symbol`, `sector`,
    /// `change`, `price`, `event_time` (100 tickers by default).
    #[default]
    Ticker,
    /// The car telemetry of the original solution: `car`, `carid`, `engine_temp`, `speed`, `long`,
    /// `lat`, `event_time` (1,000 cars by default).
    Car,
    /// A clickstream: `user_id` (Zipf-skewed, exponent 1.1), `page`, `action`, `latency_ms`,
    /// `event_time` (100,000 users by default).
    Clickstream,
}

impl Scenario {
    /// Every scenario, by name.
    pub const ALL: [(&'static str, Scenario); 3] = [
        ("ticker", Scenario::Ticker),
        ("car", Scenario::Car),
        ("clickstream", Scenario::Clickstream),
    ];

    fn default_keys(self) -> usize {
        match self {
            Self::Ticker => 100,
            Self::Car => 1000,
            Self::Clickstream => 100_000,
        }
    }

    /// The query run when none is given: a 10-second tumbling window per key, as the reference
    /// streaming query of the benchmarks is.
    pub fn default_sql(self) -> &'static str {
        match self {
            Self::Ticker => {
                "SELECT ticker_symbol, window_start, COUNT(*) AS n, AVG(price) AS avg_price, \
                 MIN(price) AS min_price, MAX(price) AS max_price FROM source \
                 GROUP BY ticker_symbol, TUMBLE(event_time, INTERVAL '10' SECOND)"
            }
            Self::Car => {
                "SELECT car, window_start, COUNT(*) AS n, AVG(speed) AS avg_speed, \
                 MAX(engine_temp) AS max_engine_temp FROM source \
                 GROUP BY car, TUMBLE(event_time, INTERVAL '10' SECOND)"
            }
            Self::Clickstream => {
                "SELECT user_id, window_start, COUNT(*) AS events, \
                 SUM(CASE WHEN action = 'buy' THEN 1 ELSE 0 END) AS buys FROM source \
                 GROUP BY user_id, TUMBLE(event_time, INTERVAL '10' SECOND)"
            }
        }
    }
}

/// The load a benchmark produces.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// What the records are (default: the ticker stream).
    pub scenario: Scenario,
    /// Records per second; `None` (the default) produces as fast as the pipeline takes them.
    pub rate: Option<f64>,
    /// Stop after this many records (default: 1,000,000 when no duration is given).
    pub records: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Distinct keys (tickers, cars, users); `None` is the scenario's default.
    pub keys: Option<usize>,
    /// Pad each record to at least this many bytes.
    pub record_bytes: Option<usize>,
    /// Fraction of records whose event time is set back (0 to 1; default 0).
    pub out_of_order: f64,
    /// How far back an out-of-order record is set, at most (default 0). It is also the query's
    /// allowed lateness unless [`Bench::allowed_lateness`] says otherwise.
    pub lateness: Duration,
    /// Without a rate, how many records make one second of event time (default 10,000, the
    /// reference input's 0.1 ms per record). With a rate, event time is the wall clock.
    pub event_rate: f64,
    /// Seed of the generator (default 42): the same seed gives the same records.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            scenario: Scenario::Ticker,
            rate: None,
            records: None,
            duration: None,
            keys: None,
            record_bytes: None,
            out_of_order: 0.0,
            lateness: Duration::ZERO,
            event_rate: 10_000.0,
            seed: 42,
        }
    }
}

/// A benchmark: load, and the query or pipeline file it runs through.
#[derive(Debug, Clone)]
pub struct Bench {
    load: LoadOptions,
    allowed_lateness: Option<Duration>,
    sql: Option<String>,
    config: Option<PipelineConfig>,
    #[cfg(feature = "aws")]
    kinesis: Option<KinesisLoad>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

/// What a benchmark measured; its JSON form is `rivulet bench --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSummary {
    /// The load's scenario.
    pub scenario: Scenario,
    /// The query, or the pipeline file's name.
    pub query: String,
    /// Records produced and read.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Rows the query produced.
    pub rows_out: u64,
    /// Records and rows sent to the error output (late rows among them).
    pub errors: u64,
    /// Rows that arrived for a window already emitted.
    pub late: u64,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Production-to-commit latency of the records.
    pub latency_ms: Percentiles,
    /// Records whose latency was measured (those the run committed).
    pub latency_records: u64,
    /// Records produced that no commit covered when the run ended (0 when every output was
    /// stored).
    pub uncommitted: u64,
    /// CPU time of the process (user and system), in seconds; the generator's share included.
    pub cpu_s: f64,
    /// CPU seconds per million records.
    pub cpu_s_per_million: f64,
    /// Peak resident memory of the process, in MiB.
    pub peak_rss_mib: f64,
    /// The rivulet version that ran.
    pub version: String,
    /// The Kinesis stream the load went through (`rivulet bench --kinesis`), if any: then
    /// latency runs from a record's arrival in the stream to the commit that covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinesis_stream: Option<String>,
}

impl BenchSummary {
    /// Reads a summary that `rivulet bench --json` wrote.
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::config(
                "bench.compare",
                format!(
                    "{} is not a `rivulet bench --json` summary: {e}",
                    path.display()
                ),
            )
        })
    }

    /// The summary as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary is plain data")
    }
}

impl Bench {
    /// A benchmark of the load's scenario through its default query into a null sink.
    pub fn new(load: LoadOptions) -> Self {
        Self {
            load,
            allowed_lateness: None,
            sql: None,
            config: None,
            #[cfg(feature = "aws")]
            kinesis: None,
        }
    }

    /// Produces the load into this Kinesis stream and reads it back with the Kinesis source,
    /// for figures that include the source (feature `aws`).
    #[cfg(feature = "aws")]
    pub fn kinesis(mut self, target: KinesisLoad) -> Self {
        self.kinesis = Some(target);
        self
    }

    /// The query's allowed lateness (default: the load's [`LoadOptions::lateness`], so that no
    /// out-of-order record is late); records set back further are late and go to the error
    /// output.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = Some(lateness);
        self
    }

    /// The query to run (default: [`Scenario::default_sql`]); the output goes to a null sink.
    pub fn sql(mut self, sql: impl Into<String>) -> Self {
        self.sql = Some(sql.into());
        self
    }

    /// Runs this pipeline file with the load in place of its source (its format must be JSON, its
    /// event-time member `event_time`); its sinks are its own.
    pub fn pipeline(mut self, config: PipelineConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Runs the benchmark. `progress` is called about five times a second with the live counters,
    /// for a progress display.
    pub async fn run_with_progress(
        self,
        progress: impl Fn(&PipelineMetrics) + Send + 'static,
    ) -> Result<BenchSummary> {
        let mut load = self.load.clone();
        if load.records.is_none() && load.duration.is_none() {
            load.records = Some(1_000_000);
        }
        let latencies = Arc::new(Mutex::new(Latencies::new()));
        #[cfg(feature = "aws")]
        let kinesis_stream = self.kinesis.as_ref().map(|k| k.stream().to_owned());
        #[cfg(not(feature = "aws"))]
        let kinesis_stream = None;
        let source: Box<dyn crate::Source> = match self.kinesis_source(&load, &latencies).await? {
            Some(s) => s,
            None => Box::new(LoadSource::new(load.clone(), Arc::clone(&latencies))?),
        };
        let (query, pipeline) = match self.config {
            Some(config) => (
                config.name().to_owned(),
                config.build_with_source(source).await?,
            ),
            None => {
                let sql = self
                    .sql
                    .unwrap_or_else(|| load.scenario.default_sql().to_owned());
                let pipeline = Pipeline::builder()
                    .boxed_source(source)
                    .sql(sql.clone())
                    .watermark(crate::WatermarkSettings {
                        allowed_lateness: self.allowed_lateness.unwrap_or(load.lateness),
                        ..Default::default()
                    })
                    .sink(NullSink::new())
                    .build()
                    .await?;
                (sql, pipeline)
            }
        };
        let metrics = pipeline.metrics();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                every.tick().await;
                progress(&metrics);
            }
        });
        let cpu_before = usage().map(|u| u.cpu_s);
        let report = pipeline.run().await;
        ticker.abort();
        let report = report?;
        let cpu_s = match (usage(), cpu_before) {
            (Some(after), Some(before)) => after.cpu_s - before,
            _ => 0.0,
        };
        let latencies = latencies
            .lock()
            .map_err(|_| Error::Pipeline("the benchmark's latency record was poisoned".into()))?;
        let m = report.metrics;
        let secs = report.elapsed.as_secs_f64().max(f64::EPSILON);
        let h = &latencies.histogram;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(BenchSummary {
            scenario: load.scenario,
            query,
            records: m.records_in,
            bytes: m.bytes_in,
            rows_out: m.rows_out,
            errors: m.records_error,
            late: m.rows_late,
            elapsed_s: secs,
            records_per_s: m.records_in as f64 / secs,
            mb_per_s: m.bytes_in as f64 / 1e6 / secs,
            latency_ms: Percentiles {
                p50: ms(0.5),
                p99: ms(0.99),
                p99_9: ms(0.999),
                max: h.max() as f64 / 1000.0,
            },
            latency_records: h.len(),
            uncommitted: latencies.uncommitted(),
            cpu_s,
            cpu_s_per_million: cpu_s / (m.records_in.max(1) as f64) * 1e6,
            peak_rss_mib: usage().map_or(0.0, |u| u.peak_rss_kib / 1024.0),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kinesis_stream,
        })
    }

    /// The Kinesis source with its producer started, when the load goes through a stream.
    async fn kinesis_source(
        &self,
        load: &LoadOptions,
        latencies: &Arc<Mutex<Latencies>>,
    ) -> Result<Option<Box<dyn crate::Source>>> {
        #[cfg(feature = "aws")]
        if let Some(target) = &self.kinesis {
            let source = kinesis::KinesisBenchSource::start(
                target.clone(),
                load.clone(),
                Arc::clone(latencies),
            )
            .await?;
            return Ok(Some(Box::new(source)));
        }
        let _ = (load, latencies);
        Ok(None)
    }

    /// Runs the benchmark.
    pub async fn run(self) -> Result<BenchSummary> {
        self.run_with_progress(|_| {}).await
    }
}

/// One line per measured figure: its value in `before`, in `after`, and the change, signed so
/// that `+` is better (more throughput, less latency, CPU and memory).
pub fn compare(before: &BenchSummary, after: &BenchSummary) -> Vec<String> {
    let rows: [(&str, f64, f64, bool); 9] = [
        ("records/s", before.records_per_s, after.records_per_s, true),
        ("MB/s", before.mb_per_s, after.mb_per_s, true),
        (
            "latency p50 (ms)",
            before.latency_ms.p50,
            after.latency_ms.p50,
            false,
        ),
        (
            "latency p99 (ms)",
            before.latency_ms.p99,
            after.latency_ms.p99,
            false,
        ),
        (
            "latency p99.9 (ms)",
            before.latency_ms.p99_9,
            after.latency_ms.p99_9,
            false,
        ),
        (
            "latency max (ms)",
            before.latency_ms.max,
            after.latency_ms.max,
            false,
        ),
        (
            "CPU s / M records",
            before.cpu_s_per_million,
            after.cpu_s_per_million,
            false,
        ),
        (
            "peak RSS (MiB)",
            before.peak_rss_mib,
            after.peak_rss_mib,
            false,
        ),
        ("errors", before.errors as f64, after.errors as f64, false),
    ];
    rows.iter()
        .map(|&(name, b, a, higher_is_better)| {
            let change = if b == 0.0 {
                if a == 0.0 {
                    "same".to_owned()
                } else {
                    "new".to_owned()
                }
            } else {
                let pct = (a - b) / b * 100.0;
                let better = if higher_is_better { pct } else { -pct };
                format!(
                    "{:+.1} % ({})",
                    pct,
                    if better >= 0.0 { "better" } else { "worse" }
                )
            };
            format!("{name:<20} {b:>14.3} → {a:>14.3}   {change}")
        })
        .collect()
}

/// CPU time and peak memory of this process.
struct Usage {
    cpu_s: f64,
    peak_rss_kib: f64,
}

#[cfg(unix)]
fn usage() -> Option<Usage> {
    // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // On Linux ru_maxrss survives exec: a process started by a large one (a harness, a JVM)
    // reports its parent's peak. VmHWM is this program image's own peak.
    let rss = match peak_rss_linux_kib() {
        Some(kib) => kib,
        // ru_maxrss is in KiB on Linux, in bytes on macOS.
        None if cfg!(target_os = "macos") => u.ru_maxrss as f64 / 1024.0,
        None => u.ru_maxrss as f64,
    };
    Some(Usage {
        cpu_s: secs(u.ru_utime) + secs(u.ru_stime),
        peak_rss_kib: rss,
    })
}

/// The peak resident memory of this program image (`VmHWM` of `/proc/self/status`), in KiB, where
/// there is one.
#[cfg(unix)]
fn peak_rss_linux_kib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_kib(&status)
}

/// `VmHWM` of a `/proc/<pid>/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(not(unix))]
fn usage() -> Option<Usage> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_read_from_vm_hwm() {
        let status =
            "Name:\trivulet\nVmPeak:\t  900000 kB\nVmHWM:\t   123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(123_456.0));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }
}
