//! Row-by-row sliding aggregates: `AGG(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN
//! INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW)` and `ROWS n PRECEDING`.
//!
//! Each input row gives one output row, emitted once the watermark has passed its time (so every
//! row of its frame has arrived). Rows are kept per partition key only as long as a future row's
//! frame can reach them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, WindowExpr,
};
use datafusion::physical_expr::PhysicalExpr;

use super::group::{BatchContext, RowIds, RowIssue};
use super::StreamOperator;
use crate::sql::time::{fmt_millis, time_to_millis};
use crate::sql::watermark::{Millis, PartitionTable, WatermarkSettings, WatermarkTracker};
use crate::{Error, Result};

/// How far back a frame reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `RANGE BETWEEN <ms> PRECEDING AND CURRENT ROW`: rows with time in `[t - ms, t]`.
    Range(Millis),
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Range(ms) => write!(f, "RANGE {} PRECEDING", fmt_millis(*ms)),
            Frame::Rows(n) => write!(f, "ROWS {n} PRECEDING"),
        }
    }
}

/// A planned `OVER` aggregate: what to evaluate per input row.
#[derive(Debug, Clone)]
pub(crate) struct OverPlan {
    pub(crate) frame: Frame,
    pub(crate) time_expr: Arc<dyn PhysicalExpr>,
    pub(crate) partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) aggs: Vec<Arc<AggregateFunctionExpr>>,
    pub(crate) args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    pub(crate) row_column: Option<usize>,
    /// Input columns, then one column per aggregate.
    pub(crate) output_schema: SchemaRef,
}

fn bound_millis(v: &ScalarValue) -> Option<Millis> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds))
        }
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1000),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(us / 1000),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns / 1_000_000),
        _ => None,
    }
}

