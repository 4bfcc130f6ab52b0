//! Planning a program: each statement parsed, planned by DataFusion, checked for a shape a
//! stream can run, and split around its window operator into the plans run per micro-batch.

use super::*;

impl SqlProgram {
    pub(super) async fn plan(
        sql: &str,
        input_schema: SchemaRef,
        settings: WatermarkSettings,
        functions: &SqlFunctions,
    ) -> Result<Self> {
        let mut planner = Planner::new(functions, settings)?;
        let (source_projection, source_schema) = planner.register_source(sql, &input_schema)?;
        for stmt in parse_statements(sql)? {
            planner.add_statement(stmt).await?;
        }
        let mut statements = planner.statements;
        mark_from_source(&mut statements);
        Ok(Self {
            statements,
            slots: planner.slots,
            source_projection,
            source_schema,
            settings,
            table: PartitionTable::default(),
            dialect: Dialect::Standard,
        })
    }
}

/// What planning the statements of a program builds up, statement by statement.
struct Planner {
    session: Session,
    settings: WatermarkSettings,
    /// The slot each stream (the source, each statement's output) is read from.
    slots: HashMap<String, Arc<BatchSlot>>,
    statements: Vec<Statement_>,
    /// Streams written by several statements whose rows cannot be read as one stream, and why.
    multi_writer: HashMap<String, String>,
}

/// The DataFusion session statements are planned in.
struct Session {
    ctx: SessionContext,
    task_ctx: Arc<TaskContext>,
    /// The reference tables statements may join.
    reference_names: Vec<String>,
}

/// One statement's query, planned by DataFusion.
struct PlannedQuery {
    /// The rewritten query's text.
    text: String,
    /// The window of its windowed aggregate, if it has one.
    clause: Option<WindowClause>,
    /// It has `OVER` windows.
    over: bool,
    /// It sorts or limits its rows.
    per_window: bool,
    physical: Arc<dyn ExecutionPlan>,
}

impl Planner {
    /// A session with the user's functions and reference tables registered.
    fn new(functions: &SqlFunctions, settings: WatermarkSettings) -> Result<Self> {
        let mut state = streaming_state();
        for f in &functions.scalars {
            state.register_udf(Arc::new(f.clone()))?;
        }
        for f in &functions.aggregates {
            state.register_udaf(Arc::new(f.clone()))?;
        }
        let ctx = SessionContext::new_with_state(state);
        let mut reference_names = Vec::new();
        for (name, rows) in &functions.references {
            let table =
                datafusion::datasource::MemTable::try_new(rows.schema(), vec![vec![rows.clone()]])?;
            ctx.register_table(TableReference::bare(name.as_str()), Arc::new(table))?;
            reference_names.push(name.clone());
        }
        Ok(Self {
            session: Session {
                task_ctx: ctx.task_ctx(),
                ctx,
                reference_names,
            },
            settings,
            slots: HashMap::new(),
            statements: Vec::new(),
            multi_writer: HashMap::new(),
        })
    }

