//! The pipeline runtime: source → decode → SQL → sinks, with an error output.
//!
//! Four kinds of task run concurrently, joined by bounded channels so that a slow sink slows the
//! source down instead of filling memory:
//!
//! ```text
//! source task ──chunks──▶ processing task ──batches──▶ one task per sink (and the error output)
//!      ▲                  (micro-batching,                         │
//!      └──── commits ◀── decode, SQL)  ◀──────── acknowledgements ─┘
//! ```
//!
//! The source task also tracks acknowledgements and calls [`Source::commit`] with the position up to
//! which every output has been stored.
//!
//! Where each part lives: `builder` puts a pipeline together; `commit` is the source task and
//! the only place a position is committed or a checkpoint written; `processing` is the processing
//! task; `sink_task` the sinks' tasks. This file holds the pipeline itself and how its tasks are
//! started and joined.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ack::{Ack, AckTracker, Commit, TrackerMsg, WindowSnapshot};
use crate::checkpoint::{sql_fingerprint, Checkpoint, CheckpointStore};
use crate::format::{
    infer_schema, Column, DecodeOutput, MetadataColumn, RecordDecoder, RecordFormat,
};
use crate::metrics::{MetricsSnapshot, PipelineMetrics, SourceHealth};
use crate::record::{now_ms, Position, Record, DESTINATION_STREAM, ERROR_STREAM, RAW_STREAM};
use crate::sink::{
    CheckpointRange, CheckpointRanges, ErrorOutput, ErrorRecord, ErrorStage, OutputBatch,
    OutputData, Sink,
};
use crate::source::{PartitionAlignment, PartitionEvent, Source, SourceBatch, DEFAULT_PARTITION};
use crate::sql::{SourceState, SqlFunctions, SqlOutput, SqlProgram, WatermarkSettings};
use crate::transform::{RecordTransform, Transformed};
use crate::{Error, Result};

mod builder;
mod commit;
mod observed;
mod processing;
mod sink_task;

use commit::{run_source, SourceTask};
use processing::{run_processing, Processing};
use sink_task::{run_sink, UnstoredErrors};

/// Each sink with the name of the stream it reads.
type StreamSinks = Vec<(Arc<str>, Box<dyn Sink>)>;

/// Source chunks buffered between the source and processing tasks.
const CHUNK_QUEUE: usize = 2;

/// How often a sink is asked to flush, busy or idle.
const SINK_FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// How often a pipeline with open windows re-checks its watermark while no records come.
const WINDOW_TICK: Duration = Duration::from_secs(1);

/// How long schema inference waits for a first record from an idle source.
const INFER_WAIT: Duration = Duration::from_secs(10);

/// Default time between checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// Longest accepted `max_latency` of a micro-batch.
const MAX_BATCH_LATENCY: Duration = Duration::from_secs(3600);

/// When micro-batches close and how much is buffered between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// A micro-batch closes once it holds this many records (default 8,192).
    pub max_rows: usize,
    /// … or once its first record has waited this long (default 200 ms).
    pub max_latency: Duration,
    /// Micro-batches queued per sink before the pipeline waits for it (default 4).
    pub sink_queue: usize,
}

/// Most micro-batch handles held for rows in open windows. Past it, the newest held batch is
/// merged with the next (they complete together), so neither the handles nor the tracker's
/// entries grow while a window stays open, as a session that keeps receiving rows does.
const MAX_HELD: usize = 32;

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 8192,
            max_latency: Duration::from_millis(200),
            sink_queue: 4,
        }
    }
}

