//! Record formats: decoding payloads into Arrow, encoding Arrow into output records.
//!
//! Decoding uses arrow-json's push decoder and arrow-csv's decoder over the record payloads of a
//! micro-batch. A record that does not decode is reported with its index and the reason, and the
//! rest of the batch decodes as if it were not there.

mod decode;
mod encode;
mod flat_json;
mod schema;

pub use decode::{
    DecodeFailure, DecodeOutput, FailureKind, RecordDecoder, RecordDecoderBuilder,
    DEFAULT_MAX_RECORD_BYTES,
};
pub use encode::{Encoder, OutputFormat};
pub use schema::{infer_schema, parse_sql_type, Column, JsonPath};

/// Name of the arrival-time column every decoded batch carries.
pub const ROWTIME: &str = "ROWTIME";

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
