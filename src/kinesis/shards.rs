//! Shards: their place in the resharding graph, where a reader is in each, and how a shard's raw
//! Kinesis records become rivulet records.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::kpl;
use crate::record::Record;
use crate::{Error, Result};

/// The whole 128-bit hash-key space.
pub(crate) const FULL_RANGE: (u128, u128) = (0, u128::MAX);

/// A shard as ListShards (or a GetRecords `ChildShards` entry) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub(crate) id: Arc<str>,
    /// The parent and the adjacent parent (a merge has two, a split one, an original shard none).
    pub(crate) parents: Vec<String>,
    /// Inclusive hash-key range.
    pub(crate) hash_range: (u128, u128),
    /// Closed by a reshard: it has an ending sequence number and no new records.
    pub(crate) closed: bool,
}

/// Parses a hash key (a decimal 128-bit number as Kinesis writes it).
pub(crate) fn parse_hash_key(s: &str) -> Option<u128> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Where a reader is in one shard: the offset stored for it in a [`Position`](crate::Position).
///
/// Stored as text: `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP:<ms>`, a sequence number (every record
/// up to and including it is read), `<sequence>:<sub-sequence>` (read up to that sub-record of an
/// aggregated record), or `SHARD_END`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShardOffset {
    TrimHorizon,
    Latest,
    AtTimestamp(i64),
    After {
        sequence: Arc<str>,
        sub: Option<u64>,
    },
    End,
}

impl ShardOffset {
    pub(crate) fn parse(shard: &str, text: &str) -> Result<Self> {
        let bad = || {
            Error::source(
                shard,
                format!("checkpoint offset `{text}` is not a Kinesis position"),
            )
        };
        Ok(match text {
            "TRIM_HORIZON" => Self::TrimHorizon,
            "LATEST" => Self::Latest,
            "SHARD_END" => Self::End,
            _ => {
                if let Some(ms) = text.strip_prefix("AT_TIMESTAMP:") {
                    Self::AtTimestamp(ms.parse().map_err(|_| bad())?)
                } else {
                    let (seq, sub) = match text.split_once(':') {
                        Some((seq, sub)) => (seq, Some(sub.parse().map_err(|_| bad())?)),
                        None => (text, None),
                    };
                    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    Self::After {
                        sequence: Arc::from(seq),
                        sub,
                    }
                }
            }
        })
    }
}

impl fmt::Display for ShardOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TrimHorizon => f.write_str("TRIM_HORIZON"),
            Self::Latest => f.write_str("LATEST"),
            Self::AtTimestamp(ms) => write!(f, "AT_TIMESTAMP:{ms}"),
            Self::After {
                sequence,
                sub: None,
            } => f.write_str(sequence),
            Self::After {
                sequence,
                sub: Some(s),
            } => write!(f, "{sequence}:{s}"),
            Self::End => f.write_str("SHARD_END"),
        }
    }
}

/// Counts from unpacking one shard's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Records produced (plain records plus sub-records).
    pub records: u64,
    /// Sub-records whose hash key lies outside the shard's range, set aside for the error output
    /// (only with [`RecordUnpacker::with_hash_range`]).
    pub out_of_range: u64,
    /// Records that started with the aggregation magic bytes but were not valid aggregates; they
    /// were passed through as plain records.
    pub malformed_aggregates: u64,
}

/// Turns one shard's raw Kinesis records into rivulet [`Record`]s: KPL de-aggregation (sub-records
/// are slices of the outer record, not copies), the optional hash-key-range filter, and the skip
/// of sub-records already read before a restart.
///
/// ```
/// use bytes::Bytes;
/// use rivulet::kinesis::RecordUnpacker;
///
/// let mut unpacker = RecordUnpacker::new("shardId-000000000000");
/// let packed = rivulet::kpl::aggregate([("k1", None, &b"a"[..]), ("k2", None, &b"b"[..])]);
/// let mut out = Vec::new();
/// let stats = unpacker.unpack(&packed, "k1", "4960", 1_700_000_000_000, &mut out);
/// assert_eq!(stats.records, 2);
/// assert_eq!(out[1].payload(), &b"b"[..]);
/// assert_eq!(out[1].partition_key(), Some("k2"));
/// assert_eq!(out[1].sub_sequence_number(), Some(1));
/// ```
#[derive(Debug, Clone)]
pub struct RecordUnpacker {
    shard: Arc<str>,
    range: (u128, u128),
    /// Sub-records of this sequence number up to this sub-sequence were read before a restart.
    skip: Option<(Arc<str>, u64)>,
    key_hashes: KeyHashes,
}

/// The hash keys of one aggregate's key tables, each worked out once (one MD5 per distinct
/// partition key, not one per sub-record); the vectors are reused from aggregate to aggregate.
#[derive(Debug, Clone, Default)]
struct KeyHashes {
    /// By partition key index; `None`: not worked out yet.
    partition: Vec<Option<u128>>,
    /// By explicit hash key index; `Some(None)`: the key is not a decimal u128.
    explicit: Vec<Option<Option<u128>>>,
}

