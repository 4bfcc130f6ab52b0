//! A program of streaming SQL statements: stateless parts run per micro-batch through
//! DataFusion, windowed aggregates through [`WindowAggregate`], statements chained by stream name.
//!
//! This file holds the program and runs it (micro-batches in, rows out, state saved and
//! restored); `plan` plans it, `registry` holds the functions statements may call, `explain`
//! writes it out for people.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::TableReference;
use datafusion::execution::registry::FunctionRegistry;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::aggregates::{aggregate_expressions, AggregateExec, AggregateMode};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::ops::{BatchContext, GroupColumn, WindowAggregate, WindowAggregatePlan};
use super::ops::{OverAggregate, OverPlan, StreamOperator};
use super::rewrite::{
    rewrite_query, EventTime, WindowBound, WindowClause, ROW_ID, WINDOW_END_FN, WINDOW_START_FN,
};
use super::shape::{check_shape_with, check_time_type, has_over, sorts_or_limits};
use super::time::fmt_millis;
use super::watermark::{Millis, PartitionTable, WatermarkSettings, WatermarkTracker};
use super::{describe, register_source, slot_table, slots_read, source_projection};
use super::{BatchSlot, PerBatch};
use crate::format::ROWTIME;
use crate::kda::Dialect;
use crate::record::DESTINATION_STREAM;
use crate::record::{SOURCE_ALIAS, SOURCE_STREAM};
use crate::{Error, Result};

mod explain;
mod plan;
mod registry;

use plan::error_name;
use registry::streaming_state;
pub use registry::SqlFunctions;

/// A row the program could not process, and why.
#[derive(Debug, Clone)]
pub struct SqlIssue {
    /// Index of the input row (in the batch given to [`SqlProgram::process`]) the issue traces
    /// back to; `None` for rows derived from several inputs (an aggregate's output).
    pub input_row: Option<usize>,
    /// The row itself when it has no input row (one row).
    pub row: Option<RecordBatch>,
    /// `sql` (evaluation failed), `late` (its window was already emitted) or `bad_time`.
    pub kind: String,
    /// What went wrong.
    pub reason: String,
    /// The statement the row failed in: a Kinesis Data Analytics pump's name, or the stream the
    /// statement writes.
    pub statement: Option<Arc<str>>,
}

/// What one call of [`SqlProgram::process`] produced.
#[derive(Debug, Default)]
pub struct SqlOutput {
    /// Rows per output stream (only streams with rows), in statement order.
    pub streams: Vec<(Arc<str>, RecordBatch)>,
    /// Rows that went to no stream.
    pub issues: Vec<SqlIssue>,
}

struct Windowed {
    pre: PerBatch,
    /// The stateful operator between the two per-batch plans.
    op: Box<dyn StreamOperator>,
    post: PerBatch,
    /// The statement sorts or limits its rows (`ORDER BY`, `LIMIT`): the part above the
    /// operator runs once per window, so that they apply to each window's rows.
    per_window: bool,
}

enum Stage {
    Stateless(PerBatch),
    Windowed(Box<Windowed>),
}

struct Statement_ {
    sql: String,
    /// What the statement is called in errors: its KDA pump's name, or the stream it writes.
    label: Arc<str>,
    /// The stream it reads.
    input: String,
    output: Arc<str>,
    stage: Stage,
    /// Schema of the stream as other statements read it (all nullable, with the row id).
    stream_schema: SchemaRef,
    /// Schema of the rows given to sinks (without the row id).
    visible_schema: SchemaRef,
    /// Its rows come from input records (the source, or a stateless statement over it), so they
    /// carry source partitions; rows a window emitted come from none.
    from_source: bool,
}

