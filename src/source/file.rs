//! A local file read as a stream: once, or followed as it grows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{now_ms, PartitionEvent, Source, SourceBatch, DEFAULT_PARTITION};
use crate::record::{Position, Record};
use crate::{Error, Result};

/// Bytes read per call.
const CHUNK_BYTES: usize = 1 << 20;

/// How a file is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Framing {
    /// One record per line (`\n`, with an optional `\r` before it). Blank lines are skipped.
    #[default]
    Lines,
    /// One record per CSV row: a line break inside a quoted field does not end the record.
    CsvRows {
        /// The quote character.
        quote: u8,
        /// The escape character inside quoted fields, if the dialect has one.
        escape: Option<u8>,
    },
}

/// Reads records from a local file.
///
/// Payloads are slices of the buffers the file is read into, so records are not copied. The position
/// is the byte offset after the last whole record returned; a restart from a committed position
/// resumes there.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    partition: Arc<str>,
    framing: Framing,
    follow: bool,
    poll_interval: Duration,
    skip_records: usize,
    /// Records skipped at the start of the file (a header), again whenever it is read anew.
    header_records: usize,
    file: Option<tokio::fs::File>,
    /// Identity of the open file, to notice a rotation (a new file under the same name).
    file_id: Option<u64>,
    /// Offset in the file of the first byte of `pending`.
    offset: u64,
    /// Bytes read that do not yet form a whole record.
    pending: BytesMut,
    /// Bytes read and holding whole records not handed out yet (a batch stopped at
    /// `max_batch_records`); they come before `pending`.
    backlog: Bytes,
    /// Most records per batch.
    max_batch_records: usize,
    eof: bool,
    /// What the partition was last reported as: nothing yet, reading, or caught up (following
    /// at the end of the file).
    reported: Option<PartitionEvent>,
    /// A fingerprint of the file's first bytes (how many, MD5), for positions.
    head: Option<(u64, String)>,
    /// The identity a checkpoint's position names: the file must still be that file for its
    /// offset to mean anything.
    resumed_identity: Option<FileIdentity>,
}

/// Which file a position is in: its inode, and a fingerprint of its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    inode: Option<u64>,
    head_len: u64,
    head_md5: String,
}

/// Bytes at the start of a file that its fingerprint covers.
const HEAD_BYTES: u64 = 1024;

impl FileIdentity {
    /// Parses `<offset>[;ino=<inode>][;head=<len>:<md5>]` (a bare offset from earlier versions).
    fn parse(text: &str) -> Option<(u64, Option<Self>)> {
        let mut parts = text.split(';');
        let offset = parts.next()?.parse().ok()?;
        let (mut inode, mut head) = (None, None);
        for part in parts {
            match part.split_once('=')? {
                ("ino", v) => inode = Some(v.parse().ok()?),
                ("head", v) => {
                    let (len, md5) = v.split_once(':')?;
                    head = Some((len.parse().ok()?, md5.to_owned()));
                }
                _ => return None,
            }
        }
        let identity = head.map(|(head_len, head_md5)| Self {
            inode,
            head_len,
            head_md5,
        });
        Some((offset, identity))
    }
}