    /// Registers the input stream (its visible columns and the row id): the projection of the
    /// input batches it shows, and its schema.
    fn register_source(
        &mut self,
        sql: &str,
        input_schema: &SchemaRef,
    ) -> Result<(Option<Vec<usize>>, SchemaRef)> {
        let source_projection = source_projection(sql, input_schema);
        let visible = match &source_projection {
            Some(p) => input_schema.project(p)?,
            None => input_schema.as_ref().clone(),
        };
        let mut fields: Vec<Field> = visible
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(ROW_ID, DataType::UInt64, true));
        let source_schema = Arc::new(Schema::new(fields));
        let source_slot = Arc::new(BatchSlot::new(Arc::clone(&source_schema)));
        register_source(&self.session.ctx, &source_slot)?;
        self.slots.insert(SOURCE_STREAM.to_owned(), source_slot);
        Ok((source_projection, source_schema))
    }

    /// Plans one statement and registers the stream it writes.
    async fn add_statement(&mut self, stmt: Statement) -> Result<()> {
        let (output, query) = statement_target(stmt)?;
        let second_writer = self.check_writer(&output)?;
        let planned = self.session.plan_query(query).await?;
        let (input_slot, input) = self.input_of(&planned)?;
        let stage = self.stage(&planned, &input_slot)?;
        let out_schema = planned.physical.schema();
        let (stream_schema, visible_schema) = stream_schemas(&out_schema);
        let stream_schema = self.register_output(&output, second_writer, stream_schema)?;
        self.statements.push(Statement_ {
            sql: planned.text,
            label: Arc::from(output.as_str()),
            input,
            output: Arc::from(output.as_str()),
            stage,
            stream_schema,
            visible_schema,
            from_source: false,
        });
        Ok(())
    }

    /// Refuses a statement writing `output` where it cannot; true when an earlier statement
    /// writes it too.
    fn check_writer(&self, output: &str) -> Result<bool> {
        if output == SOURCE_STREAM || output == SOURCE_ALIAS {
            return Err(Error::Sql(format!(
                "cannot write into the input stream {output}"
            )));
        }
        // Several statements may write one stream (as several KDA pumps insert into one
        // destination stream) as long as no statement reads it.
        let second_writer = self.statements.iter().any(|s| *s.output == *output);
        if second_writer && self.statements.iter().any(|s| *s.input == *output) {
            return Err(Error::Sql(format!(
                "stream {output} is read by a statement before another statement writes it; \
                 put every statement writing a stream before the statements reading it"
            )));
        }
        Ok(second_writer)
    }

    /// The slot of the one stream the statement reads, and that stream's name.
    fn input_of(&self, planned: &PlannedQuery) -> Result<(Arc<BatchSlot>, String)> {
        let known: Vec<Arc<BatchSlot>> = self.slots.values().cloned().collect();
        let reads = slots_read(&planned.physical, &known);
        let [input_slot] = reads.as_slice() else {
            return Err(Error::Sql(format!(
                "a statement reads exactly one stream (source or an earlier statement's \
                 stream); this one reads {}: {}",
                reads.len(),
                planned.text
            )));
        };
        let input = self
            .slots
            .iter()
            .find(|(_, s)| Arc::ptr_eq(s, input_slot))
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        if let Some(why) = self.multi_writer.get(&input) {
            return Err(Error::Sql(format!(
                "stream {input} is written by several statements whose rows differ ({why}), \
                 and read by another; give each writer its own stream, or write the same \
                 columns"
            )));
        }
        Ok((Arc::clone(input_slot), input))
    }

    /// How the statement runs: per batch, or split around its window operator.
    fn stage(&self, planned: &PlannedQuery, input_slot: &Arc<BatchSlot>) -> Result<Stage> {
        let physical = &planned.physical;
        Ok(match &planned.clause {
            None if !planned.over => Stage::Stateless(PerBatch::new(
                Arc::clone(physical),
                Arc::clone(input_slot),
                Arc::clone(&self.session.task_ctx),
            )),
            Some(c) => {
                let (pre, plan, post) =
                    split_windowed(physical, c, input_slot, &self.session.task_ctx)?;
                let per_window = planned.per_window;
                Stage::Windowed(Box::new(Windowed {
                    pre,
                    op: Box::new(WindowAggregate::new(plan, self.settings)?),
                    post: if per_window { post.per_window() } else { post },
                    per_window,
                }))
            }
            None => {
                let (pre, plan, post, input_schema) =
                    split_over(physical, input_slot, &self.session.task_ctx)?;
                Stage::Windowed(Box::new(Windowed {
                    pre,
                    op: Box::new(OverAggregate::new(plan, self.settings, &input_schema)?),
                    post,
                    per_window: false,
                }))
            }
        })
    }

    /// Registers the stream a statement writes, read from a slot of `stream_schema`; for a later
    /// writer of a stream, the schema its rows take (the first writer's, when they cast).
    fn register_output(
        &mut self,
        output: &str,
        second_writer: bool,
        stream_schema: SchemaRef,
    ) -> Result<SchemaRef> {
        let slot = Arc::new(BatchSlot::new(Arc::clone(&stream_schema)));
        let table = slot_table(&slot)?;
        if !second_writer {
            self.session
                .ctx
                .register_table(TableReference::bare(output), table as _)?;
            self.slots.insert(output.to_owned(), slot);
            return Ok(stream_schema);
        }
        // A later statement reads the writers' rows together, in the first writer's
        // columns: the same names, of types that cast.
        let first = self
            .statements
            .iter()
            .find(|s| *s.output == *output)
            .map(|s| Arc::clone(&s.stream_schema))
            .unwrap_or_else(|| Arc::clone(&stream_schema));
        match rows_differ(&first, &stream_schema) {
            Some(why) => {
                self.multi_writer.insert(output.to_owned(), why);
                Ok(stream_schema)
            }
            // Its rows take the first writer's types, in every micro-batch.
            None => Ok(first),
        }
    }
}

