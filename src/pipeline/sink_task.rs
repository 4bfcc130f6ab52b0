//! One task per sink: writes what it is sent, flushes on an interval, and reports its failure.
//! The error output's own failures go to [`UnstoredErrors`].

use super::*;

/// Where the error output's own failures go. They are written to standard error for the operator
/// to see, and refused: their batches are not acknowledged (so no checkpoint covers their records,
/// which are read again after a restart) and the pipeline stops with an error that says so.
pub(super) struct UnstoredErrors {
    pub(super) error_output: String,
    pub(super) stderr: crate::sink::StdoutSink,
}

impl UnstoredErrors {
    pub(super) fn new(error_output: &str) -> Self {
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

/// Writes what `rx` brings to `sink`, flushing when caught up and at least every interval, and
/// finishes the sink when the channel closes.
pub(super) async fn run_sink(
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
