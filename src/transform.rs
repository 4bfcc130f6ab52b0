//! Record transforms: functions applied to raw records before they are decoded, with the
//! contract of Firehose's data transformation, record by record:
//!
//! - [`Transformed::Ok`]: the record continues with new bytes (its metadata — arrival time,
//!   partition key, shard and sequence — is kept);
//! - [`Transformed::Dropped`]: the record is consumed on purpose; it is neither decoded nor an
//!   error;
//! - [`Transformed::ProcessingFailed`]: the record goes to the error output (`errorCode`
//!   `processing_failed`, stage `transform`) with the message, as it was read.
//!
//! A transform that fails as a whole (a WASM guest that traps or runs past its deadline) sends
//! every record of the micro-batch to the error output (`errorCode` `transform_failed`) and the
//! pipeline goes on with the next one.
//!
//! The raw-data copy, when configured, holds the records as read, before any transform.

use std::fmt;

use bytes::Bytes;

use crate::record::Record;

/// What a transform made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// The record continues with these bytes.
    Ok(Bytes),
    /// The record is dropped on purpose.
    Dropped,
    /// The record could not be transformed; it goes to the error output with this message.
    ProcessingFailed(String),
}

/// A function applied to every record before decoding. See the [module](self) documentation.
pub trait RecordTransform: Send + Sync + fmt::Debug {
    /// The transform's name, for errors and logs.
    fn name(&self) -> &str;

    /// One result per record, in order. `Err` fails the whole batch: each of its records goes to
    /// the error output with the message.
    fn transform(&self, records: &[Record]) -> std::result::Result<Vec<Transformed>, String>;
}

/// A [`RecordTransform`] from a closure over one record's payload.
///
/// ```
/// use rivulet::{FnTransform, RecordTransform, Record, Transformed};
/// let drop_empty = FnTransform::new("drop_empty", |payload: &[u8]| {
///     if payload.is_empty() {
///         Transformed::Dropped
///     } else {
///         Transformed::Ok(bytes::Bytes::copy_from_slice(payload))
///     }
/// });
/// let out = drop_empty
///     .transform(&[Record::new("".into(), 0), Record::new("x".into(), 0)])
///     .unwrap();
/// assert_eq!(out, [Transformed::Dropped, Transformed::Ok("x".into())]);
/// ```
pub struct FnTransform<F> {
    name: String,
    f: F,
}

impl<F> FnTransform<F>
where
    F: Fn(&[u8]) -> Transformed + Send + Sync,
{
    /// A transform named `name` that calls `f` on each payload.
    pub fn new(name: impl Into<String>, f: F) -> Self {
        Self {
            name: name.into(),
            f,
        }
    }
}

impl<F> fmt::Debug for FnTransform<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTransform")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F> RecordTransform for FnTransform<F>
where
    F: Fn(&[u8]) -> Transformed + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn transform(&self, records: &[Record]) -> std::result::Result<Vec<Transformed>, String> {
        Ok(records.iter().map(|r| (self.f)(r.payload())).collect())
    }
}
