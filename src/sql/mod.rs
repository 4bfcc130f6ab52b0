//! Streaming SQL: queries planned once and run on every micro-batch.
//!
//! The input stream is registered as `SOURCE_SQL_STREAM_001` and as `source`. Identifiers are
//! case-sensitive, as written (JSON member names are), while function names are not:
//! `SELECT UPPER(ticker_symbol) FROM SOURCE_SQL_STREAM_001` works for a member `ticker_symbol`.
//! Every input row has `ROWTIME`, its arrival time; `SELECT *` includes it only when the query
//! names `ROWTIME` somewhere.
//!
//! [`StreamQuery`] runs one stateless query; [`SqlProgram`] runs several statements, chained by
//! stream name, including windowed aggregates (`TUMBLE`, `HOP`, `SESSION`) whose state is kept
//! across micro-batches and emitted as the event-time watermark passes each window's end.
//! In a statement grouped by a tumbling or hopping window, `ORDER BY` and `LIMIT` apply to each
//! window's rows. Shapes that cannot run on an unbounded stream — an aggregate without a window,
//! joins of streams, `DISTINCT`, `ORDER BY` and `LIMIT` elsewhere, subqueries — are refused with
//! an error saying why.
//!
//! Kinesis Data Analytics application code is handed to `kda`, which translates it
//! into these statements; the engine itself knows no dialect. Aggregates whose calls can fail a
//! whole batch (WASM guests') take part in windows through the two-phase interface of `guest`,
//! which the engine declares and `wasm` implements.

mod bounds;
mod checked;
mod guest;
mod ops;
mod program;
mod rewrite;
mod shape;
mod time;
mod watermark;

pub use bounds::{MAX_BUILT_ARRAY_ELEMENTS, MAX_BUILT_VALUE_BYTES, SQL_MEMORY_LIMIT};
#[cfg(feature = "wasm")]
pub(crate) use guest::{GuestGroups, PhasedGroups, PreparedUpdate};
pub(crate) use program::output_stream_names;
pub use program::{SqlFunctions, SqlIssue, SqlOutput, SqlProgram};
pub(crate) use watermark::SourceState;
pub use watermark::WatermarkSettings;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::TableReference;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::format::ROWTIME;
use crate::record::{SOURCE_ALIAS, SOURCE_STREAM};
use crate::sql::rewrite::ROW_ID;
use crate::{Error, Result};

/// Holds the micro-batch the plan reads on its next execution.
#[derive(Debug)]
pub(crate) struct BatchSlot {
    schema: SchemaRef,
    batch: Mutex<Option<RecordBatch>>,
}

impl BatchSlot {
    pub(crate) fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batch: Mutex::new(None),
        }
    }

    pub(crate) fn set(&self, batch: Option<RecordBatch>) {
        *self
            .batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = batch;
    }
}

impl PartitionStream for BatchSlot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // Cloned, not taken: a query may scan the stream more than once (`UNION ALL`).
        let batch = self
            .batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batch.map(Ok)),
        ))
    }
}