/// Stops a running pipeline gracefully: the source stops, everything already read is processed,
/// and every sink is flushed.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Requests the shutdown. Returns at once; [`Pipeline::run`] returns when it is complete.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    /// Final counters.
    pub metrics: MetricsSnapshot,
    /// The last position committed to the source.
    pub committed: Position,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A streaming pipeline, built with [`Pipeline::builder`] and started with [`Pipeline::run`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> rivulet::Result<()> {
/// use rivulet::{GeneratorSource, MemorySink, Pipeline};
///
/// let sink = MemorySink::new();
/// let rows = sink.handle();
/// let report = Pipeline::builder()
///     .source(GeneratorSource::builder().with_limit(Some(1000)).build()?)
///     .sql("SELECT ticker_symbol, price FROM source WHERE sector = 'TECHNOLOGY'")
///     .sink(sink)
///     .build()
///     .await?
///     .run()
///     .await?;
/// assert_eq!(report.metrics.records_in, 1000);
/// assert_eq!(rows.num_rows() as u64, report.metrics.rows_out);
/// # Ok(()) }
/// ```
pub struct Pipeline {
    source: Box<dyn Source>,
    replay: Vec<SourceBatch>,
    transform: Option<Arc<dyn RecordTransform>>,
    decoder: RecordDecoder,
    program: SqlProgram,
    sinks: StreamSinks,
    error_sink: Box<dyn Sink>,
    raw_copy: Option<Box<dyn Sink>>,
    batch: BatchSettings,
    metrics: Arc<PipelineMetrics>,
    shutdown_tx: Arc<watch::Sender<bool>>,
    checkpoints: Option<Checkpoints>,
    /// Where the run starts: the restored checkpoint's position, or empty.
    resumed: Position,
    /// The checkpoint range the run starts in.
    first_range: CheckpointRange,
    /// Source partitions as the restored window state numbers them.
    partitions: Vec<String>,
    health: Option<Arc<SourceHealth>>,
    /// Catch-up alignment shared with the source, and how far ahead a partition may run.
    alignment: Option<(Arc<PartitionAlignment>, i64)>,
}

/// The checkpoint store of a pipeline and how often it is written.
#[derive(Debug, Clone)]
struct Checkpoints {
    store: Arc<dyn CheckpointStore>,
    interval: Duration,
    fingerprint: String,
    /// The input's columns when they were inferred, kept for restarts.
    input_columns: Vec<(String, arrow::datatypes::DataType)>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("source", &self.source.name())
            .field("sql", &self.program)
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|(stream, s)| format!("{stream} → {}", s.name()))
                    .collect::<Vec<_>>(),
            )
            .field("batch", &self.batch)
            .finish()
    }
}

/// Builder for [`Pipeline`].
pub struct PipelineBuilder {
    source: Option<Box<dyn Source>>,
    format: RecordFormat,
    columns: Option<Vec<Column>>,
    infer_sample: usize,
    rowtime_field: Option<String>,
    max_record_bytes: Option<usize>,
    sql: String,
    transform: Option<Arc<dyn RecordTransform>>,
    sinks: Vec<(String, Box<dyn Sink>)>,
    error_sink: Option<Box<dyn Sink>>,
    raw_copy: Option<Box<dyn Sink>>,
    batch: BatchSettings,
    watermark: WatermarkSettings,
    functions: SqlFunctions,
    checkpoint_store: Option<Arc<dyn CheckpointStore>>,
    checkpoint_interval: Duration,
    workers: Option<usize>,
    /// A push source's view of the error output, for its receipts.
    push_errors: Option<crate::source::PushErrors>,
}

