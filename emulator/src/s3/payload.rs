//! An S3 request's body and signature, as S3 reads them. `x-amz-content-sha256` says what the
//! signature covers of the body:
//! - a hex SHA-256: signed as is, and then checked against the body received (400
//!   `XAmzContentSHA256Mismatch`);
//! - `UNSIGNED-PAYLOAD`: the body is not covered;
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: the body is `aws-chunked` (chunk sizes, then trailing
//!   headers such as `x-amz-checksum-sha256`), decoded here;
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: the same encoding with each chunk, and the
//!   trailer, signed in a chain from the request's signature (what the SDK sends over plain
//!   HTTP when it computes a checksum of a streamed body); every link is checked.
//!
//! The signature itself is `sigv4`'s check with S3's canonical URI; its failures are renamed to
//! S3's codes (`SignatureDoesNotMatch` and the rest).

use super::wire::{err, signature_error};
use crate::sigv4::{self, Seed, Verifier};
use crate::util::sha256;
use crate::wire::{ApiError, Request};

const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";

/// What decoding the body found besides the data.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    /// The base64 SHA-256 an `aws-chunked` body carried as its `x-amz-checksum-sha256` trailer.
    pub trailer_sha256: Option<String>,
}

/// Authenticates the request and leaves its decoded body in `req.body`.
pub(crate) fn prepare(req: &mut Request, verifier: &Verifier) -> Result<Payload, ApiError> {
    let mode = match req.header_str("x-amz-content-sha256") {
        Some(m) => m.to_string(),
        None if verifier.enabled => {
            return Err(err(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            ))
        }
        None => UNSIGNED.to_string(),
    };
    let hex_hash = mode.len() == 64 && mode.bytes().all(|c| c.is_ascii_hexdigit());
    let streaming = matches!(
        mode.as_str(),
        STREAMING_UNSIGNED_TRAILER | STREAMING_SIGNED | STREAMING_SIGNED_TRAILER
    );
    if !hex_hash && !streaming && mode != UNSIGNED {
        return Err(err(
            400,
            "InvalidArgument",
            format!(
                "x-amz-content-sha256 must be {UNSIGNED}, {STREAMING_UNSIGNED_TRAILER}, \
                 {STREAMING_SIGNED}, {STREAMING_SIGNED_TRAILER} or a SHA-256 in hex, not '{mode}'"
            ),
        ));
    }
    let seed = sigv4::verify_s3(verifier, req, &mode).map_err(signature_error)?;
    if hex_hash {
        let actual = hex::encode(sha256(&req.body));
        if !mode.eq_ignore_ascii_case(&actual) {
            return Err(err(
                400,
                "XAmzContentSHA256Mismatch",
                format!(
                    "The provided 'x-amz-content-sha256' header does not match what was \
                     computed: client {mode}, server {actual}"
                ),
            ));
        }
    }
    if !streaming {
        return Ok(Payload::default());
    }
    // The seed is there only when signatures are checked; unsigned chunks have no links.
    let chain = seed.filter(|_| mode.starts_with(STREAMING_SIGNED));
    let (data, trailers) = decode_chunked(&req.body, chain.as_ref())?;
    if let Some(declared) = req.header_str("x-amz-decoded-content-length") {
        if declared.parse::<usize>().ok() != Some(data.len()) {
            return Err(incomplete(format!(
                "x-amz-decoded-content-length is {declared} but the decoded body has {} bytes",
                data.len()
            )));
        }
    }
    req.body = data;
    let trailer_sha256 = trailers
        .into_iter()
        .find(|(n, _)| n == "x-amz-checksum-sha256")
        .map(|(_, v)| v);
    let announced = req
        .header_str("x-amz-trailer")
        .is_some_and(|t| t.eq_ignore_ascii_case("x-amz-checksum-sha256"));
    if announced && trailer_sha256.is_none() {
        return Err(incomplete(
            "x-amz-trailer announces x-amz-checksum-sha256 but the body carries no such trailer",
        ));
    }
    Ok(Payload { trailer_sha256 })
}

fn incomplete(message: impl Into<String>) -> ApiError {
    err(400, "IncompleteBody", message)
}

fn chunk_mismatch() -> ApiError {
    err(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided \
         (a chunk of the aws-chunked body).",
    )
}

/// Trailing headers of an `aws-chunked` body, names lower-cased, in order.
type Trailers = Vec<(String, String)>;

/// Reads one CRLF-terminated line from `body` at `*at`.
fn line<'a>(body: &'a [u8], at: &mut usize) -> Result<&'a str, ApiError> {
    let rest = &body[*at..];
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| incomplete("The aws-chunked body ends in the middle of a line"))?;
    *at += end + 2;
    std::str::from_utf8(&rest[..end])
        .map_err(|_| incomplete("An aws-chunked header line is not UTF-8"))
}

