//! KPL (Kinesis Producer Library) record aggregation: many user records packed into one Kinesis
//! record.
//!
//! Producers built on the KPL, and many others that copy its format, pack several user records
//! into one Kinesis record to get past the per-record cost of the PutRecords API. A reader has to
//! unpack them again. An aggregated record is laid out as:
//!
//! ```text
//! +-------------+--------------------------------+------------------------------+
//! | F3 89 9A C2 | protobuf AggregatedRecord      | MD5 of the protobuf bytes    |
//! | (4 bytes)   | (any length, possibly zero)    | (16 bytes)                   |
//! +-------------+--------------------------------+------------------------------+
//! ```
//!
//! with the protobuf (proto2) messages
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag {
//!   required string key   = 1;
//!   optional string value = 2;
//! }
//! ```
//!
//! Each sub-record names its partition key (and optionally an explicit hash key) by index into
//! the tables, so a key shared by many sub-records is stored once. Sub-records are numbered 0, 1,
//! 2, … within their outer record (the sub-sequence number); tags are not exposed.
//!
//! A record that does not start with the magic bytes is an ordinary record. One that starts with
//! them but is too short, fails the digest check or does not decode is also passed through
//! unchanged by the caller: [`deaggregate`] reports why with a [`KplError`] so that it can be
//! logged and counted.
//!
//! ```
//! use rivulet::kpl::{aggregate, deaggregate};
//!
//! let record = aggregate([("user-1", None, &b"first"[..]), ("user-1", None, &b"second"[..])]);
//! let unpacked = deaggregate(&record).unwrap().expect("an aggregated record");
//! assert_eq!(unpacked.partition_keys.len(), 1);
//! assert_eq!(unpacked.records[1].data, &b"second"[..]);
//!
//! // Anything without the magic bytes is a plain record.
//! assert_eq!(deaggregate(&bytes::Bytes::from_static(b"{\"a\":1}")).unwrap(), None);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

mod wire;

use wire::{Reader, WireError};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that ends an aggregated record.
const DIGEST_LEN: usize = 16;

/// One user record inside an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRecord {
    /// Index into [`Aggregate::partition_keys`].
    pub partition_key_index: usize,
    /// Index into [`Aggregate::explicit_hash_keys`], when the record has one.
    pub explicit_hash_key_index: Option<usize>,
    /// The payload: a slice of the outer record's bytes (zero copy).
    pub data: Bytes,
}

/// A decoded aggregated record.
///
/// Every index in [`records`](Aggregate::records) has been checked against its table, so
/// indexing the tables with them does not panic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Aggregate {
    /// The distinct partition keys, referenced by [`SubRecord::partition_key_index`].
    pub partition_keys: Vec<Arc<str>>,
    /// The distinct explicit hash keys (decimal strings), referenced by
    /// [`SubRecord::explicit_hash_key_index`].
    pub explicit_hash_keys: Vec<Arc<str>>,
    /// The user records, in order: the position of a record is its sub-sequence number.
    pub records: Vec<SubRecord>,
}

impl Aggregate {
    /// The partition key of `record`.
    ///
    /// # Panics
    ///
    /// If `record` does not come from this aggregate and its index is out of range.
    pub fn partition_key(&self, record: &SubRecord) -> &str {
        &self.partition_keys[record.partition_key_index]
    }

    /// The explicit hash key of `record`, if it has one.
    ///
    /// # Panics
    ///
    /// If `record` does not come from this aggregate and its index is out of range.
    pub fn explicit_hash_key(&self, record: &SubRecord) -> Option<&str> {
        record
            .explicit_hash_key_index
            .map(|i| &*self.explicit_hash_keys[i])
    }
}

