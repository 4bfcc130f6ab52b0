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
use crate::format::{infer_schema, Column, MetadataColumn, RecordDecoder, RecordFormat};
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
    sinks: Vec<(Arc<str>, Box<dyn Sink>)>,
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
        let mut tasks: JoinSet<Result<Option<Position>>> = JoinSet::new();

        let (error_tx, error_rx) = mpsc::channel(batch.sink_queue.max(1));
        let mut sink_txs = Vec::with_capacity(sinks.len());
        for (stream, mut sink) in sinks {
            sink.set_error_output(ErrorOutput::new(error_tx.clone()));
            sink.set_checkpoint_ranges(ranges.clone());
            let (tx, rx) = mpsc::channel(batch.sink_queue.max(1));
            sink_txs.push((stream, tx));
            tasks.spawn(run_sink(sink, rx, Arc::clone(&metrics)));
        }
        let raw_tx = raw_copy.map(|mut sink| {
            sink.set_error_output(ErrorOutput::new(error_tx.clone()));
            sink.set_checkpoint_ranges(ranges.clone());
            let (tx, rx) = mpsc::channel(batch.sink_queue.max(1));
            tasks.spawn(run_sink(sink, rx, Arc::new(PipelineMetrics::default())));
            tx
        });
        // The error output can fail to deliver too (an AWS sink out of attempts, a record over
        // its limit). What it gives up on is shown on standard error, but standard error is not
        // storage: those batches are not acknowledged, and the pipeline stops.
        let mut error_sink = error_sink;
        let (fallback_tx, fallback_rx) = mpsc::channel(batch.sink_queue.max(1));
        error_sink.set_error_output(ErrorOutput::new(fallback_tx));
        error_sink.set_checkpoint_ranges(ranges);
        tasks.spawn(run_sink(
            Box::new(UnstoredErrors::new(error_sink.name())),
            fallback_rx,
            Arc::new(PipelineMetrics::default()),
        ));
        tasks.spawn(run_sink(
            error_sink,
            error_rx,
            Arc::new(PipelineMetrics::default()),
        ));

        tasks.spawn(run_processing(Processing {
            chunks: chunk_rx,
            tracker: tracker_tx,
            transform,
            decoder,
            program,
            sinks: sink_txs,
            errors: error_tx,
            raw: raw_tx,
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

        let mut committed = Position::new();
        let mut first_error: Option<Error> = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Some(p))) => committed = p,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                        // Stop reading; the other tasks drain and end as their channels close.
                        shutdown_tx.send_replace(true);
                    }
                }
                Err(join) => {
                    if first_error.is_none() {
                        first_error =
                            Some(Error::Pipeline(format!("a pipeline task panicked: {join}")));
                        shutdown_tx.send_replace(true);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(PipelineReport {
            metrics: metrics.snapshot(),
            committed,
            elapsed: started.elapsed(),
        })
    }
}

impl PipelineBuilder {
    /// The source (required).
    pub fn source(mut self, source: impl Source + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The source, already boxed.
    pub fn boxed_source(mut self, source: Box<dyn Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// Payload format (default JSON).
    pub fn format(mut self, format: RecordFormat) -> Self {
        self.format = format;
        self
    }

    /// Input columns. Without them the schema is inferred from the first records (for CSV with a
    /// header, the first record is the header and is not processed as data).
    pub fn columns(mut self, columns: Vec<Column>) -> Self {
        self.columns = Some(columns);
        self
    }

    /// Number of records read to infer a schema (default 1,000).
    pub fn infer_sample(mut self, records: usize) -> Self {
        self.infer_sample = records.max(1);
        self
    }

    /// Takes `ROWTIME` from this input column instead of the arrival time;
    /// [`PROCESSING_ROWTIME`](crate::PROCESSING_ROWTIME) (`"processing"`) makes it the time a
    /// record entered the pipeline, as Kinesis Data Analytics did.
    pub fn rowtime_field(mut self, field: impl Into<String>) -> Self {
        self.rowtime_field = Some(field.into());
        self
    }

    /// Records larger than this go to the error output (default 10 MiB).
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = Some(bytes);
        self
    }

    /// The query (default `SELECT * FROM source`).
    pub fn sql(mut self, sql: impl Into<String>) -> Self {
        self.sql = sql.into();
        self
    }

    /// Applies `transform` to every record before it is decoded (see [`RecordTransform`]):
    /// records can be rewritten, dropped, or sent to the error output. Schema inference samples
    /// the transformed records.
    pub fn transform(mut self, transform: impl RecordTransform + 'static) -> Self {
        self.transform = Some(Arc::new(transform));
        self
    }

    /// [`Self::transform`] with a shared transform.
    pub fn shared_transform(mut self, transform: Arc<dyn RecordTransform>) -> Self {
        self.transform = Some(transform);
        self
    }

    /// Adds a sink for `DESTINATION_SQL_STREAM`, the rows of the SQL's `SELECT` statement.
    pub fn sink(self, sink: impl Sink + 'static) -> Self {
        self.boxed_sink_for(DESTINATION_STREAM, Box::new(sink))
    }

    /// Adds a sink, already boxed, for `DESTINATION_SQL_STREAM`.
    pub fn boxed_sink(self, sink: Box<dyn Sink>) -> Self {
        self.boxed_sink_for(DESTINATION_STREAM, sink)
    }

    /// Adds a sink for the rows of one stream (`INSERT INTO stream …` in the SQL).
    pub fn sink_for(self, stream: impl Into<String>, sink: impl Sink + 'static) -> Self {
        self.boxed_sink_for(stream, Box::new(sink))
    }

    /// Adds a sink, already boxed, for the rows of one stream.
    pub fn boxed_sink_for(mut self, stream: impl Into<String>, sink: Box<dyn Sink>) -> Self {
        self.sinks.push((stream.into(), sink));
        self
    }

    /// User-defined scalar and aggregate functions the SQL may call.
    pub fn functions(mut self, functions: SqlFunctions) -> Self {
        self.functions = functions;
        self
    }

    /// Event-time settings of windowed queries: allowed lateness and idle timeout.
    pub fn watermark(mut self, settings: WatermarkSettings) -> Self {
        self.watermark = settings;
        self
    }

    /// Where records that cannot be processed go (default: JSON lines on standard error).
    pub fn error_output(mut self, sink: impl Sink + 'static) -> Self {
        self.error_sink = Some(Box::new(sink));
        self
    }

    /// Copies every input record, as read and before any decoding, to `sink` (the original
    /// solution's raw-data delivery stream). A micro-batch counts as stored only once its copy is
    /// stored too, so the copy loses nothing either.
    pub fn raw_copy(mut self, sink: impl Sink + 'static) -> Self {
        self.raw_copy = Some(Box::new(sink));
        self
    }

    /// The raw-data copy's sink, already boxed.
    pub fn boxed_raw_copy(mut self, sink: Box<dyn Sink>) -> Self {
        self.raw_copy = Some(sink);
        self
    }

    /// The error output, already boxed.
    pub fn boxed_error_output(mut self, sink: Box<dyn Sink>) -> Self {
        self.error_sink = Some(sink);
        self
    }

    /// Micro-batch and buffering settings.
    pub fn batch_settings(mut self, settings: BatchSettings) -> Self {
        self.batch = settings;
        self
    }

    /// Keeps checkpoints in `store`: the pipeline resumes from the stored one when it starts, and
    /// writes a new one (source position plus window state) once everything before it is stored
    /// by every sink.
    pub fn checkpoint_store(mut self, store: impl CheckpointStore + 'static) -> Self {
        self.checkpoint_store = Some(Arc::new(store));
        self
    }

    /// The checkpoint store, already shared.
    pub fn shared_checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.checkpoint_store = Some(store);
        self
    }