/// The batch slots a physical plan reads.
pub(crate) fn slots_read(
    plan: &Arc<dyn ExecutionPlan>,
    slots: &[Arc<BatchSlot>],
) -> Vec<Arc<BatchSlot>> {
    let mut found: Vec<Arc<BatchSlot>> = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<StreamingTableExec>() {
            for p in exec.partitions() {
                for s in slots {
                    let same = std::ptr::addr_eq(Arc::as_ptr(p), Arc::as_ptr(s));
                    if same && !found.iter().any(|f| Arc::ptr_eq(f, s)) {
                        found.push(Arc::clone(s));
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A physical plan run once per micro-batch, reading the batch from one slot.
pub(crate) struct PerBatch {
    plan: Arc<dyn ExecutionPlan>,
    slot: Arc<BatchSlot>,
    task_ctx: Arc<TaskContext>,
    /// The plan sorts or limits (a window's `ORDER BY … LIMIT`): its operators keep state from
    /// one run to the next unless reset, and its rows stand or fail together, since a part of
    /// them sorted or limited alone would give other rows.
    ordered: bool,
    /// The plan joins (a reference table): rows come out in the input's order again, by their
    /// row id, since the windows downstream take them in that order.
    joins: bool,
}

impl PerBatch {
    pub(crate) fn new(
        plan: Arc<dyn ExecutionPlan>,
        slot: Arc<BatchSlot>,
        task_ctx: Arc<TaskContext>,
    ) -> Self {
        let mut joins = false;
        let _ = plan.apply(|node| {
            joins |= node.name().contains("Join");
            Ok(TreeNodeRecursion::Continue)
        });
        Self {
            plan,
            slot,
            task_ctx,
            ordered: false,
            joins,
        }
    }

    /// The plan sorts or limits each window's rows (`ORDER BY … LIMIT` of a windowed statement).
    pub(crate) fn per_window(mut self) -> Self {
        self.ordered = true;
        self
    }

    pub(crate) fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    pub(crate) fn display(&self) -> String {
        datafusion::physical_plan::displayable(self.plan.as_ref())
            .indent(false)
            .to_string()
    }

    async fn run(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        // A join keeps the side it collected (a micro-batch's rows) unless reset.
        let plan = if self.ordered || self.joins {
            datafusion::physical_plan::execution_plan::reset_plan_states(Arc::clone(&self.plan))?
        } else {
            Arc::clone(&self.plan)
        };
        self.slot.set(Some(batch));
        let out = datafusion::physical_plan::collect(plan, Arc::clone(&self.task_ctx)).await;
        self.slot.set(None);
        Ok(out?)
    }

    /// Runs the plan on `input`. When evaluation fails (a bad `CAST`, a function error), the batch
    /// is split until the failing rows are found; every other row is evaluated.
    pub(crate) async fn execute_rows(&self, input: &RecordBatch) -> Result<QueryOutput> {
        let schema = self.plan.schema();
        let mut failures = Vec::new();
        let mut outputs = Vec::new();
        let mut ranges = VecDeque::from([(0usize, input.num_rows())]);
        if input.num_rows() == 0 {
            ranges.clear();
        }
        while let Some((offset, len)) = ranges.pop_front() {
            match self.run(input.slice(offset, len)).await {
                Ok(out) => outputs.extend(out),
                // A failure of the whole batch (a WASM guest that trapped or ran out of time):
                // its rows fail together, without calling the function again row by row.
                Err(e) if batch_failure(&e).is_some() || self.ordered => {
                    let reason = batch_failure(&e).unwrap_or_else(|| describe_error(&e));
                    failures.extend((offset..offset + len).map(|row| RowFailure {
                        row,
                        reason: reason.clone(),
                    }));
                }
                Err(e) if len == 1 => failures.push(RowFailure {
                    row: offset,
                    reason: describe_error(&e),
                }),
                Err(_) => {
                    let half = len / 2;
                    ranges.push_front((offset + half, len - half));
                    ranges.push_front((offset, half));
                }
            }
        }
        let mut batch = match outputs.len() {
            0 => RecordBatch::new_empty(schema),
            1 => outputs.pop().expect("one batch"),
            _ => arrow::compute::concat_batches(&schema, &outputs)?,
        };
        if self.joins && batch.num_rows() > 1 {
            if let Ok(i) = batch.schema().index_of(ROW_ID) {
                // Stable: a row joined to several reference rows keeps their order.
                let position: arrow::array::ArrayRef = Arc::new(
                    arrow::array::UInt32Array::from_iter_values(0..batch.num_rows() as u32),
                );
                let order = arrow::compute::lexsort_to_indices(
                    &[
                        arrow::compute::SortColumn {
                            values: Arc::clone(batch.column(i)),
                            options: Some(arrow::compute::SortOptions {
                                descending: false,
                                nulls_first: false,
                            }),
                        },
                        arrow::compute::SortColumn {
                            values: position,
                            options: None,
                        },
                    ],
                    None,
                )?;
                let columns = batch
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c, &order, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                batch = RecordBatch::try_new(batch.schema(), columns)?;
            }
        }
        Ok(QueryOutput { batch, failures })
    }
}

/// An error that fails every row of the batch being evaluated, instead of the batch being split
/// to find the failing rows: for functions whose failure is not about a row (a WASM guest that
/// trapped, ran past its deadline or out of memory).
#[derive(Debug)]
pub(crate) struct BatchFailure(pub(crate) String);

impl std::fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BatchFailure {}

/// The reason of a [`BatchFailure`] inside `e`, if it is one.
pub(crate) fn batch_failure(e: &crate::Error) -> Option<String> {
    let crate::Error::DataFusion(df) = e else {
        return None;
    };
    let mut cur: &datafusion::error::DataFusionError = df;
    loop {
        match cur {
            datafusion::error::DataFusionError::External(b) => {
                return b.downcast_ref::<BatchFailure>().map(|f| f.0.clone());
            }
            datafusion::error::DataFusionError::Context(_, inner) => cur = inner,
            datafusion::error::DataFusionError::Shared(inner) => cur = inner,
            datafusion::error::DataFusionError::ArrowError(a, _) => {
                if let arrow::error::ArrowError::ExternalError(b) = a.as_ref() {
                    return b.downcast_ref::<BatchFailure>().map(|f| f.0.clone());
                }
                return None;
            }
            _ => return None,
        }
    }
}

/// A row the query could not evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    /// Row index in the input batch.
    pub row: usize,
    /// The evaluation error.
    pub reason: String,
}

/// Result of running a query on one micro-batch.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Output rows, in input order.
    pub batch: RecordBatch,
    /// Input rows that failed (e.g. a `CAST` of a bad value); all other rows were evaluated.
    pub failures: Vec<RowFailure>,
}

/// A stateless SQL query over a stream, planned once and run per micro-batch.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> rivulet::Result<()> {
/// use std::sync::Arc;
/// use arrow::array::{Float64Array, RecordBatch, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use rivulet::StreamQuery;
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("sym", DataType::Utf8, true),
///     Field::new("price", DataType::Float64, true),
/// ]));
/// let mut q = StreamQuery::new(
///     "SELECT LOWER(sym) AS s FROM source WHERE price > 10",
///     Arc::clone(&schema),
/// ).await?;
/// let batch = RecordBatch::try_new(schema, vec![
///     Arc::new(StringArray::from(vec!["AMZN", "F"])),
///     Arc::new(Float64Array::from(vec![84.5, 9.0])),
/// ])?;
/// let out = q.execute(&batch).await?;
/// assert_eq!(out.batch.num_rows(), 1);
/// # Ok(()) }
/// ```
pub struct StreamQuery {
    sql: String,
    exec: PerBatch,
    /// Input columns the table exposes (all but an unreferenced ROWTIME).
    projection: Option<Vec<usize>>,
    output_schema: SchemaRef,
}

impl fmt::Debug for StreamQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamQuery")
            .field("sql", &self.sql)
            .field("output_schema", &self.output_schema)
            .finish()
    }
}

/// A DataFusion session set up for per-batch stream queries.
fn session() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let mut state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(bounds::runtime())
        .with_default_features()
        .build();
    bounds::register(&mut state);
    state.add_analyzer_rule(Arc::new(checked::CheckedArithmetic));
    SessionContext::new_with_state(state)
}