/// Why a record that starts with the magic bytes is not a valid aggregate (it is then passed
/// through as a plain record by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    /// Fewer bytes than the magic and the digest need.
    #[error(
        "record starts with the KPL magic bytes but is shorter than 20 bytes (magic + MD5 digest); \
         passing it through as a plain record"
    )]
    TooShort,
    /// The MD5 digest at the end does not match the protobuf bytes.
    #[error(
        "record starts with the KPL magic bytes but its MD5 digest does not match its contents \
         (corrupted, or a plain record that happens to start with F3 89 9A C2); passing it \
         through as a plain record"
    )]
    DigestMismatch,
    /// The digest matches but the bytes are not a valid `AggregatedRecord` message.
    #[error(
        "KPL aggregated record has a valid MD5 digest but its protobuf does not decode: {0}; \
         passing it through as a plain record"
    )]
    Protobuf(String),
    /// A sub-record refers to a partition key or explicit hash key the tables do not have.
    #[error(
        "KPL aggregated record is inconsistent: sub-record {record} refers to key table index \
         {index}, beyond the end of its table; passing it through as a plain record"
    )]
    IndexOutOfRange {
        /// The sub-record's position (sub-sequence number) in the aggregate.
        record: usize,
        /// The offending index.
        index: u64,
    },
}

// The protobuf messages, generated by prost: [`aggregate`] encodes with them, and the tests
// decode with them as the reference that the hand-written reader of [`deaggregate`] (`wire`) must
// agree with. The key tables are `string` in the schema; they are `bytes` here (the same wire
// format), as the reader checks them as UTF-8 itself.
#[derive(Clone, PartialEq, Message)]
struct PbAggregatedRecord {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    partition_key_table: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    explicit_hash_key_table: Vec<Bytes>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<PbRecord>,
}

#[derive(Clone, PartialEq, Message)]
struct PbRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    data: Bytes,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<PbTag>,
}

#[derive(Clone, PartialEq, Message)]
struct PbTag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// Unpacks an aggregated record.
///
/// `Ok(None)`: not aggregated (no magic) → plain record. `Ok(Some(_))`: aggregate. `Err(_)`:
/// starts with the magic but is malformed; the caller passes it through as a plain record.
///
/// The sub-records' data are slices of `payload`: nothing is copied.
pub fn deaggregate(payload: &Bytes) -> Result<Option<Aggregate>, KplError> {
    if !payload.starts_with(&MAGIC) {
        return Ok(None);
    }
    if payload.len() < MAGIC.len() + DIGEST_LEN {
        return Err(KplError::TooShort);
    }
    let body_end = payload.len() - DIGEST_LEN;
    let body = &payload[MAGIC.len()..body_end];
    // The digest comes first: it is what tells a plain record that merely starts with the magic
    // bytes from an aggregate, and no protobuf is parsed from bytes it does not vouch for.
    if payload[body_end..] != md5(body) {
        return Err(KplError::DigestMismatch);
    }
    let parsed = Parsed::read(body).map_err(|e| KplError::Protobuf(e.to_string()))?;

    let pk_count = parsed.partition_keys.len();
    let ehk_count = parsed.explicit_hash_keys.len();
    let mut records = Vec::with_capacity(parsed.records.len());
    for (i, r) in parsed.records.iter().enumerate() {
        let partition_key_index = checked_index(i, r.partition_key_index, pk_count)?;
        let explicit_hash_key_index = r
            .explicit_hash_key_index
            .map(|index| checked_index(i, index, ehk_count))
            .transpose()?;
        let data = if r.data.is_empty() {
            Bytes::new()
        } else {
            payload.slice(MAGIC.len() + r.data.start..MAGIC.len() + r.data.end)
        };
        records.push(SubRecord {
            partition_key_index,
            explicit_hash_key_index,
            data,
        });
    }

    Ok(Some(Aggregate {
        partition_keys: shared_strings(body, &parsed.partition_keys)?,
        explicit_hash_keys: shared_strings(body, &parsed.explicit_hash_keys)?,
        records,
    }))
}

/// The fields of one sub-record as read, before its indices are checked against the tables.
struct RawRecord {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    /// Range of the body.
    data: Range<usize>,
}