    /// Time between checkpoints (default 10 s). Shorter means less input read again after a
    /// crash, at the cost of more writes (and window-state snapshots).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Checks the configuration, infers the schema when none was given (reading the sample from the
    /// source; those records are processed first when the pipeline runs) and plans the query.
    pub async fn build(self) -> Result<Pipeline> {
        let mut source = self
            .source
            .ok_or_else(|| Error::config("source", "a pipeline needs a source"))?;
        if self.sinks.is_empty() {
            return Err(Error::config("sinks", "a pipeline needs at least one sink"));
        }
        if self.batch.max_rows == 0 {
            return Err(Error::config("batch.max_rows", "must be at least 1"));
        }
        if self.batch.max_latency.is_zero() || self.batch.max_latency > MAX_BATCH_LATENCY {
            return Err(Error::config(
                "batch.max_latency_ms",
                format!("must be between 1 ms and {} s", MAX_BATCH_LATENCY.as_secs()),
            ));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(Error::config(
                "checkpoint.interval_ms",
                "must be at least 1 ms",
            ));
        }
        source.set_max_batch_records(self.batch.max_rows);
        source.set_max_record_bytes(
            self.max_record_bytes
                .unwrap_or(crate::format::DEFAULT_MAX_RECORD_BYTES),
        );
        // Before the first read, so that every shard reader the source starts can be paused.
        let alignment = Arc::new(PartitionAlignment::default());
        source.set_alignment(Arc::clone(&alignment));
        // The checkpoint decides where the source starts, so it is read before any record.
        let restored = match &self.checkpoint_store {
            Some(store) => store.load().await?,
            None => None,
        };
        if let Some(cp) = &restored {
            source.resume(&cp.position).await?;
            tracing::info!(
                source = source.name(),
                state_bytes = cp.state_bytes(),
                "resuming from the checkpoint taken at {} ms",
                cp.created_ms
            );
        }
        let mut replay = Vec::new();
        let kept_columns = restored
            .as_ref()
            .filter(|_| self.columns.is_none())
            .map(|c| &c.input_columns)
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.iter()
                    .map(|(name, t)| Column::new(name, t.clone()))
                    .collect::<Vec<_>>()
            });
        let inferred = self.columns.is_none();
        let columns = match self.columns.or(kept_columns) {
            Some(c) => c,
            None => {
                // Sample until enough records, the end of the source, or the source going idle
                // (an empty batch) once it has given something; an idle source that has given
                // nothing is waited for, up to INFER_WAIT.
                let mut sample: Vec<Record> = Vec::new();
                let started = Instant::now();
                while sample.len() < self.infer_sample {
                    match source.next_batch().await? {
                        Some(b) if b.records.is_empty() => {
                            // Kept: its position and partition events are the source's too.
                            replay.push(b);
                            if !sample.is_empty() || started.elapsed() >= INFER_WAIT {
                                break;
                            }
                        }
                        Some(b) => {
                            sample.extend(b.records.iter().cloned());
                            replay.push(b);
                        }
                        None => break,
                    }
                }
                if let RecordFormat::Csv(opts) = &self.format {
                    if opts.has_header {
                        // The header is schema, not data.
                        if let Some(first) = replay.iter_mut().find(|b| !b.records.is_empty()) {
                            first.records.remove(0);
                        }
                    }
                }
                let mut transform_failure = None;
                if let Some(t) = &self.transform {
                    // The decoder sees transformed records, so the schema comes from them: the
                    // sample is transformed batch by batch, as the pipeline will, and a batch
                    // the transform fails on is left out of it. A CSV header stays first.
                    let header = match &self.format {
                        RecordFormat::Csv(o) if o.has_header => sample.first().cloned(),
                        _ => None,
                    };
                    sample.clear();
                    sample.extend(header);
                    for b in &replay {
                        let (kept, failed) = apply_transform(t.as_ref(), b.records.clone())?;
                        if let Some(f) = failed.iter().find(|f| f.kind == "transform_failed") {
                            transform_failure = Some(f.reason.clone());
                        }
                        sample.extend(kept);
                    }
                }
                let sample_len = sample.len().min(self.infer_sample);
                if let Some(t) = &self.transform {
                    // Records the transform kept, the CSV header aside.
                    let kept = sample.len() - header_rows_of(&self.format, !sample.is_empty());
                    if kept == 0 && !replay.iter().all(|b| b.records.is_empty()) {
                        return Err(Error::Format(match transform_failure {
                            Some(reason) => format!(
                                "cannot infer a schema: the record transform failed on the \
                                 sampled records ({reason}); give the columns explicitly"
                            ),
                            None => format!(
                                "cannot infer a schema: the record transform `{}` dropped or \
                                 failed every sampled record; give the columns explicitly",
                                t.name()
                            ),
                        }));
                    }
                }
                if sample_len == 0 {
                    return Err(Error::Format(
                        "cannot infer a schema: the source yielded no records; give the columns explicitly".into(),
                    ));
                }
                let schema = infer_schema(&self.format, &sample[..sample_len])?;
                schema
                    .fields()
                    .iter()
                    .map(|f| Column::new(f.name(), f.data_type().clone()))
                    .collect()
            }
        };
        // Metadata columns (SHARD_ID, PARTITION_KEY, …) the SQL names, unless the input has a
        // column of that name itself.
        let metadata: Vec<MetadataColumn> = MetadataColumn::named_in(&self.sql)
            .into_iter()
            .filter(|m| !columns.iter().any(|c| c.name == m.name()))
            .collect();
        let make_decoder = |columns: Vec<Column>| {
            let mut decoder = RecordDecoder::builder(self.format.clone())
                .with_columns(columns)
                .with_metadata(metadata.clone())
                .with_rowtime_field(self.rowtime_field.clone())
                .with_batch_size(self.batch.max_rows);
            if let Some(max) = self.max_record_bytes {
                decoder = decoder.with_max_record_bytes(max);
            }
            decoder.build()
        };
        let mut decoder = make_decoder(columns.clone())?;
        let mut program = SqlProgram::with_functions(
            &self.sql,
            Arc::clone(decoder.schema()),
            self.watermark,
            &self.functions,
        )
        .await?;
        // Build only the columns the SQL reads: JSON members nobody selects are still checked
        // for well-formedness but never turned into arrays. (CSV keeps every column: its rows
        // are positional.)
        if matches!(self.format, RecordFormat::Json) {
            if let Some(used) = program.input_columns_used() {
                let names: Vec<String> = used
                    .iter()
                    .map(|&i| decoder.schema().field(i).name().clone())
                    .collect();
                let kept: Vec<Column> = columns
                    .iter()
                    .filter(|c| {
                        names.contains(&c.name)
                            || self.rowtime_field.as_deref() == Some(c.name.as_str())
                    })
                    .cloned()
                    .collect();
                if !kept.is_empty() && kept.len() < columns.len() {
                    decoder = make_decoder(kept)?;
                    program = SqlProgram::with_functions(
                        &self.sql,
                        Arc::clone(decoder.schema()),
                        self.watermark,
                        &self.functions,
                    )
                    .await?;
                }
            }
        }
        let fingerprint = sql_fingerprint(&self.sql);
        if let Some(cp) = &restored {
            if cp.state.iter().any(|s| !s.is_empty()) {
                if cp.sql_fingerprint != fingerprint || !program.is_stateful() {
                    return Err(Error::config(
                        "checkpoint",
                        "the checkpoint holds window state of a different SQL query; restore the \
                         query it was taken with, or remove the checkpoint to start over",
                    ));
                }
                program.restore(&cp.state)?;
            }
        }
        let streams = program.output_streams();
        let mut sinks = Vec::with_capacity(self.sinks.len());
        for (stream, sink) in self.sinks {
            let Some((name, _)) = streams.iter().find(|(n, _)| **n == *stream) else {
                let known: Vec<&str> = streams.iter().map(|(n, _)| &**n).collect();
                return Err(Error::config(
                    "sinks",
                    format!(
                        "sink {} reads stream {stream}, which no statement writes (streams: {})",
                        sink.name(),
                        known.join(", ")
                    ),
                ));
            };
            sinks.push((Arc::clone(name), sink));
        }
        let (shutdown_tx, _) = watch::channel(false);
        let health = source.health();
        let kda = program.dialect() == crate::kda::Dialect::Kda;
        Ok(Pipeline {
            checkpoints: self.checkpoint_store.map(|store| Checkpoints {
                store,
                interval: self.checkpoint_interval,
                fingerprint,
                input_columns: if inferred {
                    columns
                        .iter()
                        .map(|c| (c.name.clone(), c.data_type.clone()))
                        .collect()
                } else {
                    Vec::new()
                },
            }),
            partitions: restored
                .as_ref()
                .map(|c| c.partitions.clone())
                .unwrap_or_default(),
            first_range: match &restored {
                Some(c) => CheckpointRange::after(&c.position, c.created_ms),
                None => CheckpointRange::after(&Position::new(), now_ms()),
            },
            resumed: restored.map(|c| c.position).unwrap_or_default(),
            health,
            alignment: self
                .watermark
                .max_alignment
                .filter(|_| program.is_stateful())
                .map(|by| {
                    let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
                    (alignment, by)
                }),
            source,
            replay,
            transform: self.transform,
            decoder,
            program,
            sinks,
            error_sink: {
                let sink = self.error_sink.unwrap_or_else(|| {
                    Box::new(crate::sink::StdoutSink::stderr(Default::default()))
                });
                // A Kinesis Data Analytics application's errors also carry the columns of KDA's
                // error_stream.
                if kda {
                    Box::new(crate::sink::KdaErrorColumns::new(sink))
                } else {
                    sink
                }
            },
            raw_copy: self.raw_copy,
            batch: self.batch,
            metrics: Arc::new(PipelineMetrics::default()),
            shutdown_tx: Arc::new(shutdown_tx),
        })
    }
}

