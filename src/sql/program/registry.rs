//! The functions statements may call: the user's ([`SqlFunctions`]) and the session that
//! registers them with rivulet's own (window markers, KDA's functions, the bounded builders).

use super::*;

/// User-defined functions that statements may call: scalar functions and aggregates (usable in
/// windows like the built-in ones).
#[derive(Debug, Clone, Default)]
pub struct SqlFunctions {
    pub(super) scalars: Vec<ScalarUDF>,
    pub(super) aggregates: Vec<AggregateUDF>,
    pub(super) references: Vec<(String, RecordBatch)>,
}

impl SqlFunctions {
    /// No functions beyond DataFusion's built-ins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a scalar function.
    pub fn with_udf(mut self, udf: ScalarUDF) -> Self {
        self.scalars.push(udf);
        self
    }

    /// Adds a reference table: static rows that statements can join to the stream (as a Kinesis
    /// Data Analytics reference data source). A statement that joins one runs per micro-batch;
    /// it cannot also be windowed.
    pub fn with_reference_table(mut self, name: impl Into<String>, rows: RecordBatch) -> Self {
        self.references.push((name.into(), rows));
        self
    }

    /// Adds an aggregate function; its accumulator state is what windows keep and checkpoint.
    pub fn with_udaf(mut self, udaf: AggregateUDF) -> Self {
        self.aggregates.push(udaf);
        self
    }
}

/// A DataFusion session for streaming statements: one partition, case-sensitive identifiers, the
/// window markers registered, and no rewrite of `COUNT(DISTINCT x)` into two aggregations.
pub(super) fn streaming_state() -> SessionState {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    // Plans run again for every micro-batch: filters that an operator derives while it runs
    // (a top-k's bound, a join's keys) would carry one batch's state into the next.
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    let base = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(crate::sql::bounds::runtime())
        .with_default_features()
        .build();
    let rules = base
        .optimizers()
        .iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .cloned()
        .collect();
    let mut state = SessionStateBuilder::new_from_existing(base)
        .with_optimizer_rules(rules)
        .build();
    for udf in [
        ScalarUDF::from(WindowBound::start()),
        ScalarUDF::from(WindowBound::end()),
        ScalarUDF::from(EventTime::new()),
    ]
    .into_iter()
    .chain(crate::kda::functions())
    {
        let _ = state.register_udf(Arc::new(udf));
    }
    crate::sql::bounds::register(&mut state);
    state.add_analyzer_rule(Arc::new(crate::sql::checked::CheckedArithmetic));
    state
}
