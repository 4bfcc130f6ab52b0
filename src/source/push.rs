//! The push source: records handed to a pipeline by the application that embeds it.
//!
//! [`PipelineBuilder::push_source`](crate::PipelineBuilder::push_source) gives the pipeline a
//! [`PushSource`] and the application a [`PushHandle`]. The two share a queue bounded by records
//! and by bytes; a push waits while the queue is full, so a pipeline that falls behind (a slow
//! sink) slows its producers down instead of growing memory.
//!
//! # Delivery
//!
//! Each record pushed gets the next number of the source's one partition (`push` unless
//! [`PushSourceOptions::partition`] names another), and the source's position is the number of the
//! last record it has handed to the pipeline. The pipeline commits a position once everything
//! derived from the records up to it is stored, in every sink and in the error output; that is
//! when [`PushHandle::push_acked`] resolves, with where the record went in the error output, if
//! anywhere.
//!
//! Pushed records exist only in memory: a record pushed but not yet committed when the process
//! dies is gone, and only its producer can send it again. An application that must not lose a
//! record pushes it with `push_acked` and keeps it until the receipt comes. With a checkpoint
//! store, a restarted pipeline restores its window state and numbers records on from the
//! checkpoint's position.
//!
//! # Ending
//!
//! The source ends when every handle is dropped or [`PushHandle::close`] is called: records
//! already pushed are processed and stored, then the pipeline's run returns. A graceful stop
//! ([`ShutdownHandle`](crate::ShutdownHandle)) does the same: pushes from then on fail, and what
//! was pushed before is processed and stored.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use async_trait::async_trait;
use tokio::sync::{oneshot, Notify};

use super::{PartitionEvent, Source, SourceBatch};
use crate::record::{Position, Record};
use crate::{Error, Result};

/// Default bound of the queue between the producers and the pipeline, in records.
pub const DEFAULT_PUSH_MAX_RECORDS: usize = 65_536;

/// Default bound of the queue between the producers and the pipeline, in payload bytes.
pub const DEFAULT_PUSH_MAX_BYTES: usize = 64 << 20;

/// How long an empty push source waits for records before it returns an empty batch (which keeps
/// commits and time-based batching moving).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Settings of a push source: how much the queue between the producers and the pipeline holds,
/// and the name of its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSourceOptions {
    max_records: usize,
    max_bytes: usize,
    partition: String,
}

impl Default for PushSourceOptions {
    fn default() -> Self {
        Self {
            max_records: DEFAULT_PUSH_MAX_RECORDS,
            max_bytes: DEFAULT_PUSH_MAX_BYTES,
            partition: "push".into(),
        }
    }
}

impl PushSourceOptions {
    /// The defaults: at most [`DEFAULT_PUSH_MAX_RECORDS`] records and [`DEFAULT_PUSH_MAX_BYTES`]
    /// payload bytes queued, partition `push`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Most records queued before a push waits (at least 1).
    pub fn max_records(mut self, records: usize) -> Self {
        self.max_records = records.max(1);
        self
    }

    /// Most payload bytes queued before a push waits. A record larger than this on its own is
    /// taken once the queue is empty, so it waits instead of failing.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The name of the source's partition: the `shardId` of its records in the error output and
    /// the key of its position in checkpoints (default `push`).
    pub fn partition(mut self, name: impl Into<String>) -> Self {
        self.partition = name.into();
        self
    }
}

/// What [`PushHandle::try_push`] did with a record.
#[derive(Debug)]
#[must_use]
pub enum TryPush {
    /// The record is queued.
    Accepted,
    /// The queue is full; the record is handed back.
    Full(Record),
}

/// Where a record pushed with [`PushHandle::push_acked`] went, once everything derived from it is
/// stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReceipt {
    /// The record's number in the source's partition (its `sequenceNumber` in the error output).
    pub sequence: u64,
    /// The rows of the error output that name this record: empty when it was processed without
    /// an error (its output, if any, is stored in every sink). The rows of stages `source`,
    /// `transform`, `decode` and `sql` name their record; a row a sink gave up on carries the
    /// output row it was, not the records it came from, and is not listed.
    pub errors: Vec<PushedError>,
}