/// An `AggregatedRecord` read off the wire: ranges of the body, nothing copied yet.
struct Parsed {
    partition_keys: Vec<Range<usize>>,
    explicit_hash_keys: Vec<Range<usize>>,
    records: Vec<RawRecord>,
}

impl Parsed {
    /// Reads the protobuf `body` (between the magic and the digest).
    fn read(body: &[u8]) -> Result<Self, WireError> {
        let mut parsed = Parsed {
            partition_keys: Vec::new(),
            explicit_hash_keys: Vec::new(),
            // A sub-record takes at least four bytes (two keys, a length, an index).
            records: Vec::with_capacity(body.len() / 64),
        };
        let mut r = Reader::new(body);
        while !r.at_end() {
            let (field, wire_type) = r.key()?;
            match field {
                1 => {
                    r.expect(wire_type, wire::LEN)?;
                    parsed.partition_keys.push(r.len_delimited()?);
                }
                2 => {
                    r.expect(wire_type, wire::LEN)?;
                    parsed.explicit_hash_keys.push(r.len_delimited()?);
                }
                3 => {
                    r.expect(wire_type, wire::LEN)?;
                    let range = r.len_delimited()?;
                    let record = read_record(r.within(range), wire::RECURSION_LIMIT - 1)?;
                    parsed.records.push(record);
                }
                _ => r.skip(field, wire_type, wire::RECURSION_LIMIT)?,
            }
        }
        Ok(parsed)
    }
}

/// Reads one `Record` message (`depth`: nesting levels still allowed inside it).
#[inline]
fn read_record(mut r: Reader<'_>, depth: u32) -> Result<RawRecord, WireError> {
    // proto2 `required` is not enforced, as by generated decoders: a missing
    // `partition_key_index` reads as 0 and a missing `data` as empty. Producers that write proto3
    // style (omitting zero values) rely on exactly that; the index is still range-checked.
    let mut record = RawRecord {
        partition_key_index: 0,
        explicit_hash_key_index: None,
        data: 0..0,
    };
    while !r.at_end() {
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                r.expect(wire_type, wire::VARINT)?;
                record.partition_key_index = r.varint()?;
            }
            2 => {
                r.expect(wire_type, wire::VARINT)?;
                record.explicit_hash_key_index = Some(r.varint()?);
            }
            3 => {
                r.expect(wire_type, wire::LEN)?;
                record.data = r.len_delimited()?;
            }
            4 => {
                // Tags are checked (a malformed one makes the message invalid) but not exposed.
                r.expect(wire_type, wire::LEN)?;
                let range = r.len_delimited()?;
                check_tag(r.within(range), depth - 1)?;
            }
            _ => r.skip(field, wire_type, depth)?,
        }
    }
    Ok(record)
}

/// Checks one `Tag` message: `key` and `value` are UTF-8 strings.
fn check_tag(mut r: Reader<'_>, depth: u32) -> Result<(), WireError> {
    while !r.at_end() {
        let (field, wire_type) = r.key()?;
        match field {
            1 | 2 => {
                r.expect(wire_type, wire::LEN)?;
                let range = r.len_delimited()?;
                if std::str::from_utf8(r.slice(range)).is_err() {
                    return Err(r.error("a tag is not UTF-8"));
                }
            }
            _ => r.skip(field, wire_type, depth)?,
        }
    }
    Ok(())
}

/// A key table as shared strings; a key that is not UTF-8 makes the message invalid (protobuf
/// `string` fields are UTF-8).
fn shared_strings(body: &[u8], table: &[Range<usize>]) -> Result<Vec<Arc<str>>, KplError> {
    table
        .iter()
        .map(|range| {
            std::str::from_utf8(&body[range.clone()])
                .map(Arc::<str>::from)
                .map_err(|e| KplError::Protobuf(format!("a key is not UTF-8: {e}")))
        })
        .collect()
}