struct SourceTask {
    source: Box<dyn Source>,
    replay: Vec<SourceBatch>,
    chunks: mpsc::Sender<SourceBatch>,
    tracker_rx: mpsc::UnboundedReceiver<TrackerMsg>,
    tracker: AckTracker,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<PipelineMetrics>,
    input_ended: Arc<AtomicBool>,
    checkpoints: Option<Checkpoints>,
    ranges: watch::Sender<CheckpointRange>,
}

/// Commits positions to the source and writes checkpoints, at most one per interval unless a
/// commit carries window state (those are already one per interval).
struct Committer {
    checkpoints: Option<Checkpoints>,
    last_save: Instant,
    /// A committed position not yet written to the store.
    unsaved: Option<Position>,
    last_commit: Option<Position>,
    metrics: Arc<PipelineMetrics>,
    /// Moves the sinks' checkpoint range on: at each checkpoint written, or at each commit
    /// without a checkpoint store.
    ranges: watch::Sender<CheckpointRange>,
}

impl Committer {
    async fn apply(&mut self, commit: Commit, source: &mut Box<dyn Source>) -> Result<()> {
        if let Some(cp) = &self.checkpoints {
            if commit.state.is_some() || self.last_save.elapsed() >= cp.interval {
                self.save(commit.position.clone(), commit.state.unwrap_or_default())
                    .await?;
            } else {
                self.unsaved = Some(commit.position.clone());
            }
        }
        source.commit(&commit.position).await?;
        if self.checkpoints.is_none() {
            self.ranges
                .send_replace(CheckpointRange::after(&commit.position, now_ms()));
        }
        self.last_commit = Some(commit.position);
        Ok(())
    }