impl Session {
    /// Rewrites the query for the stream, plans it, checks its shape and plans it physically.
    async fn plan_query(&self, mut query: Box<Query>) -> Result<PlannedQuery> {
        let state = self.ctx.state();
        let clause = self.rewrite(&state, &mut query)?;
        let text = query.to_string();
        let logical = state
            .statement_to_plan(DfStatement::Statement(Box::new(Statement::Query(
                query.clone(),
            ))))
            .await
            .map_err(|e| plan_error(&e, &text))?;
        let over = has_over(&logical);
        check_shape_with(
            &logical,
            clause.as_ref().map(|c| c.spec.per_key()),
            over,
            &self.reference_names,
        )?;
        let per_window = sorts_or_limits(&logical);
        let logical = state
            .optimize(&logical)
            .map_err(|e| plan_error(&e, &text))?;
        let physical = physical_plan(&state, &logical, &text).await?;
        Ok(PlannedQuery {
            text,
            clause,
            over,
            per_window,
            physical,
        })
    }

    /// [`rewrite_query`] with the session's aggregates and reference tables.
    fn rewrite(&self, state: &SessionState, query: &mut Query) -> Result<Option<WindowClause>> {
        let aggregates = state.aggregate_functions();
        rewrite_query(
            query,
            &crate::sql::rewrite::Names {
                is_aggregate: &|name| aggregates.contains_key(name),
                references: &self.reference_names,
            },
        )
    }
}

/// The statements of `sql`, parsed; at least one.
fn parse_statements(sql: &str) -> Result<Vec<Statement>> {
    let parsed = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Error::Sql(format!("cannot parse the SQL: {e}")))?;
    if parsed.is_empty() {
        return Err(Error::Sql("the SQL holds no statement".into()));
    }
    Ok(parsed)
}

/// The stream a statement writes and the query whose rows it writes.
fn statement_target(stmt: Statement) -> Result<(String, Box<Query>)> {
    match stmt {
        Statement::Query(q) => Ok((DESTINATION_STREAM.to_owned(), q)),
        Statement::Insert(insert) => {
            let name = match &insert.table {
                TableObject::TableName(n) => {
                    n.0.last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.clone())
                        .unwrap_or_default()
                }
                other => {
                    return Err(Error::Sql(format!(
                        "INSERT INTO takes a stream name, got `{other}`"
                    )))
                }
            };
            let source = insert
                .source
                .ok_or_else(|| Error::Sql(format!("INSERT INTO {name} needs a SELECT")))?;
            Ok((name, source))
        }
        other => Err(Error::Sql(format!(
            "only SELECT … and INSERT INTO stream_name SELECT … statements run on a \
             stream, got `{other}`"
        ))),
    }
}

/// The physical plan of `logical`. DataFusion asserts some plan shapes with a panic (several
/// OVER windows with different frames, for one): a statement it cannot plan is an error, not a
/// crash.
async fn physical_plan(
    state: &SessionState,
    logical: &datafusion::logical_expr::LogicalPlan,
    text: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let planned = {
        use futures::FutureExt as _;
        std::panic::AssertUnwindSafe(state.create_physical_plan(logical))
            .catch_unwind()
            .await
    };
    match planned {
        Ok(p) => p.map_err(|e| plan_error(&e, text)),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Sql(format!(
                "this statement cannot be planned ({why}); OVER windows of one \
                 statement must share their PARTITION BY, ORDER BY and frame: {text}"
            )))
        }
    }
}

