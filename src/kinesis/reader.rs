//! The polling reader of one shard.
//!
//! It calls GetRecords at most five times a second (the per-shard limit), waits longer while the
//! shard is idle or caught up, backs off with jitter when throttled, renews an expired iterator
//! from the last record it delivered, and reports the shard's end with its children. It never
//! skips or repeats a record: the iterator only moves on a successful response, and a renewed one
//! starts right after the last record handed on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::api::{ApiError, KinesisApi, RawRecord, RecordsPage};
use super::shards::{RecordUnpacker, ShardInfo, ShardOffset, UnpackStats};
use crate::aws::Backoff;
use crate::metrics::SourceHealth;
use crate::record::Record;
use crate::source::PartitionAlignment;

/// How often a paused reader checks whether it may go on.
const ALIGNMENT_POLL: Duration = Duration::from_millis(50);

/// Most records one GetRecords call may return.
pub const MAX_RECORDS_PER_CALL: i32 = 10_000;

/// Most records a reader hands on at once. A page of KPL aggregates can unpack into far more
/// records than the page held (a 1 MB aggregate of 2-byte sub-records into some 200,000): the
/// reader hands them on in events of at most this many records and [`MAX_EVENT_BYTES`], as it
/// unpacks, so no page sits de-aggregated whole.
pub const MAX_EVENT_RECORDS: usize = 10_000;

/// Most bytes of records a reader hands on at once: payloads plus each record's own size.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// What a record counts against [`MAX_EVENT_BYTES`].
fn event_cost(r: &Record) -> usize {
    std::mem::size_of::<Record>() + r.payload().len()
}

/// Cuts `records` into full events (in order) and the rest, which fills no event yet. Each event
/// holds at most [`MAX_EVENT_RECORDS`] records and [`MAX_EVENT_BYTES`] (at least one record); the
/// cuts are made from the back, so each record moves once.
fn cut_events(mut records: Vec<Record>) -> (Vec<Vec<Record>>, Vec<Record>) {
    let mut cuts = Vec::new();
    let (mut n, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let c = event_cost(r);
        if n > 0 && (n == MAX_EVENT_RECORDS || bytes + c > MAX_EVENT_BYTES) {
            cuts.push(i);
            n = 0;
            bytes = 0;
        }
        n += 1;
        bytes += c;
    }
    if n >= MAX_EVENT_RECORDS || bytes >= MAX_EVENT_BYTES {
        cuts.push(records.len());
    }
    let rest = match cuts.last() {
        Some(&last) => records.split_off(last),
        None => return (Vec::new(), records),
    };
    let mut pieces = Vec::with_capacity(cuts.len());
    for &at in cuts[..cuts.len() - 1].iter().rev() {
        pieces.push(records.split_off(at));
    }
    pieces.push(records);
    pieces.reverse();
    (pieces, rest)
}

/// The shard offset right after `r`: inside its aggregated record when it is a sub-record.
fn offset_after(r: &Record) -> Option<ShardOffset> {
    Some(ShardOffset::After {
        sequence: Arc::from(r.sequence_number()?),
        sub: r.sub_sequence_number(),
    })
}

/// How a shard is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// Records asked for per GetRecords call (default and most: 10,000).
    pub max_records: i32,
    /// Least time between two GetRecords calls on one shard (default 200 ms: the service allows
    /// five calls a second per shard, shared by every consumer).
    pub min_interval: Duration,
    /// Time between calls while the shard has nothing new (default 1 s).
    pub idle_interval: Duration,
    /// First back-off after a throttled or failed call (default 250 ms); it doubles up to
    /// `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    /// Longest back-off (default 10 s).
    pub max_backoff: Duration,
    /// How often the shard list is refreshed to pick up new shards (default 60 s); a shard that
    /// ends also reports its children at once.
    pub list_shards_interval: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            max_records: MAX_RECORDS_PER_CALL,
            min_interval: Duration::from_millis(200),
            idle_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            list_shards_interval: Duration::from_secs(60),
        }
    }
}

/// What a shard reader tells the source.
#[derive(Debug)]
pub(crate) enum ReaderEvent {
    /// Records, and the shard's offset after them.
    Records {
        shard: Arc<str>,
        records: Vec<Record>,
        offset: ShardOffset,
    },
    /// The shard is read to its tip: a page came back empty with nothing behind it.
    CaughtUp { shard: Arc<str> },
    /// The shard is read to its end.
    End {
        shard: Arc<str>,
        children: Vec<ShardInfo>,
    },
    /// Reading cannot go on.
    Failed { shard: Arc<str>, error: String },
}

/// Calls in a row that may fail before being sent (credentials that do not load) before the
/// reader gives up: with the default back-off, about 20 s.
pub(crate) const MAX_UNSENT_IN_A_ROW: u32 = 8;