    /// Writes a position held back by the interval once the interval has passed (or `force`).
    async fn save_due(&mut self, force: bool) -> Result<()> {
        let Some(cp) = &self.checkpoints else {
            return Ok(());
        };
        if self.unsaved.is_some() && (force || self.last_save.elapsed() >= cp.interval) {
            if let Some(position) = self.unsaved.take() {
                self.save(position, WindowSnapshot::default()).await?;
            }
        }
        Ok(())
    }

    async fn save(&mut self, position: Position, state: WindowSnapshot) -> Result<()> {
        let Some(cp) = &self.checkpoints else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            position,
            state: state.windows,
            partitions: state.partitions,
            sql_fingerprint: cp.fingerprint.clone(),
            created_ms: now_ms(),
            input_columns: cp.input_columns.clone(),
        };
        cp.store.save(&checkpoint).await?;
        self.ranges.send_replace(CheckpointRange::after(
            &checkpoint.position,
            checkpoint.created_ms,
        ));
        self.metrics.add_checkpoint();
        self.last_save = Instant::now();
        self.unsaved = None;
        Ok(())
    }
}

async fn run_source(task: SourceTask) -> Result<Option<Position>> {
    let SourceTask {
        mut source,
        replay,
        chunks,
        mut tracker_rx,
        mut tracker,
        mut shutdown,
        metrics,
        input_ended,
        checkpoints,
        ranges,
    } = task;
    let mut committer = Committer {
        checkpoints,
        last_save: Instant::now(),
        unsaved: None,
        last_commit: None,
        metrics: Arc::clone(&metrics),
        ranges,
    };
    let mut replay = replay.into_iter();
    let mut source_error = None;

    loop {
        while let Ok(msg) = tracker_rx.try_recv() {
            if let Some(commit) = tracker.on_message(msg) {
                committer.apply(commit, &mut source).await?;
            }
        }
        committer.save_due(false).await?;
        if *shutdown.borrow() {
            break;
        }
        let next = match replay.next() {
            Some(b) => Some(b),
            None => tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                r = source.next_batch() => match r {
                    Ok(b) => b,
                    Err(e) => {
                        // Everything read so far is still processed, stored and committed.
                        source_error = Some(e);
                        break;
                    }
                },
            },
        };
        let Some(batch) = next else {
            input_ended.store(true, Ordering::Release);
            break;
        };
        let bytes: u64 = batch.records.iter().map(|r| r.payload().len() as u64).sum();
        let n = batch.records.len() as u64;
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            sent = chunks.send(batch) => {
                if sent.is_err() {
                    // Processing has stopped (it failed); its error is reported by its task.
                    break;
                }
                metrics.add_in(n, bytes);
            }
        }
    }
    drop(chunks);
    // Wait for every batch handed out to be stored, committing as acknowledgements come in.
    while let Some(msg) = tracker_rx.recv().await {
        if let Some(commit) = tracker.on_message(msg) {
            committer.apply(commit, &mut source).await?;
        }
    }
    committer.save_due(true).await?;
    if !tracker.failed().is_empty() {
        tracing::warn!(
            batches = tracker.failed().len(),
            "some output was not stored; the source position was not committed past it"
        );
    }
    match source_error {
        Some(e) => Err(e),
        None => Ok(committer.last_commit),
    }
}