impl KeyHashes {
    /// Forgets the last aggregate's hashes; the next one has tables of these lengths.
    fn reset(&mut self, partition_keys: usize, explicit_hash_keys: usize) {
        self.partition.clear();
        self.partition.resize(partition_keys, None);
        self.explicit.clear();
        self.explicit.resize(explicit_hash_keys, None);
    }

    /// The hash key of a sub-record, from its entries in the key tables (`None`: its explicit hash
    /// key does not parse).
    fn get(
        &mut self,
        (partition_keys, p): (&[Arc<str>], usize),
        (explicit_hash_keys, e): (&[Arc<str>], Option<usize>),
    ) -> Option<u128> {
        match e {
            Some(e) => *self.explicit[e]
                .get_or_insert_with(|| kpl::hash_key("", Some(&explicit_hash_keys[e]))),
            None => Some(
                *self.partition[p]
                    .get_or_insert_with(|| kpl::partition_key_hash(&partition_keys[p])),
            ),
        }
    }
}

impl RecordUnpacker {
    /// An unpacker for records of `shard`, accepting every hash key.
    pub fn new(shard: impl Into<Arc<str>>) -> Self {
        Self {
            shard: shard.into(),
            range: FULL_RANGE,
            skip: None,
            key_hashes: KeyHashes::default(),
        }
    }

    /// Sets aside sub-records whose hash key lies outside `start..=end` (the shard's range), as the
    /// KCL filters them: they are still produced, marked with a [`Rejection`](crate::Rejection) of
    /// kind `out_of_shard_range`, so the pipeline sends them to the error output.
    ///
    /// Without it every sub-record is produced as it is. Aggregators other than the KPL route an
    /// aggregate by its first record's key, and the KPL's own shard prediction can be stale after
    /// a reshard; either way such sub-records are in this stream only once, here.
    pub fn with_hash_range(mut self, start: u128, end: u128) -> Self {
        self.range = (start, end);
        self
    }

    /// Skips the sub-records of `sequence` up to and including `sub` (resuming inside an
    /// aggregated record). A plain record with that sequence number is skipped whole.
    pub(crate) fn skip_through(&mut self, sequence: Arc<str>, sub: u64) {
        self.skip = Some((sequence, sub));
    }

