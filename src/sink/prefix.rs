//! Object key prefixes with Firehose's expressions.
//!
//! Supported, as Firehose writes them:
//! - `!{timestamp:FORMAT}`: a time, formatted with the Java pattern letters `yyyy`, `yy`, `MM`,
//!   `dd`, `HH`, `mm`, `ss` (other characters are copied; text in single quotes is literal);
//! - `!{partitionKeyFromQuery:NAME}`: the value of output column `NAME` (dynamic partitioning;
//!   `!{partitionKeyFromLambda:NAME}` is accepted as the same);
//! - `!{firehose:random-string}`: 11 characters, derived from the object's checkpoint range and
//!   number, so that a replay produces the same key.
//!
//! A prefix without a `timestamp` expression gets `yyyy/MM/dd/HH/` appended, as Firehose does.
//!
//! Partition values are percent-encoded (RFC 3986) before they enter a key: letters, digits and
//! `-`, `_`, `.`, `~` stay as they are; every other byte of the value's UTF-8 text, `/` and `%`
//! included, becomes `%XX` (upper-case hex); the values `.` and `..` become `%2E` and `%2E%2E`.
//! Distinct values thus give distinct keys (`a/b` is `a%2Fb`, `/home` is `%2Fhome`), a value
//! never adds a path segment, and Hive-style readers (Athena, Glue, Spark) decode the value back.

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A chrono format string.
    Time(String),
    Column(String),
    Random,
}

/// A parsed key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPrefix {
    parts: Vec<Part>,
}

/// The default time part: `yyyy/MM/dd/HH/`.
const DEFAULT_TIME: &str = "%Y/%m/%d/%H/";

