//! In-memory and discarding sinks, for embedding, tests and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;

use super::{OutputBatch, OutputData, Sink};
use crate::Result;

#[derive(Debug, Default)]
struct Collected {
    batches: Vec<RecordBatch>,
    records: Vec<Bytes>,
}

/// Keeps every batch it receives in memory; read them through a [`MemorySinkHandle`].
#[derive(Debug, Default)]
pub struct MemorySink {
    collected: Arc<Mutex<Collected>>,
}

/// A handle on what a [`MemorySink`] has received, usable while the pipeline runs and after.
#[derive(Debug, Clone)]
pub struct MemorySinkHandle {
    collected: Arc<Mutex<Collected>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to read what the sink receives.
    pub fn handle(&self) -> MemorySinkHandle {
        MemorySinkHandle {
            collected: Arc::clone(&self.collected),
        }
    }
}

impl MemorySinkHandle {
    /// The row batches received so far.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.lock().batches.clone()
    }

    /// The encoded records received so far.
    pub fn records(&self) -> Vec<Bytes> {
        self.lock().records.clone()
    }

    /// Number of rows received so far.
    pub fn num_rows(&self) -> usize {
        self.lock().batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        // A panic while holding the lock leaves plain data behind; it is still readable.
        self.collected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        {
            let mut c = self
                .collected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match batch.data {
                OutputData::Rows(b) => c.batches.push(b),
                OutputData::Encoded(r) => c.records.extend(r),
            }
        }
        batch.ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Discards everything and acknowledges it at once, counting rows: for benchmarks.
#[derive(Debug, Default)]
pub struct NullSink {
    rows: Arc<AtomicU64>,
}

impl NullSink {
    /// A new sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter of the rows discarded so far.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rows)
    }
}

#[async_trait]
impl Sink for NullSink {
    fn name(&self) -> &str {
        "null"
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        self.rows
            .fetch_add(batch.data.len() as u64, Ordering::Relaxed);
        batch.ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
