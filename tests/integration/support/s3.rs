//! Minimal S3 helpers against moto: raw HTTP/1.1 requests over std networking, with path-style
//! URLs (`/bucket/key`) on 127.0.0.1.
//!
//! moto does not check request signatures, but it treats a request without an `Authorization`
//! header as anonymous, and refuses an anonymous `GetObject` on a private object (403). So every
//! request carries a dummy SigV4 `Authorization` header whose credential scope names `s3` (which
//! is also what moto routes requests by when the host does not tell the service).
//!
//! One request per connection (`Connection: close`). Any failure panics with the request in the
//! message.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a request may take to be written, and its response to be read.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Never checked by moto; only there so that requests are not anonymous.
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
     Credential=testing/20240101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000";

/// Creates `bucket`.
pub(crate) fn create_bucket(port: u16, bucket: &str) {
    let target = format!("/{}", encode(bucket, false));
    success(port, "PUT", &target, &[]);
}

/// The keys of all the objects in `bucket`, in S3's (lexicographic) order.
pub(crate) fn list_keys(port: u16, bucket: &str) -> Vec<String> {
    list_keys_in_pages(port, bucket, None)
}

/// The keys of the multipart uploads of `bucket` that are in progress (neither completed nor
/// aborted).
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) fn multipart_uploads(port: u16, bucket: &str) -> Vec<String> {
    let body = success(
        port,
        "GET",
        &format!("/{}?uploads", encode(bucket, false)),
        &[],
    );
    let xml = String::from_utf8(body).expect("a UTF-8 listing");
    elements(&xml, "Key")
        .into_iter()
        .map(xml_unescape)
        .collect()
}

/// Stores `body` as the object `key` of `bucket`.
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
pub(crate) fn put_object(port: u16, bucket: &str, key: &str, body: &[u8]) {
    success(port, "PUT", &object_target(bucket, key), body);
}

/// The content of the object `key` of `bucket`.
pub(crate) fn get_object(port: u16, bucket: &str, key: &str) -> Vec<u8> {
    success(port, "GET", &object_target(bucket, key), &[])
}

#[cfg_attr(not(feature = "aws"), allow(dead_code))]
/// The response headers of `HEAD` on the object `key` of `bucket`, names in lower case.
pub(crate) fn head_object(port: u16, bucket: &str, key: &str) -> Vec<(String, String)> {
    let target = object_target(bucket, key);
    let raw = exchange(port, "HEAD", &target, &[])
        .unwrap_or_else(|e| panic!("S3 HEAD {target} on 127.0.0.1:{port}: {e}"));
    let end = find(&raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    assert!(status.contains(" 200 "), "S3 HEAD {target}: {status}");
    lines
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

/// [`list_keys`], asking for at most `page_size` keys per request (S3's default, 1000, when
/// `None`) and following continuation tokens.
fn list_keys_in_pages(port: u16, bucket: &str, page_size: Option<usize>) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut target = format!("/{}?list-type=2", encode(bucket, false));
        if let Some(page_size) = page_size {
            target.push_str(&format!("&max-keys={page_size}"));
        }
        if let Some(token) = &token {
            target.push_str(&format!("&continuation-token={}", encode(token, false)));
        }
        let body = success(port, "GET", &target, &[]);
        let xml = String::from_utf8(body)
            .unwrap_or_else(|e| panic!("S3 GET {target}: the listing is not UTF-8: {e}"));
        keys.extend(elements(&xml, "Key").into_iter().map(xml_unescape));
        if elements(&xml, "IsTruncated").first().map(|t| t.trim()) != Some("true") {
            return keys;
        }
        let next = elements(&xml, "NextContinuationToken");
        let next = next.first().unwrap_or_else(|| {
            panic!("S3 GET {target}: truncated listing without NextContinuationToken: {xml}")
        });
        token = Some(xml_unescape(next));
    }
}

/// The request target of an object: its key percent-encoded, `/` kept.
fn object_target(bucket: &str, key: &str) -> String {
    format!("/{}/{}", encode(bucket, false), encode(key, true))
}