impl PushReceipt {
    /// True when nothing of the record went to the error output.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One row of the error output about a pushed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedError {
    /// The stage that set it aside: `source`, `transform`, `decode`, `sql` or `sink`.
    pub stage: String,
    /// The error output's `errorCode` (`malformed`, `late`, `sql`, …).
    pub kind: String,
    /// The error output's `errorMessage`.
    pub reason: String,
    /// The SQL statement the row failed in, for stage `sql`.
    pub statement: Option<String>,
}

/// A record in the queue.
struct Queued {
    record: Record,
    /// What it counts for against `max_bytes`: its payload, or its share of an Arrow batch.
    bytes: usize,
    /// Its number in this run, from 1 (its number in the partition adds the resumed base).
    local: u64,
    /// Its receipt is waited for.
    acked: bool,
}

/// The queue between the handles and the source.
struct Queue {
    records: VecDeque<Queued>,
    bytes: usize,
    /// The number in this run the next record gets.
    next_local: u64,
    /// No more records are taken (every handle dropped, closed, stopping, or the source gone).
    closed: bool,
    /// The source is gone: nothing queued will be read.
    source_gone: bool,
}

/// Receipts waited for, by record number.
#[derive(Default)]
struct Waiting {
    slots: BTreeMap<u64, Slot>,
}

struct Slot {
    tx: oneshot::Sender<PushReceipt>,
    errors: Vec<PushedError>,
}

/// What the handles, the source and the error-output observer share.
struct Shared {
    queue: Mutex<Queue>,
    waiting: Mutex<Waiting>,
    /// How many receipts are waited for: the error-output observer looks only when some are.
    waiting_count: AtomicUsize,
    /// Room was made in the queue.
    room: Notify,
    /// Records arrived, or the queue closed.
    arrived: Notify,
    handles: AtomicUsize,
    /// The number of the last record of the checkpoint resumed from (0 without one): this run's
    /// record `n` is number `base + n` of the partition. Set before the first record is read.
    base: AtomicU64,
    max_records: usize,
    max_bytes: usize,
    partition: Arc<str>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn fits(&self, q: &Queue, records: usize, bytes: usize) -> bool {
        q.records.is_empty()
            || (q.records.len() + records <= self.max_records
                && q.bytes.saturating_add(bytes) <= self.max_bytes)
    }

    fn closed_error(&self, q: &Queue) -> Error {
        let why = if q.source_gone {
            "the pipeline has stopped"
        } else {
            "the source is closed (every handle dropped, close() called, or the pipeline stopping)"
        };
        Error::source(format!("push source {}", self.partition), why)
    }

    /// Queues `record` (the queue has room) and returns its number in this run.
    fn enqueue(&self, q: &mut Queue, record: Record, bytes: usize, acked: bool) -> u64 {
        let local = q.next_local;
        q.next_local += 1;
        q.bytes += bytes;
        q.records.push_back(Queued {
            record,
            bytes,
            local,
            acked,
        });
        local
    }

    fn close(&self) {
        lock(&self.queue).closed = true;
        self.arrived.notify_one();
        self.room.notify_waiters();
    }
}

/// The application's side of a push source: cloned into every task that produces records.
/// Dropping the last handle ends the source (what was pushed is still processed).
pub struct PushHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for PushHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushHandle")
            .field("partition", &self.shared.partition)
            .finish_non_exhaustive()
    }
}

impl Clone for PushHandle {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for PushHandle {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl PushHandle {
    /// Queues `record`, waiting while the queue is full. Fails once the source is closed.
    ///
    /// The record's payload is taken as it is (a `Bytes` handle, not copied); its arrival time is
    /// its `ROWTIME` unless the pipeline takes `ROWTIME` from a column; its partition key, if set,
    /// is kept for the SQL's metadata columns and the error output.
    pub async fn push(&self, record: Record) -> Result<()> {
        self.push_inner(record, false).await.map(|_| ())
    }

