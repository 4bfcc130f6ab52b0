//! Group windows (tumbling, hopping, session) over DataFusion accumulators, driven by watermarks.
//!
//! State is kept per (window, key): for tumbling and hopping windows one
//! [`GroupsAccumulator`] per aggregate per open window, with the window's keys interned by a
//! DataFusion [`GroupValues`]; for session windows plain [`Accumulator`]s per session, because
//! sessions merge. State is freed when the window is emitted, so memory follows the number of open
//! windows × keys, not the number of rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::kernels::cast::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::StreamOperator;
use crate::sql::guest::GuestGroups;
use crate::sql::time::{fmt_millis, fmt_time, time_array, time_to_millis};
use crate::sql::watermark::{Millis, PartitionTable, WatermarkSettings, WatermarkTracker};
use crate::{Error, Result};

/// The window of a windowed `GROUP BY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowSpec {
    /// `TUMBLE(ts, size)`: epoch-aligned, non-overlapping.
    Tumbling { size: Millis },
    /// `HOP(ts, slide, size)`: epoch-aligned, every `slide`, `size` long.
    Hopping { slide: Millis, size: Millis },
    /// `SESSION(ts, gap)`: per key, closed after `gap` without rows.
    Session { gap: Millis },
    /// `STAGGER(ts, size)`: per key, opened by the key's first row and closed `size` later
    /// (Kinesis Data Analytics' stagger windows).
    Stagger { size: Millis },
}

impl WindowSpec {
    /// Windows kept per key (sessions and stagger windows) rather than per time range.
    pub(crate) fn per_key(self) -> bool {
        matches!(self, Self::Session { .. } | Self::Stagger { .. })
    }

    /// When a per-key window that started at `start` and last saw a row at `last` closes.
    fn key_window_end(self, start: Millis, last: Millis) -> Millis {
        match self {
            Self::Session { gap } => last.saturating_add(gap),
            Self::Stagger { size } => start.saturating_add(size),
            _ => unreachable!("only per-key windows"),
        }
    }
}

impl std::fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowSpec::Tumbling { size } => write!(f, "tumbling {}", fmt_millis(*size)),
            WindowSpec::Hopping { slide, size } => {
                write!(
                    f,
                    "hopping {} every {}",
                    fmt_millis(*size),
                    fmt_millis(*slide)
                )
            }
            WindowSpec::Session { gap } => write!(f, "session with gap {}", fmt_millis(*gap)),
            WindowSpec::Stagger { size } => write!(f, "stagger {}", fmt_millis(*size)),
        }
    }
}

/// Where each group column of the aggregate's output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupColumn {
    /// The n-th key expression.
    Key(usize),
    /// The window's start.
    Start,
    /// The window's end.
    End,
}

/// A planned windowed aggregate: what to evaluate on each input batch and how to lay out output.
#[derive(Debug, Clone)]
pub(crate) struct WindowAggregatePlan {
    pub(crate) spec: WindowSpec,
    /// The time expression, as written (for `EXPLAIN`).
    pub(crate) time_sql: String,
    pub(crate) time_expr: Arc<dyn PhysicalExpr>,
    /// Evaluates to the input row id (`UInt64`, null for derived rows), when the input has one.
    pub(crate) row_expr: Option<Arc<dyn PhysicalExpr>>,
    pub(crate) keys: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) key_schema: SchemaRef,
    pub(crate) aggs: Vec<Arc<AggregateFunctionExpr>>,
    pub(crate) agg_args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    pub(crate) filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    pub(crate) group_columns: Vec<GroupColumn>,
    pub(crate) output_schema: SchemaRef,
}

/// A row the operator did not aggregate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowIssue {
    /// Row index in the batch given to [`WindowAggregate::push`].
    pub(crate) index: usize,
    /// The row's id (index of the input record in the micro-batch), when known.
    pub(crate) row_id: Option<u64>,
    /// `late` or `bad_time`.
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}

impl RowIssue {
    pub(crate) fn new(
        index: usize,
        row_id: Option<u64>,
        kind: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            index,
            row_id,
            kind,
            reason: reason.into(),
        }
    }
}

/// The row ids of a batch's rows, when the batch has them.
pub(crate) struct RowIds(Option<UInt64Array>);

impl RowIds {
    /// The ids in the hidden row id column `col`, if there is one.
    pub(crate) fn new(col: Option<&ArrayRef>) -> Result<Self> {
        Ok(Self(col.map(row_ids).transpose()?))
    }

    /// The id of row `i` (`None` for rows derived from several inputs).
    pub(crate) fn get(&self, i: usize) -> Option<u64> {
        self.0
            .as_ref()
            .and_then(|r| r.is_valid(i).then(|| r.value(i)))
    }
}

/// What a micro-batch carries besides its rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchContext<'a> {
    /// Sequence number of the micro-batch (for holding its acknowledgement while state uses it).
    pub(crate) seq: u64,
    /// Source partition of each input record, indexed by row id.
    pub(crate) partitions: &'a [u32],
    /// Arrival time of each input record, indexed by row id (empty when not known).
    pub(crate) arrivals: &'a [i64],
    /// The partitions the source declared (empty for a statement that reads what a window
    /// emitted: its rows come from no partition).
    pub(crate) table: &'a PartitionTable,
    pub(crate) now: Instant,
}

impl BatchContext<'_> {
    /// Tells `watermark` the event time `t` of the row `row_id`, in the row's source partition.
    pub(crate) fn observe(&self, watermark: &mut WatermarkTracker, row_id: Option<u64>, t: Millis) {
        let partition = row_id
            .and_then(|r| self.partitions.get(r as usize).copied())
            .unwrap_or(0);
        watermark.observe(partition, t, (self.now, self.seq), self.table);
    }
}

/// `settings.max_future` in milliseconds.
pub(crate) fn max_future_millis(settings: WatermarkSettings) -> Millis {
    i64::try_from(settings.max_future.as_millis()).unwrap_or(i64::MAX)
}

