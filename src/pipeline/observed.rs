//! The error output as a push source's receipts see it: a sink in front of the error output that
//! notes which pushed records its rows name.

use async_trait::async_trait;

use super::*;
use crate::source::PushErrors;

/// The error output with a [`PushErrors`] in front of it.
pub(crate) struct ObservedErrorOutput {
    inner: Box<dyn Sink>,
    observer: PushErrors,
}

impl ObservedErrorOutput {
    pub(crate) fn new(inner: Box<dyn Sink>, observer: PushErrors) -> Self {
        Self { inner, observer }
    }
}

impl fmt::Debug for ObservedErrorOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

#[async_trait]
impl Sink for ObservedErrorOutput {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn set_error_output(&mut self, errors: ErrorOutput) {
        self.inner.set_error_output(errors);
    }

    fn set_checkpoint_ranges(&mut self, ranges: CheckpointRanges) {
        self.inner.set_checkpoint_ranges(ranges);
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        // Noted before the write: a receipt is sent only at the commit, after the write is
        // acknowledged, and a write that fails stops the pipeline (the receipt then never comes).
        if let OutputData::Rows(rows) = &batch.data {
            self.observer.observe(rows);
        }
        self.inner.write(batch).await
    }

    async fn flush(&mut self) -> Result<()> {
        self.inner.flush().await
    }

    async fn finish(&mut self) -> Result<()> {
        self.inner.finish().await
    }
}
