//! KDA's table functions, `FROM TABLE(…(CURSOR(…), …))`: `TOP_K_ITEMS_TUMBLING`,
//! `COUNT_DISTINCT_ITEMS_TUMBLING` and `RANDOM_CUT_FOREST`, each written as the streaming query it
//! stands for.

use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use super::tokens::{body_depth, err, generated, ident, matching_paren, quote, text_of, word_is};
use crate::{Error, Result};

/// `SELECT STREAM … FROM TABLE(TOP_K_ITEMS_TUMBLING(CURSOR(SELECT STREAM * FROM s [WHERE …]),
/// 'column', k, seconds))` and `COUNT_DISTINCT_ITEMS_TUMBLING(cursor, 'column', seconds)`,
/// rewritten as the windowed query they stand for, counted exactly:
///
/// - top k: `SELECT column, COUNT(*) FROM s … GROUP BY column, STEP(s.ROWTIME BY INTERVAL
///   'seconds' SECOND) ORDER BY COUNT(*) DESC, column LIMIT k`: per window, the k values seen
///   most often, the most frequent first (ties by value); columns `ITEM` and `ITEM_COUNT`.
/// - distinct items: `SELECT COUNT(DISTINCT column) FROM s … GROUP BY STEP(…)`; column
///   `NUMBER_OF_DISTINCT_ITEMS`.
///
/// `None` when the pump's `SELECT` (`tokens`) reads no such table function.
pub(super) fn table_function(
    tokens: &[TokenWithSpan],
    pump: &str,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Option<Vec<TokenWithSpan>>> {
    let Some(from) = from_table(tokens) else {
        return Ok(None);
    };
    let call = Call::parse(tokens, from, pump)?;
    let cursor = Cursor::parse(&call)?;
    match call.function {
        TableFunction::RandomCutForest => random_cut_forest(&call, &cursor, columns_of),
        TableFunction::TopK | TableFunction::CountDistinct => {
            items_tumbling(&call, &cursor, columns_of)
        }
    }
    .map(Some)
}

/// The index of the top-level `FROM` followed by `TABLE`.
fn from_table(tokens: &[TokenWithSpan]) -> Option<usize> {
    (0..tokens.len()).find(|&k| {
        word_is(&tokens[k].token, "FROM")
            && body_depth(tokens, k) == 0
            && tokens
                .get(k + 1)
                .is_some_and(|t| word_is(&t.token, "TABLE"))
    })
}

/// The table functions a pump may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableFunction {
    TopK,
    CountDistinct,
    RandomCutForest,
}

impl TableFunction {
    fn of(token: &Token) -> Option<Self> {
        [Self::TopK, Self::RandomCutForest, Self::CountDistinct]
            .into_iter()
            .find(|f| word_is(token, f.name()))
    }

    fn name(self) -> &'static str {
        match self {
            Self::TopK => "TOP_K_ITEMS_TUMBLING",
            Self::CountDistinct => "COUNT_DISTINCT_ITEMS_TUMBLING",
            Self::RandomCutForest => "RANDOM_CUT_FOREST",
        }
    }
}

/// A pump's `SELECT … FROM TABLE(function(arguments))`.
struct Call<'a> {
    /// The pump's `SELECT`.
    tokens: &'a [TokenWithSpan],
    /// The index of its `FROM`.
    from: usize,
    /// The function's name.
    func: &'a TokenWithSpan,
    function: TableFunction,
    /// The arguments, split at top-level commas.
    args: Vec<&'a [TokenWithSpan]>,
    pump: &'a str,
}