/// Decodes an `aws-chunked` body into its data and trailing headers (names lower-cased),
/// checking every chunk signature and the trailer signature when `chain` is given.
fn decode_chunked(body: &[u8], chain: Option<&Seed>) -> Result<(Vec<u8>, Trailers), ApiError> {
    let mut data = Vec::with_capacity(body.len());
    let mut at = 0;
    let mut previous = chain.map(|s| s.signature.clone());
    loop {
        let header = line(body, &mut at)?;
        let (size, ext) = header.split_once(';').unwrap_or((header, ""));
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| incomplete(format!("Malformed aws-chunked chunk header '{header}'")))?;
        if at + size > body.len() {
            return Err(incomplete("The aws-chunked body ends inside a chunk"));
        }
        let chunk = &body[at..at + size];
        if let (Some(seed), Some(prev)) = (chain, previous.as_mut()) {
            let sent = ext
                .trim()
                .strip_prefix("chunk-signature=")
                .ok_or_else(chunk_mismatch)?;
            let expected = sigv4::chunk_signature(seed, prev, chunk);
            if !sigv4::same_signature(&expected, sent) {
                return Err(chunk_mismatch());
            }
            *prev = expected;
        }
        if size == 0 {
            break;
        }
        data.extend_from_slice(chunk);
        at += size;
        if !line(body, &mut at)?.is_empty() {
            return Err(incomplete(
                "An aws-chunked chunk is longer than its size says",
            ));
        }
    }
    let mut trailers = Vec::new();
    let mut trailer_signature = None;
    loop {
        let l = line(body, &mut at)?;
        if l.is_empty() {
            break;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| incomplete(format!("Malformed aws-chunked trailer '{l}'")))?;
        let name = name.trim().to_ascii_lowercase();
        if name == "x-amz-trailer-signature" {
            trailer_signature = Some(value.trim().to_string());
        } else {
            trailers.push((name, value.trim().to_string()));
        }
    }
    if at != body.len() {
        return Err(incomplete("Bytes follow the end of the aws-chunked body"));
    }
    if let (Some(seed), Some(prev)) = (chain, previous) {
        if !trailers.is_empty() || trailer_signature.is_some() {
            let expected = sigv4::trailer_signature(seed, &prev, &trailers);
            if !trailer_signature.is_some_and(|sent| sigv4::same_signature(&expected, &sent)) {
                return Err(chunk_mismatch());
            }
        }
    }
    Ok((data, trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_chunks_decode_with_their_trailer() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-sha256:abc=\r\n\r\n";
        let (data, trailers) = decode_chunked(body, None).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(
            trailers,
            vec![("x-amz-checksum-sha256".to_string(), "abc=".to_string())]
        );
        // A chunk longer than announced, or a body cut short, is refused.
        assert!(decode_chunked(b"3\r\nhello\r\n0\r\n\r\n", None).is_err());
        assert!(decode_chunked(b"5\r\nhel", None).is_err());
        assert!(decode_chunked(b"0\r\n\r\nextra", None).is_err());
    }

    /// A signed body as the SDK writes it: each chunk's signature chained from the previous,
    /// the last over the empty chunk, then the trailer's. Any change breaks the chain.
    #[test]
    fn signed_chunks_are_checked_link_by_link() {
        let seed = Seed::for_tests("secret", "20260101T000000Z", "us-east-1", "seed-sig");
        let encode = |chunks: &[&[u8]], trailer: Option<&str>, tamper: bool| {
            let mut body = Vec::new();
            let mut prev = seed.signature.clone();
            for chunk in chunks.iter().chain([&&b""[..]]) {
                prev = sigv4::chunk_signature(&seed, &prev, chunk);
                body.extend(format!("{:X};chunk-signature={prev}\r\n", chunk.len()).bytes());
                if !chunk.is_empty() {
                    body.extend_from_slice(chunk);
                    body.extend_from_slice(b"\r\n");
                }
            }
            if let Some(value) = trailer {
                let trailers = [("x-amz-checksum-sha256".to_string(), value.to_string())];
                let sig = sigv4::trailer_signature(&seed, &prev, &trailers);
                body.extend(format!("x-amz-checksum-sha256:{value}\r\n").bytes());
                body.extend(format!("x-amz-trailer-signature:{sig}\r\n").bytes());
            }
            body.extend_from_slice(b"\r\n");
            if tamper {
                // One byte of data, the chunk's header left as signed.
                let at = body.windows(5).position(|w| w == b"hello").unwrap();
                body[at] = b'j';
            }
            body
        };
        let good = encode(&[b"hello", b" world"], Some("abc="), false);
        let (data, trailers) = decode_chunked(&good, Some(&seed)).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.len(), 1);
        let no_trailer = encode(&[b"hello"], None, false);
        assert_eq!(
            decode_chunked(&no_trailer, Some(&seed)).unwrap().0,
            b"hello"
        );

        let code = |body: &[u8]| {
            decode_chunked(body, Some(&seed))
                .map(|_| ())
                .map_err(|e| e.code)
        };
        assert_eq!(
            code(&encode(&[b"hello"], Some("abc="), true)),
            Err("SignatureDoesNotMatch")
        );
        // A trailer changed after signing, or its signature dropped.
        let text = String::from_utf8(good.clone()).unwrap();
        let changed = text.replace("abc=", "abd=");
        assert_eq!(code(changed.as_bytes()), Err("SignatureDoesNotMatch"));
        let dropped: String = text
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with("x-amz-trailer-signature"))
            .collect();
        assert_eq!(code(dropped.as_bytes()), Err("SignatureDoesNotMatch"));
        // Another seed (another request's signature) does not verify these chunks.
        let other = Seed::for_tests("secret", "20260101T000000Z", "us-east-1", "other-sig");
        assert!(decode_chunked(&good, Some(&other)).is_err());
    }
}
