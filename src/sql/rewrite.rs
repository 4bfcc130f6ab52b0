//! Rewrites streaming SQL into plain SQL that DataFusion can plan.
//!
//! * A group window in `GROUP BY` (`TUMBLE(ts, size)`, `HOP(ts, slide, size)`, `SESSION(ts, gap)`)
//!   becomes two marker group expressions, [`WINDOW_START_FN`]`(ts, row id)` and
//!   [`WINDOW_END_FN`]`(ts)`; `TUMBLE_START(…)`, `HOP_END(…)`, `window_start`, … in the select list
//!   and `HAVING` become the same markers, so DataFusion sees them as group columns. The window
//!   operator fills those columns with the window's bounds.
//! * Every non-aggregating `SELECT` carries the hidden row id column [`ROW_ID`] through, so rows
//!   reaching a window can be traced back to their input record (its shard for the watermark, and
//!   the record itself when the row is late).

use std::ops::ControlFlow;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, NamedWindowExpr, Query, Select, SelectItem, SetExpr, TableFactor, Value,
    WindowSpec as WindowSpecAst, WindowType,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::ops::WindowSpec;
use super::watermark::Millis;
use crate::{Error, Result};

/// Hidden column holding the index of a row's input record within its micro-batch.
pub(crate) const ROW_ID: &str = "__rivulet_row";
/// Marker function for a window's start (group expression of a windowed aggregate).
pub(crate) const WINDOW_START_FN: &str = "__rivulet_window_start";
/// Marker function for a window's end.
pub(crate) const WINDOW_END_FN: &str = "__rivulet_window_end";
/// Converts an `OVER` window's time column (timestamp, ISO-8601 text or epoch milliseconds) to a
/// timestamp, so that `RANGE INTERVAL … PRECEDING` frames plan on any of them.
pub(crate) const EVENT_TIME_FN: &str = "__rivulet_event_time";

/// [`EVENT_TIME_FN`]: a value that is not a time becomes null (and its row a `bad_time` error).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct EventTime {
    signature: Signature,
}

impl EventTime {
    pub(crate) fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for EventTime {
    fn name(&self) -> &str {
        EVENT_TIME_FN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        if let Some(t) = arg_types.first() {
            super::shape::check_time_type(t, "ORDER BY")
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        }
        Ok(utc_millis())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let n = args.number_rows;
        let col = args.args[0].clone().into_array(n)?;
        let (millis, _) = super::time::time_to_millis(&col)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let ts = arrow::array::TimestampMillisecondArray::new(
            millis.values().clone(),
            arrow::array::Array::nulls(&millis).cloned(),
        )
        .with_timezone("UTC");
        Ok(ColumnarValue::Array(std::sync::Arc::new(ts)))
    }
}

/// The type the window markers and event times evaluate to: UTC timestamps in milliseconds.
fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The window of a rewritten query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WindowClause {
    pub(crate) spec: WindowSpec,
    /// The time expression, as written.
    pub(crate) time_sql: String,
}

/// A marker: planned as a group column, never evaluated.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct WindowBound {
    name: &'static str,
    signature: Signature,
}

impl WindowBound {
    pub(crate) fn start() -> Self {
        Self {
            name: WINDOW_START_FN,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }

    pub(crate) fn end() -> Self {
        Self {
            name: WINDOW_END_FN,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for WindowBound {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(utc_millis())
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        datafusion::common::plan_err!(
            "window bounds (TUMBLE_START, HOP_END, window_start, …) can only be selected in a \
             query grouped by that window"
        )
    }
}

fn parse_expr(sql: &str) -> Result<Expr> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::Sql(format!("internal rewrite of `{sql}` failed: {e}")))
}

fn function_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) => f.name.0.last().map(|p| p.to_string().to_ascii_uppercase()),
        _ => None,
    }
}

