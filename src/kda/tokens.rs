//! The token toolkit of the translator: significant tokens of a text (comments and spaces
//! dropped), identifiers by KDA's case rule, parentheses, errors located at a token.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::{Error, Result};

/// Text of tokens, as SQL again (literals and quoted names as written).
pub(super) fn text_of(tokens: &[TokenWithSpan]) -> String {
    tokens
        .iter()
        .map(|t| t.token.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tokens of SQL written in place of the call at `at`, all placed at the call, so that an
/// error in them points at what the application wrote.
pub(super) fn generated(sql: &str, at: &TokenWithSpan) -> Result<Vec<TokenWithSpan>> {
    let mut out = significant(sql)?;
    for t in &mut out {
        t.span = at.span;
    }
    Ok(out)
}

pub(super) fn word_is(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
}

pub(super) fn at(loc: Location) -> String {
    format!("line {}, column {}", loc.line, loc.column)
}

pub(super) fn err(loc: Location, msg: impl std::fmt::Display) -> Error {
    Error::Sql(format!("KDA application code, {}: {msg}", at(loc)))
}

/// The tokens that matter (no whitespace or comments).
pub(super) fn significant(sql: &str) -> Result<Vec<TokenWithSpan>> {
    // Literals kept as written (`'it''s'` stays doubled when printed back).
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|e| Error::Sql(format!("KDA application code: {e}")))?;
    Ok(tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect())
}

/// An identifier as KDA reads it: quoted as written, unquoted upper-cased.
pub(super) fn ident(t: &TokenWithSpan) -> Result<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_some() => Ok(w.value.clone()),
        Token::Word(w) => Ok(w.value.to_uppercase()),
        other => Err(err(
            t.span.start,
            format!("expected a name, found `{other}`"),
        )),
    }
}

pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The index of the parenthesis closing the one at `open`.
pub(super) fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The parenthesis at `open`: the index of the one closing it, and the indexes of the tokens
/// directly inside it (not in parentheses nested in it).
pub(super) fn inside(tokens: &[TokenWithSpan], open: usize) -> Option<(usize, Vec<usize>)> {
    let close = matching_paren(tokens, open)?;
    let mut depth = 0;
    let mut direct = Vec::new();
    for (j, t) in tokens.iter().enumerate().take(close).skip(open + 1) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ if depth == 0 => direct.push(j),
            _ => {}
        }
    }
    Some((close, direct))
}

/// Parenthesis depth at token `k`.
pub(super) fn body_depth(body: &[TokenWithSpan], k: usize) -> i32 {
    body[..k].iter().fold(0, |d, t| match t.token {
        Token::LParen => d + 1,
        Token::RParen => d - 1,
        _ => d,
    })
}