/// The schemas of a statement's stream: as other statements read it (all nullable, with the
/// row id), and as sinks receive it (without the row id).
fn stream_schemas(out_schema: &Schema) -> (SchemaRef, SchemaRef) {
    let mut fields: Vec<Field> = out_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let visible_schema = Arc::new(Schema::new(
        fields
            .iter()
            .filter(|f| f.name() != ROW_ID)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    if !fields.iter().any(|f| f.name() == ROW_ID) {
        fields.push(Field::new(ROW_ID, DataType::UInt64, true));
    }
    (nullable(&Schema::new(fields)), visible_schema)
}

/// A statement's rows carry source partitions when every writer of the stream it reads is the
/// source or a stateless statement whose own rows do.
fn mark_from_source(statements: &mut [Statement_]) {
    for i in 0..statements.len() {
        let input = statements[i].input.clone();
        let from_source = input == SOURCE_STREAM
            || statements[..i]
                .iter()
                .filter(|w| *w.output == *input)
                .fold(None, |all: Option<bool>, w| {
                    let carries = w.from_source && matches!(w.stage, Stage::Stateless(_));
                    Some(all.unwrap_or(true) && carries)
                })
                .unwrap_or(false);
        statements[i].from_source = from_source;
    }
}

/// The column, table or function a planning error is about, if it names one (the last part of
/// a qualified name: `"S"."PRICE"` is about `PRICE`).
pub(super) fn error_name(message: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "No field named ",
        "Invalid function ",
        "table '",
        "Table '",
        "not found: ",
    ];
    let (at, marker) = MARKERS
        .iter()
        .filter_map(|m| message.find(m).map(|i| (i, *m)))
        .min_by_key(|(i, _)| *i)?;
    let rest = &message[at + marker.len()..];
    let word: &str = rest.split(char::is_whitespace).next().unwrap_or_default();
    let word = word.trim_end_matches(['.', ',']);
    // The parts of `"a"."b"`, `a.b` or `'a'`, quotes dropped.
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    for c in word.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            '\'' => {}
            c => part.push(c),
        }
    }
    parts.push(part);
    parts.pop().filter(|p| !p.is_empty())
}

/// Splits a planned `OVER` query into the per-batch part below the window operator, the
/// operator, and the per-batch part above it.
pub(super) fn split_over(
    plan: &Arc<dyn ExecutionPlan>,
    input_slot: &Arc<BatchSlot>,
    task_ctx: &Arc<TaskContext>,
) -> Result<(PerBatch, OverPlan, PerBatch, SchemaRef)> {
    let is_window = |p: &Arc<dyn ExecutionPlan>| {
        p.downcast_ref::<BoundedWindowAggExec>().is_some()
            || p.downcast_ref::<WindowAggExec>().is_some()
    };
    let node = find_node(plan, &is_window)
        .ok_or_else(|| Error::Sql("cannot plan the OVER window: no window operator".into()))?;
    let (exprs, input) = if let Some(b) = node.downcast_ref::<BoundedWindowAggExec>() {
        (b.window_expr().to_vec(), Arc::clone(b.input()))
    } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
        (w.window_expr().to_vec(), Arc::clone(w.input()))
    } else {
        unreachable!("found by is_window")
    };
    if find_node(&input, &is_window).is_some() {
        return Err(Error::Sql(
            "cannot run this query on a stream: OVER windows with different PARTITION BY or \
             ORDER BY; give each its own statement"
                .into(),
        ));
    }
    // The operator orders rows itself; a sort below it would only cost time.
    let input = match input.downcast_ref::<SortExec>() {
        Some(sort) => Arc::clone(sort.input()),
        None => input,
    };
    let input_schema = input.schema();
    let output_schema = node.schema();
    let over = OverPlan::from_window_exprs(
        &exprs,
        &input_schema,
        Arc::clone(&output_schema),
        input_schema.index_of(ROW_ID).ok(),
    )?;
    let (post, _) = replace_with_slot(plan, &node, task_ctx)?;
    Ok((
        PerBatch::new(input, Arc::clone(input_slot), Arc::clone(task_ctx)),
        over,
        post,
        input_schema,
    ))
}