fn function_args(e: &Expr) -> Vec<&Expr> {
    let Expr::Function(f) = e else {
        return Vec::new();
    };
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// Milliseconds of an `INTERVAL '10' SECOND` (or `INTERVAL '10 seconds'`) literal.
pub(crate) fn interval_millis(e: &Expr) -> Result<Millis> {
    let bad = || {
        Error::Sql(format!(
            "a window size must be an interval literal such as INTERVAL '10' SECOND, got `{e}`"
        ))
    };
    let Expr::Interval(iv) = e else {
        return Err(bad());
    };
    let value = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let text = match &iv.leading_field {
        Some(unit) => format!("{value} {unit}"),
        None => value,
    };
    let parsed = arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(&text)
        .map_err(|_| bad())?;
    if parsed.months != 0 {
        return Err(Error::Sql(format!(
            "window size `{e}`: months and years have no fixed length; use days"
        )));
    }
    let ms = i64::from(parsed.days) * 86_400_000 + parsed.nanoseconds / 1_000_000;
    if ms <= 0 {
        return Err(Error::Sql(format!(
            "window size `{e}` must be at least 1 ms"
        )));
    }
    Ok(ms)
}

const WINDOW_FNS: [&str; 4] = ["TUMBLE", "HOP", "SESSION", "STAGGER"];

/// Parses a `TUMBLE`/`HOP`/`SESSION` group expression.
fn window_clause(e: &Expr) -> Result<Option<WindowClause>> {
    let Some(name) = function_name(e) else {
        return Ok(None);
    };
    if !WINDOW_FNS.contains(&name.as_str()) {
        return Ok(None);
    }
    let args = function_args(e);
    let usage = match name.as_str() {
        "TUMBLE" => "TUMBLE(time_column, INTERVAL '1' MINUTE)",
        "HOP" => {
            "HOP(time_column, slide, size), e.g. HOP(ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE)"
        }
        "STAGGER" => "STAGGER(time_column, size), e.g. STAGGER(ts, INTERVAL '1' MINUTE)",
        _ => "SESSION(time_column, gap), e.g. SESSION(ts, INTERVAL '30' SECOND)",
    };
    let expected = if name == "HOP" { 3 } else { 2 };
    if args.len() != expected {
        return Err(Error::Sql(format!("`{e}`: write {usage}")));
    }
    let spec = match name.as_str() {
        "TUMBLE" => WindowSpec::Tumbling {
            size: interval_millis(args[1])?,
        },
        "HOP" => {
            let slide = interval_millis(args[1])?;
            let size = interval_millis(args[2])?;
            if size % slide != 0 {
                return Err(Error::Sql(format!(
                    "`{e}`: the size of a hopping window must be a multiple of its slide"
                )));
            }
            WindowSpec::Hopping { slide, size }
        }
        "STAGGER" => WindowSpec::Stagger {
            size: interval_millis(args[1])?,
        },
        _ => WindowSpec::Session {
            gap: interval_millis(args[1])?,
        },
    };
    Ok(Some(WindowClause {
        spec,
        time_sql: args[0].to_string(),
    }))
}

/// What the rewrite needs to know of the session's names.
pub(crate) struct Names<'a> {
    /// Tells aggregate function names.
    pub(crate) is_aggregate: &'a dyn Fn(&str) -> bool,
    /// Reference tables (static rows a statement may join).
    pub(crate) references: &'a [String],
}

/// Rewrites one statement's query in place. Returns the window of its windowed aggregate, if it
/// has one.
pub(crate) fn rewrite_query(q: &mut Query, names: &Names<'_>) -> Result<Option<WindowClause>> {
    if let Some(with) = &mut q.with {
        for cte in &mut with.cte_tables {
            if rewrite_query(&mut cte.query, names)?.is_some() {
                return Err(nested_window());
            }
        }
    }
    rewrite_set_expr(&mut q.body, names, true)
}

fn nested_window() -> Error {
    Error::Sql(
        "a windowed aggregate must be the outermost SELECT of its statement; to aggregate the \
         output of another query, give that query its own statement (INSERT INTO stream_name \
         SELECT …) and read stream_name"
            .into(),
    )
}