/// Sends a request and returns the body of its 2xx response; panics on any other status.
fn success(port: u16, method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let (status, body) = request(port, method, target, body);
    assert!(
        (200..300).contains(&status),
        "S3 {method} {target} answered HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// Sends one request to 127.0.0.1:`port` and returns the response's status and (de-chunked)
/// body.
fn request(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let raw = exchange(port, method, target, body)
        .unwrap_or_else(|e| panic!("S3 {method} {target} on 127.0.0.1:{port}: {e}"));
    parse_response(&raw).unwrap_or_else(|e| {
        panic!(
            "S3 {method} {target} on 127.0.0.1:{port}: {e}; the response was {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Sends one request on a new connection and reads the whole response, until the server closes
/// the connection.
fn exchange(port: u16, method: &str, target: &str, body: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Authorization: {AUTHORIZATION}\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(raw)
}

/// Splits a whole response into its status and body, skipping interim (1xx) responses and
/// undoing chunked transfer encoding.
fn parse_response(mut raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    loop {
        let end = find(raw, b"\r\n\r\n").ok_or("response head cut short")?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let rest = &raw[end + 4..];
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or("not an HTTP response")?;
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
            })
        };
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            dechunk(rest)?
        } else if let Some(len) = header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length {len:?}"))?;
            rest.get(..len)
                .ok_or_else(|| format!("body cut short: {} of {len} bytes", rest.len()))?
                .to_vec()
        } else {
            rest.to_vec()
        };
        return Ok((status, body));
    }
}

/// The body of a chunked message (trailers ignored).
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or("chunk size line cut short")?;
        let line = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data.get(..size).ok_or("chunk cut short")?;
        if data.get(size..size + 2) != Some(b"\r\n".as_slice()) {
            return Err("chunk not followed by CRLF".into());
        }
        body.extend_from_slice(chunk);
        data = &data[size + 2..];
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (and `/` when `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The text of every `<tag>…</tag>` element of `xml`, still escaped (no nesting, no attributes:
/// enough for S3's listings).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(open.as_str()) {
        let after = &rest[start + open.len()..];
        let end = after
            .find(close.as_str())
            .unwrap_or_else(|| panic!("S3: unclosed <{tag}> in {xml}"));
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// Undoes XML escaping: the five predefined entities and character references.
fn xml_unescape(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        plain.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        let semi = rest
            .find(';')
            .unwrap_or_else(|| panic!("S3: unterminated XML entity in {text:?}"));
        let entity = &rest[..semi];
        rest = &rest[semi + 1..];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(decimal) = entity.strip_prefix('#') {
                    decimal.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .unwrap_or_else(|| panic!("S3: unknown XML entity &{entity}; in {text:?}"))
            }
        };
        plain.push(c);
    }
    plain.push_str(rest);
    plain
}

#[test]
fn objects_round_trip_through_moto_s3() {
    let Some(moto) = crate::support::moto::MotoServer::start() else {
        return;
    };
    let port = moto.port();
    let bucket = "raw-http-bucket";
    create_bucket(port, bucket);
    assert_eq!(list_keys(port, bucket), Vec::<String>::new());

    // A slash, a space and characters that XML escapes.
    let key = "dir one/part <1> & 'two'.json";
    let content = b"{\"a\":1}\n";
    success(port, "PUT", &object_target(bucket, key), content);
    assert_eq!(list_keys(port, bucket), [key]);
    assert_eq!(get_object(port, bucket, key), content);

    // Listings in pages of one key follow the continuation tokens.
    for name in ["b", "a/c", "d e"] {
        success(port, "PUT", &object_target(bucket, name), name.as_bytes());
    }
    let mut expected = vec![key, "b", "a/c", "d e"];
    expected.sort_unstable();
    assert_eq!(list_keys_in_pages(port, bucket, Some(1)), expected);
    assert_eq!(list_keys(port, bucket), expected);
    assert_eq!(get_object(port, bucket, "d e"), b"d e");

    // A missing object answers 404 (which `get_object` would turn into a panic).
    let (status, _) = request(port, "GET", &object_target(bucket, "missing"), &[]);
    assert_eq!(status, 404);

    // Chunked bodies and interim responses are understood.
    let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\
        Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n";
    assert_eq!(parse_response(chunked), Ok((200, b"abcde".to_vec())));
}
