//! Local files as a sink: one file, or a directory of files rolled by size and age.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{encode_data, OutputBatch, Sink};
use crate::ack::Ack;
use crate::format::{Encoder, OutputFormat};
use crate::{Error, Result};

/// Encoded bytes buffered before they are written to the file.
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug)]
struct OpenFile {
    file: tokio::fs::File,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
}

/// Writes output to local files.
///
/// Data is acknowledged once it is on disk: written and synced (`fdatasync`), so that a checkpoint,
/// which is synced too, never points past output a power loss took back. The sync is made once per
/// flush (a micro-batch or more), not per record.
#[derive(Debug)]
pub struct FileSink {
    name: String,
    path: PathBuf,
    roll: Option<(u64, Duration)>,
    prefix: String,
    encoder: Encoder,
    open: Option<OpenFile>,
    files_opened: u64,
    buf: Vec<u8>,
    unacked: Vec<Ack>,
    /// Bytes written to the open file since its last sync.
    unsynced: bool,
    /// Syncs made (for tests).
    syncs: u64,
    #[cfg(feature = "aws")]
    encryption: Option<crate::crypto::EnvelopeEncryptor>,
}

/// Builder for [`FileSink`].
#[derive(Debug, Clone)]
pub struct FileSinkBuilder {
    path: PathBuf,
    format: OutputFormat,
    roll_bytes: Option<u64>,
    roll_interval: Option<Duration>,
    truncate: bool,
    prefix: String,
    #[cfg(feature = "aws")]
    encryption: Option<crate::crypto::EnvelopeEncryptor>,
}

impl FileSink {
    /// A builder writing to the file at `path`, or into the directory `path` when rolling is set.
    pub fn builder(path: impl Into<PathBuf>) -> FileSinkBuilder {
        FileSinkBuilder {
            path: path.into(),
            format: OutputFormat::JsonLines,
            roll_bytes: None,
            roll_interval: None,
            truncate: false,
            prefix: "part".into(),
            #[cfg(feature = "aws")]
            encryption: None,
        }
    }

