//! Acknowledgements: how sinks tell the pipeline that output is stored, so checkpoints can advance.
//!
//! Every micro-batch the pipeline takes from its source gets a sequence number and an *ack group*.
//! Each piece of output derived from that batch (rows for each sink, rows for the error output) carries
//! an [`Ack`] handle of the group. A sink calls [`Ack::acknowledge`] once the AWS call, file write or
//! other operation that stores the data has succeeded. When every handle of a group has been
//! acknowledged, the group reports its batch as done; the [`AckTracker`] then advances the committed
//! source position over the longest prefix of done batches. A handle dropped without being acknowledged
//! marks its batch as failed, and the position never moves past a failed batch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::record::Position;

/// The outcome of one micro-batch's ack group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckEvent {
    pub(crate) seq: u64,
    pub(crate) failed: bool,
}

/// What the tracker hears: a batch handed out, or a batch's outcome. Both travel on one channel
/// so that a registration always arrives before the outcome of the same batch.
#[derive(Debug)]
pub(crate) enum TrackerMsg {
    Register(u64, Position),
    /// The SQL window state right after batch `seq`: the batch is a checkpoint candidate.
    State(u64, WindowSnapshot),
    Done(AckEvent),
    /// Batches `from` to `into` (and every batch between) complete together: none of them is
    /// done before all are. The pipeline sends it before it lets go of `from`'s handle, to hold
    /// one handle for many batches whose rows wait in open windows.
    Merge {
        from: u64,
        into: u64,
    },
}

/// The window state of the SQL at one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WindowSnapshot {
    /// One snapshot per stateful statement.
    pub(crate) windows: Vec<Vec<u8>>,
    /// Source partition names, in the order the window state numbers them.
    pub(crate) partitions: Vec<String>,
}

/// A position that is safe to commit, with the window state that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) position: Position,
    /// Window state after the batch that ends the position, when it was snapshotted.
    pub(crate) state: Option<WindowSnapshot>,
}

struct AckGroup {
    seq: u64,
    failed: AtomicBool,
    events: Option<mpsc::UnboundedSender<TrackerMsg>>,
    /// Handles of other batches that complete when this group does, with the same outcome.
    dependents: Mutex<Vec<Ack>>,
}

