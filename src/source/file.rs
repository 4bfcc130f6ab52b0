//! A local file read as a stream: once, or followed as it grows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{PartitionEvent, Source, SourceBatch, DEFAULT_PARTITION};
use crate::record::now_ms;
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
    /// Bytes read and not handed out yet: whole records a batch had no room for, then a record
    /// still incomplete. It always starts at a record's start (or in the dropped tail of an
    /// oversized one).
    pending: BytesMut,
    /// How framing stands at the end of what it scanned of `pending`.
    scan: Scan,
    /// `pending` holds whole records a batch stopped at `max_batch_records` had no room for.
    waiting: bool,
    /// Most records per batch.
    max_batch_records: usize,
    /// Longest record: a longer one is set aside (its first bytes go to the error output) and
    /// framing goes on after it.
    max_record_bytes: usize,
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

/// Framing state between reads, so each byte is scanned once however long a record grows.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Bytes of `pending` already scanned, all in the record that starts it.
    scanned: usize,
    /// CSV: the scan stopped inside a quoted field.
    in_quotes: bool,
    /// The rest of an oversized record is being dropped up to the next line break.
    dropping: bool,
}

/// One piece framing cut: a record, or a record set aside with why.
enum Piece {
    Record(usize, usize),
    SetAside(usize, usize, &'static str, String),
}

/// One framing pass over the bytes of `pending`: where the record being framed starts, how far
/// the scan got, and the pieces cut so far.
struct Framer<'a> {
    bytes: &'a [u8],
    framing: Framing,
    /// Longest record.
    max: usize,
    /// Where the record being framed starts.
    start: usize,
    /// Where the scan goes on.
    i: usize,
    in_quotes: bool,
    dropping: bool,
    pieces: Vec<Piece>,
}

impl<'a> Framer<'a> {
    /// A pass over `bytes` that goes on from where `scan` stopped.
    fn resume(bytes: &'a [u8], framing: Framing, max: usize, scan: Scan) -> Self {
        Self {
            bytes,
            framing,
            max,
            start: 0,
            i: scan.scanned.min(bytes.len()),
            in_quotes: scan.in_quotes,
            dropping: scan.dropping,
            pieces: Vec::new(),
        }
    }

    /// Cuts pieces until there are `limit` of them or the bytes hold no whole record more.
    fn cut(&mut self, limit: usize) {
        while self.pieces.len() < limit {
            if self.dropping && !self.skip_dropped_tail() {
                break;
            }
            let (end, reached) = self.record_end();
            if end.unwrap_or(self.bytes.len()) - self.start <= self.max {
                match end {
                    Some(end) => {
                        self.pieces.push(Piece::Record(self.start, end));
                        self.start = end + 1;
                        self.i = self.start;
                        continue;
                    }
                    None => {
                        self.i = reached;
                        break;
                    }
                }
            }
            self.set_aside_oversized();
        }
    }

    /// Drops the rest of an oversized record up to the next line break; false when the bytes
    /// end first (all of them are dropped).
    fn skip_dropped_tail(&mut self) -> bool {
        match memchr::memchr(b'\n', &self.bytes[self.i..]) {
            Some(p) => {
                self.start = self.i + p + 1;
                self.i = self.start;
                self.dropping = false;
                true
            }
            None => {
                self.start = self.bytes.len();
                self.i = self.start;
                false
            }
        }
    }

    /// The end of the record at `start` (its line break), if the bytes hold it, and how far the
    /// scan got.
    fn record_end(&mut self) -> (Option<usize>, usize) {
        let (bytes, i) = (self.bytes, self.i);
        match self.framing {
            Framing::Lines => match memchr::memchr(b'\n', &bytes[i..]) {
                Some(p) => (Some(i + p), i + p),
                None => (None, bytes.len()),
            },
            Framing::CsvRows { quote, escape } => {
                let mut j = i;
                let mut found = None;
                while j < bytes.len() {
                    let b = bytes[j];
                    if self.in_quotes && Some(b) == escape && b != quote {
                        // The escaped byte (a quote, say) is data, also when it is not
                        // read yet: the scan then goes on past it.
                        j += 2;
                        continue;
                    }
                    if b == quote {
                        self.in_quotes = !self.in_quotes;
                    } else if b == b'\n' && !self.in_quotes {
                        found = Some(j);
                        break;
                    }
                    j += 1;
                }
                (found, j)
            }
        }
    }

