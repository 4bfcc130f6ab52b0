//! Event-time watermarks: per source partition, combined as the minimum over active partitions.

use std::time::{Duration, Instant};

/// How event time is tracked: how late a row may be, and when a quiet partition stops holding the
/// watermark back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSettings {
    /// How far behind the largest event time seen a row may still arrive (default 0).
    pub allowed_lateness: Duration,
    /// A partition (shard) read to its tip and then quiet for this long no longer holds the
    /// watermark back (default 60 s). A partition the source does not declare stops holding
    /// after this long without rows.
    pub idle_timeout: Duration,
    /// A row whose event time is more than this ahead of its record's arrival time (Kinesis
    /// `ApproximateArrivalTimestamp`, or the time a file or generator record was read) goes to
    /// the error output as `bad_time` instead of moving the watermark (default 1 hour).
    pub max_future: Duration,
    /// Catch-up alignment: a partition whose event time runs more than this ahead of the
    /// watermark pauses its reads until the others catch up, so that window state stays bounded
    /// while a backlog is read (default 60 s; `None` never pauses).
    pub max_alignment: Option<Duration>,
}

impl Default for WatermarkSettings {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::ZERO,
            idle_timeout: Duration::from_secs(60),
            max_future: Duration::from_secs(3600),
            max_alignment: Some(Duration::from_secs(60)),
        }
    }
}

/// Event time in milliseconds since the epoch. `i64::MIN` is "no time yet", `i64::MAX` the end.
pub(crate) type Millis = i64;

/// Longest chain of parents followed when a partition without rows takes its parents' time.
const MAX_LINEAGE: usize = 64;

/// How a declared source partition stands (see [`crate::source::PartitionEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceState {
    /// Declared, or being read.
    Reading,
    /// Read to its tip at this instant, nothing newer since.
    CaughtUp(Instant),
    /// Read to its end.
    Finished,
}

/// One partition the source declared.
#[derive(Debug, Clone)]
pub(crate) struct SourcePartition {
    pub(crate) state: SourceState,
    /// Partitions it continues (a child shard's parents).
    pub(crate) parents: Vec<u32>,
    /// Once finished: the partitions that continue it.
    pub(crate) children: Vec<u32>,
    /// The last micro-batch with records of it (whether or not they reached a window), and when
    /// it was processed.
    pub(crate) last_records: Option<(u64, Instant)>,
    /// When the pipeline first processed records of it.
    pub(crate) first_records: Option<Instant>,
}

/// The partitions a source declared, by partition number; shared by every windowed operator.
/// Numbers the source never declared are absent (they follow the older rule: known from their
/// first row, idle after `idle_timeout` without rows).
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionTable {
    entries: Vec<Option<SourcePartition>>,
}

impl PartitionTable {
    pub(crate) fn get(&self, p: u32) -> Option<&SourcePartition> {
        self.entries.get(p as usize).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, p: u32) -> Option<&mut SourcePartition> {
        self.entries.get_mut(p as usize).and_then(Option::as_mut)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The declared partitions: (number, how it stands).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &SourcePartition)> {
        self.entries
            .iter()
            .zip(0u32..)
            .filter_map(|(e, i)| e.as_ref().map(|e| (i, e)))
    }

    /// Declares `p` (again: its parents are replaced, its state kept).
    pub(crate) fn declare(&mut self, p: u32, parents: Vec<u32>) {
        let i = p as usize;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        match &mut self.entries[i] {
            Some(e) => e.parents = parents,
            slot => {
                *slot = Some(SourcePartition {
                    state: SourceState::Reading,
                    parents,
                    children: Vec::new(),
                    last_records: None,
                    first_records: None,
                })
            }
        }
    }
}

#[derive(Debug, Clone)]
struct PartitionClock {
    max_time: Millis,
    last_seen: Instant,
    /// The micro-batch of its last row.
    last_seq: u64,
}

