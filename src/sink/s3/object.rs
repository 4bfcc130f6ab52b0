//! The objects being filled: their format and compression, and the rows buffered in each until
//! it is uploaded.

use std::io::Write as _;

use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tokio::time::Instant;

use super::{group_key, S3Sink};
use crate::ack::Ack;
use crate::format::{Encoder, OutputFormat};
use crate::sink::OutputData;
use crate::{Error, Result};

/// How objects are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectFormat {
    /// JSON lines or CSV, as the other sinks write them.
    Text(OutputFormat),
    /// Apache Parquet, one file per object; compression applies to its pages.
    Parquet,
}

/// Compression of objects (JSON lines and CSV: the whole object; Parquet: its pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
    /// Snappy, framing format (`.snappy`); for Parquet, Snappy pages.
    Snappy,
}

impl Compression {
    pub(super) fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Zstd => ".zst",
            Self::Snappy => ".snappy",
        }
    }

    /// Compresses a whole object.
    fn apply(self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        Ok(match self {
            Self::None => data,
            Self::Gzip => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::default(),
                );
                e.write_all(&data)?;
                e.finish()?
            }
            Self::Zstd => zstd::bulk::compress(&data, 3)?,
            Self::Snappy => {
                let mut e = snap::write::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
                e.write_all(&data)?;
                e.into_inner().map_err(|e| e.into_error())?
            }
        })
    }

    fn parquet(self) -> parquet::basic::Compression {
        use parquet::basic::{Compression as C, GzipLevel, ZstdLevel};
        match self {
            Self::None => C::UNCOMPRESSED,
            Self::Gzip => C::GZIP(GzipLevel::default()),
            Self::Zstd => C::ZSTD(ZstdLevel::default()),
            Self::Snappy => C::SNAPPY,
        }
    }
}

/// The content of an object being filled.
pub(super) enum Body {
    Text(Vec<u8>),
    // In a mutex only to make the sink `Sync`: the writer's encoders are not.
    Parquet(Box<std::sync::Mutex<ArrowWriter<Vec<u8>>>>),
}

impl Body {
    /// Bytes the object holds so far (for Parquet, the writer's estimate).
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Text(b) => b.len(),
            Self::Parquet(w) => {
                let w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                w.bytes_written() + w.in_progress_size()
            }
        }
    }

    /// Appends `data`, encoded as `encoder` says for text.
    fn write(&mut self, encoder: &Encoder, data: &OutputData, sink: &str) -> Result<()> {
        match (self, data) {
            (Self::Text(buf), data) => {
                let first = buf.is_empty();
                crate::sink::encode_data(encoder, data, first, buf)?;
            }
            (Self::Parquet(w), OutputData::Rows(b)) => w
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .write(b)
                .map_err(|e| Error::sink(sink, format!("encoding Parquet: {e}")))?,
            (Self::Parquet(_), OutputData::Encoded(_)) => return Err(no_parquet_of_encoded(sink)),
        }
        Ok(())
    }

    /// The object's bytes: compressed text, or the finished Parquet file.
    pub(super) fn finish(self, compression: Compression, key: &str, sink: &str) -> Result<Vec<u8>> {
        match self {
            Self::Text(b) => compression
                .apply(b)
                .map_err(|e| Error::io(format!("compressing {key}"), e)),
            Self::Parquet(w) => w
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .into_inner()
                .map_err(|e| Error::sink(sink, format!("finishing Parquet: {e}"))),
        }
    }
}

/// Encoded records carry no schema for a Parquet file.
fn no_parquet_of_encoded(sink: &str) -> Error {
    Error::sink(
        sink,
        "encoded records (a raw copy) cannot be written as Parquet; use format \"json\"",
    )
}

/// An object being filled, with the acknowledgements of what it holds.
pub(super) struct OpenObject {
    pub(super) key: String,
    pub(super) body: Body,
    pub(super) rows: u64,
    pub(super) opened: Instant,
    pub(super) acks: Vec<Ack>,
}

impl S3Sink {
    fn new_body(&self, schema: Option<SchemaRef>) -> Result<Body> {
        Ok(match (&self.format, schema) {
            (ObjectFormat::Parquet, Some(schema)) => {
                let props = WriterProperties::builder()
                    .set_compression(self.compression.parquet())
                    .build();
                Body::Parquet(Box::new(std::sync::Mutex::new(
                    ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| {
                        Error::sink(&self.name, format!("starting a Parquet object: {e}"))
                    })?,
                )))
            }
            (ObjectFormat::Parquet, None) => return Err(no_parquet_of_encoded(&self.name)),
            _ => Body::Text(Vec::new()),
        })
    }

    /// Appends `data` to the open object of `values`, opening one if needed; returns its group.
    pub(super) fn append(
        &mut self,
        values: Vec<String>,
        data: &OutputData,
        ack: Ack,
    ) -> Result<String> {
        let group = group_key(&values);
        if !self.open.contains_key(&group) {
            let range = self.ranges.current();
            let key = self.next_key(&values, &range);
            let schema = match data {
                OutputData::Rows(b) => Some(b.schema()),
                OutputData::Encoded(_) => None,
            };
            let body = self.new_body(schema)?;
            self.open.insert(
                group.clone(),
                OpenObject {
                    key,
                    body,
                    rows: 0,
                    opened: Instant::now(),
                    acks: Vec::new(),
                },
            );
        }
        let obj = self.open.get_mut(&group).expect("opened above");
        obj.body.write(&self.encoder, data, &self.name)?;
        obj.rows += data.len() as u64;
        obj.acks.push(ack);
        Ok(group)
    }
}
