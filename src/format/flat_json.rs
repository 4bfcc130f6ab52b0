//! A fast decoder for the common shape of streaming JSON: one flat object per record, columns of
//! text, integers, floats and booleans.
//!
//! It reads each record once, straight into Arrow builders, skipping members no column asks for.
//! It accepts only input whose meaning is unambiguous; on anything else (a string in a numeric
//! column, a fraction in an integer column, a duplicate member, malformed JSON, …) it gives up on
//! the whole batch, and the general decoder (arrow-json) decodes it instead, with its own rules
//! and per-record error isolation. So it never changes what a batch decodes to, only how fast.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};

use crate::record::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Utf8,
    Int64,
    Int32,
    Float64,
    Float32,
    Boolean,
}

enum Column {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Float64(Float64Builder),
    Float32(Float32Builder),
    Boolean(BooleanBuilder),
}

impl Column {
    fn new(kind: Kind, rows: usize) -> Self {
        match kind {
            Kind::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, rows * 8)),
            Kind::Int64 => Column::Int64(Int64Builder::with_capacity(rows)),
            Kind::Int32 => Column::Int32(Int32Builder::with_capacity(rows)),
            Kind::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
            Kind::Float32 => Column::Float32(Float32Builder::with_capacity(rows)),
            Kind::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Utf8(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Boolean(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Utf8(mut b) => Arc::new(b.finish()),
            Column::Int64(mut b) => Arc::new(b.finish()),
            Column::Int32(mut b) => Arc::new(b.finish()),
            Column::Float64(mut b) => Arc::new(b.finish()),
            Column::Float32(mut b) => Arc::new(b.finish()),
            Column::Boolean(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The fast flat-object decoder for one schema.
#[derive(Debug)]
pub(crate) struct FlatJsonDecoder {
    schema: SchemaRef,
    names: Vec<Box<[u8]>>,
    kinds: Vec<Kind>,
}

/// Gave up: the general decoder must handle this batch.
pub(crate) struct Unsupported;

type Step<T> = Result<T, Unsupported>;

impl FlatJsonDecoder {
    /// A decoder for `schema`, when every column has a type it handles.
    pub(crate) fn new(schema: &SchemaRef) -> Option<Self> {
        let kinds = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Some(Kind::Utf8),
                DataType::Int64 => Some(Kind::Int64),
                DataType::Int32 => Some(Kind::Int32),
                DataType::Float64 => Some(Kind::Float64),
                DataType::Float32 => Some(Kind::Float32),
                DataType::Boolean => Some(Kind::Boolean),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        if kinds.is_empty() {
            return None;
        }
        Some(Self {
            schema: Arc::clone(schema),
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().into())
                .collect(),
            kinds,
        })
    }

    /// Decodes the records at `indexes`, one row each, or gives up.
    pub(crate) fn decode(&self, records: &[Record], indexes: &[usize]) -> Step<RecordBatch> {
        let rows = indexes.len();
        let mut columns: Vec<Column> = self.kinds.iter().map(|&k| Column::new(k, rows)).collect();
        let mut seen = vec![false; self.kinds.len()];
        let mut scratch = String::new();
        let mut members = MemberCache::default();
        for &i in indexes {
            seen.iter_mut().for_each(|s| *s = false);
            self.record(
                records[i].payload(),
                &mut columns,
                &mut seen,
                &mut scratch,
                &mut members,
            )?;
            for (c, s) in columns.iter_mut().zip(&seen) {
                if !s {
                    c.append_null();
                }
            }
        }
        let arrays: Vec<ArrayRef> = columns.into_iter().map(Column::finish).collect();
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|_| Unsupported)
    }

    fn record(
        &self,
        buf: &[u8],
        columns: &mut [Column],
        seen: &mut [bool],
        scratch: &mut String,
        members: &mut MemberCache,
    ) -> Step<()> {
        // Validated once: every value below is a slice of `text` cut at ASCII delimiters.
        let text = if buf.is_ascii() {
            // SAFETY: ASCII bytes are valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(buf) }
        } else {
            std::str::from_utf8(buf).map_err(|_| Unsupported)?
        };
        let mut p = skip_ws(buf, 0);
        expect(buf, p, b'{')?;
        p = skip_ws(buf, p + 1);
        let mut ordinal = 0usize;
        if buf.get(p) == Some(&b'}') {
            p += 1;
        } else {
            loop {
                expect(buf, p, b'"')?;
                let (column, after) = members.column(ordinal, buf, p + 1, &self.names)?;
                p = skip_ws(buf, after);
                expect(buf, p, b':')?;
                p = skip_ws(buf, p + 1);
                ordinal += 1;
                p = match column {
                    Some(c) => {
                        if seen[c] {
                            return Err(Unsupported); // duplicate member
                        }
                        seen[c] = true;
                        value(text, p, &mut columns[c], scratch)?
                    }
                    None => skip_value(text, p, 0)?,
                };
                p = skip_ws(buf, p);
                match buf.get(p) {
                    Some(b',') => p = skip_ws(buf, p + 1),
                    Some(b'}') => {
                        p += 1;
                        break;
                    }
                    _ => return Err(Unsupported),
                }
            }
        }
        if skip_ws(buf, p) == buf.len() {
            Ok(())
        } else {
            Err(Unsupported)
        }
    }
}

/// Which column the n-th member of the last record went to: records of a stream usually have
/// their members in the same order, so one comparison at the member's position finds the column
/// (or that there is none) without scanning for the name's end first.
#[derive(Default)]
struct MemberCache {
    slots: Vec<(Box<[u8]>, Option<usize>)>,
}

impl MemberCache {
    /// The column of the member whose name starts at `start` (after its opening quote), and the
    /// position after the name's closing quote.
    #[inline]
    fn column(
        &mut self,
        ordinal: usize,
        buf: &[u8],
        start: usize,
        names: &[Box<[u8]>],
    ) -> Step<(Option<usize>, usize)> {
        if let Some((cached, column)) = self.slots.get(ordinal) {
            // A cached name holds no quote or backslash, so a match followed by a quote is the
            // whole name.
            let end = start + cached.len();
            if buf.get(end) == Some(&b'"') && buf[start..end] == **cached {
                return Ok((*column, end + 1));
            }
        }
        let (key, after) = plain_string(buf, start)?;
        let column = names.iter().position(|n| **n == *key);
        if ordinal < self.slots.len() {
            self.slots[ordinal] = (key.into(), column);
        } else if ordinal == self.slots.len() && ordinal < 256 {
            self.slots.push((key.into(), column));
        }
        Ok((column, after))
    }
}

fn skip_ws(buf: &[u8], mut p: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(p) {
        p += 1;
    }
    p
}

fn expect(buf: &[u8], p: usize, c: u8) -> Step<()> {
    if buf.get(p) == Some(&c) {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

/// Position of the first quote, backslash or control character at or after `p`, eight bytes at
/// a time (strings in records are short: a word at a time beats a vectorised search's set-up).
#[inline]
fn string_end(buf: &[u8], mut p: usize) -> Step<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = buf.get(p..p + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // The high bit of a byte is set where the byte is a quote, a backslash or below 0x20; bytes of
        // 0x80 and above never match (they are masked out by `!w`). A borrow can set bits above
        // a real hit, never below one, so the lowest bit set is the first hit.
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let hits =
            (quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES) | w.wrapping_sub(ONES * 0x20))
                & !w
                & HIGH;
        if hits != 0 {
            return Ok(p + (hits.trailing_zeros() / 8) as usize);
        }
        p += 8;
    }
    while let Some(&b) = buf.get(p) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return Ok(p);
        }
        p += 1;
    }
    Err(Unsupported)
}