impl fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("format", &self.format)
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A builder. Defaults: JSON records, schema inferred from the first 1,000 records,
    /// `SELECT * FROM source`, errors written as JSON lines to standard error.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder {
            source: None,
            format: RecordFormat::Json,
            columns: None,
            infer_sample: 1000,
            rowtime_field: None,
            max_record_bytes: None,
            sql: "SELECT * FROM source".into(),
            transform: None,
            sinks: Vec::new(),
            error_sink: None,
            raw_copy: None,
            batch: BatchSettings::default(),
            watermark: WatermarkSettings::default(),
            functions: SqlFunctions::default(),
            checkpoint_store: None,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            workers: None,
            push_errors: None,
        }
    }

    /// Live counters.
    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        Arc::clone(&self.metrics)
    }

    /// A handle that stops the pipeline gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: Arc::clone(&self.shutdown_tx),
        }
    }

    /// Schema of the rows of `DESTINATION_SQL_STREAM` (or of the last statement's stream when no
    /// statement is a bare `SELECT`).
    pub fn output_schema(&self) -> SchemaRef {
        self.program
            .stream_schema(DESTINATION_STREAM)
            .or_else(|| {
                self.program
                    .output_streams()
                    .last()
                    .map(|s| Arc::clone(&s.1))
            })
            .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()))
    }

    /// The planned SQL.
    pub fn program(&self) -> &SqlProgram {
        &self.program
    }

    /// The source's live per-partition health (per shard lag and throttling), when it has one.
    pub fn source_health(&self) -> Option<Arc<SourceHealth>> {
        self.health.clone()
    }

    /// The position the run resumes from: the checkpoint's, or empty when it starts afresh.
    pub fn resumed_from(&self) -> &Position {
        &self.resumed
    }

    /// Runs until a finite source ends or a shutdown is requested, then flushes every sink.
    pub async fn run(self) -> Result<PipelineReport> {
        let started = Instant::now();
        let Pipeline {
            source,
            replay,
            transform,
            decoder,
            program,
            sinks,
            error_sink,
            raw_copy,
            batch,
            metrics,
            shutdown_tx,
            checkpoints,
            resumed,
            first_range,
            partitions,
            health: _,
            alignment,
        } = self;
        let (ranges_tx, ranges) = CheckpointRanges::channel(first_range);
        let stateful = program.is_stateful();
        let (chunk_tx, chunk_rx) = mpsc::channel::<SourceBatch>(CHUNK_QUEUE);
        // Set when a finite source has ended (not when the pipeline is stopped).
        let input_ended = Arc::new(AtomicBool::new(false));
        let (tracker_tx, tracker_rx) = mpsc::unbounded_channel::<TrackerMsg>();
        let mut tasks = Tasks::new();

        let outputs = tasks.spawn_sinks(
            SinksToStart {
                sinks,
                raw_copy,
                error_sink,
            },
            &ranges,
            batch.sink_queue.max(1),
            &metrics,
        );
        tasks.spawn(run_processing(Processing {
            chunks: chunk_rx,
            tracker: tracker_tx,
            transform,
            processing_rowtime: decoder.processing_rowtime(),
            overlap: decoder.workers() > 1,
            in_flight: None,
            after: Vec::new(),
            decoder: Some(decoder),
            program,
            sinks: outputs.sinks,
            errors: outputs.errors,
            raw: outputs.raw,
            settings: batch,
            metrics: Arc::clone(&metrics),
            seq: 0,
            held: VecDeque::new(),
            partitions: partitions
                .into_iter()
                .zip(0u32..)
                .map(|(name, i)| (Arc::from(name), i))
                .collect(),
            input_ended: Arc::clone(&input_ended),
            snapshot_every: checkpoints
                .as_ref()
                .filter(|_| stateful)
                .map(|c| c.interval),
            last_snapshot: Instant::now(),
            alignment,
        }));
        let tracker = if stateful && checkpoints.is_some() {
            AckTracker::snapshots_only()
        } else {
            AckTracker::default()
        };
        tasks.spawn(run_source(SourceTask {
            source,
            replay,
            chunks: chunk_tx,
            tracker_rx,
            tracker: tracker.starting_at(resumed),
            shutdown: shutdown_tx.subscribe(),
            metrics: Arc::clone(&metrics),
            input_ended,
            checkpoints,
            ranges: ranges_tx,
        }));

        let committed = tasks.join(&shutdown_tx).await?;
        Ok(PipelineReport {
            metrics: metrics.snapshot(),
            committed,
            elapsed: started.elapsed(),
        })
    }
}

/// The sinks a run starts, each in a task of its own.
struct SinksToStart {
    sinks: StreamSinks,
    raw_copy: Option<Box<dyn Sink>>,
    error_sink: Box<dyn Sink>,
}

