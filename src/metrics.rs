//! Counters of a running pipeline.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a pipeline, readable while it runs.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    rows_out: AtomicU64,
    records_error: AtomicU64,
    batches: AtomicU64,
    rows_stored: AtomicU64,
    rows_late: AtomicU64,
    window_states: AtomicU64,
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
    /// Micro-batches processed.
    pub batches: u64,
    /// Rows handed to sinks, summed over sinks.
    pub rows_to_sinks: u64,
    /// Rows that arrived for a window already emitted (also counted in `records_error`).
    pub rows_late: u64,
    /// Live (window, key) states after the last micro-batch.
    pub window_states: u64,
}

impl PipelineMetrics {
    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            records_error: self.records_error.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            rows_to_sinks: self.rows_stored.load(Ordering::Relaxed),
            rows_late: self.rows_late.load(Ordering::Relaxed),
            window_states: self.window_states.load(Ordering::Relaxed),
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
}