/// A string without escapes starting after its opening quote: the bytes and the position after
/// the closing quote.
fn plain_string(buf: &[u8], start: usize) -> Step<(&[u8], usize)> {
    let end = string_end(buf, start)?;
    if buf[end] != b'"' {
        return Err(Unsupported);
    }
    Ok((&buf[start..end], end + 1))
}

fn hex4(buf: &[u8], p: usize) -> Step<u32> {
    let digits = buf.get(p..p + 4).ok_or(Unsupported)?;
    let text = std::str::from_utf8(digits).map_err(|_| Unsupported)?;
    u32::from_str_radix(text, 16).map_err(|_| Unsupported)
}

/// A string starting after its opening quote, escapes decoded into `out`; returns the position
/// after the closing quote.
fn escaped_string(buf: &[u8], start: usize, out: &mut String) -> Step<usize> {
    out.clear();
    let mut p = start;
    loop {
        let rest = &buf[p..];
        let at = memchr::memchr2(b'"', b'\\', rest).ok_or(Unsupported)?;
        let chunk = std::str::from_utf8(&rest[..at]).map_err(|_| Unsupported)?;
        if chunk.bytes().any(|b| b < 0x20) {
            return Err(Unsupported); // control characters must be escaped
        }
        out.push_str(chunk);
        p += at;
        if buf[p] == b'"' {
            return Ok(p + 1);
        }
        let c = *buf.get(p + 1).ok_or(Unsupported)?;
        p += 2;
        match c {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = hex4(buf, p)?;
                p += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if buf.get(p..p + 2) != Some(b"\\u") {
                        return Err(Unsupported);
                    }
                    let lo = hex4(buf, p + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(Unsupported);
                    }
                    p += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                out.push(char::from_u32(code).ok_or(Unsupported)?);
            }
            _ => return Err(Unsupported),
        }
    }
}

