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
use crate::record::now_ms;
use crate::record::Position;
use crate::source::{PartitionAlignment, PartitionEvent, Source, SourceBatch};
use crate::{Error, Result};

/// How long `next_batch` waits for records before returning an empty batch.
const IDLE_RETURN: Duration = Duration::from_millis(250);

/// Reader events (each up to one GetRecords page) buffered between the readers and the source;
/// readers wait when it is full.
const EVENT_QUEUE: usize = 16;

/// Calls the first ListShards may take before the source gives up (a wrong stream name or
/// missing credentials should fail the start, not hang it).
const FIRST_LIST_ATTEMPTS: u32 = super::reader::MAX_UNSENT_IN_A_ROW;

/// A shard started at LATEST is checkpointed as AT_TIMESTAMP of its start minus this, covering a
/// local clock somewhat ahead of the service's: a restart may re-read a little, never skip.
const LATEST_CLOCK_MARGIN_MS: i64 = 2_000;

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
    /// Seen in a ListShards answer: a parent missing from that answer has expired.
    listed: bool,
    /// Known from the first listing (for LATEST: open shards then start at the newest record).
    at_start: bool,
    /// Read to the tip, with nothing newer since.
    caught_up: bool,
}

/// Reads a Kinesis data stream: all its shards, with parents read to their end before their
/// children (so records of one partition key stay in order across splits and merges), KPL
/// aggregated records unpacked, and a position that resumes every shard exactly after the last
/// record handed on.
///
/// Build one with [`KinesisSource::builder`]. Credentials and region come from the AWS SDK's
/// default chain unless a client is given. The source does its own retrying; a client given with
/// SDK retries on top reports fewer throttles.
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
    /// Earliest time of the next ListShards after a failed one.
    list_retry_at: Option<Instant>,
    health: Arc<SourceHealth>,
    name: String,
    /// Partition events not yet handed out with a batch.
    partition_events: Vec<PartitionEvent>,
    alignment: Option<Arc<PartitionAlignment>>,
    /// Sub-records outside their shard's hash-key range go to the error output.
    filter_out_of_range: bool,
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
    aws: crate::aws::ClientOptions<aws_sdk_kinesis::Client>,
    start: StartPosition,
    settings: PollSettings,
    filter_out_of_range: bool,
}

impl KinesisSource {
    /// A builder for the stream `stream`, a stream name or ARN.
    pub fn builder(stream: impl Into<String>) -> KinesisSourceBuilder {
        KinesisSourceBuilder {
            stream: stream.into(),
            aws: Default::default(),
            start: StartPosition::default(),
            settings: PollSettings::default(),
            filter_out_of_range: false,
        }
    }

