//! The processing task: micro-batches of source chunks, each through the record transform,
//! decoding and the SQL program, in named steps; failed records to the error output, rows to the
//! sinks of their streams.

use super::*;

pub(super) struct Processing {
    pub(super) chunks: mpsc::Receiver<SourceBatch>,
    pub(super) tracker: mpsc::UnboundedSender<TrackerMsg>,
    pub(super) transform: Option<Arc<dyn RecordTransform>>,
    /// The decoder; away on a blocking thread while a micro-batch is decoded ahead
    /// (see [`InFlight`]).
    pub(super) decoder: Option<RecordDecoder>,
    /// Whether `ROWTIME` is the time a record entered the pipeline.
    pub(super) processing_rowtime: bool,
    /// Whether a micro-batch is transformed and decoded on another thread while the one before it
    /// runs through the SQL (with more than one worker).
    pub(super) overlap: bool,
    /// The micro-batch being transformed and decoded ahead, finished before any other step.
    pub(super) in_flight: Option<InFlight>,
    /// Partition events the next step applies after its SQL (partitions that ended).
    pub(super) after: Vec<PartitionEvent>,
    pub(super) program: SqlProgram,
    pub(super) sinks: Vec<(Arc<str>, mpsc::Sender<OutputBatch>)>,
    pub(super) errors: mpsc::Sender<OutputBatch>,
    /// The raw-data copy: every record as read, before any decoding.
    pub(super) raw: Option<mpsc::Sender<OutputBatch>>,
    pub(super) settings: BatchSettings,
    pub(super) metrics: Arc<PipelineMetrics>,
    pub(super) seq: u64,
    /// Acknowledgements of micro-batches whose rows are still in open windows: they complete only
    /// once the windows holding those rows are emitted and stored. At most [`MAX_HELD`].
    pub(super) held: VecDeque<(u64, Ack)>,
    /// Source partition (shard) numbers, for per-partition watermarks.
    pub(super) partitions: HashMap<Arc<str>, u32>,
    /// Whether the source reached its end (rather than the pipeline being stopped).
    pub(super) input_ended: Arc<AtomicBool>,
    /// With a checkpoint store and windows: how often the window state is snapshotted.
    pub(super) snapshot_every: Option<Duration>,
    pub(super) last_snapshot: Instant,
    /// Catch-up alignment: the partitions paused, and how far ahead of the watermark one may run.
    pub(super) alignment: Option<(Arc<PartitionAlignment>, i64)>,
}

/// A micro-batch begun: registered with the tracker, its raw copy sent, its rejected records set
/// aside.
pub(super) struct Begun {
    seq: u64,
    root: Ack,
    step: Step,
    errors: Vec<ErrorRecord>,
    /// The partitions it had records of before the transform (stateful programs with one).
    read_from: Vec<u32>,
    /// Partition events applied once its records are through the SQL.
    after: Vec<PartitionEvent>,
}

/// What runs before the SQL: the records left by the transform, its failures and the decoding.
pub(super) struct Prepared {
    records: Vec<Record>,
    errors: Vec<ErrorRecord>,
    decoded: Option<DecodeOutput>,
}

/// A micro-batch being transformed and decoded on a blocking thread, which hands the decoder
/// back with the result.
pub(super) struct InFlight {
    begun: Begun,
    prepared: tokio::task::JoinHandle<(RecordDecoder, Result<Prepared>)>,
}

/// Why the processing task runs the SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
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

