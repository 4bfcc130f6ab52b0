//! Records as they come off a source, and positions in a source.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where a record came from: enough to find it again and to de-duplicate it downstream.
///
/// For Kinesis this is (shard id, sequence number, sub-sequence number); a file source uses the file
/// as the partition and the byte offset as the sequence; the generator uses its record counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordId {
    /// The source partition (Kinesis shard id, file path, `generator`).
    pub partition: String,
    /// Position of the record within its partition (Kinesis sequence number, byte offset, counter).
    pub sequence: String,
    /// Index of a sub-record inside an aggregated record (KPL), 0 for plain records.
    pub sub_sequence: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.partition, self.sequence, self.sub_sequence
        )
    }
}

/// One record of a stream.
///
/// The payload is a [`Bytes`] handle: sources hand out slices of the buffers they read into, so a
/// payload is never copied on its way into the pipeline. Cloning a `Record` clones reference counts,
/// not bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    payload: Bytes,
    partition_key: Option<Arc<str>>,
    arrival_time_ms: i64,
    shard_id: Option<Arc<str>>,
    sequence_number: Option<Arc<str>>,
    sub_sequence_number: Option<u64>,
    rejection: Option<Box<Rejection>>,
    /// A row pushed as Arrow ([`PushHandle::push_rows`](crate::PushHandle::push_rows)): the
    /// record is this row, already decoded, and its payload is empty.
    row: Option<ArrowRow>,
}

/// One row of a shared Arrow batch.
#[derive(Debug, Clone)]
pub(crate) struct ArrowRow {
    pub(crate) batch: Arc<arrow::array::RecordBatch>,
    pub(crate) row: usize,
}

impl PartialEq for ArrowRow {
    fn eq(&self, other: &Self) -> bool {
        self.row == other.row
            && (Arc::ptr_eq(&self.batch, &other.batch)
                || self.batch.slice(self.row, 1) == other.batch.slice(other.row, 1))
    }
}

impl Eq for ArrowRow {}

/// Why a source set a record aside: the record was read, and the pipeline sends it to the error
/// output (stage `source`) instead of processing it; it counts as stored once it is stored there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A stable name for the error output's `kind` column, e.g. `out_of_shard_range`.
    pub kind: String,
    /// What is wrong with the record, for people.
    pub reason: String,
}

impl Record {
    /// A record with `payload` that arrived at `arrival_time_ms` (milliseconds since the Unix epoch).
    pub fn new(payload: Bytes, arrival_time_ms: i64) -> Self {
        Self {
            payload,
            partition_key: None,
            arrival_time_ms,
            shard_id: None,
            sequence_number: None,
            sub_sequence_number: None,
            rejection: None,
            row: None,
        }
    }

    /// A record that is row `row` of `batch`, pushed as Arrow: it is decoded by taking its
    /// columns, and its payload is empty (the error output and the raw-data copy show it as a
    /// JSON object).
    pub(crate) fn arrow_row(
        batch: Arc<arrow::array::RecordBatch>,
        row: usize,
        arrival_time_ms: i64,
    ) -> Self {
        let mut r = Self::new(Bytes::new(), arrival_time_ms);
        r.row = Some(ArrowRow { batch, row });
        r
    }

    /// The record with `payload` in place of the Arrow row it was.
    pub(crate) fn into_payload(mut self, payload: Bytes) -> Self {
        self.row = None;
        self.payload = payload;
        self
    }

    /// The Arrow row this record is, when it was pushed as one.
    pub(crate) fn row(&self) -> Option<&ArrowRow> {
        self.row.as_ref()
    }

    /// The payload, or for a record pushed as an Arrow row, the row as a JSON object: what the
    /// error output, the raw-data copy and a record transform see of it.
    pub fn payload_or_row_json(&self) -> Bytes {
        match &self.row {
            None => self.payload.clone(),
            Some(r) => {
                let mut out = Vec::new();
                let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                let written = w.write(&r.batch.slice(r.row, 1)).and_then(|()| w.finish());
                if written.is_err() {
                    // A column arrow's JSON writer has no encoding for: the row is shown by its
                    // debug form rather than lost from view.
                    out = format!("{:?}", r.batch.slice(r.row, 1)).into_bytes();
                }
                if out.last() == Some(&b'\n') {
                    out.pop();
                }
                Bytes::from(out)
            }
        }
    }

    /// Sets the partition key. Sub-records of one aggregated record share their keys: pass an
    /// `Arc<str>` to avoid a copy per record.
    pub fn with_partition_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Sets the shard (or other source partition) the record was read from.
    pub fn with_shard_id(mut self, shard_id: impl Into<Arc<str>>) -> Self {
        self.shard_id = Some(shard_id.into());
        self
    }

    /// Sets the sequence number within the shard.
    pub fn with_sequence_number(mut self, sequence: impl Into<Arc<str>>) -> Self {
        self.sequence_number = Some(sequence.into());
        self
    }

