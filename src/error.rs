//! The one error type of the crate.

use std::path::PathBuf;

/// The result type used throughout rivulet.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rivulet.
///
/// Errors that concern a single record (a payload that does not decode, a row that fails a function)
/// do not surface here: they go to the pipeline's error output with a reason, and the pipeline keeps
/// running. This type is for failures that stop an operation: a bad configuration, a query that cannot
/// run on a stream, a sink that cannot write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline configuration is invalid. `key` names the offending setting (dotted path).
    #[error("invalid configuration at `{key}`: {message}")]
    Config {
        /// Dotted path of the offending key, e.g. `sinks[1].path`.
        key: String,
        /// What is wrong and what would be accepted.
        message: String,
    },

    /// A configuration file could not be parsed.
    #[error("cannot parse {}: {message}", path.display())]
    ConfigParse {
        /// The file that was read.
        path: PathBuf,
        /// The parser's message, including line and column.
        message: String,
    },

    /// The SQL is invalid or cannot run on a stream.
    #[error("SQL error: {0}")]
    Sql(String),

    /// A format (schema, decoder or encoder) could not be set up.
    #[error("format error: {0}")]
    Format(String),

    /// A source failed in a way it cannot recover from.
    #[error("source `{source_name}` failed: {message}")]
    Source {
        /// Name of the source.
        source_name: String,
        /// What failed.
        message: String,
    },

    /// A sink failed to store data; the data it had accepted is not acknowledged.
    #[error("sink `{sink}` failed: {message}")]
    Sink {
        /// Name of the sink.
        sink: String,
        /// What failed.
        message: String,
    },

    /// An I/O error, with the path or operation it concerns.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `reading /data/in.ndjson`.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An Arrow error.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A DataFusion error.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Envelope encryption or decryption failed.
    #[cfg(feature = "aws")]
    #[error("envelope encryption: {0}")]
    Envelope(#[from] EnvelopeError),

    /// A WASM module cannot be loaded or used (it imports something, lacks an export, does not
    /// compile, or describes itself wrongly).
    #[cfg(feature = "wasm")]
    #[error("WASM: {0}")]
    Wasm(String),

    /// Provisioning with `rivulet setup` failed: the call and what AWS said.
    #[cfg(feature = "setup")]
    #[error("setup: {0}")]
    Setup(String),

    /// The pipeline stopped because one of its tasks failed or panicked.
    #[error("pipeline stopped: {0}")]
    Pipeline(String),
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sink(sink: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Sink {
            sink: sink.into(),
            message: message.into(),
        }
    }

    pub(crate) fn source(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Source {
            source_name: name.into(),
            message: message.into(),
        }
    }
}

/// Why an envelope could not be made or opened (see [`crypto`](crate::crypto), which re-exports
/// it). It is defined here, beside the crate's error, so that this module depends on nothing above
/// it.
#[cfg(feature = "aws")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The data does not start with an envelope (wrong file, or not encrypted).
    #[error("not an envelope: the data does not start with the bytes `RVE`")]
    NotAnEnvelope,
    /// The envelope was written by a newer version of the format.
    #[error("envelope version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// The data ends inside an envelope.
    #[error("the envelope is truncated in its {field} (at byte {offset})")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Offset of the field in the envelope.
        offset: usize,
    },
    /// A field of the envelope is malformed, or a context or key too large to store.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// The envelope's context lacks a pair the decryptor requires, or has another value.
    #[error(
        "encryption context mismatch for `{key}`: expected `{expected}`, the envelope has {found}"
    )]
    ContextMismatch {
        /// The context key.
        key: String,
        /// The value required.
        expected: String,
        /// What the envelope has (`no such key` when absent).
        found: String,
    },
    /// The envelope was encrypted under another KMS key than the one required.
    #[error("the envelope's data key belongs to KMS key `{found}`, not `{expected}`")]
    KeyMismatch {
        /// The key required.
        expected: String,
        /// The key named by the envelope.
        found: String,
    },
    /// The ciphertext or the header was changed, or the data key does not match it.
    #[error("authentication failed: the ciphertext or its header was altered")]
    Authentication,
    /// KMS refused or failed a call.
    #[error("KMS {operation} failed: {code}: {message}")]
    Kms {
        /// `GenerateDataKey` or `Decrypt`.
        operation: &'static str,
        /// The service's error code, e.g. `InvalidCiphertextException`, `IncorrectKeyException`,
        /// `NotFoundException`, `AccessDeniedException`.
        code: String,
        /// The service's message.
        message: String,
    },
}
