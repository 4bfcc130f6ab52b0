//! The Kinesis Data Analytics SQL dialect: application code (`CREATE OR REPLACE STREAM`,
//! `CREATE OR REPLACE PUMP … AS INSERT INTO … SELECT STREAM …`) translated into rivulet's
//! streaming statements (`INSERT INTO stream SELECT …`, chained by stream name).
//!
//! What the translation does:
//! - **Identifiers**: unquoted ones are upper-cased (KDA's rule), quoted ones kept as written.
//!   Function names, keywords, type names and time units are left as they are.
//! - **Streams**: `CREATE OR REPLACE STREAM` declares a stream's columns and types; a pump's
//!   `SELECT` values take the target stream's column names and types, in order (`CAST`, and
//!   `VARCHAR(n)` / `CHAR(n)` values cut to `n` characters).
//! - **Pumps** become `INSERT INTO "STREAM" SELECT …`, ordered so that a pump reading a stream
//!   runs after the pump writing it; `SELECT STREAM` is a plain `SELECT`.
//! - **Tumbling windows**: in `GROUP BY`, `STEP(ts BY INTERVAL 'n' unit)`, `FLOOR(ts TO unit)` and
//!   `FLOOR((ts - TIMESTAMP '1970-01-01 00:00:00') unit / n TO unit)` are a tumbling window of `n`
//!   units on `ts`; the same expression in the select list is the window's start. Outside a
//!   `GROUP BY` window they truncate the time (`date_bin`).
//! - **Sliding windows**: `OVER w` / `WINDOW w AS (PARTITION BY … RANGE INTERVAL … PRECEDING)`
//!   and `ROWS n PRECEDING` are ordered by ROWTIME and end at the current row.
//! - **Stagger windows**: `WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL …)` groups by
//!   the keys and a `STAGGER(ROWTIME, interval)` window.
//! - **Table functions**: `FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(…), 'column', k, seconds))` and
//!   `COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(…), 'column', seconds)` become the tumbling-window
//!   query they stand for, counted exactly (see `table_functions`).
//! - Comments (`--`, `/* */`) are dropped.
//!
//! Constructs not translated yet are refused with an error naming them and their line and column
//! (see [`UNSUPPORTED`]).

use std::collections::HashMap;

use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use super::table_functions::table_function;
use super::tokens::{body_depth, err, ident, inside, matching_paren, quote, significant, word_is};
use crate::{Error, Result};

/// KDA constructs that are refused with an error, with what to know.
pub(crate) const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "RANDOM_CUT_FOREST_WITH_EXPLANATION",
        "RANDOM_CUT_FOREST_WITH_EXPLANATION is not supported",
    ),
    ("HOTSPOTS", "HOTSPOTS is not supported"),
    (
        "FAST_REGEX_LOG_PARSE",
        "FAST_REGEX_LOG_PARSE is not supported (its lazy matching is not reproduced); \
         REGEX_LOG_PARSE with the same pattern matches greedily",
    ),
    (
        "FIXED_COLUMN_LOG_PARSE",
        "FIXED_COLUMN_LOG_PARSE is not supported; SUBSTRING(text FROM start FOR length) cuts a \
         fixed-width field",
    ),
    (
        "SYS_LOG_PARSE",
        "SYS_LOG_PARSE is not supported; REGEX_LOG_PARSE with a pattern for the log's layout \
         splits its lines",
    ),
];

/// Words kept as they are (not identifiers): SQL structure, type names, time units.
const KEEP: &[&str] = &[
    "SELECT",
    "STREAM",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "INTERVAL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "LIKE",
    "BETWEEN",
    "DISTINCT",
    "ALL",
    "ON",
    "JOIN",
    "LEFT",
    "RIGHT",
    "INNER",
    "OUTER",
    "FULL",
    "CROSS",
    "OVER",
    "PARTITION",
    "ORDER",
    "ASC",
    "DESC",
    "ROWS",
    "RANGE",
    "PRECEDING",
    "FOLLOWING",
    "CURRENT",
    "ROW",
    "UNBOUNDED",
    "WINDOW",
    "LIMIT",
    "UNION",
    "EXISTS",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
    "MONTH",
    "YEAR",
    "WEEK",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "LOCALTIMESTAMP",
    "LOCALTIME",
    "TO",
    "ESCAPE",
    "SIMILAR",
    "FILTER",
    "WITHIN",
    "LEADING",
    "TRAILING",
    "BOTH",
    "FOR",
    "VARCHAR",
    "CHAR",
    "CHARACTER",
    "VARYING",
    "INTEGER",
    "INT",
    "BIGINT",
    "SMALLINT",
    "TINYINT",
    "DECIMAL",
    "NUMERIC",
    "REAL",
    "DOUBLE",
    "PRECISION",
    "FLOAT",
    "BOOLEAN",
    "VARBINARY",
    "INSERT",
    "INTO",
    "USING",
    "PLACING",
    "NULLS",
    "FIRST",
    "LAST",
];

/// A declared in-application stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamDecl {
    pub(crate) name: String,
    /// Column names and SQL types (rivulet's spelling).
    pub(crate) columns: Vec<(String, String)>,
}

/// A pump, as translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pump {
    pub(crate) name: String,
    pub(crate) target: String,
    pub(crate) line: u64,
    /// The statement rivulet runs.
    pub(crate) sql: String,
    reads: Vec<String>,
    /// The pump's names (as KDA reads them) and where each is written, to place errors.
    names: Vec<(String, Location)>,
}

impl Pump {
    /// Where the pump writes `name` first (a column, stream or function an error names).
    pub(crate) fn position_of(&self, name: &str) -> Option<Location> {
        self.names
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| {
                self.names
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, at)| *at)
    }
}

/// A translated application.
#[derive(Debug, Clone)]
pub(crate) struct Application {
    #[allow(dead_code)]
    pub(crate) streams: Vec<StreamDecl>,
    /// In the order they run.
    pub(crate) pumps: Vec<Pump>,
}

impl Application {
    /// The pumps' statements, for [`super::SqlProgram`].
    pub(crate) fn sql(&self) -> String {
        self.pumps
            .iter()
            .map(|p| p.sql.as_str())
            .collect::<Vec<_>>()
            .join(";\n")
    }
}

