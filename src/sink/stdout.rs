//! Standard output (or standard error) as a sink.

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{encode_data, OutputBatch, Sink};
use crate::format::{Encoder, OutputFormat};
use crate::{Error, Result};

/// Writes output to standard output, or to standard error for diagnostics such as the error output.
/// Each batch is written and flushed before it is acknowledged.
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
    encoder: Encoder,
    stderr: bool,
    first: bool,
}

impl StdoutSink {
    /// A sink writing to standard output in `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self {
            name: "stdout".into(),
            encoder: Encoder::new(format),
            stderr: false,
            first: true,
        }
    }

    /// A sink writing to standard error in `format`.
    pub fn stderr(format: OutputFormat) -> Self {
        Self {
            name: "stderr".into(),
            stderr: true,
            ..Self::new(format)
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        if batch.data.is_empty() {
            batch.ack.acknowledge();
            return Ok(());
        }
        let mut buf = Vec::new();
        encode_data(&self.encoder, &batch.data, self.first, &mut buf)?;
        self.first = false;
        let res = if self.stderr {
            let mut out = tokio::io::stderr();
            match out.write_all(&buf).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            }
        } else {
            let mut out = tokio::io::stdout();
            match out.write_all(&buf).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            }
        };
        res.map_err(|e| Error::sink(&self.name, e.to_string()))?;
        batch.ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
