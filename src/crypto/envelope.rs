//! The envelope: the bytes of one encrypted message, and how they are read back.
//!
//! Version 1, every integer big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 3 | magic `RVE` |
//! | 1 | version, `1` (AES-256-GCM with a 96-bit nonce and a 128-bit tag) |
//! | 2 + n | key id: length, then the ARN of the KMS key that encrypted the data key (UTF-8) |
//! | 2 + n | encryption context: length, then the pairs (see below) |
//! | 2 + n | encrypted data key: length, then the blob KMS returned from `GenerateDataKey` |
//! | 12 | nonce: 4 bytes random per data key, then an 8-byte message counter |
//! | 4 | ciphertext length `c` (without the tag) |
//! | c | ciphertext |
//! | 16 | GCM tag |
//!
//! The encryption context is a count (2 bytes), then per pair, sorted by key: key length (2), key,
//! value length (2), value, all UTF-8. Everything from the magic up to and including the ciphertext
//! length is the GCM associated data, so a changed header fails authentication like a changed
//! ciphertext does. The context is also bound to the data key by KMS: `Decrypt` refuses the data
//! key under any other context.
//!
//! Envelopes are self-delimiting, so a stream of them can be concatenated (Firehose does that when it
//! writes records to S3) and split again.

use std::collections::BTreeMap;

use super::EnvelopeError;

/// First three bytes of every envelope.
pub(crate) const MAGIC: &[u8; 3] = b"RVE";
/// The envelope version written.
pub(crate) const VERSION: u8 = 1;
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;

/// An encryption context: non-secret pairs bound to each envelope, checked on decryption.
pub type EncryptionContext = BTreeMap<String, String>;

/// The parsed header of an envelope, and where its ciphertext is.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// The key id, context and encrypted data key fields as stored: what a decrypted data key is
    /// cached under, so that only the same key, context and blob reuse it.
    pub(crate) key_fields: &'a [u8],
    pub(crate) key_id: &'a str,
    pub(crate) context: EncryptionContext,
    pub(crate) encrypted_key: &'a [u8],
    pub(crate) nonce: [u8; NONCE_LEN],
    /// Header bytes: the associated data.
    pub(crate) header: &'a [u8],
    /// Ciphertext followed by the tag.
    pub(crate) sealed: &'a [u8],
    /// Length of the whole envelope.
    pub(crate) len: usize,
}