/// Streaming SQL: one or more statements over the input stream.
///
/// Each statement is a `SELECT` (its rows form `DESTINATION_SQL_STREAM`) or
/// `INSERT INTO stream_name SELECT …`; a later statement can read an earlier one's stream by name.
/// The input is `SOURCE_SQL_STREAM_001` (alias `source`). Windowed aggregates group by
/// `TUMBLE(ts, size)`, `HOP(ts, slide, size)` or `SESSION(ts, gap)`; their rows come out when the
/// watermark passes the window's end.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> rivulet::Result<()> {
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use rivulet::{SqlProgram, WatermarkSettings};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("sym", DataType::Utf8, true),
///     Field::new("ts", DataType::Int64, true), // epoch milliseconds
/// ]));
/// let mut program = SqlProgram::new(
///     "SELECT sym, COUNT(*) AS n, window_start FROM source \
///      GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND)",
///     Arc::clone(&schema),
///     WatermarkSettings::default(),
/// ).await?;
/// let batch = RecordBatch::try_new(schema, vec![
///     Arc::new(StringArray::from(vec!["A", "A", "B", "A"])),
///     Arc::new(Int64Array::from(vec![1_000, 2_000, 3_000, 12_000])),
/// ])?;
/// // The row at 12 s moves the watermark past the first window's end.
/// let out = program.process(&batch, &[], 0).await?;
/// assert_eq!(out.streams[0].1.num_rows(), 2); // (A, 2) and (B, 1)
/// let out = program.finish(1).await?;
/// assert_eq!(out.streams[0].1.num_rows(), 1); // (A, 1) for [10 s, 20 s)
/// # Ok(()) }
/// ```
pub struct SqlProgram {
    statements: Vec<Statement_>,
    slots: HashMap<String, Arc<BatchSlot>>,
    source_projection: Option<Vec<usize>>,
    source_schema: SchemaRef,
    settings: WatermarkSettings,
    /// The source partitions the pipeline declared, for the watermarks.
    table: PartitionTable,
    /// The dialect the statements were written in.
    dialect: Dialect,
}

impl fmt::Debug for SqlProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlProgram")
            .field(
                "statements",
                &self.statements.iter().map(|s| &s.sql).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Why rows of `second` cannot be read as rows of `first` (two writers of one stream), if so.
fn rows_differ(first: &Schema, second: &Schema) -> Option<String> {
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(first) != names(second) {
        return Some(format!(
            "columns {} and {}",
            names(first).join(", "),
            names(second).join(", ")
        ));
    }
    first
        .fields()
        .iter()
        .zip(second.fields())
        .find(|(a, b)| {
            // The same type, or times that differ only in unit or zone (ROWTIME from a window
            // or from the input): a cast that loses nothing a reader relies on.
            a.data_type() != b.data_type()
                && !matches!(
                    (a.data_type(), b.data_type()),
                    (DataType::Timestamp(_, _), DataType::Timestamp(_, _))
                )
        })
        .map(|(a, b)| {
            format!(
                "column {} is {} and {}",
                a.name(),
                a.data_type(),
                b.data_type()
            )
        })
}

/// The rows of two writers of one stream as one batch of the first's schema, ordered by ROWTIME
/// when the stream has one (a stable order: rows of equal time keep their writer order).
fn merge_writers(first: &RecordBatch, second: &RecordBatch) -> Result<RecordBatch> {
    let schema = first.schema();
    let cols = second
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| Ok(arrow::compute::cast(c, f.data_type())?))
        .collect::<Result<Vec<_>>>()?;
    let second = RecordBatch::try_new(Arc::clone(&schema), cols)?;
    let both = arrow::compute::concat_batches(&schema, [first, &second])?;
    let Ok(at) = schema.index_of(ROWTIME) else {
        return Ok(both);
    };
    let (times, _) = super::time::time_to_millis(both.column(at))?;
    let mut order: Vec<u32> = (0..both.num_rows() as u32).collect();
    order.sort_by_key(|&i| times.is_valid(i as usize).then(|| times.value(i as usize)));
    let order = arrow::array::UInt32Array::from(order);
    let cols = both
        .columns()
        .iter()
        .map(|c| Ok(arrow::compute::take(c, &order, None)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, cols)?)
}

impl SqlProgram {
    /// Plans `sql` (statements separated by `;`) against input batches of `input_schema` (as the
    /// decoder produces them, with `ROWTIME` last).
    pub async fn new(
        sql: &str,
        input_schema: SchemaRef,
        settings: WatermarkSettings,
    ) -> Result<Self> {
        Self::with_functions(sql, input_schema, settings, &SqlFunctions::default()).await
    }