    /// Queues `records` in order, waiting for room as needed: a batch larger than the queue goes
    /// in as room is made. Fails once the source is closed; the records before the failure are
    /// queued.
    pub async fn push_batch(&self, records: impl IntoIterator<Item = Record>) -> Result<()> {
        self.push_weighed(records.into_iter().map(|r| {
            let bytes = r.payload().len();
            (r, bytes)
        }))
        .await
    }

    /// Queues the rows of an Arrow batch, each a record, without encoding them: the pipeline
    /// takes each input column from the batch's column of the same name, cast to the input's
    /// type (a column the batch lacks is NULL; a value that does not convert sends its row to the
    /// error output, shown as a JSON object). Each row arrives now (its `ROWTIME`, unless the
    /// pipeline takes `ROWTIME` from a column) and counts against `max_bytes` for its share of
    /// the batch's memory. Waits for room like [`push_batch`](Self::push_batch).
    ///
    /// Rows must come in a batch whose columns the pipeline knows: give it its columns, or let it
    /// infer them from the first batch pushed (its schema, as it is).
    pub async fn push_rows(&self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let share = batch.get_array_memory_size().div_ceil(n).max(1);
        let arrived = crate::record::now_ms();
        let batch = Arc::new(batch);
        self.push_weighed(
            (0..n).map(|row| (Record::arrow_row(Arc::clone(&batch), row, arrived), share)),
        )
        .await
    }

    async fn push_weighed(&self, records: impl Iterator<Item = (Record, usize)>) -> Result<()> {
        let mut records = records.peekable();
        while records.peek().is_some() {
            let notified = {
                let mut q = lock(&self.shared.queue);
                if q.closed {
                    return Err(self.shared.closed_error(&q));
                }
                let mut queued = false;
                while let Some((_, bytes)) = records.peek() {
                    if !self.shared.fits(&q, 1, *bytes) {
                        break;
                    }
                    let (record, bytes) = records.next().expect("peeked");
                    self.shared.enqueue(&mut q, record, bytes, false);
                    queued = true;
                }
                if queued {
                    self.shared.arrived.notify_one();
                }
                if records.peek().is_none() {
                    return Ok(());
                }
                let notified = self.shared.room.notified();
                drop(q);
                notified
            };
            notified.await;
        }
        Ok(())
    }

    /// Queues `record` if there is room, without waiting: a full queue hands the record back.
    /// Fails once the source is closed.
    pub fn try_push(&self, record: Record) -> Result<TryPush> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(self.shared.closed_error(&q));
        }
        let bytes = record.payload().len();
        if !self.shared.fits(&q, 1, bytes) {
            return Ok(TryPush::Full(record));
        }
        self.shared.enqueue(&mut q, record, bytes, false);
        drop(q);
        self.shared.arrived.notify_one();
        Ok(TryPush::Accepted)
    }

    /// Queues `record` like [`push`](Self::push), then waits until everything derived from it is
    /// stored: its output in every sink, or its rows in the error output, which the receipt
    /// lists. Fails when the pipeline stops before that (the record may or may not have been
    /// stored; push it again to be sure, and de-duplicate downstream).
    pub async fn push_acked(&self, record: Record) -> Result<PushReceipt> {
        let (local, rx) = self.push_inner(record, true).await?;
        let rx = rx.expect("an acknowledged push has a receipt");
        rx.await.map_err(|_| {
            let sequence = local + self.shared.base.load(Ordering::Acquire);
            Error::source(
                format!("push source {}", self.shared.partition),
                format!(
                    "the pipeline stopped before record {sequence} was stored; it was not \
                     acknowledged"
                ),
            )
        })
    }