fn rewrite_set_expr(
    body: &mut SetExpr,
    names: &Names<'_>,
    top: bool,
) -> Result<Option<WindowClause>> {
    match body {
        SetExpr::Select(select) => rewrite_select(select, names, top),
        SetExpr::Query(q) => {
            let w = rewrite_query(q, names)?;
            if w.is_some() && !top {
                return Err(nested_window());
            }
            Ok(w)
        }
        SetExpr::SetOperation { left, right, .. } => {
            let l = rewrite_set_expr(left, names, false)?;
            let r = rewrite_set_expr(right, names, false)?;
            if l.is_some() || r.is_some() {
                return Err(nested_window());
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

fn has_wildcard(select: &Select) -> bool {
    select.projection.iter().any(|p| {
        matches!(
            p,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_, _)
        )
    })
}

fn aggregates(select: &mut Select, names: &Names<'_>) -> bool {
    let mut found = false;
    for item in &mut select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let _ = visit_expressions_mut(expr, |e| {
            if let Expr::Function(f) = e {
                if f.over.is_none() {
                    if let Some(n) = f.name.0.last() {
                        if (names.is_aggregate)(&n.to_string().to_ascii_lowercase()) {
                            found = true;
                        }
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    found
}

fn rewrite_select(
    select: &mut Select,
    names: &Names<'_>,
    top: bool,
) -> Result<Option<WindowClause>> {
    for twj in &mut select.from {
        rewrite_factor(&mut twj.relation, names)?;
        for j in &mut twj.joins {
            rewrite_factor(&mut j.relation, names)?;
        }
    }
    wrap_over_order_by(select)?;
    let Some((at, clause)) = group_window(select)? else {
        if carries_row_id(select, names) {
            select
                .projection
                .push(SelectItem::UnnamedExpr(Expr::Identifier(Ident::new(
                    ROW_ID,
                ))));
        }
        return Ok(None);
    };
    if !top {
        return Err(nested_window());
    }
    let start = parse_expr(&format!("{WINDOW_START_FN}({}, {ROW_ID})", clause.time_sql))?;
    let end = parse_expr(&format!("{WINDOW_END_FN}({})", clause.time_sql))?;
    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        exprs.splice(at..=at, [start.clone(), end.clone()]);
    }
    select_window_bounds(select, &clause, &start, &end)?;
    Ok(Some(clause))
}

/// The window the select groups by, with its place among the group expressions; at most one.
fn group_window(select: &Select) -> Result<Option<(usize, WindowClause)>> {
    let mut clause: Option<(usize, WindowClause)> = None;
    if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
        for (i, e) in exprs.iter().enumerate() {
            if let Some(c) = window_clause(e)? {
                if clause.is_some() {
                    return Err(Error::Sql(
                        "a query can group by one window only (one TUMBLE, HOP or SESSION)".into(),
                    ));
                }
                clause = Some((i, c));
            }
        }
    }
    Ok(clause)
}

/// True when a select without a window can carry its input's row id: it does not group,
/// aggregate, dedupe or select `*`, and reads one stream.
fn carries_row_id(select: &mut Select, names: &Names<'_>) -> bool {
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    // A join of streams is refused later with its own message; with one stream (joined to
    // reference tables or not) the row id is unique to the stream's row.
    let single_input = select.from.len() == 1
        && select.from[0].joins.iter().all(|j| {
            matches!(&j.relation, TableFactor::Table { name, .. }
            if name.0.last().and_then(|p| p.as_ident()).is_some_and(|id| {
                names.references.contains(&id.value)
            }))
        });
    !grouped
        && single_input
        && select.distinct.is_none()
        && !has_wildcard(select)
        && !aggregates(select, names)
}

/// The name a window function is written with (`TUMBLE`, …), which its bounds' names start with.
fn window_fn_name(spec: WindowSpec) -> &'static str {
    match spec {
        WindowSpec::Tumbling { .. } => "TUMBLE",
        WindowSpec::Hopping { .. } => "HOP",
        WindowSpec::Session { .. } => "SESSION",
        WindowSpec::Stagger { .. } => "STAGGER",
    }
}

/// Which bound of the query's window `e` names (`Some(true)` for the start), if it names one:
/// `window_start`, `window_end`, `TUMBLE_START(…)`, …. A bound of another window, of another
/// time column, or a window function outside `GROUP BY` sets `failure`.
fn window_bound(e: &Expr, clause: &WindowClause, failure: &mut Option<Error>) -> Option<bool> {
    let prefix = window_fn_name(clause.spec);
    match e {
        Expr::Identifier(id) if id.value.eq_ignore_ascii_case("window_start") => Some(true),
        Expr::Identifier(id) if id.value.eq_ignore_ascii_case("window_end") => Some(false),
        Expr::Function(_) => match function_name(e).as_deref() {
            Some(n) if n.ends_with("_START") || n.ends_with("_END") => {
                let (kind, is_start) = match n.strip_suffix("_START") {
                    Some(k) => (k, true),
                    None => (n.strip_suffix("_END").unwrap_or(n), false),
                };
                if !WINDOW_FNS.contains(&kind) {
                    return None;
                }
                if kind != prefix {
                    *failure = Some(Error::Sql(format!(
                        "`{e}` does not match the query's window, {prefix}(…); use \
                         {prefix}_START / {prefix}_END"
                    )));
                } else if let Some(t) = function_args(e).first() {
                    if t.to_string() != clause.time_sql {
                        *failure = Some(Error::Sql(format!(
                            "`{e}` names time column `{t}`, but the query's window is on \
                             `{}`",
                            clause.time_sql
                        )));
                    }
                }
                Some(is_start)
            }
            Some(n) if WINDOW_FNS.contains(&n) => {
                *failure = Some(Error::Sql(format!(
                    "`{e}` can only appear in GROUP BY; select {n}_START(…) or {n}_END(…) \
                     for the window's bounds"
                )));
                None
            }
            _ => None,
        },
        _ => None,
    }
}

/// Replaces the window's bounds in the select list and `HAVING` by the marker expressions
/// `start` and `end`.
fn select_window_bounds(
    select: &mut Select,
    clause: &WindowClause,
    start: &Expr,
    end: &Expr,
) -> Result<()> {
    let mut failure: Option<Error> = None;
    let mut replace = |e: &mut Expr| {
        match window_bound(e, clause, &mut failure) {
            Some(true) => *e = start.clone(),
            Some(false) => *e = end.clone(),
            None => {}
        }
        ControlFlow::<()>::Continue(())
    };
    for item in &mut select.projection {
        match item {
            SelectItem::UnnamedExpr(e) => {
                // Keep the name the user wrote as the output column's name.
                let name = match e {
                    Expr::Identifier(id) => Some(id.clone()),
                    _ => None,
                };
                let _ = visit_expressions_mut(e, &mut replace);
                if let Some(alias) = name.filter(|_| !matches!(e, Expr::Identifier(_))) {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias,
                    };
                }
            }
            SelectItem::ExprWithAlias { expr, .. } => {
                let _ = visit_expressions_mut(expr, &mut replace);
            }
            _ => {}
        }
    }
    if let Some(h) = &mut select.having {
        let _ = visit_expressions_mut(h, &mut replace);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn wrap_spec(spec: &mut WindowSpecAst) -> Result<()> {
    for o in &mut spec.order_by {
        let already = matches!(function_name(&o.expr).as_deref(), Some(n) if n.eq_ignore_ascii_case(EVENT_TIME_FN));
        if !already {
            o.expr = parse_expr(&format!("{EVENT_TIME_FN}({})", o.expr))?;
        }
    }
    Ok(())
}

/// Makes the time column of every `OVER (… ORDER BY t …)` a timestamp.
fn wrap_over_order_by(select: &mut Select) -> Result<()> {
    let mut failure = None;
    for item in &mut select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let _ = visit_expressions_mut(expr, |e| {
            if let Expr::Function(f) = e {
                if let Some(WindowType::WindowSpec(spec)) = &mut f.over {
                    if let Err(err) = wrap_spec(spec) {
                        failure = Some(err);
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    for w in &mut select.named_window {
        if let NamedWindowExpr::WindowSpec(spec) = &mut w.1 {
            wrap_spec(spec)?;
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn rewrite_factor(f: &mut TableFactor, names: &Names<'_>) -> Result<()> {
    match f {
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            let window = rewrite_query(subquery, names)?;
            if window.is_some() {
                return Err(nested_window());
            }
            // `AS t(a, b)` names the nested query's columns: the names move onto its select
            // items, so that the row id it now carries keeps its own.
            if let (Some(alias), SetExpr::Select(select)) = (alias.as_mut(), subquery.body.as_mut())
            {
                let carries_row_id = matches!(
                    select.projection.last(),
                    Some(SelectItem::UnnamedExpr(Expr::Identifier(id))) if id.value == ROW_ID
                );
                let named = select.projection.len() - usize::from(carries_row_id);
                if carries_row_id && !alias.columns.is_empty() && alias.columns.len() == named {
                    for (item, column) in select.projection.iter_mut().zip(&alias.columns) {
                        let expr = match item {
                            SelectItem::UnnamedExpr(e) => e.clone(),
                            SelectItem::ExprWithAlias { expr, .. } => expr.clone(),
                            _ => continue,
                        };
                        *item = SelectItem::ExprWithAlias {
                            expr,
                            alias: column.name.clone(),
                        };
                    }
                    alias.columns.clear();
                }
            }
        }
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => {
            rewrite_factor(&mut table_with_joins.relation, names)?;
            for j in &mut table_with_joins.joins {
                rewrite_factor(&mut j.relation, names)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;

    fn rewrite(sql: &str) -> Result<(String, Option<WindowClause>)> {
        let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        let Statement::Query(q) = &mut stmts[0] else {
            panic!()
        };
        let names = Names {
            is_aggregate: &|n| ["count", "sum", "avg"].contains(&n),
            references: &[],
        };
        let w = rewrite_query(q, &names)?;
        Ok((q.to_string(), w))
    }

    #[test]
    fn tumble_becomes_marker_group_columns() {
        let (sql, w) = rewrite(
            "SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, window_end, COUNT(*) AS n \
             FROM source GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND) HAVING COUNT(*) > 1",
        )
        .unwrap();
        assert_eq!(w.unwrap().spec, WindowSpec::Tumbling { size: 10_000 },);
        assert!(
            sql.contains(
                "GROUP BY k, __rivulet_window_start(ts, __rivulet_row), __rivulet_window_end(ts)"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("__rivulet_window_start(ts, __rivulet_row) AS ws"),
            "{sql}"
        );
        assert!(
            sql.contains("__rivulet_window_end(ts) AS window_end"),
            "{sql}"
        );
    }

    #[test]
    fn hop_and_session_sizes() {
        let (_, w) = rewrite(
            "SELECT COUNT(*) AS n FROM source GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE)",
        )
        .unwrap();
        assert_eq!(
            w.unwrap().spec,
            WindowSpec::Hopping {
                slide: 5_000,
                size: 60_000
            }
        );
        let (_, w) = rewrite(
            "SELECT COUNT(*) AS n FROM source GROUP BY k, SESSION(ts, INTERVAL '2' MINUTE)",
        )
        .unwrap();
        assert_eq!(w.unwrap().spec, WindowSpec::Session { gap: 120_000 });
        let err = rewrite(
            "SELECT 1 FROM source GROUP BY HOP(ts, INTERVAL '7' SECOND, INTERVAL '10' SECOND)",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("multiple of its slide"), "{err}");
    }

    #[test]
    fn stateless_selects_carry_the_row_id() {
        let (sql, w) = rewrite("SELECT a, b FROM source WHERE a > 1").unwrap();
        assert!(w.is_none());
        assert!(sql.starts_with("SELECT a, b, __rivulet_row FROM"), "{sql}");
        let (sql, _) = rewrite("SELECT * FROM source").unwrap();
        assert_eq!(sql, "SELECT * FROM source");
    }

    #[test]
    fn mismatched_bounds_and_nested_windows_are_refused() {
        let err = rewrite(
            "SELECT HOP_START(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND) AS s FROM source \
             GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not match"), "{err}");
        let err = rewrite(
            "SELECT * FROM (SELECT COUNT(*) AS n FROM source GROUP BY TUMBLE(ts, INTERVAL '1' SECOND))",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("outermost"), "{err}");
        let err = rewrite("SELECT 1 FROM source GROUP BY TUMBLE(ts, INTERVAL '1' MONTH)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no fixed length"), "{err}");
    }
}
