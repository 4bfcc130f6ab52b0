//! The three Kinesis calls a reader makes, behind a trait so that the reading logic is independent
//! of the SDK, and the SDK's errors sorted into what a reader does about them.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;

use super::shards::{parse_hash_key, ShardInfo, ShardOffset, FULL_RANGE};

/// What a reader does about a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// A service limit was exceeded: back off and retry the same call.
    Throttled(String),
    /// The shard iterator expired: get a new one from the last record read.
    ExpiredIterator(String),
    /// The stream or shard does not exist (a closed shard past the retention period is gone).
    NotFound(String),
    /// A network failure, a timeout or a server error: retry after a back-off.
    Transient(String),
    /// The request could not be sent: most often the credentials could not be loaded (an
    /// instance metadata or STS hiccup, an expired SSO session). Retried a bounded number of
    /// times in a row, then fatal.
    Unsent(String),
    /// Retrying cannot help (no such stream, access denied, invalid argument).
    Fatal(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttled(m) => write!(f, "throttled: {m}"),
            Self::ExpiredIterator(m) => write!(f, "shard iterator expired: {m}"),
            Self::NotFound(m) => f.write_str(m),
            Self::Transient(m) => write!(f, "transient failure: {m}"),
            Self::Unsent(m) => write!(f, "the request could not be sent: {m}"),
            Self::Fatal(m) => f.write_str(m),
        }
    }
}

/// One raw record of a GetRecords response.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    pub(crate) data: Bytes,
    pub(crate) partition_key: String,
    pub(crate) sequence: String,
    pub(crate) arrival_ms: i64,
}

/// A GetRecords response.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordsPage {
    pub(crate) records: Vec<RawRecord>,
    /// `None` once a closed shard is read to its end.
    pub(crate) next_iterator: Option<String>,
    pub(crate) millis_behind: Option<i64>,
    pub(crate) child_shards: Vec<ShardInfo>,
}

/// The Kinesis calls of a consumer.
#[async_trait]
pub(crate) trait KinesisApi: Send + Sync + fmt::Debug + 'static {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, ApiError>;
    /// `None`: the shard has nothing at or after `from` and never will (a closed shard read to
    /// its end).
    async fn shard_iterator(
        &self,
        shard: &str,
        from: &ShardOffset,
    ) -> Result<Option<String>, ApiError>;
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, ApiError>;
}

/// Which stream: by name, or by ARN (required for cross-account access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamRef {
    Name(String),
    Arn(String),
}

impl StreamRef {
    pub(crate) fn parse(s: &str) -> Self {
        if s.starts_with("arn:") {
            Self::Arn(s.to_owned())
        } else {
            Self::Name(s.to_owned())
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Name(n) => n,
            Self::Arn(a) => a.rsplit('/').next().unwrap_or(a),
        }
    }
}

/// [`KinesisApi`] over the AWS SDK client.
#[derive(Debug, Clone)]
pub(crate) struct SdkApi {
    pub(crate) client: aws_sdk_kinesis::Client,
    pub(crate) stream: Arc<StreamRef>,
}

/// Sorts an SDK error by what a reader should do about it.
fn classify<E, R>(err: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    let text = || format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&err));
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            match code {
                "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "ThrottlingException" => ApiError::Throttled(text()),
                "ExpiredIteratorException" => ApiError::ExpiredIterator(text()),
                "ResourceNotFoundException" => ApiError::NotFound(text()),
                "ResourceInUseException"
                | "AccessDeniedException"
                | "InvalidArgumentException"
                | "ValidationException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "KMSAccessDeniedException"
                | "KMSDisabledException"
                | "KMSInvalidStateException"
                | "KMSNotFoundException"
                | "KMSOptInRequired" => ApiError::Fatal(text()),
                _ => ApiError::Transient(text()),
            }
        }
        SdkError::ConstructionFailure(_) => ApiError::Fatal(text()),
        SdkError::DispatchFailure(d) if d.is_user() => ApiError::Fatal(text()),
        // Failing before the request is sent: credentials that could not be loaded (which may
        // pass) or a request that cannot be signed (which does not).
        SdkError::DispatchFailure(d) if d.is_other() && d.as_other().is_none() => {
            ApiError::Unsent(text())
        }
        _ => ApiError::Transient(text()),
    }
}