    /// Ends the source for every handle: pushes from now on fail, and the pipeline processes what
    /// was pushed, stores it and ends.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Records queued and not yet taken by the pipeline.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).records.len()
    }

    async fn push_inner(
        &self,
        record: Record,
        acked: bool,
    ) -> Result<(u64, Option<oneshot::Receiver<PushReceipt>>)> {
        let bytes = record.payload().len();
        let mut record = Some(record);
        loop {
            let notified = {
                let mut q = lock(&self.shared.queue);
                if q.closed {
                    return Err(self.shared.closed_error(&q));
                }
                if self.shared.fits(&q, 1, bytes) {
                    let record = record.take().expect("pushed once");
                    let local = q.next_local;
                    // The slot goes in before the record, so no commit can pass it unseen.
                    let rx = acked.then(|| {
                        let (tx, rx) = oneshot::channel();
                        lock(&self.shared.waiting).slots.insert(
                            local,
                            Slot {
                                tx,
                                errors: Vec::new(),
                            },
                        );
                        self.shared.waiting_count.fetch_add(1, Ordering::AcqRel);
                        rx
                    });
                    self.shared.enqueue(&mut q, record, bytes, acked);
                    drop(q);
                    self.shared.arrived.notify_one();
                    return Ok((local, rx));
                }
                let notified = self.shared.room.notified();
                drop(q);
                notified
            };
            notified.await;
        }
    }
}

/// The pipeline's side of a push source (see [the module docs](self)); made by
/// [`PipelineBuilder::push_source`](crate::PipelineBuilder::push_source).
pub struct PushSource {
    shared: Arc<Shared>,
    name: String,
    max_batch: usize,
    declared: bool,
    caught_up: bool,
    /// The position after the last record handed to the pipeline (empty before the first).
    position: Position,
}

impl fmt::Debug for PushSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSource")
            .field("partition", &self.shared.partition)
            .field("max_records", &self.shared.max_records)
            .field("max_bytes", &self.shared.max_bytes)
            .finish_non_exhaustive()
    }
}