/// True when `sql` names `ROWTIME` (outside string literals and comments).
pub(crate) fn mentions_rowtime(sql: &str) -> bool {
    Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map(|tokens| {
            tokens
                .iter()
                .any(|t| matches!(t, Token::Word(w) if w.value == ROWTIME))
        })
        .unwrap_or(true)
}

/// The input columns the source table shows, when not all: every one but `ROWTIME`, unless
/// `sql` names it.
pub(crate) fn source_projection(sql: &str, input_schema: &Schema) -> Option<Vec<usize>> {
    let keep_rowtime = mentions_rowtime(sql);
    match input_schema.index_of(ROWTIME) {
        Ok(i) if !keep_rowtime => Some(
            (0..input_schema.fields().len())
                .filter(|&c| c != i)
                .collect(),
        ),
        _ => None,
    }
}

/// A table whose scans read what `slot` holds.
pub(crate) fn slot_table(slot: &Arc<BatchSlot>) -> Result<Arc<StreamingTable>> {
    Ok(Arc::new(StreamingTable::try_new(
        Arc::clone(&slot.schema),
        vec![Arc::clone(slot) as Arc<dyn PartitionStream>],
    )?))
}

/// Registers the input stream, read from `slot`, under its name and its alias.
pub(crate) fn register_source(ctx: &SessionContext, slot: &Arc<BatchSlot>) -> Result<()> {
    let table = slot_table(slot)?;
    for name in [SOURCE_STREAM, SOURCE_ALIAS] {
        ctx.register_table(TableReference::bare(name), Arc::clone(&table) as _)?;
    }
    Ok(())
}

