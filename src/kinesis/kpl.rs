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

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

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

// The protobuf messages. `data` is `Bytes` so that decoding from a `Bytes` buffer slices the
// outer record rather than copying each payload.
//
// proto2 `required` is accepted by prost but not enforced on decode: a missing
// `partition_key_index` reads as 0 and a missing `data` as empty. Producers that write proto3
// style (omitting zero values) rely on exactly that, and the index is still range-checked.

// The key tables are `string` in the schema; they are read as `bytes` (the same wire format) so
// that each key is a slice of the record until it is checked as UTF-8 and shared once.
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
    // Decoded (so that malformed tags are reported) but not exposed.
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
    // The digest comes first: it is what tells a plain record that merely starts with the magic
    // bytes from an aggregate, and no protobuf is parsed from bytes it does not vouch for.
    let digest = Md5::digest(&payload[MAGIC.len()..body_end]);
    if payload[body_end..] != digest[..] {
        return Err(KplError::DigestMismatch);
    }
    let pb = PbAggregatedRecord::decode(payload.slice(MAGIC.len()..body_end))
        .map_err(|e| KplError::Protobuf(e.to_string()))?;

    let pk_count = pb.partition_key_table.len();
    let ehk_count = pb.explicit_hash_key_table.len();
    let records = pb
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| -> Result<SubRecord, KplError> {
            let partition_key_index = checked_index(i, r.partition_key_index, pk_count)?;
            let explicit_hash_key_index = r
                .explicit_hash_key_index
                .map(|index| checked_index(i, index, ehk_count))
                .transpose()?;
            Ok(SubRecord {
                partition_key_index,
                explicit_hash_key_index,
                data: r.data,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Some(Aggregate {
        partition_keys: shared_strings(&pb.partition_key_table)?,
        explicit_hash_keys: shared_strings(&pb.explicit_hash_key_table)?,
        records,
    }))
}

/// A key table as shared strings; a key that is not UTF-8 makes the message invalid (protobuf
/// `string` fields are UTF-8).
fn shared_strings(table: &[Bytes]) -> Result<Vec<Arc<str>>, KplError> {
    table
        .iter()
        .map(|key| {
            std::str::from_utf8(key)
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
    let digest = Md5::digest(&out[MAGIC.len()..]);
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
        None => {
            let digest: [u8; DIGEST_LEN] = Md5::digest(partition_key.as_bytes()).into();
            Some(u128::from_be_bytes(digest))
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// Frames hand-written protobuf bytes as an aggregated record with a correct digest.
    fn frame(body: &[u8]) -> Bytes {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        Bytes::from(out)
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