/// Counts a call that could not be sent; fails once [`MAX_UNSENT_IN_A_ROW`] did in a row. Other
/// failures leave the count alone (they are retried without bound, as throttling is).
fn check_unsent(e: &ApiError, unsent: &mut u32) -> Result<(), String> {
    if let ApiError::Unsent(m) = e {
        *unsent += 1;
        if *unsent >= MAX_UNSENT_IN_A_ROW {
            return Err(format!(
                "{unsent} calls in a row could not be sent (are credentials available?): {m}"
            ));
        }
    }
    Ok(())
}

/// What a step of the read loop leads to.
enum Step<T> {
    /// On with this.
    Go(T),
    /// Back to the top of the loop.
    Again,
    /// Reading is over: the shard ended or the source is gone.
    Stop,
}

/// Where a shard reader stands between two calls.
struct ReadState {
    /// Where a new iterator starts: the start, then after the last record delivered.
    from: ShardOffset,
    iterator: Option<String>,
    backoff: Backoff,
    next_call: Instant,
    /// Reported caught up, with no record since.
    caught_up: bool,
    /// Calls in a row that could not be sent (credentials that would not load).
    unsent: u32,
}

impl ReadState {
    fn new(from: ShardOffset, settings: &PollSettings) -> Self {
        Self {
            from,
            iterator: None,
            backoff: Backoff::new(settings.initial_backoff, settings.max_backoff),
            next_call: Instant::now(),
            caught_up: false,
            unsent: 0,
        }
    }
}

/// Reads one shard from `start` until its end, sending what it reads on `events`.
pub(crate) struct ShardReader {
    pub(crate) api: Arc<dyn KinesisApi>,
    pub(crate) shard: ShardInfo,
    pub(crate) start: ShardOffset,
    /// Where a renewed iterator starts while a shard started at LATEST has given no record yet
    /// (its start time): a renewed LATEST would skip what arrived in between.
    pub(crate) renew_latest_at: ShardOffset,
    pub(crate) settings: PollSettings,
    pub(crate) events: mpsc::Sender<ReaderEvent>,
    pub(crate) health: Arc<SourceHealth>,
    /// The pipeline's catch-up alignment: reads wait while it pauses this shard.
    pub(crate) alignment: Option<Arc<PartitionAlignment>>,
    /// Sub-records outside the shard's hash-key range go to the error output.
    pub(crate) filter_out_of_range: bool,
}

impl ShardReader {
    pub(crate) async fn run(self) {
        let shard = Arc::clone(&self.shard.id);
        if let Err(error) = self.read().await {
            // The source is gone when the send fails: nobody is left to tell.
            let _ = self.events.send(ReaderEvent::Failed { shard, error }).await;
        }
    }

    /// Polls the shard until its end or until the source is gone: one GetRecords call a turn,
    /// paced, with the iterator renewed from the last record handed on.
    async fn read(&self) -> Result<(), String> {
        let mut unpacker = self.unpacker();
        let mut state = ReadState::new(self.start.clone(), &self.settings);
        loop {
            let it = match self.iterator(&mut state).await? {
                Step::Go(it) => it,
                Step::Again => continue,
                Step::Stop => return Ok(()),
            };
            tokio::time::sleep_until(state.next_call).await;
            self.wait_while_paused().await;
            let called = Instant::now();
            let page = match self.get_records(&it, called, &mut state).await? {
                Step::Go(page) => page,
                Step::Again => continue,
                Step::Stop => return Ok(()),
            };
            state.backoff.reset();
            state.unsent = 0;
            let raw = page.records.len();
            let Some((records, stats)) = self.unpack_page(&mut unpacker, &page.records).await?
            else {
                return Ok(());
            };
            let behind = self.account_page(&page, &stats, &mut state.from);
            if raw > 0 && !self.send_records(records, state.from.clone()).await {
                return Ok(());
            }
            match page.next_iterator {
                None => return self.end(page.child_shards).await,
                Some(next) => state.iterator = Some(next),
            }
            if !self
                .report_caught_up(raw, behind, &mut state.caught_up)
                .await
            {
                return Ok(());
            }
            state.next_call = called + self.gap(raw, behind);
        }
    }

    /// The shard's unpacker: KPL de-aggregation, the hash-key-range filter when asked for, and
    /// the sub-records of the start's aggregate that were delivered before.
    fn unpacker(&self) -> RecordUnpacker {
        let mut unpacker = RecordUnpacker::new(Arc::clone(&self.shard.id));
        if self.filter_out_of_range {
            unpacker = unpacker.with_hash_range(self.shard.hash_range.0, self.shard.hash_range.1);
        }
        if let ShardOffset::After {
            sequence,
            sub: Some(sub),
        } = &self.start
        {
            unpacker.skip_through(Arc::clone(sequence), *sub);
        }
        unpacker
    }