impl OverPlan {
    /// Builds the plan from the window expressions of a DataFusion window operator.
    pub(crate) fn from_window_exprs(
        exprs: &[Arc<dyn WindowExpr>],
        input_schema: &SchemaRef,
        output_schema: SchemaRef,
        row_column: Option<usize>,
    ) -> Result<Self> {
        let unsupported =
            |why: String| Error::Sql(format!("cannot run this OVER window on a stream: {why}"));
        let first = exprs
            .first()
            .ok_or_else(|| unsupported("no window expression".into()))?;
        let mut aggs = Vec::new();
        let mut args = Vec::new();
        let mut frame_of_first: Option<Frame> = None;
        for e in exprs {
            let agg = if let Some(p) = e.as_any().downcast_ref::<PlainAggregateWindowExpr>() {
                p.get_aggregate_expr().clone()
            } else if let Some(s) = e.as_any().downcast_ref::<SlidingAggregateWindowExpr>() {
                s.get_aggregate_expr().clone()
            } else {
                return Err(unsupported(format!(
                    "{} is not an aggregate function; only aggregates (SUM, COUNT, AVG, …) run \
                     OVER a stream",
                    e.name()
                )));
            };
            if e.partition_by().len() != first.partition_by().len()
                || e.partition_by()
                    .iter()
                    .zip(first.partition_by())
                    .any(|(a, b)| a.to_string() != b.to_string())
                || e.order_by().len() != 1
                || e.order_by()[0].expr.to_string() != first.order_by()[0].expr.to_string()
            {
                return Err(unsupported(
                    "every OVER window of a statement must have the same PARTITION BY and \
                     ORDER BY (one time column)"
                        .into(),
                ));
            }
            let f = e.get_window_frame();
            let unbounded = || {
                unsupported(
                    "the frame must be bounded: write RANGE BETWEEN INTERVAL '1' MINUTE \
                     PRECEDING AND CURRENT ROW or ROWS BETWEEN n PRECEDING AND CURRENT ROW"
                        .into(),
                )
            };
            if !matches!(f.end_bound, WindowFrameBound::CurrentRow) {
                return Err(unbounded());
            }
            let frame = match (&f.units, &f.start_bound) {
                (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if !v.is_null() => {
                    Frame::Range(bound_millis(v).ok_or_else(|| {
                        unsupported(format!(
                            "RANGE needs an interval such as INTERVAL '10' SECOND, got {v}"
                        ))
                    })?)
                }
                (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => Frame::Range(0),
                (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if !v.is_null() => {
                    Frame::Rows(match v {
                        ScalarValue::UInt64(Some(n)) => *n,
                        other => u64::try_from(
                            other
                                .cast_to(&DataType::Int64)
                                .ok()
                                .and_then(|s| match s {
                                    ScalarValue::Int64(Some(n)) => Some(n),
                                    _ => None,
                                })
                                .unwrap_or(-1),
                        )
                        .map_err(|_| unbounded())?,
                    })
                }
                (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => Frame::Rows(0),
                _ => return Err(unbounded()),
            };
            if frame_of_first.is_some_and(|f0| f0 != frame) {
                return Err(unsupported(
                    "every OVER window of a statement must have the same frame".into(),
                ));
            }
            frame_of_first = Some(frame);
            args.push(agg.expressions());
            aggs.push(Arc::new(agg));
        }
        let _ = input_schema;
        Ok(Self {
            frame: frame_of_first.unwrap_or(Frame::Rows(0)),
            time_expr: Arc::clone(&first.order_by()[0].expr),
            partition_by: first.partition_by().to_vec(),
            aggs,
            args,
            row_column,
            output_schema,
        })
    }
}

/// One row kept for frames: its time, arrival order and aggregate arguments.
#[derive(Debug, Clone)]
struct Entry {
    t: Millis,
    arrival: u64,
    args: Vec<ScalarValue>,
    /// Where the row's input columns are while it waits to be emitted.
    pending: Option<(u64, usize)>,
}

/// The `OVER` operator.
pub(crate) struct OverAggregate {
    plan: OverPlan,
    watermark: WatermarkTracker,
    /// How far ahead of its arrival a row's event time may be.
    max_future: Millis,
    keys: RowConverter,
    partitions: HashMap<OwnedRow, VecDeque<Entry>>,
    /// Input batches holding rows not yet emitted, with how many such rows each holds and the
    /// micro-batch they came in.
    chunks: HashMap<u64, (RecordBatch, usize, u64)>,
    next_chunk: u64,
    arrivals: u64,
    input: SchemaRef,
}

impl std::fmt::Debug for OverAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverAggregate")
            .field("frame", &self.plan.frame)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl StreamOperator for OverAggregate {
    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &BatchContext<'_>,
    ) -> Result<Vec<RowIssue>> {
        self.push(batch, ctx)
    }

    fn on_time(&mut self, now: std::time::Instant, table: &PartitionTable) {
        self.watermark.refresh(now, table);
    }

    fn finish(&mut self) {
        self.watermark.finish();
    }

    fn emit_ready(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(OverAggregate::emit_ready(self)?.into_iter().collect())
    }

    fn watermark(&self) -> &WatermarkTracker {
        &self.watermark
    }

    fn live_states(&self) -> usize {
        self.partitions.values().map(VecDeque::len).sum()
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.chunks.values().map(|c| c.2).min()
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        OverAggregate::snapshot(self)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        OverAggregate::restore(self, bytes)
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self
            .plan
            .partition_by
            .iter()
            .map(|k| k.to_string())
            .collect();
        let aggs: Vec<String> = self.plan.aggs.iter().map(|a| a.name().to_owned()).collect();
        format!(
            "window: OVER ({}) on event time `{}`; partitioned by [{}]; aggregates [{}]; \
             one output row per input row",
            self.plan.frame,
            self.plan.time_expr,
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl OverAggregate {
    pub(crate) fn new(
        plan: OverPlan,
        settings: WatermarkSettings,
        input: &SchemaRef,
    ) -> Result<Self> {
        let mut fields = plan
            .partition_by
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(input)?)))
            .collect::<Result<Vec<_>>>()?;
        if fields.is_empty() {
            // No PARTITION BY: one partition, keyed by a constant (rows need a column).
            fields.push(SortField::new(arrow::datatypes::DataType::Boolean));
        }
        Ok(Self {
            keys: RowConverter::new(fields)?,
            plan,
            watermark: WatermarkTracker::new(settings),
            max_future: super::group::max_future_millis(settings),
            partitions: HashMap::new(),
            chunks: HashMap::new(),
            next_chunk: 0,
            arrivals: 0,
            input: Arc::clone(input),
        })
    }

    pub(crate) fn push(
        &mut self,
        batch: &RecordBatch,
        ctx: &BatchContext<'_>,
    ) -> Result<Vec<RowIssue>> {
        let n = batch.num_rows();
        let mut issues = Vec::new();
        if n == 0 {
            return Ok(issues);
        }
        let time_col = self.plan.time_expr.evaluate(batch)?.into_array(n)?;
        let (times, _) = time_to_millis(&time_col)?;
        let row_ids = RowIds::new(self.plan.row_column.map(|c| batch.column(c)))?;
        let row_id = |i: usize| row_ids.get(i);
        let mut key_cols = self
            .plan
            .partition_by
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<_>>>()?;
        if key_cols.is_empty() {
            key_cols.push(Arc::new(arrow::array::BooleanArray::from(vec![false; n])));
        }
        let keys = self.keys.convert_columns(&key_cols)?;
        let args: Vec<Vec<ArrayRef>> = self
            .plan
            .args
            .iter()
            .map(|a| {
                a.iter()
                    .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let chunk = self.next_chunk;
        let mut kept = 0;
        for i in 0..n {
            if times.is_null(i) {
                issues.push(RowIssue::new(
                    i,
                    row_id(i),
                    "bad_time",
                    "the OVER window's time value is null or not a timestamp",
                ));
                continue;
            }
            let t = times.value(i);
            if let Some(issue) =
                super::group::too_far_ahead(t, (i, row_id(i)), ctx, self.max_future)
            {
                issues.push(issue);
                continue;
            }
            let wm = self.watermark.watermark();
            if t < wm {
                issues.push(RowIssue::new(
                    i,
                    row_id(i),
                    "late",
                    format!(
                        "event time {t} ms is behind the watermark {wm} ms: rows after it were \
                         already emitted"
                    ),
                ));
                continue;
            }
            ctx.observe(&mut self.watermark, row_id(i), t);
            let entry = Entry {
                t,
                arrival: self.arrivals,
                args: args
                    .iter()
                    .flatten()
                    .map(|a| ScalarValue::try_from_array(a, i))
                    .collect::<datafusion::error::Result<_>>()?,
                pending: Some((chunk, i)),
            };
            self.arrivals += 1;
            kept += 1;
            let list = self.partitions.entry(keys.row(i).owned()).or_default();
            let at = list.partition_point(|e| (e.t, e.arrival) <= (t, entry.arrival));
            list.insert(at, entry);
        }
        if kept > 0 {
            self.chunks.insert(chunk, (batch.clone(), kept, ctx.seq));
            self.next_chunk += 1;
        }
        Ok(issues)
    }

    /// Emits every waiting row whose time the watermark has passed, in time order.
    pub(crate) fn emit_ready(&mut self) -> Result<Option<RecordBatch>> {
        let wm = self.watermark.watermark();
        // (t, arrival, chunk, row, aggregate values)
        let mut ready: Vec<(Millis, u64, u64, usize, Vec<ScalarValue>)> = Vec::new();
        let widths: Vec<usize> = self.plan.args.iter().map(Vec::len).collect();
        for list in self.partitions.values_mut() {
            for i in 0..list.len() {
                let e = &list[i];
                if e.t >= wm {
                    break;
                }
                let Some((chunk, row)) = e.pending else {
                    continue;
                };
                let lo = match self.plan.frame {
                    Frame::Range(ms) => {
                        let from = e.t.saturating_sub(ms);
                        list.partition_point(|x| x.t < from)
                    }
                    Frame::Rows(n) => i.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
                };
                let hi = match self.plan.frame {
                    // Peers (same time) are part of a RANGE frame's current row.
                    Frame::Range(_) => list.partition_point(|x| x.t <= e.t),
                    Frame::Rows(_) => i + 1,
                };
                let mut values = Vec::with_capacity(self.plan.aggs.len());
                let mut offset = 0;
                for (agg, w) in self.plan.aggs.iter().zip(&widths) {
                    let mut acc = agg.create_accumulator()?;
                    let cols = (0..*w)
                        .map(|c| {
                            ScalarValue::iter_to_array(
                                list.range(lo..hi).map(|x| x.args[offset + c].clone()),
                            )
                        })
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    acc.update_batch(&cols)?;
                    values.push(acc.evaluate()?);
                    offset += w;
                }
                ready.push((e.t, e.arrival, chunk, row, values));
                list[i].pending = None;
            }
            // Forget rows no future frame can reach: future rows have time >= watermark.
            let keep_from = match self.plan.frame {
                Frame::Range(ms) => {
                    let from = wm.saturating_sub(ms);
                    list.partition_point(|x| x.t < from && x.pending.is_none())
                }
                Frame::Rows(n) => {
                    let done = list.partition_point(|x| x.t < wm && x.pending.is_none());
                    done.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
                }
            };
            list.drain(..keep_from);
        }
        self.partitions.retain(|_, l| !l.is_empty());
        if ready.is_empty() {
            return Ok(None);
        }
        ready.sort_by_key(|r| (r.0, r.1));
        // Input columns of the emitted rows, gathered from their chunks.
        let mut chunk_ids: Vec<u64> = ready.iter().map(|r| r.2).collect();
        chunk_ids.sort_unstable();
        chunk_ids.dedup();
        let sources: Vec<&RecordBatch> = chunk_ids.iter().map(|c| &self.chunks[c].0).collect();
        let index: Vec<(usize, usize)> = ready
            .iter()
            .map(|r| (chunk_ids.binary_search(&r.2).unwrap_or(0), r.3))
            .collect();
        let ncols = sources[0].num_columns();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.plan.output_schema.fields().len());
        for c in 0..ncols {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            cols.push(arrow::compute::interleave(&arrays, &index)?);
        }
        for a in 0..self.plan.aggs.len() {
            let values = ready.iter().map(|r| r.4[a].clone());
            let arr = ScalarValue::iter_to_array(values)?;
            let field = self.plan.output_schema.field(ncols + a);
            cols.push(if arr.data_type() == field.data_type() {
                arr
            } else {
                arrow::compute::cast(&arr, field.data_type())?
            });
        }
        for r in &ready {
            if let Some(c) = self.chunks.get_mut(&r.2) {
                c.1 -= 1;
            }
        }
        self.chunks.retain(|_, c| c.1 > 0);
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.plan.output_schema),
            cols,
        )?))
    }