/// A JSON number as scanned: its text, and its digits as an integer where that is exact.
struct Number<'a> {
    text: &'a str,
    end: usize,
    /// No fraction and no exponent.
    integer: bool,
    negative: bool,
    /// The digits without the point, when there are at most 19 of them and no exponent.
    mantissa: Option<u64>,
    /// Digits after the point.
    fraction_digits: usize,
}

impl Number<'_> {
    /// The value as an `f64`, exactly as `str::parse` rounds it: a mantissa below 2^53 divided by
    /// an exact power of ten is one correctly rounded operation (the fast path of every decimal
    /// parser); anything else goes to the full parser.
    #[inline]
    fn f64(&self) -> Step<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        match self.mantissa {
            Some(m) if m < 1 << 53 && self.fraction_digits < POW10.len() => {
                let v = m as f64 / POW10[self.fraction_digits];
                Ok(if self.negative { -v } else { v })
            }
            _ => self.text.parse().map_err(|_| Unsupported),
        }
    }

    /// The value as an `f32`, by the same reasoning with a mantissa below 2^24.
    #[inline]
    fn f32(&self) -> Step<f32> {
        const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
        match self.mantissa {
            Some(m) if m < 1 << 24 && self.fraction_digits < POW10.len() => {
                let v = m as f32 / POW10[self.fraction_digits];
                Ok(if self.negative { -v } else { v })
            }
            _ => self.text.parse().map_err(|_| Unsupported),
        }
    }

    /// The value of an integer, `None` when it is not one; out of range fails.
    #[inline]
    fn i64(&self) -> Step<i64> {
        if !self.integer {
            return Err(Unsupported);
        }
        match self.mantissa {
            // 18 digits or fewer always fit.
            Some(m) if m < 1_000_000_000_000_000_000 => {
                let v = m as i64;
                Ok(if self.negative { -v } else { v })
            }
            _ => self.text.parse().map_err(|_| Unsupported),
        }
    }
}

/// A JSON number starting at `p`, validated against the JSON grammar.
#[inline]
fn number(text: &str, mut p: usize) -> Step<Number<'_>> {
    let buf = text.as_bytes();
    let start = p;
    let negative = buf.get(p) == Some(&b'-');
    if negative {
        p += 1;
    }
    let mut mantissa = 0u64;
    let mut count = 0usize;
    let mut digits = |buf: &[u8], mut p: usize| {
        let s = p;
        while let Some(&c) = buf.get(p) {
            if !c.is_ascii_digit() {
                break;
            }
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            p += 1;
        }
        count += p - s;
        (p, p - s)
    };
    let (q, n) = digits(buf, p);
    if n == 0 || (n > 1 && buf[p] == b'0') {
        return Err(Unsupported);
    }
    p = q;
    let mut integer = true;
    let mut fraction_digits = 0;
    if buf.get(p) == Some(&b'.') {
        let (q, n) = digits(buf, p + 1);
        if n == 0 {
            return Err(Unsupported);
        }
        p = q;
        integer = false;
        fraction_digits = n;
    }
    let mut exponent = false;
    if let Some(b'e' | b'E') = buf.get(p) {
        p += 1;
        if let Some(b'+' | b'-') = buf.get(p) {
            p += 1;
        }
        let s = p;
        while buf.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        if p == s {
            return Err(Unsupported);
        }
        integer = false;
        exponent = true;
    }
    Ok(Number {
        // ASCII by construction, so cut at character boundaries.
        text: &text[start..p],
        end: p,
        integer,
        negative,
        mantissa: (count <= 19 && !exponent).then_some(mantissa),
        fraction_digits,
    })
}

fn literal(buf: &[u8], p: usize, word: &[u8]) -> Step<usize> {
    if buf.get(p..p + word.len()) == Some(word) {
        Ok(p + word.len())
    } else {
        Err(Unsupported)
    }
}