struct Processing {
    chunks: mpsc::Receiver<SourceBatch>,
    tracker: mpsc::UnboundedSender<TrackerMsg>,
    transform: Option<Arc<dyn RecordTransform>>,
    decoder: RecordDecoder,
    program: SqlProgram,
    sinks: Vec<(Arc<str>, mpsc::Sender<OutputBatch>)>,
    errors: mpsc::Sender<OutputBatch>,
    /// The raw-data copy: every record as read, before any decoding.
    raw: Option<mpsc::Sender<OutputBatch>>,
    settings: BatchSettings,
    metrics: Arc<PipelineMetrics>,
    seq: u64,
    /// Acknowledgements of micro-batches whose rows are still in open windows: they complete only
    /// once the windows holding those rows are emitted and stored. At most [`MAX_HELD`].
    held: VecDeque<(u64, Ack)>,
    /// Source partition (shard) numbers, for per-partition watermarks.
    partitions: HashMap<Arc<str>, u32>,
    /// Whether the source reached its end (rather than the pipeline being stopped).
    input_ended: Arc<AtomicBool>,
    /// With a checkpoint store and windows: how often the window state is snapshotted.
    snapshot_every: Option<Duration>,
    last_snapshot: Instant,
    /// Catch-up alignment: the partitions paused, and how far ahead of the watermark one may run.
    alignment: Option<(Arc<PartitionAlignment>, i64)>,
}

/// Why the processing task runs the SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A micro-batch of records.
    Batch,
    /// A micro-batch cut from the front of a larger source batch: the source position reached
    /// after it is not known, so its window state is not a consistent checkpoint.
    Cut,
    /// No records for a while: let idle partitions time out and due windows close.
    Tick,
    /// The source has ended: emit every open window.
    End,
    /// The pipeline stops with windows open: snapshot them for the last checkpoint.
    Stop,
}

