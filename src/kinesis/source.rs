//! [`KinesisSource`]: every shard of a stream, in resharding order, as one [`Source`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::api::{ApiError, KinesisApi, SdkApi, StreamRef};
use super::reader::{PollSettings, ReaderEvent, ShardReader, MAX_RECORDS_PER_CALL};
use super::shards::{ShardInfo, ShardOffset};
use crate::metrics::SourceHealth;
use crate::record::Position;
use crate::source::{now_ms, Source, SourceBatch};
use crate::{Error, Result};

/// How long `next_batch` waits for records before returning an empty batch.
const IDLE_RETURN: Duration = Duration::from_millis(250);

/// Reader events buffered per shard being read.
const EVENTS_PER_SHARD: usize = 2;

/// Where reading starts in shards that have no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The oldest record still in the stream.
    #[default]
    TrimHorizon,
    /// Only records written after the source starts. A restart before the first record of a shard
    /// resumes from the time the source started, so nothing written in between is missed.
    Latest,
    /// Records written at or after this time (milliseconds since the Unix epoch).
    AtTimestamp(i64),
}

/// How a shard is doing in the source's eyes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ShardState {
    /// Waits for its parents to be read to their end.
    Waiting,
    Reading,
    Finished,
}

#[derive(Debug)]
struct Shard {
    info: ShardInfo,
    state: ShardState,
}

/// Reads a Kinesis data stream: all its shards, with parents read to their end before their
/// children (so records of one partition key stay in order across splits and merges), KPL
/// aggregated records unpacked, and a position that resumes every shard exactly after the last
/// record handed on.
///
/// Build one with [`KinesisSource::builder`]. Credentials and region come from the AWS SDK's
/// default chain unless a client is given.
pub struct KinesisSource {
    api: Arc<dyn KinesisApi>,
    stream: Arc<StreamRef>,
    start: StartPosition,
    settings: PollSettings,
    shards: HashMap<Arc<str>, Shard>,
    position: Position,
    /// The checkpoint's offsets, consulted when a shard is first seen.
    resumed: Option<Position>,
    position_changed: bool,
    readers: JoinSet<()>,
    events_tx: mpsc::Sender<ReaderEvent>,
    events_rx: mpsc::Receiver<ReaderEvent>,
    max_batch_records: usize,
    last_list: Option<Instant>,
    list_now: bool,
    health: Arc<SourceHealth>,
    name: String,
}

impl fmt::Debug for KinesisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisSource")
            .field("stream", &self.stream)
            .field("start", &self.start)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// Builder for [`KinesisSource`].
#[derive(Debug, Clone)]
pub struct KinesisSourceBuilder {
    stream: String,
    region: Option<String>,
    endpoint: Option<String>,
    client: Option<aws_sdk_kinesis::Client>,
    start: StartPosition,
    settings: PollSettings,
}

impl KinesisSource {
    /// A builder for the stream `stream`, a stream name or ARN.
    pub fn builder(stream: impl Into<String>) -> KinesisSourceBuilder {
        KinesisSourceBuilder {
            stream: stream.into(),
            region: None,
            endpoint: None,
            client: None,
            start: StartPosition::default(),
            settings: PollSettings::default(),
        }
    }

    pub(crate) fn with_api(
        api: Arc<dyn KinesisApi>,
        stream: StreamRef,
        start: StartPosition,
        settings: PollSettings,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(64);
        let name = format!("kinesis:{}", stream.name());
        Self {
            api,
            stream: Arc::new(stream),
            start,
            settings,
            shards: HashMap::new(),
            position: Position::new(),
            resumed: None,
            position_changed: false,
            readers: JoinSet::new(),
            events_tx,
            events_rx,
            max_batch_records: usize::MAX,
            last_list: None,
            list_now: true,
            health: Arc::new(SourceHealth::default()),
            name,
        }
    }

    /// Lists the shards and adds the ones not known yet.
    async fn refresh_shards(&mut self) -> Result<()> {
        let listed = loop {
            match self.api.list_shards().await {
                Ok(l) => break l,
                Err(ApiError::Fatal(e)) => return Err(Error::source(&self.name, e)),
                Err(e) => {
                    tracing::warn!(stream = %self.stream.name(), "listing shards: {e}; retrying");
                    tokio::time::sleep(self.settings.initial_backoff).await;
                }
            }
        };
        let first = self.last_list.is_none();
        self.last_list = Some(Instant::now());
        self.list_now = false;
        for info in listed {
            if let Some(known) = self.shards.get_mut(&info.id) {
                known.info.closed |= info.closed;
                continue;
            }
            self.add_shard(info, first);
        }
        self.start_ready();
        Ok(())
    }