pub(super) async fn run_processing(mut p: Processing) -> Result<Option<Position>> {
    let mut pending: Vec<Record> = Vec::new();
    let mut pending_pos = Position::new();
    // `Finished` events of the pending chunks: applied once their chunks' records are through the
    // SQL, since a partition that has ended stops holding the watermark back, and its last
    // records must not find it already moved past them.
    let mut pending_events: Vec<PartitionEvent> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    let stateful = p.program.is_stateful();
    let mut ticker = tokio::time::interval(WINDOW_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while open || !pending.is_empty() {
        // The batch decoded ahead is finished as soon as nothing else is waiting: decoding
        // ahead overlaps work, it never holds output back.
        if p.in_flight.is_some() && p.chunks.is_empty() {
            p.drain().await?;
        }
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
                        // of the chunk is processed, and the rest describe what was read, except
                        // that a partition ended is applied after the chunk's records. Every
                        // batch before the chunk is finished first, so it sees the partitions as
                        // they were when it was read.
                        if !chunk.partitions.is_empty() {
                            p.drain().await?;
                        }
                        let (finished, now): (Vec<_>, Vec<_>) = std::mem::take(&mut chunk.partitions)
                            .into_iter()
                            .partition(|e| matches!(e, PartitionEvent::Finished { .. }));
                        p.apply_partition_events(&now);
                        if !pending.is_empty()
                            && pending.len() + chunk.records.len() > p.settings.max_rows
                        {
                            // What is pending is whole chunks: processed on its own it ends at a
                            // known position (a checkpoint candidate), and only the new chunk is
                            // cut.
                            p.after = std::mem::take(&mut pending_events);
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
                        let only_events = pending.is_empty() && !finished.is_empty();
                        pending_events.extend(finished);
                        flush = idle_position || only_events || pending.len() >= p.settings.max_rows;
                    }
                    None => {
                        open = false;
                        flush = true;
                    }
                },
                () = wait => flush = true,
                () = tick => {
                    if pending.is_empty() && pending_pos.is_empty() && pending_events.is_empty() {
                        p.process(Vec::new(), Position::new(), Step::Tick).await?;
                    }
                }
            }
        }
        if flush && (!pending.is_empty() || !pending_pos.is_empty() || !pending_events.is_empty()) {
            p.after = std::mem::take(&mut pending_events);
            p.process(
                std::mem::take(&mut pending),
                std::mem::take(&mut pending_pos),
                Step::Batch,
            )
            .await?;
            deadline = None;
        }
    }
    p.wind_up(stateful).await?;
    Ok(None)
}

impl Processing {
    /// After the loop: the batch in flight finished, then the open windows emitted (the input
    /// ended), snapshotted (stopped, with checkpoints) or left to be read again.
    async fn wind_up(&mut self, stateful: bool) -> Result<()> {
        self.drain().await?;
        if stateful && self.input_ended.load(Ordering::Acquire) {
            // The input is complete: every window is too.
            self.process(Vec::new(), Position::new(), Step::End).await?;
        } else if stateful && self.snapshot_every.is_some() {
            // Open windows go into the last checkpoint; the run after a restart completes them.
            self.process(Vec::new(), Position::new(), Step::Stop)
                .await?;
        } else if !self.held.is_empty() {
            // Stopped with windows still open: emitting them would publish partial results as
            // final. Their input is not committed, so it is read again, and the windows
            // completed, after a restart.
            tracing::warn!(
                batches = self.held.len(),
                window_states = self.program.live_window_states(),
                "stopping with open windows: they were not emitted, and their input will be read \
                 again after a restart"
            );
        }
        // Dropped unacknowledged: the source position is not committed past rows of unemitted
        // windows. (After a finished input, nothing is held any more.)
        self.held.clear();
        Ok(())
    }

    /// Runs one step. With `overlap`, a micro-batch of records is begun and left decoding on a
    /// blocking thread while the one before it is finished; every other step finishes what is in
    /// flight first.
    pub(super) async fn process(
        &mut self,
        records: Vec<Record>,
        position: Position,
        step: Step,
    ) -> Result<()> {
        let decode = matches!(step, Step::Batch | Step::Cut);
        if self.overlap && decode {
            // The batch before is decoded first (its thread hands the decoder back); it goes
            // through the SQL while this one decodes.
            let previous = self.join_in_flight().await?;
            let (begun, records) = self.begin(records, position, step).await?;
            let mut decoder = self.take_decoder();
            let transform = self.transform.clone();
            let metrics = Arc::clone(&self.metrics);
            let prepared = tokio::task::spawn_blocking(move || {
                let prepared = prepare(transform.as_deref(), &metrics, &mut decoder, records, true);
                (decoder, prepared)
            });
            self.in_flight = Some(InFlight { begun, prepared });
            if let Some((begun, prepared)) = previous {
                self.finish(begun, prepared).await?;
            }
            return Ok(());
        }
        self.drain().await?;
        let (begun, records) = self.begin(records, position, step).await?;
        let decoder = self
            .decoder
            .as_mut()
            .expect("the decoder is home between batches");
        let prepared = prepare(
            self.transform.as_deref(),
            &self.metrics,
            decoder,
            records,
            decode,
        )?;
        self.finish(begun, prepared).await
    }

    /// Finishes the micro-batch in flight, if any.
    pub(super) async fn drain(&mut self) -> Result<()> {
        match self.join_in_flight().await? {
            Some((begun, prepared)) => self.finish(begun, prepared).await,
            None => Ok(()),
        }
    }