/// `sql` with every reference to stream `from` (an identifier, quoted or not, as KDA reads it)
/// naming `to` instead; the rest of the text, comments included, as it was.
pub(crate) fn rename_stream(sql: &str, from: &str, to: &str) -> Result<String> {
    // Byte offset of each line's start, to turn a token's line and column into an offset.
    let mut starts = vec![0usize];
    starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |loc: Location| -> Option<usize> {
        let line = starts.get((loc.line as usize).checked_sub(1)?)?;
        let rest = &sql[*line..];
        let col = (loc.column as usize).checked_sub(1)?;
        Some(line + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i))
    };
    let mut out = String::with_capacity(sql.len());
    let mut done = 0;
    for t in significant(sql)? {
        if matches!(&t.token, Token::Word(_)) && ident(&t).is_ok_and(|n| n == from) {
            if let (Some(a), Some(b)) = (offset(t.span.start), offset(t.span.end)) {
                out.push_str(&sql[done..a]);
                out.push_str(&quote(to));
                done = b;
            }
        }
    }
    out.push_str(&sql[done..]);
    Ok(out)
}

/// Whether `sql` is KDA application code (it creates a stream or a pump).
pub(crate) fn is_application(sql: &str) -> bool {
    let Ok(tokens) = significant(sql) else {
        return false;
    };
    tokens.windows(4).any(|w| {
        word_is(&w[0].token, "CREATE")
            && ((word_is(&w[1].token, "OR")
                && word_is(&w[2].token, "REPLACE")
                && (word_is(&w[3].token, "STREAM") || word_is(&w[3].token, "PUMP")))
                || word_is(&w[1].token, "STREAM")
                || word_is(&w[1].token, "PUMP"))
    })
}

/// Translates application code.
pub(crate) fn translate(sql: &str) -> Result<Application> {
    translate_with(sql, None)
}

/// [`translate`], knowing the input stream's columns: `SELECT STREAM *` then names them, so that
/// they take the target stream's names and types like any select list.
pub(crate) fn translate_with(sql: &str, source_columns: Option<&[String]>) -> Result<Application> {
    let tokens = significant(sql)?;
    refuse_unsupported(&tokens)?;
    let mut streams: Vec<StreamDecl> = Vec::new();
    let mut pending: Vec<PendingPump> = Vec::new();
    for stmt in tokens.split(|t| matches!(t.token, Token::SemiColon)) {
        if stmt.is_empty() {
            continue;
        }
        match statement(stmt, &streams, source_columns)? {
            Statement::Stream(decl) => streams.push(decl),
            Statement::Pump(pump) => pending.push(pump),
        }
    }
    let pumps = translate_pumps(pending, &streams, source_columns)?;
    if pumps.is_empty() {
        return Err(Error::Sql(
            "KDA application code: no pump (CREATE OR REPLACE PUMP … AS INSERT INTO … SELECT \
             STREAM …) moves any row"
                .into(),
        ));
    }
    let pumps = order(pumps)?;
    Ok(Application { streams, pumps })
}

/// Refuses the calls of [`UNSUPPORTED`] functions, and `RANDOM_CUT_FOREST` outside
/// `FROM TABLE(…)`.
fn refuse_unsupported(tokens: &[TokenWithSpan]) -> Result<()> {
    for (k, t) in tokens.iter().enumerate() {
        let Token::Word(w) = &t.token else {
            continue;
        };
        let call = matches!(tokens.get(k + 1).map(|x| &x.token), Some(Token::LParen));
        if w.quote_style.is_some() || !call {
            continue;
        }
        if let Some((_, why)) = UNSUPPORTED
            .iter()
            .find(|(name, _)| w.value.eq_ignore_ascii_case(name))
        {
            return Err(err(t.span.start, why));
        }
        let in_table = k >= 2
            && matches!(tokens[k - 1].token, Token::LParen)
            && word_is(&tokens[k - 2].token, "TABLE");
        if w.value.eq_ignore_ascii_case("RANDOM_CUT_FOREST") && !in_table {
            return Err(err(
                t.span.start,
                "RANDOM_CUT_FOREST is a table function: \
                 FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM … FROM stream)))",
            ));
        }
    }
    Ok(())
}

/// A statement of application code.
enum Statement {
    Stream(StreamDecl),
    Pump(PendingPump),
}

/// A pump read, before its statement is written (which needs to know whether another pump reads
/// its stream).
struct PendingPump {
    name: String,
    target: String,
    line: u64,
    /// Its `SELECT`, a table function written out.
    body: Vec<TokenWithSpan>,
    /// The `INSERT INTO` column list, when it has one.
    columns: Option<Vec<String>>,
    decl: StreamDecl,
    reads: Vec<String>,
    names: Vec<(String, Location)>,
}

/// `CREATE [OR REPLACE] STREAM …` or `CREATE [OR REPLACE] PUMP …`, a pump's target among
/// `streams` (those declared before it).
fn statement(
    stmt: &[TokenWithSpan],
    streams: &[StreamDecl],
    source_columns: Option<&[String]>,
) -> Result<Statement> {
    let mut i = 0;
    expect(stmt, &mut i, "CREATE")?;
    if stmt.get(i).is_some_and(|t| word_is(&t.token, "OR")) {
        i += 1;
        expect(stmt, &mut i, "REPLACE")?;
    }
    let kind = stmt
        .get(i)
        .ok_or_else(|| err(stmt[0].span.start, "expected STREAM or PUMP"))?;
    if word_is(&kind.token, "STREAM") {
        stream_decl(stmt, i + 1).map(Statement::Stream)
    } else if word_is(&kind.token, "PUMP") {
        pump_decl(stmt, kind, i + 1, streams, source_columns).map(Statement::Pump)
    } else {
        Err(err(
            kind.span.start,
            format!(
                "expected CREATE OR REPLACE STREAM or PUMP, found `{}`",
                kind.token
            ),
        ))
    }
}

/// The word `w` at `*i`, which then moves past it.
fn expect(stmt: &[TokenWithSpan], i: &mut usize, w: &str) -> Result<()> {
    match stmt.get(*i) {
        Some(t) if word_is(&t.token, w) => {
            *i += 1;
            Ok(())
        }
        Some(t) => Err(err(
            t.span.start,
            format!("expected {w}, found `{}`", t.token),
        )),
        None => Err(err(
            stmt[stmt.len() - 1].span.end,
            format!("expected {w}, found the end of the statement"),
        )),
    }
}