impl StreamQuery {
    /// Plans `sql` against input batches of `input_schema` (as produced by the decoder, with
    /// `ROWTIME` last). Fails on invalid SQL or a query that needs state (plan windowed aggregates with
    /// [`SqlProgram`]).
    pub async fn new(sql: &str, input_schema: SchemaRef) -> Result<Self> {
        let ctx = session();
        let projection = source_projection(sql, &input_schema);
        let table_schema = match &projection {
            Some(p) => Arc::new(input_schema.project(p)?),
            None => Arc::clone(&input_schema),
        };
        let slot = Arc::new(BatchSlot::new(Arc::clone(&table_schema)));
        register_source(&ctx, &slot)?;
        let state = ctx.state();
        let logical = state
            .create_logical_plan(sql)
            .await
            .map_err(|e| Error::Sql(describe(&e)))?;
        shape::check_shape(&logical, false, false)?;
        let plan = state
            .create_physical_plan(&logical)
            .await
            .map_err(|e| Error::Sql(describe(&e)))?;
        let output_schema = plan.schema();
        Ok(Self {
            sql: sql.to_owned(),
            exec: PerBatch::new(plan, slot, ctx.task_ctx()),
            projection,
            output_schema,
        })
    }

    /// Schema of the output rows.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the query on one micro-batch. When evaluation fails (a bad `CAST`, a function error),
    /// the batch is split until the failing rows are found: they are reported in
    /// [`QueryOutput::failures`] and every other row is evaluated.
    pub async fn execute(&mut self, batch: &RecordBatch) -> Result<QueryOutput> {
        let input = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch.clone(),
        };
        self.exec.execute_rows(&input).await
    }
}

pub(crate) fn describe(e: &datafusion::error::DataFusionError) -> String {
    e.strip_backtrace().to_string()
}