/// The watermark of one windowed operator.
///
/// Each partition's time is the largest event time seen in it; the operator's watermark is the
/// minimum over the partitions that hold it back, minus the allowed lateness. Which partitions hold
/// it back depends on what the source declared ([`PartitionTable`]):
///
/// - a declared partition holds from its declaration: at its own time once it has rows, before
///   that at its parents' time (a child shard), or at the very start (an original partition);
/// - it stops holding when it is caught up at its tip and then quiet for `idle_timeout`, when it
///   is finished and the partitions that continue it are declared, or when its records have kept
///   coming for `idle_timeout` without one reaching this operator (a `WHERE` that removes them);
///   a partition that is slow to answer or throttled keeps holding;
/// - a partition the source did not declare holds from its first row until `idle_timeout` passes
///   without one.
///
/// When no partition holds, the watermark is the largest time seen, so that the windows of a quiet
/// stream still close. It never goes back.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkTracker {
    lateness: Millis,
    idle_timeout: Duration,
    partitions: Vec<Option<PartitionClock>>,
    /// Cached minimum over holding partitions (before lateness).
    current: Millis,
    finished: bool,
}

impl WatermarkTracker {
    pub(crate) fn new(settings: WatermarkSettings) -> Self {
        Self {
            lateness: i64::try_from(settings.allowed_lateness.as_millis()).unwrap_or(i64::MAX),
            idle_timeout: settings.idle_timeout,
            partitions: Vec::new(),
            current: Millis::MIN,
            finished: false,
        }
    }

    /// The watermark: windows ending at or before it are complete.
    pub(crate) fn watermark(&self) -> Millis {
        if self.finished {
            Millis::MAX
        } else if self.current == Millis::MIN {
            Millis::MIN
        } else {
            self.current.saturating_sub(self.lateness)
        }
    }

    /// The largest event time seen in partition `p` (`Millis::MIN` before its first row).
    pub(crate) fn partition_time(&self, p: u32) -> Millis {
        self.partitions
            .get(p as usize)
            .and_then(Option::as_ref)
            .map_or(Millis::MIN, |c| c.max_time)
    }

    /// Records a row of `partition` at event time `t`, in micro-batch `seq`, as of `now`.
    pub(crate) fn observe(
        &mut self,
        partition: u32,
        t: Millis,
        (now, seq): (Instant, u64),
        table: &PartitionTable,
    ) {
        let p = partition as usize;
        if self.partitions.len() <= p {
            self.partitions.resize(p + 1, None);
        }
        let clock = self.partitions[p].get_or_insert(PartitionClock {
            max_time: Millis::MIN,
            last_seen: now,
            last_seq: seq,
        });
        clock.last_seen = now;
        clock.last_seq = seq;
        if t > clock.max_time {
            let was = clock.max_time;
            clock.max_time = t;
            if self.partitions.len() == 1 && table.len() == 0 {
                // One partition, just seen, declared by nobody: it alone is the watermark.
                self.current = self.current.max(t);
            } else if was <= self.current || self.partitions.len().max(table.len()) == 1 {
                // Only a partition at the minimum (or a parent of one) can move the minimum.
                self.recompute(now, table);
            }
        }
    }

    /// The time the watermark is held at, before the allowed lateness is taken off
    /// (`Millis::MIN` before any).
    pub(crate) fn hold_time(&self) -> Millis {
        self.current
    }

    /// Whether a declared partition that has no rows in this operator takes its time from `p`
    /// (it is a child, or a later descendant, of `p`): such a partition must keep being read.
    pub(crate) fn passes_time_on(&self, p: u32, table: &PartitionTable) -> bool {
        table.iter().any(|(c, src)| {
            src.parents.contains(&p)
                && src.state != SourceState::Finished
                && self
                    .partitions
                    .get(c as usize)
                    .and_then(Option::as_ref)
                    .is_none_or(|clock| clock.max_time == Millis::MIN)
        })
    }

    /// Re-evaluates which partitions hold the watermark as of `now`.
    pub(crate) fn refresh(&mut self, now: Instant, table: &PartitionTable) {
        self.recompute(now, table);
    }

