//! [`PipelineBuilder`]: what a pipeline is made of, checked and put together (the schema inferred
//! from a sample when no columns are given, the program planned, the sinks matched to its
//! streams, the state restored from a checkpoint).

use super::processing::apply_transform;
use super::*;

impl PipelineBuilder {
    /// The source (required).
    pub fn source(mut self, source: impl Source + 'static) -> Self {
        self.source = Some(Box::new(source));
        self.push_errors = None;
        self
    }

    /// The source, already boxed.
    pub fn boxed_source(mut self, source: Box<dyn Source>) -> Self {
        self.source = Some(source);
        self.push_errors = None;
        self
    }

    /// Makes the source a [`PushSource`](crate::PushSource) fed by the application: returns the
    /// builder and a [`PushHandle`](crate::PushHandle) to clone into every task that produces
    /// records. Pushes wait while the queue is full (`options` bound it by records and bytes);
    /// the source ends when every handle is dropped or closed, once what was pushed is stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> rivulet::Result<()> {
    /// use bytes::Bytes;
    /// use rivulet::{Column, MemorySink, Pipeline, PushSourceOptions, Record};
    /// use arrow::datatypes::DataType;
    ///
    /// let sink = MemorySink::new();
    /// let rows = sink.handle();
    /// let (builder, handle) = Pipeline::builder().push_source(PushSourceOptions::new());
    /// let pipeline = builder
    ///     .columns(vec![Column::new("n", DataType::Int64)])
    ///     .sql("SELECT n * 2 AS doubled FROM source WHERE n > 1")
    ///     .sink(sink)
    ///     .build()
    ///     .await?;
    /// let producer = tokio::spawn(async move {
    ///     for n in 1..=3 {
    ///         let record = Record::new(Bytes::from(format!(r#"{{"n":{n}}}"#)), 0);
    ///         handle.push(record).await?;
    ///     }
    ///     // Dropping the last handle ends the source.
    ///     Ok::<(), rivulet::Error>(())
    /// });
    /// let report = pipeline.run().await?;
    /// producer.await.unwrap()?;
    /// assert_eq!(report.metrics.records_in, 3);
    /// assert_eq!(rows.num_rows(), 2);
    /// # Ok(()) }
    /// ```
    pub fn push_source(
        mut self,
        options: crate::source::PushSourceOptions,
    ) -> (Self, crate::source::PushHandle) {
        let (source, handle) = crate::source::PushSource::new(options);
        self.push_errors = Some(source.error_observer());
        self.source = Some(Box::new(source));
        (self, handle)
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

    /// Threads that decode a micro-batch's records side by side (default: the cores the process
    /// may run on, as [`std::thread::available_parallelism`] tells). A micro-batch is split only
    /// into parts of at least [`MIN_ROWS_PER_WORKER`](crate::MIN_ROWS_PER_WORKER)
    /// records, so small batches stay on one thread; `1` keeps all decoding on the pipeline's
    /// own task. With more than one, a micro-batch is also decoded on a blocking thread while the
    /// one before it runs through the SQL: one more micro-batch of records is in memory.
    /// Rows, their order and every delivery guarantee are the same for any number.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Checks the configuration, infers the schema when none was given (reading the sample from the
    /// source; those records are processed first when the pipeline runs) and plans the query.
    pub async fn build(mut self) -> Result<Pipeline> {
        let mut source = self
            .source
            .take()
            .ok_or_else(|| Error::config("source", "a pipeline needs a source"))?;
        self.validate()?;
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
        let given = self.columns.take();
        let inferred = given.is_none();
        let columns = match given.or(kept_columns) {
            Some(c) => c,
            None => self.infer_columns(&mut source, &mut replay).await?,
        };
        let (decoder, mut program) = self.decoder_and_program(&columns).await?;
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
        let sinks = self.match_sinks(&program)?;
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
            error_sink: error_output(self.error_sink, kda, self.push_errors),
            raw_copy: self.raw_copy,
            batch: self.batch,
            metrics: Arc::new(PipelineMetrics::default()),
            shutdown_tx: Arc::new(shutdown_tx),
        })
    }

    /// Refuses settings no pipeline can run with.
    fn validate(&self) -> Result<()> {
        if self.sinks.is_empty() {
            return Err(Error::config("sinks", "a pipeline needs at least one sink"));
        }
        if self.workers == Some(0) {
            return Err(Error::config("runtime.workers", "must be at least 1"));
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
        Ok(())
    }

    /// Infers the input columns from a sample of the source: until enough records, the end of
    /// the source, or the source going idle (an empty batch) once it has given something; an idle
    /// source that has given nothing is waited for, up to `INFER_WAIT`. The batches read are kept
    /// in `replay`, to be processed first.
    async fn infer_columns(
        &mut self,
        source: &mut Box<dyn Source>,
        replay: &mut Vec<SourceBatch>,
    ) -> Result<Vec<Column>> {
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
        if let Some(row) = sample.first().and_then(Record::row) {
            // Rows pushed as Arrow bring their columns with them.
            return Ok(row
                .batch
                .schema()
                .fields()
                .iter()
                .map(|f| Column::new(f.name(), f.data_type().clone()))
                .collect());
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
            for b in replay.iter() {
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
                "cannot infer a schema: the source yielded no records; give the columns explicitly"
                    .into(),
            ));
        }
        let schema = infer_schema(&self.format, &sample[..sample_len])?;
        Ok(schema
            .fields()
            .iter()
            .map(|f| Column::new(f.name(), f.data_type().clone()))
            .collect())
    }

    /// The decoder of `columns` and the program planned over its rows. A JSON decoder builds
    /// only the columns the SQL reads.
    async fn decoder_and_program(
        &mut self,
        columns: &[Column],
    ) -> Result<(RecordDecoder, SqlProgram)> {
        // Metadata columns (SHARD_ID, PARTITION_KEY, …) the SQL names, unless the input has a
        // column of that name itself.
        let metadata: Vec<MetadataColumn> = MetadataColumn::named_in(&self.sql)
            .into_iter()
            .filter(|m| !columns.iter().any(|c| c.name == m.name()))
            .collect();
        let workers = self.workers.unwrap_or_else(default_workers);
        let make_decoder = |columns: Vec<Column>| {
            let mut decoder = RecordDecoder::builder(self.format.clone())
                .with_columns(columns)
                .with_metadata(metadata.clone())
                .with_rowtime_field(self.rowtime_field.clone())
                .with_batch_size(self.batch.max_rows)
                .with_workers(workers);
            if let Some(max) = self.max_record_bytes {
                decoder = decoder.with_max_record_bytes(max);
            }
            decoder.build()
        };
        let mut decoder = make_decoder(columns.to_vec())?;
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
        Ok((decoder, program))
    }

    /// Each sink with the stream it reads, which a statement must write.
    fn match_sinks(&mut self, program: &SqlProgram) -> Result<StreamSinks> {
        let streams = program.output_streams();
        let mut sinks = Vec::with_capacity(self.sinks.len());
        for (stream, sink) in std::mem::take(&mut self.sinks) {
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
        Ok(sinks)
    }
}

/// Rows of a sample that are a CSV header, not data.
pub(super) fn header_rows_of(format: &RecordFormat, non_empty: bool) -> usize {
    match format {
        RecordFormat::Csv(o) if o.has_header && non_empty => 1,
        _ => 0,
    }
}

/// The cores this process may run on (its CPU affinity included), or one when that is unknown.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The pipeline's error output: the sink given (standard error by default), with the columns of
/// KDA's error_stream for a KDA application, behind a push source's observer when it has one.
fn error_output(
    given: Option<Box<dyn Sink>>,
    kda: bool,
    push_errors: Option<crate::source::PushErrors>,
) -> Box<dyn Sink> {
    let sink =
        given.unwrap_or_else(|| Box::new(crate::sink::StdoutSink::stderr(Default::default())));
    // A Kinesis Data Analytics application's errors also carry the columns of KDA's error_stream.
    let sink: Box<dyn Sink> = if kda {
        Box::new(crate::sink::KdaErrorColumns::new(sink))
    } else {
        sink
    };
    match push_errors {
        Some(observer) => Box::new(super::observed::ObservedErrorOutput::new(sink, observer)),
        None => sink,
    }
}