fn describe_error(e: &Error) -> String {
    match e {
        Error::DataFusion(d) => describe(d),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn input() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ticker_symbol", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
            Field::new("qty", DataType::Utf8, true),
            Field::new(
                ROWTIME,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["AMZN", "TSLA", "F", "AAPL"])),
                Arc::new(Float64Array::from(vec![84.5, 250.0, 9.0, 180.0])),
                Arc::new(StringArray::from(vec!["10", "x", "3", "4"])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![0, 1000, 2000, 3000]).with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    async fn q(sql: &str) -> Result<StreamQuery> {
        StreamQuery::new(sql, input().schema()).await
    }

    #[tokio::test]
    async fn projection_filter_functions_case_and_regex() {
        let mut query = q(
            "SELECT LOWER(ticker_symbol) AS sym, price * 2 AS double_price, \
             CASE WHEN price > 100 THEN 'high' ELSE 'low' END AS band, \
             regexp_replace(ticker_symbol, '[AEIOU]', '_', 'g') AS masked \
             FROM SOURCE_SQL_STREAM_001 WHERE price > 50",
        )
        .await
        .unwrap();
        let out = query.execute(&input()).await.unwrap();
        let b = out.batch;
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.column(0).as_string::<i32>().value(0), "amzn");
        assert_eq!(b.column(2).as_string::<i32>().value(0), "low");
        assert_eq!(b.column(2).as_string::<i32>().value(1), "high");
        assert_eq!(b.column(3).as_string::<i32>().value(2), "__PL");
        // Planned once, run again on another batch.
        assert_eq!(query.execute(&input()).await.unwrap().batch.num_rows(), 3);
    }

    #[tokio::test]
    async fn rowtime_is_hidden_from_star_unless_named() {
        let mut star = q("SELECT * FROM source").await.unwrap();
        assert_eq!(star.output_schema().fields().len(), 3);
        assert_eq!(star.execute(&input()).await.unwrap().batch.num_rows(), 4);
        let mut named = q("SELECT ticker_symbol, ROWTIME FROM source WHERE ROWTIME >= TIMESTAMP '1970-01-01T00:00:02Z'")
            .await
            .unwrap();
        let out = named.execute(&input()).await.unwrap().batch;
        assert_eq!(out.num_rows(), 2);
        assert_eq!(out.schema().field(1).name(), ROWTIME);
    }

    #[tokio::test]
    async fn a_query_may_read_the_stream_twice() {
        let mut query = q("SELECT ticker_symbol FROM source WHERE price > 200 \
             UNION ALL SELECT ticker_symbol FROM source WHERE price < 10")
        .await
        .unwrap();
        let out = query.execute(&input()).await.unwrap().batch;
        let mut syms: Vec<&str> = out.column(0).as_string::<i32>().iter().flatten().collect();
        syms.sort_unstable();
        assert_eq!(syms, ["F", "TSLA"]);
    }

    #[tokio::test]
    async fn bad_cast_fails_only_its_row() {
        let mut query = q("SELECT ticker_symbol, CAST(qty AS BIGINT) AS n FROM source")
            .await
            .unwrap();
        let out = query.execute(&input()).await.unwrap();
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].row, 1);
        assert!(
            out.failures[0].reason.contains("x"),
            "{}",
            out.failures[0].reason
        );
        let n: &Int64Array = out.batch.column(1).as_primitive();
        assert_eq!(n.values(), &[10, 3, 4]);
    }

    #[tokio::test]
    async fn stateful_queries_are_refused() {
        for (sql, word) in [
            (
                "SELECT ticker_symbol, COUNT(*) FROM source GROUP BY ticker_symbol",
                "without a window",
            ),
            ("SELECT SUM(price) FROM source", "TUMBLE"),
            (
                "SELECT a.price FROM source a JOIN source b ON a.ticker_symbol = b.ticker_symbol",
                "join",
            ),
            ("SELECT DISTINCT ticker_symbol FROM source", "DISTINCT"),
            ("SELECT price, AVG(price) OVER () FROM source", "OVER"),
            ("SELECT * FROM source ORDER BY price", "ORDER BY"),
            ("SELECT * FROM source LIMIT 1", "LIMIT"),
            (
                "SELECT * FROM source WHERE price > (SELECT AVG(price) FROM source)",
                "subqueries",
            ),
        ] {
            let err = q(sql).await.unwrap_err().to_string();
            assert!(
                err.contains("cannot run this query on a stream"),
                "{sql}: {err}"
            );
            assert!(err.contains(word), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn unknown_column_and_bad_syntax_are_sql_errors() {
        let err = q("SELECT nope FROM source").await.unwrap_err();
        assert!(matches!(err, Error::Sql(_)), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = q("SELEC * FROM source").await.unwrap_err();
        assert!(matches!(err, Error::Sql(_)), "{err:?}");
    }
}