/// MD5 (hex) of the first `len` bytes of the file at `path`; `None` when it is shorter.
fn head_md5(path: &Path, len: u64) -> Option<String> {
    use md5::{Digest, Md5};
    use std::io::Read;
    let mut buf = Vec::with_capacity(len as usize);
    std::fs::File::open(path)
        .ok()?
        .take(len)
        .read_to_end(&mut buf)
        .ok()?;
    (buf.len() as u64 == len).then(|| {
        Md5::digest(&buf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// Builder for [`FileSource`].
#[derive(Debug, Clone)]
pub struct FileSourceBuilder {
    path: PathBuf,
    framing: Framing,
    follow: bool,
    poll_interval: Duration,
    skip_records: usize,
    start_offset: u64,
}

impl FileSource {
    /// A builder reading `path` once, as lines.
    pub fn builder(path: impl Into<PathBuf>) -> FileSourceBuilder {
        FileSourceBuilder {
            path: path.into(),
            framing: Framing::Lines,
            follow: false,
            poll_interval: Duration::from_millis(200),
            skip_records: 0,
            start_offset: 0,
        }
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn open(&mut self) -> Result<()> {
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        if let Some(want) = self.resumed_identity.take() {
            // The checkpoint's offset is in the file it was taken on: a file rotated away and
            // replaced, or truncated and written again, is read from its start.
            let inode = file.metadata().await.ok().and_then(|m| file_identity(&m));
            let same_inode = want.inode.is_none() || inode.is_none() || want.inode == inode;
            let same_head = head_md5(&self.path, want.head_len).as_deref() == Some(&want.head_md5);
            if !(same_inode && same_head) {
                tracing::warn!(
                    path = %self.path.display(),
                    "the file is not the one the checkpoint was taken on (rotated, replaced or \
                     rewritten): reading it from its start"
                );
                self.offset = 0;
                self.skip_records = self.header_records;
            }
        }
        self.head = None;
        if self.offset > 0 {
            file.seek(std::io::SeekFrom::Start(self.offset))
                .await
                .map_err(|e| Error::io(format!("seeking in {}", self.path.display()), e))?;
        }
        self.file_id = file.metadata().await.ok().and_then(|m| file_identity(&m));
        self.file = Some(file);
        Ok(())
    }

    /// Starts over at the beginning of whatever file now has the path.
    async fn reopen_from_start(&mut self) -> Result<()> {
        self.offset = 0;
        self.pending.clear();
        self.backlog = Bytes::new();
        self.skip_records = self.header_records;
        self.open().await
    }

    /// Cuts whole records off the front of `pending`. At end of input, a last record without a
    /// terminator counts too.
    fn take_records(&mut self, at_eof: bool) -> Vec<Record> {
        let data = if self.backlog.is_empty() {
            self.pending.split().freeze()
        } else {
            std::mem::take(&mut self.backlog)
        };
        let arrival = now_ms();
        // Sized up front: a growing vector would copy every record several times.
        let limit = self.max_batch_records.max(1);
        let mut records = Vec::with_capacity(limit.min(data.len() / 32 + 1));
        let mut start = 0usize;
        let mut in_quotes = false;
        let mut i = 0usize;
        let bytes = &data[..];
        while i < bytes.len() && records.len() < limit {
            let end = match self.framing {
                Framing::Lines => match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(p) => i + p,
                    None => break,
                },
                Framing::CsvRows { quote, escape } => {
                    let mut j = i;
                    let mut found = None;
                    while j < bytes.len() {
                        let b = bytes[j];
                        if in_quotes && Some(b) == escape && b != quote {
                            // The escaped byte (a quote, say) is data.
                            j += 2;
                            continue;
                        }
                        if b == quote {
                            in_quotes = !in_quotes;
                        } else if b == b'\n' && !in_quotes {
                            found = Some(j);
                            break;
                        }
                        j += 1;
                    }
                    match found {
                        Some(p) => p,
                        None => break,
                    }
                }
            };
            self.push_record(&data, start, end, arrival, &mut records);
            start = end + 1;
            i = start;
        }
        if records.len() == limit && start < data.len() {
            // More whole records may follow: keep them, uncopied, for the next batch.
            self.offset += start as u64;
            self.backlog = data.slice(start..);
            return records;
        }
        if at_eof && start < data.len() {
            self.push_record(&data, start, data.len(), arrival, &mut records);
            start = data.len();
        }
        self.offset += start as u64;
        self.pending = BytesMut::from(&data[start..]);
        records
    }

    fn push_record(
        &mut self,
        data: &Bytes,
        start: usize,
        end: usize,
        arrival: i64,
        out: &mut Vec<Record>,
    ) {
        let mut end = end;
        if end > start && data[end - 1] == b'\r' {
            end -= 1;
        }
        if data[start..end].iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if self.skip_records > 0 {
            self.skip_records -= 1;
            return;
        }
        out.push(Record::new(data.slice(start..end), arrival));
    }

    /// The offset reached, with the file's identity: `<offset>;ino=<inode>;head=<len>:<md5>`.
    fn position(&mut self) -> Position {
        let want = self.offset.min(HEAD_BYTES);
        if want > 0 && self.head.as_ref().is_none_or(|h| h.0 < want) {
            self.head = head_md5(&self.path, want).map(|md5| (want, md5));
        }
        let mut text = self.offset.to_string();
        if let Some(ino) = self.file_id {
            text.push_str(&format!(";ino={ino}"));
        }
        if let Some((len, md5)) = &self.head {
            text.push_str(&format!(";head={len}:{md5}"));
        }
        Position::single(self.partition.as_ref(), text)
    }
}

impl FileSourceBuilder {
    /// How the file is cut into records.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Keeps reading as the file grows instead of ending at its end (like `tail -f`).
    pub fn with_follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// How often a followed file is checked for new data.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Skips the first `n` records of the file, e.g. a CSV header line.
    pub fn with_skip_records(mut self, n: usize) -> Self {
        self.skip_records = n;
        self
    }

    /// Starts at a byte offset, e.g. one a previous run committed.
    pub fn with_start_offset(mut self, offset: u64) -> Self {
        self.start_offset = offset;
        self
    }

    /// Builds the source; fails when the file does not exist.
    pub fn build(self) -> Result<FileSource> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        if !meta.is_file() {
            return Err(Error::source(
                self.path.display().to_string(),
                "not a regular file",
            ));
        }
        // A header is only at the very start of the file.
        let skip_records = if self.start_offset == 0 {
            self.skip_records
        } else {
            0
        };
        Ok(FileSource {
            partition: Arc::from(self.path.display().to_string()),
            path: self.path,
            framing: self.framing,
            follow: self.follow,
            poll_interval: self.poll_interval,
            skip_records,
            header_records: self.skip_records,
            file: None,
            file_id: None,
            offset: self.start_offset,
            pending: BytesMut::new(),
            backlog: Bytes::new(),
            max_batch_records: usize::MAX,
            eof: false,
            reported: None,
            head: None,
            resumed_identity: None,
        })
    }
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &str {
        &self.partition
    }

    fn set_max_batch_records(&mut self, max: usize) {
        self.max_batch_records = max.max(1);
    }

    async fn resume(&mut self, position: &Position) -> Result<()> {
        if let Some(text) = position.get(&self.partition) {
            let (offset, identity) = FileIdentity::parse(text).ok_or_else(|| {
                Error::source(
                    self.partition.as_ref(),
                    format!("checkpoint offset `{text}` is not a file position"),
                )
            })?;
            self.resumed_identity = identity;
            if self.file.is_some() {
                return Err(Error::source(
                    self.partition.as_ref(),
                    "cannot resume a file source that has started reading",
                ));
            }
            self.offset = offset;
            if offset > 0 {
                // The header is before any committed offset.
                self.skip_records = 0;
            }
        }
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        let Some(mut batch) = self.read_batch().await? else {
            return Ok(None);
        };
        // One partition: declared with the first batch, caught up while following at the end of
        // the file, reading again once records come.
        let now = if batch.records.is_empty() && self.follow && !self.eof {
            PartitionEvent::CaughtUp(Arc::from(DEFAULT_PARTITION))
        } else {
            PartitionEvent::Reading(Arc::from(DEFAULT_PARTITION))
        };
        if self.reported.is_none() {
            batch
                .partitions
                .push(PartitionEvent::declared(DEFAULT_PARTITION));
        }
        if self.reported.as_ref() != Some(&now) {
            batch.partitions.push(now.clone());
            self.reported = Some(now);
        }
        Ok(Some(batch))
    }
}

impl FileSource {
    async fn read_batch(&mut self) -> Result<Option<SourceBatch>> {
        if self.eof {
            return Ok(None);
        }
        if self.file.is_none() {
            self.open().await?;
        }
        loop {
            if !self.backlog.is_empty() {
                // A full batch waiting is handed out as it is; a smaller rest is topped up with
                // the next read first, so batches stay full (copying only that rest's bytes).
                let full = match self.framing {
                    Framing::Lines => {
                        memchr::memchr_iter(b'\n', &self.backlog)
                            .take(self.max_batch_records)
                            .count()
                            >= self.max_batch_records
                    }
                    Framing::CsvRows { .. } => true,
                };
                if full {
                    let records = self.take_records(false);
                    if !records.is_empty() {
                        return Ok(Some(SourceBatch::new(records, self.position())));
                    }
                } else {
                    self.pending = BytesMut::from(&self.backlog[..]);
                    self.backlog = Bytes::new();
                }
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(None);
            };
            let before = self.pending.len();
            self.pending.reserve(CHUNK_BYTES);
            let n = (&mut *file)
                .take(CHUNK_BYTES as u64)
                .read_buf(&mut self.pending)
                .await
                .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
            debug_assert_eq!(self.pending.len(), before + n);
            if n > 0 {
                let records = self.take_records(false);
                if records.is_empty() {
                    // A record longer than one chunk: keep reading.
                    continue;
                }
                return Ok(Some(SourceBatch::new(records, self.position())));
            }
            if !self.follow {
                self.eof = true;
                let records = self.take_records(true);
                return Ok(Some(SourceBatch::new(records, self.position())));
            }
            // Following: a file that was replaced (rotated) or shrank (truncated) is read again
            // from its start.
            let meta = tokio::fs::metadata(&self.path).await.ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let replaced = match (meta.as_ref().and_then(file_identity), self.file_id) {
                (Some(now), Some(open)) => now != open,
                _ => false,
            };
            let read_to = self.offset + (self.backlog.len() + self.pending.len()) as u64;
            if replaced || len < read_to {
                tracing::warn!(
                    path = %self.path.display(),
                    replaced,
                    "file was replaced or shrank; reading it again from the start"
                );
                self.reopen_from_start().await?;
                continue;
            }
            tokio::time::sleep(self.poll_interval).await;
            return Ok(Some(SourceBatch::new(Vec::new(), self.position())));
        }
    }
}

/// The inode of a file, where the platform has one.
fn file_identity(meta: &std::fs::Metadata) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(mut s: FileSource) -> (Vec<String>, Position) {
        let mut out = Vec::new();
        let mut pos = Position::new();
        while let Some(b) = s.next_batch().await.unwrap() {
            out.extend(
                b.records
                    .iter()
                    .map(|r| String::from_utf8(r.payload().to_vec()).unwrap()),
            );
            pos = b.position;
        }
        (out, pos)
    }

    #[tokio::test]
    async fn lines_blank_lines_crlf_and_missing_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.ndjson");
        std::fs::write(&p, "{\"a\":1}\r\n\n{\"a\":2}\n{\"a\":3}").unwrap();
        let (lines, pos) = read_all(FileSource::builder(&p).build().unwrap()).await;
        assert_eq!(lines, vec!["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
        let at = pos.get(&p.display().to_string()).unwrap();
        assert_eq!(at.split(';').next(), Some("25"), "{at}");
    }

    #[tokio::test]
    async fn csv_rows_keep_quoted_line_breaks_and_skip_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        std::fs::write(&p, "a,b\n1,\"x\ny\"\n2,\"q\\\"\nr\"\n3,z\n").unwrap();
        let s = FileSource::builder(&p)
            .with_framing(Framing::CsvRows {
                quote: b'"',
                escape: Some(b'\\'),
            })
            .with_skip_records(1)
            .build()
            .unwrap();
        let (rows, _) = read_all(s).await;
        assert_eq!(rows, vec!["1,\"x\ny\"", "2,\"q\\\"\nr\"", "3,z"]);
    }

    #[tokio::test]
    async fn batches_stop_at_the_pipeline_size_with_exact_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.ndjson");
        let text: String = (0..25).map(|i| format!("line {i:02}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let mut s = FileSource::builder(&p).build().unwrap();
        s.set_max_batch_records(10);
        let key = p.display().to_string();
        let mut sizes = Vec::new();
        let mut lines = Vec::new();
        while let Some(b) = s.next_batch().await.unwrap() {
            if b.records.is_empty() {
                continue;
            }
            sizes.push(b.records.len());
            lines.extend(
                b.records
                    .iter()
                    .map(|r| String::from_utf8(r.payload().to_vec()).unwrap()),
            );
            // Each line is 8 bytes: the position is just after the last record handed out.
            let offset = b.position.get(&key).unwrap().split(';').next().unwrap();
            assert_eq!(offset, (lines.len() * 8).to_string());
        }
        assert_eq!(sizes, vec![10, 10, 5]);
        assert_eq!(lines.len(), 25);
        assert_eq!(lines[24], "line 24");
    }

    #[tokio::test]
    async fn resumes_from_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.ndjson");
        std::fs::write(&p, "one\ntwo\nthree\n").unwrap();
        let s = FileSource::builder(&p)
            .with_start_offset(4)
            .build()
            .unwrap();
        assert_eq!(read_all(s).await.0, vec!["two", "three"]);
    }

    #[tokio::test]
    async fn a_position_resumes_in_its_own_file_and_a_replaced_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.ndjson");
        std::fs::write(&p, "one\ntwo\n").unwrap();
        let (lines, pos) = read_all(FileSource::builder(&p).build().unwrap()).await;
        assert_eq!(lines, ["one", "two"]);
        // The same file, grown: on from the position.
        std::fs::write(&p, "one\ntwo\nthree\n").unwrap();
        let mut s = FileSource::builder(&p).build().unwrap();
        s.resume(&pos).await.unwrap();
        assert_eq!(read_all(s).await.0, ["three"]);
        // Rotated: moved aside, a new file under the name, longer than the old offset.
        std::fs::rename(&p, dir.path().join("in.ndjson.1")).unwrap();
        std::fs::write(&p, "uno\ndos\ntres\n").unwrap();
        let mut s = FileSource::builder(&p).build().unwrap();
        s.resume(&pos).await.unwrap();
        assert_eq!(read_all(s).await.0, ["uno", "dos", "tres"]);
        // Truncated in place and written again (copytruncate): the same inode, other bytes.
        let (_, pos) = read_all(FileSource::builder(&p).build().unwrap()).await;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(0).unwrap();
        std::fs::write(&p, "ein\nzwei\ndrei\nvier\n").unwrap();
        let mut s = FileSource::builder(&p).build().unwrap();
        s.resume(&pos).await.unwrap();
        assert_eq!(read_all(s).await.0, ["ein", "zwei", "drei", "vier"]);
        // A bare offset (a checkpoint of an earlier version) still resumes.
        let key = p.display().to_string();
        let mut s = FileSource::builder(&p).build().unwrap();
        s.resume(&Position::single(&*key, "4")).await.unwrap();
        assert_eq!(read_all(s).await.0, ["zwei", "drei", "vier"]);
    }

    #[tokio::test]
    async fn record_longer_than_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.ndjson");
        let big = "x".repeat(CHUNK_BYTES * 2 + 17);
        std::fs::write(&p, format!("{big}\nsmall\n")).unwrap();
        let (lines, _) = read_all(FileSource::builder(&p).build().unwrap()).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), big.len());
    }

    #[tokio::test]
    async fn follow_rereads_a_rotated_file_skipping_its_header_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rot.csv");
        std::fs::write(&p, "h\na\nb\n").unwrap();
        let mut s = FileSource::builder(&p)
            .with_follow(true)
            .with_skip_records(1)
            .with_poll_interval(Duration::from_millis(10))
            .build()
            .unwrap();
        assert_eq!(s.next_batch().await.unwrap().unwrap().records.len(), 2);
        // Rotate: a new, longer file under the same name.
        std::fs::rename(&p, dir.path().join("rot.csv.1")).unwrap();
        std::fs::write(&p, "h\nc\nd\ne\nf\n").unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            let b = s.next_batch().await.unwrap().unwrap();
            got.extend(b.records.iter().map(|r| r.payload().clone()));
        }
        assert_eq!(got, ["c", "d", "e", "f"]);
    }

    #[tokio::test]
    async fn follow_picks_up_appended_lines() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grow.ndjson");
        std::fs::write(&p, "a\n").unwrap();
        let mut s = FileSource::builder(&p)
            .with_follow(true)
            .with_poll_interval(Duration::from_millis(10))
            .build()
            .unwrap();
        let first = s.next_batch().await.unwrap().unwrap();
        assert_eq!(first.records.len(), 1);
        // Nothing new yet: an empty batch, not the end.
        assert!(s.next_batch().await.unwrap().unwrap().records.is_empty());
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"b\nc").unwrap();
        let next = s.next_batch().await.unwrap().unwrap();
        // "c" has no newline yet: a followed file may still be mid-write.
        assert_eq!(next.records.len(), 1);
        assert_eq!(&next.records[0].payload()[..], b"b");
    }
}