/// Where the processing task sends its output: one queue per sink.
struct SinkQueues {
    sinks: Vec<(Arc<str>, mpsc::Sender<OutputBatch>)>,
    raw: Option<mpsc::Sender<OutputBatch>>,
    errors: mpsc::Sender<OutputBatch>,
}

/// A run's tasks; each ends with the position it committed, if it commits.
struct Tasks(JoinSet<Result<Option<Position>>>);

impl Tasks {
    fn new() -> Self {
        Self(JoinSet::new())
    }

    fn spawn(
        &mut self,
        task: impl std::future::Future<Output = Result<Option<Position>>> + Send + 'static,
    ) {
        self.0.spawn(task);
    }

    /// Starts a task per sink, the raw-data copy and the error output, each behind a queue of
    /// `queue` batches. What a sink cannot store goes to the error output.
    fn spawn_sinks(
        &mut self,
        start: SinksToStart,
        ranges: &CheckpointRanges,
        queue: usize,
        metrics: &Arc<PipelineMetrics>,
    ) -> SinkQueues {
        let (error_tx, error_rx) = mpsc::channel(queue);
        let mut sinks = Vec::with_capacity(start.sinks.len());
        for (stream, mut sink) in start.sinks {
            sink.set_error_output(ErrorOutput::new(error_tx.clone()));
            sink.set_checkpoint_ranges(ranges.clone());
            let (tx, rx) = mpsc::channel(queue);
            sinks.push((stream, tx));
            self.spawn(run_sink(sink, rx, Arc::clone(metrics)));
        }
        let raw = start.raw_copy.map(|mut sink| {
            sink.set_error_output(ErrorOutput::new(error_tx.clone()));
            sink.set_checkpoint_ranges(ranges.clone());
            let (tx, rx) = mpsc::channel(queue);
            self.spawn(run_sink(sink, rx, Arc::new(PipelineMetrics::default())));
            tx
        });
        self.spawn_error_output(start.error_sink, error_rx, ranges, queue);
        SinkQueues {
            sinks,
            raw,
            errors: error_tx,
        }
    }

    /// The error output can fail to deliver too (an AWS sink out of attempts, a record over its
    /// limit). What it gives up on is shown on standard error, but standard error is not storage:
    /// those batches are not acknowledged, and the pipeline stops.
    fn spawn_error_output(
        &mut self,
        mut error_sink: Box<dyn Sink>,
        errors: mpsc::Receiver<OutputBatch>,
        ranges: &CheckpointRanges,
        queue: usize,
    ) {
        let (fallback_tx, fallback_rx) = mpsc::channel(queue);
        error_sink.set_error_output(ErrorOutput::new(fallback_tx));
        error_sink.set_checkpoint_ranges(ranges.clone());
        self.spawn(run_sink(
            Box::new(UnstoredErrors::new(error_sink.name())),
            fallback_rx,
            Arc::new(PipelineMetrics::default()),
        ));
        self.spawn(run_sink(
            error_sink,
            errors,
            Arc::new(PipelineMetrics::default()),
        ));
    }

    /// Waits for every task and returns the last committed position. The first task to fail
    /// (or panic) stops the source; the others drain and end as their channels close, and that
    /// first error is the run's.
    async fn join(mut self, shutdown: &watch::Sender<bool>) -> Result<Position> {
        let mut committed = Position::new();
        let mut first_error: Option<Error> = None;
        while let Some(joined) = self.0.join_next().await {
            let failed = match joined {
                Ok(Ok(Some(p))) => {
                    committed = p;
                    None
                }
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some(e),
                Err(join) => Some(Error::Pipeline(format!("a pipeline task panicked: {join}"))),
            };
            if let Some(e) = failed {
                if first_error.is_none() {
                    first_error = Some(e);
                    shutdown.send_replace(true);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(committed),
        }
    }
}