    /// Sets the sub-sequence number (index within a KPL aggregated record).
    pub fn with_sub_sequence_number(mut self, sub_sequence: u64) -> Self {
        self.sub_sequence_number = Some(sub_sequence);
        self
    }

    /// The record with another payload, and the same metadata.
    pub fn with_payload(mut self, payload: Bytes) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the record aside: the pipeline sends it to the error output with `kind` and `reason`
    /// instead of processing it.
    pub fn with_rejection(mut self, kind: impl Into<String>, reason: impl Into<String>) -> Self {
        self.rejection = Some(Box::new(Rejection {
            kind: kind.into(),
            reason: reason.into(),
        }));
        self
    }

    /// Why the source set the record aside, if it did.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.rejection.as_deref()
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The partition key, when the source has one.
    pub fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }

    /// Arrival time in milliseconds since the Unix epoch; this is the record's `ROWTIME`.
    pub fn arrival_time_ms(&self) -> i64 {
        self.arrival_time_ms
    }

    /// The shard or source partition, when known.
    pub fn shard_id(&self) -> Option<&str> {
        self.shard_id.as_deref()
    }

    /// The sequence number, when known.
    pub fn sequence_number(&self) -> Option<&str> {
        self.sequence_number.as_deref()
    }

    /// The sub-sequence number, when the record came out of an aggregated record.
    pub fn sub_sequence_number(&self) -> Option<u64> {
        self.sub_sequence_number
    }

    /// The record's id, when the source gave it a shard and sequence number.
    pub fn id(&self) -> Option<RecordId> {
        Some(RecordId {
            partition: self.shard_id.as_deref()?.to_owned(),
            sequence: self.sequence_number.as_deref()?.to_owned(),
            sub_sequence: self.sub_sequence_number.unwrap_or(0),
        })
    }
}

/// A position in a source: for each source partition, the offset up to which it has been read.
///
/// Positions are opaque to the pipeline; each source decides what an offset means (a Kinesis
/// sequence number, a byte offset, a record count). A source attaches the position reached after each
/// batch it yields; once every sink has acknowledged everything derived from that batch and all
/// earlier ones, the pipeline hands the position back to [`Source::commit`](crate::Source::commit),
/// which is where a checkpoint is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    offsets: BTreeMap<String, String>,
}

impl Position {
    /// An empty position (no partition read yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// A position with a single partition.
    pub fn single(partition: impl Into<String>, offset: impl Into<String>) -> Self {
        let mut p = Self::new();
        p.set(partition, offset);
        p
    }

    /// Sets the offset of `partition`.
    pub fn set(&mut self, partition: impl Into<String>, offset: impl Into<String>) {
        self.offsets.insert(partition.into(), offset.into());
    }

    /// The offset of `partition`, if it has one.
    pub fn get(&self, partition: &str) -> Option<&str> {
        self.offsets.get(partition).map(String::as_str)
    }

    /// Partitions and their offsets, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.offsets.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when no partition has an offset.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Folds a later position into this one: partitions in `later` take its offsets, others keep theirs.
    pub fn advance(&mut self, later: &Position) {
        for (k, v) in &later.offsets {
            self.offsets.insert(k.clone(), v.clone());
        }
    }
}

/// Name under which the input stream is registered in SQL.
pub const SOURCE_STREAM: &str = "SOURCE_SQL_STREAM_001";
/// Short alias of the input stream in SQL.
pub const SOURCE_ALIAS: &str = "source";
/// Name of the output stream of a single-statement query.
pub const DESTINATION_STREAM: &str = "DESTINATION_SQL_STREAM";
/// Name of the error output stream.
pub const ERROR_STREAM: &str = "error_stream";
/// Name of the stream a raw-data copy receives.
pub const RAW_STREAM: &str = "raw_data";

/// The wall clock in milliseconds since the epoch: arrival and processing times.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_id_needs_shard_and_sequence() {
        let r = Record::new(Bytes::from_static(b"x"), 1);
        assert_eq!(r.id(), None);
        let r = r.with_shard_id("shardId-0").with_sequence_number("49");
        assert_eq!(r.id().unwrap().to_string(), "shardId-0/49/0");
    }

    #[test]
    fn payload_is_shared_not_copied() {
        let buf = Bytes::from(vec![1u8; 64]);
        let r = Record::new(buf.slice(8..16), 0);
        assert_eq!(r.payload().as_ptr(), buf[8..].as_ptr());
    }

    #[test]
    fn position_advance_keeps_untouched_partitions() {
        let mut p = Position::single("a", "1");
        p.set("b", "5");
        p.advance(&Position::single("a", "9"));
        assert_eq!(p.get("a"), Some("9"));
        assert_eq!(p.get("b"), Some("5"));
    }
}