    fn add_shard(&mut self, info: ShardInfo, at_start: bool) {
        let checkpointed = self
            .resumed
            .as_ref()
            .and_then(|p| p.get(&info.id))
            .map(|t| ShardOffset::parse(&info.id, t));
        let state = match checkpointed {
            Some(Ok(ShardOffset::End)) => {
                self.position.set(&*info.id, "SHARD_END");
                ShardState::Finished
            }
            Some(Ok(offset)) => {
                self.position.set(&*info.id, offset.to_string());
                ShardState::Waiting
            }
            Some(Err(e)) => {
                tracing::warn!("{e}; reading the shard as if it had no checkpoint");
                ShardState::Waiting
            }
            // Reading only what comes after the start: a shard already closed holds nothing new.
            None if at_start
                && self.resumed.is_none()
                && self.start == StartPosition::Latest
                && info.closed =>
            {
                self.position.set(&*info.id, "SHARD_END");
                self.position_changed = true;
                ShardState::Finished
            }
            None => ShardState::Waiting,
        };
        self.health.update(&info.id, |h| {
            h.finished = state == ShardState::Finished;
        });
        self.shards
            .insert(Arc::clone(&info.id), Shard { info, state });
    }

    /// Where a shard without a checkpoint offset starts.
    fn first_offset(&self, shard: &Shard) -> ShardOffset {
        let has_known_parent = shard
            .info
            .parents
            .iter()
            .any(|p| self.shards.contains_key(p.as_str()));
        match self.start {
            // A child holds only records written after its parents closed: all of them follow
            // what was read from the parents.
            _ if has_known_parent && self.resumed.is_some() => ShardOffset::TrimHorizon,
            StartPosition::TrimHorizon => ShardOffset::TrimHorizon,
            StartPosition::AtTimestamp(ms) => ShardOffset::AtTimestamp(ms),
            StartPosition::Latest if has_known_parent && self.last_list.is_some() => {
                ShardOffset::TrimHorizon
            }
            StartPosition::Latest => ShardOffset::Latest,
        }
    }

    /// Starts a reader for every waiting shard whose parents are all finished (or gone from the
    /// stream, expired past its retention).
    fn start_ready(&mut self) {
        let ready: Vec<Arc<str>> = self
            .shards
            .values()
            .filter(|s| s.state == ShardState::Waiting)
            .filter(|s| {
                s.info.parents.iter().all(|p| {
                    self.shards
                        .get(p.as_str())
                        .is_none_or(|parent| parent.state == ShardState::Finished)
                })
            })
            .map(|s| Arc::clone(&s.info.id))
            .collect();
        for id in ready {
            let offset = match self.position.get(&id) {
                Some(t) => ShardOffset::parse(&id, t).unwrap_or(ShardOffset::TrimHorizon),
                None => {
                    let shard = &self.shards[&id];
                    let offset = self.first_offset(shard);
                    // A shard started at LATEST has no sequence number to checkpoint until its
                    // first record: its start time stands in, so a restart misses nothing.
                    let stored = match offset {
                        ShardOffset::Latest => ShardOffset::AtTimestamp(now_ms()),
                        ref o => o.clone(),
                    };
                    self.position.set(&*id, stored.to_string());
                    self.position_changed = true;
                    offset
                }
            };
            let shard = self.shards.get_mut(&id).expect("listed above");
            shard.state = ShardState::Reading;
            tracing::debug!(shard = %id, from = %offset, "reading shard");
            let reader = ShardReader {
                api: Arc::clone(&self.api),
                shard: shard.info.clone(),
                start: offset,
                settings: self.settings,
                events: self.events_tx.clone(),
                health: Arc::clone(&self.health),
            };
            self.readers.spawn(reader.run());
        }
    }