/// Writes the header of an envelope; the ciphertext and tag follow.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    key_id: &str,
    context: &[u8],
    encrypted_key: &[u8],
    nonce: &[u8; NONCE_LEN],
    ciphertext_len: u32,
) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put_field(out, key_id.as_bytes());
    put_field(out, context);
    put_field(out, encrypted_key);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ciphertext_len.to_be_bytes());
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are checked when the encryptor is built (context) or the data key is made (key id,
    // encrypted key): all are far below 64 KiB.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Serialises a context in its canonical form.
pub(crate) fn encode_context(context: &EncryptionContext) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    let count = u16::try_from(context.len())
        .map_err(|_| EnvelopeError::Invalid("the encryption context has too many pairs".into()))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in context {
        for s in [k, v] {
            let len = u16::try_from(s.len()).map_err(|_| {
                EnvelopeError::Invalid("an encryption context entry is over 64 KiB".into())
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    if out.len() > u16::MAX as usize {
        return Err(EnvelopeError::Invalid(
            "the encryption context is over 64 KiB".into(),
        ));
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(EnvelopeError::Truncated {
                field: what,
                offset: self.at,
            }),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<usize, EnvelopeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn field(&mut self, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let n = self.u16(what)?;
        self.take(n, what)
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, EnvelopeError> {
    std::str::from_utf8(bytes).map_err(|_| EnvelopeError::Invalid(format!("{what} is not UTF-8")))
}

fn decode_context(bytes: &[u8]) -> Result<EncryptionContext, EnvelopeError> {
    let mut r = Reader { data: bytes, at: 0 };
    let count = r.u16("encryption context")?;
    let mut context = EncryptionContext::new();
    for _ in 0..count {
        let k = utf8(r.field("encryption context")?, "an encryption context key")?;
        let v = utf8(
            r.field("encryption context")?,
            "an encryption context value",
        )?;
        context.insert(k.to_owned(), v.to_owned());
    }
    if r.at != bytes.len() {
        return Err(EnvelopeError::Invalid(
            "the encryption context has trailing bytes".into(),
        ));
    }
    Ok(context)
}

/// Longest possible header: magic, version, three fields of at most 64 KiB with their lengths,
/// nonce and ciphertext length.
pub(crate) const MAX_HEADER_LEN: usize = 3 + 1 + 3 * (2 + u16::MAX as usize) + NONCE_LEN + 4;

/// The header fields of an envelope, read without its ciphertext.
struct Head<'a> {
    key_fields: &'a [u8],
    key_id: &'a str,
    context: EncryptionContext,
    encrypted_key: &'a [u8],
    nonce: [u8; NONCE_LEN],
    header_end: usize,
    sealed_len: usize,
}

fn parse_head(data: &[u8]) -> Result<Head<'_>, EnvelopeError> {
    let mut r = Reader { data, at: 0 };
    let magic = r.take(3, "magic")?;
    if magic != MAGIC {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let version = r.take(1, "version")?[0];
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let fields_start = r.at;
    let key_id = utf8(r.field("key id")?, "the key id")?;
    let context = decode_context(r.field("encryption context")?)?;
    let encrypted_key = r.field("encrypted data key")?;
    let key_fields = &data[fields_start..r.at];
    let nonce: [u8; NONCE_LEN] = r
        .take(NONCE_LEN, "nonce")?
        .try_into()
        .expect("took NONCE_LEN bytes");
    let c = r.take(4, "ciphertext length")?;
    let ciphertext_len = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize;
    let sealed_len = ciphertext_len
        .checked_add(TAG_LEN)
        .ok_or(EnvelopeError::Invalid(
            "the ciphertext length is too large".into(),
        ))?;
    Ok(Head {
        key_fields,
        key_id,
        context,
        encrypted_key,
        nonce,
        header_end: r.at,
        sealed_len,
    })
}

/// The length the envelope starting at `data` declares (header, ciphertext and tag), read from
/// its header alone: `data` needs to hold the header only (at most [`MAX_HEADER_LEN`] bytes).
pub(crate) fn declared_len(data: &[u8]) -> Result<usize, EnvelopeError> {
    let head = parse_head(data)?;
    Ok(head.header_end + head.sealed_len)
}

/// Parses the envelope at the start of `data`.
pub(crate) fn parse(data: &[u8]) -> Result<Parsed<'_>, EnvelopeError> {
    let head = parse_head(data)?;
    let mut r = Reader {
        data,
        at: head.header_end,
    };
    let sealed = r.take(head.sealed_len, "ciphertext")?;
    Ok(Parsed {
        key_fields: head.key_fields,
        key_id: head.key_id,
        context: head.context,
        encrypted_key: head.encrypted_key,
        nonce: head.nonce,
        header: &data[..head.header_end],
        sealed,
        len: r.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_truncation_is_reported_with_the_field() {
        let mut ctx = EncryptionContext::new();
        ctx.insert("rivulet:stream".into(), "out".into());
        ctx.insert("a".into(), "b".into());
        let ctx_bytes = encode_context(&ctx).unwrap();
        let mut out = Vec::new();
        write_header(&mut out, "arn:key", &ctx_bytes, b"edk", &[7; NONCE_LEN], 3);
        out.extend_from_slice(b"abc");
        out.extend_from_slice(&[0; TAG_LEN]);
        let p = parse(&out).unwrap();
        assert_eq!(p.key_id, "arn:key");
        assert_eq!(p.context, ctx);
        assert_eq!(p.encrypted_key, b"edk");
        assert_eq!(p.nonce, [7; NONCE_LEN]);
        assert_eq!(p.sealed.len(), 3 + TAG_LEN);
        assert_eq!(p.len, out.len());

        let err = parse(&out[..out.len() - 1]).unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::Truncated {
                    field: "ciphertext",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            parse(b"{\"a\":1}"),
            Err(EnvelopeError::NotAnEnvelope)
        ));
        let mut v2 = out.clone();
        v2[3] = 2;
        assert!(matches!(
            parse(&v2),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
    }
}