    /// The iterator to call with: the current one, or a new one from `state.from` (with a
    /// back-off first when getting it fails).
    async fn iterator(&self, state: &mut ReadState) -> Result<Step<String>, String> {
        if let Some(it) = &state.iterator {
            return Ok(Step::Go(it.clone()));
        }
        match self.api.shard_iterator(&self.shard.id, &state.from).await {
            Ok(Some(it)) => {
                if state.from == ShardOffset::Latest {
                    state.from = self.renew_latest_at.clone();
                }
                state.iterator = Some(it.clone());
                Ok(Step::Go(it))
            }
            // Nothing after the offset, ever: a closed shard read to its end.
            Ok(None) => self.end(Vec::new()).await.map(|()| Step::Stop),
            Err(e) => {
                let step = self.call_failed(e, &mut state.unsent).await?;
                if let Step::Again = step {
                    tokio::time::sleep(state.backoff.next()).await;
                }
                Ok(step)
            }
        }
    }

    /// One GetRecords call made at `called`. An expired iterator is dropped to be renewed, and
    /// other retryable failures put the next call off by a back-off.
    async fn get_records(
        &self,
        it: &str,
        called: Instant,
        state: &mut ReadState,
    ) -> Result<Step<RecordsPage>, String> {
        let id = &self.shard.id;
        match self.api.get_records(it, self.settings.max_records).await {
            Ok(page) => Ok(Step::Go(page)),
            Err(ApiError::ExpiredIterator(e)) => {
                tracing::debug!(shard = %id, "renewing an expired iterator: {e}");
                self.health.update(id, |h| h.renewals += 1);
                state.iterator = None;
                state.next_call = called + self.settings.min_interval;
                Ok(Step::Again)
            }
            Err(e) => {
                let step = self.call_failed(e, &mut state.unsent).await?;
                if let Step::Again = step {
                    let wait = state.backoff.next();
                    state.next_call = Instant::now() + wait;
                }
                Ok(step)
            }
        }
    }

    /// What a failed call leads to: a closed shard that is gone has ended (`Stop`), a fatal
    /// error stops the reader, and any other failure is counted, to be retried (`Again`) after
    /// the caller backs off.
    async fn call_failed<T>(&self, e: ApiError, unsent: &mut u32) -> Result<Step<T>, String> {
        match e {
            ApiError::NotFound(e) if self.shard.closed => self.gone(&e).await.map(|()| Step::Stop),
            ApiError::Fatal(e) | ApiError::NotFound(e) => Err(e),
            e => {
                check_unsent(&e, unsent)?;
                self.count_failure(&e);
                Ok(Step::Again)
            }
        }
    }