/// `name AS INSERT INTO stream [(columns)] SELECT …` after `CREATE OR REPLACE PUMP` (`kind`):
/// its select checked against its target, and the streams it reads.
fn pump_decl(
    stmt: &[TokenWithSpan],
    kind: &TokenWithSpan,
    mut i: usize,
    streams: &[StreamDecl],
    source_columns: Option<&[String]>,
) -> Result<PendingPump> {
    let name = ident(
        stmt.get(i)
            .ok_or_else(|| err(kind.span.end, "a pump needs a name"))?,
    )?;
    i += 1;
    expect(stmt, &mut i, "AS")?;
    expect(stmt, &mut i, "INSERT")?;
    expect(stmt, &mut i, "INTO")?;
    let target_tok = stmt
        .get(i)
        .ok_or_else(|| err(kind.span.end, "INSERT INTO needs a stream"))?;
    let target = ident(target_tok)?;
    i += 1;
    let columns = insert_columns(stmt, &mut i)?;
    let decl = streams.iter().find(|s| s.name == target).ok_or_else(|| {
        err(
            target_tok.span.start,
            format!(
                "pump {name} inserts into stream {target}, which no CREATE STREAM before \
                 it declares"
            ),
        )
    })?;
    let line = stmt[0].span.start.line;
    let known = |stream: &str| columns_of(streams, source_columns, stream);
    let body = match table_function(&stmt[i..], &name, &known)? {
        Some(rewritten) => rewritten,
        None => stmt[i..].to_vec(),
    };
    let (_, reads) = select(&body, decl, columns.as_deref(), &name, false, &|_| None)?;
    let names = stmt
        .iter()
        .filter(|t| matches!(t.token, Token::Word(_)))
        .filter_map(|t| ident(t).ok().map(|n| (n, t.span.start)))
        .collect();
    Ok(PendingPump {
        name,
        target,
        line,
        body,
        columns,
        decl: decl.clone(),
        reads,
        names,
    })
}

/// An optional column list after `INSERT INTO stream`, which must match the stream's.
fn insert_columns(stmt: &[TokenWithSpan], i: &mut usize) -> Result<Option<Vec<String>>> {
    if !matches!(stmt.get(*i).map(|t| &t.token), Some(Token::LParen)) {
        return Ok(None);
    }
    let mut cols = Vec::new();
    *i += 1;
    while let Some(t) = stmt.get(*i) {
        match &t.token {
            Token::RParen => {
                *i += 1;
                break;
            }
            Token::Comma => *i += 1,
            _ => {
                cols.push(ident(t)?);
                *i += 1;
            }
        }
    }
    Ok(Some(cols))
}

/// The columns of `stream`: the input's when they are known, else those its `CREATE STREAM`
/// declares.
fn columns_of(
    streams: &[StreamDecl],
    source_columns: Option<&[String]>,
    stream: &str,
) -> Option<Vec<String>> {
    if stream == crate::record::SOURCE_STREAM {
        return source_columns.map(<[String]>::to_vec);
    }
    streams
        .iter()
        .find(|s| s.name == stream)
        .map(|s| s.columns.iter().map(|(c, _)| c.clone()).collect())
}

/// The pumps' statements. A stream that another pump reads carries ROWTIME: a filter's rows
/// keep theirs, a window's rows get the window's end.
fn translate_pumps(
    pending: Vec<PendingPump>,
    streams: &[StreamDecl],
    source_columns: Option<&[String]>,
) -> Result<Vec<Pump>> {
    let read: Vec<String> = pending.iter().flat_map(|p| p.reads.clone()).collect();
    let columns_of = |stream: &str| columns_of(streams, source_columns, stream);
    pending
        .into_iter()
        .map(|p| {
            let carry = read.contains(&p.target);
            let (select, _) = select(
                &p.body,
                &p.decl,
                p.columns.as_deref(),
                &p.name,
                carry,
                &columns_of,
            )?;
            Ok(Pump {
                name: p.name,
                sql: format!("INSERT INTO {} {select}", quote(&p.target)),
                target: p.target,
                line: p.line,
                reads: p.reads,
                names: p.names,
            })
        })
        .collect()
}