impl AckGroup {
    fn take_dependents(&mut self) -> Vec<Ack> {
        std::mem::take(
            self.dependents
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

impl Drop for AckGroup {
    fn drop(&mut self) {
        // Dependents are completed by a loop, not by recursion: a session window open over many
        // micro-batches chains a group per batch, each holding the next, and dropping such a
        // chain recursively used stack in proportion to its length.
        let failed = self.failed.load(Ordering::Acquire);
        let mut pending: Vec<(Ack, bool)> = self
            .take_dependents()
            .into_iter()
            .map(|ack| (ack, failed))
            .collect();
        while let Some((mut ack, failed)) = pending.pop() {
            // Dropped unacknowledged when the group it depends on failed: it fails too.
            ack.done = !failed;
            let group = Arc::clone(&ack.group);
            drop(ack);
            // The last handle on that group: its own dependents join the loop before it reports.
            if let Some(mut inner) = Arc::into_inner(group) {
                let failed = inner.failed.load(Ordering::Acquire);
                pending.extend(inner.take_dependents().into_iter().map(|a| (a, failed)));
            }
        }
        if let Some(tx) = &self.events {
            // The receiver is gone only when the pipeline has already stopped; nothing to report then.
            let _ = tx.send(TrackerMsg::Done(AckEvent {
                seq: self.seq,
                failed,
            }));
        }
    }
}

/// A handle that a sink acknowledges once the data it came with is stored.
///
/// Dropping an `Ack` without calling [`acknowledge`](Ack::acknowledge) marks the data as not stored:
/// the source position covering it is never committed, so it is read again after a restart.
/// A sink that splits one batch into several requests can [`split`](Ack::split) the handle: the batch
/// counts as stored only when every part is acknowledged.
pub struct Ack {
    group: Arc<AckGroup>,
    done: bool,
}

impl Ack {
    /// A handle that is tracked by nobody: for sinks used on their own, outside a pipeline.
    pub fn untracked() -> Self {
        Self::new(u64::MAX, None)
    }

    pub(crate) fn new(seq: u64, events: Option<mpsc::UnboundedSender<TrackerMsg>>) -> Self {
        Self {
            group: Arc::new(AckGroup {
                seq,
                failed: AtomicBool::new(false),
                events,
                dependents: Mutex::new(Vec::new()),
            }),
            done: false,
        }
    }

    /// Another handle on the same batch; the batch is stored only once both are acknowledged.
    pub fn split(&self) -> Self {
        Self {
            group: Arc::clone(&self.group),
            done: false,
        }
    }

    /// Makes `other` complete when this handle's batch does, with the same outcome: used for
    /// batches whose rows reach a sink only as part of a later batch's output (windows).
    pub(crate) fn attach(&self, other: Ack) {
        self.group
            .dependents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(other);
    }

    /// Declares the data stored.
    pub fn acknowledge(mut self) {
        self.done = true;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.done {
            self.group.failed.store(true, Ordering::Release);
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack").field("seq", &self.group.seq).finish()
    }
}

/// One batch handed out and not committed, or several merged into one.
#[derive(Debug)]
struct PendingBatch {
    /// The position after the last batch of the entry.
    position: Position,
    /// The last batch of the entry (its key is the first).
    last: u64,
    /// Batches of the entry not done yet.
    outstanding: u32,
    state: Option<WindowSnapshot>,
}

/// Turns ack events into the source position that is safe to commit.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    /// Batches handed out and not yet part of the committed prefix.
    pending: BTreeMap<u64, PendingBatch>,
    committed: Position,
    failed: Vec<u64>,
    /// Only batches with a window-state snapshot are commit points (stateful SQL with a
    /// checkpoint store): a position is worth nothing without the state that goes with it.
    snapshots_only: bool,
}

impl AckTracker {
    /// A tracker that commits only at batches with a window-state snapshot.
    pub(crate) fn snapshots_only() -> Self {
        Self {
            snapshots_only: true,
            ..Self::default()
        }
    }

    /// Starts from an already committed position (a restored checkpoint): partitions that this
    /// run never touches keep their offsets in later commits.
    pub(crate) fn starting_at(mut self, position: Position) -> Self {
        self.committed = position;
        self
    }

    /// Registers batch `seq`, which brings the source to `position`.
    pub(crate) fn register(&mut self, seq: u64, position: Position) {
        self.pending.insert(
            seq,
            PendingBatch {
                position,
                last: seq,
                outstanding: 1,
                state: None,
            },
        );
    }

    /// Merges the entries from the one holding `from` to the one holding `into` into one, done
    /// when all of them are. The merged entry commits at `into`'s position with `into`'s window
    /// state; the states of earlier batches in it are dropped (they were commit points, now
    /// passed over: a later commit, never a lost row).
    pub(crate) fn merge(&mut self, from: u64, into: u64) {
        let Some(first) = self
            .pending
            .range(..=from)
            .next_back()
            .filter(|(_, e)| e.last >= from)
            .map(|(k, _)| *k)
        else {
            return;
        };
        let keys: Vec<u64> = self.pending.range(first..=into).map(|(k, _)| *k).collect();
        let mut merged: Option<PendingBatch> = None;
        for k in keys {
            let e = self.pending.remove(&k).expect("listed above");
            merged = Some(match merged {
                None => e,
                Some(mut m) => {
                    m.position.advance(&e.position);
                    m.last = m.last.max(e.last);
                    m.outstanding += e.outstanding;
                    m.state = e.state;
                    m
                }
            });
        }
        if let Some(mut m) = merged {
            if m.last != into {
                m.state = None;
            }
            self.pending.insert(first, m);
        }
    }

    /// Attaches the window state taken right after batch `seq`.
    pub(crate) fn set_state(&mut self, seq: u64, state: WindowSnapshot) {
        // Only an entry that ends at `seq` can commit with the state taken after it.
        if let Some(entry) = self.pending.get_mut(&seq).filter(|e| e.last == seq) {
            entry.state = Some(state);
        }
    }

    /// Handles one message; returns a new commit when the committable position moved.
    pub(crate) fn on_message(&mut self, msg: TrackerMsg) -> Option<Commit> {
        match msg {
            TrackerMsg::Register(seq, position) => {
                self.register(seq, position);
                None
            }
            TrackerMsg::State(seq, state) => {
                self.set_state(seq, state);
                None
            }
            TrackerMsg::Done(event) => self.on_event(event),
            TrackerMsg::Merge { from, into } => {
                self.merge(from, into);
                None
            }
        }
    }

    /// Records an event; returns the new commit when the committable position moved.
    pub(crate) fn on_event(&mut self, event: AckEvent) -> Option<Commit> {
        if event.failed {
            self.failed.push(event.seq);
            return None;
        }
        if let Some((_, entry)) = self
            .pending
            .range_mut(..=event.seq)
            .next_back()
            .filter(|(_, e)| e.last >= event.seq)
        {
            entry.outstanding = entry.outstanding.saturating_sub(1);
        }
        let mut commit = None;
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().outstanding > 0 {
                break;
            }
            let batch = entry.remove();
            self.committed.advance(&batch.position);
            let point = if self.snapshots_only {
                batch.state.is_some()
            } else {
                !batch.position.is_empty() || batch.state.is_some()
            };
            if point {
                commit = Some(Commit {
                    position: self.committed.clone(),
                    state: batch.state,
                });
            }
        }
        commit
    }

    /// Batches whose output was dropped without being stored.
    pub(crate) fn failed(&self) -> &[u64] {
        &self.failed
    }

    /// Batches not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

/// What became of a batch's [`Ack`], as its [`AckReceipt`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Neither acknowledged nor given up yet.
    Pending,
    /// Every handle of the batch was acknowledged: the data is stored.
    Stored,
    /// A handle was dropped unacknowledged: the sink gave up on the data.
    GivenUp,
}

/// Reports the outcome of an [`Ack`] made by [`Ack::with_receipt`]: for testing a sink (does it
/// acknowledge only after the data is stored?) or for using one outside a pipeline.
#[derive(Debug)]
pub struct AckReceipt {
    rx: Mutex<mpsc::UnboundedReceiver<TrackerMsg>>,
    status: Mutex<AckStatus>,
}

impl Ack {
    /// A tracked handle and the receipt that reports its outcome.
    pub fn with_receipt() -> (Ack, AckReceipt) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Ack::new(0, Some(tx)),
            AckReceipt {
                rx: Mutex::new(rx),
                status: Mutex::new(AckStatus::Pending),
            },
        )
    }
}