    /// Unpacks a page, handing on full events as they fill; returns the records that fill no
    /// event, with the page's counts. `None` when the source is gone.
    async fn unpack_page(
        &self,
        unpacker: &mut RecordUnpacker,
        page: &[RawRecord],
    ) -> Result<Option<(Vec<Record>, UnpackStats)>, String> {
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut stats = UnpackStats::default();
        for r in page {
            let before = records.len();
            let s = unpacker.unpack(
                &r.data,
                &r.partition_key,
                &r.sequence,
                r.arrival_ms,
                &mut records,
            );
            stats.records += s.records;
            stats.out_of_range += s.out_of_range;
            stats.malformed_aggregates += s.malformed_aggregates;
            bytes += records[before..].iter().map(event_cost).sum::<usize>();
            // Full events go on as they fill: the page's records are never all held here.
            if records.len() >= MAX_EVENT_RECORDS || bytes >= MAX_EVENT_BYTES {
                let (full, rest) = cut_events(std::mem::take(&mut records));
                records = rest;
                bytes = records.iter().map(event_cost).sum();
                for piece in full {
                    let Some(offset) = piece.last().and_then(offset_after) else {
                        return Err(format!(
                            "shard {}: a record without a sequence number",
                            self.shard.id
                        ));
                    };
                    if !self.send_records(piece, offset).await {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some((records, stats)))
    }

    /// Moves `from` past the page and counts it in the shard's health; returns how far the shard
    /// is behind its tip.
    fn account_page(
        &self,
        page: &RecordsPage,
        stats: &UnpackStats,
        from: &mut ShardOffset,
    ) -> Option<u64> {
        if let Some(last) = page.records.last() {
            *from = ShardOffset::After {
                sequence: Arc::from(last.sequence.as_str()),
                sub: None,
            };
        }
        let behind = page.millis_behind.map(|m| m.max(0) as u64);
        self.health.update(&self.shard.id, |h| {
            h.records += stats.records;
            h.out_of_range += stats.out_of_range;
            if behind.is_some() {
                h.millis_behind = behind;
            }
        });
        behind
    }

    /// Hands records on with the offset after them; false when the source is gone.
    async fn send_records(&self, records: Vec<Record>, offset: ShardOffset) -> bool {
        let event = ReaderEvent::Records {
            shard: Arc::clone(&self.shard.id),
            records,
            offset,
        };
        self.events.send(event).await.is_ok()
    }

    /// Reports the shard caught up the first time a page finds it at its tip, and forgets that
    /// once records come; false when the source is gone.
    async fn report_caught_up(
        &self,
        raw: usize,
        behind: Option<u64>,
        caught_up: &mut bool,
    ) -> bool {
        if raw > 0 {
            *caught_up = false;
        } else if behind == Some(0) && !std::mem::replace(caught_up, true) {
            let event = ReaderEvent::CaughtUp {
                shard: Arc::clone(&self.shard.id),
            };
            return self.events.send(event).await.is_ok();
        }
        true
    }

    /// The least time from one call to the next after a page of `raw` records, `behind` the tip.
    fn gap(&self, raw: usize, behind: Option<u64>) -> Duration {
        // Caught up: no need to ask again soon. (An empty page while behind is a gap in the
        // shard, not the end of its records.)
        let idle = behind == Some(0) || (raw == 0 && behind.is_none());
        let gap = if idle {
            self.settings.idle_interval
        } else {
            self.settings.min_interval
        };
        gap.max(self.settings.min_interval)
    }

    /// Waits while the pipeline pauses this shard for alignment (its event time is too far ahead).
    async fn wait_while_paused(&self) {
        let Some(alignment) = &self.alignment else {
            return;
        };
        if !alignment.is_paused(&self.shard.id) {
            return;
        }
        tracing::debug!(shard = %self.shard.id, "paused: its event time is ahead of the others'");
        self.health.update(&self.shard.id, |h| {
            h.paused = true;
            h.pauses += 1;
        });
        while alignment.is_paused(&self.shard.id) {
            if self.events.is_closed() {
                break;
            }
            tokio::time::sleep(ALIGNMENT_POLL).await;
        }
        self.health.update(&self.shard.id, |h| h.paused = false);
    }

    /// A closed shard that no longer exists (past the retention period) has nothing left to read.
    async fn gone(&self, why: &str) -> Result<(), String> {
        tracing::info!(shard = %self.shard.id, "closed shard is gone (past retention): {why}");
        self.end(Vec::new()).await
    }

    /// Reports the shard read to its end.
    async fn end(&self, children: Vec<ShardInfo>) -> Result<(), String> {
        self.health.update(&self.shard.id, |h| {
            h.finished = true;
            h.millis_behind = Some(0);
        });
        let _ = self
            .events
            .send(ReaderEvent::End {
                shard: Arc::clone(&self.shard.id),
                children,
            })
            .await;
        Ok(())
    }

    fn count_failure(&self, e: &ApiError) {
        match e {
            ApiError::Throttled(m) => {
                tracing::debug!(shard = %self.shard.id, "throttled, backing off: {m}");
                self.health.update(&self.shard.id, |h| h.throttles += 1);
            }
            other => {
                tracing::warn!(shard = %self.shard.id, "retrying after: {other}");
                self.health.update(&self.shard.id, |h| h.retries += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn numbered(n: usize, size: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let mut payload = vec![0u8; size.max(8)];
                payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Record::new(Bytes::from(payload), 0).with_sequence_number(i.to_string())
            })
            .collect()
    }

    fn number(r: &Record) -> u64 {
        u64::from_le_bytes(r.payload()[..8].try_into().unwrap())
    }

    #[test]
    fn events_are_cut_by_records_and_bytes_in_order() {
        let (full, rest) = cut_events(numbered(25_000, 8));
        assert_eq!(
            full.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_EVENT_RECORDS, MAX_EVENT_RECORDS]
        );
        assert_eq!(rest.len(), 5_000);
        let order: Vec<u64> = full.iter().flatten().chain(&rest).map(number).collect();
        assert!(order.iter().copied().eq(0..25_000), "in order, each once");

        // 1 MiB payloads: seven fit in 8 MiB with their records' own size.
        let (full, rest) = cut_events(numbered(20, 1 << 20));
        assert_eq!(full.iter().map(Vec::len).collect::<Vec<_>>(), [7, 7]);
        assert_eq!(rest.len(), 6);
        for piece in &full {
            assert!(piece.iter().map(event_cost).sum::<usize>() <= MAX_EVENT_BYTES);
        }
        // Exactly full: nothing left over.
        let (full, rest) = cut_events(numbered(MAX_EVENT_RECORDS, 8));
        assert_eq!(full.len(), 1);
        assert!(rest.is_empty());
        // A record over the byte bound alone is an event of its own.
        let (full, rest) = cut_events(numbered(2, 9 << 20));
        assert_eq!(full.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        assert!(rest.is_empty());
    }
}
