//! Standard output (or standard error) as a sink.

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{encode_data, OutputBatch, Sink};
use crate::format::{Encoder, OutputFormat};
use crate::{Error, Result};

enum Target {
    Stdout,
    Stderr,
    Writer(Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
}

/// Writes output to standard output, or to standard error for diagnostics such as the error output,
/// or to any writer. Each batch is written and flushed before it is acknowledged.
pub struct StdoutSink {
    name: String,
    encoder: Encoder,
    target: Target,
    first: bool,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("name", &self.name)
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// A sink writing to standard output in `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self {
            name: "stdout".into(),
            encoder: Encoder::new(format),
            target: Target::Stdout,
            first: true,
        }
    }

    /// A sink writing to standard error in `format`.
    pub fn stderr(format: OutputFormat) -> Self {
        Self {
            name: "stderr".into(),
            target: Target::Stderr,
            ..Self::new(format)
        }
    }

    /// The same sink writing to `writer` (a pipe, a socket, a buffer in a test), named `name`.
    pub fn to_writer(
        name: impl Into<String>,
        writer: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
        format: OutputFormat,
    ) -> Self {
        Self {
            name: name.into(),
            target: Target::Writer(Box::new(writer)),
            ..Self::new(format)
        }
    }
}

async fn write_flush(
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    buf: &[u8],
) -> std::io::Result<()> {
    out.write_all(buf).await?;
    out.flush().await
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
        let res = match &mut self.target {
            Target::Stdout => write_flush(&mut tokio::io::stdout(), &buf).await,
            Target::Stderr => write_flush(&mut tokio::io::stderr(), &buf).await,
            Target::Writer(w) => write_flush(w, &buf).await,
        };
        res.map_err(|e| Error::sink(&self.name, e.to_string()))?;
        batch.ack.acknowledge();
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