async fn run_processing(mut p: Processing) -> Result<Option<Position>> {
    let mut pending: Vec<Record> = Vec::new();
    let mut pending_pos = Position::new();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    let stateful = p.program.is_stateful();
    let mut ticker = tokio::time::interval(WINDOW_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while open || !pending.is_empty() {
        let mut flush = !open;
        if open {
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                if stateful {
                    ticker.tick().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                chunk = p.chunks.recv() => match chunk {
                    Some(mut chunk) => {
                        // Applied at once: a declaration must hold the watermark before any row
                        // of the chunk is processed, and the rest describe what was read.
                        p.apply_partition_events(&chunk.partitions);
                        if !pending.is_empty()
                            && pending.len() + chunk.records.len() > p.settings.max_rows
                        {
                            // What is pending is whole chunks: processed on its own it ends at a
                            // known position (a checkpoint candidate), and only the new chunk is
                            // cut.
                            p.process(std::mem::take(&mut pending), std::mem::take(&mut pending_pos), Step::Batch).await?;
                        }
                        if pending.is_empty() && !chunk.records.is_empty() {
                            deadline = Some(Instant::now() + p.settings.max_latency);
                        }
                        // An idle source's empty batch still moves its position: commit it now
                        // rather than whenever the next record comes.
                        let idle_position = pending.is_empty()
                            && chunk.records.is_empty()
                            && !chunk.position.is_empty();
                        // A chunk larger than a micro-batch is cut; only the part that ends the
                        // chunk carries its position.
                        while pending.len() + chunk.records.len() > p.settings.max_rows {
                            let take = p.settings.max_rows - pending.len();
                            let rest = chunk.records.split_off(take);
                            pending.append(&mut chunk.records);
                            chunk.records = rest;
                            // Part of a chunk: its position does not cover these records yet, so
                            // it cannot be a checkpoint.
                            p.process(std::mem::take(&mut pending), std::mem::take(&mut pending_pos), Step::Cut).await?;
                            deadline = Some(Instant::now() + p.settings.max_latency);
                        }
                        if pending.is_empty() {
                            // Taken over whole rather than copied record by record.
                            pending = std::mem::take(&mut chunk.records);
                        } else {
                            pending.append(&mut chunk.records);
                        }
                        pending_pos.advance(&chunk.position);
                        flush = idle_position || pending.len() >= p.settings.max_rows;
                    }
                    None => {
                        open = false;
                        flush = true;
                    }
                },
                () = wait => flush = true,
                () = tick => {
                    if pending.is_empty() && pending_pos.is_empty() {
                        p.process(Vec::new(), Position::new(), Step::Tick).await?;
                    }
                }
            }
        }
        if flush && (!pending.is_empty() || !pending_pos.is_empty()) {
            p.process(
                std::mem::take(&mut pending),
                std::mem::take(&mut pending_pos),
                Step::Batch,
            )
            .await?;
            deadline = None;
        }
    }
    if stateful && p.input_ended.load(Ordering::Acquire) {
        // The input is complete: every window is too.
        p.process(Vec::new(), Position::new(), Step::End).await?;
    } else if stateful && p.snapshot_every.is_some() {
        // Open windows go into the last checkpoint; the run after a restart completes them.
        p.process(Vec::new(), Position::new(), Step::Stop).await?;
    } else if !p.held.is_empty() {
        // Stopped with windows still open: emitting them would publish partial results as final.
        // Their input is not committed, so it is read again, and the windows completed, after a
        // restart.
        tracing::warn!(
            batches = p.held.len(),
            window_states = p.program.live_window_states(),
            "stopping with open windows: they were not emitted, and their input will be read \
             again after a restart"
        );
    }
    // Dropped unacknowledged: the source position is not committed past rows of unemitted
    // windows. (After a finished input, nothing is held any more.)
    p.held.clear();
    Ok(None)
}

impl Processing {
    async fn process(
        &mut self,
        records: Vec<Record>,
        position: Position,
        step: Step,
    ) -> Result<()> {
        let seq = self.seq;
        self.seq += 1;
        // Registered before any output exists, so the tracker knows the batch before its acks.
        let _ = self.tracker.send(TrackerMsg::Register(seq, position));
        let root = Ack::new(seq, Some(self.tracker.clone()));
        if let (Some(raw), false) = (&self.raw, records.is_empty()) {
            // The batch counts as stored only once its raw copy is stored too.
            let copy = OutputBatch {
                stream: Arc::from(RAW_STREAM),
                data: OutputData::Encoded(records.iter().map(|r| r.payload().clone()).collect()),
                ack: root.split(),
            };
            raw.send(copy).await.map_err(|_| {
                Error::Pipeline("the raw-data copy stopped while the pipeline was running".into())
            })?;
        }
        let mut errors: Vec<ErrorRecord> = Vec::new();
        // Records the source set aside go to the error output as they are.
        let records = if records.iter().any(|r| r.rejection().is_some()) {
            let (rejected, kept): (Vec<Record>, Vec<Record>) =
                records.into_iter().partition(|r| r.rejection().is_some());
            errors.extend(rejected.into_iter().map(|record| {
                let why = record.rejection().expect("partitioned on it");
                ErrorRecord::new(
                    ErrorStage::Source,
                    why.kind.clone(),
                    why.reason.clone(),
                    record,
                )
            }));
            kept
        } else {
            records
        };
        // Partitions with records in this batch, before a transform may drop some: a shard whose
        // records are all dropped still has them coming (it is not stalled).
        let read_from = if self.program.is_stateful() && self.transform.is_some() {
            self.record_partitions(&records)
        } else {
            Vec::new()
        };
        let records = match &self.transform {
            Some(t) if !records.is_empty() => {
                let total = records.len();
                let (kept, failed) = apply_transform(t.as_ref(), records)?;
                self.metrics
                    .add_dropped((total - kept.len() - failed.len()) as u64);
                errors.extend(failed);
                kept
            }
            _ => records,
        };
        let output: SqlOutput = match step {
            Step::Batch | Step::Cut => {
                self.metrics.add_batch();
                let decoded = self.decoder.decode(&records)?;
                errors.extend(decoded.failures.iter().map(|f| {
                    ErrorRecord::new(
                        ErrorStage::Decode,
                        f.kind.as_str(),
                        f.reason.clone(),
                        records[f.index].clone(),
                    )
                }));
                let of_record = if self.program.is_stateful() {
                    self.record_partitions(&records)
                } else {
                    Vec::new()
                };
                // With processing-time ROWTIME, a row "arrives" when it is processed: a backlog
                // record written long ago is not ahead of its arrival.
                let arrived_by = if self.decoder.processing_rowtime() {
                    now_ms()
                } else {
                    i64::MIN
                };
                let (partitions, arrivals): (Vec<u32>, Vec<i64>) = if of_record.is_empty() {
                    (Vec::new(), Vec::new())
                } else {
                    decoded
                        .row_records
                        .iter()
                        .map(|&r| (of_record[r], records[r].arrival_time_ms().max(arrived_by)))
                        .unzip()
                };
                let output = self
                    .program
                    .process_arrived(&decoded.batch, &partitions, &arrivals, seq)
                    .await?;
                if self.transform.is_some() {
                    self.mark_records(&read_from, seq);
                } else {
                    self.mark_records(&of_record, seq);
                }
                for issue in &output.issues {
                    let record = match issue.input_row {
                        Some(row) => records[decoded.row_records[row]].clone(),
                        None => derived_record(issue.row.as_ref())?,
                    };
                    errors.push(sql_error(issue, record));
                }
                output
            }
            Step::Tick | Step::Stop => self.program.tick(seq).await?,
            Step::End => self.program.finish(seq).await?,
        };
        self.align(step);
        // A snapshot of the window state after this batch makes it a checkpoint: sent before any
        // output, so the tracker has it before the batch can complete.
        let snapshotted = match self.snapshot_every {
            Some(every)
                if matches!(step, Step::End | Step::Stop)
                    || (step != Step::Cut && self.last_snapshot.elapsed() >= every) =>
            {
                let mut partitions = vec![String::new(); self.partitions.len()];
                for (name, &i) in &self.partitions {
                    partitions[i as usize] = name.to_string();
                }
                let state = WindowSnapshot {
                    windows: self.program.snapshot()?,
                    partitions,
                };
                let _ = self.tracker.send(TrackerMsg::State(seq, state));
                self.last_snapshot = Instant::now();
                true
            }
            _ => false,
        };
        if !matches!(step, Step::Batch | Step::Cut) {
            for issue in &output.issues {
                errors.push(sql_error(issue, derived_record(issue.row.as_ref())?));
            }
        }

        // Output sent now may hold rows of batches still held for other open windows: those
        // batches complete only once this output is stored too.
        if !output.streams.is_empty() {
            for (_, held) in &self.held {
                root.attach(held.split());
            }
        }
        for (stream, batch) in &output.streams {
            let rows = batch.num_rows() as u64;
            if &**stream == DESTINATION_STREAM {
                self.metrics.add_out(rows);
            }
            for (wanted, tx) in &self.sinks {
                if wanted != stream {
                    continue;
                }
                let out = OutputBatch {
                    stream: Arc::clone(stream),
                    data: OutputData::Rows(batch.clone()),
                    ack: root.split(),
                };
                tx.send(out).await.map_err(|_| {
                    Error::Pipeline("a sink stopped while the pipeline was running".into())
                })?;
            }
        }
        let late = errors.iter().filter(|e| e.kind == "late").count() as u64;
        if late > 0 {
            self.metrics.add_late(late);
        }
        self.metrics
            .set_window_states(self.program.live_window_states() as u64);
        if !errors.is_empty() {
            self.metrics.add_error(errors.len() as u64);
            let out = OutputBatch {
                stream: Arc::from(ERROR_STREAM),
                data: OutputData::Rows(ErrorRecord::to_batch(&errors, now_ms())),
                ack: root.split(),
            };
            self.errors.send(out).await.map_err(|_| {
                Error::Pipeline("the error output stopped while the pipeline was running".into())
            })?;
        }
        // Earlier batches whose rows are no longer in any open window complete together with
        // this one, whose output holds what those windows produced.
        if snapshotted {
            // The rows of every held batch are in the snapshot: they no longer wait for their
            // windows, only for what they already sent.
            for (_, ack) in self.held.drain(..) {
                ack.acknowledge();
            }
            root.acknowledge();
            return Ok(());
        }
        let oldest_open = self.program.oldest_open_batch();
        while let Some((s, _)) = self.held.front() {
            if oldest_open.is_some_and(|o| *s >= o) {
                break;
            }
            if let Some((_, ack)) = self.held.pop_front() {
                root.attach(ack);
            }
        }
        if oldest_open.is_some_and(|o| o <= seq) {
            // At most MAX_HELD handles wait: the newest held batch then completes only together
            // with this one (a later commit, never an early one), and its handle goes.
            if self.held.len() >= MAX_HELD {
                if let Some((prev, ack)) = self.held.pop_back() {
                    let _ = self.tracker.send(TrackerMsg::Merge {
                        from: prev,
                        into: seq,
                    });
                    ack.acknowledge();
                }
            }
            self.held.push_back((seq, root));
        } else {
            root.acknowledge();
        }
        Ok(())
    }

    /// Pauses the partitions that run too far ahead of the watermark; at the end, none.
    fn align(&mut self, step: Step) {
        let Some((alignment, by)) = &self.alignment else {
            return;
        };
        let ahead = match step {
            Step::End | Step::Stop => Vec::new(),
            _ => self.program.partitions_ahead(*by, self.partitions.len()),
        };
        let paused = self
            .partitions
            .iter()
            .filter(|(_, p)| ahead.contains(p))
            .map(|(name, _)| Arc::clone(name))
            .collect();
        alignment.set(paused);
    }

    /// The number of the partition called `name`, given one when it is new.
    fn partition_number(&mut self, name: &str) -> u32 {
        if let Some(p) = self.partitions.get(name) {
            return *p;
        }
        let next = u32::try_from(self.partitions.len()).unwrap_or(u32::MAX);
        self.partitions.insert(Arc::from(name), next);
        next
    }

    /// The partition number of each record.
    fn record_partitions(&mut self, records: &[Record]) -> Vec<u32> {
        let mut out = Vec::with_capacity(records.len());
        // Records come in runs of one shard, sharing its name: one lookup per run.
        let mut last: Option<(*const u8, usize, u32)> = None;
        for r in records {
            let name = r.shard_id().unwrap_or(DEFAULT_PARTITION);
            let p = match last {
                Some((ptr, len, p)) if ptr == name.as_ptr() && len == name.len() => p,
                _ => {
                    let p = self.partition_number(name);
                    last = Some((name.as_ptr(), name.len(), p));
                    p
                }
            };
            out.push(p);
        }
        out
    }

    /// Marks the partitions of a processed micro-batch's records as having had records now.
    /// (After the SQL: a partition whose rows are in the batch is not one whose rows never reach
    /// a window while they are being aggregated.)
    fn mark_records(&mut self, partitions: &[u32], seq: u64) {
        let now = std::time::Instant::now();
        let mut last = None;
        for &p in partitions {
            if last != Some(p) {
                if let Some(e) = self.program.partition_table_mut().get_mut(p) {
                    e.last_records = Some((seq, now));
                    e.first_records.get_or_insert(now);
                }
                last = Some(p);
            }
        }
    }

    /// Takes what the source said of its partitions into the watermarks' partition table.
    fn apply_partition_events(&mut self, events: &[PartitionEvent]) {
        if events.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        for event in events {
            let p = self.partition_number(event.partition());
            if self.program.partition_table_mut().get(p).is_none() {
                self.program.partition_table_mut().declare(p, Vec::new());
            }
            match event {
                PartitionEvent::Declared { parents, .. } => {
                    let parents = parents.iter().map(|q| self.partition_number(q)).collect();
                    self.program.partition_table_mut().declare(p, parents);
                }
                PartitionEvent::Reading(_) => self.set_state(p, SourceState::Reading),
                PartitionEvent::CaughtUp(_) => self.set_state(p, SourceState::CaughtUp(now)),
                PartitionEvent::Finished { children, .. } => {
                    let children: Vec<u32> =
                        children.iter().map(|c| self.partition_number(c)).collect();
                    if let Some(e) = self.program.partition_table_mut().get_mut(p) {
                        e.state = SourceState::Finished;
                        e.children = children;
                    }
                }
            }
        }
    }

    fn set_state(&mut self, p: u32, state: SourceState) {
        if let Some(e) = self.program.partition_table_mut().get_mut(p) {
            e.state = state;
        }
    }
}

/// Where the error output's own failures go. They are written to standard error for the operator
/// to see, and refused: their batches are not acknowledged (so no checkpoint covers their records,
/// which are read again after a restart) and the pipeline stops with an error that says so.
struct UnstoredErrors {
    error_output: String,
    stderr: crate::sink::StdoutSink,
}

impl UnstoredErrors {
    fn new(error_output: &str) -> Self {
        Self {
            error_output: error_output.to_owned(),
            stderr: crate::sink::StdoutSink::stderr(Default::default()),
        }
    }
}

impl fmt::Debug for UnstoredErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnstoredErrors")
            .field("error_output", &self.error_output)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Sink for UnstoredErrors {
    fn name(&self) -> &str {
        "unstored error records"
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        let OutputBatch { stream, data, ack } = batch;
        let n = data.len();
        // Shown, not stored: the batch's acknowledgement is dropped, which fails it.
        let shown = self
            .stderr
            .write(OutputBatch {
                stream,
                data,
                ack: Ack::untracked(),
            })
            .await;
        drop(ack);
        if let Err(e) = shown {
            tracing::warn!("could not show the unstored error records on standard error: {e}");
        }
        Err(Error::sink(
            &self.error_output,
            format!(
                "the error output could not store {n} error record(s) (shown above on standard \
                 error); stopping without committing the input they came from, which is read again \
                 after a restart. Give the error output room for them (an S3 or file error output \
                 has no record size limit) or fix what refuses them"
            ),
        ))
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Rows of a sample that are a CSV header, not data.
fn header_rows_of(format: &RecordFormat, non_empty: bool) -> usize {
    match format {
        RecordFormat::Csv(o) if o.has_header && non_empty => 1,
        _ => 0,
    }
}

/// Applies a record transform: the records that continue (with their new payloads), and error
/// records for those that failed. Dropped records are neither.
fn apply_transform(
    t: &dyn RecordTransform,
    records: Vec<Record>,
) -> Result<(Vec<Record>, Vec<ErrorRecord>)> {
    let results = match t.transform(&records) {
        Ok(r) if r.len() == records.len() => Ok(r),
        Ok(r) => Err(format!(
            "transform `{}` returned {} results for {} records",
            t.name(),
            r.len(),
            records.len()
        )),
        Err(reason) => Err(reason),
    };
    let results = match results {
        Ok(r) => r,
        Err(reason) => {
            tracing::warn!(transform = t.name(), records = records.len(), "{reason}");
            let failed = records
                .into_iter()
                .map(|record| {
                    ErrorRecord::new(ErrorStage::Transform, "transform_failed", &reason, record)
                })
                .collect();
            return Ok((Vec::new(), failed));
        }
    };
    let mut kept = Vec::with_capacity(records.len());
    let mut failed = Vec::new();
    for (record, result) in records.into_iter().zip(results) {
        match result {
            Transformed::Ok(payload) => kept.push(record.with_payload(payload)),
            Transformed::Dropped => {}
            Transformed::ProcessingFailed(reason) => failed.push(ErrorRecord::new(
                ErrorStage::Transform,
                "processing_failed",
                reason,
                record,
            )),
        }
    }
    Ok((kept, failed))
}

/// An error-output record for a row that does not come from one input record (an aggregate's
/// output): the row itself, as JSON.
fn derived_record(row: Option<&arrow::array::RecordBatch>) -> Result<Record> {
    let mut payload = Vec::new();
    if let Some(row) = row {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut payload);
        w.write(row)?;
        w.finish()?;
        if payload.last() == Some(&b'\n') {
            payload.pop();
        }
    }
    Ok(Record::new(bytes::Bytes::from(payload), now_ms()))
}

async fn run_sink(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<OutputBatch>,
    metrics: Arc<PipelineMetrics>,
) -> Result<Option<Position>> {
    let mut last_flush = Instant::now();
    loop {
        match tokio::time::timeout(SINK_FLUSH_INTERVAL, rx.recv()).await {
            Ok(Some(batch)) => {
                let rows = batch.data.len() as u64;
                sink.write(batch).await?;
                metrics.add_to_sink(rows);
                // Flush when caught up, and at least every interval when the sink is the
                // bottleneck, so acknowledgements (and checkpoints) keep moving.
                if rx.is_empty() || last_flush.elapsed() >= SINK_FLUSH_INTERVAL {
                    sink.flush().await?;
                    last_flush = Instant::now();
                }
            }
            Ok(None) => {
                sink.finish().await?;
                return Ok(None);
            }
            Err(_) => {
                sink.flush().await?;
                last_flush = Instant::now();
            }
        }
    }
}

/// The error-output entry of a row that failed in SQL.
fn sql_error(issue: &crate::sql::SqlIssue, record: Record) -> ErrorRecord {
    ErrorRecord::new(
        ErrorStage::Sql,
        issue.kind.clone(),
        issue.reason.clone(),
        record,
    )
    .with_statement(issue.statement.clone())
}