fn checked_index(record: usize, index: u64, table_len: usize) -> Result<usize, KplError> {
    usize::try_from(index)
        .ok()
        .filter(|&i| i < table_len)
        .ok_or(KplError::IndexOutOfRange { record, index })
}

/// MD5 of `bytes`, by AWS-LC (the library the SDK's TLS is built on), whose x86-64 and AArch64
/// assembly is about a third faster than the `md-5` crate, which has none.
fn md5(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    // SAFETY: `MD5` reads `bytes.len()` bytes from `bytes.as_ptr()` (none when the length is 0)
    // and writes exactly `DIGEST_LEN` bytes to `out`, which has room for them; it keeps neither
    // pointer.
    unsafe {
        aws_lc_sys::MD5(bytes.as_ptr(), bytes.len(), out.as_mut_ptr());
    }
    out
}

/// Encodes records (partition key, optional explicit hash key, data) into one aggregated record
/// (magic + protobuf + MD5), de-duplicating keys into the tables. Used by producers (a later
/// Kinesis sink) and tests.
///
/// No size limit is applied: keeping an aggregate under the 1 MiB Kinesis record limit is the
/// caller's job. Zero records give a valid, empty aggregate.
pub fn aggregate<'a>(
    records: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'a [u8])>,
) -> Bytes {
    let mut pb = PbAggregatedRecord::default();
    let mut pk_indices: HashMap<&'a str, u64> = HashMap::new();
    let mut ehk_indices: HashMap<&'a str, u64> = HashMap::new();
    for (partition_key, explicit_hash_key, data) in records {
        let partition_key_index =
            table_index(&mut pb.partition_key_table, &mut pk_indices, partition_key);
        let explicit_hash_key_index = explicit_hash_key
            .map(|key| table_index(&mut pb.explicit_hash_key_table, &mut ehk_indices, key));
        pb.records.push(PbRecord {
            partition_key_index,
            explicit_hash_key_index,
            data: Bytes::copy_from_slice(data),
            tags: Vec::new(),
        });
    }

    let body_len = pb.encoded_len();
    let mut out = Vec::with_capacity(MAGIC.len() + body_len + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    pb.encode(&mut out)
        .expect("encoding into a Vec<u8> cannot run out of space");
    let digest = md5(&out[MAGIC.len()..]);
    out.extend_from_slice(&digest);
    Bytes::from(out)
}

/// The index of `key` in `table`, appending it on first sight.
fn table_index<'a>(
    table: &mut Vec<Bytes>,
    indices: &mut HashMap<&'a str, u64>,
    key: &'a str,
) -> u64 {
    *indices.entry(key).or_insert_with(|| {
        table.push(Bytes::copy_from_slice(key.as_bytes()));
        (table.len() - 1) as u64
    })
}

/// The 128-bit hash key Kinesis routes a record by: the explicit hash key (a decimal string) when
/// given, else MD5 of the partition key's UTF-8 bytes read as a big-endian unsigned 128-bit
/// integer. `None` when the explicit key is not a valid decimal u128.
///
/// The explicit key must be ASCII digits only (no sign, no spaces); leading zeros are accepted.
///
/// A shard owns a contiguous range of hash keys; a sub-record whose hash key lies outside the
/// range of the shard it was read from is a duplicate left behind by resharding.
pub fn hash_key(partition_key: &str, explicit_hash_key: Option<&str>) -> Option<u128> {
    match explicit_hash_key {
        Some(key) => {
            // `u128::from_str` also accepts a leading `+`, which Kinesis does not.
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            key.parse().ok()
        }
        None => Some(partition_key_hash(partition_key)),
    }
}