impl PushSource {
    /// A push source and its first handle.
    pub(crate) fn new(options: PushSourceOptions) -> (Self, PushHandle) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                records: VecDeque::new(),
                bytes: 0,
                next_local: 1,
                closed: false,
                source_gone: false,
            }),
            waiting: Mutex::new(Waiting::default()),
            waiting_count: AtomicUsize::new(0),
            room: Notify::new(),
            arrived: Notify::new(),
            handles: AtomicUsize::new(1),
            base: AtomicU64::new(0),
            max_records: options.max_records,
            max_bytes: options.max_bytes,
            partition: Arc::from(options.partition.as_str()),
        });
        let source = Self {
            name: format!("push:{}", options.partition),
            shared: Arc::clone(&shared),
            // The pipeline sets its micro-batch size before the first read.
            max_batch: 8192,
            declared: false,
            caught_up: false,
            position: Position::new(),
        };
        (source, PushHandle { shared })
    }

    /// The observer the pipeline puts in front of its error output, so receipts can say where
    /// their records went.
    pub(crate) fn error_observer(&self) -> PushErrors {
        PushErrors {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Takes up to a micro-batch of queued records; returns them and the partition's number of the
    /// last.
    fn take(&self, q: &mut Queue) -> (Vec<Record>, u64) {
        let n = q.records.len().min(self.max_batch);
        let base = self.shared.base.load(Ordering::Acquire);
        let mut records = Vec::with_capacity(n);
        let mut bytes = 0;
        let mut last = 0;
        for queued in q.records.drain(..n) {
            bytes += queued.bytes;
            last = queued.local;
            let mut record = queued
                .record
                .with_shard_id(Arc::clone(&self.shared.partition));
            if queued.acked {
                // The error output names a record by shard and sequence number; only a record
                // whose receipt is waited for needs to be found there.
                record = record.with_sequence_number((base + queued.local).to_string());
            }
            records.push(record);
        }
        q.bytes -= bytes;
        (records, base + last)
    }
}

impl Drop for PushSource {
    fn drop(&mut self) {
        let mut q = lock(&self.shared.queue);
        q.closed = true;
        q.source_gone = true;
        // Nothing queued will be read: the records go, and with them every waiting receipt.
        q.records.clear();
        q.bytes = 0;
        drop(q);
        lock(&self.shared.waiting).slots.clear();
        self.shared.waiting_count.store(0, Ordering::Release);
        self.shared.room.notify_waiters();
    }
}

#[async_trait]
impl Source for PushSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        let partition = Arc::clone(&self.shared.partition);
        let mut events = Vec::new();
        if !self.declared {
            self.declared = true;
            events.push(PartitionEvent::declared(Arc::clone(&partition)));
        }
        let deadline = tokio::time::Instant::now() + IDLE_POLL;
        loop {
            let notified = {
                let mut q = lock(&self.shared.queue);
                if !q.records.is_empty() {
                    let (records, last) = self.take(&mut q);
                    let drained = q.records.is_empty();
                    drop(q);
                    self.shared.room.notify_waiters();
                    if self.caught_up {
                        self.caught_up = false;
                        events.push(PartitionEvent::Reading(Arc::clone(&partition)));
                    }
                    if drained {
                        // Everything pushed so far is in the pipeline: like a shard read to its
                        // tip, the partition may go idle and let the watermark pass.
                        self.caught_up = true;
                        events.push(PartitionEvent::CaughtUp(Arc::clone(&partition)));
                    }
                    self.position = Position::single(partition.as_ref(), last.to_string());
                    return Ok(Some(
                        SourceBatch::new(records, self.position.clone()).with_partitions(events),
                    ));
                }
                if q.closed {
                    return Ok(None);
                }
                let notified = self.shared.arrived.notified();
                drop(q);
                notified
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Some(
                    SourceBatch::new(Vec::new(), self.position.clone()).with_partitions(events),
                ));
            }
        }
    }

    fn set_max_batch_records(&mut self, max: usize) {
        self.max_batch = max.max(1);
    }

    async fn resume(&mut self, position: &Position) -> Result<()> {
        let Some(offset) = position.get(&self.shared.partition) else {
            // A checkpoint of another source, or of one that had not read yet.
            return Ok(());
        };
        let last: u64 = offset.parse().map_err(|_| {
            Error::source(
                &self.name,
                format!("the checkpoint's position {offset:?} is not a record number"),
            )
        })?;
        // Records are numbered on after the checkpoint's, so positions keep growing. The records
        // of the earlier run after it were in memory only and are not read again.
        // Records are numbered on after the checkpoint's, so positions keep growing. The records
        // of the earlier run after it were in memory only and are not read again.
        self.shared.base.store(last, Ordering::Release);
        self.position = position.clone();
        Ok(())
    }

    fn drain_on_shutdown(&mut self) -> bool {
        self.shared.close();
        true
    }

    async fn commit(&mut self, position: &Position) -> Result<()> {
        if self.shared.waiting_count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let base = self.shared.base.load(Ordering::Acquire);
        let Some(last) = position
            .get(&self.shared.partition)
            .and_then(|o| o.parse::<u64>().ok())
            .and_then(|n| n.checked_sub(base))
        else {
            return Ok(());
        };
        let done = {
            let mut waiting = lock(&self.shared.waiting);
            let later = waiting.slots.split_off(&last.saturating_add(1));
            std::mem::replace(&mut waiting.slots, later)
        };
        self.shared
            .waiting_count
            .fetch_sub(done.len(), Ordering::AcqRel);
        for (local, slot) in done {
            // A producer that stopped waiting has dropped its receiver; nothing to tell it.
            let _ = slot.tx.send(PushReceipt {
                sequence: base + local,
                errors: slot.errors,
            });
        }
        Ok(())
    }
}

/// Sits in front of the error output and notes, for each record whose receipt is waited for, the
/// error rows that name it.
pub(crate) struct PushErrors {
    shared: Arc<Shared>,
}