    /// Takes one reader event into the batch being built.
    fn on_event(&mut self, event: ReaderEvent, records: &mut Vec<crate::Record>) -> Result<()> {
        match event {
            ReaderEvent::Records {
                shard,
                records: mut read,
                offset,
            } => {
                records.append(&mut read);
                self.position.set(&*shard, offset.to_string());
                self.position_changed = true;
            }
            ReaderEvent::End { shard, children } => {
                tracing::info!(shard = %shard, children = children.len(), "shard read to its end");
                self.position.set(&*shard, "SHARD_END");
                self.position_changed = true;
                if let Some(s) = self.shards.get_mut(&shard) {
                    s.state = ShardState::Finished;
                }
                for child in children {
                    if !self.shards.contains_key(&child.id) {
                        self.add_shard(child, false);
                    }
                }
                // The children's full description (and any other new shard) comes from a list.
                self.list_now = true;
                self.start_ready();
            }
            ReaderEvent::Failed { shard, error } => {
                return Err(Error::source(
                    &self.name,
                    format!("reading shard {shard}: {error}"),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for KinesisSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_max_batch_records(&mut self, max: usize) {
        self.max_batch_records = max.max(1);
    }

    async fn resume(&mut self, position: &Position) -> Result<()> {
        if self.last_list.is_some() {
            return Err(Error::source(
                &self.name,
                "cannot resume a Kinesis source that has started reading",
            ));
        }
        for (shard, offset) in position.iter() {
            ShardOffset::parse(shard, offset)?;
        }
        self.resumed = Some(position.clone());
        Ok(())
    }

    fn health(&self) -> Option<Arc<SourceHealth>> {
        Some(Arc::clone(&self.health))
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        let list_due = self
            .last_list
            .is_none_or(|t| t.elapsed() >= self.settings.list_shards_interval);
        if self.list_now || list_due {
            self.refresh_shards().await?;
        }
        let mut records = Vec::new();
        let deadline = Instant::now() + IDLE_RETURN;
        // Wait for the first event, then take whatever else is ready, up to a micro-batch.
        while records.len() < self.max_batch_records {
            let event = if records.is_empty() {
                match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                    Ok(Some(e)) => e,
                    Ok(None) | Err(_) => break,
                }
            } else {
                match self.events_rx.try_recv() {
                    Ok(e) => e,
                    Err(_) => break,
                }
            };
            self.on_event(event, &mut records)?;
            if self.list_now {
                break;
            }
        }
        // Readers that ended are reaped so the set does not grow.
        while self.readers.try_join_next().is_some() {}
        let position = if std::mem::take(&mut self.position_changed) {
            self.position.clone()
        } else {
            Position::new()
        };
        Ok(Some(SourceBatch { records, position }))
    }
}

impl KinesisSourceBuilder {
    /// The AWS region (default: from the environment and profile, as the SDK resolves it).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends requests to this endpoint instead of the region's (a VPC endpoint, a local
    /// emulator).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Uses this client as it is configured (credentials, region, retries, HTTP client) instead
    /// of building one. The source does its own retrying; a client with SDK retries on top
    /// reports fewer throttles.
    pub fn client(mut self, client: aws_sdk_kinesis::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Where shards without a checkpoint start (default TRIM_HORIZON).
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Polling and back-off settings.
    pub fn poll_settings(mut self, settings: PollSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Checks the settings and creates the client. No call is made until the first batch is
    /// asked for.
    pub async fn build(self) -> Result<KinesisSource> {
        if self.stream.trim().is_empty() {
            return Err(Error::config(
                "source.stream",
                "a stream name or ARN is required",
            ));
        }
        if !(1..=MAX_RECORDS_PER_CALL).contains(&self.settings.max_records) {
            return Err(Error::config(
                "source.max_records",
                format!("must be between 1 and {MAX_RECORDS_PER_CALL}"),
            ));
        }
        if self.settings.min_interval < Duration::from_millis(200) {
            return Err(Error::config(
                "source.min_poll_interval_ms",
                "must be at least 200 ms: a shard takes five GetRecords calls a second",
            ));
        }
        let stream = StreamRef::parse(self.stream.trim());
        let client = match self.client {
            Some(c) => c,
            None => {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = self.region {
                    loader = loader.region(aws_config::Region::new(region));
                }
                if let Some(url) = self.endpoint {
                    loader = loader.endpoint_url(url);
                }
                let shared = loader.load().await;
                if shared.region().is_none() {
                    return Err(Error::config(
                        "source.region",
                        "no AWS region: set it here or in AWS_REGION / the AWS profile",
                    ));
                }
                let config = aws_sdk_kinesis::config::Builder::from(&shared)
                    // The readers retry with their own back-off and count what they retry.
                    .retry_config(aws_config::retry::RetryConfig::disabled())
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .operation_attempt_timeout(Duration::from_secs(30))
                            .build(),
                    )
                    .build();
                aws_sdk_kinesis::Client::from_conf(config)
            }
        };
        let api = SdkApi {
            client,
            stream: Arc::new(stream.clone()),
        };
        let mut source = KinesisSource::with_api(Arc::new(api), stream, self.start, self.settings);
        let (tx, rx) = mpsc::channel(EVENTS_PER_SHARD * 32);
        source.events_tx = tx;
        source.events_rx = rx;
        Ok(source)
    }
}