/// The `bad_time` issue of row `(index, row id)` whose event time `t` cannot be trusted: it is more
/// than `max_future` ahead of its record's arrival time. `None` when it is not, or when the arrival
/// is not known (derived rows).
pub(crate) fn too_far_ahead(
    t: Millis,
    (index, row_id): (usize, Option<u64>),
    ctx: &BatchContext<'_>,
    max_future: Millis,
) -> Option<RowIssue> {
    let arrival = *ctx.arrivals.get(usize::try_from(row_id?).ok()?)?;
    (t > arrival.saturating_add(max_future)).then(|| RowIssue {
        index,
        row_id,
        kind: "bad_time",
        reason: format!(
            "event time {} is more than {} ahead of the record's arrival time {}: a clock that is \
             wrong cannot be allowed to close everyone's windows (query.max_future_ms)",
            fmt_time(t),
            fmt_millis(max_future),
            fmt_time(arrival)
        ),
    })
}

/// The hidden row id column as `UInt64` (null for rows derived from several inputs).
pub(crate) fn row_ids(col: &ArrayRef) -> Result<UInt64Array> {
    Ok(
        cast_with_options(col, &DataType::UInt64, &CastOptions::default())?
            .as_primitive()
            .clone(),
    )
}

fn floor_to(t: Millis, step: Millis) -> Millis {
    t - t.rem_euclid(step)
}

fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
        .collect()
}

fn take_all(cols: &[ArrayRef], idx: &UInt32Array) -> Result<Vec<ArrayRef>> {
    Ok(arrow::compute::take_arrays(cols, idx, None)?)
}

/// Interned keys and accumulators of one open tumbling or hopping window.
struct WindowState {
    groups: Option<Box<dyn GroupValues>>,
    /// Number of groups when there are no key columns (0 or 1).
    keyless_groups: usize,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    first_seq: u64,
    scratch: Vec<usize>,
    /// With a guest aggregate (whose call can fail): which groups have rows aggregated. A key
    /// whose only rows failed is interned but holds nothing, and is not emitted.
    populated: Option<Vec<bool>>,
}

impl WindowState {
    fn num_groups(&self) -> usize {
        match &self.groups {
            Some(g) => g.len(),
            None => self.keyless_groups,
        }
    }

    /// Interns `keys` (of `count` rows) into `groups`, the rows' group indices; the window's
    /// number of groups.
    fn intern(
        &mut self,
        keys: &[ArrayRef],
        count: usize,
        groups: &mut Vec<usize>,
    ) -> Result<usize> {
        Ok(match &mut self.groups {
            Some(g) => {
                g.intern(keys, groups)?;
                g.len()
            }
            None => {
                groups.resize(count, 0);
                self.keyless_groups = 1;
                1
            }
        })
    }

    /// The key columns of every group, taken out.
    fn emit_keys(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(match &mut self.groups {
            Some(g) => g.emit(EmitTo::All)?,
            None => Vec::new(),
        })
    }
}

/// One open session of one key.
struct Session {
    start: Millis,
    last: Millis,
    accs: Vec<Box<dyn Accumulator>>,
    first_seq: u64,
}

/// The windowed aggregate operator.
pub(crate) struct WindowAggregate {
    plan: WindowAggregatePlan,
    watermark: WatermarkTracker,
    /// How far ahead of its arrival a row's event time may be.
    max_future: Millis,
    /// Open tumbling/hopping windows by (end, start), so the next to close comes first.
    windows: BTreeMap<(Millis, Millis), WindowState>,
    /// Open sessions per key (keys as arrow rows), each key's sorted by start.
    sessions: HashMap<OwnedRow, Vec<Session>>,
    key_rows: RowConverter,
    late_rows: u64,
    /// Indices of the aggregates whose calls can fail a batch (WASM guests).
    guest_aggs: Vec<usize>,
    /// Emitted rows whose guest aggregate could not be evaluated (its column is NULL there),
    /// with the reason; taken by [`Self::take_emit_issues`].
    emit_issues: Vec<(RecordBatch, String)>,
}

/// The keys, arguments and filters of some rows.
type RowsOf = (Vec<ArrayRef>, Vec<Vec<ArrayRef>>, Vec<Option<ArrayRef>>);

/// The reason of a batch failure inside a DataFusion error, or the error itself.
fn guest_failure(e: datafusion::error::DataFusionError) -> Result<String> {
    let e = Error::from(e);
    match crate::sql::batch_failure(&e) {
        Some(reason) => Ok(reason),
        None => Err(e),
    }
}

