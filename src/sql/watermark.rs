//! Event-time watermarks: per source partition, combined as the minimum over active partitions.

use std::time::{Duration, Instant};

/// How event time is tracked: how late a row may be, and when a quiet partition stops holding the
/// watermark back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSettings {
    /// How far behind the largest event time seen a row may still arrive (default 0).
    pub allowed_lateness: Duration,
    /// A partition (shard) without rows for this long no longer holds the watermark back
    /// (default 60 s).
    pub idle_timeout: Duration,
}

impl Default for WatermarkSettings {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::ZERO,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Event time in milliseconds since the epoch. `i64::MIN` is "no time yet", `i64::MAX` the end.
pub(crate) type Millis = i64;

#[derive(Debug, Clone)]
struct PartitionClock {
    max_time: Millis,
    last_seen: Instant,
}

/// The watermark of one windowed operator.
///
/// Each partition's watermark is the largest event time seen in it minus the allowed lateness; the
/// operator's watermark is the minimum over partitions that are not idle (or, when every partition
/// is idle, the maximum, so that the windows of a quiet stream still close). It never goes back.
#[derive(Debug, Clone)]
pub(crate) struct WatermarkTracker {
    lateness: Millis,
    idle_timeout: Duration,
    partitions: Vec<Option<PartitionClock>>,
    /// Cached minimum over active partitions (before lateness), valid unless `dirty`.
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

    /// Records a row of `partition` at event time `t`, as of `now`.
    pub(crate) fn observe(&mut self, partition: u32, t: Millis, now: Instant) {
        let p = partition as usize;
        if self.partitions.len() <= p {
            self.partitions.resize(p + 1, None);
        }
        let clock = self.partitions[p].get_or_insert(PartitionClock {
            max_time: Millis::MIN,
            last_seen: now,
        });
        clock.last_seen = now;
        if t > clock.max_time {
            let was = clock.max_time;
            clock.max_time = t;
            // Only a partition at the minimum can move the minimum.
            if was <= self.current || self.partitions.len() == 1 {
                self.recompute(now);
            }
        } else if self.current == Millis::MIN {
            self.recompute(now);
        }
    }

    /// Re-evaluates which partitions are idle as of `now`.
    pub(crate) fn refresh(&mut self, now: Instant) {
        self.recompute(now);
    }

    fn recompute(&mut self, now: Instant) {
        let mut active_min = Millis::MAX;
        let mut any_active = false;
        let mut all_max = Millis::MIN;
        for clock in self.partitions.iter().flatten() {
            all_max = all_max.max(clock.max_time);
            if now.saturating_duration_since(clock.last_seen) < self.idle_timeout {
                any_active = true;
                active_min = active_min.min(clock.max_time);
            }
        }
        let candidate = if any_active { active_min } else { all_max };
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
        self.current = meta
            .get("watermark")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                crate::Error::Pipeline("window state snapshot has no watermark".into())
            })?;
        self.partitions = meta
            .get("partitions")
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split(',')
                    .map(|v| {
                        v.parse().ok().map(|max_time| PartitionClock {
                            max_time,
                            last_seen: now,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(lateness_ms: u64, idle_ms: u64) -> WatermarkTracker {
        WatermarkTracker::new(WatermarkSettings {
            allowed_lateness: Duration::from_millis(lateness_ms),
            idle_timeout: Duration::from_millis(idle_ms),
        })
    }

    #[test]
    fn largest_time_minus_lateness_and_never_backwards() {
        let now = Instant::now();
        let mut w = tracker(1000, 60_000);
        assert_eq!(w.watermark(), Millis::MIN);
        w.observe(0, 5000, now);
        assert_eq!(w.watermark(), 4000);
        w.observe(0, 3000, now);
        assert_eq!(w.watermark(), 4000);
        w.observe(0, 9000, now);
        assert_eq!(w.watermark(), 8000);
        w.finish();
        assert_eq!(w.watermark(), Millis::MAX);
    }

    #[test]
    fn minimum_over_active_partitions_and_idle_ones_are_skipped() {
        let t0 = Instant::now();
        let mut w = tracker(0, 1000);
        w.observe(1, 2_000, t0);
        w.observe(0, 10_000, t0);
        assert_eq!(
            w.watermark(),
            2_000,
            "the slow shard holds the watermark back"
        );
        w.observe(0, 20_000, t0 + Duration::from_millis(900));
        assert_eq!(w.watermark(), 2_000);
        // Shard 1 has been quiet for longer than the idle timeout.
        w.refresh(t0 + Duration::from_millis(1500));
        assert_eq!(w.watermark(), 20_000);
        // It wakes up behind: the watermark does not go back.
        w.observe(1, 3_000, t0 + Duration::from_millis(1600));
        assert_eq!(w.watermark(), 20_000);
    }

    #[test]
    fn all_partitions_idle_releases_the_largest_time() {
        let t0 = Instant::now();
        let mut w = tracker(0, 100);
        w.observe(0, 1_000, t0);
        w.observe(1, 5_000, t0);
        assert_eq!(w.watermark(), 1_000);
        w.refresh(t0 + Duration::from_millis(200));
        assert_eq!(w.watermark(), 5_000);
    }
}
