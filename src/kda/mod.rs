//! The Kinesis Data Analytics dialect: what makes a KDA application run on rivulet's engine.
//!
//! A front end to `sql`, which knows nothing of KDA: it hands this module the text
//! it was given, and gets back standard statements to plan and the functions KDA's SQL
//! reference defines.
//! - `translate`: application code (streams, pumps, `STEP`, stagger and sliding
//!   windows, the table functions) translated into rivulet's streaming statements, with the pumps
//!   and where each was written, for errors that name them.
//!   `table_functions` writes `TOP_K_ITEMS_TUMBLING`, `COUNT_DISTINCT_ITEMS_TUMBLING` and
//!   `RANDOM_CUT_FOREST` as the queries they stand for; `tokens` is the token toolkit both use.
//! - `functions`: KDA's scalar functions (`CHAR_TO_TIMESTAMP`, `REGEX_REPLACE`, …); `log_parse`:
//!   the log-parsing functions; `rcf`: `RANDOM_CUT_FOREST`'s anomaly score.
//! - [`KdaApplication`]: application files (KDA's `DescribeApplication` output and requests, the
//!   original solution's configuration), their input schema and reference data.

mod application;
mod functions;
mod log_parse;
mod rcf;
mod table_functions;
mod tokens;
pub(crate) mod translate;

use datafusion::logical_expr::ScalarUDF;

pub use application::{KdaApplication, KdaReference};
pub(crate) use translate::{rename_stream, translate, translate_with};

/// The dialect of a piece of SQL, decided once from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// rivulet's streaming SQL (DataFusion's, with the window functions).
    Standard,
    /// Kinesis Data Analytics application code (`CREATE OR REPLACE STREAM` / `PUMP`).
    Kda,
}

impl Dialect {
    /// The dialect `sql` is written in.
    pub(crate) fn of(sql: &str) -> Self {
        if translate::is_application(sql) {
            Self::Kda
        } else {
            Self::Standard
        }
    }
}

/// The functions of KDA's SQL reference, available to statements of either dialect.
pub(crate) fn functions() -> impl Iterator<Item = ScalarUDF> {
    functions::functions()
        .into_iter()
        .chain(log_parse::functions())
        .chain([rcf::function()])
}