/// Decodes one member's value into its column; returns the position after it.
fn value(text: &str, p: usize, column: &mut Column, scratch: &mut String) -> Step<usize> {
    let buf = text.as_bytes();
    let c = *buf.get(p).ok_or(Unsupported)?;
    if c == b'n' {
        let end = literal(buf, p, b"null")?;
        column.append_null();
        return Ok(end);
    }
    match column {
        Column::Utf8(b) => match c {
            b'"' => {
                let at = string_end(buf, p + 1)?;
                if buf[at] == b'"' {
                    b.append_value(&text[p + 1..at]);
                    Ok(at + 1)
                } else if buf[at] < 0x20 {
                    Err(Unsupported) // control characters must be escaped
                } else {
                    let end = escaped_string(buf, p + 1, scratch)?;
                    b.append_value(scratch.as_str());
                    Ok(end)
                }
            }
            // A number or boolean in a text column keeps its text, as the general decoder does.
            b't' => {
                let end = literal(buf, p, b"true")?;
                b.append_value("true");
                Ok(end)
            }
            b'f' => {
                let end = literal(buf, p, b"false")?;
                b.append_value("false");
                Ok(end)
            }
            b'-' | b'0'..=b'9' => {
                let n = number(text, p)?;
                b.append_value(n.text);
                Ok(n.end)
            }
            _ => Err(Unsupported),
        },
        Column::Int64(b) => {
            let n = number(text, p)?;
            b.append_value(n.i64()?);
            Ok(n.end)
        }
        Column::Int32(b) => {
            let n = number(text, p)?;
            b.append_value(n.i64()?.try_into().map_err(|_| Unsupported)?);
            Ok(n.end)
        }
        Column::Float64(b) => {
            let n = number(text, p)?;
            let v = n.f64()?;
            if !v.is_finite() {
                return Err(Unsupported);
            }
            b.append_value(v);
            Ok(n.end)
        }
        Column::Float32(b) => {
            let n = number(text, p)?;
            let v = n.f32()?;
            if !v.is_finite() {
                return Err(Unsupported);
            }
            b.append_value(v);
            Ok(n.end)
        }
        Column::Boolean(b) => match c {
            b't' => {
                let end = literal(buf, p, b"true")?;
                b.append_value(true);
                Ok(end)
            }
            b'f' => {
                let end = literal(buf, p, b"false")?;
                b.append_value(false);
                Ok(end)
            }
            _ => Err(Unsupported),
        },
    }
}

/// Skips any JSON value a column does not ask for; returns the position after it.
fn skip_value(text: &str, p: usize, depth: usize) -> Step<usize> {
    let buf = text.as_bytes();
    if depth > 64 {
        return Err(Unsupported);
    }
    match *buf.get(p).ok_or(Unsupported)? {
        b'"' => {
            let mut q = p + 1;
            loop {
                q = string_end(buf, q)?;
                match buf[q] {
                    b'"' => return Ok(q + 1),
                    // Only the escapes JSON defines; `\u` with four hex digits and no surrogate
                    // (those are left to the general decoder's rules).
                    b'\\' => match buf.get(q + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => q += 2,
                        Some(b'u') => {
                            let code = hex4(buf, q + 2)?;
                            if (0xD800..0xE000).contains(&code) {
                                return Err(Unsupported);
                            }
                            q += 6;
                        }
                        _ => return Err(Unsupported),
                    },
                    _ => return Err(Unsupported),
                }
            }
        }
        b'{' | b'[' => {
            let close = if buf[p] == b'{' { b'}' } else { b']' };
            let object = close == b'}';
            let mut q = skip_ws(buf, p + 1);
            if buf.get(q) == Some(&close) {
                return Ok(q + 1);
            }
            loop {
                if object {
                    expect(buf, q, b'"')?;
                    q = skip_value(text, q, depth + 1)?;
                    q = skip_ws(buf, q);
                    expect(buf, q, b':')?;
                    q = skip_ws(buf, q + 1);
                }
                q = skip_value(text, q, depth + 1)?;
                q = skip_ws(buf, q);
                match buf.get(q) {
                    Some(b',') => q = skip_ws(buf, q + 1),
                    Some(&c) if c == close => return Ok(q + 1),
                    _ => return Err(Unsupported),
                }
            }
        }
        b't' => literal(buf, p, b"true"),
        b'f' => literal(buf, p, b"false"),
        b'n' => literal(buf, p, b"null"),
        _ => number(text, p).map(|n| n.end),
    }
}
