//! Counters of a running pipeline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Live counters of a pipeline, readable while it runs.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    rows_out: AtomicU64,
    records_error: AtomicU64,
    records_dropped: AtomicU64,
    batches: AtomicU64,
    rows_stored: AtomicU64,
    rows_late: AtomicU64,
    window_states: AtomicU64,
    checkpoints: AtomicU64,
}

/// A snapshot of [`PipelineMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Records taken from the source.
    pub records_in: u64,
    /// Payload bytes taken from the source.
    pub bytes_in: u64,
    /// Rows the query produced (counted once, however many sinks receive them).
    pub rows_out: u64,
    /// Records and rows sent to the error output.
    pub records_error: u64,
    /// Records a record transform dropped on purpose.
    pub records_dropped: u64,
    /// Micro-batches processed.
    pub batches: u64,
    /// Rows handed to sinks, summed over sinks.
    pub rows_to_sinks: u64,
    /// Rows that arrived for a window already emitted (also counted in `records_error`).
    pub rows_late: u64,
    /// Live (window, key) states after the last micro-batch.
    pub window_states: u64,
    /// Checkpoints written to the checkpoint store.
    pub checkpoints: u64,
}

impl PipelineMetrics {
    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            records_error: self.records_error.load(Ordering::Relaxed),
            records_dropped: self.records_dropped.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            rows_to_sinks: self.rows_stored.load(Ordering::Relaxed),
            rows_late: self.rows_late.load(Ordering::Relaxed),
            window_states: self.window_states.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_in(&self, records: u64, bytes: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, rows: u64) {
        self.rows_out.fetch_add(rows, Ordering::Relaxed);
    }

    pub(crate) fn add_error(&self, n: u64) {
        self.records_error.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_dropped(&self, n: u64) {
        self.records_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_late(&self, n: u64) {
        self.rows_late.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_window_states(&self, n: u64) {
        self.window_states.store(n, Ordering::Relaxed);
    }

    pub(crate) fn add_batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_to_sink(&self, rows: u64) {
        self.rows_stored.fetch_add(rows, Ordering::Relaxed);
    }

    pub(crate) fn add_checkpoint(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
}

/// Health of one source partition (a Kinesis shard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionHealth {
    /// How far the reader is behind the newest record (Kinesis `MillisBehindLatest`), once known.
    pub millis_behind: Option<u64>,
    /// Records read (sub-records of aggregated records counted one by one).
    pub records: u64,
    /// Reads refused for exceeding a service limit (throttling), each retried after a back-off.
    pub throttles: u64,
    /// Read iterators renewed after expiring.
    pub renewals: u64,
    /// Other failed calls that were retried.
    pub retries: u64,
    /// Sub-records whose hash key lies outside the shard's range, sent to the error output (only
    /// with `filter_out_of_range_sub_records`; otherwise they are delivered and not counted here).
    pub out_of_range: u64,
    /// Read to its end (a closed shard after a split or merge).
    pub finished: bool,
    /// Reads wait: its event time runs ahead of the pipeline's watermark by more than
    /// `max_alignment_ms` (catch-up alignment).
    pub paused: bool,
    /// Times reads were paused for alignment.
    pub pauses: u64,
}

/// Per-partition health of a source, shared between the source's readers and whoever reports it.
#[derive(Debug, Default)]
pub struct SourceHealth {
    partitions: Mutex<BTreeMap<String, PartitionHealth>>,
}

impl SourceHealth {
    /// The health of every partition seen so far, by partition name.
    pub fn partitions(&self) -> BTreeMap<String, PartitionHealth> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes one partition's entry.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    pub(crate) fn update(&self, partition: &str, f: impl FnOnce(&mut PartitionHealth)) {
        let mut map = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(partition) {
            Some(h) => f(h),
            None => f(map.entry(partition.to_owned()).or_default()),
        }
    }

    /// A one-line summary: partitions being read, the largest lag, throttles and renewals.
    pub fn summary(&self) -> String {
        let map = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let active = map.values().filter(|h| !h.finished).count();
        let lag = map
            .values()
            .filter(|h| !h.finished)
            .filter_map(|h| h.millis_behind)
            .max();
        let throttles: u64 = map.values().map(|h| h.throttles).sum();
        let renewals: u64 = map.values().map(|h| h.renewals).sum();
        let retries: u64 = map.values().map(|h| h.retries).sum();
        let paused = map.values().filter(|h| h.paused).count();
        let lag = lag.map_or_else(|| "?".to_owned(), |l| format!("{l} ms"));
        format!(
            "shards {active} open/{} seen, lag {lag}, throttled {throttles}, renewed {renewals}, retried {retries}, paused for alignment {paused}",
            map.len()
        )
    }
}