impl KeyPrefix {
    /// Parses `text`; `key` names the setting in errors.
    pub(crate) fn parse(text: &str, key: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("!{") {
            if at > 0 {
                parts.push(Part::Literal(rest[..at].to_owned()));
            }
            let after = &rest[at + 2..];
            let end = after.find('}').ok_or_else(|| {
                Error::config(key, format!("unclosed expression `!{{{after}` in `{text}`"))
            })?;
            let expr = &after[..end];
            let (ns, arg) = expr.split_once(':').unwrap_or((expr, ""));
            let part = match (ns.trim(), arg.trim()) {
                ("timestamp", fmt) => Part::Time(java_to_chrono(fmt, key)?),
                ("partitionKeyFromQuery" | "partitionKeyFromLambda", name) if !name.is_empty() => {
                    Part::Column(name.to_owned())
                }
                ("firehose", "random-string") => Part::Random,
                _ => {
                    return Err(Error::config(
                        key,
                        format!(
                        "unsupported expression `!{{{expr}}}`: use `!{{timestamp:yyyy/MM/dd}}`, \
                             `!{{partitionKeyFromQuery:column}}` or `!{{firehose:random-string}}`"
                    ),
                    ))
                }
            };
            parts.push(part);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Time(_))) {
            parts.push(Part::Time(DEFAULT_TIME.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The columns whose values the prefix holds, in order.
    pub(crate) fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// Renders the prefix: `time_ms` for timestamps, `values` for the columns (in the order of
    /// [`columns`](Self::columns)), `seed` for the random string.
    pub(crate) fn render(&self, time_ms: i64, values: &[&str], seed: u64) -> String {
        let time = chrono::DateTime::from_timestamp_millis(time_ms).unwrap_or_default();
        let mut out = String::new();
        let mut values = values.iter();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Time(f) => out.push_str(&time.format(f).to_string()),
                Part::Column(_) => encode_value(values.next().copied().unwrap_or(""), &mut out),
                Part::Random => out.push_str(&random_string(seed)),
            }
        }
        out
    }
}

/// Appends `value` percent-encoded (see the module docs) to `out`.
pub(crate) fn encode_value(value: &str, out: &mut String) {
    if value == "." || value == ".." {
        out.push_str(&"%2E".repeat(value.len()));
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// 11 characters from `[a-z0-9]`, a function of `seed`.
fn random_string(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..11)
        .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
        .collect()
}

/// Converts a Java `DateTimeFormatter` pattern (the letters Firehose documents) to chrono's.
fn java_to_chrono(pattern: &str, key: &str) -> Result<String> {
    if pattern.is_empty() {
        return Err(Error::config(
            key,
            "`!{timestamp:…}` needs a pattern, e.g. `!{timestamp:yyyy/MM/dd}`",
        ));
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let close = chars[i + 1..]
                .iter()
                .position(|&q| q == '\'')
                .ok_or_else(|| Error::config(key, format!("unclosed quote in `{pattern}`")))?;
            for &q in &chars[i + 1..i + 1 + close] {
                push_literal(&mut out, q);
            }
            i += close + 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let spec = match (c, run) {
            ('y', 4) => "%Y",
            ('y', 2) => "%y",
            ('M', 2) => "%m",
            ('d', 2) => "%d",
            ('H', 2) => "%H",
            ('m', 2) => "%M",
            ('s', 2) => "%S",
            _ => {
                return Err(Error::config(
                    key,
                    format!(
                        "unsupported pattern `{}` in `{pattern}`: use yyyy, yy, MM, dd, HH, mm, ss",
                        c.to_string().repeat(run)
                    ),
                ))
            }
        };
        out.push_str(spec);
        i += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-28T03:04:05Z
    const T: i64 = 1_795_835_045_000;

    #[test]
    fn firehose_expressions_render() {
        let p = KeyPrefix::parse(
            "data/!{partitionKeyFromQuery:sector}/!{timestamp:yyyy-MM-dd'T'HH}/",
            "k",
        )
        .unwrap();
        assert_eq!(p.columns().collect::<Vec<_>>(), ["sector"]);
        assert_eq!(p.render(T, &["TECH"], 0), "data/TECH/2026-11-28T03/");
    }

    #[test]
    fn distinct_partition_values_render_distinct_prefixes() {
        let p = KeyPrefix::parse("data/!{partitionKeyFromQuery:path}/", "k").unwrap();
        let values = [
            "home", "/home", "home/", "a//b", "a/b", "a%2Fb", ".", "..", "a b", "ü", "a+b",
        ];
        let rendered: Vec<String> = values.iter().map(|v| p.render(T, &[v], 0)).collect();
        let distinct: std::collections::HashSet<&String> = rendered.iter().collect();
        assert_eq!(distinct.len(), values.len(), "{rendered:?}");
        for r in &rendered {
            let segments: Vec<&str> = r.split('/').collect();
            assert_eq!(segments.len(), 7, "a value adds no path segment: {r}");
            assert!(
                segments[..6]
                    .iter()
                    .all(|s| !s.is_empty() && *s != "." && *s != ".."),
                "{r}"
            );
        }
        assert_eq!(rendered[0], "data/home/2026/11/28/03/");
        assert_eq!(rendered[1], "data/%2Fhome/2026/11/28/03/");
        assert_eq!(rendered[4], "data/a%2Fb/2026/11/28/03/");
        assert_eq!(rendered[5], "data/a%252Fb/2026/11/28/03/");
        assert_eq!(rendered[7], "data/%2E%2E/2026/11/28/03/");
        assert_eq!(rendered[9], "data/%C3%BC/2026/11/28/03/");
    }

    #[test]
    fn a_prefix_without_time_gets_firehose_default() {
        let p = KeyPrefix::parse("AggregatedData/", "k").unwrap();
        assert_eq!(p.render(T, &[], 0), "AggregatedData/2026/11/28/03/");
        assert_eq!(
            KeyPrefix::parse("", "k").unwrap().render(T, &[], 0),
            "2026/11/28/03/"
        );
    }

    #[test]
    fn random_string_is_stable_per_seed() {
        let p = KeyPrefix::parse("!{firehose:random-string}/!{timestamp:yyyy}/", "k").unwrap();
        let a = p.render(T, &[], 7);
        assert_eq!(a, p.render(T, &[], 7));
        assert_ne!(a, p.render(T, &[], 8));
        assert_eq!(a.len(), "xxxxxxxxxxx/2026/".len());
    }

    #[test]
    fn bad_expressions_name_the_setting() {
        for bad in [
            "!{timestamp:yyyy/QQ}",
            "!{firehose:error-output-type}",
            "a/!{timestamp:yyyy",
        ] {
            let err = KeyPrefix::parse(bad, "sinks[0].prefix")
                .unwrap_err()
                .to_string();
            assert!(err.contains("sinks[0].prefix"), "{err}");
        }
    }
}
