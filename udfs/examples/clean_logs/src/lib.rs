//! Cleans JSON log records before rivulet decodes them, as a rivulet WASM record transform:
//!
//! - a record whose `"level"` is `"debug"` or `"trace"` is **dropped**;
//! - the values of `"password"`, `"token"` and `"secret"` members are **redacted** to `"***"`;
//! - a record that is not a JSON object (does not start with `{`) **fails**, and goes to the
//!   pipeline's error output with the reason;
//! - anything else passes **unchanged** (nothing is copied back to the host).
//!
//! ```toml
//! transform = "clean_logs"
//!
//! [[udfs]]
//! path = "udfs/build/clean_logs.wasm"
//! ```
//!
//! The scan is textual (member names followed by `:` and a string), which is what log records
//! written by a logging library look like; it does not parse nested JSON.

use rivulet_udf::Transformed;

/// Members whose string values are redacted.
const SECRETS: [&str; 3] = ["password", "token", "secret"];

/// Applies the rules above to one record.
pub fn clean_logs(record: &[u8]) -> Transformed {
    let Ok(text) = std::str::from_utf8(record) else {
        return Transformed::Failed("the record is not UTF-8 text".into());
    };
    if !text.trim_start().starts_with('{') {
        return Transformed::Failed("the record is not a JSON object".into());
    }
    if let Some((_, level)) = string_member(text, "level") {
        if level.eq_ignore_ascii_case("debug") || level.eq_ignore_ascii_case("trace") {
            return Transformed::Dropped;
        }
    }
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    loop {
        let next = SECRETS
            .iter()
            .filter_map(|name| string_member(rest, name))
            .min_by_key(|(range, _)| range.start);
        let Some((range, _)) = next else { break };
        out.push_str(&rest[..range.start]);
        out.push_str("***");
        rest = &rest[range.end..];
        changed = true;
    }
    if !changed {
        return Transformed::Unchanged;
    }
    out.push_str(rest);
    Transformed::Ok(out.into_bytes())
}

/// The first `"name": "value"` member of `text`: the byte range of the value (inside the quotes)
/// and the value.
fn string_member<'a>(text: &'a str, name: &str) -> Option<(std::ops::Range<usize>, &'a str)> {
    let key = format!("\"{name}\"");
    let mut from = 0;
    while let Some(found) = text[from..].find(&key) {
        let after_key = from + found + key.len();
        let rest = &text[after_key..];
        let trimmed = rest.trim_start();
        if let Some(value) = trimmed.strip_prefix(':') {
            let value = value.trim_start();
            if let Some(body) = value.strip_prefix('"') {
                let start = text.len() - body.len();
                let mut escaped = false;
                for (i, c) in body.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => return Some((start..start + i, &body[..i])),
                        _ => escaped = false,
                    }
                }
                return None;
            }
        }
        from = after_key;
    }
    None
}

rivulet_udf::export! {
    transform clean_logs;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_redacts_fails_and_passes() {
        assert_eq!(
            clean_logs(br#"{"level": "debug", "msg": "x"}"#),
            Transformed::Dropped
        );
        assert_eq!(
            clean_logs(br#"{"level":"info","user":"a","password":"hunter2","token" : "t\"k"}"#),
            Transformed::Ok(
                br#"{"level":"info","user":"a","password":"***","token" : "***"}"#.to_vec()
            )
        );
        assert_eq!(
            clean_logs(br#"{"level":"warn","msg":"password reset"}"#),
            Transformed::Unchanged
        );
        assert!(matches!(clean_logs(b"plain text"), Transformed::Failed(_)));
        assert!(matches!(clean_logs(b"\xff{"), Transformed::Failed(_)));
        assert!(matches!(clean_logs(b""), Transformed::Failed(_)));
    }
}