/// The hash key of a record without an explicit hash key: MD5 of its partition key.
pub(crate) fn partition_key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(md5(partition_key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// Frames hand-written protobuf bytes as an aggregated record with a correct digest.
    fn frame(body: &[u8]) -> Bytes {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&md5(body));
        Bytes::from(out)
    }

    /// The reference decoder: prost's generated one, with the same index and UTF-8 checks.
    fn reference(payload: &Bytes) -> Result<Aggregate, KplError> {
        let body = payload.slice(MAGIC.len()..payload.len() - DIGEST_LEN);
        let pb = PbAggregatedRecord::decode(body).map_err(|e| KplError::Protobuf(e.to_string()))?;
        let (pks, ehks) = (
            pb.partition_key_table.len(),
            pb.explicit_hash_key_table.len(),
        );
        let records = pb
            .records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(SubRecord {
                    partition_key_index: checked_index(i, r.partition_key_index, pks)?,
                    explicit_hash_key_index: r
                        .explicit_hash_key_index
                        .map(|e| checked_index(i, e, ehks))
                        .transpose()?,
                    data: r.data,
                })
            })
            .collect::<Result<Vec<_>, KplError>>()?;
        let table = |t: &[Bytes]| {
            t.iter()
                .map(|k| {
                    std::str::from_utf8(k)
                        .map(Arc::<str>::from)
                        .map_err(|e| KplError::Protobuf(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Aggregate {
            partition_keys: table(&pb.partition_key_table)?,
            explicit_hash_keys: table(&pb.explicit_hash_key_table)?,
            records,
        })
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        put_varint(out, field << 3 | wire_type);
    }

    fn put_len(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        put_key(out, field, 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A field the schema does not have, of any wire type (groups with something inside).
    fn put_unknown(rng: &mut fastrand::Rng, out: &mut Vec<u8>) {
        let field = rng.u64(5..20);
        match rng.u8(0..5) {
            0 => {
                put_key(out, field, 0);
                put_varint(out, rng.u64(..));
            }
            1 => {
                put_key(out, field, 1);
                out.extend_from_slice(&rng.u64(..).to_le_bytes());
            }
            2 => put_len(out, field, &[rng.u8(..); 3]),
            3 => {
                put_key(out, field, 3);
                put_key(out, field + 1, 0);
                put_varint(out, 7);
                put_key(out, field, 4);
            }
            _ => {
                put_key(out, field, 5);
                out.extend_from_slice(&rng.u32(..).to_le_bytes());
            }
        }
    }

    fn random_text(rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut text: Vec<u8> = (0..rng.usize(0..6))
            .map(|_| rng.alphanumeric() as u8)
            .collect();
        if rng.u8(0..16) == 0 {
            text.push(0xFF); // not UTF-8
        }
        text
    }

    /// An `AggregatedRecord` body with its fields in any order, some of them unknown or odd.
    fn random_body(rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        for _ in 0..rng.usize(0..4) {
            let mut f = Vec::new();
            put_len(&mut f, 1, &random_text(rng));
            fields.push(f);
        }
        for _ in 0..rng.usize(0..3) {
            let mut f = Vec::new();
            put_len(&mut f, 2, rng.u32(..).to_string().as_bytes());
            fields.push(f);
        }
        for _ in 0..rng.usize(0..6) {
            let mut record = Vec::new();
            if rng.bool() {
                put_key(&mut record, 1, 0);
                put_varint(
                    &mut record,
                    if rng.u8(0..10) == 0 {
                        rng.u64(..)
                    } else {
                        rng.u64(0..4)
                    },
                );
            }
            if rng.bool() {
                put_key(&mut record, 2, 0);
                put_varint(&mut record, rng.u64(0..3));
            }
            let data: Vec<u8> = (0..rng.usize(0..12)).map(|_| rng.u8(..)).collect();
            put_len(&mut record, 3, &data);
            if rng.u8(0..4) == 0 {
                let mut tag = Vec::new();
                put_len(&mut tag, 1, &random_text(rng));
                if rng.bool() {
                    put_len(&mut tag, 2, &random_text(rng));
                }
                put_len(&mut record, 4, &tag);
            }
            if rng.u8(0..4) == 0 {
                put_unknown(rng, &mut record);
            }
            let mut f = Vec::new();
            put_len(&mut f, 3, &record);
            fields.push(f);
        }
        if rng.u8(0..3) == 0 {
            let mut f = Vec::new();
            put_unknown(rng, &mut f);
            fields.push(f);
        }
        rng.shuffle(&mut fields);
        fields.concat()
    }

    #[test]
    fn the_wire_reader_agrees_with_the_generated_decoder() {
        let mut rng = fastrand::Rng::with_seed(21);
        let (mut valid, mut index_errors, mut refused) = (0, 0, 0);
        for case in 0..30_000 {
            let mut body = random_body(&mut rng);
            // Half of them damaged: bytes flipped, dropped, inserted, or the end cut off.
            if case % 2 == 1 && !body.is_empty() {
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(0..body.len());
                    match rng.u8(0..4) {
                        0 => body[at] ^= 1 << rng.u8(0..8),
                        1 => drop(body.remove(at)),
                        2 => body.insert(at, rng.u8(..)),
                        _ => body.truncate(at),
                    }
                    if body.is_empty() {
                        break;
                    }
                }
            }
            let payload = frame(&body);
            let want = reference(&payload);
            let got = deaggregate(&payload).map(|a| a.expect("framed with the magic"));
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    assert_eq!(g, w, "case {case}: {body:02x?}");
                    valid += 1;
                }
                (Err(KplError::Protobuf(_)), Err(KplError::Protobuf(_))) => refused += 1,
                (Err(g), Err(w)) => {
                    assert_eq!(g, w, "case {case}: {body:02x?}");
                    index_errors += 1;
                }
                _ => panic!("case {case}: {got:?} but the reference gives {want:?}: {body:02x?}"),
            }
        }
        // Every kind of outcome was reached, many times.
        assert!(
            valid > 3_000 && index_errors > 3_000 && refused > 3_000,
            "{valid} {index_errors} {refused}"
        );
    }

    #[test]
    fn md5_is_md5() {
        let mut rng = fastrand::Rng::with_seed(5);
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let want: [u8; DIGEST_LEN] = <::md5::Md5 as ::md5::Digest>::digest(&bytes).into();
            assert_eq!(md5(&bytes), want, "length {len}");
        }
    }

    #[test]
    fn groups_nest_only_as_deep_as_the_generated_decoder_allows() {
        for depth in [1u64, 50, 99, 100, 101, 150] {
            let mut body = Vec::new();
            for _ in 0..depth {
                put_key(&mut body, 9, 3);
            }
            for _ in 0..depth {
                put_key(&mut body, 9, 4);
            }
            let payload = frame(&body);
            assert_eq!(
                deaggregate(&payload).is_ok(),
                reference(&payload).is_ok(),
                "depth {depth}"
            );
        }
    }

    fn points_into(outer: &Bytes, inner: &Bytes) -> bool {
        let start = outer.as_ptr() as usize;
        let end = start + outer.len();
        let p = inner.as_ptr() as usize;
        start <= p && p + inner.len() <= end
    }

    #[test]
    fn round_trip_deduplicates_keys_and_slices_data() {
        let records: [(&str, Option<&str>, &[u8]); 5] = [
            ("a", None, b"one"),
            ("b", Some("123"), b"two"),
            ("a", None, b""),
            ("c", Some("123"), b"four"),
            ("b", Some("99"), b"five"),
        ];
        let encoded = aggregate(records);
        assert_eq!(encoded[..4], MAGIC);

        let agg = deaggregate(&encoded).unwrap().unwrap();
        assert_eq!(
            agg.partition_keys,
            vec![Arc::<str>::from("a"), Arc::from("b"), Arc::from("c")]
        );
        assert_eq!(
            agg.explicit_hash_keys,
            vec![Arc::<str>::from("123"), Arc::from("99")]
        );
        assert_eq!(agg.records.len(), records.len());
        for (sub, (pk, ehk, data)) in agg.records.iter().zip(records) {
            assert_eq!(agg.partition_key(sub), pk);
            assert_eq!(agg.explicit_hash_key(sub), ehk);
            assert_eq!(sub.data, data);
            if !data.is_empty() {
                assert!(points_into(&encoded, &sub.data), "data was copied");
            }
        }
        assert_eq!(agg.records[0].partition_key_index, 0);
        assert_eq!(agg.records[2].partition_key_index, 0);
        assert_eq!(agg.records[1].explicit_hash_key_index, Some(0));
        assert_eq!(agg.records[3].explicit_hash_key_index, Some(0));
        assert_eq!(agg.records[4].explicit_hash_key_index, Some(1));
        assert_eq!(agg.records[0].explicit_hash_key_index, None);
    }

    #[test]
    fn empty_aggregate_is_valid() {
        let encoded = aggregate(std::iter::empty());
        assert_eq!(encoded.len(), MAGIC.len() + DIGEST_LEN);
        assert_eq!(deaggregate(&encoded), Ok(Some(Aggregate::default())));
    }

    #[test]
    fn plain_records_are_not_aggregates() {
        let plains: [&[u8]; 4] = [
            b"",
            b"{\"ticker_symbol\":\"AMZN\"}",
            &MAGIC[..3],
            // A wrong last magic byte.
            &[0xF3, 0x89, 0x9A, 0xC3, 0xD4, 0x1D, 0x8C, 0xD9],
        ];
        for plain in plains {
            assert_eq!(deaggregate(&Bytes::copy_from_slice(plain)), Ok(None));
        }
        let mut wrong_magic = aggregate([("a", None, &b"x"[..])]).to_vec();
        wrong_magic[0] = 0xF2;
        assert_eq!(deaggregate(&Bytes::from(wrong_magic)), Ok(None));
    }

    #[test]
    fn too_short() {
        for len in [4, 5, 19] {
            let mut short = MAGIC.to_vec();
            short.resize(len, 0);
            assert_eq!(
                deaggregate(&Bytes::from(short)),
                Err(KplError::TooShort),
                "len {len}"
            );
        }
    }

    #[test]
    fn corrupted_byte_fails_the_digest() {
        let encoded = aggregate([("a", None, &b"hello"[..]), ("b", None, &b"world"[..])]);
        // Every byte after the magic (protobuf or digest) is covered.
        for i in MAGIC.len()..encoded.len() {
            let mut corrupt = encoded.to_vec();
            corrupt[i] ^= 0x01;
            assert_eq!(
                deaggregate(&Bytes::from(corrupt)),
                Err(KplError::DigestMismatch),
                "byte {i}"
            );
        }
    }

    #[test]
    fn valid_digest_over_garbage_protobuf() {
        // Field 1 with wire type 7, which does not exist.
        assert!(matches!(
            deaggregate(&frame(&[0x0F])),
            Err(KplError::Protobuf(_))
        ));
        // A length-delimited field whose length runs past the end.
        assert!(matches!(
            deaggregate(&frame(&[0x0A, 0x05, b'a'])),
            Err(KplError::Protobuf(_))
        ));
        // A truncated varint.
        assert!(matches!(
            deaggregate(&frame(&[0xFF, 0xFF])),
            Err(KplError::Protobuf(_))
        ));
    }

    #[test]
    fn out_of_range_indices() {
        // partition_key_table = ["k"]; records = [{ partition_key_index: 5, data: "x" }]
        let body = [
            0x0A, 0x01, b'k', // field 1, len 1, "k"
            0x1A, 0x05, // field 3, len 5
            0x08, 0x05, // partition_key_index = 5
            0x1A, 0x01, b'x', // data = "x"
        ];
        assert_eq!(
            deaggregate(&frame(&body)),
            Err(KplError::IndexOutOfRange {
                record: 0,
                index: 5
            })
        );

        // partition_key_table = ["k"]; explicit_hash_key_table = ["7"];
        // records = [{ pk 0, data "x" }, { pk 0, ehk 1, data "y" }]
        let body = [
            0x0A, 0x01, b'k', // field 1, "k"
            0x12, 0x01, b'7', // field 2, "7"
            0x1A, 0x05, 0x08, 0x00, 0x1A, 0x01, b'x', // record 0
            0x1A, 0x07, 0x08, 0x00, 0x10, 0x01, 0x1A, 0x01, b'y', // record 1, ehk index 1
        ];
        assert_eq!(
            deaggregate(&frame(&body)),
            Err(KplError::IndexOutOfRange {
                record: 1,
                index: 1
            })
        );

        // An index too large for any table (u64::MAX).
        let body = [
            0x0A, 0x01, b'k', 0x1A, 0x0E, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF, 0x01, 0x1A, 0x01, b'x',
        ];
        assert_eq!(
            deaggregate(&frame(&body)),
            Err(KplError::IndexOutOfRange {
                record: 0,
                index: u64::MAX
            })
        );
    }

    #[test]
    fn hash_key_of_partition_key_is_big_endian_md5() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            hash_key("a", None),
            Some(0x0cc175b9_c0f1b6a8_31c399e2_69772661_u128)
        );
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            hash_key("", None),
            Some(0xd41d8cd9_8f00b204_e9800998_ecf8427e_u128)
        );
    }

    #[test]
    fn explicit_hash_key_is_decimal() {
        assert_eq!(hash_key("a", Some("0")), Some(0));
        assert_eq!(hash_key("a", Some("123")), Some(123));
        assert_eq!(hash_key("a", Some("00042")), Some(42));
        assert_eq!(
            hash_key("a", Some("340282366920938463463374607431768211455")),
            Some(u128::MAX)
        );
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "1.5",
            "abc",
            "340282366920938463463374607431768211456",
        ] {
            assert_eq!(hash_key("a", Some(bad)), None, "{bad:?}");
        }
    }

    const FIXTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kpl/aggregated.bin"
    ));
    const FIXTURE_CORRUPT: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kpl/corrupt.bin"
    ));
    const FIXTURE_EXPECTED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kpl/expected.json"
    ));

    /// The fixture comes from `tests/fixtures/kpl/make_fixture.py`, an encoder written separately
    /// from this module.
    #[test]
    fn independent_fixture() {
        let payload = Bytes::from_static(FIXTURE);
        let agg = deaggregate(&payload)
            .unwrap()
            .expect("fixture is aggregated");
        assert_eq!(agg.partition_keys.len(), 3);
        assert_eq!(agg.explicit_hash_keys.len(), 1);

        let expected: Vec<serde_json::Value> = serde_json::from_str(FIXTURE_EXPECTED).unwrap();
        assert_eq!(agg.records.len(), expected.len());
        for (i, (sub, want)) in agg.records.iter().zip(&expected).enumerate() {
            assert_eq!(want["sub_sequence_number"].as_u64(), Some(i as u64));
            let pk = agg.partition_key(sub);
            let ehk = agg.explicit_hash_key(sub);
            assert_eq!(Some(pk), want["partition_key"].as_str(), "record {i}");
            assert_eq!(ehk, want["explicit_hash_key"].as_str(), "record {i}");
            let data = base64::engine::general_purpose::STANDARD
                .decode(want["data_base64"].as_str().unwrap())
                .unwrap();
            assert_eq!(sub.data, data, "record {i}");
            if !data.is_empty() {
                assert!(
                    points_into(&payload, &sub.data),
                    "record {i}: data was copied"
                );
            }
            let want_hash: u128 = want["hash_key"].as_str().unwrap().parse().unwrap();
            assert_eq!(hash_key(pk, ehk), Some(want_hash), "record {i}");
        }

        assert_eq!(
            deaggregate(&Bytes::from_static(FIXTURE_CORRUPT)),
            Err(KplError::DigestMismatch)
        );
    }
}