    pub(crate) fn with_api(
        api: Arc<dyn KinesisApi>,
        stream: StreamRef,
        start: StartPosition,
        settings: PollSettings,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
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
            list_retry_at: None,
            health: Arc::new(SourceHealth::default()),
            filter_out_of_range: false,
            name,
            partition_events: Vec::new(),
            alignment: None,
        }
    }

    /// Lists the shards and adds the ones not known yet. The first listing must succeed (within a
    /// few attempts); a later one that fails is retried after a back-off while reading goes on.
    async fn refresh_shards(&mut self) -> Result<()> {
        let first = self.last_list.is_none();
        let mut attempt = 0;
        let mut backoff =
            crate::aws::Backoff::new(self.settings.initial_backoff, self.settings.max_backoff);
        let listed = loop {
            attempt += 1;
            match self.api.list_shards().await {
                Ok(l) => break l,
                Err(ApiError::Fatal(e) | ApiError::NotFound(e)) => {
                    return Err(Error::source(&self.name, format!("listing shards: {e}")))
                }
                Err(e) if first && attempt < FIRST_LIST_ATTEMPTS => {
                    tracing::warn!(stream = %self.stream.name(), "listing shards: {e}; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) if first => {
                    return Err(Error::source(
                        &self.name,
                        format!("listing shards failed {attempt} times: {e}"),
                    ))
                }
                Err(e) => {
                    tracing::warn!(stream = %self.stream.name(), "listing shards: {e}; retrying later");
                    self.list_retry_at = Some(Instant::now() + self.settings.max_backoff);
                    return Ok(());
                }
            }
        };
        self.last_list = Some(Instant::now());
        self.list_now = false;
        self.list_retry_at = None;
        let mut added = Vec::new();
        for info in listed {
            if let Some(known) = self.shards.get_mut(&info.id) {
                known.info.closed |= info.closed;
                known.listed = true;
                continue;
            }
            added.push(Arc::clone(&info.id));
            self.add_shard(info, first, true);
        }
        // Shards finished before this run (by the checkpoint, or closed before a LATEST start)
        // are declared finished, with the children the listing names.
        for id in added {
            if self.shards[&id].state == ShardState::Finished {
                let children = self.children_of(&id);
                self.partition_events.push(PartitionEvent::Finished {
                    partition: id,
                    children,
                });
            }
        }
        self.start_ready();
        Ok(())
    }

    /// The known shards that continue `id`.
    fn children_of(&self, id: &str) -> Vec<Arc<str>> {
        let mut children: Vec<Arc<str>> = self
            .shards
            .values()
            .filter(|s| s.info.parents.iter().any(|p| p == id))
            .map(|s| Arc::clone(&s.info.id))
            .collect();
        children.sort();
        children
    }

    fn add_shard(&mut self, info: ShardInfo, at_start: bool, listed: bool) {
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
        self.partition_events.push(PartitionEvent::Declared {
            partition: Arc::clone(&info.id),
            parents: info.parents.iter().map(|p| Arc::from(p.as_str())).collect(),
        });
        self.shards.insert(
            Arc::clone(&info.id),
            Shard {
                info,
                state,
                listed,
                at_start,
                caught_up: false,
            },
        );
    }

    /// Where a shard without a checkpoint offset starts.
    fn first_offset(&self, shard: &Shard) -> ShardOffset {
        match self.start {
            // After a restart, a shard the checkpoint does not name was not read yet (a child
            // waiting for its parents, or a new shard): all of it follows what was read.
            _ if self.resumed.is_some() => ShardOffset::TrimHorizon,
            StartPosition::TrimHorizon => ShardOffset::TrimHorizon,
            StartPosition::AtTimestamp(ms) => ShardOffset::AtTimestamp(ms),
            // Open shards at the start begin at the newest record; a shard created later holds
            // only records written after the start.
            StartPosition::Latest if shard.at_start => ShardOffset::Latest,
            StartPosition::Latest => ShardOffset::TrimHorizon,
        }
    }

    /// Starts a reader for every waiting shard whose parents are all finished. A parent that is
    /// not known counts as finished only once a listing that holds the child leaves it out (it
    /// expired past the retention period); until then the child waits for the next listing.
    fn start_ready(&mut self) {
        let ready: Vec<Arc<str>> = self
            .shards
            .values()
            .filter(|s| s.state == ShardState::Waiting)
            .filter(|s| {
                s.info
                    .parents
                    .iter()
                    .all(|p| match self.shards.get(p.as_str()) {
                        Some(parent) => parent.state == ShardState::Finished,
                        None => s.listed,
                    })
            })
            .map(|s| Arc::clone(&s.info.id))
            .collect();
        for id in ready {
            let (offset, renew_latest_at) = match self.position.get(&id) {
                Some(t) => {
                    let o = ShardOffset::parse(&id, t).unwrap_or(ShardOffset::TrimHorizon);
                    (o.clone(), o)
                }
                None => {
                    let shard = &self.shards[&id];
                    let offset = self.first_offset(shard);
                    // A shard started at LATEST has no sequence number to checkpoint (or to
                    // renew an iterator from) until its first record: its start time stands in,
                    // so neither a restart nor an expired iterator misses anything.
                    let stored = match offset {
                        ShardOffset::Latest => {
                            ShardOffset::AtTimestamp(now_ms() - LATEST_CLOCK_MARGIN_MS)
                        }
                        ref o => o.clone(),
                    };
                    self.position.set(&*id, stored.to_string());
                    self.position_changed = true;
                    (offset, stored)
                }
            };
            let shard = self.shards.get_mut(&id).expect("listed above");
            shard.state = ShardState::Reading;
            self.partition_events
                .push(PartitionEvent::Reading(Arc::clone(&id)));
            tracing::debug!(shard = %id, from = %offset, "reading shard");
            let reader = ShardReader {
                api: Arc::clone(&self.api),
                shard: shard.info.clone(),
                start: offset,
                renew_latest_at,
                settings: self.settings,
                events: self.events_tx.clone(),
                health: Arc::clone(&self.health),
                alignment: self.alignment.clone(),
                filter_out_of_range: self.filter_out_of_range,
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
                if let Some(s) = self.shards.get_mut(&shard) {
                    if std::mem::take(&mut s.caught_up) {
                        self.partition_events.push(PartitionEvent::Reading(shard));
                    }
                }
            }
            ReaderEvent::CaughtUp { shard } => {
                if let Some(s) = self.shards.get_mut(&shard) {
                    if !std::mem::replace(&mut s.caught_up, true) {
                        self.partition_events.push(PartitionEvent::CaughtUp(shard));
                    }
                }
            }
            ReaderEvent::End { shard, children } => {
                tracing::info!(shard = %shard, children = children.len(), "shard read to its end");
                self.position.set(&*shard, "SHARD_END");
                self.position_changed = true;
                if let Some(s) = self.shards.get_mut(&shard) {
                    s.state = ShardState::Finished;
                }
                let mut child_ids = Vec::with_capacity(children.len());
                for child in children {
                    child_ids.push(Arc::clone(&child.id));
                    if !self.shards.contains_key(&child.id) {
                        self.add_shard(child, false, false);
                    }
                }
                // Children the shard's last page did not name, but a listing did.
                for known in self.children_of(&shard) {
                    if !child_ids.contains(&known) {
                        child_ids.push(known);
                    }
                }
                self.partition_events.push(PartitionEvent::Finished {
                    partition: Arc::clone(&shard),
                    children: child_ids,
                });
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

    fn set_alignment(&mut self, alignment: Arc<PartitionAlignment>) {
        self.alignment = Some(alignment);
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        let list_due = self
            .last_list
            .is_none_or(|t| t.elapsed() >= self.settings.list_shards_interval);
        let may_list = self.list_retry_at.is_none_or(|t| Instant::now() >= t);
        if (self.list_now || list_due) && may_list {
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
        // Readers that ended are reaped so the set does not grow; one that panicked leaves its
        // shard unread, which must not go unnoticed.
        while let Some(ended) = self.readers.try_join_next() {
            if let Err(e) = ended {
                if e.is_panic() {
                    return Err(Error::source(
                        &self.name,
                        format!("a shard reader panicked: {e}"),
                    ));
                }
            }
        }
        let position = if std::mem::take(&mut self.position_changed) {
            self.position.clone()
        } else {
            Position::new()
        };
        Ok(Some(SourceBatch {
            records,
            position,
            partitions: std::mem::take(&mut self.partition_events),
        }))
    }
}

impl KinesisSourceBuilder {
    crate::aws::client_setters!(aws_sdk_kinesis::Client);

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

    /// Sends the KPL sub-records whose hash key lies outside the range of the shard they were
    /// read from to the error output (kind `out_of_shard_range`), as the KCL filters them, instead
    /// of delivering them (default: off, every sub-record is delivered).
    ///
    /// Such sub-records are not copies: an aggregator that routes an aggregate by its first
    /// record's key (the AWS kinesis-aggregation libraries, Fluent Bit) or a KPL whose shard map
    /// was stale during a reshard put them in this shard only. Turn this on only where the
    /// producer guarantees that every sub-record is in its own shard.
    pub fn filter_out_of_range_sub_records(mut self, filter: bool) -> Self {
        self.filter_out_of_range = filter;
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
        let client = (self.aws)
            .client("source", |shared| {
                crate::aws::sdk_client!(aws_sdk_kinesis, *shared)
            })
            .await?;
        let api = SdkApi {
            client,
            stream: Arc::new(stream.clone()),
        };
        let mut source = KinesisSource::with_api(Arc::new(api), stream, self.start, self.settings);
        source.filter_out_of_range = self.filter_out_of_range;
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeKinesis;
    use super::*;

    fn fast() -> PollSettings {
        PollSettings {
            min_interval: Duration::from_millis(2),
            idle_interval: Duration::from_millis(5),
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            list_shards_interval: Duration::from_millis(50),
            ..PollSettings::default()
        }
    }

    fn source(fake: &FakeKinesis, start: StartPosition) -> KinesisSource {
        KinesisSource::with_api(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            start,
            fast(),
        )
    }

    /// Reads until `n` records came (or 5 s; with `n` 0, for 1 s); returns (shard, payload) in
    /// order, and the position.
    async fn read(source: &mut KinesisSource, n: usize) -> (Vec<(String, String)>, Position) {
        let mut out = Vec::new();
        let mut position = Position::new();
        let (n, wait) = if n == 0 { (usize::MAX, 1) } else { (n, 5) };
        let deadline = Instant::now() + Duration::from_secs(wait);
        while out.len() < n && Instant::now() < deadline {
            let batch = source.next_batch().await.unwrap().unwrap();
            position.advance(&batch.position);
            out.extend(batch.records.iter().map(|r| {
                (
                    r.shard_id().unwrap().to_owned(),
                    String::from_utf8(r.payload().to_vec()).unwrap(),
                )
            }));
        }
        (out, position)
    }

    fn index(out: &[(String, String)], payload: &str) -> usize {
        out.iter()
            .position(|r| r.1 == payload)
            .unwrap_or_else(|| panic!("{payload} not read: {out:?}"))
    }

    #[tokio::test]
    async fn a_child_known_only_from_child_shards_waits_for_a_listing_of_its_other_parent() {
        // B was split into B1 and B2, then A and B1 merged into X. The first listing predates
        // the reshard: it knows only A and B.
        let fake = FakeKinesis::default();
        fake.shard("A", &[], true);
        fake.shard("B", &[], true);
        fake.shard("B1", &["B"], true);
        fake.shard("B2", &["B"], false);
        fake.shard("X", &["A", "B1"], false);
        fake.put("A", "a1", 0);
        for i in 0..30 {
            fake.put("B", &format!("b{i}"), 0);
        }
        fake.put("B1", "b1-1", 0);
        fake.put("X", "x1", 0);
        fake.put("B2", "b2-1", 0);
        fake.stale_listing(&["A", "B"]);
        let mut s = KinesisSource::with_api(
            Arc::new(fake.clone()),
            StreamRef::Name("s".into()),
            StartPosition::TrimHorizon,
            PollSettings {
                // B is read slowly, so A ends (and names X) long before B does.
                max_records: 1,
                ..fast()
            },
        );
        let (out, position) = read(&mut s, 34).await;
        assert_eq!(out.len(), 34, "{out:?}");
        assert!(index(&out, "b29") < index(&out, "b1-1"));
        assert!(index(&out, "b1-1") < index(&out, "x1"), "{out:?}");
        assert!(index(&out, "a1") < index(&out, "x1"));
        assert!(index(&out, "b29") < index(&out, "b2-1"));
        for shard in ["A", "B", "B1"] {
            assert_eq!(position.get(shard), Some("SHARD_END"));
        }
    }

    #[tokio::test]
    async fn latest_skips_shards_closed_before_the_start_and_old_records_of_open_ones() {
        let fake = FakeKinesis::default();
        fake.shard("P", &[], true);
        fake.shard("C1", &["P"], false);
        fake.shard("C2", &["P"], false);
        fake.put("P", "old-p", 0);
        fake.put("C1", "old-c1", 0);
        fake.put("C2", "old-c2", 0);
        let mut s = source(&fake, StartPosition::Latest);
        let (out, position) = read(&mut s, 0).await;
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(position.get("P"), Some("SHARD_END"));
        assert!(position.get("C1").unwrap().starts_with("AT_TIMESTAMP:"));
        fake.put("C1", "new-c1", now_ms());
        let (out, position) = read(&mut s, 1).await;
        assert_eq!(out, [("C1".to_owned(), "new-c1".to_owned())]);
        assert_eq!(
            position.get("C1"),
            Some(fake.last_sequence("C1").to_string().as_str())
        );
    }

    #[tokio::test]
    async fn latest_renews_an_expired_iterator_from_its_start_time() {
        let fake = FakeKinesis::default();
        fake.shard("S", &[], false);
        fake.put("S", "old", 0);
        fake.expire_next(1);
        let mut s = source(&fake, StartPosition::Latest);
        let (out, _) = read(&mut s, 0).await;
        assert!(out.is_empty(), "{out:?}");
        fake.put("S", "new", now_ms());
        let (out, _) = read(&mut s, 1).await;
        assert_eq!(out, [("S".to_owned(), "new".to_owned())]);
        let calls = fake.iterator_calls();
        assert_eq!(calls[0].1, ShardOffset::Latest);
        assert!(
            matches!(calls[1].1, ShardOffset::AtTimestamp(t) if t <= now_ms() && t > now_ms() - 60_000),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn resume_ends_a_closed_shard_without_an_iterator_and_reads_its_children_whole() {
        // The parent's last record was committed but not its end; the child was not started.
        let fake = FakeKinesis::default();
        fake.shard("P", &[], true);
        fake.shard("C", &["P"], false);
        fake.put("P", "p1", 0);
        fake.put("C", "c1", 0);
        fake.put("C", "c2", 0);
        let mut s = source(&fake, StartPosition::Latest);
        s.resume(&Position::single("P", fake.last_sequence("P").to_string()))
            .await
            .unwrap();
        let (out, position) = read(&mut s, 2).await;
        assert_eq!(
            out.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        assert_eq!(position.get("P"), Some("SHARD_END"));
    }

    #[tokio::test]
    async fn resume_reads_a_shard_the_checkpoint_does_not_name_from_its_start() {
        // Its parent expired from the stream while the pipeline was down.
        let fake = FakeKinesis::default();
        fake.shard("P", &[], true);
        fake.shard("C", &["P"], false);
        fake.put("C", "c1", 0);
        fake.hide("P");
        let mut s = source(&fake, StartPosition::Latest);
        s.resume(&Position::single("P", "SHARD_END")).await.unwrap();
        let (out, _) = read(&mut s, 1).await;
        assert_eq!(out, [("C".to_owned(), "c1".to_owned())]);
    }

    #[tokio::test]
    async fn a_bad_checkpoint_offset_is_refused() {
        let fake = FakeKinesis::default();
        let mut s = source(&fake, StartPosition::TrimHorizon);
        let err = s
            .resume(&Position::single("S", "yesterday"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Kinesis position"), "{err}");
    }

    #[tokio::test]
    async fn a_page_of_aggregates_goes_on_in_bounded_pieces_and_resumes_inside_an_aggregate() {
        use super::super::reader::MAX_EVENT_RECORDS;
        let fake = FakeKinesis::default();
        fake.shard("S", &[], false);
        // One page of 3 records that unpack into 75,000.
        let per = 25_000;
        let want: Vec<String> = (0..3 * per).map(|n| format!("{n:05}")).collect();
        for chunk in want.chunks(per) {
            let aggregate =
                super::super::kpl::aggregate(chunk.iter().map(|p| ("pk", None, p.as_bytes())));
            fake.put_bytes("S", aggregate, 0);
        }
        let mut s = source(&fake, StartPosition::TrimHorizon);
        s.set_max_batch_records(1_000);
        let mut got = Vec::new();
        let mut position = Position::new();
        while got.len() < 30_000 {
            let batch = s.next_batch().await.unwrap().unwrap();
            assert!(
                batch.records.len() < 1_000 + MAX_EVENT_RECORDS,
                "a batch of {} records",
                batch.records.len()
            );
            position.advance(&batch.position);
            got.extend(
                batch
                    .records
                    .iter()
                    .map(|r| String::from_utf8(r.payload().to_vec()).unwrap()),
            );
        }
        let at = position.get("S").unwrap().to_owned();
        assert!(
            at.contains(':'),
            "the position is inside an aggregate: {at}"
        );
        // A restart from that position reads the rest: nothing twice, nothing lost.
        drop(s);
        let mut s = source(&fake, StartPosition::TrimHorizon);
        s.resume(&position).await.unwrap();
        let (rest, _) = read(&mut s, want.len() - got.len()).await;
        got.extend(rest.into_iter().map(|(_, p)| p));
        assert_eq!(got.len(), want.len());
        assert!(got == want, "every record once, in order");
    }
}