    /// Unpacks one Kinesis record (`data`, partition key, sequence number, arrival time) into
    /// `out`.
    pub fn unpack(
        &mut self,
        data: &Bytes,
        partition_key: &str,
        sequence: &str,
        arrival_ms: i64,
        out: &mut Vec<Record>,
    ) -> UnpackStats {
        let sequence: Arc<str> = Arc::from(sequence);
        let skip_through = match self.skip.take() {
            Some((seq, sub)) if seq == sequence => Some(sub),
            // A different record: the one to skip inside is gone (or was never aggregated).
            Some(_) | None => None,
        };
        let mut stats = UnpackStats::default();
        match kpl::deaggregate(data) {
            Ok(Some(aggregate)) => {
                let kpl::Aggregate {
                    partition_keys,
                    explicit_hash_keys,
                    records,
                } = aggregate;
                out.reserve(records.len());
                let filter = self.range != FULL_RANGE;
                if filter {
                    self.key_hashes
                        .reset(partition_keys.len(), explicit_hash_keys.len());
                }
                for (i, sub) in records.into_iter().enumerate() {
                    let i = i as u64;
                    if skip_through.is_some_and(|s| i <= s) {
                        continue;
                    }
                    let key = &partition_keys[sub.partition_key_index];
                    let mut record = Record::new(sub.data, arrival_ms)
                        .with_partition_key(Arc::clone(key))
                        .with_shard_id(Arc::clone(&self.shard))
                        .with_sequence_number(Arc::clone(&sequence))
                        .with_sub_sequence_number(i);
                    // A sub-record whose explicit hash key does not parse is kept: it cannot be
                    // placed.
                    if let Some(h) = filter
                        .then(|| {
                            self.key_hashes.get(
                                (&partition_keys, sub.partition_key_index),
                                (&explicit_hash_keys, sub.explicit_hash_key_index),
                            )
                        })
                        .flatten()
                        .filter(|h| *h < self.range.0 || *h > self.range.1)
                    {
                        stats.out_of_range += 1;
                        record = record.with_rejection(
                            "out_of_shard_range",
                            format!(
                                "sub-record {i} of an aggregated record has hash key {h}, \
                                 outside the range {}..={} of shard {} (filtered as the KCL \
                                 does: filter_out_of_range_sub_records = true)",
                                self.range.0, self.range.1, self.shard
                            ),
                        );
                    }
                    out.push(record);
                    stats.records += 1;
                }
            }
            other => {
                if let Err(e) = other {
                    stats.malformed_aggregates += 1;
                    tracing::debug!(
                        shard = %self.shard,
                        sequence = %sequence,
                        "passing a malformed aggregated record through as a plain record: {e}"
                    );
                }
                if skip_through.is_none() {
                    out.push(
                        Record::new(data.clone(), arrival_ms)
                            .with_partition_key(partition_key)
                            .with_shard_id(Arc::clone(&self.shard))
                            .with_sequence_number(sequence),
                    );
                    stats.records += 1;
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_text() {
        for text in [
            "TRIM_HORIZON",
            "LATEST",
            "SHARD_END",
            "AT_TIMESTAMP:1700000000000",
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588898:3",
        ] {
            let o = ShardOffset::parse("s", text).unwrap();
            assert_eq!(o.to_string(), text);
        }
        for bad in ["", "abc", "12:x", ":3", "AT_TIMESTAMP:soon"] {
            assert!(ShardOffset::parse("s", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sub_records_share_the_outer_buffer_and_are_numbered() {
        let packed = kpl::aggregate([
            ("a", None, &b"one"[..]),
            ("b", None, &b"two"[..]),
            ("a", None, &b"three"[..]),
        ]);
        let mut out = Vec::new();
        let stats = RecordUnpacker::new("s").unpack(&packed, "outer", "7", 5, &mut out);
        assert_eq!(stats.records, 3);
        let range = packed.as_ptr() as usize..packed.as_ptr() as usize + packed.len();
        for (i, r) in out.iter().enumerate() {
            assert!(range.contains(&(r.payload().as_ptr() as usize)));
            assert_eq!(r.sub_sequence_number(), Some(i as u64));
            assert_eq!(r.sequence_number(), Some("7"));
            assert_eq!(r.arrival_time_ms(), 5);
        }
        assert_eq!(out[2].partition_key(), Some("a"));
    }

    #[test]
    fn sub_records_outside_the_shard_range_are_set_aside_with_a_reason() {
        // Explicit hash keys place the sub-records on either side of 2^127.
        let low = "1";
        let high = (1u128 << 127).to_string();
        let packed = kpl::aggregate([
            ("k", Some(low), &b"low"[..]),
            ("k", Some(high.as_str()), &b"high"[..]),
        ]);
        let mut out = Vec::new();
        let stats = RecordUnpacker::new("s")
            .with_hash_range(1u128 << 127, u128::MAX)
            .unpack(&packed, "k", "1", 0, &mut out);
        assert_eq!((stats.records, stats.out_of_range), (2, 1));
        assert_eq!(out[0].payload(), &b"low"[..]);
        let why = out[0]
            .rejection()
            .expect("the low key is outside the upper half");
        assert_eq!(why.kind, "out_of_shard_range");
        assert!(why.reason.contains("hash key 1,"), "{}", why.reason);
        assert_eq!(out[1].payload(), &b"high"[..]);
        assert!(out[1].rejection().is_none());
        // Without the filter, both are delivered as they are.
        let mut all = Vec::new();
        let stats = RecordUnpacker::new("s").unpack(&packed, "k", "1", 0, &mut all);
        assert_eq!((stats.records, stats.out_of_range), (2, 0));
        assert!(all.iter().all(|r| r.rejection().is_none()));
    }

    #[test]
    fn malformed_aggregate_passes_through_whole() {
        let mut bytes = kpl::aggregate([("k", None, &b"x"[..])]).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let data = Bytes::from(bytes);
        let mut out = Vec::new();
        let stats = RecordUnpacker::new("s").unpack(&data, "pk", "9", 0, &mut out);
        assert_eq!((stats.records, stats.malformed_aggregates), (1, 1));
        assert_eq!(out[0].payload(), &data);
        assert_eq!(out[0].partition_key(), Some("pk"));
        assert_eq!(out[0].sub_sequence_number(), None);
    }

    #[test]
    fn resume_skips_sub_records_already_read() {
        let packed = kpl::aggregate([
            ("k", None, &b"0"[..]),
            ("k", None, &b"1"[..]),
            ("k", None, &b"2"[..]),
        ]);
        let mut u = RecordUnpacker::new("s");
        u.skip_through(Arc::from("5"), 1);
        let mut out = Vec::new();
        u.unpack(&packed, "k", "5", 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload(), &b"2"[..]);
        // The skip applies to that record only.
        u.unpack(&packed, "k", "6", 0, &mut out);
        assert_eq!(out.len(), 4);
        // A plain record at the resume sequence was read whole before.
        let mut u = RecordUnpacker::new("s");
        u.skip_through(Arc::from("8"), 0);
        let mut out = Vec::new();
        u.unpack(&Bytes::from_static(b"plain"), "k", "8", 0, &mut out);
        assert!(out.is_empty());
    }
}