    /// Waits for the micro-batch in flight to be decoded, taking the decoder back.
    async fn join_in_flight(&mut self) -> Result<Option<(Begun, Prepared)>> {
        let Some(f) = self.in_flight.take() else {
            return Ok(None);
        };
        let (decoder, prepared) = match f.prepared.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(Error::Pipeline(format!(
                    "the thread decoding a micro-batch stopped: {e}"
                )))
            }
        };
        self.decoder = Some(decoder);
        Ok(Some((f.begun, prepared?)))
    }

    fn take_decoder(&mut self) -> RecordDecoder {
        self.decoder
            .take()
            .expect("the decoder is home between batches")
    }

    /// Registers a step with the tracker, sends its raw copy and sets its rejected records aside.
    async fn begin(
        &mut self,
        records: Vec<Record>,
        position: Position,
        step: Step,
    ) -> Result<(Begun, Vec<Record>)> {
        let seq = self.seq;
        self.seq += 1;
        // Registered before any output exists, so the tracker knows the batch before its acks.
        let _ = self.tracker.send(TrackerMsg::Register(seq, position));
        let root = Ack::new(seq, Some(self.tracker.clone()));
        self.send_raw_copy(&records, &root).await?;
        let mut errors: Vec<ErrorRecord> = Vec::new();
        let records = set_aside_rejected(records, &mut errors);
        // Partitions with records in this batch, before a transform may drop some: a shard whose
        // records are all dropped still has them coming (it is not stalled).
        let read_from = if self.program.is_stateful() && self.transform.is_some() {
            self.record_partitions(&records)
        } else {
            Vec::new()
        };
        let begun = Begun {
            seq,
            root,
            step,
            errors,
            read_from,
            after: std::mem::take(&mut self.after),
        };
        Ok((begun, records))
    }

    /// The SQL of a prepared step, then its output, errors and acknowledgement.
    async fn finish(&mut self, begun: Begun, prepared: Prepared) -> Result<()> {
        let Begun {
            seq,
            root,
            step,
            mut errors,
            read_from,
            after,
        } = begun;
        errors.extend(prepared.errors);
        let output: SqlOutput = match (step, prepared.decoded) {
            (Step::Batch | Step::Cut, Some(decoded)) => {
                self.query(&prepared.records, decoded, &read_from, seq, &mut errors)
                    .await?
            }
            (Step::Batch | Step::Cut, None) => {
                unreachable!("batches of records are decoded before the SQL")
            }
            (Step::Tick | Step::Stop, _) => self.program.tick(seq).await?,
            (Step::End, _) => self.program.finish(seq).await?,
        };
        self.apply_partition_events(&after);
        self.align(step);
        let snapshotted = self.snapshot_if_due(step, seq)?;
        if !matches!(step, Step::Batch | Step::Cut) {
            for issue in &output.issues {
                errors.push(sql_error(issue, derived_record(issue.row.as_ref())?));
            }
        }
        self.send_output(&output, &root).await?;
        self.send_errors(errors, &root).await?;
        self.complete(seq, root, snapshotted);
        Ok(())
    }

    /// Sends the batch's records to the raw-data copy: the batch counts as stored only once its
    /// raw copy is stored too.
    async fn send_raw_copy(&mut self, records: &[Record], root: &Ack) -> Result<()> {
        if let (Some(raw), false) = (&self.raw, records.is_empty()) {
            let copy = OutputBatch {
                stream: Arc::from(RAW_STREAM),
                data: OutputData::Encoded(
                    records.iter().map(Record::payload_or_row_json).collect(),
                ),
                ack: root.split(),
            };
            raw.send(copy).await.map_err(|_| {
                Error::Pipeline("the raw-data copy stopped while the pipeline was running".into())
            })?;
        }
        Ok(())
    }

    /// Runs the program on the decoded rows of `records`; decoding and SQL failures into
    /// `errors`. `read_from` is the partitions the batch had records of before the transform.
    async fn query(
        &mut self,
        records: &[Record],
        decoded: DecodeOutput,
        read_from: &[u32],
        seq: u64,
        errors: &mut Vec<ErrorRecord>,
    ) -> Result<SqlOutput> {
        self.metrics.add_batch();
        errors.extend(decoded.failures.iter().map(|f| {
            ErrorRecord::new(
                ErrorStage::Decode,
                f.kind.as_str(),
                f.reason.clone(),
                records[f.index].clone(),
            )
        }));
        let of_record = if self.program.is_stateful() {
            self.record_partitions(records)
        } else {
            Vec::new()
        };
        // With processing-time ROWTIME, a row "arrives" when it is processed: a backlog
        // record written long ago is not ahead of its arrival.
        let arrived_by = if self.processing_rowtime {
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
            self.mark_records(read_from, seq);
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
        Ok(output)
    }

    /// Sends a snapshot of the window state after this batch, when one is due: it makes the
    /// batch a checkpoint. Sent before any output, so the tracker has it before the batch can
    /// complete.
    fn snapshot_if_due(&mut self, step: Step, seq: u64) -> Result<bool> {
        Ok(match self.snapshot_every {
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
        })
    }

    /// Sends each stream's rows to the sinks that take it.
    async fn send_output(&mut self, output: &SqlOutput, root: &Ack) -> Result<()> {
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
        self.metrics
            .set_window_states(self.program.live_window_states() as u64);
        Ok(())
    }

    /// Sends the batch's failed records to the error output.
    async fn send_errors(&mut self, errors: Vec<ErrorRecord>, root: &Ack) -> Result<()> {
        let late = errors.iter().filter(|e| e.kind == "late").count() as u64;
        if late > 0 {
            self.metrics.add_late(late);
        }
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
        Ok(())
    }

    /// Completes the batch, or holds it while open windows hold its rows; earlier held batches
    /// whose rows are no longer in any open window complete together with it.
    fn complete(&mut self, seq: u64, root: Ack, snapshotted: bool) {
        if snapshotted {
            // The rows of every held batch are in the snapshot: they no longer wait for their
            // windows, only for what they already sent.
            for (_, ack) in self.held.drain(..) {
                ack.acknowledge();
            }
            root.acknowledge();
            return;
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
    }

    /// Pauses the partitions that run too far ahead of the watermark; at the end, none.
    pub(super) fn align(&mut self, step: Step) {
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
    pub(super) fn partition_number(&mut self, name: &str) -> u32 {
        if let Some(p) = self.partitions.get(name) {
            return *p;
        }
        let next = u32::try_from(self.partitions.len()).unwrap_or(u32::MAX);
        self.partitions.insert(Arc::from(name), next);
        next
    }

    /// The partition number of each record.
    pub(super) fn record_partitions(&mut self, records: &[Record]) -> Vec<u32> {
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
    pub(super) fn mark_records(&mut self, partitions: &[u32], seq: u64) {
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
    pub(super) fn apply_partition_events(&mut self, events: &[PartitionEvent]) {
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

    pub(super) fn set_state(&mut self, p: u32, state: SourceState) {
        if let Some(e) = self.program.partition_table_mut().get_mut(p) {
            e.state = state;
        }
    }
}

/// What runs before the SQL, touching nothing of the pipeline but the decoder: the record
/// transform, when there is one (dropped records counted), then, for a batch of records, the
/// decoding.
fn prepare(
    transform: Option<&dyn RecordTransform>,
    metrics: &PipelineMetrics,
    decoder: &mut RecordDecoder,
    records: Vec<Record>,
    decode: bool,
) -> Result<Prepared> {
    let mut errors = Vec::new();
    let records = match transform {
        Some(t) if !records.is_empty() => {
            let total = records.len();
            let (kept, failed) = apply_transform(t, records)?;
            metrics.add_dropped((total - kept.len() - failed.len()) as u64);
            errors.extend(failed);
            kept
        }
        _ => records,
    };
    let decoded = match decode {
        true => Some(decoder.decode(&records)?),
        false => None,
    };
    Ok(Prepared {
        records,
        errors,
        decoded,
    })
}

/// Records the source set aside go to the error output as they are; the others continue.
fn set_aside_rejected(records: Vec<Record>, errors: &mut Vec<ErrorRecord>) -> Vec<Record> {
    if records.iter().any(|r| r.rejection().is_some()) {
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
    }
}

/// Applies a record transform: the records that continue (with their new payloads), and error
/// records for those that failed. Dropped records are neither.
pub(super) fn apply_transform(
    t: &dyn RecordTransform,
    mut records: Vec<Record>,
) -> Result<(Vec<Record>, Vec<ErrorRecord>)> {
    if records.iter().any(|r| r.row().is_some()) {
        // A transform reads payloads: rows pushed as Arrow are handed to it as JSON objects.
        records = records
            .into_iter()
            .map(|r| match r.row() {
                Some(_) => {
                    let json = r.payload_or_row_json();
                    r.into_payload(json)
                }
                None => r,
            })
            .collect();
    }
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
pub(super) fn derived_record(row: Option<&arrow::array::RecordBatch>) -> Result<Record> {
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

/// The error-output entry of a row that failed in SQL.
pub(super) fn sql_error(issue: &crate::sql::SqlIssue, record: Record) -> ErrorRecord {
    ErrorRecord::new(
        ErrorStage::Sql,
        issue.kind.clone(),
        issue.reason.clone(),
        record,
    )
    .with_statement(issue.statement.clone())
}