    /// Serialises the kept rows (those waiting to be emitted with their input columns, and those
    /// future frames still reach) and the watermark, as Arrow IPC bytes.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>> {
        let arg_types = self.arg_types()?;
        let fields = self.state_fields(&arg_types);
        let mut meta = HashMap::new();
        self.watermark.save(&mut meta);
        meta.insert("arrivals".to_owned(), self.arrivals.to_string());
        meta.insert("key_types".to_owned(), self.key_types()?);
        let schema = Arc::new(Schema::new(fields).with_metadata(meta));

        let chunk_ids: Vec<u64> = self.chunks.keys().copied().collect();
        let mut sources: Vec<RecordBatch> =
            chunk_ids.iter().map(|c| self.chunks[c].0.clone()).collect();
        let null_row = RecordBatch::try_new(
            Arc::clone(&self.input),
            self.input
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 1))
                .collect(),
        )?;
        sources.push(null_row);
        let null_source = sources.len() - 1;
        let (mut keys, mut ts, mut arrivals, mut seqs, mut pending) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut args: Vec<Vec<ScalarValue>> = vec![Vec::new(); arg_types.len()];
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for (key, list) in &self.partitions {
            for e in list {
                keys.push(key.as_ref().to_vec());
                ts.push(e.t);
                arrivals.push(e.arrival);
                for (col, v) in args.iter_mut().zip(&e.args) {
                    col.push(v.clone());
                }
                match e.pending {
                    Some((chunk, row)) => {
                        let at = chunk_ids.iter().position(|c| *c == chunk).unwrap_or(0);
                        seqs.push(self.chunks.get(&chunk).map_or(0, |c| c.2));
                        pending.push(true);
                        rows.push((at, row));
                    }
                    None => {
                        seqs.push(0);
                        pending.push(false);
                        rows.push((null_source, 0));
                    }
                }
            }
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::BinaryArray::from_iter_values(keys.iter())),
            Arc::new(arrow::array::Int64Array::from(ts)),
            Arc::new(UInt64Array::from(arrivals)),
            Arc::new(UInt64Array::from(seqs)),
            Arc::new(arrow::array::BooleanArray::from(pending)),
        ];
        for (values, t) in args.into_iter().zip(&arg_types) {
            cols.push(if values.is_empty() {
                arrow::array::new_empty_array(t)
            } else {
                ScalarValue::iter_to_array(values)?
            });
        }
        for c in 0..self.input.fields().len() {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            cols.push(arrow::compute::interleave(&arrays, &rows)?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&schema), cols)?;
        let mut out = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
            w.write(&batch)?;
            w.finish()?;
        }
        Ok(out)
    }

    /// Replaces all state with a [`Self::snapshot`].
    /// The types of the PARTITION BY keys, as text (the keys are kept row-encoded).
    fn key_types(&self) -> Result<String> {
        let types: Vec<String> = self
            .plan
            .partition_by
            .iter()
            .map(|e| Ok(e.data_type(&self.input)?.to_string()))
            .collect::<Result<_>>()?;
        Ok(types.join(";"))
    }

    /// The types of the aggregates' arguments, in order.
    fn arg_types(&self) -> Result<Vec<DataType>> {
        self.plan
            .args
            .iter()
            .flatten()
            .map(|e| Ok(e.data_type(&self.input)?))
            .collect()
    }

    /// The columns of a snapshot: key, time, arrival, batch, pending, the arguments, the input.
    fn state_fields(&self, arg_types: &[DataType]) -> Vec<Field> {
        let mut fields = vec![
            Field::new("key", DataType::Binary, false),
            Field::new("t", DataType::Int64, false),
            Field::new("arrival", DataType::UInt64, false),
            Field::new("seq", DataType::UInt64, false),
            Field::new("pending", DataType::Boolean, false),
        ];
        fields.extend(
            arg_types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("arg_{i}"), t.clone(), true)),
        );
        fields.extend(
            self.input
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        fields
    }

    /// Checks that a snapshot's columns and key types are the ones this query keeps.
    fn check_restored(&self, found: &Schema) -> Result<()> {
        let expected: Vec<Arc<Field>> = self
            .state_fields(&self.arg_types()?)
            .into_iter()
            .map(Arc::new)
            .collect();
        super::group::check_state_schema(found, &expected)?;
        let keys = self.key_types()?;
        match found.metadata().get("key_types") {
            Some(k) if *k != keys => Err(Error::config(
                "checkpoint",
                format!(
                    "the checkpoint's OVER state has PARTITION BY keys of types [{k}] but the \
                     query now makes them [{keys}] (the input's type changed); restore the \
                     input's earlier types, or remove the checkpoint to start over"
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let meta = schema.metadata();
        self.check_restored(&schema)?;
        let arrivals: u64 = meta
            .get("arrivals")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Pipeline("OVER state snapshot has no arrival count".into()))?;
        self.partitions.clear();
        self.chunks.clear();
        self.watermark.load(meta, std::time::Instant::now())?;
        self.arrivals = arrivals;
        let nargs: usize = self.plan.args.iter().map(Vec::len).sum();
        let parser = self.keys.parser();
        for batch in reader {
            let batch = batch?;
            let keys = batch.column(0).as_binary::<i32>();
            let ts = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let arr = batch
                .column(2)
                .as_primitive::<arrow::datatypes::UInt64Type>();
            let seqs = batch
                .column(3)
                .as_primitive::<arrow::datatypes::UInt64Type>();
            let pending = batch.column(4).as_boolean();
            let waiting: Vec<u32> = (0..batch.num_rows())
                .filter(|&i| pending.value(i))
                .map(|i| i as u32)
                .collect();
            let chunk = self.next_chunk;
            if !waiting.is_empty() {
                let idx = UInt32Array::from(waiting.clone());
                let input_cols = batch.columns()[5 + nargs..]
                    .iter()
                    .map(|c| Ok(arrow::compute::take(c, &idx, None)?))
                    .collect::<Result<Vec<_>>>()?;
                let seq = waiting
                    .iter()
                    .map(|&i| seqs.value(i as usize))
                    .min()
                    .unwrap_or(0);
                let rows = RecordBatch::try_new(Arc::clone(&self.input), input_cols)?;
                self.chunks.insert(chunk, (rows, waiting.len(), seq));
                self.next_chunk += 1;
            }
            for i in 0..batch.num_rows() {
                let key = parser.parse(keys.value(i)).owned();
                let args = (0..nargs)
                    .map(|a| ScalarValue::try_from_array(batch.column(5 + a), i))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let pending = waiting
                    .binary_search(&(i as u32))
                    .ok()
                    .map(|pos| (chunk, pos));
                self.partitions.entry(key).or_default().push_back(Entry {
                    t: ts.value(i),
                    arrival: arr.value(i),
                    args,
                    pending,
                });
            }
        }
        for list in self.partitions.values_mut() {
            list.make_contiguous().sort_by_key(|e| (e.t, e.arrival));
        }
        Ok(())
    }
}