impl<'a> Call<'a> {
    /// The call after `FROM` at `from`, its arguments counted for its function.
    fn parse(tokens: &'a [TokenWithSpan], from: usize, pump: &'a str) -> Result<Self> {
        let open = from + 2;
        let name_at = open + 1;
        let Some(func) = tokens.get(name_at) else {
            return Err(err(
                tokens[from + 1].span.end,
                "expected TABLE(function(…))",
            ));
        };
        let Some(function) = TableFunction::of(&func.token) else {
            return Err(err(
                func.span.start,
                format!(
                    "pump {pump}: FROM TABLE(…) takes TOP_K_ITEMS_TUMBLING, \
                     COUNT_DISTINCT_ITEMS_TUMBLING or RANDOM_CUT_FOREST, found `{}`",
                    func.token
                ),
            ));
        };
        let mut call = Self {
            tokens,
            from,
            func,
            function,
            args: Vec::new(),
            pump,
        };
        call.check_table_parens(open)?;
        let args_open = name_at + 1;
        let args_close = matching_paren(tokens, args_open)
            .filter(|_| matches!(tokens[args_open].token, Token::LParen))
            .ok_or_else(|| call.error("expected its arguments in parentheses".into()))?;
        call.args = split_arguments(tokens, args_open, args_close);
        call.check_arity()?;
        Ok(call)
    }

    /// `TABLE(` at `open` is closed, and nothing follows it.
    fn check_table_parens(&self, open: usize) -> Result<()> {
        let tokens = self.tokens;
        let close_table = matching_paren(tokens, open)
            .filter(|_| matches!(tokens[open].token, Token::LParen))
            .ok_or_else(|| self.error("expected TABLE( … ) around the function".into()))?;
        match tokens.get(close_table + 1) {
            Some(extra) => Err(err(
                extra.span.start,
                format!(
                    "pump {}: nothing may follow FROM TABLE({}(…)); filter in the CURSOR's \
                     query, found `{}`",
                    self.pump,
                    self.name(),
                    extra.token
                ),
            )),
            None => Ok(()),
        }
    }

    fn check_arity(&self) -> Result<()> {
        let found = self.args.len();
        match self.function {
            TableFunction::RandomCutForest if found != 1 && found != 5 => Err(self.error(format!(
                "takes CURSOR(SELECT STREAM … FROM stream) alone, or with numberOfTrees, \
                     subSampleSize, timeDecay and shingleSize; found {found} arguments",
            ))),
            TableFunction::RandomCutForest => Ok(()),
            _ if found != self.arity() => Err(self.error(format!(
                "takes {} arguments (CURSOR(SELECT STREAM * FROM stream), 'column', {}window \
                 seconds), found {found}",
                self.arity(),
                if self.function == TableFunction::TopK {
                    "k, "
                } else {
                    ""
                },
            ))),
            _ => Ok(()),
        }
    }

    /// The argument count of `TOP_K_ITEMS_TUMBLING` and `COUNT_DISTINCT_ITEMS_TUMBLING`.
    fn arity(&self) -> usize {
        if self.function == TableFunction::TopK {
            4
        } else {
            3
        }
    }

    fn name(&self) -> &'static str {
        self.function.name()
    }

    /// An error at the function's name.
    fn error(&self, msg: String) -> Error {
        self.error_at(self.func.span.start, msg)
    }

    fn error_at(&self, at: Location, msg: String) -> Error {
        err(at, format!("pump {}: {}: {msg}", self.pump, self.name()))
    }

    /// Where `item` starts (the function's name when it is empty).
    fn start_of(&self, item: &[TokenWithSpan]) -> Location {
        item.first().map_or(self.func.span.start, |t| t.span.start)
    }

    /// The outer select list, between `SELECT [STREAM]` and `FROM`.
    fn select_list(&self) -> &'a [TokenWithSpan] {
        let first = if self
            .tokens
            .get(1)
            .is_some_and(|t| word_is(&t.token, "STREAM"))
        {
            2
        } else {
            1
        };
        &self.tokens[first..self.from]
    }
}