    /// Sets aside the record at `start`, longer than `max`. A CSV record spanning lines (an
    /// unclosed quote, most often) gives up its first line alone, and framing goes on at the next
    /// line: nothing else is lost. Otherwise its first `max` bytes are kept and the rest dropped.
    fn set_aside_oversized(&mut self) {
        let (start, max) = (self.start, self.max);
        let line = memchr::memchr(b'\n', &self.bytes[start..]).map(|p| start + p);
        if let (Framing::CsvRows { .. }, Some(l)) = (self.framing, line) {
            if l - start <= max {
                self.pieces.push(Piece::SetAside(
                    start,
                    l,
                    "unbalanced_quote",
                    format!(
                        "this line starts a CSV record of more than max_record_bytes \
                         ({max} bytes), most likely a quoted field that is not closed: the \
                         line is set aside and framing goes on at the next line"
                    ),
                ));
                self.in_quotes = false;
                self.start = l + 1;
                self.i = self.start;
                return;
            }
        }
        self.pieces.push(Piece::SetAside(
            start,
            start + max,
            "oversized",
            format!(
                "a record of more than max_record_bytes ({max} bytes): its first {max} bytes \
                 are here, the rest up to the next line break is dropped"
            ),
        ));
        self.in_quotes = false;
        self.dropping = true;
        self.i = start + max;
        self.start = self.i;
    }

    /// At the end of input, a last record without a terminator counts too (unless the batch is
    /// `full`), and the tail being dropped is all consumed.
    fn finish(&mut self, at_eof: bool, full: bool) {
        let len = self.bytes.len();
        if at_eof && !full && self.start < len && !self.dropping {
            self.pieces.push(Piece::Record(self.start, len));
            self.start = len;
        }
        if at_eof && self.dropping {
            self.start = len;
        }
    }

