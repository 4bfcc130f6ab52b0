//! The shapes of plan a stream can run: what is refused (an aggregate without a window, joins of
//! streams, `DISTINCT`, `ORDER BY` and `LIMIT` outside a window, subqueries), with what to write
//! instead, and what a windowed statement's plan contains.

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Aggregate, Join, LogicalPlan};

use crate::{Error, Result};

/// Refuses plan shapes that cannot run on an unbounded stream, saying what to write instead.
pub(crate) fn check_shape(plan: &LogicalPlan, windowed: bool, over: bool) -> Result<()> {
    check_shape_with(plan, windowed.then_some(false), over, &[])
}

/// The tables a plan scans.
fn scanned(plan: &LogicalPlan) -> Vec<String> {
    let mut names = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(t) = node {
            names.push(t.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}

/// [`check_shape`], where a join is allowed when one side reads only `reference` tables (static
/// data, joined to each micro-batch). `window` is `Some(per_key)` for a windowed aggregate:
/// above a tumbling or hopping window's aggregate, `ORDER BY` and `LIMIT` apply to each
/// window's rows.
pub(crate) fn check_shape_with(
    plan: &LogicalPlan,
    window: Option<bool>,
    over: bool,
    reference: &[String],
) -> Result<()> {
    let windowed = window.is_some();
    let per_window = window == Some(false);
    let mut problem: Option<String> = None;
    let mut aggregates = 0;
    plan.apply_with_subqueries(|node| {
        let p: Option<String> = match node {
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) if per_window && aggregates == 0 => None,
            LogicalPlan::Aggregate(a) => {
                aggregates += 1;
                aggregate_problem(a, windowed)
            }
            node => node_problem(node, windowed, over, reference),
        };
        let stop = p.is_some();
        if p.is_some() {
            problem = p;
        }
        Ok(if stop {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if let Some(why) = problem {
        return Err(Error::Sql(format!(
            "cannot run this query on a stream: {why}"
        )));
    }
    if windowed && aggregates > 1 {
        return Err(Error::Sql(
            "cannot run this query on a stream: one windowed aggregate per statement; give the \
             other aggregate its own statement (INSERT INTO stream_name SELECT …)"
                .into(),
        ));
    }
    Ok(())
}

/// Why an aggregate cannot run on a stream, if it cannot.
fn aggregate_problem(a: &Aggregate, windowed: bool) -> Option<String> {
    if !windowed {
        Some(
            "an aggregate (GROUP BY, COUNT, SUM, …) over a stream never completes \
             without a window: add TUMBLE(ts, INTERVAL '1' MINUTE), HOP(ts, slide, \
             size) or SESSION(ts, gap) to GROUP BY"
                .into(),
        )
    } else if a
        .group_expr
        .iter()
        .any(|e| matches!(e, datafusion::logical_expr::Expr::GroupingSet(_)))
    {
        Some("GROUPING SETS, CUBE and ROLLUP are not supported on streams".into())
    } else {
        None
    }
}

/// Why a plan node other than an aggregate cannot run on a stream, if it cannot.
fn node_problem(
    node: &LogicalPlan,
    windowed: bool,
    over: bool,
    reference: &[String],
) -> Option<String> {
    match node {
        LogicalPlan::Window(_) if windowed => Some(
            "a statement can have a group window (TUMBLE, HOP, SESSION) or OVER windows, \
             not both; give one of them its own statement"
                .into(),
        ),
        LogicalPlan::Window(_) if !over => Some("OVER windows need state".into()),
        LogicalPlan::Join(j) => join_problem(j, over, reference),
        LogicalPlan::Distinct(_) => {
            Some("SELECT DISTINCT over a stream never completes; use GROUP BY with a window".into())
        }
        LogicalPlan::Sort(_) => Some(
            "ORDER BY over an unbounded stream never completes; rows come out in window \
             order (in a statement grouped by TUMBLE or HOP, ORDER BY sorts each window's \
             rows)"
                .into(),
        ),
        LogicalPlan::Limit(_) => Some(
            "LIMIT over an unbounded stream is not supported (in a statement grouped by \
             TUMBLE or HOP, LIMIT keeps the first rows of each window)"
                .into(),
        ),
        LogicalPlan::Subquery(_) => Some(
            "subqueries in expressions are not supported on streams; give the inner query \
             its own statement"
                .into(),
        ),
        LogicalPlan::RecursiveQuery(_) => {
            Some("recursive queries are not supported on streams".into())
        }
        LogicalPlan::Dml(_)
        | LogicalPlan::Ddl(_)
        | LogicalPlan::Copy(_)
        | LogicalPlan::Statement(_)
        | LogicalPlan::Explain(_)
        | LogicalPlan::Analyze(_)
        | LogicalPlan::DescribeTable(_) => Some("only SELECT queries run on a stream".into()),
        _ => None,
    }
}

/// Why a join cannot run on a stream, if it cannot: only a join to `reference` tables can, and
/// not in a statement with `OVER` windows.
fn join_problem(j: &Join, over: bool, reference: &[String]) -> Option<String> {
    let only_reference = |p: &LogicalPlan| {
        let tables = scanned(p);
        !tables.is_empty() && tables.iter().all(|t| reference.contains(t))
    };
    if only_reference(&j.left) || only_reference(&j.right) {
        over.then(|| {
            "join the reference table in a statement of its own (INSERT INTO \
             stream_name SELECT …), and window that stream in the next"
                .into()
        })
    } else {
        Some(
            "a join of streams needs a time bound on both sides, which is not \
             supported; aggregate each stream in its own statement instead (a \
             reference table, loaded from a file, can be joined)"
                .into(),
        )
    }
}

/// Refuses, at plan time, a window time column of a type that cannot hold a time.
pub(crate) fn check_time_type(t: &DataType, what: &str) -> Result<()> {
    if t.is_integer()
        || matches!(
            t,
            DataType::Timestamp(_, _)
                | DataType::Date32
                | DataType::Date64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Null
        )
    {
        Ok(())
    } else {
        Err(Error::Sql(format!(
            "the window's time column `{what}` is {t}; it must be a timestamp, ISO-8601 text or \
             epoch milliseconds"
        )))
    }
}

/// True when the plan sorts or limits its rows.
pub(crate) fn sorts_or_limits(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found |= matches!(node, LogicalPlan::Sort(_) | LogicalPlan::Limit(_));
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// True when the plan has `OVER` windows.
pub(crate) fn has_over(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found |= matches!(node, LogicalPlan::Window(_));
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