    fn extension(&self) -> &'static str {
        match self.encoder.format() {
            OutputFormat::Csv { .. } => "csv",
            _ => "ndjson",
        }
    }

    async fn open_next(&mut self) -> Result<()> {
        let path = if self.roll.is_some() {
            self.files_opened += 1;
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3f");
            self.path.join(format!(
                "{}-{stamp}-{:04}.{}",
                self.prefix,
                self.files_opened,
                self.extension()
            ))
        } else {
            self.path.clone()
        };
        #[cfg(feature = "aws")]
        if self.encryption.is_some() {
            crate::crypto::truncate_torn_envelope(&path).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        self.open = Some(OpenFile {
            file,
            path,
            bytes,
            opened: Instant::now(),
        });
        Ok(())
    }

    /// Writes buffered bytes to the file and acknowledges what they hold.
    async fn write_out(&mut self) -> Result<()> {
        #[cfg(feature = "aws")]
        if let (Some(enc), false) = (&mut self.encryption, self.buf.is_empty()) {
            let mut sealed = Vec::with_capacity(self.buf.len() + 512);
            enc.seal(&self.buf, &mut sealed).await?;
            self.buf = sealed;
        }
        if !self.buf.is_empty() {
            if self.open.is_none() {
                self.open_next().await?;
            }
            let open = self.open.as_mut().expect("opened above");
            let res = match open.file.write_all(&self.buf).await {
                Ok(()) => open.file.flush().await,
                Err(e) => Err(e),
            };
            res.map_err(|e| Error::io(format!("writing {}", open.path.display()), e))?;
            open.bytes += self.buf.len() as u64;
            self.buf.clear();
            self.unsynced = true;
        }
        if self.unsynced && !self.unacked.is_empty() {
            // On disk before acknowledged: a power loss must not take back what a checkpoint
            // covers.
            if let Some(open) = self.open.as_mut() {
                open.file
                    .sync_data()
                    .await
                    .map_err(|e| Error::io(format!("syncing {}", open.path.display()), e))?;
                self.syncs += 1;
            }
            self.unsynced = false;
        }
        for ack in self.unacked.drain(..) {
            ack.acknowledge();
        }
        Ok(())
    }

    async fn close_file(&mut self) -> Result<()> {
        if let Some(open) = self.open.take() {
            open.file
                .sync_all()
                .await
                .map_err(|e| Error::io(format!("syncing {}", open.path.display()), e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    async fn roll_if_due(&mut self) -> Result<()> {
        let (Some((max_bytes, max_age)), Some(open)) = (self.roll, self.open.as_ref()) else {
            return Ok(());
        };
        if open.bytes >= max_bytes || open.opened.elapsed() >= max_age {
            self.close_file().await?;
        }
        Ok(())
    }
}

impl FileSinkBuilder {
    /// Output format (default JSON lines).
    pub fn with_format(mut self, format: OutputFormat) -> Self {
        self.format = format;
        self
    }

    /// Starts a new file once the current one holds this many bytes. Makes `path` a directory.
    pub fn with_roll_bytes(mut self, bytes: Option<u64>) -> Self {
        self.roll_bytes = bytes;
        self
    }

    /// Starts a new file once the current one is this old. Makes `path` a directory.
    pub fn with_roll_interval(mut self, interval: Option<Duration>) -> Self {
        self.roll_interval = interval;
        self
    }

    /// Name prefix of rolled files (default `part`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Seals what is written in envelopes (KMS envelope encryption, see [`crate::crypto`]): the
    /// file becomes a sequence of envelopes, one per write, that `rivulet decrypt` reads back.
    #[cfg(feature = "aws")]
    pub fn with_encryption(mut self, encryptor: crate::crypto::EnvelopeEncryptor) -> Self {
        self.encryption = Some(encryptor);
        self
    }

    /// Empties an existing single file instead of appending to it (default: append).
    pub fn with_truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// Builds the sink, creating the directory (rolling) or the parent directory (single file).
    pub fn build(self) -> Result<FileSink> {
        let rolling = self.roll_bytes.is_some() || self.roll_interval.is_some();
        let dir: &Path = if rolling {
            &self.path
        } else {
            self.path.parent().unwrap_or(Path::new("."))
        };
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        }
        if !rolling && self.path.is_dir() {
            return Err(Error::sink(
                self.path.display().to_string(),
                "is a directory; give a file path, or set roll_bytes / roll_interval to write rolled files into it",
            ));
        }
        if self.roll_bytes == Some(0) {
            return Err(Error::config("roll_bytes", "must be greater than 0"));
        }
        if !rolling {
            // The file exists from the start, empty when truncating, even if no row ever comes:
            // an output stream that produced nothing is an empty file, not a missing one.
            let mut opts = std::fs::OpenOptions::new();
            opts.create(true);
            if self.truncate {
                opts.write(true).truncate(true);
            } else {
                opts.append(true);
            }
            opts.open(&self.path)
                .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        }
        let roll = rolling.then(|| {
            (
                self.roll_bytes.unwrap_or(u64::MAX),
                self.roll_interval.unwrap_or(Duration::MAX),
            )
        });
        Ok(FileSink {
            name: format!("file:{}", self.path.display()),
            path: self.path,
            roll,
            prefix: self.prefix,
            encoder: Encoder::new(self.format),
            open: None,
            files_opened: 0,
            buf: Vec::new(),
            unacked: Vec::new(),
            unsynced: false,
            syncs: 0,
            #[cfg(feature = "aws")]
            encryption: self.encryption,
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: OutputBatch) -> Result<()> {
        if self.open.is_none() && self.buf.is_empty() && !batch.data.is_empty() {
            self.open_next().await?;
        }
        let first = self.open.as_ref().is_some_and(|o| o.bytes == 0) && self.buf.is_empty();
        encode_data(&self.encoder, &batch.data, first, &mut self.buf)?;
        self.unacked.push(batch.ack);
        if self.buf.len() >= WRITE_BUFFER {
            self.write_out().await?;
            self.roll_if_due().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.write_out().await?;
        self.roll_if_due().await
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            tracing::warn!(
                sink = %self.name,
                bytes = self.buf.len(),
                "file sink dropped with unwritten data; it was not acknowledged and will be re-read"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::OutputData;
    use bytes::Bytes;

    fn records(n: usize) -> OutputBatch {
        OutputBatch {
            stream: "s".into(),
            data: OutputData::Encoded(
                (0..n)
                    .map(|i| Bytes::from(format!("{{\"i\":{i}}}")))
                    .collect(),
            ),
            ack: Ack::untracked(),
        }
    }

    #[tokio::test]
    async fn single_file_appends_and_truncates_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.ndjson");
        for truncate in [false, false, true] {
            let mut s = FileSink::builder(&p)
                .with_truncate(truncate)
                .build()
                .unwrap();
            s.write(records(2)).await.unwrap();
            s.flush().await.unwrap();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "{\"i\":0}\n{\"i\":1}\n");
    }

    #[tokio::test]
    async fn rolls_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::builder(dir.path().join("out"))
            .with_roll_bytes(Some(20))
            .build()
            .unwrap();
        for _ in 0..3 {
            s.write(records(3)).await.unwrap();
            s.flush().await.unwrap();
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        let total: usize = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
            .sum();
        assert_eq!(total, 9);
    }

    #[tokio::test]
    async fn rolls_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut s = FileSink::builder(&out)
            .with_format(OutputFormat::Csv {
                delimiter: b',',
                header: true,
            })
            .with_roll_interval(Some(Duration::from_millis(50)))
            .build()
            .unwrap();
        s.write(records(1)).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        // An idle flush closes the old file; the next write opens a new one.
        s.flush().await.unwrap();
        s.write(records(1)).await.unwrap();
        s.flush().await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|f| f.extension().unwrap() == "csv"));
    }

    #[tokio::test]
    async fn acknowledges_only_after_writing() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::builder(dir.path().join("o.ndjson"))
            .build()
            .unwrap();
        let mut b = records(1);
        b.ack = Ack::new(3, Some(tx));
        s.write(b).await.unwrap();
        assert!(
            rx.try_recv().is_err(),
            "acknowledged before the data was written"
        );
        s.flush().await.unwrap();
        match rx.try_recv().unwrap() {
            crate::ack::TrackerMsg::Done(ev) => assert_eq!((ev.seq, ev.failed), (3, false)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.syncs, 1, "synced to disk before it was acknowledged");
        // Nothing new: no sync. Two batches in one flush: one sync.
        s.flush().await.unwrap();
        assert_eq!(s.syncs, 1);
        s.write(records(1)).await.unwrap();
        s.write(records(1)).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(s.syncs, 2);
    }
}