impl std::fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("spec", &self.plan.spec)
            .field("open_windows", &self.windows.len())
            .field("open_sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Rows of one window within a batch.
struct Assignment {
    start: Millis,
    end: Millis,
    rows: Vec<u32>,
}

impl StreamOperator for WindowAggregate {
    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &BatchContext<'_>,
    ) -> Result<Vec<RowIssue>> {
        self.push(batch, ctx)
    }

    fn on_time(&mut self, now: Instant, table: &PartitionTable) {
        self.watermark.refresh(now, table);
    }

    fn finish(&mut self) {
        self.watermark.finish();
    }

    fn emit_ready(&mut self) -> Result<Vec<RecordBatch>> {
        WindowAggregate::emit_ready(self)
    }

    fn take_emit_issues(&mut self) -> Vec<(RecordBatch, String)> {
        std::mem::take(&mut self.emit_issues)
    }

    fn watermark(&self) -> &WatermarkTracker {
        &self.watermark
    }

    fn live_states(&self) -> usize {
        WindowAggregate::live_states(self)
    }

    fn oldest_seq(&self) -> Option<u64> {
        WindowAggregate::oldest_seq(self)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        WindowAggregate::snapshot(self)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        WindowAggregate::restore(self, bytes)
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self.plan.keys.iter().map(|k| k.to_string()).collect();
        let aggs: Vec<String> = self.plan.aggs.iter().map(|a| a.name().to_owned()).collect();
        format!(
            "window: {} on event time `{}`; keys [{}]; aggregates [{}]",
            self.plan.spec,
            self.plan.time_sql,
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl WindowAggregate {
    pub(crate) fn new(plan: WindowAggregatePlan, settings: WatermarkSettings) -> Result<Self> {
        let key_rows = RowConverter::new(
            plan.key_schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let guest_aggs = (0..plan.aggs.len())
            .filter(|&i| GuestGroups::is_guest(&plan.aggs[i]))
            .collect();
        Ok(Self {
            plan,
            watermark: WatermarkTracker::new(settings),
            max_future: max_future_millis(settings),
            windows: BTreeMap::new(),
            sessions: HashMap::new(),
            key_rows,
            late_rows: 0,
            guest_aggs,
            emit_issues: Vec::new(),
        })
    }

    /// Number of live (window, key) states.
    pub(crate) fn live_states(&self) -> usize {
        self.windows
            .values()
            .map(WindowState::num_groups)
            .sum::<usize>()
            + self.sessions.values().map(Vec::len).sum::<usize>()
    }

    /// Sequence number of the oldest micro-batch that open state still holds rows of.
    pub(crate) fn oldest_seq(&self) -> Option<u64> {
        let w = self.windows.values().map(|w| w.first_seq).min();
        let s = self
            .sessions
            .values()
            .flat_map(|v| v.iter().map(|s| s.first_seq))
            .min();
        match (w, s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Aggregates one batch (the output of the per-batch part of the query).
    pub(crate) fn push(
        &mut self,
        batch: &RecordBatch,
        ctx: &BatchContext<'_>,
    ) -> Result<Vec<RowIssue>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let time_col = self.plan.time_expr.evaluate(batch)?.into_array(n)?;
        let (times, bad) = time_to_millis(&time_col)?;
        let row_ids = match &self.plan.row_expr {
            Some(e) => RowIds::new(Some(&e.evaluate(batch)?.into_array(n)?))?,
            None => RowIds::new(None)?,
        };
        let session_keys = match self.plan.spec {
            spec if spec.per_key() && !self.sessions.is_empty() => Some(
                self.key_rows
                    .convert_columns(&evaluate(&self.plan.keys, batch)?)?,
            ),
            _ => None,
        };
        let (accepted, mut issues) = self.admit(&times, bad, &row_ids, session_keys.as_ref(), ctx);
        if accepted.is_empty() {
            return Ok(issues);
        }
        let rows = self.evaluate_rows(batch)?;
        let failed = match self.plan.spec {
            spec if spec.per_key() => {
                let (keys, args, filters) = &rows;
                self.push_sessions(&accepted, spec, keys, args, filters, ctx.seq)?
            }
            spec => self
                .update_windows(spec, &accepted, n, &rows, ctx.seq)?
                .into_iter()
                .collect(),
        };
        for (rows, reason) in failed {
            for i in rows {
                let i = i as usize;
                issues.push(RowIssue::new(i, row_ids.get(i), "sql", reason.clone()));
            }
        }
        Ok(issues)
    }

    /// Sorts a batch's rows into those the windows take, as (row, time, watermark before it),
    /// and those they refuse, with why; each row taken moves the watermark.
    fn admit(
        &mut self,
        times: &Int64Array,
        bad: Vec<usize>,
        row_ids: &RowIds,
        session_keys: Option<&Rows>,
        ctx: &BatchContext<'_>,
    ) -> (Vec<(u32, Millis, Millis)>, Vec<RowIssue>) {
        let n = times.len();
        let mut issues = Vec::new();
        let mut bad = bad.into_iter().peekable();
        let mut accepted = Vec::with_capacity(n);
        for i in 0..n {
            let row_id = row_ids.get(i);
            if bad.next_if_eq(&i).is_some() {
                issues.push(RowIssue::new(
                    i,
                    row_id,
                    "bad_time",
                    "the window's time value is not a timestamp (ISO-8601 or epoch milliseconds)",
                ));
                continue;
            }
            if times.is_null(i) {
                issues.push(RowIssue::new(
                    i,
                    row_id,
                    "bad_time",
                    "the window's time value is null",
                ));
                continue;
            }
            let t = times.value(i);
            if let Some(issue) = self.refusal(t, (i, row_id), session_keys, ctx) {
                issues.push(issue);
                continue;
            }
            accepted.push((i as u32, t, self.watermark.watermark()));
            ctx.observe(&mut self.watermark, row_id, t);
        }
        (accepted, issues)
    }

    /// Why the windows refuse row `(index, row id)` of event time `t`, if they do: its time is
    /// too far ahead of its arrival, or its window was already emitted.
    fn refusal(
        &mut self,
        t: Millis,
        (i, row_id): (usize, Option<u64>),
        session_keys: Option<&Rows>,
        ctx: &BatchContext<'_>,
    ) -> Option<RowIssue> {
        if let Some(issue) = too_far_ahead(t, (i, row_id), ctx, self.max_future) {
            return Some(issue);
        }
        let wm = self.watermark.watermark();
        let end = self.late_window_end(t, wm, session_keys.map(|k| (k, i)))?;
        self.late_rows += 1;
        Some(RowIssue::new(
            i,
            row_id,
            "late",
            format!(
                "event time {} is for a window that ended at {} and was already emitted \
                 (watermark {})",
                fmt_time(t),
                fmt_time(end),
                fmt_time(wm)
            ),
        ))
    }

    /// The end of the window a row of event time `t` is for, when the watermark `wm` has passed
    /// it. `key` is the row's key (as row `i` of the converted keys), when its key may have open
    /// sessions or stagger windows: a row one of them takes is not late.
    fn late_window_end(
        &self,
        t: Millis,
        wm: Millis,
        key: Option<(&Rows, usize)>,
    ) -> Option<Millis> {
        match self.plan.spec {
            WindowSpec::Tumbling { size } => {
                let end = floor_to(t, size) + size;
                (end <= wm).then_some(end)
            }
            WindowSpec::Hopping { slide, size } => {
                // The last window holding `t` ends latest.
                let end = floor_to(t, slide) + size;
                (end <= wm).then_some(end)
            }
            WindowSpec::Session { gap } => {
                let end = t.saturating_add(gap);
                // Not late after all when it reaches a session of its key that is still
                // open: it extends that session backwards.
                let extends_open = || {
                    self.key_window_holds(key, |s| s.start < end && t < s.last.saturating_add(gap))
                };
                (end <= wm && !extends_open()).then_some(end)
            }
            WindowSpec::Stagger { size } => {
                let end = t.saturating_add(size);
                // Not late when an open window of its key holds it.
                let in_open = || {
                    self.key_window_holds(key, |s| s.start <= t && t < s.start.saturating_add(size))
                };
                (end <= wm && !in_open()).then_some(end)
            }
        }
    }

    /// True when the key (row `i` of the converted keys) has an open session or stagger window
    /// for which `holds` is true.
    fn key_window_holds(
        &self,
        key: Option<(&Rows, usize)>,
        holds: impl Fn(&Session) -> bool,
    ) -> bool {
        key.is_some_and(|(k, i)| {
            self.sessions
                .get(&k.row(i).owned())
                .is_some_and(|list| list.iter().any(&holds))
        })
    }

    /// The keys, aggregate arguments and filters of every row of `batch`.
    fn evaluate_rows(&self, batch: &RecordBatch) -> Result<RowsOf> {
        let n = batch.num_rows();
        let keys = evaluate(&self.plan.keys, batch)?;
        let args: Vec<Vec<ArrayRef>> = self
            .plan
            .agg_args
            .iter()
            .map(|a| evaluate(a, batch))
            .collect::<Result<_>>()?;
        let filters: Vec<Option<ArrayRef>> = self
            .plan
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| Ok::<_, Error>(f.evaluate(batch)?.into_array(n)?))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok((keys, args, filters))
    }

    /// Aggregates the accepted rows of a batch of `n` rows into their tumbling or hopping
    /// windows; the rows a guest aggregate failed on, with why.
    fn update_windows(
        &mut self,
        spec: WindowSpec,
        accepted: &[(u32, Millis, Millis)],
        n: usize,
        (keys, args, filters): &RowsOf,
        seq: u64,
    ) -> Result<Option<(Vec<u32>, String)>> {
        let assignments = assign(spec, accepted);
        let whole = assignments.len() == 1 && assignments[0].rows.len() == n;
        if self.guest_aggs.is_empty() {
            for a in assignments {
                self.update_window(a, whole, keys, args, filters, seq)?;
            }
            return Ok(None);
        }
        #[cfg(feature = "wasm")]
        let failed = self.update_windows_guest(assignments, whole, keys, args, filters, seq)?;
        #[cfg(not(feature = "wasm"))]
        let failed = None;
        Ok(failed)
    }

    /// The keys, arguments and filters of an assignment's rows.
    fn take_rows(
        a: &Assignment,
        whole: bool,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> Result<RowsOf> {
        if whole {
            return Ok((keys.to_vec(), args.to_vec(), filters.to_vec()));
        }
        let idx = UInt32Array::from(a.rows.clone());
        Ok((
            take_all(keys, &idx)?,
            args.iter()
                .map(|a| take_all(a, &idx))
                .collect::<Result<Vec<_>>>()?,
            filters
                .iter()
                .map(|f| {
                    f.as_ref()
                        .map(|f| Ok::<_, Error>(arrow::compute::take(f, &idx, None)?))
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?,
        ))
    }

    /// Interns `keys` in the window `(end, start)` (created if new): the rows' group indices and
    /// the window's number of groups.
    fn intern(
        &mut self,
        window: (Millis, Millis),
        keys: &[ArrayRef],
        count: usize,
        seq: u64,
    ) -> Result<(Vec<usize>, usize)> {
        let state = match self.windows.entry(window) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(new_window_state(&self.plan, seq)?)
            }
        };
        let mut groups = std::mem::take(&mut state.scratch);
        groups.clear();
        let total = state.intern(keys, count, &mut groups)?;
        Ok((groups, total))
    }

    #[allow(clippy::too_many_arguments)]
    fn update_window(
        &mut self,
        a: Assignment,
        whole: bool,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
        seq: u64,
    ) -> Result<()> {
        let (keys, args, filters) = Self::take_rows(&a, whole, keys, args, filters)?;
        let window = (a.end, a.start);
        let (groups, total) = self.intern(window, &keys, a.rows.len(), seq)?;
        let state = self.windows.get_mut(&window).expect("interned above");
        for ((acc, values), filter) in state.accs.iter_mut().zip(&args).zip(&filters) {
            let filter = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(values, &groups, filter, total)?;
        }
        state.scratch = groups;
        Ok(())
    }

    /// [`Self::update_window`] for every assignment of a batch, in two phases when the query has
    /// guest (WASM) aggregates: every guest aggregate of every window computes its new states
    /// first, and they are stored, and the other aggregates updated, only when all succeeded. So
    /// a failed call changes no state anywhere: the batch's rows count in no window and no
    /// aggregate, and each failed row is reported once.
    #[cfg(feature = "wasm")]
    #[allow(clippy::too_many_arguments)]
    fn update_windows_guest(
        &mut self,
        assignments: Vec<Assignment>,
        whole: bool,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
        seq: u64,
    ) -> Result<Option<(Vec<u32>, String)>> {
        struct Part {
            window: (Millis, Millis),
            groups: Vec<usize>,
            total: usize,
            count: usize,
            args: Vec<Vec<ArrayRef>>,
            filters: Vec<Option<ArrayRef>>,
        }
        let mut parts = Vec::with_capacity(assignments.len());
        let mut rows: Vec<u32> = Vec::new();
        for a in &assignments {
            let (keys, args, filters) = Self::take_rows(a, whole, keys, args, filters)?;
            let window = (a.end, a.start);
            let (groups, total) = self.intern(window, &keys, a.rows.len(), seq)?;
            rows.extend(&a.rows);
            parts.push(Part {
                window,
                groups,
                total,
                count: a.rows.len(),
                args,
                filters,
            });
        }
        let guests = self.guest_aggs.clone();
        // Phase 1: the guest aggregates' new states, nothing stored.
        let mut prepared = Vec::new();
        let mut failure = None;
        'calls: for (pi, part) in parts.iter().enumerate() {
            let state = self.windows.get_mut(&part.window).expect("interned above");
            for &i in &guests {
                let g = GuestGroups::of(&mut state.accs[i]).expect("a guest aggregate");
                let filter = part.filters[i].as_ref().map(|f| f.as_boolean());
                match g.prepare(&part.args[i], &part.groups, filter, part.total) {
                    Ok(Some(p)) => prepared.push((pi, i, p)),
                    Ok(None) => {}
                    Err(e) => {
                        let reason = guest_failure(e)?;
                        failure = Some(format!(
                            "{reason} (window {} to {})",
                            fmt_time(part.window.1),
                            fmt_time(part.window.0)
                        ));
                        break 'calls;
                    }
                }
            }
        }
        // Phase 2: store, or only make room for the new groups.
        let mut prepared = prepared.into_iter().peekable();
        for (pi, part) in parts.into_iter().enumerate() {
            let state = self.windows.get_mut(&part.window).expect("interned above");
            if failure.is_none() {
                while let Some((_, i, p)) = prepared.next_if(|(x, _, _)| *x == pi) {
                    GuestGroups::of(&mut state.accs[i])
                        .expect("a guest aggregate")
                        .commit(p);
                }
            }
            let none = arrow::array::BooleanArray::from(vec![false; part.count]);
            for (i, acc) in state.accs.iter_mut().enumerate() {
                if guests.contains(&i) {
                    GuestGroups::of(acc)
                        .expect("a guest aggregate")
                        .grow(part.total);
                    continue;
                }
                let filter = match (&failure, &part.filters[i]) {
                    (Some(_), _) => Some(&none),
                    (None, f) => f.as_ref().map(|f| f.as_boolean()),
                };
                acc.update_batch(&part.args[i], &part.groups, filter, part.total)?;
            }
            if let Some(populated) = &mut state.populated {
                populated.resize(part.total, false);
                if failure.is_none() {
                    for &g in &part.groups {
                        populated[g] = true;
                    }
                }
            }
            state.scratch = part.groups;
        }
        Ok(failure.map(|reason| {
            rows.sort_unstable();
            rows.dedup();
            (rows, reason)
        }))
    }

    fn push_sessions(
        &mut self,
        accepted: &[(u32, Millis, Millis)],
        spec: WindowSpec,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
        seq: u64,
    ) -> Result<Vec<(Vec<u32>, String)>> {
        let mut failed = Vec::new();
        let key_rows = self.key_rows.convert_columns(keys)?;
        // Rows per key, sorted by time, cut into runs whose consecutive rows are < gap apart.
        let mut by_key: HashMap<arrow::row::Row<'_>, Vec<(Millis, u32)>> = HashMap::new();
        for &(i, t, _) in accepted {
            by_key
                .entry(key_rows.row(i as usize))
                .or_default()
                .push((t, i));
        }
        for (key, mut rows) in by_key {
            rows.sort_unstable();
            // Runs of rows, each for one window: (window start, rows).
            let runs: Vec<(Millis, Vec<(Millis, u32)>)> = match spec {
                WindowSpec::Session { gap } => {
                    let mut runs: Vec<(Millis, Vec<(Millis, u32)>)> = Vec::new();
                    for r in rows {
                        match runs.last_mut() {
                            Some((_, run)) if r.0 - run[run.len() - 1].0 < gap => run.push(r),
                            _ => runs.push((r.0, vec![r])),
                        }
                    }
                    runs
                }
                WindowSpec::Stagger { size } => {
                    // A row joins the open window of its key that holds its time, or opens one.
                    let mut starts: Vec<Millis> = self
                        .sessions
                        .get(&key.owned())
                        .map(|l| l.iter().map(|s| s.start).collect())
                        .unwrap_or_default();
                    let mut runs: Vec<(Millis, Vec<(Millis, u32)>)> = Vec::new();
                    for r in rows {
                        let start = match starts
                            .iter()
                            .find(|&&s| s <= r.0 && r.0 < s.saturating_add(size))
                        {
                            Some(&s) => s,
                            None => {
                                starts.push(r.0);
                                r.0
                            }
                        };
                        match runs.iter_mut().find(|(s, _)| *s == start) {
                            Some((_, run)) => run.push(r),
                            None => runs.push((start, vec![r])),
                        }
                    }
                    runs
                }
                _ => unreachable!("per-key windows only"),
            };
            for (run_start, run) in runs {
                let run = &run[..];
                let idx = UInt32Array::from_iter_values(run.iter().map(|r| r.1));
                let mut accs = new_accumulators(&self.plan)?;
                let mut failure = None;
                for ((acc, values), filter) in accs.iter_mut().zip(args).zip(filters) {
                    let mut values = take_all(values, &idx)?;
                    if let Some(f) = filter {
                        let f = arrow::compute::take(f, &idx, None)?;
                        values = values
                            .iter()
                            .map(|v| Ok(arrow::compute::filter(v, f.as_boolean())?))
                            .collect::<Result<_>>()?;
                    }
                    if let Err(e) = acc.update_batch(&values) {
                        failure = Some(guest_failure(e)?);
                        break;
                    }
                }
                if let Some(reason) = failure {
                    // The run's window is not opened or extended: its rows count nowhere.
                    failed.push((run.iter().map(|r| r.1).collect(), reason));
                    continue;
                }
                let session = Session {
                    start: run_start,
                    last: run[run.len() - 1].0,
                    accs,
                    first_seq: seq,
                };
                let list = self.sessions.entry(key.owned()).or_default();
                match spec {
                    WindowSpec::Session { gap } => merge_session(list, session, gap)?,
                    _ => merge_stagger(list, session)?,
                }
            }
        }
        Ok(failed)
    }

    /// Emits every window the watermark has passed, as rows of the aggregate's output schema:
    /// one batch per tumbling or hopping window, in window order, then one batch for all the
    /// sessions and stagger windows that closed.
    pub(crate) fn emit_ready(&mut self) -> Result<Vec<RecordBatch>> {
        let wm = self.watermark.watermark();
        let mut batches = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let (end, start) = *entry.key();
            if end > wm {
                break;
            }
            let state = entry.remove();
            if let Some(b) = self.window_rows(start, end, state)? {
                batches.push(b);
            }
        }
        if !self.sessions.is_empty() {
            let mut closed: Vec<(OwnedRow, Session)> = Vec::new();
            let spec = self.plan.spec;
            self.sessions.retain(|key, list| {
                let mut keep = Vec::with_capacity(list.len());
                for s in list.drain(..) {
                    if spec.key_window_end(s.start, s.last) <= wm {
                        closed.push((key.clone(), s));
                    } else {
                        keep.push(s);
                    }
                }
                *list = keep;
                !list.is_empty()
            });
            if !closed.is_empty() {
                closed.sort_by_key(|(_, s)| s.start);
                batches.push(self.session_rows(closed, spec)?);
            }
        }
        Ok(batches)
    }

    fn window_rows(
        &mut self,
        start: Millis,
        end: Millis,
        mut state: WindowState,
    ) -> Result<Option<RecordBatch>> {
        let n = state.num_groups();
        if n == 0 {
            return Ok(None);
        }
        let keys = state.emit_keys()?;
        let mut failures = Vec::new();
        let mut aggs = Vec::with_capacity(state.accs.len());
        for (a, agg) in state.accs.iter_mut().zip(&self.plan.aggs) {
            aggs.push(match a.evaluate(EmitTo::All) {
                Ok(v) => v,
                Err(e) => {
                    // A guest that cannot evaluate: its column is NULL in the window's rows,
                    // which go to the error output too, with the reason.
                    failures.push(guest_failure(e)?);
                    arrow::array::new_null_array(agg.field().data_type(), n)
                }
            });
        }
        let batch = self.assemble(keys, vec![start; n], vec![end; n], aggs)?;
        let batch = keep_populated(batch, state.populated.as_deref())?;
        for reason in failures {
            for i in 0..batch.num_rows() {
                self.emit_issues.push((
                    batch.slice(i, 1),
                    format!(
                        "{reason} (window {} to {}; the aggregate is NULL in the emitted row)",
                        fmt_time(start),
                        fmt_time(end)
                    ),
                ));
            }
        }
        Ok((batch.num_rows() > 0).then_some(batch))
    }

    fn session_rows(
        &mut self,
        closed: Vec<(OwnedRow, Session)>,
        spec: WindowSpec,
    ) -> Result<RecordBatch> {
        let n = closed.len();
        let keys = self
            .key_rows
            .convert_rows(closed.iter().map(|(k, _)| k.row()))?;
        let starts = closed.iter().map(|(_, s)| s.start).collect();
        let ends = closed
            .iter()
            .map(|(_, s)| spec.key_window_end(s.start, s.last))
            .collect();
        let mut columns: Vec<Vec<datafusion::common::ScalarValue>> =
            vec![Vec::with_capacity(n); self.plan.aggs.len()];
        let mut failures = Vec::new();
        for (row, (_, mut s)) in closed.into_iter().enumerate() {
            for ((col, acc), agg) in columns
                .iter_mut()
                .zip(s.accs.iter_mut())
                .zip(&self.plan.aggs)
            {
                col.push(match acc.evaluate() {
                    Ok(v) => v,
                    Err(e) => {
                        failures.push((row, guest_failure(e)?));
                        datafusion::common::ScalarValue::try_from(agg.field().data_type())?
                    }
                });
            }
        }
        let aggs = columns
            .into_iter()
            .zip(&self.plan.aggs)
            .map(|(values, agg)| {
                if values.is_empty() {
                    Ok(arrow::array::new_empty_array(agg.field().data_type()))
                } else {
                    Ok(datafusion::common::ScalarValue::iter_to_array(values)?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = self.assemble(keys, starts, ends, aggs)?;
        for (row, reason) in failures {
            self.emit_issues.push((
                batch.slice(row, 1),
                format!("{reason} (session; the aggregate is NULL in the emitted row)"),
            ));
        }
        Ok(batch)
    }

    fn assemble(
        &self,
        keys: Vec<ArrayRef>,
        starts: Vec<Millis>,
        ends: Vec<Millis>,
        aggs: Vec<ArrayRef>,
    ) -> Result<RecordBatch> {
        let schema = &self.plan.output_schema;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut starts = Some(starts);
        let mut ends = Some(ends);
        for (i, g) in self.plan.group_columns.iter().enumerate() {
            let col: ArrayRef = match g {
                GroupColumn::Key(k) => Arc::clone(&keys[*k]),
                GroupColumn::Start => time_array(starts.take().unwrap_or_default()),
                GroupColumn::End => time_array(ends.take().unwrap_or_default()),
            };
            cols.push(conform(col, schema.field(i))?);
        }
        let base = self.plan.group_columns.len();
        for (j, a) in aggs.into_iter().enumerate() {
            cols.push(conform(a, schema.field(base + j))?);
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
    }

    /// The schema of a snapshot's rows: window bounds, first batch, keys, accumulator states.
    fn state_schema(&self) -> Result<Arc<Schema>> {
        let state_fields: Vec<Arc<Field>> = self
            .plan
            .aggs
            .iter()
            .map(|a| Ok(a.state_fields()?))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut fields: Vec<Arc<Field>> = vec![
            Arc::new(Field::new("window_start", DataType::Int64, false)),
            Arc::new(Field::new("window_end", DataType::Int64, false)),
            Arc::new(Field::new("first_seq", DataType::UInt64, false)),
        ];
        fields.extend(self.plan.key_schema.fields().iter().cloned());
        fields.extend(
            state_fields
                .iter()
                .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
        );
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Serialises all open state (windows, sessions, watermark) to Arrow IPC bytes. The state is
    /// taken out and put back, so the operator continues exactly as before.
    pub(crate) fn snapshot(&mut self) -> Result<Vec<u8>> {
        let schema = self.state_schema()?;
        let mut batches = Vec::new();
        let windows = std::mem::take(&mut self.windows);
        for ((end, start), mut state) in windows {
            let n = state.num_groups();
            let keys = state.emit_keys()?;
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(vec![start; n])),
                Arc::new(Int64Array::from(vec![end; n])),
                Arc::new(UInt64Array::from(vec![state.first_seq; n])),
            ];
            cols.extend(keys);
            for acc in &mut state.accs {
                cols.extend(acc.state(EmitTo::All)?);
            }
            let batch = RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                cols,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
            )?;
            batches.push(keep_populated(batch, state.populated.as_deref())?);
        }
        let sessions = std::mem::take(&mut self.sessions);
        for (key, list) in sessions {
            for mut s in list {
                let mut cols: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(vec![s.start])),
                    Arc::new(Int64Array::from(vec![s.last])),
                    Arc::new(UInt64Array::from(vec![s.first_seq])),
                ];
                cols.extend(self.key_rows.convert_rows([key.row()])?);
                for acc in &mut s.accs {
                    for v in acc.state()? {
                        cols.push(v.to_array()?);
                    }
                }
                batches.push(RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    cols,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
                )?);
            }
        }
        let mut meta = HashMap::new();
        self.watermark.save(&mut meta);
        let schema = Arc::new(schema.as_ref().clone().with_metadata(meta));
        let mut out = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
            for b in &batches {
                w.write(&b.clone().with_schema(Arc::clone(&schema))?)?;
            }
            w.finish()?;
        }
        self.restore_batches(&batches)?;
        Ok(out)
    }

    /// Replaces all state with a [`Self::snapshot`].
    pub(crate) fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        let schema = reader.schema();
        check_state_schema(&schema, &self.state_schema()?.fields()[..])?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        self.windows.clear();
        self.sessions.clear();
        self.watermark.load(schema.metadata(), Instant::now())?;
        self.restore_batches(&batches)
    }

    fn restore_batches(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let nkeys = self.plan.key_schema.fields().len();
        for b in batches {
            let n = b.num_rows();
            if n == 0 {
                continue;
            }
            let start = b.column(0).as_primitive::<Int64Type>().value(0);
            let end = b.column(1).as_primitive::<Int64Type>().value(0);
            let first_seq = b
                .column(2)
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(0);
            let keys: Vec<ArrayRef> = b.columns()[3..3 + nkeys].to_vec();
            let mut states = b.columns()[3 + nkeys..].iter();
            let widths: Vec<usize> = self
                .plan
                .aggs
                .iter()
                .map(|a| Ok(a.state_fields()?.len()))
                .collect::<Result<_>>()?;
            if self.plan.spec.per_key() {
                let mut accs = new_accumulators(&self.plan)?;
                for (acc, w) in accs.iter_mut().zip(&widths) {
                    let cols: Vec<ArrayRef> = states.by_ref().take(*w).cloned().collect();
                    acc.merge_batch(&cols)?;
                }
                let key = self.key_rows.convert_columns(&keys)?.row(0).owned();
                self.sessions.entry(key).or_default().push(Session {
                    start,
                    last: end,
                    accs,
                    first_seq,
                });
                continue;
            }
            let mut state = new_window_state(&self.plan, first_seq)?;
            let mut groups = Vec::new();
            let total = state.intern(&keys, n, &mut groups)?;
            for (acc, w) in state.accs.iter_mut().zip(&widths) {
                let cols: Vec<ArrayRef> = states.by_ref().take(*w).cloned().collect();
                acc.merge_batch(&cols, &groups, total)?;
            }
            if let Some(p) = &mut state.populated {
                p.resize(total, true);
            }
            self.windows.insert((end, start), state);
        }
        for list in self.sessions.values_mut() {
            list.sort_by_key(|s| s.start);
        }
        Ok(())
    }
}

/// Checks that window state read from a checkpoint has the columns and types the planned query
/// keeps: the same SQL over input whose types changed cannot take the old state.
pub(crate) fn check_state_schema(found: &Schema, expected: &[Arc<Field>]) -> Result<()> {
    let start_over = "restore the input's earlier types, or remove the checkpoint to start over \
                      (the windows it holds are then lost; the input is read again from where \
                      the source starts)";
    if found.fields().len() != expected.len() {
        return Err(Error::config(
            "checkpoint",
            format!(
                "the checkpoint's window state has {} columns where the query keeps {}; \
                 {start_over}",
                found.fields().len(),
                expected.len()
            ),
        ));
    }
    for (f, e) in found.fields().iter().zip(expected) {
        if f.data_type() != e.data_type() {
            return Err(Error::config(
                "checkpoint",
                format!(
                    "the checkpoint's window state keeps `{}` as {} but the query now makes it \
                     {} (the input's type changed); {start_over}",
                    e.name(),
                    f.data_type(),
                    e.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// The rows of `batch` whose group is populated (all of them without a guest aggregate).
fn keep_populated(batch: RecordBatch, populated: Option<&[bool]>) -> Result<RecordBatch> {
    match populated {
        Some(p) if p.len() >= batch.num_rows() && p.iter().any(|x| !x) => {
            let mask = arrow::array::BooleanArray::from(p[..batch.num_rows()].to_vec());
            Ok(arrow::compute::filter_record_batch(&batch, &mask)?)
        }
        _ => Ok(batch),
    }
}

/// Casts `col` to the type the plan declared for its output column, when they differ.
fn conform(col: ArrayRef, field: &Field) -> Result<ArrayRef> {
    if col.data_type() == field.data_type() {
        Ok(col)
    } else {
        Ok(arrow::compute::cast(&col, field.data_type())?)
    }
}

fn new_window_state(plan: &WindowAggregatePlan, seq: u64) -> Result<WindowState> {
    let groups = if plan.key_schema.fields().is_empty() {
        None
    } else {
        Some(new_group_values(
            Arc::clone(&plan.key_schema),
            &GroupOrdering::None,
        )?)
    };
    let accs = plan
        .aggs
        .iter()
        .map(|agg| -> Result<Box<dyn GroupsAccumulator>> {
            if agg.groups_accumulator_supported() {
                Ok(agg.create_groups_accumulator()?)
            } else {
                let agg = Arc::clone(agg);
                Ok(Box::new(
                    datafusion::physical_expr::GroupsAccumulatorAdapter::new(move || {
                        agg.create_accumulator()
                    }),
                ))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let guests = accs.iter().any(|a| GuestGroups::is(a.as_ref()));
    Ok(WindowState {
        groups,
        keyless_groups: 0,
        accs,
        first_seq: seq,
        scratch: Vec::new(),
        populated: guests.then(Vec::new),
    })
}

fn new_accumulators(plan: &WindowAggregatePlan) -> Result<Vec<Box<dyn Accumulator>>> {
    plan.aggs
        .iter()
        .map(|a| Ok(a.create_accumulator()?))
        .collect()
}

/// Merges the states of `from` into `into`, aggregate by aggregate, up to the first that cannot
/// merge: a guest aggregate's, whose reason is returned.
fn merge_states(
    into: &mut [Box<dyn Accumulator>],
    from: &mut [Box<dyn Accumulator>],
) -> Result<Option<String>> {
    for (into, from) in into.iter_mut().zip(from.iter_mut()) {
        let state = from
            .state()?
            .into_iter()
            .map(|v| Ok(v.to_array()?))
            .collect::<Result<Vec<_>>>()?;
        if let Err(e) = into.merge_batch(&state) {
            return guest_failure(e).map(Some);
        }
    }
    Ok(None)
}

/// Adds `new` to a key's sessions, merging every session it comes within `gap` of.
fn merge_session(list: &mut Vec<Session>, mut new: Session, gap: Millis) -> Result<()> {
    let mut i = 0;
    while i < list.len() {
        let s = &list[i];
        let overlaps =
            s.start < new.last.saturating_add(gap) && new.start < s.last.saturating_add(gap);
        if overlaps {
            let mut old = list.remove(i);
            if let Some(reason) = merge_states(&mut new.accs, &mut old.accs)? {
                // A guest aggregate that cannot merge: both sessions stay, apart, rather than
                // one being lost. (Its merge changed nothing; others before it may have merged.)
                tracing::warn!("two sessions could not be merged and are emitted apart: {reason}");
                list.insert(i, old);
                i += 1;
                continue;
            }
            new.start = new.start.min(old.start);
            new.last = new.last.max(old.last);
            new.first_seq = new.first_seq.min(old.first_seq);
            // The grown session may now reach sessions already passed: start over.
            i = 0;
        } else {
            i += 1;
        }
    }
    let at = list.partition_point(|s| s.start < new.start);
    list.insert(at, new);
    Ok(())
}

/// Adds a stagger window's run to its key's windows: into the window of the same start, or as a
/// new window.
fn merge_stagger(list: &mut Vec<Session>, mut new: Session) -> Result<()> {
    if let Some(old) = list.iter_mut().find(|s| s.start == new.start) {
        match merge_states(&mut old.accs, &mut new.accs)? {
            None => {
                old.last = old.last.max(new.last);
                old.first_seq = old.first_seq.min(new.first_seq);
                return Ok(());
            }
            // A guest aggregate that cannot merge: the run stays a window of its own.
            Some(reason) => {
                tracing::warn!("a stagger window's rows could not be merged: {reason}");
            }
        }
    }
    let at = list.partition_point(|s| s.start < new.start);
    list.insert(at, new);
    Ok(())
}

/// Assigns accepted rows to tumbling or hopping windows that are still open.
fn assign(spec: WindowSpec, accepted: &[(u32, Millis, Millis)]) -> Vec<Assignment> {
    let mut out: Vec<Assignment> = Vec::new();
    let mut last: usize = 0;
    let mut add = |start: Millis, end: Millis, row: u32, out: &mut Vec<Assignment>| {
        if let Some(a) = out.get_mut(last) {
            if a.start == start {
                a.rows.push(row);
                return;
            }
        }
        if let Some(pos) = out.iter().position(|a| a.start == start) {
            out[pos].rows.push(row);
            last = pos;
        } else {
            out.push(Assignment {
                start,
                end,
                rows: vec![row],
            });
            last = out.len() - 1;
        }
    };
    match spec {
        WindowSpec::Tumbling { size } => {
            for &(row, t, _) in accepted {
                let start = floor_to(t, size);
                add(start, start + size, row, &mut out);
            }
        }
        WindowSpec::Hopping { slide, size } => {
            for &(row, t, wm) in accepted {
                let mut start = floor_to(t, slide);
                while start + size > t {
                    if start + size > wm {
                        add(start, start + size, row, &mut out);
                    }
                    start -= slide;
                }
            }
        }
        WindowSpec::Session { .. } | WindowSpec::Stagger { .. } => {
            unreachable!("per-key windows are assigned per key")
        }
    }
    out
}