    /// Where the next pass goes on, relative to the bytes that stay after `start`.
    fn scan_after(&self, full: bool) -> Scan {
        if full {
            Scan {
                dropping: self.dropping,
                ..Scan::default()
            }
        } else {
            Scan {
                scanned: self.i.max(self.start) - self.start,
                in_quotes: self.in_quotes,
                dropping: self.dropping,
            }
        }
    }
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
        self.scan = Scan::default();
        self.waiting = false;
        self.skip_records = self.header_records;
        self.open().await
    }

    /// Cuts whole records off the front of `pending` (at most `max_batch_records`), scanning only
    /// bytes not scanned before. At end of input, a last record without a terminator counts too.
    ///
    /// A record longer than `max_record_bytes` is set aside: its first `max_record_bytes` bytes go
    /// on as a record the pipeline sends to the error output, the rest up to the next line break
    /// is dropped, and framing goes on there. In CSV, when an unclosed quote is what made the
    /// record long, the line holding the quote is set aside and framing goes on at the next line,
    /// so one stray quote costs one line rather than the rest of the file.
    fn take_records(&mut self, at_eof: bool) -> Vec<Record> {
        let limit = self.max_batch_records.max(1);
        // A scan that stopped past the end (an escape as the last byte read) resumes there; at
        // the end of input, the record it is in is the last.
        if self.scan.scanned > self.pending.len() && !at_eof {
            return Vec::new();
        }
        let mut framer = Framer::resume(
            &self.pending,
            self.framing,
            self.max_record_bytes.max(1),
            self.scan,
        );
        framer.cut(limit);
        let full = framer.pieces.len() == limit;
        framer.finish(at_eof, full);
        let scan = framer.scan_after(full);
        let Framer { start, pieces, .. } = framer;
        self.scan = scan;
        self.waiting = full;
        self.offset += start as u64;
        let data = self.pending.split_to(start).freeze();
        self.records_of(&data, pieces)
    }

    /// The records of the pieces cut from `data`, less the blank ones and those still to skip.
    fn records_of(&mut self, data: &Bytes, pieces: Vec<Piece>) -> Vec<Record> {
        let arrival = now_ms();
        let mut records = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Record(from, to) => self.push_record(data, from, to, arrival, &mut records),
                Piece::SetAside(from, to, kind, reason) => {
                    if self.skip_records > 0 {
                        self.skip_records -= 1;
                    }
                    records.push(
                        Record::new(data.slice(from..to), arrival).with_rejection(kind, reason),
                    );
                }
            }
        }
        records
    }

    /// Appends bytes as a read would (for the fuzz target of framing).
    #[cfg(test)]
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Frames what was fed (for the fuzz target of framing).
    #[cfg(test)]
    pub(crate) fn frame(&mut self, at_eof: bool) -> Vec<Record> {
        self.take_records(at_eof)
    }

    /// Bytes framed or dropped so far (for the fuzz target of framing).
    #[cfg(test)]
    pub(crate) fn consumed(&self) -> u64 {
        self.offset
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
            scan: Scan::default(),
            waiting: false,
            max_batch_records: usize::MAX,
            max_record_bytes: crate::format::DEFAULT_MAX_RECORD_BYTES,
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

    fn set_max_record_bytes(&mut self, max: usize) {
        self.max_record_bytes = max.max(1);
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
            if self.waiting {
                // A full batch waiting is handed out as it is; a smaller rest is topped up with
                // the next read first, so batches stay full.
                let full = match self.framing {
                    Framing::Lines => {
                        memchr::memchr_iter(b'\n', &self.pending)
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
            let read_to = self.offset + self.pending.len() as u64;
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

    /// Every record of `s`, as (text, the kind it was set aside as).
    async fn read_with_rejections(mut s: FileSource) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        while let Some(b) = s.next_batch().await.unwrap() {
            out.extend(b.records.iter().map(|r| {
                (
                    String::from_utf8(r.payload().to_vec()).unwrap(),
                    r.rejection().map(|j| j.kind.clone()),
                )
            }));
        }
        out
    }

    fn csv(p: &Path) -> FileSource {
        FileSource::builder(p)
            .with_framing(Framing::CsvRows {
                quote: b'"',
                escape: Some(b'\\'),
            })
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_stray_quote_costs_its_line_and_framing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        // 3 MiB of rows, row 3 with a quote that never closes.
        let rows: Vec<String> = (0..100_000)
            .map(|i| {
                if i == 3 {
                    format!("{i},\"broken")
                } else {
                    format!("{i},\"ok, {i}\"")
                }
            })
            .collect();
        std::fs::write(&p, rows.join("\n") + "\n").unwrap();
        let mut s = csv(&p);
        s.set_max_record_bytes(1024);
        let got = read_with_rejections(s).await;
        assert_eq!(got.len(), rows.len(), "one record per row");
        for (i, (text, rejected)) in got.iter().enumerate() {
            assert_eq!(text, &rows[i]);
            let want = (i == 3).then(|| "unbalanced_quote".to_owned());
            assert_eq!(rejected, &want, "row {i}");
        }
    }

    #[tokio::test]
    async fn an_oversized_line_is_set_aside_with_its_first_bytes_and_the_next_lines_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.ndjson");
        let long = "x".repeat(3 << 20);
        std::fs::write(&p, format!("a\n{long}\nb\nc")).unwrap();
        let mut s = FileSource::builder(&p).build().unwrap();
        s.set_max_record_bytes(1 << 20);
        let got = read_with_rejections(s).await;
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ("a".to_owned(), None));
        assert_eq!(got[1].0.len(), 1 << 20, "the first max_record_bytes bytes");
        assert_eq!(got[1].1.as_deref(), Some("oversized"));
        assert_eq!(got[2], ("b".to_owned(), None));
        assert_eq!(got[3], ("c".to_owned(), None));
    }

    #[tokio::test]
    async fn an_escape_at_the_end_of_a_read_escapes_the_first_byte_of_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        // Row 1 fills the first read up to its last byte, an escape; the escaped quote is the
        // first byte of the second read.
        let head = "1,\"";
        let fill = "y".repeat(CHUNK_BYTES - head.len() - 1);
        let row1 = format!("{head}{fill}\\\"\nstill row 1\"");
        assert_eq!(row1.as_bytes()[CHUNK_BYTES - 1], b'\\');
        std::fs::write(&p, format!("{row1}\n2,z\n")).unwrap();
        let got = read_with_rejections(csv(&p)).await;
        assert_eq!(got, vec![(row1, None), ("2,z".to_owned(), None)]);
    }

    #[tokio::test]
    async fn a_record_growing_in_a_followed_file_is_cut_at_the_limit_not_held() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        std::fs::write(&p, "1,a\n2,\"open\n").unwrap();
        let mut s = FileSource::builder(&p)
            .with_framing(Framing::CsvRows {
                quote: b'"',
                escape: None,
            })
            .with_follow(true)
            .with_poll_interval(Duration::from_millis(1))
            .build()
            .unwrap();
        s.set_max_record_bytes(64 << 10);
        // 4 MiB more without a closing quote, in pieces, read as they come.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        let mut got = Vec::new();
        for _ in 0..64 {
            f.write_all("z".repeat(64 << 10).as_bytes()).unwrap();
            let b = s.next_batch().await.unwrap().unwrap();
            got.extend(
                b.records
                    .iter()
                    .map(|r| r.rejection().map(|j| j.kind.clone())),
            );
            assert!(
                s.pending.len() <= (64 << 10) + CHUNK_BYTES,
                "{} bytes held",
                s.pending.len()
            );
        }
        f.write_all(b"\n3,b\n").unwrap();
        for _ in 0..3 {
            let b = s.next_batch().await.unwrap().unwrap();
            got.extend(
                b.records
                    .iter()
                    .map(|r| r.rejection().map(|j| j.kind.clone())),
            );
        }
        assert_eq!(
            got,
            vec![
                None,
                Some("unbalanced_quote".to_owned()),
                Some("oversized".to_owned()),
                None
            ]
        );
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
