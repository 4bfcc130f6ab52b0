//! KDA's table functions, `FROM TABLE(…(CURSOR(…), …))`: `TOP_K_ITEMS_TUMBLING`,
//! `COUNT_DISTINCT_ITEMS_TUMBLING` and `RANDOM_CUT_FOREST`, each written as the streaming query it
//! stands for.

use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use super::tokens::{body_depth, err, generated, ident, matching_paren, quote, text_of, word_is};
use crate::Result;

/// `FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM columns FROM s [WHERE …])[, trees,
/// sample size, time decay, shingle size]))`: the cursor's columns and `ANOMALY_SCORE`, the
/// score of the row's numeric columns (see [`super::rcf`]) from a forest this pump keeps.
#[allow(clippy::too_many_arguments)]
pub(super) fn random_cut_forest(
    tokens: &[TokenWithSpan],
    from: usize,
    func: &TokenWithSpan,
    args: &[&[TokenWithSpan]],
    inner: &[TokenWithSpan],
    select_end: usize,
    inner_from: usize,
    stream_tok: &TokenWithSpan,
    rest: &[TokenWithSpan],
    pump: &str,
    columns_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<TokenWithSpan>> {
    let here =
        |at: Location, msg: String| err(at, format!("pump {pump}: RANDOM_CUT_FOREST: {msg}"));
    // Parameters: KDA's defaults and ranges.
    let mut params = [100.0, 256.0, 100_000.0, 1.0];
    let ranges = [
        ("numberOfTrees", 1.0, 1_000.0),
        ("subSampleSize", 10.0, 1_000.0),
        ("timeDecay", 1.0, 2_147_483_647.0),
        ("shingleSize", 1.0, 30.0),
    ];
    if args.len() == 5 {
        for (k, ((name, lo, hi), value)) in ranges.iter().zip(params.iter_mut()).enumerate() {
            let arg = args[k + 1];
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
                    let at = arg.first().map_or(func.span.start, |t| t.span.start);
                    return Err(here(at, format!("{name} is a number from {lo} to {hi}")));
                }
            }
        }
    }
    // The cursor's columns: `*` (the stream's) or plain names.
    let list = &inner[select_end..inner_from];
    let stream = ident(stream_tok)?;
    let columns: Vec<String> = if list.len() == 1 && matches!(list[0].token, Token::Mul) {
        match columns_of(&stream) {
            Some(columns) => columns,
            // The input's columns are known when the program is planned; before that (naming
            // the output streams) no column is needed.
            None if stream == crate::record::SOURCE_STREAM => Vec::new(),
            None => {
                return Err(here(
                    list[0].span.start,
                    format!("the columns of {stream} are not known: name them in the CURSOR"),
                ))
            }
        }
    } else {
        list.split(|t| matches!(t.token, Token::Comma))
            .map(|item| match item {
                [t] if matches!(t.token, Token::Word(_)) => ident(t),
                _ => Err(here(
                    item.first().map_or(func.span.start, |t| t.span.start),
                    "the CURSOR's query selects plain columns; compute others in a pump of \
                     their own"
                        .into(),
                )),
            })
            .collect::<Result<_>>()?
    };
    let call = format!(
        "random_cut_forest('{}', {}, {}, {}, {}, {})",
        pump.replace('\'', "''"),
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
    // The outer select list: `*`, or the cursor's columns and ANOMALY_SCORE by name.
    let first = if tokens.get(1).is_some_and(|t| word_is(&t.token, "STREAM")) {
        2
    } else {
        1
    };
    let outer = &tokens[first..from];
    let items: Vec<String> = if outer.len() == 1 && matches!(outer[0].token, Token::Mul) {
        columns
            .iter()
            .map(|c| quote(c))
            .chain(std::iter::once(call.clone()))
            .collect()
    } else {
        outer
            .split(|t| matches!(t.token, Token::Comma))
            .map(|item| {
                let name = match item {
                    [t] | [t, _, _] if matches!(t.token, Token::Word(_)) => ident(t).ok(),
                    _ => None,
                };
                match name {
                    Some(n) if n == "ANOMALY_SCORE" => Ok(call.clone()),
                    Some(n) if columns.is_empty() || columns.contains(&n) => Ok(quote(&n)),
                    _ => Err(here(
                        item.first().map_or(func.span.start, |t| t.span.start),
                        format!(
                            "FROM TABLE(RANDOM_CUT_FOREST(…)) gives the CURSOR's columns ({}) \
                             and ANOMALY_SCORE",
                            columns.join(", ")
                        ),
                    )),
                }
            })
            .collect::<Result<_>>()?
    };
    let sql = format!(
        "SELECT STREAM {} FROM {} {}",
        items.join(", "),
        stream_tok.token,
        text_of(rest)
    );
    generated(&sql, func)
}

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
    let Some(from) = (0..tokens.len()).find(|&k| {
        word_is(&tokens[k].token, "FROM")
            && body_depth(tokens, k) == 0
            && tokens
                .get(k + 1)
                .is_some_and(|t| word_is(&t.token, "TABLE"))
    }) else {
        return Ok(None);
    };
    let open = from + 2;
    let name_at = open + 1;
    let Some(func) = tokens.get(name_at) else {
        return Err(err(
            tokens[from + 1].span.end,
            "expected TABLE(function(…))",
        ));
    };
    let top_k = word_is(&func.token, "TOP_K_ITEMS_TUMBLING");
    let rcf = word_is(&func.token, "RANDOM_CUT_FOREST");
    if !top_k && !rcf && !word_is(&func.token, "COUNT_DISTINCT_ITEMS_TUMBLING") {
        return Err(err(
            func.span.start,
            format!(
                "pump {pump}: FROM TABLE(…) takes TOP_K_ITEMS_TUMBLING, \
                 COUNT_DISTINCT_ITEMS_TUMBLING or RANDOM_CUT_FOREST, found `{}`",
                func.token
            ),
        ));
    }
    let fname = if top_k {
        "TOP_K_ITEMS_TUMBLING"
    } else if rcf {
        "RANDOM_CUT_FOREST"
    } else {
        "COUNT_DISTINCT_ITEMS_TUMBLING"
    };
    let here = |msg: String| err(func.span.start, format!("pump {pump}: {fname}: {msg}"));
    let close_table = matching_paren(tokens, open)
        .filter(|_| matches!(tokens[open].token, Token::LParen))
        .ok_or_else(|| here("expected TABLE( … ) around the function".into()))?;
    if let Some(extra) = tokens.get(close_table + 1) {
        return Err(err(
            extra.span.start,
            format!(
                "pump {pump}: nothing may follow FROM TABLE({fname}(…)); filter in the CURSOR's \
                 query, found `{}`",
                extra.token
            ),
        ));
    }
    let args_open = name_at + 1;
    let args_close = matching_paren(tokens, args_open)
        .filter(|_| matches!(tokens[args_open].token, Token::LParen))
        .ok_or_else(|| here("expected its arguments in parentheses".into()))?;
    // Arguments, split at top-level commas.
    let mut args: Vec<&[TokenWithSpan]> = Vec::new();
    let mut start = args_open + 1;
    let mut depth = 0;
    for k in args_open + 1..args_close {
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
    args.push(&tokens[start..args_close]);
    let want = if top_k { 4 } else { 3 };
    if rcf && args.len() != 1 && args.len() != 5 {
        return Err(here(format!(
            "takes CURSOR(SELECT STREAM … FROM stream) alone, or with numberOfTrees, \
             subSampleSize, timeDecay and shingleSize; found {} arguments",
            args.len()
        )));
    }
    if !rcf && args.len() != want {
        return Err(here(format!(
            "takes {want} arguments (CURSOR(SELECT STREAM * FROM stream), 'column', {}window \
             seconds), found {}",
            if top_k { "k, " } else { "" },
            args.len()
        )));
    }
    // CURSOR(SELECT STREAM items FROM stream [WHERE …])
    let cursor = args[0];
    let cursor_ok = cursor.len() > 3
        && word_is(&cursor[0].token, "CURSOR")
        && matches!(cursor[1].token, Token::LParen)
        && matching_paren(cursor, 1) == Some(cursor.len() - 1);
    if !cursor_ok {
        return Err(here(
            "the first argument is CURSOR(SELECT STREAM * FROM stream [WHERE …])".into(),
        ));
    }
    let inner = &cursor[2..cursor.len() - 1];
    let mut q = 0;
    if !inner.first().is_some_and(|t| word_is(&t.token, "SELECT")) {
        return Err(here("the CURSOR's query starts with SELECT STREAM".into()));
    }
    q += 1;
    if inner.get(q).is_some_and(|t| word_is(&t.token, "STREAM")) {
        q += 1;
    }
    let inner_from = (q..inner.len())
        .find(|&k| word_is(&inner[k].token, "FROM") && body_depth(inner, k) == 0)
        .ok_or_else(|| here("the CURSOR's query has no FROM".into()))?;
    let stream_tok = inner
        .get(inner_from + 1)
        .ok_or_else(|| here("the CURSOR's query reads no stream".into()))?;
    let stream = ident(stream_tok)?;
    let rest = &inner[inner_from + 2..];
    let where_ok = rest.is_empty()
        || (word_is(&rest[0].token, "WHERE")
            && !rest.iter().enumerate().any(|(k, t)| {
                body_depth(rest, k) == 0
                    && [
                        "GROUP", "WINDOW", "WINDOWED", "HAVING", "ORDER", "JOIN", "UNION",
                    ]
                    .iter()
                    .any(|w| word_is(&t.token, w))
            }));
    if !where_ok {
        return Err(err(
            rest[0].span.start,
            format!(
                "pump {pump}: a CURSOR's query is SELECT STREAM … FROM stream [WHERE …]; give a \
                 larger query a pump of its own and point the CURSOR at its stream"
            ),
        ));
    }
    if rcf {
        return random_cut_forest(
            tokens, from, func, &args, inner, q, inner_from, stream_tok, rest, pump, columns_of,
        )
        .map(Some);
    }
    // The column, in single quotes, named as written (or as the stream spells it).
    let column = match args[1] {
        [t] => match &t.token {
            Token::SingleQuotedString(c) => c.replace("''", "'"),
            _ => {
                return Err(err(
                    t.span.start,
                    format!(
                        "pump {pump}: {fname} names its column in single quotes ('TICKER_SYMBOL')"
                    ),
                ))
            }
        },
        _ => {
            return Err(here(
                "the second argument is the column's name in single quotes".into(),
            ))
        }
    };
    let column = columns_of(&stream)
        .and_then(|cols| {
            cols.iter()
                .find(|c| **c == column)
                .or_else(|| cols.iter().find(|c| c.eq_ignore_ascii_case(&column)))
                .cloned()
        })
        .unwrap_or(column);
    let number = |arg: &[TokenWithSpan], what: &str, max: u64| -> Result<u64> {
        match arg {
            [t] => match &t.token {
                Token::Number(n, _) => match n.parse::<u64>() {
                    Ok(v) if (1..=max).contains(&v) => Ok(v),
                    _ => Err(err(
                        t.span.start,
                        format!("pump {pump}: {fname}: {what} is a whole number from 1 to {max}, found {n}"),
                    )),
                },
                other => Err(err(
                    t.span.start,
                    format!("pump {pump}: {fname}: {what} is a number, found `{other}`"),
                )),
            },
            _ => Err(here(format!("{what} is a number"))),
        }
    };
    let k = if top_k {
        Some(number(args[2], "k", 100_000)?)
    } else {
        None
    };
    let seconds = number(args[want - 1], "the window size in seconds", 3_600)?;
    // The outer select list: `*` or the function's columns by name.
    let col = quote(&column);
    let outputs: &[(&str, String)] = &if top_k {
        vec![("ITEM", col.clone()), ("ITEM_COUNT", "COUNT(*)".to_owned())]
    } else {
        vec![("NUMBER_OF_DISTINCT_ITEMS", format!("COUNT(DISTINCT {col})"))]
    };
    let mut first = 1;
    if tokens.get(1).is_some_and(|t| word_is(&t.token, "STREAM")) {
        first = 2;
    }
    let list = &tokens[first..from];
    let items: Vec<String> = if list.len() == 1 && matches!(list[0].token, Token::Mul) {
        outputs.iter().map(|(_, e)| e.clone()).collect()
    } else {
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
                            item.first().map_or(func.span.start, |t| t.span.start),
                            format!(
                                "pump {pump}: FROM TABLE({fname}(…)) gives the columns {}; \
                                 select them by name or with *",
                                outputs
                                    .iter()
                                    .map(|(o, _)| *o)
                                    .collect::<Vec<_>>()
                                    .join(" and ")
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    let step = format!(
        "STEP({}.ROWTIME BY INTERVAL '{seconds}' SECOND)",
        stream_tok.token
    );
    let mut sql = format!(
        "SELECT STREAM {} FROM {} {} GROUP BY ",
        items.join(", "),
        stream_tok.token,
        text_of(rest)
    );
    match k {
        Some(k) => sql.push_str(&format!(
            "{col}, {step} ORDER BY COUNT(*) DESC, {col} LIMIT {k}"
        )),
        None => sql.push_str(&step),
    }
    generated(&sql, func).map(Some)
}