impl PushErrors {
    /// Notes the error rows of `batch` (the error output's schema) that name a waited-for record.
    pub(crate) fn observe(&self, batch: &RecordBatch) {
        if self.shared.waiting_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        };
        let (Some(shards), Some(sequences), Some(stages), Some(kinds), Some(reasons)) = (
            column("shardId"),
            column("sequenceNumber"),
            column("stage"),
            column("errorCode"),
            column("errorMessage"),
        ) else {
            return;
        };
        let statements = column("statement");
        let base = self.shared.base.load(Ordering::Acquire);
        let mut waiting = lock(&self.shared.waiting);
        for row in 0..batch.num_rows() {
            if shards.is_null(row) || sequences.is_null(row) {
                continue;
            }
            if shards.value(row) != self.shared.partition.as_ref() {
                continue;
            }
            let Some(local) = sequences
                .value(row)
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_sub(base))
            else {
                continue;
            };
            if let Some(slot) = waiting.slots.get_mut(&local) {
                slot.errors.push(PushedError {
                    stage: stages.value(row).to_owned(),
                    kind: kinds.value(row).to_owned(),
                    reason: reasons.value(row).to_owned(),
                    statement: statements
                        .filter(|s| !s.is_null(row))
                        .map(|s| s.value(row).to_owned()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(len: usize) -> Record {
        Record::new(Bytes::from(vec![b'x'; len]), 0)
    }

    fn accepted(t: TryPush) -> bool {
        matches!(t, TryPush::Accepted)
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_records_and_by_bytes() {
        let (mut source, handle) =
            PushSource::new(PushSourceOptions::new().max_records(3).max_bytes(100));
        assert!(accepted(handle.try_push(record(10)).unwrap()));
        assert!(accepted(handle.try_push(record(10)).unwrap()));
        assert!(accepted(handle.try_push(record(10)).unwrap()));
        assert!(
            !accepted(handle.try_push(record(1)).unwrap()),
            "a fourth record"
        );
        let batch = source.next_batch().await.unwrap().unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(batch.position.get("push"), Some("3"));
        // By bytes: 60 + 30 fit, 60 + 30 + 20 does not.
        assert!(accepted(handle.try_push(record(60)).unwrap()));
        assert!(accepted(handle.try_push(record(30)).unwrap()));
        match handle.try_push(record(20)).unwrap() {
            TryPush::Full(back) => assert_eq!(back.payload().len(), 20, "handed back whole"),
            TryPush::Accepted => panic!("over the byte bound"),
        }
        let batch = source.next_batch().await.unwrap().unwrap();
        assert_eq!(batch.records.len(), 2);
        // A record over the byte bound on its own goes in once the queue is empty.
        assert!(accepted(handle.try_push(record(500)).unwrap()));
        assert!(!accepted(handle.try_push(record(1)).unwrap()));
    }

    #[tokio::test]
    async fn a_push_waits_for_room_and_goes_in_once_the_pipeline_takes_records() {
        let (mut source, handle) = PushSource::new(PushSourceOptions::new().max_records(2));
        handle.push(record(1)).await.unwrap();
        handle.push(record(2)).await.unwrap();
        let waiting = handle.clone();
        let third = tokio::spawn(async move { waiting.push(record(3)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the push went in over the bound");
        let batch = source.next_batch().await.unwrap().unwrap();
        assert_eq!(batch.records.len(), 2);
        third.await.unwrap().unwrap();
        let batch = source.next_batch().await.unwrap().unwrap();
        assert_eq!(batch.records[0].payload().len(), 3);
        assert_eq!(batch.position.get("push"), Some("3"));
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_queue_goes_in_as_room_is_made() {
        let (mut source, handle) = PushSource::new(PushSourceOptions::new().max_records(4));
        let pushing = handle.clone();
        let batch = tokio::spawn(async move { pushing.push_batch((1..=10).map(record)).await });
        let mut lengths = Vec::new();
        while lengths.len() < 10 {
            let b = source.next_batch().await.unwrap().unwrap();
            assert!(b.records.len() <= 4, "{} records at once", b.records.len());
            lengths.extend(b.records.iter().map(|r| r.payload().len()));
        }
        batch.await.unwrap().unwrap();
        assert_eq!(lengths, (1..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_source_ends_once_every_handle_is_gone_after_what_was_pushed() {
        let (mut source, handle) = PushSource::new(PushSourceOptions::new());
        let second = handle.clone();
        handle.push(record(1)).await.unwrap();
        drop(handle);
        second.push(record(2)).await.unwrap();
        drop(second);
        let batch = source.next_batch().await.unwrap().unwrap();
        assert_eq!(batch.records.len(), 2);
        assert!(source.next_batch().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_idle_source_returns_empty_batches_at_its_last_position() {
        let (mut source, handle) = PushSource::new(PushSourceOptions::new());
        handle.push(record(1)).await.unwrap();
        let first = source.next_batch().await.unwrap().unwrap();
        assert!(first
            .partitions
            .contains(&PartitionEvent::CaughtUp(Arc::from("push"))));
        let idle = source.next_batch().await.unwrap().unwrap();
        assert!(idle.records.is_empty());
        assert_eq!(
            idle.position, first.position,
            "an idle batch keeps the position"
        );
        handle.push(record(1)).await.unwrap();
        let next = source.next_batch().await.unwrap().unwrap();
        assert!(next
            .partitions
            .contains(&PartitionEvent::Reading(Arc::from("push"))));
    }

    #[tokio::test]
    async fn receipts_come_at_the_commit_that_covers_them_with_their_errors() {
        let (mut source, handle) = PushSource::new(PushSourceOptions::new());
        let observer = source.error_observer();
        source
            .resume(&Position::single("push", "40"))
            .await
            .unwrap();
        let mut receipts = Vec::new();
        for _ in 0..3 {
            let h = handle.clone();
            receipts.push(tokio::spawn(async move { h.push_acked(record(1)).await }));
            tokio::task::yield_now().await;
        }
        while handle.queued() < 3 {
            tokio::task::yield_now().await;
        }
        let batch = source.next_batch().await.unwrap().unwrap();
        let numbers: Vec<_> = batch
            .records
            .iter()
            .map(|r| r.sequence_number().unwrap().to_owned())
            .collect();
        assert_eq!(numbers, ["41", "42", "43"]);
        // An error-output row naming the second record, as the error output's schema has it.
        let column = |v: &str| Arc::new(StringArray::from(vec![v])) as arrow::array::ArrayRef;
        let record = &batch.records[1];
        let errors = RecordBatch::try_from_iter([
            ("shardId", column(record.shard_id().unwrap())),
            ("sequenceNumber", column(record.sequence_number().unwrap())),
            ("stage", column("decode")),
            ("errorCode", column("malformed")),
            ("errorMessage", column("not JSON")),
        ])
        .unwrap();
        observer.observe(&errors);
        source
            .commit(&Position::single("push", "42"))
            .await
            .unwrap();
        let first = receipts.remove(0).await.unwrap().unwrap();
        let second = receipts.remove(0).await.unwrap().unwrap();
        assert_eq!((first.sequence, first.is_clean()), (41, true));
        assert_eq!(second.sequence, 42);
        assert_eq!(second.errors.len(), 1);
        assert_eq!(second.errors[0].kind, "malformed");
        assert_eq!(second.errors[0].stage, "decode");
        assert!(!receipts[0].is_finished(), "43 is not committed yet");
        // The pipeline goes away: the last receipt fails instead of waiting for ever.
        drop(source);
        let err = receipts.remove(0).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("record 43"), "{err}");
    }

    #[tokio::test]
    async fn a_checkpoint_position_that_is_not_a_number_is_refused() {
        let (mut source, _handle) = PushSource::new(PushSourceOptions::new());
        let err = source
            .resume(&Position::single("push", "shardId-0001"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a record number"), "{err}");
    }
}