/// The tokens between the parentheses at `open` and `close`, split at top-level commas.
fn split_arguments(tokens: &[TokenWithSpan], open: usize, close: usize) -> Vec<&[TokenWithSpan]> {
    let mut args: Vec<&[TokenWithSpan]> = Vec::new();
    let mut start = open + 1;
    let mut depth = 0;
    for k in open + 1..close {
        match tokens[k].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                args.push(&tokens[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    args.push(&tokens[start..close]);
    args
}

/// The first argument, `CURSOR(SELECT STREAM items FROM stream [WHERE …])`.
struct Cursor<'a> {
    /// The query's select items.
    list: &'a [TokenWithSpan],
    stream_tok: &'a TokenWithSpan,
    stream: String,
    /// What follows the stream: nothing or a `WHERE`.
    rest: &'a [TokenWithSpan],
}

impl<'a> Cursor<'a> {
    fn parse(call: &Call<'a>) -> Result<Self> {
        let cursor = call.args[0];
        let cursor_ok = cursor.len() > 3
            && word_is(&cursor[0].token, "CURSOR")
            && matches!(cursor[1].token, Token::LParen)
            && matching_paren(cursor, 1) == Some(cursor.len() - 1);
        if !cursor_ok {
            return Err(call.error(
                "the first argument is CURSOR(SELECT STREAM * FROM stream [WHERE …])".into(),
            ));
        }
        let inner = &cursor[2..cursor.len() - 1];
        let mut q = 0;
        if !inner.first().is_some_and(|t| word_is(&t.token, "SELECT")) {
            return Err(call.error("the CURSOR's query starts with SELECT STREAM".into()));
        }
        q += 1;
        if inner.get(q).is_some_and(|t| word_is(&t.token, "STREAM")) {
            q += 1;
        }
        let inner_from = (q..inner.len())
            .find(|&k| word_is(&inner[k].token, "FROM") && body_depth(inner, k) == 0)
            .ok_or_else(|| call.error("the CURSOR's query has no FROM".into()))?;
        let stream_tok = inner
            .get(inner_from + 1)
            .ok_or_else(|| call.error("the CURSOR's query reads no stream".into()))?;
        let stream = ident(stream_tok)?;
        let rest = &inner[inner_from + 2..];
        if !is_filter(rest) {
            return Err(err(
                rest[0].span.start,
                format!(
                    "pump {}: a CURSOR's query is SELECT STREAM … FROM stream [WHERE …]; give a \
                     larger query a pump of its own and point the CURSOR at its stream",
                    call.pump
                ),
            ));
        }
        Ok(Self {
            list: &inner[q..inner_from],
            stream_tok,
            stream,
            rest,
        })
    }
}

/// Whether `rest`, after a cursor's stream, is nothing or a plain `WHERE`.
fn is_filter(rest: &[TokenWithSpan]) -> bool {
    rest.is_empty()
        || (word_is(&rest[0].token, "WHERE")
            && !rest.iter().enumerate().any(|(k, t)| {
                body_depth(rest, k) == 0
                    && [
                        "GROUP", "WINDOW", "WINDOWED", "HAVING", "ORDER", "JOIN", "UNION",
                    ]
                    .iter()
                    .any(|w| word_is(&t.token, w))
            }))
}

/// `FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM columns FROM s [WHERE …])[, trees,
/// sample size, time decay, shingle size]))`: the cursor's columns and `ANOMALY_SCORE`, the
/// score of the row's numeric columns (see [`super::rcf`]) from a forest this pump keeps.
fn random_cut_forest(
    call: &Call<'_>,
    cursor: &Cursor<'_>,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<TokenWithSpan>> {
    let params = forest_parameters(call)?;
    let columns = cursor_columns(call, cursor, columns_of)?;
    let score = format!(
        "random_cut_forest('{}', {}, {}, {}, {}, {})",
        call.pump.replace('\'', "''"),
        params[0],
        params[1],
        params[2],
        params[3],
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let items = forest_select_items(call, &columns, &score)?;
    let sql = format!(
        "SELECT STREAM {} FROM {} {}",
        items.join(", "),
        cursor.stream_tok.token,
        text_of(cursor.rest)
    );
    generated(&sql, call.func)
}

/// The forest's parameters (trees, sample size, time decay, shingle size): KDA's defaults, or
/// the four arguments after the cursor, each in its range.
fn forest_parameters(call: &Call<'_>) -> Result<[f64; 4]> {
    let mut params = [100.0, 256.0, 100_000.0, 1.0];
    let ranges = [
        ("numberOfTrees", 1.0, 1_000.0),
        ("subSampleSize", 10.0, 1_000.0),
        ("timeDecay", 1.0, 2_147_483_647.0),
        ("shingleSize", 1.0, 30.0),
    ];
    if call.args.len() != 5 {
        return Ok(params);
    }
    for (k, ((name, lo, hi), value)) in ranges.iter().zip(params.iter_mut()).enumerate() {
        let arg = call.args[k + 1];
        let v = match arg {
            [t] => match &t.token {
                Token::Number(n, _) => n.parse::<f64>().ok(),
                _ => None,
            },
            _ => None,
        };
        match v {
            Some(v) if v >= *lo && v <= *hi && (k == 2 || v.fract() == 0.0) => *value = v,
            _ => {
                return Err(call.error_at(
                    call.start_of(arg),
                    format!("{name} is a number from {lo} to {hi}"),
                ));
            }
        }
    }
    Ok(params)
}

/// The cursor's columns: `*` (the stream's) or plain names.
fn cursor_columns(
    call: &Call<'_>,
    cursor: &Cursor<'_>,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<String>> {
    let list = cursor.list;
    let stream = &cursor.stream;
    if list.len() == 1 && matches!(list[0].token, Token::Mul) {
        return match columns_of(stream) {
            Some(columns) => Ok(columns),
            // The input's columns are known when the program is planned; before that (naming
            // the output streams) no column is needed.
            None if stream == crate::record::SOURCE_STREAM => Ok(Vec::new()),
            None => Err(call.error_at(
                list[0].span.start,
                format!("the columns of {stream} are not known: name them in the CURSOR"),
            )),
        };
    }
    list.split(|t| matches!(t.token, Token::Comma))
        .map(|item| match item {
            [t] if matches!(t.token, Token::Word(_)) => ident(t),
            _ => Err(call.error_at(
                call.start_of(item),
                "the CURSOR's query selects plain columns; compute others in a pump of \
                 their own"
                    .into(),
            )),
        })
        .collect()
}

/// The outer select list: `*`, or the cursor's columns and `ANOMALY_SCORE` by name.
fn forest_select_items(call: &Call<'_>, columns: &[String], score: &str) -> Result<Vec<String>> {
    let outer = call.select_list();
    if outer.len() == 1 && matches!(outer[0].token, Token::Mul) {
        return Ok(columns
            .iter()
            .map(|c| quote(c))
            .chain(std::iter::once(score.to_owned()))
            .collect());
    }
    outer
        .split(|t| matches!(t.token, Token::Comma))
        .map(|item| {
            let name = match item {
                [t] | [t, _, _] if matches!(t.token, Token::Word(_)) => ident(t).ok(),
                _ => None,
            };
            match name {
                Some(n) if n == "ANOMALY_SCORE" => Ok(score.to_owned()),
                Some(n) if columns.is_empty() || columns.contains(&n) => Ok(quote(&n)),
                _ => Err(call.error_at(
                    call.start_of(item),
                    format!(
                        "FROM TABLE(RANDOM_CUT_FOREST(…)) gives the CURSOR's columns ({}) \
                         and ANOMALY_SCORE",
                        columns.join(", ")
                    ),
                )),
            }
        })
        .collect()
}

/// `TOP_K_ITEMS_TUMBLING` and `COUNT_DISTINCT_ITEMS_TUMBLING` as their windowed query (see
/// [`table_function`]).
fn items_tumbling(
    call: &Call<'_>,
    cursor: &Cursor<'_>,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<TokenWithSpan>> {
    let column = item_column(call, cursor, columns_of)?;
    let k = if call.function == TableFunction::TopK {
        Some(whole_number(call, call.args[2], "k", 100_000)?)
    } else {
        None
    };
    let seconds = whole_number(
        call,
        call.args[call.arity() - 1],
        "the window size in seconds",
        3_600,
    )?;
    let col = quote(&column);
    let outputs: &[(&str, String)] = &if k.is_some() {
        vec![("ITEM", col.clone()), ("ITEM_COUNT", "COUNT(*)".to_owned())]
    } else {
        vec![("NUMBER_OF_DISTINCT_ITEMS", format!("COUNT(DISTINCT {col})"))]
    };
    let items = tumbling_select_items(call, outputs)?;
    let stream = &cursor.stream_tok.token;
    let step = format!("STEP({stream}.ROWTIME BY INTERVAL '{seconds}' SECOND)");
    let mut sql = format!(
        "SELECT STREAM {} FROM {stream} {} GROUP BY ",
        items.join(", "),
        text_of(cursor.rest)
    );
    match k {
        Some(k) => sql.push_str(&format!(
            "{col}, {step} ORDER BY COUNT(*) DESC, {col} LIMIT {k}"
        )),
        None => sql.push_str(&step),
    }
    generated(&sql, call.func)
}

/// The column, in single quotes, named as written (or as the stream spells it).
fn item_column(
    call: &Call<'_>,
    cursor: &Cursor<'_>,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<String> {
    let column = match call.args[1] {
        [t] => match &t.token {
            Token::SingleQuotedString(c) => c.replace("''", "'"),
            _ => {
                return Err(err(
                    t.span.start,
                    format!(
                        "pump {}: {} names its column in single quotes ('TICKER_SYMBOL')",
                        call.pump,
                        call.name()
                    ),
                ))
            }
        },
        _ => {
            return Err(
                call.error("the second argument is the column's name in single quotes".into())
            )
        }
    };
    Ok(columns_of(&cursor.stream)
        .and_then(|cols| {
            cols.iter()
                .find(|c| **c == column)
                .or_else(|| cols.iter().find(|c| c.eq_ignore_ascii_case(&column)))
                .cloned()
        })
        .unwrap_or(column))
}

/// The argument `arg`, a whole number from 1 to `max`.
fn whole_number(call: &Call<'_>, arg: &[TokenWithSpan], what: &str, max: u64) -> Result<u64> {
    match arg {
        [t] => match &t.token {
            Token::Number(n, _) => match n.parse::<u64>() {
                Ok(v) if (1..=max).contains(&v) => Ok(v),
                _ => Err(call.error_at(
                    t.span.start,
                    format!("{what} is a whole number from 1 to {max}, found {n}"),
                )),
            },
            other => {
                Err(call.error_at(t.span.start, format!("{what} is a number, found `{other}`")))
            }
        },
        _ => Err(call.error(format!("{what} is a number"))),
    }
}

/// The outer select list: `*` or the function's columns (`outputs`, name and expression) by
/// name.
fn tumbling_select_items(call: &Call<'_>, outputs: &[(&str, String)]) -> Result<Vec<String>> {
    let list = call.select_list();
    if list.len() == 1 && matches!(list[0].token, Token::Mul) {
        return Ok(outputs.iter().map(|(_, e)| e.clone()).collect());
    }
    list.split(|t| matches!(t.token, Token::Comma))
        .map(|item| {
            let name = match item {
                [t] | [t, _, _] => ident(t).ok(),
                _ => None,
            };
            let alias_ok = match item {
                [_] => true,
                [_, as_, _] => word_is(&as_.token, "AS"),
                _ => false,
            };
            name.filter(|_| alias_ok)
                .and_then(|n| outputs.iter().find(|(o, _)| *o == n))
                .map(|(_, e)| e.clone())
                .ok_or_else(|| {
                    err(
                        call.start_of(item),
                        format!(
                            "pump {}: FROM TABLE({}(…)) gives the columns {}; \
                             select them by name or with *",
                            call.pump,
                            call.name(),
                            outputs
                                .iter()
                                .map(|(o, _)| *o)
                                .collect::<Vec<_>>()
                                .join(" and ")
                        ),
                    )
                })
        })
        .collect()
}