/// The plan with `node` replaced by a slot that receives the operator's output.
pub(super) fn replace_with_slot(
    plan: &Arc<dyn ExecutionPlan>,
    node: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
) -> Result<(PerBatch, Arc<BatchSlot>)> {
    let schema = node.schema();
    let slot = Arc::new(BatchSlot::new(Arc::clone(&schema)));
    let exec: Arc<dyn ExecutionPlan> = Arc::new(StreamingTableExec::try_new(
        schema,
        vec![Arc::clone(&slot) as Arc<dyn PartitionStream>],
        None,
        Vec::new(),
        false,
        None,
    )?);
    let replaced = Arc::clone(plan)
        .transform_down(|n| {
            Ok(if Arc::ptr_eq(&n, node) {
                Transformed::new(Arc::clone(&exec), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(n)
            })
        })?
        .data;
    Ok((
        PerBatch::new(replaced, Arc::clone(&slot), Arc::clone(task_ctx)),
        slot,
    ))
}

pub(super) fn find_node(
    plan: &Arc<dyn ExecutionPlan>,
    pred: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool,
) -> Option<Arc<dyn ExecutionPlan>> {
    if pred(plan) {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(|c| find_node(c, pred))
}

pub(super) fn is_aggregate(p: &Arc<dyn ExecutionPlan>) -> bool {
    p.downcast_ref::<AggregateExec>().is_some()
}

/// Splits a planned windowed aggregate into the per-batch part below it, the window operator,
/// and the per-batch part above it (reading the operator's output).
pub(super) fn split_windowed(
    plan: &Arc<dyn ExecutionPlan>,
    clause: &WindowClause,
    input_slot: &Arc<BatchSlot>,
    task_ctx: &Arc<TaskContext>,
) -> Result<(PerBatch, WindowAggregatePlan, PerBatch)> {
    let internal = |what: &str| Error::Sql(format!("cannot plan the windowed aggregate: {what}"));
    let top = find_node(plan, &is_aggregate).ok_or_else(|| internal("no aggregate in the plan"))?;
    let top_exec = top
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| internal("unexpected aggregate"))?;
    let agg_node = match top_exec.mode() {
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            let first = top_exec
                .input()
                .children()
                .into_iter()
                .next()
                .cloned()
                .unwrap_or_else(|| Arc::clone(top_exec.input()));
            find_node(top_exec.input(), &is_aggregate)
                .or_else(|| find_node(&first, &is_aggregate))
                .ok_or_else(|| internal("final aggregate without a partial one"))?
        }
        _ => Arc::clone(&top),
    };
    let agg = agg_node
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| internal("unexpected aggregate"))?;
    let input = Arc::clone(agg.input());
    let input_schema = input.schema();
    let mut time_expr = None;
    let mut row_expr = None;
    let mut keys = Vec::new();
    let mut key_fields = Vec::new();
    let mut group_columns = Vec::new();
    for (expr, name) in agg.group_expr().expr() {
        let marker = expr
            .downcast_ref::<ScalarFunctionExpr>()
            .map(|f| (f.name().to_owned(), f.args().to_vec()));
        match marker {
            Some((n, args)) if n == WINDOW_START_FN => {
                time_expr = args.first().cloned();
                row_expr = args.get(1).cloned();
                group_columns.push(GroupColumn::Start);
            }
            Some((n, _)) if n == WINDOW_END_FN => group_columns.push(GroupColumn::End),
            _ => {
                group_columns.push(GroupColumn::Key(keys.len()));
                key_fields.push(Field::new(name, expr.data_type(&input_schema)?, true));
                keys.push(Arc::clone(expr));
            }
        }
    }
    let time_expr = time_expr.ok_or_else(|| internal("the window's time column was lost"))?;
    check_time_type(&time_expr.data_type(&input_schema)?, &clause.time_sql)?;
    let aggs = agg.aggr_expr().to_vec();
    let agg_args = aggregate_expressions(&aggs, &AggregateMode::Single, 0)?;
    let output_schema = top.schema();
    let (post, _) = replace_with_slot(plan, &top, task_ctx)?;
    let window_plan = WindowAggregatePlan {
        spec: clause.spec,
        time_sql: clause.time_sql.clone(),
        time_expr,
        row_expr,
        keys,
        key_schema: Arc::new(Schema::new(key_fields)),
        aggs,
        agg_args,
        filters: agg.filter_expr().to_vec(),
        group_columns,
        output_schema,
    };
    Ok((
        PerBatch::new(input, Arc::clone(input_slot), Arc::clone(task_ctx)),
        window_plan,
        post,
    ))
}

pub(super) fn plan_error(e: &datafusion::error::DataFusionError, sql: &str) -> Error {
    Error::Sql(format!("{} (in statement: {sql})", describe(e)))
}