/// Pumps ordered so that a pump reading a stream comes after the pump writing it.
fn order(mut pending: Vec<Pump>) -> Result<Vec<Pump>> {
    let mut writers: HashMap<String, Vec<String>> = HashMap::new();
    for p in &pending {
        writers
            .entry(p.target.clone())
            .or_default()
            .push(p.name.clone());
    }
    let mut done: Vec<Pump> = Vec::new();
    while !pending.is_empty() {
        // Ready once every writer of every stream it reads has run.
        let ready = pending.iter().position(|p| {
            p.reads.iter().all(|r| {
                writers
                    .get(r)
                    .is_none_or(|w| w.iter().all(|w| done.iter().any(|d| &d.name == w)))
            })
        });
        match ready {
            Some(i) => done.push(pending.remove(i)),
            None => {
                return Err(Error::Sql(format!(
                    "KDA application code: pumps {} read each other's streams in a cycle",
                    pending
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
    Ok(done)
}

/// `name (col TYPE, …)` after `CREATE OR REPLACE STREAM`.
fn stream_decl(stmt: &[TokenWithSpan], mut i: usize) -> Result<StreamDecl> {
    let name_tok = stmt
        .get(i)
        .ok_or_else(|| err(stmt[0].span.start, "a stream needs a name"))?;
    let name = ident(name_tok)?;
    i += 1;
    if !matches!(stmt.get(i).map(|t| &t.token), Some(Token::LParen)) {
        return Err(err(
            name_tok.span.end,
            format!("stream {name} needs its columns in parentheses"),
        ));
    }
    i += 1;
    let mut columns = Vec::new();
    loop {
        let col_tok = stmt.get(i).ok_or_else(|| {
            err(
                name_tok.span.end,
                format!("stream {name}: unfinished column list"),
            )
        })?;
        let col = ident(col_tok)?;
        i += 1;
        // The type: words, then an optional (n) or (p, s).
        let mut words = Vec::new();
        while let Some(Token::Word(w)) = stmt.get(i).map(|t| &t.token) {
            words.push(w.value.to_uppercase());
            i += 1;
        }
        let mut params = Vec::new();
        if matches!(stmt.get(i).map(|t| &t.token), Some(Token::LParen)) {
            i += 1;
            while let Some(t) = stmt.get(i) {
                i += 1;
                match &t.token {
                    Token::RParen => break,
                    Token::Comma => {}
                    Token::Number(n, _) => params.push(n.clone()),
                    other => {
                        return Err(err(t.span.start, format!("unexpected `{other}` in a type")))
                    }
                }
            }
        }
        let ty = sql_type(&words.join(" "), &params).ok_or_else(|| {
            err(
                col_tok.span.start,
                format!("column {col}: unknown type `{}`", words.join(" ")),
            )
        })?;
        columns.push((col.clone(), ty));
        match stmt.get(i).map(|t| &t.token) {
            Some(Token::Comma) => i += 1,
            Some(Token::RParen) => break,
            _ => {
                return Err(err(
                    stmt.get(i).map_or(col_tok.span.end, |t| t.span.start),
                    format!("stream {name}: expected `,` or `)` after column {col}"),
                ))
            }
        }
    }
    Ok(StreamDecl { name, columns })
}

/// A KDA type in rivulet's (DataFusion's) spelling: `VARCHAR(n)` keeps its length, which the
/// output cuts values to.
fn sql_type(words: &str, params: &[String]) -> Option<String> {
    let p = |i: usize| params.get(i).cloned();
    Some(match words {
        "VARCHAR" | "CHAR" | "CHARACTER" | "CHARACTER VARYING" | "CHAR VARYING" => match p(0) {
            Some(n) => format!("VARCHAR({n})"),
            None => "VARCHAR".into(),
        },
        "INTEGER" | "INT" => "INT".into(),
        "BIGINT" => "BIGINT".into(),
        "SMALLINT" => "SMALLINT".into(),
        "TINYINT" => "TINYINT".into(),
        "DECIMAL" | "NUMERIC" => match (p(0), p(1)) {
            (Some(a), Some(b)) => format!("DECIMAL({a}, {b})"),
            (Some(a), None) => format!("DECIMAL({a}, 0)"),
            _ => "DECIMAL(38, 0)".into(),
        },
        "REAL" | "FLOAT" => "REAL".into(),
        "DOUBLE" | "DOUBLE PRECISION" => "DOUBLE".into(),
        "BOOLEAN" => "BOOLEAN".into(),
        "DATE" => "DATE".into(),
        "TIME" => "TIME".into(),
        "TIMESTAMP" => "TIMESTAMP".into(),
        "VARBINARY" | "BINARY" => "BYTEA".into(),
        _ => return None,
    })
}

/// Where in a `SELECT` a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    Select,
    From,
    Where,
    GroupBy,
    Other,
}

/// Translates `SELECT [STREAM] …` for a pump into `stream`: the statement text and the streams it
/// reads.
fn select(
    tokens: &[TokenWithSpan],
    stream: &StreamDecl,
    columns: Option<&[String]>,
    pump: &str,
    carry_rowtime: bool,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<(String, Vec<String>)> {
    let first = tokens
        .first()
        .ok_or_else(|| Error::Sql(format!("pump {pump}: INSERT INTO needs a SELECT")))?;
    if !word_is(&first.token, "SELECT") {
        return Err(err(
            first.span.start,
            format!("pump {pump}: expected SELECT, found `{}`", first.token),
        ));
    }
    let mut body = &tokens[1..];
    if body.first().is_some_and(|t| word_is(&t.token, "STREAM")) {
        body = &body[1..];
    }
    let (clauses, reads) = clauses_and_reads(body, pump)?;
    let tumble = group_window(body, &clauses)?;
    let mut rewritten = rewrite(body, &clauses, tumble.as_deref())?;
    let stagger = stagger_window(body, &clauses, &mut rewritten)?;
    let from = clauses
        .iter()
        .position(|c| *c != Clause::Select)
        .unwrap_or(clauses.len());
    let mut items = select_items(&body[..from], &rewritten[..from]);
    let targets = target_columns(stream, columns, pump)?;
    let mut star = items.len() == 1 && items[0] == ["*"];
    if star {
        // `*` of one stream whose columns are known: those columns, by name.
        if let [from] = reads.as_slice() {
            if let Some(cols) = columns_of(from) {
                items = cols.iter().map(|c| vec![quote(c)]).collect();
                star = false;
            }
        }
    }
    let select_list = if star {
        "*".to_owned()
    } else {
        if items.len() != targets.len() {
            return Err(err(
                first.span.start,
                format!(
                    "pump {pump} selects {} values into stream {}, which has {} columns",
                    items.len(),
                    stream.name,
                    targets.len()
                ),
            ));
        }
        cast_to_targets(&items, &targets)
    };
    let rowtime = match (carry_rowtime && !star, tumble.as_ref(), &stagger) {
        (false, _, _) => String::new(),
        (true, _, Some(stagger)) => {
            format!(
                ", STAGGER_END(\"ROWTIME\", {}) AS \"ROWTIME\"",
                stagger.interval
            )
        }
        (true, Some(w), None) => format!(", TUMBLE_END({w}) AS \"ROWTIME\""),
        (true, None, None) => ", \"ROWTIME\" AS \"ROWTIME\"".to_owned(),
    };
    let rest = rewritten[from..]
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let group = match &stagger {
        Some(Stagger { keys, interval }) => {
            format!(" GROUP BY {keys}, STAGGER(\"ROWTIME\", {interval})")
        }
        None => String::new(),
    };
    Ok((
        format!("SELECT {select_list}{rowtime} {rest}{group}"),
        reads,
    ))
}

/// The top-level clause of each token of a select's body, and the streams it reads (after
/// `FROM` or `JOIN`).
fn clauses_and_reads(body: &[TokenWithSpan], pump: &str) -> Result<(Vec<Clause>, Vec<String>)> {
    let mut depth = 0i32;
    let mut clause = Clause::Select;
    let mut clauses = Vec::with_capacity(body.len());
    let mut reads = Vec::new();
    for (k, t) in body.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            clause = clause_after(&t.token).unwrap_or(clause);
        }
        if clause == Clause::From
            && matches!(t.token, Token::Word(_))
            && k > 0
            && (word_is(&body[k - 1].token, "FROM") || word_is(&body[k - 1].token, "JOIN"))
        {
            let name = ident(t)?;
            if name.eq_ignore_ascii_case("error_stream") {
                return Err(err(
                    t.span.start,
                    format!(
                        "pump {pump}: error_stream cannot be read by a pump (nor could it in \
                         Kinesis Data Analytics); its rows go to the error output, with KDA's \
                         error_stream columns"
                    ),
                ));
            }
            reads.push(name);
        }
        clauses.push(clause);
    }
    Ok((clauses, reads))
}

/// The clause a top-level keyword starts, if it starts one.
fn clause_after(t: &Token) -> Option<Clause> {
    if word_is(t, "FROM") {
        Some(Clause::From)
    } else if word_is(t, "WHERE") {
        Some(Clause::Where)
    } else if word_is(t, "GROUP") {
        Some(Clause::GroupBy)
    } else if ["HAVING", "WINDOW", "WINDOWED", "ORDER"]
        .iter()
        .any(|w| word_is(t, w))
    {
        Some(Clause::Other)
    } else {
        None
    }
}

/// The GROUP BY's window, in its canonical text, so that the same expression in the select list
/// becomes the window's start: the one on ROWTIME (KDA emits on ROWTIME); other STEP/FLOOR
/// expressions there (an event-time minute) are plain keys. Without a ROWTIME one, the first.
fn group_window(body: &[TokenWithSpan], clauses: &[Clause]) -> Result<Option<String>> {
    let group_windows: Vec<String> = window_exprs(body, clauses, Clause::GroupBy)?
        .into_iter()
        .map(|(_, _, text)| text)
        .collect();
    Ok(group_windows
        .iter()
        .find(|w| w.contains("\"ROWTIME\""))
        .or(group_windows.first())
        .cloned())
}

/// A stagger window's keys and interval, as text.
struct Stagger {
    keys: String,
    interval: String,
}

/// `WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL …)`, when the body has it: a GROUP BY
/// of the keys and a stagger window on ROWTIME. Its tokens are cleared from `rewritten`.
fn stagger_window(
    body: &[TokenWithSpan],
    clauses: &[Clause],
    rewritten: &mut [String],
) -> Result<Option<Stagger>> {
    let Some(w) =
        (0..body.len()).find(|&k| word_is(&body[k].token, "WINDOWED") && body_depth(body, k) == 0)
    else {
        return Ok(None);
    };
    let open = w + 3;
    let ok = word_is(
        &body.get(w + 1).map_or(Token::EOF, |t| t.token.clone()),
        "BY",
    ) && body
        .get(w + 2)
        .is_some_and(|t| word_is(&t.token, "STAGGER"))
        && matches!(body.get(open).map(|t| &t.token), Some(Token::LParen));
    if !ok {
        return Err(err(body[w].span.start, "expected WINDOWED BY STAGGER (…)"));
    }
    if clauses.contains(&Clause::GroupBy) {
        return Err(err(
            body[w].span.start,
            "a stagger window groups by its PARTITION BY: the statement cannot have a GROUP BY too",
        ));
    }
    let (close, direct) = inside(body, open).unwrap_or((body.len(), Vec::new()));
    let partition = direct
        .iter()
        .find(|&&j| word_is(&body[j].token, "PARTITION"))
        .map(|j| j + 2);
    let range = direct
        .iter()
        .copied()
        .find(|&j| word_is(&body[j].token, "RANGE"));
    let (true, Some(p), Some(r)) = (close < body.len(), partition, range) else {
        return Err(err(
            body[w].span.start,
            "write WINDOWED BY STAGGER (PARTITION BY keys RANGE INTERVAL 'n' unit)",
        ));
    };
    let other = vec![Clause::Other; r - p];
    let keys = rewrite(&body[p..r], &other, None)?
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let interval = rewrite_plain(&body[r + 1..close])?.join(" ");
    for t in rewritten.iter_mut().take(close + 1).skip(w) {
        t.clear();
    }
    Ok(Some(Stagger { keys, interval }))
}

/// The select list (`list`, and `rewritten`, its text) split at top-level commas: each item's
/// words.
fn select_items(list: &[TokenWithSpan], rewritten: &[String]) -> Vec<Vec<String>> {
    let mut items: Vec<Vec<String>> = vec![Vec::new()];
    let mut depth = 0i32;
    for (t, text) in list.iter().zip(rewritten) {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                items.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if !text.is_empty() {
            items.last_mut().expect("one item").push(text.clone());
        }
    }
    items
}

/// The columns a pump writes (name and type): the stream's, or those its `INSERT INTO` lists.
fn target_columns(
    stream: &StreamDecl,
    columns: Option<&[String]>,
    pump: &str,
) -> Result<Vec<(String, String)>> {
    let Some(names) = columns else {
        return Ok(stream.columns.clone());
    };
    names
        .iter()
        .map(|n| {
            stream
                .columns
                .iter()
                .find(|(c, _)| c == n)
                .cloned()
                .ok_or_else(|| {
                    Error::Sql(format!(
                        "pump {pump}: stream {} has no column {n}",
                        stream.name
                    ))
                })
        })
        .collect()
}

/// The select list with each item cast to its target column's type and named as the column.
fn cast_to_targets(items: &[Vec<String>], targets: &[(String, String)]) -> String {
    items
        .iter()
        .zip(targets)
        .map(|(item, (name, ty))| {
            let mut words = item.clone();
            // A trailing `AS alias` names the value in KDA too; the stream's column name wins.
            if words.len() > 2 && words[words.len() - 2].eq_ignore_ascii_case("AS") {
                words.truncate(words.len() - 2);
            }
            let expr = words.join(" ");
            let value = match ty.strip_prefix("VARCHAR(") {
                Some(n) => {
                    format!("LEFT(CAST({expr} AS VARCHAR), {})", n.trim_end_matches(')'))
                }
                None => format!("CAST({expr} AS {ty})"),
            };
            format!("{value} AS {}", quote(name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tumbling-window expressions in `clause`: (first token, one past the last, their text).
fn window_exprs(
    body: &[TokenWithSpan],
    clauses: &[Clause],
    clause: Clause,
) -> Result<Vec<(usize, usize, String)>> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if clauses[k] == clause {
            if let Some((end, text)) = window_at(body, k)? {
                out.push((k, end, text));
                k = end;
                continue;
            }
        }
        k += 1;
    }
    Ok(out)
}

/// When a STEP or FLOOR … TO window starts at `k`: one past its last token, and its canonical
/// form `(time expression, INTERVAL)` as text.
fn window_at(body: &[TokenWithSpan], k: usize) -> Result<Option<(usize, String)>> {
    let is_step = word_is(&body[k].token, "STEP");
    let is_floor = word_is(&body[k].token, "FLOOR");
    if !(is_step || is_floor) || !matches!(body.get(k + 1).map(|t| &t.token), Some(Token::LParen)) {
        return Ok(None);
    }
    let close = matching_paren(body, k + 1)
        .ok_or_else(|| err(body[k].span.start, "unclosed parenthesis"))?;
    let inner = &body[k + 2..close];
    // The top-level BY (STEP) or TO (FLOOR).
    let sep = if is_step { "BY" } else { "TO" };
    let mut depth = 0;
    let mut at_sep = None;
    for (j, t) in inner.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if depth == 0 && word_is(&t.token, sep) => at_sep = Some(j),
            _ => {}
        }
    }
    let Some(s) = at_sep else {
        return Ok(None); // FLOOR(x) of a number
    };
    let text = |ts: &[TokenWithSpan]| -> Result<String> { Ok(rewrite_plain(ts)?.join(" ")) };
    if is_step {
        // STEP(ts BY INTERVAL 'n' unit)
        let time = text(&inner[..s])?;
        let interval = text(&inner[s + 1..])?;
        return Ok(Some((close + 1, format!("{time}, {interval}"))));
    }
    let unit = match inner.get(s + 1).map(|t| &t.token) {
        Some(Token::Word(w)) => w.value.to_uppercase(),
        _ => return Err(err(inner[s].span.start, "FLOOR … TO needs a time unit")),
    };
    // The arithmetic form: ((ts - TIMESTAMP '1970-01-01 00:00:00') unit / n TO unit).
    let before = &inner[..s];
    if matches!(before.first().map(|t| &t.token), Some(Token::LParen)) {
        if let Some((time, per_unit, n)) = epoch_division(before) {
            let ts = text(time)?;
            return Ok(Some((
                close + 1,
                format!("{ts}, INTERVAL '{n}' {per_unit}"),
            )));
        }
    }
    let time = text(before)?;
    Ok(Some((close + 1, format!("{time}, INTERVAL '1' {unit}"))))
}

/// `(ts - TIMESTAMP '1970-01-01 00:00:00') unit / n`: the time, the unit and `n`.
fn epoch_division(t: &[TokenWithSpan]) -> Option<(&[TokenWithSpan], String, String)> {
    let close = matching_paren(t, 0)?;
    let inside = &t[1..close];
    let minus = inside
        .iter()
        .rposition(|x| matches!(x.token, Token::Minus))?;
    let epoch = &inside[minus + 1..];
    let is_epoch = matches!(
        epoch.iter().map(|x| &x.token).collect::<Vec<_>>()[..],
        [Token::Word(w), Token::SingleQuotedString(s)]
            if w.value.eq_ignore_ascii_case("TIMESTAMP")
                && matches!(s.as_str(), "1970-01-01 00:00:00" | "1970-01-01 00:00:00.000")
    );
    if !is_epoch {
        return None;
    }
    let after = &t[close + 1..];
    match after.iter().map(|x| &x.token).collect::<Vec<_>>()[..] {
        [Token::Word(unit), Token::Div, Token::Number(n, _)] => {
            Some((&inside[..minus], unit.value.to_uppercase(), n.clone()))
        }
        _ => None,
    }
}

/// A SQL `SIMILAR TO` pattern as an anchored regular expression: `%` any run, `_` any
/// character, the regex operators of SIMILAR TO (`| * + ? { } ( ) [ ]`) kept, the rest literal.
fn similar_to_regex(pattern: &str) -> String {
    let mut re = String::from("^(?:");
    for c in pattern.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            '|' | '*' | '+' | '?' | '{' | '}' | '(' | ')' | '[' | ']' => re.push(c),
            '.' | '^' | '$' | '\\' => {
                re.push('\\');
                re.push(c);
            }
            _ => re.push(c),
        }
    }
    re.push_str(")$");
    re
}

/// Tokens as text, with identifiers upper-cased and quoted per KDA's rules.
fn rewrite_plain(tokens: &[TokenWithSpan]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut skip = 0;
    // `MOD(a, b)`, which DataFusion spells `a % b`: the tokens written in its place.
    let mut replaced: HashMap<usize, &str> = HashMap::new();
    for (k, t) in tokens.iter().enumerate() {
        if word_is(&t.token, "MOD")
            && matches!(tokens.get(k + 1).map(|x| &x.token), Some(Token::LParen))
        {
            if let Some(close) = matching_paren(tokens, k + 1) {
                let comma = (k + 2..close).find(|&c| {
                    matches!(tokens[c].token, Token::Comma)
                        && body_depth(&tokens[k + 1..], c - k - 1) == 1
                });
                if let Some(comma) = comma {
                    replaced.extend([(k, ""), (k + 1, "(("), (comma, ") % ("), (close, "))")]);
                }
            }
        }
    }
    for (k, t) in tokens.iter().enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if let Some(text) = replaced.get(&k) {
            out.push((*text).to_owned());
            continue;
        }
        // `x [NOT] SIMILAR TO 'pattern'` → `x ~ '^regex$'` (DataFusion's SIMILAR TO is an
        // unanchored regex match, not SQL's). One output entry per token, as always.
        if word_is(&t.token, "SIMILAR")
            && tokens.get(k + 1).is_some_and(|x| word_is(&x.token, "TO"))
        {
            if let Some(Token::SingleQuotedString(p)) = tokens.get(k + 2).map(|x| &x.token) {
                let negated = out
                    .last()
                    .is_some_and(|w: &String| w.eq_ignore_ascii_case("NOT"));
                if negated {
                    if let Some(last) = out.last_mut() {
                        last.clear();
                    }
                }
                out.push(if negated { "!~" } else { "~" }.into());
                out.push(String::new());
                // The pattern is as written (quotes still doubled): so is the regex.
                out.push(format!("'{}'", similar_to_regex(p)));
                skip = 2;
                continue;
            }
        }
        out.push(match &t.token {
            Token::Word(w) if w.quote_style.is_some() => quote(&w.value),
            Token::Word(w) => {
                let upper = w.value.to_uppercase();
                // A word before `(` is a function, unless it names a table: `AS t(a, b)`.
                let call = matches!(tokens.get(k + 1).map(|x| &x.token), Some(Token::LParen))
                    && !(k > 0 && word_is(&tokens[k - 1].token, "AS"));
                if upper == "STREAM" && k > 0 && word_is(&tokens[k - 1].token, "SELECT") {
                    // `SELECT STREAM` in a nested query is a plain SELECT too.
                    out.push(String::new());
                    continue;
                }
                // KDA functions whose names mean something else in DataFusion, or nothing.
                let previous = k.checked_sub(1).map(|p| &tokens[p].token);
                let compared = matches!(
                    previous,
                    Some(
                        Token::Eq | Token::Neq | Token::Lt | Token::Gt | Token::LtEq | Token::GtEq
                    )
                );
                let native = match upper.as_str() {
                    "TO_TIMESTAMP" => Some("kda_to_timestamp"),
                    "EVERY" => Some("bool_and"),
                    "ANY" | "SOME" if !compared => Some("bool_or"),
                    _ => None,
                };
                if let (true, Some(native)) = (call, native) {
                    out.push(native.into());
                    continue;
                }
                if upper == "CURRENT_ROW_TIMESTAMP" && !call {
                    // The time the row is processed (read when the row is, unlike now()).
                    out.push("current_row_timestamp()".into());
                    continue;
                }
                if KEEP.contains(&upper.as_str()) || call {
                    w.value.clone()
                } else {
                    quote(&upper)
                }
            }
            other => other.to_string(),
        });
    }
    Ok(out)
}

/// KDA's sliding windows, `OVER (PARTITION BY k RANGE INTERVAL '1' MINUTE PRECEDING)` (or a named
/// `WINDOW w AS (…)`, or `ROWS n PRECEDING`), are ordered by ROWTIME implicitly and end at the
/// current row: the translation says both.
fn sliding_windows(body: &[TokenWithSpan], out: &mut [String]) {
    for (k, t) in body.iter().enumerate() {
        if !matches!(t.token, Token::LParen) || k == 0 {
            continue;
        }
        let opens_spec = word_is(&body[k - 1].token, "OVER")
            || (word_is(&body[k - 1].token, "AS")
                && k >= 3
                && (word_is(&body[k - 3].token, "WINDOW")
                    || matches!(body[k - 3].token, Token::Comma)));
        if !opens_spec {
            continue;
        }
        let (mut order, mut frame, mut preceding, mut between) = (false, None, None, false);
        for j in inside(body, k)
            .map(|(_, direct)| direct)
            .unwrap_or_default()
        {
            let x = &body[j].token;
            if word_is(x, "ORDER") {
                order = true;
            } else if word_is(x, "RANGE") || word_is(x, "ROWS") {
                frame = Some(j);
            } else if word_is(x, "BETWEEN") {
                between = true;
            } else if word_is(x, "PRECEDING") && preceding.is_none() {
                preceding = Some(j);
            }
        }
        let Some(f) = frame else { continue };
        if !order {
            out[f] = format!("ORDER BY \"ROWTIME\" {}", out[f]);
        }
        if let (false, Some(p)) = (between, preceding) {
            out[f] = format!("{} BETWEEN", out[f]);
            out[p] = "PRECEDING AND CURRENT ROW".into();
        }
    }
}

/// The statement's tokens as text: identifiers per KDA's rules, and windows translated.
fn rewrite(
    body: &[TokenWithSpan],
    clauses: &[Clause],
    tumble: Option<&str>,
) -> Result<Vec<String>> {
    let mut out = rewrite_plain(body)?;
    let mut k = 0;
    while k < body.len() {
        if let Some((end, canonical)) = window_at(body, k)? {
            let replacement = if tumble == Some(canonical.as_str()) {
                if clauses[k] == Clause::GroupBy {
                    format!("TUMBLE({canonical})")
                } else {
                    format!("TUMBLE_START({canonical})")
                }
            } else {
                // A time truncated: to one calendar unit with date_trunc (weeks, months and
                // years have no fixed length), to n units with date_bin from the epoch.
                let (time, interval) = canonical
                    .rsplit_once(", INTERVAL")
                    .map(|(a, b)| (a.to_owned(), format!("INTERVAL{b}")))
                    .unwrap_or_default();
                match interval.strip_prefix("INTERVAL '1' ") {
                    Some(unit) => format!("date_trunc('{}', {time})", unit.to_lowercase()),
                    None => {
                        format!("date_bin({interval}, {time}, TIMESTAMP '1970-01-01 00:00:00')")
                    }
                }
            };
            out[k] = replacement;
            for o in out.iter_mut().take(end).skip(k + 1) {
                o.clear();
            }
            k = end;
            continue;
        }
        k += 1;
    }
    sliding_windows(body, &mut out);
    // Tokens folded into a window's translation are empty, so that indexes still match `body`.
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_solutions_sample_application() {
        let app = translate(
            r#"
-- the sample of the streaming analytics pipeline
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (car VARCHAR(8), vehicle_count INTEGER,
  avg_temp REAL, low_temp REAL, high_temp REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
SELECT STREAM "car", COUNT(*), AVG("engine_temp"), MIN("engine_temp"), MAX("engine_temp")
FROM "SOURCE_SQL_STREAM_001"
GROUP BY "car", FLOOR(("SOURCE_SQL_STREAM_001".ROWTIME - TIMESTAMP '1970-01-01 00:00:00') SECOND / 30 TO SECOND);
"#,
        )
        .unwrap();
        assert_eq!(
            app.streams[0].columns[0],
            ("CAR".into(), "VARCHAR(8)".into())
        );
        assert_eq!(app.pumps.len(), 1);
        let sql = app.sql();
        assert!(sql.starts_with("INSERT INTO \"DESTINATION_SQL_STREAM\" SELECT LEFT(CAST(\"car\" AS VARCHAR), 8) AS \"CAR\", CAST(COUNT ( * ) AS INT) AS \"VEHICLE_COUNT\""), "{sql}");
        assert!(
            sql.contains("TUMBLE(\"SOURCE_SQL_STREAM_001\" . \"ROWTIME\", INTERVAL '30' SECOND)"),
            "{sql}"
        );
    }

    #[test]
    fn an_input_stream_of_another_prefix_is_renamed_where_it_is_read() {
        let code = "-- reads \"TRADES_001\"\nCREATE OR REPLACE STREAM s (a INTEGER);\n\
                    CREATE OR REPLACE PUMP p AS INSERT INTO s SELECT STREAM a FROM trades_001\n\
                    WHERE \"TRADES_001\".a > 'TRADES_001' AND \"trades_001\".a > 0;";
        let renamed = rename_stream(code, "TRADES_001", "SOURCE_SQL_STREAM_001").unwrap();
        assert_eq!(
            renamed,
            "-- reads \"TRADES_001\"\nCREATE OR REPLACE STREAM s (a INTEGER);\n\
             CREATE OR REPLACE PUMP p AS INSERT INTO s SELECT STREAM a FROM \"SOURCE_SQL_STREAM_001\"\n\
             WHERE \"SOURCE_SQL_STREAM_001\".a > 'TRADES_001' AND \"trades_001\".a > 0;"
        );
    }

    #[test]
    fn top_k_and_distinct_items_become_windowed_queries_and_misuse_is_located() {
        let app = translate(
            "CREATE OR REPLACE STREAM d (t VARCHAR(4), n BIGINT);\n\
             CREATE OR REPLACE PUMP p AS INSERT INTO d SELECT STREAM ITEM, ITEM_COUNT AS c \
             FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM s0 WHERE x > 1), \
             'ticker', 3, 10));",
        )
        .unwrap();
        let sql = app.sql();
        assert!(sql.contains("FROM \"S0\" WHERE \"X\" > 1"), "{sql}");
        assert!(
            sql.contains("GROUP BY \"ticker\" , TUMBLE(")
                && sql.contains("ORDER BY COUNT ( * ) DESC , \"ticker\" LIMIT 3"),
            "{sql}"
        );
        let app = translate(
            "CREATE OR REPLACE STREAM d (p DOUBLE, score DOUBLE);\n\
             CREATE OR REPLACE PUMP p AS INSERT INTO d SELECT STREAM * FROM TABLE(\
             RANDOM_CUT_FOREST(CURSOR(SELECT STREAM price FROM s0 WHERE price > 0), 50, 128, 1000, 2));",
        )
        .unwrap();
        assert!(
            app.sql().contains(
                "CAST(random_cut_forest ( 'P' , 50 , 128 , 1000 , 2 , \"PRICE\" ) AS DOUBLE) AS \"SCORE\""
            ) && app.sql().contains("WHERE \"PRICE\" > 0"),
            "{}",
            app.sql()
        );
        let app = translate(
            "CREATE OR REPLACE STREAM d (n BIGINT);\n\
             CREATE OR REPLACE PUMP p AS INSERT INTO d SELECT STREAM * FROM TABLE(\
             COUNT_DISTINCT_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM s0), 'T', 5));",
        )
        .unwrap();
        assert!(
            app.sql().contains("COUNT ( DISTINCT \"T\" )"),
            "{}",
            app.sql()
        );
        let bad = |pump: &str| {
            translate(&format!(
                "CREATE OR REPLACE STREAM d (t VARCHAR(4), n BIGINT);\n\
                 CREATE OR REPLACE PUMP p AS INSERT INTO d\n{pump};"
            ))
            .unwrap_err()
            .to_string()
        };
        let cursor = "CURSOR(SELECT STREAM * FROM s0)";
        assert!(bad("SELECT STREAM t, 1 FROM error_stream").contains("error_stream cannot be read"));
        for (pump, says) in [
            (
                format!("SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING({cursor}, 'T', 0, 60))"),
                "k is a whole number from 1 to 100000, found 0",
            ),
            (
                format!("SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING({cursor}, 'T', 2, 7200))"),
                "from 1 to 3600, found 7200",
            ),
            (
                format!("SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING({cursor}, T, 2, 60))"),
                "in single quotes",
            ),
            (
                format!("SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING({cursor}, 'T', 60))"),
                "takes 4 arguments",
            ),
            (
                format!(
                    "SELECT STREAM price FROM TABLE(TOP_K_ITEMS_TUMBLING({cursor}, 'T', 2, 60))"
                ),
                "gives the columns ITEM and ITEM_COUNT",
            ),
            (
                "SELECT STREAM * FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM s0 \
                 GROUP BY a), 'T', 2, 60))"
                    .to_owned(),
                "point the CURSOR at its stream",
            ),
            (
                "SELECT STREAM * FROM TABLE(OTHER_FN(1))".to_owned(),
                "takes TOP_K_ITEMS_TUMBLING, COUNT_DISTINCT_ITEMS_TUMBLING or RANDOM_CUT_FOREST",
            ),
            (
                format!("SELECT STREAM * FROM TABLE(RANDOM_CUT_FOREST({cursor}, 100, 5, 1000, 1))"),
                "subSampleSize is a number from 10 to 1000",
            ),
            (
                format!("SELECT STREAM * FROM TABLE(RANDOM_CUT_FOREST({cursor}, 100))"),
                "alone, or with numberOfTrees",
            ),
            (
                "SELECT STREAM * FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM a + 1 FROM s0)))"
                    .to_owned(),
                "selects plain columns",
            ),
        ] {
            let e = bad(&pump);
            assert!(e.contains("line 3") && e.contains(says), "{pump}: {e}");
        }
    }

    #[test]
    fn identifiers_follow_kdas_case_rules_and_errors_say_where() {
        let app = translate(
            "CREATE OR REPLACE STREAM out_s (ticker_symbol VARCHAR(4), \"price\" DOUBLE);\n\
             /* a filter */ CREATE OR REPLACE PUMP p AS INSERT INTO out_s \
             SELECT STREAM ticker_symbol, \"price\" FROM SOURCE_SQL_STREAM_001 WHERE change > 0;",
        )
        .unwrap();
        let sql = app.sql();
        assert!(sql.contains("INSERT INTO \"OUT_S\""), "{sql}");
        assert!(
            sql.contains("\"TICKER_SYMBOL\"") && sql.contains("\"price\""),
            "{sql}"
        );
        assert!(sql.contains("WHERE \"CHANGE\" > 0"), "{sql}");
        let e = translate("CREATE OR REPLACE STREAM s (a INTEGER);\nCREATE OR REPLACE PUMP p AS INSERT INTO t SELECT STREAM a FROM SOURCE_SQL_STREAM_001;")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("stream T"), "{e}");
        let e = translate("CREATE OR REPLACE STREAM s (a INTEGER);\nCREATE OR REPLACE PUMP p AS INSERT INTO s\n SELECT STREAM RANDOM_CUT_FOREST(a) FROM SOURCE_SQL_STREAM_001;")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("RANDOM_CUT_FOREST"),
            "{e}"
        );
        let e = translate("CREATE OR REPLACE STREAM s (a INTEGER, b INTEGER);\nCREATE OR REPLACE PUMP p AS INSERT INTO s SELECT STREAM a FROM SOURCE_SQL_STREAM_001;")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("selects 1 values") && e.contains("2 columns"),
            "{e}"
        );
        assert!(is_application(
            "create or replace pump x as insert into y select stream 1 from z"
        ));
        assert!(!is_application(
            "SELECT * FROM source -- CREATE OR REPLACE STREAM"
        ));
    }

    #[test]
    fn pumps_run_after_the_pumps_whose_streams_they_read() {
        let app = translate(
            "CREATE OR REPLACE STREAM a (x INTEGER); CREATE OR REPLACE STREAM b (x INTEGER);\n\
             CREATE OR REPLACE PUMP second AS INSERT INTO b SELECT STREAM x FROM a;\n\
             CREATE OR REPLACE PUMP first AS INSERT INTO a SELECT STREAM x FROM SOURCE_SQL_STREAM_001;",
        )
        .unwrap();
        let names: Vec<&str> = app.pumps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["FIRST", "SECOND"]);
    }
}