    /// The largest time seen in `p`, or when it has none, its parents' (the minimum over them).
    /// `memo` keeps what is worked out during one recomputation (lineages can share ancestors).
    fn base(
        &self,
        p: u32,
        table: &PartitionTable,
        memo: &mut [Option<Millis>],
        depth: usize,
    ) -> Millis {
        if let Some(c) = self.partitions.get(p as usize).and_then(Option::as_ref) {
            if c.max_time != Millis::MIN {
                return c.max_time;
            }
        }
        if let Some(Some(known)) = memo.get(p as usize) {
            return *known;
        }
        let base = match table.get(p) {
            Some(src) if !src.parents.is_empty() && depth < MAX_LINEAGE => src
                .parents
                .iter()
                .map(|&q| self.base(q, table, memo, depth + 1))
                .min()
                .unwrap_or(Millis::MIN),
            _ => Millis::MIN,
        };
        if let Some(slot) = memo.get_mut(p as usize) {
            *slot = Some(base);
        }
        base
    }

    /// The time at which `p` holds the watermark back, or `None` when it does not.
    fn hold(
        &self,
        p: u32,
        now: Instant,
        table: &PartitionTable,
        memo: &mut [Option<Millis>],
    ) -> Option<Millis> {
        let clock = self.partitions.get(p as usize).and_then(Option::as_ref);
        let quiet_since =
            |since: Instant| now.saturating_duration_since(since) >= self.idle_timeout;
        let Some(src) = table.get(p) else {
            return clock
                .filter(|c| !quiet_since(c.last_seen))
                .map(|c| c.max_time);
        };
        let holds = match src.state {
            SourceState::Finished => !src.children.iter().all(|&c| table.get(c).is_some()),
            SourceState::CaughtUp(since) => {
                let last = [
                    Some(since),
                    src.last_records.map(|r| r.1),
                    clock.map(|c| c.last_seen),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(since);
                !quiet_since(last)
            }
            SourceState::Reading => {
                // Records keep coming and none reaches this operator: they are filtered out
                // before it, and say nothing of its event time. (Timed from its last row here,
                // or from its first records: a partition declared long before it was read is
                // not quiet.)
                let last_row = clock.map(|c| c.last_seen).or(src.first_records);
                let filtered = src
                    .last_records
                    .is_some_and(|(seq, _)| clock.is_none_or(|c| seq > c.last_seq));
                !(filtered && last_row.is_some_and(quiet_since))
            }
        };
        holds.then(|| self.base(p, table, memo, 0))
    }

    fn recompute(&mut self, now: Instant, table: &PartitionTable) {
        let mut hold_min = Millis::MAX;
        let mut any_hold = false;
        let mut all_max = Millis::MIN;
        let n = self.partitions.len().max(table.len());
        // Lineage times, worked out once per recomputation; only children without rows need them.
        let mut memo = if table.len() == 0 {
            Vec::new()
        } else {
            vec![None; n]
        };
        for p in 0..n as u32 {
            if let Some(c) = self.partitions.get(p as usize).and_then(Option::as_ref) {
                all_max = all_max.max(c.max_time);
            }
            if let Some(h) = self.hold(p, now, table, &mut memo) {
                any_hold = true;
                hold_min = hold_min.min(h);
            }
        }
        let candidate = if any_hold { hold_min } else { all_max };
        // Monotonic: a partition waking up behind the others cannot move the watermark back.
        self.current = self.current.max(candidate);
    }

    /// End of input: every window is complete.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// Writes the watermark and the per-partition maxima into a snapshot's schema metadata.
    pub(crate) fn save(&self, meta: &mut std::collections::HashMap<String, String>) {
        meta.insert("watermark".to_owned(), self.current.to_string());
        let maxima: Vec<String> = self
            .partitions
            .iter()
            .map(|c| {
                c.as_ref()
                    .map_or_else(String::new, |c| c.max_time.to_string())
            })
            .collect();
        meta.insert("partitions".to_owned(), maxima.join(","));
    }

    /// Restores what [`Self::save`] wrote; restored partitions count as just seen.
    pub(crate) fn load(
        &mut self,
        meta: &std::collections::HashMap<String, String>,
        now: Instant,
    ) -> crate::Result<()> {
        let damaged = |what: &str| {
            crate::Error::Pipeline(format!(
                "the checkpoint's window state is damaged ({what}); remove the checkpoint to \
                 start over"
            ))
        };
        self.current = meta
            .get("watermark")
            .ok_or_else(|| damaged("no watermark"))?
            .parse()
            .map_err(|_| damaged("the watermark is not a number"))?;
        self.partitions = match meta.get("partitions").filter(|p| !p.is_empty()) {
            None => Vec::new(),
            Some(p) => p
                .split(',')
                .map(|v| {
                    if v.is_empty() {
                        return Ok(None);
                    }
                    v.parse()
                        .map(|max_time| {
                            Some(PartitionClock {
                                max_time,
                                last_seen: now,
                                last_seq: 0,
                            })
                        })
                        .map_err(|_| damaged("a partition's time is not a number"))
                })
                .collect::<crate::Result<_>>()?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(lateness_ms: u64, idle_ms: u64) -> WatermarkTracker {
        // (Tests of sources that declare nothing use an empty table.)
        WatermarkTracker::new(WatermarkSettings {
            allowed_lateness: Duration::from_millis(lateness_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ..WatermarkSettings::default()
        })
    }

    #[test]
    fn largest_time_minus_lateness_and_never_backwards() {
        let now = Instant::now();
        let mut w = tracker(1000, 60_000);
        let none = PartitionTable::default();
        assert_eq!(w.watermark(), Millis::MIN);
        w.observe(0, 5000, (now, 0), &none);
        assert_eq!(w.watermark(), 4000);
        w.observe(0, 3000, (now, 0), &none);
        assert_eq!(w.watermark(), 4000);
        w.observe(0, 9000, (now, 0), &none);
        assert_eq!(w.watermark(), 8000);
        w.finish();
        assert_eq!(w.watermark(), Millis::MAX);
    }

    #[test]
    fn minimum_over_active_partitions_and_idle_ones_are_skipped() {
        let t0 = Instant::now();
        let mut w = tracker(0, 1000);
        let none = PartitionTable::default();
        w.observe(1, 2_000, (t0, 0), &none);
        w.observe(0, 10_000, (t0, 0), &none);
        assert_eq!(
            w.watermark(),
            2_000,
            "the slow shard holds the watermark back"
        );
        w.observe(0, 20_000, (t0 + Duration::from_millis(900), 0), &none);
        assert_eq!(w.watermark(), 2_000);
        // Shard 1 has been quiet for longer than the idle timeout.
        w.refresh(t0 + Duration::from_millis(1500), &none);
        assert_eq!(w.watermark(), 20_000);
        // It wakes up behind: the watermark does not go back.
        w.observe(1, 3_000, (t0 + Duration::from_millis(1600), 0), &none);
        assert_eq!(w.watermark(), 20_000);
    }

    #[test]
    fn all_partitions_idle_releases_the_largest_time() {
        let t0 = Instant::now();
        let mut w = tracker(0, 100);
        let none = PartitionTable::default();
        w.observe(0, 1_000, (t0, 0), &none);
        w.observe(1, 5_000, (t0, 0), &none);
        assert_eq!(w.watermark(), 1_000);
        w.refresh(t0 + Duration::from_millis(200), &none);
        assert_eq!(w.watermark(), 5_000);
    }

    /// A table of `n` partitions declared, the ones in `children` with those parents.
    fn declared(n: u32, children: &[(u32, &[u32])]) -> PartitionTable {
        let mut table = PartitionTable::default();
        for p in 0..n {
            let parents = children
                .iter()
                .find(|c| c.0 == p)
                .map_or_else(Vec::new, |c| c.1.to_vec());
            table.declare(p, parents);
        }
        table
    }

    fn set(table: &mut PartitionTable, p: u32, state: SourceState, children: &[u32]) {
        let e = table.get_mut(p).unwrap();
        e.state = state;
        e.children = children.to_vec();
    }

    #[test]
    fn a_declared_partition_without_rows_holds_the_watermark_at_the_start() {
        // The backlog case: shard 0 answers first with a page far ahead of the others.
        let t0 = Instant::now();
        let table = declared(4, &[]);
        let mut w = tracker(0, 1000);
        for t in (0..100_000).step_by(1000) {
            w.observe(0, t, (t0, 0), &table);
        }
        assert_eq!(
            w.watermark(),
            Millis::MIN,
            "shards 1 to 3 have not answered"
        );
        w.observe(1, 5_000, (t0, 0), &table);
        w.observe(2, 7_000, (t0, 0), &table);
        assert_eq!(w.watermark(), Millis::MIN);
        w.observe(3, 6_000, (t0, 0), &table);
        assert_eq!(w.watermark(), 5_000, "the slowest shard's time");
        // Silence is not idleness: shard 1 reading (slow, throttled) keeps holding however long.
        w.refresh(t0 + Duration::from_secs(3600), &table);
        assert_eq!(w.watermark(), 5_000);
    }

    #[test]
    fn a_caught_up_partition_stops_holding_once_quiet_for_the_idle_timeout() {
        let t0 = Instant::now();
        let mut table = declared(2, &[]);
        let mut w = tracker(0, 1000);
        w.observe(0, 9_000, (t0, 0), &table);
        w.observe(1, 2_000, (t0, 0), &table);
        assert_eq!(w.watermark(), 2_000);
        let t1 = t0 + Duration::from_millis(500);
        set(&mut table, 1, SourceState::CaughtUp(t1), &[]);
        w.refresh(t1 + Duration::from_millis(900), &table);
        assert_eq!(
            w.watermark(),
            2_000,
            "caught up, but not quiet for long enough"
        );
        w.refresh(t1 + Duration::from_millis(1000), &table);
        assert_eq!(w.watermark(), 9_000);
        // A declared shard that is empty: caught up at once, released after the timeout.
        let mut table = declared(2, &[]);
        let mut w = tracker(0, 1000);
        w.observe(0, 4_000, (t0, 0), &table);
        set(&mut table, 1, SourceState::CaughtUp(t0), &[]);
        w.refresh(t0 + Duration::from_millis(999), &table);
        assert_eq!(w.watermark(), Millis::MIN);
        w.refresh(t0 + Duration::from_millis(1000), &table);
        assert_eq!(w.watermark(), 4_000);
    }

    #[test]
    fn a_child_starts_at_its_parents_time_and_a_finished_parent_holds_until_it_is_declared() {
        let t0 = Instant::now();
        // 0 is split into 2 and 3; 1 goes on.
        let mut table = declared(4, &[(2, &[0]), (3, &[0])]);
        let mut w = tracker(0, 1000);
        w.observe(0, 10_000, (t0, 0), &table);
        w.observe(1, 50_000, (t0, 0), &table);
        assert_eq!(w.watermark(), 10_000);
        set(&mut table, 0, SourceState::Finished, &[2, 3]);
        w.refresh(t0, &table);
        // Neither child has a row: both hold at their parent's time.
        assert_eq!(w.watermark(), 10_000);
        w.observe(2, 30_000, (t0, 0), &table);
        assert_eq!(w.watermark(), 10_000, "child 3 still at its parent's time");
        w.observe(3, 20_000, (t0, 0), &table);
        assert_eq!(w.watermark(), 20_000);
        // A finished partition whose children are not declared yet keeps holding.
        let mut table = declared(2, &[]);
        let mut w = tracker(0, 1000);
        w.observe(0, 1_000, (t0, 0), &table);
        w.observe(1, 8_000, (t0, 0), &table);
        set(&mut table, 0, SourceState::Finished, &[5]);
        w.refresh(t0, &table);
        assert_eq!(w.watermark(), 1_000);
        table.declare(5, vec![0]);
        w.refresh(t0, &table);
        assert_eq!(
            w.watermark(),
            1_000,
            "now the child holds at its parent's time"
        );
        w.observe(5, 6_000, (t0, 0), &table);
        assert_eq!(w.watermark(), 6_000);
        // Finished without children (the end of a partition nobody continues): no hold.
        set(&mut table, 5, SourceState::Finished, &[]);
        w.refresh(t0, &table);
        assert_eq!(w.watermark(), 8_000);
    }

    #[test]
    fn a_merge_child_takes_the_earlier_of_its_parents() {
        let t0 = Instant::now();
        let mut table = declared(3, &[(2, &[0, 1])]);
        let mut w = tracker(0, 1000);
        w.observe(0, 4_000, (t0, 0), &table);
        w.observe(1, 9_000, (t0, 0), &table);
        set(&mut table, 0, SourceState::Finished, &[2]);
        set(&mut table, 1, SourceState::Finished, &[2]);
        w.refresh(t0, &table);
        assert_eq!(w.watermark(), 4_000);
    }

    #[test]
    fn a_partition_whose_rows_never_reach_the_window_stops_holding_after_the_timeout() {
        // Records of partition 1 keep coming but a WHERE removes them all.
        let t0 = Instant::now();
        let mut table = declared(2, &[]);
        let mut w = tracker(0, 1000);
        w.observe(0, 3_000, (t0, 0), &table);
        table.get_mut(1).unwrap().last_records = Some((1, t0));
        table.get_mut(1).unwrap().first_records = Some(t0);
        w.refresh(t0 + Duration::from_millis(999), &table);
        assert_eq!(w.watermark(), Millis::MIN);
        w.refresh(t0 + Duration::from_millis(1000), &table);
        assert_eq!(w.watermark(), 3_000);
        // Declared long before its first records: quiet only from those.
        let mut table = declared(2, &[]);
        let mut w = tracker(0, 1000);
        w.observe(0, 3_000, (t0, 0), &table);
        let later = t0 + Duration::from_secs(60);
        table.get_mut(1).unwrap().last_records = Some((1, later));
        table.get_mut(1).unwrap().first_records = Some(later);
        w.refresh(later + Duration::from_millis(10), &table);
        assert_eq!(w.watermark(), Millis::MIN);
        // Without records (slow, throttled, paused) it would have kept holding.
        let table = declared(2, &[]);
        let mut w = tracker(0, 1000);
        w.observe(0, 3_000, (t0, 0), &table);
        w.refresh(t0 + Duration::from_secs(60), &table);
        assert_eq!(w.watermark(), Millis::MIN);
    }

    #[test]
    fn a_parent_passes_its_time_on_to_a_child_without_rows() {
        let t0 = Instant::now();
        let mut table = declared(3, &[(2, &[0, 1])]);
        let mut w = tracker(0, 1000);
        w.observe(0, 1_000, (t0, 0), &table);
        w.observe(1, 9_000, (t0, 0), &table);
        assert!(w.passes_time_on(0, &table) && w.passes_time_on(1, &table));
        w.observe(2, 9_500, (t0, 1), &table);
        assert!(!w.passes_time_on(1, &table), "the child has its own time");
        set(&mut table, 2, SourceState::Finished, &[]);
        assert!(!w.passes_time_on(0, &table));
    }

    #[test]
    fn a_damaged_snapshot_is_an_error() {
        let mut w = tracker(0, 1000);
        let mut meta = std::collections::HashMap::new();
        meta.insert("watermark".to_owned(), "12".to_owned());
        meta.insert("partitions".to_owned(), "5,x".to_owned());
        let err = w.load(&meta, Instant::now()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        meta.insert("watermark".to_owned(), "soon".to_owned());
        assert!(w.load(&meta, Instant::now()).is_err());
    }
}
