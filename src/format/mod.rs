//! Record formats: decoding payloads into Arrow, encoding Arrow into output records.
//!
//! Decoding uses arrow-json's push decoder and arrow-csv's decoder over the record payloads of a
//! micro-batch. A record that does not decode is reported with its index and the reason, and the
//! rest of the batch decodes as if it were not there.

mod decode;
mod encode;
mod flat_json;
mod schema;
mod time;

pub use decode::{
    DecodeFailure, DecodeOutput, FailureKind, RecordDecoder, RecordDecoderBuilder,
    DEFAULT_MAX_RECORD_BYTES, MIN_ROWS_PER_WORKER, PROCESSING_ROWTIME,
};
pub use encode::{Encoder, OutputFormat};
pub use schema::{infer_schema, parse_sql_type, Column, JsonPath};
pub(crate) use time::epoch_millis;

/// Name of the arrival-time column every decoded batch carries.
pub const ROWTIME: &str = "ROWTIME";

/// Record metadata a query can select next to the payload's columns.
///
/// These are the Kinesis metadata columns of Kinesis Data Analytics. A decoded batch carries the ones
/// the SQL names (before `ROWTIME`); a source without the information leaves them null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetadataColumn {
    /// `PARTITION_KEY` (text): the record's partition key.
    PartitionKey,
    /// `SEQUENCE_NUMBER` (text): its sequence number within the shard.
    SequenceNumber,
    /// `SUB_SEQUENCE_NUMBER` (BIGINT): its index inside a KPL aggregated record, 0 otherwise.
    SubSequenceNumber,
    /// `SHARD_ID` (text): the shard (or other source partition) it was read from.
    ShardId,
    /// `APPROXIMATE_ARRIVAL_TIME` (timestamp): when the stream accepted it; also its `ROWTIME`
    /// unless the pipeline takes `ROWTIME` from a field.
    ApproximateArrivalTime,
}

impl MetadataColumn {
    /// Every metadata column.
    pub const ALL: [MetadataColumn; 5] = [
        Self::PartitionKey,
        Self::SequenceNumber,
        Self::SubSequenceNumber,
        Self::ShardId,
        Self::ApproximateArrivalTime,
    ];

    /// The column's name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Self::PartitionKey => "PARTITION_KEY",
            Self::SequenceNumber => "SEQUENCE_NUMBER",
            Self::SubSequenceNumber => "SUB_SEQUENCE_NUMBER",
            Self::ShardId => "SHARD_ID",
            Self::ApproximateArrivalTime => "APPROXIMATE_ARRIVAL_TIME",
        }
    }

    pub(crate) fn data_type(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::{DataType, TimeUnit};
        match self {
            Self::PartitionKey | Self::SequenceNumber | Self::ShardId => DataType::Utf8,
            Self::SubSequenceNumber => DataType::Int64,
            Self::ApproximateArrivalTime => {
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            }
        }
    }

    /// The metadata columns `sql` names (as words outside string literals and comments).
    pub fn named_in(sql: &str) -> Vec<MetadataColumn> {
        use datafusion::sql::sqlparser::{
            dialect::GenericDialect, tokenizer::Token, tokenizer::Tokenizer,
        };
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize()
            .unwrap_or_default();
        Self::ALL
            .into_iter()
            .filter(|m| {
                tokens
                    .iter()
                    .any(|t| matches!(t, Token::Word(w) if w.value == m.name()))
            })
            .collect()
    }
}

/// How record payloads are laid out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecordFormat {
    /// One JSON object per record.
    #[default]
    Json,
    /// One CSV row per record.
    Csv(CsvOptions),
}

/// CSV dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field delimiter (default `,`).
    pub delimiter: u8,
    /// Quote character (default `"`).
    pub quote: u8,
    /// Escape character inside quoted fields, if any (default none: quotes are doubled).
    pub escape: Option<u8>,
    /// Whether a file starts with a header row (used by file sources and schema inference).
    pub has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            quote: b'"',
            escape: None,
            has_header: false,
        }
    }
}