    /// [`SqlProgram::new`], with user-defined functions available to the statements.
    pub async fn with_functions(
        sql: &str,
        input_schema: SchemaRef,
        settings: WatermarkSettings,
        functions: &SqlFunctions,
    ) -> Result<Self> {
        if Dialect::of(sql) == Dialect::Standard {
            return Self::plan(sql, input_schema, settings, functions).await;
        }
        // Kinesis Data Analytics application code: its pumps, translated.
        let source_columns: Vec<String> = input_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != ROWTIME)
            .collect();
        let app = crate::kda::translate_with(sql, Some(&source_columns))?;
        match Self::plan(&app.sql(), Arc::clone(&input_schema), settings, functions).await {
            Ok(mut program) => {
                program.dialect = Dialect::Kda;
                // One statement per pump, in order: errors name the pump.
                for (stmt, pump) in program.statements.iter_mut().zip(&app.pumps) {
                    stmt.label = Arc::from(pump.name.as_str());
                }
                Ok(program)
            }
            Err(e) => {
                // Name the first pump that does not plan, with its line.
                for n in 1..=app.pumps.len() {
                    let prefix: Vec<&str> = app.pumps[..n].iter().map(|p| p.sql.as_str()).collect();
                    if let Err(e) = Self::plan(
                        &prefix.join(";\n"),
                        Arc::clone(&input_schema),
                        settings,
                        functions,
                    )
                    .await
                    {
                        let p = &app.pumps[n - 1];
                        // Where the name the error is about is written, when it says one.
                        let at = error_name(&e.to_string())
                            .and_then(|name| p.position_of(&name))
                            .map(|l| format!("line {}, column {}", l.line, l.column))
                            .unwrap_or_else(|| format!("line {}", p.line));
                        // DataFusion's advice on identifier case is not KDA's.
                        let message: String = e
                            .to_string()
                            .lines()
                            .filter(|l| !l.starts_with("Column names are case sensitive"))
                            .collect::<Vec<_>>()
                            .join("\n");
                        let hint = if message.contains("No field named") {
                            "\n(unquoted names are upper-cased, as in Kinesis Data Analytics: \
                             quote a name written in lower case, \"price\")"
                        } else {
                            ""
                        };
                        return Err(Error::Sql(format!(
                            "KDA application code, pump {} ({at}): {message}{hint}",
                            p.name
                        )));
                    }
                }
                Err(e)
            }
        }
    }

    /// The dialect the statements were written in, decided from their text when planned.
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Partitions (numbers below `n`) whose event time runs more than `by` ahead of the time the
    /// watermark is held at, in every windowed statement over the input: the ones catch-up
    /// alignment pauses. Never a partition that holds some statement's watermark back (ahead in
    /// every statement), nor one whose time a child partition without rows takes (a merge's other
    /// parent: pausing it would stop the child from ever starting).
    pub(crate) fn partitions_ahead(&self, by: Millis, n: usize) -> Vec<u32> {
        let trackers: Vec<&WatermarkTracker> = self
            .statements
            .iter()
            .filter(|s| s.from_source)
            .filter_map(|s| match &s.stage {
                Stage::Windowed(w) => Some(w.op.watermark()),
                Stage::Stateless(_) => None,
            })
            .collect();
        if trackers.is_empty() {
            return Vec::new();
        }
        (0..u32::try_from(n).unwrap_or(u32::MAX))
            .filter(|&p| {
                trackers.iter().all(|t| {
                    let (held, time) = (t.hold_time(), t.partition_time(p));
                    held != Millis::MIN
                        && time != Millis::MIN
                        && time > held.saturating_add(by)
                        && !t.passes_time_on(p, &self.table)
                })
            })
            .collect()
    }

    /// The source partitions as the pipeline knows them (declared by the source).
    pub(crate) fn partition_table_mut(&mut self) -> &mut PartitionTable {
        &mut self.table
    }

    /// Output streams (name and schema of the rows sinks receive), in statement order.
    pub fn output_streams(&self) -> Vec<(Arc<str>, SchemaRef)> {
        self.statements
            .iter()
            .map(|s| (Arc::clone(&s.output), Arc::clone(&s.visible_schema)))
            .collect()
    }

    /// Schema of an output stream.
    pub fn stream_schema(&self, name: &str) -> Option<SchemaRef> {
        self.statements
            .iter()
            .find(|s| &*s.output == name)
            .map(|s| Arc::clone(&s.visible_schema))
    }

    /// Positions (in the input schema given to [`SqlProgram::new`]) of the input columns that some
    /// statement reads, or `None` when a statement reads them all. A decoder needs to build only
    /// these.
    pub fn input_columns_used(&self) -> Option<Vec<usize>> {
        let source = self.slots.get(SOURCE_STREAM)?;
        let row_id = self.source_schema.index_of(ROW_ID).ok();
        let mut used: Vec<usize> = Vec::new();
        for stmt in &self.statements {
            let plan = match &stmt.stage {
                Stage::Stateless(p) => p,
                Stage::Windowed(w) => &w.pre,
            };
            let mut all = false;
            let _ = plan.plan().apply(|node| {
                if let Some(exec) = node.downcast_ref::<StreamingTableExec>() {
                    let reads_source = exec
                        .partitions()
                        .iter()
                        .any(|p| std::ptr::addr_eq(Arc::as_ptr(p), Arc::as_ptr(source)));
                    if reads_source {
                        match exec.projection() {
                            Some(p) => used.extend(p.iter().copied()),
                            None => all = true,
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
            if all {
                return None;
            }
        }
        used.retain(|c| Some(*c) != row_id);
        let mut input: Vec<usize> = used
            .into_iter()
            .map(|c| match &self.source_projection {
                Some(p) => p[c],
                None => c,
            })
            .collect();
        input.sort_unstable();
        input.dedup();
        Some(input)
    }

    /// The watermark settings.
    pub fn watermark_settings(&self) -> WatermarkSettings {
        self.settings
    }

    /// True when some statement keeps state across micro-batches.
    pub fn is_stateful(&self) -> bool {
        self.statements
            .iter()
            .any(|s| matches!(s.stage, Stage::Windowed(_)))
    }

    /// Number of live (window, key) states over all statements.
    pub fn live_window_states(&self) -> usize {
        self.statements
            .iter()
            .map(|s| match &s.stage {
                Stage::Windowed(w) => w.op.live_states(),
                Stage::Stateless(_) => 0,
            })
            .sum()
    }

    /// Sequence number of the oldest micro-batch whose rows are still in open window state.
    pub fn oldest_open_batch(&self) -> Option<u64> {
        self.statements
            .iter()
            .filter_map(|s| match &s.stage {
                Stage::Windowed(w) => w.op.oldest_seq(),
                Stage::Stateless(_) => None,
            })
            .min()
    }

    /// Runs one micro-batch. `partitions[i]` is the source partition of input row `i` (an empty
    /// slice means one partition); `seq` numbers the micro-batch.
    pub async fn process(
        &mut self,
        input: &RecordBatch,
        partitions: &[u32],
        seq: u64,
    ) -> Result<SqlOutput> {
        self.run(Some(input), partitions, &[], seq, false).await
    }

    /// [`Self::process`] with each input row's arrival time too, against which the windows check
    /// event times (`max_future`).
    pub(crate) async fn process_arrived(
        &mut self,
        input: &RecordBatch,
        partitions: &[u32],
        arrivals: &[i64],
        seq: u64,
    ) -> Result<SqlOutput> {
        self.run(Some(input), partitions, arrivals, seq, false)
            .await
    }

    /// Emits what the watermark allows without new input (idle partitions time out).
    pub async fn tick(&mut self, seq: u64) -> Result<SqlOutput> {
        self.run(None, &[], &[], seq, false).await
    }

    /// End of input: the watermark moves to +∞ and every open window is emitted.
    pub async fn finish(&mut self, seq: u64) -> Result<SqlOutput> {
        self.run(None, &[], &[], seq, true).await
    }

    async fn run(
        &mut self,
        input: Option<&RecordBatch>,
        partitions: &[u32],
        arrivals: &[i64],
        seq: u64,
        end: bool,
    ) -> Result<SqlOutput> {
        let mut out = SqlOutput::default();
        let mut current: HashMap<String, RecordBatch> = HashMap::new();
        if let Some(input) = input {
            current.insert(SOURCE_STREAM.to_owned(), self.source_batch(input)?);
        }
        let now = Instant::now();
        let no_partitions = PartitionTable::default();
        for stmt in &mut self.statements {
            let ctx = BatchContext {
                seq,
                partitions: if stmt.from_source { partitions } else { &[] },
                arrivals: if stmt.from_source { arrivals } else { &[] },
                table: if stmt.from_source {
                    &self.table
                } else {
                    &no_partitions
                },
                now,
            };
            let src = current.get(&stmt.input).filter(|b| b.num_rows() > 0);
            let result = match &mut stmt.stage {
                Stage::Stateless(plan) => {
                    let Some(src) = src else {
                        continue;
                    };
                    let r = plan.execute_rows(src).await?;
                    push_failures(&mut out.issues, &stmt.label, src, &r.failures);
                    r.batch
                }
                Stage::Windowed(w) => {
                    match w.run(src, &ctx, end, &stmt.label, &mut out.issues).await? {
                        Some(batch) => batch,
                        None => continue,
                    }
                }
            };
            if result.num_rows() == 0 {
                continue;
            }
            stmt.publish(&result, &mut current, &mut out)?;
        }
        for slot in self.slots.values() {
            slot.set(None);
        }
        Ok(out)
    }

    /// The source stream's rows of an input batch: its visible columns and the row id.
    fn source_batch(&self, input: &RecordBatch) -> Result<RecordBatch> {
        let visible = match &self.source_projection {
            Some(p) => input.project(p)?,
            None => input.clone(),
        };
        let mut cols = visible.columns().to_vec();
        cols.push(Arc::new(UInt64Array::from_iter_values(
            0..input.num_rows() as u64,
        )));
        Ok(RecordBatch::try_new(Arc::clone(&self.source_schema), cols)?)
    }

    /// Serialises the state of every windowed statement (for checkpoints).
    pub fn snapshot(&mut self) -> Result<Vec<Vec<u8>>> {
        self.statements
            .iter_mut()
            .filter_map(|s| match &mut s.stage {
                Stage::Windowed(w) => Some(w.op.snapshot()),
                Stage::Stateless(_) => None,
            })
            .collect()
    }

    /// Restores a [`Self::snapshot`] taken from a program planned from the same SQL.
    pub fn restore(&mut self, state: &[Vec<u8>]) -> Result<()> {
        let mut parts = state.iter();
        for s in &mut self.statements {
            if let Stage::Windowed(w) = &mut s.stage {
                let bytes = parts.next().ok_or_else(|| {
                    Error::Pipeline(
                        "window state snapshot has fewer statements than the SQL".into(),
                    )
                })?;
                w.op.restore(bytes)?;
            }
        }
        Ok(())
    }
}

impl Windowed {
    /// Runs one micro-batch through the statement: its rows (if any) into the operator, the
    /// watermark on, and what the operator emits through the part above it. `None` when nothing
    /// was emitted.
    async fn run(
        &mut self,
        src: Option<&RecordBatch>,
        ctx: &BatchContext<'_>,
        end: bool,
        label: &Arc<str>,
        issues: &mut Vec<SqlIssue>,
    ) -> Result<Option<RecordBatch>> {
        if let Some(src) = src {
            self.take(src, ctx, label, issues).await?;
        }
        if end {
            self.op.finish();
        } else {
            self.op.on_time(ctx.now, ctx.table);
        }
        let emitted = self.op.emit_ready()?;
        for (row, reason) in self.op.take_emit_issues() {
            issues.push(row_issue(row, reason, label));
        }
        let emitted = match emitted.len() {
            0 => return Ok(None),
            n if n > 1 && !self.per_window => {
                vec![arrow::compute::concat_batches(
                    &emitted[0].schema(),
                    &emitted,
                )?]
            }
            _ => emitted,
        };
        run_post(&self.post, &emitted, label, issues)
            .await
            .map(Some)
    }

    /// Runs the part below the operator on a micro-batch's rows and gives the operator its rows.
    async fn take(
        &mut self,
        src: &RecordBatch,
        ctx: &BatchContext<'_>,
        label: &Arc<str>,
        issues: &mut Vec<SqlIssue>,
    ) -> Result<()> {
        let r = self.pre.execute_rows(src).await?;
        push_failures(issues, label, src, &r.failures);
        for i in self.op.process_batch(&r.batch, ctx)? {
            issues.push(SqlIssue {
                input_row: i.row_id.map(|r| r as usize),
                row: i.row_id.is_none().then(|| r.batch.slice(i.index, 1)),
                kind: i.kind.to_owned(),
                reason: i.reason,
                statement: Some(Arc::clone(label)),
            });
        }
        Ok(())
    }
}

/// Runs `post`, the part above a window operator, on each batch the operator emitted, as one
/// batch.
async fn run_post(
    post: &PerBatch,
    emitted: &[RecordBatch],
    label: &Arc<str>,
    issues: &mut Vec<SqlIssue>,
) -> Result<RecordBatch> {
    let mut parts = Vec::with_capacity(emitted.len());
    for emitted in emitted {
        let r = post.execute_rows(emitted).await?;
        for f in &r.failures {
            issues.push(row_issue(emitted.slice(f.row, 1), f.reason.clone(), label));
        }
        parts.push(r.batch);
    }
    Ok(match parts.len() {
        1 => parts.pop().expect("one part"),
        _ => arrow::compute::concat_batches(&parts[0].schema(), &parts)?,
    })
}

impl Statement_ {
    /// Hands the statement's rows of a micro-batch on: to the statements after it (in
    /// `current`, by stream name) and to the sinks (in `out`).
    fn publish(
        &self,
        result: &RecordBatch,
        current: &mut HashMap<String, RecordBatch>,
        out: &mut SqlOutput,
    ) -> Result<()> {
        let mut stream_batch = self.stream_rows(result)?;
        if let Some(earlier) = current.get(&*self.output) {
            // Another statement wrote this stream in this micro-batch: the readers get the
            // rows of both, in ROWTIME order.
            stream_batch = merge_writers(earlier, &stream_batch)?;
        }
        out.streams
            .push((Arc::clone(&self.output), self.visible_rows(result)?));
        current.insert(self.output.to_string(), stream_batch);
        Ok(())
    }

    /// The statement's rows as the next statements read them: every column nullable, with a
    /// row id.
    fn stream_rows(&self, result: &RecordBatch) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.stream_schema.fields().len());
        for f in self.stream_schema.fields() {
            match result.schema().index_of(f.name()) {
                Ok(i) if result.column(i).data_type() == f.data_type() => {
                    cols.push(Arc::clone(result.column(i)))
                }
                // A later writer of a stream, in the first writer's types.
                Ok(i) => cols.push(arrow::compute::cast(result.column(i), f.data_type())?),
                Err(_) => cols.push(new_null_array(f.data_type(), result.num_rows())),
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.stream_schema), cols)?)
    }

    /// The statement's rows as sinks receive them: without the row id.
    fn visible_rows(&self, result: &RecordBatch) -> Result<RecordBatch> {
        let visible: Vec<usize> = (0..result.num_columns())
            .filter(|&i| result.schema().field(i).name() != ROW_ID)
            .collect();
        let visible = result.project(&visible)?;
        Ok(
            RecordBatch::try_new(Arc::clone(&self.visible_schema), visible.columns().to_vec())
                .unwrap_or(visible),
        )
    }
}

/// An issue with a row that traces back to no input row (one a window emitted).
fn row_issue(row: RecordBatch, reason: String, statement: &Arc<str>) -> SqlIssue {
    SqlIssue {
        input_row: None,
        row: Some(row),
        kind: "sql".into(),
        reason,
        statement: Some(Arc::clone(statement)),
    }
}

fn push_failures(
    issues: &mut Vec<SqlIssue>,
    statement: &Arc<str>,
    input: &RecordBatch,
    failures: &[super::RowFailure],
) {
    let ids = input
        .schema()
        .index_of(ROW_ID)
        .ok()
        .map(|i| input.column(i).as_primitive::<UInt64Type>().clone());
    for f in failures {
        let id = ids
            .as_ref()
            .and_then(|a| a.is_valid(f.row).then(|| a.value(f.row) as usize));
        issues.push(SqlIssue {
            input_row: id,
            row: id.is_none().then(|| input.slice(f.row, 1)),
            kind: "sql".into(),
            reason: f.reason.clone(),
            statement: Some(Arc::clone(statement)),
        });
    }
}

/// Names of the streams the statements of `sql` write, in order, without planning them.
pub(crate) fn output_stream_names(sql: &str) -> Result<Vec<String>> {
    if Dialect::of(sql) == Dialect::Kda {
        let app = crate::kda::translate(sql)?;
        let mut names: Vec<String> = Vec::new();
        for p in &app.pumps {
            if !names.contains(&p.target) {
                names.push(p.target.clone());
            }
        }
        return Ok(names);
    }
    let parsed = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Error::Sql(format!("cannot parse the SQL: {e}")))?;
    let mut names: Vec<String> = parsed
        .iter()
        .filter_map(|s| match s {
            Statement::Query(_) => Some(DESTINATION_STREAM.to_owned()),
            Statement::Insert(i) => match &i.table {
                TableObject::TableName(n) => {
                    n.0.last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.clone())
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    // One entry per stream, however many statements write it.
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}
