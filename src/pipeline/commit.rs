//! The source task, where delivery is accounted for: it reads the source into chunks, tracks the
//! acknowledgements of everything derived from them, commits to the source the position up to
//! which all of it is stored, and writes checkpoints (position and window state together).

use super::*;

pub(super) struct SourceTask {
    pub(super) source: Box<dyn Source>,
    pub(super) replay: Vec<SourceBatch>,
    pub(super) chunks: mpsc::Sender<SourceBatch>,
    pub(super) tracker_rx: mpsc::UnboundedReceiver<TrackerMsg>,
    pub(super) tracker: AckTracker,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) metrics: Arc<PipelineMetrics>,
    pub(super) input_ended: Arc<AtomicBool>,
    pub(super) checkpoints: Option<Checkpoints>,
    pub(super) ranges: watch::Sender<CheckpointRange>,
}

/// Commits positions to the source and writes checkpoints, at most one per interval unless a
/// commit carries window state (those are already one per interval).
pub(super) struct Committer {
    pub(super) checkpoints: Option<Checkpoints>,
    pub(super) last_save: Instant,
    /// A committed position not yet written to the store.
    pub(super) unsaved: Option<Position>,
    pub(super) last_commit: Option<Position>,
    pub(super) metrics: Arc<PipelineMetrics>,
    /// Moves the sinks' checkpoint range on: at each checkpoint written, or at each commit
    /// without a checkpoint store.
    pub(super) ranges: watch::Sender<CheckpointRange>,
}

impl Committer {
    pub(super) async fn apply(
        &mut self,
        commit: Commit,
        source: &mut Box<dyn Source>,
    ) -> Result<()> {
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
    pub(super) async fn save_due(&mut self, force: bool) -> Result<()> {
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

    pub(super) async fn save(&mut self, position: Position, state: WindowSnapshot) -> Result<()> {
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

pub(super) async fn run_source(task: SourceTask) -> Result<Option<Position>> {
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
    // A graceful stop of a source that drains: it is read to its end, past the stop.
    let mut draining = false;

    loop {
        while let Ok(msg) = tracker_rx.try_recv() {
            if let Some(commit) = tracker.on_message(msg) {
                committer.apply(commit, &mut source).await?;
            }
        }
        committer.save_due(false).await?;
        if !draining && *shutdown.borrow() {
            if !source.drain_on_shutdown() {
                break;
            }
            draining = true;
        }
        let next = match replay.next() {
            Some(b) => Some(b),
            None if draining => match source.next_batch().await {
                Ok(b) => b,
                Err(e) => {
                    source_error = Some(e);
                    break;
                }
            },
            None => tokio::select! {
                biased;
                // Back to the top, where the stop is taken.
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
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
        let permit = if draining {
            chunks.reserve().await
        } else {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    if !source.drain_on_shutdown() {
                        // The batch is dropped uncommitted: a restart reads it again.
                        break;
                    }
                    draining = true;
                    chunks.reserve().await
                }
                permit = chunks.reserve() => permit,
            }
        };
        let Ok(permit) = permit else {
            // Processing has stopped (it failed); its error is reported by its task.
            break;
        };
        permit.send(batch);
        metrics.add_in(n, bytes);
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