fn hash_range(range: Option<&aws_sdk_kinesis::types::HashKeyRange>) -> (u128, u128) {
    range
        .and_then(|r| {
            Some((
                parse_hash_key(&r.starting_hash_key)?,
                parse_hash_key(&r.ending_hash_key)?,
            ))
        })
        .unwrap_or(FULL_RANGE)
}

#[async_trait]
impl KinesisApi for SdkApi {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, ApiError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_shards();
            // With a NextToken the stream must not be named again.
            req = match (&token, &*self.stream) {
                (Some(t), _) => req.next_token(t),
                (None, StreamRef::Name(n)) => req.stream_name(n),
                (None, StreamRef::Arn(a)) => req.stream_arn(a),
            };
            let resp = req.send().await.map_err(classify)?;
            for s in resp.shards.unwrap_or_default() {
                shards.push(ShardInfo {
                    parents: s
                        .parent_shard_id
                        .into_iter()
                        .chain(s.adjacent_parent_shard_id)
                        .collect(),
                    hash_range: hash_range(s.hash_key_range.as_ref()),
                    closed: s
                        .sequence_number_range
                        .as_ref()
                        .is_some_and(|r| r.ending_sequence_number.is_some()),
                    id: Arc::from(s.shard_id),
                });
            }
            match resp.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(shards),
            }
        }
    }

    async fn shard_iterator(
        &self,
        shard: &str,
        from: &ShardOffset,
    ) -> Result<Option<String>, ApiError> {
        let mut req = self.client.get_shard_iterator().shard_id(shard);
        req = match &*self.stream {
            StreamRef::Name(n) => req.stream_name(n),
            StreamRef::Arn(a) => req.stream_arn(a),
        };
        req = match from {
            ShardOffset::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            ShardOffset::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            ShardOffset::AtTimestamp(ms) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
            ShardOffset::After {
                sequence,
                sub: None,
            } => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(&**sequence),
            // Inside an aggregated record: read it again and skip the sub-records already read.
            ShardOffset::After {
                sequence,
                sub: Some(_),
            } => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(&**sequence),
            ShardOffset::End => {
                return Err(ApiError::Fatal(format!(
                    "shard {shard} is finished; it has no iterator"
                )))
            }
        };
        let resp = req.send().await.map_err(classify)?;
        Ok(resp.shard_iterator)
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, ApiError> {
        let mut req = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit);
        if let StreamRef::Arn(a) = &*self.stream {
            req = req.stream_arn(a);
        }
        let resp = req.send().await.map_err(classify)?;
        let records = resp
            .records
            .into_iter()
            .map(|r| RawRecord {
                // The SDK's buffer becomes the payload without a copy.
                data: Bytes::from(r.data.into_inner()),
                partition_key: r.partition_key.unwrap_or_default(),
                sequence: r.sequence_number,
                arrival_ms: r
                    .approximate_arrival_timestamp
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or_else(crate::record::now_ms),
            })
            .collect();
        let child_shards = resp
            .child_shards
            .unwrap_or_default()
            .into_iter()
            .map(|c| ShardInfo {
                hash_range: hash_range(c.hash_key_range.as_ref()),
                parents: c.parent_shards,
                closed: false,
                id: Arc::from(c.shard_id),
            })
            .collect();
        Ok(RecordsPage {
            records,
            next_iterator: resp.next_shard_iterator,
            millis_behind: resp.millis_behind_latest,
            child_shards,
        })
    }
}
