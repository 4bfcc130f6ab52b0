//! A reader of the protobuf wire format, as much of it as `AggregatedRecord` needs.
//!
//! It walks an aggregate's bytes once and hands out ranges of them, so that de-aggregation builds
//! the sub-records directly instead of decoding intermediate messages first. It accepts and
//! refuses exactly what a generated decoder (prost) does for these messages: unknown fields of
//! every wire type are skipped (groups included, nested at most [`RECURSION_LIMIT`] deep), a known
//! field with the wrong wire type, a truncated value or a varint longer than 64 bits is an error.
//! The tests compare the two decoders on generated and mutated messages.

use std::fmt;
use std::ops::Range;

/// How deep messages and groups may nest (prost's default).
pub(super) const RECURSION_LIMIT: u32 = 100;

/// Wire type of a varint field.
pub(super) const VARINT: u8 = 0;
/// Wire type of a length-delimited field (bytes, strings, embedded messages).
pub(super) const LEN: u8 = 2;
const FIXED64: u8 = 1;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// What is wrong with the bytes, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WireError {
    what: &'static str,
    at: usize,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {} of the message", self.what, self.at)
    }
}

/// A cursor over one message's bytes. Positions are offsets into the slice it was made from.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader of the whole of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// A reader of `range` of the same buffer (an embedded message); positions stay offsets into
    /// the whole buffer.
    pub(super) fn within(&self, range: Range<usize>) -> Reader<'a> {
        Reader {
            buf: self.buf,
            pos: range.start,
            end: range.end,
        }
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// An error at the current position.
    pub(super) fn error(&self, what: &'static str) -> WireError {
        WireError { what, at: self.pos }
    }

    /// A base-128 varint of at most ten bytes (64 bits).
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        // One byte is by far the most common case: indices, small lengths, keys.
        if let Some(&b) = self.buf[..self.end].get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf[..self.end].get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                self.pos = start;
                return Err(self.error("varint longer than 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        unreachable!("the tenth byte either ends the varint or is refused")
    }

    /// The next field's key: its number and wire type.
    #[inline]
    pub(super) fn key(&mut self) -> Result<(u32, u8), WireError> {
        let start = self.pos;
        let key = self.varint()?;
        let fail = |what| WireError { what, at: start };
        let key = u32::try_from(key).map_err(|_| fail("field key beyond 32 bits"))?;
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(fail("unknown wire type"));
        }
        let field = key >> 3;
        if field == 0 {
            return Err(fail("field number 0"));
        }
        Ok((field, wire_type))
    }

    /// A length-delimited value: its range in the buffer.
    #[inline]
    pub(super) fn len_delimited(&mut self) -> Result<Range<usize>, WireError> {
        let len = self.varint()?;
        let remaining = (self.end - self.pos) as u64;
        if len > remaining {
            return Err(self.error("length-delimited value runs past the end"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }

    /// Checks that a known field came with the wire type its declaration gives it.
    #[inline]
    pub(super) fn expect(&self, wire_type: u8, want: u8) -> Result<(), WireError> {
        if wire_type == want {
            Ok(())
        } else {
            Err(self.error("a known field has the wrong wire type"))
        }
    }

    /// Skips the value of an unknown field (`depth`: nesting levels still allowed).
    pub(super) fn skip(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), WireError> {
        if depth == 0 {
            return Err(self.error("messages and groups nested too deep"));
        }
        let len = match wire_type {
            VARINT => {
                self.varint()?;
                0
            }
            FIXED32 => 4,
            FIXED64 => 8,
            LEN => return self.len_delimited().map(drop),
            START_GROUP => {
                loop {
                    let (inner, inner_type) = self.key()?;
                    if inner_type == END_GROUP {
                        if inner != field {
                            return Err(self.error("a group ends with another field's number"));
                        }
                        break;
                    }
                    self.skip(inner, inner_type, depth - 1)?;
                }
                0
            }
            _ => return Err(self.error("a group ends that was not started")),
        };
        if len > self.end - self.pos {
            return Err(self.error("fixed-width value runs past the end"));
        }
        self.pos += len;
        Ok(())
    }

    /// The bytes of `range` (from [`len_delimited`](Self::len_delimited)).
    pub(super) fn slice(&self, range: Range<usize>) -> &'a [u8] {
        &self.buf[range]
    }
}