impl AckReceipt {
    /// The outcome so far.
    pub fn status(&self) -> AckStatus {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rx = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        while let Ok(m) = rx.try_recv() {
            if let TrackerMsg::Done(e) = m {
                *status = if e.failed {
                    AckStatus::GivenUp
                } else {
                    AckStatus::Stored
                };
            }
        }
        *status
    }

    /// True once the data is stored.
    pub fn is_stored(&self) -> bool {
        self.status() == AckStatus::Stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::UnboundedReceiver<TrackerMsg>) -> Vec<AckEvent> {
        let mut v = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let TrackerMsg::Done(e) = m {
                v.push(e);
            }
        }
        v
    }

    #[test]
    fn group_reports_once_all_parts_acknowledged() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = Ack::new(7, Some(tx));
        let b = a.split();
        a.acknowledge();
        assert!(drain(&mut rx).is_empty());
        b.acknowledge();
        assert_eq!(
            drain(&mut rx),
            vec![AckEvent {
                seq: 7,
                failed: false
            }]
        );
    }

    #[test]
    fn dropped_handle_fails_the_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = Ack::new(1, Some(tx));
        let b = a.split();
        a.acknowledge();
        drop(b);
        assert_eq!(
            drain(&mut rx),
            vec![AckEvent {
                seq: 1,
                failed: true
            }]
        );
    }

    /// A window open over many micro-batches chains their groups, each attached to the next;
    /// completing the chain must not take stack in proportion to its length.
    #[test]
    fn a_long_chain_of_attached_batches_completes_on_a_small_stack() {
        const CHAIN: u64 = 200_000;
        for fail in [false, true] {
            let events = std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    let mut held = Ack::new(0, Some(tx.clone()));
                    for seq in 1..CHAIN {
                        let next = Ack::new(seq, Some(tx.clone()));
                        next.attach(held);
                        held = next;
                    }
                    if fail {
                        drop(held);
                    } else {
                        held.acknowledge();
                    }
                    drain(&mut rx)
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(events.len() as u64, CHAIN, "every batch reports once");
            assert!(events.iter().all(|e| e.failed == fail), "fail = {fail}");
            let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            seqs.sort_unstable();
            assert!(seqs.iter().copied().eq(0..CHAIN));
        }
    }

    #[test]
    fn attached_batch_completes_with_the_later_one_and_shares_its_failure() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let held = Ack::new(3, Some(tx.clone()));
        let later = Ack::new(5, Some(tx.clone()));
        let to_sink = later.split();
        later.attach(held);
        later.acknowledge();
        assert!(
            drain(&mut rx).is_empty(),
            "batch 3 waits for batch 5's output"
        );
        to_sink.acknowledge();
        let mut events = drain(&mut rx);
        events.sort_by_key(|e| e.seq);
        assert_eq!(
            events,
            vec![
                AckEvent {
                    seq: 3,
                    failed: false
                },
                AckEvent {
                    seq: 5,
                    failed: false
                }
            ]
        );

        let held = Ack::new(8, Some(tx.clone()));
        let later = Ack::new(9, Some(tx));
        later.attach(held);
        drop(later);
        let events = drain(&mut rx);
        assert!(
            events.iter().all(|e| e.failed) && events.len() == 2,
            "{events:?}"
        );
    }

    #[test]
    fn position_advances_over_contiguous_prefix_only() {
        let mut t = AckTracker::default();
        t.register(0, Position::single("s", "10"));
        t.register(1, Position::single("s", "20"));
        t.register(2, Position::single("s", "30"));
        // Batch 1 finishes first: nothing is committable while batch 0 is outstanding.
        assert_eq!(
            t.on_event(AckEvent {
                seq: 1,
                failed: false
            }),
            None
        );
        let p = t
            .on_event(AckEvent {
                seq: 0,
                failed: false,
            })
            .unwrap()
            .position;
        assert_eq!(p.get("s"), Some("20"));
        assert_eq!(t.outstanding(), 1);
        // A failed batch blocks the position for good.
        assert_eq!(
            t.on_event(AckEvent {
                seq: 2,
                failed: true
            }),
            None
        );
        assert_eq!(t.failed(), &[2]);
    }

    #[test]
    fn with_window_state_only_snapshotted_batches_commit() {
        let done = |seq| AckEvent { seq, failed: false };
        let mut t = AckTracker::snapshots_only();
        t.register(0, Position::single("s", "10"));
        t.register(1, Position::single("s", "20"));
        t.register(2, Position::single("s", "30"));
        let snap = WindowSnapshot {
            windows: vec![vec![7]],
            partitions: vec!["shard-1".into()],
        };
        t.set_state(1, snap.clone());
        // Batch 0 alone is done, but its position without the window state would lose the rows
        // of its open windows.
        assert_eq!(t.on_event(done(0)), None);
        // Batches 1 and 2 done: the commit is batch 1's position with batch 1's state; batch 2's
        // position has no state, so it is not a commit point.
        assert_eq!(t.on_event(done(2)), None);
        let c = t.on_event(done(1)).unwrap();
        assert_eq!(c.position.get("s"), Some("20"));
        assert_eq!(c.state, Some(snap));
        t.register(3, Position::single("s", "40"));
        t.set_state(3, WindowSnapshot::default());
        let c = t.on_event(done(3)).unwrap();
        assert_eq!(c.position.get("s"), Some("40"));
    }

    #[test]
    fn merged_batches_commit_together_at_the_last_ones_position() {
        let done = |seq| AckEvent { seq, failed: false };
        let mut t = AckTracker::default();
        for (seq, at) in [(0, "10"), (1, "20"), (2, "30"), (3, "40"), (4, "50")] {
            t.register(seq, Position::single("s", at));
        }
        t.set_state(1, WindowSnapshot::default());
        t.merge(1, 3);
        assert_eq!(t.outstanding(), 3, "entries 0, 1..=3 and 4");
        assert_eq!(t.on_event(done(0)).unwrap().position.get("s"), Some("10"));
        assert_eq!(t.on_event(done(1)), None, "1 waits for 2 and 3");
        assert_eq!(t.on_event(done(3)), None);
        let c = t.on_event(done(2)).unwrap();
        assert_eq!(c.position.get("s"), Some("40"));
        assert_eq!(
            c.state, None,
            "batch 1's state does not go with batch 3's position"
        );
        // A merge into an entry already merged extends it; a failed batch in it blocks it.
        t.register(5, Position::single("s", "60"));
        t.merge(4, 5);
        assert_eq!(
            t.on_event(AckEvent {
                seq: 5,
                failed: true
            }),
            None
        );
        assert_eq!(t.on_event(done(4)), None);
        assert_eq!(t.outstanding(), 1);
    }
}
