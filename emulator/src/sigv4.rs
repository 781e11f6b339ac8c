//! AWS Signature Version 4, checked on every request as Glacier checks it, so that a signing or
//! body-hash bug in a client fails wherever it shows, not in one dedicated test.
//!
//! What is checked, in order, and what each failure answers (Glacier's error shapes):
//! - an `Authorization` header is there (403 `MissingAuthenticationTokenException`) and reads
//!   `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` (400
//!   `IncompleteSignatureException`), with an `x-amz-date` of the form `YYYYMMDDTHHMMSSZ`;
//! - the access key id is one the emulator knows (403 `UnrecognizedClientException`, as AWS
//!   answers an unknown key);
//! - the credential scope is `<date of x-amz-date>/<the emulator's region>/glacier/aws4_request`,
//!   and `host`, `x-amz-date` and every other `x-amz-*` header the request carries are signed
//!   (403 `InvalidSignatureException`);
//! - the signature is the one the secret gives over the canonical request rebuilt from what
//!   arrived, its payload hash being the SHA-256 of the body actually received: a body changed
//!   after signing fails here (403 `InvalidSignatureException`);
//! - an `x-amz-content-sha256` header, signed as it is, equals that SHA-256 (400
//!   `InvalidParameterValueException`, the answer UploadArchive gave before signatures were
//!   checked): a client that signed the right body under a wrong header still fails.
//!
//! The canonical request is the one the AWS SDKs build for Glacier: the path normalised (dot
//! segments and empty segments removed) and percent-encoded again (Glacier, unlike S3, signs the
//! path double-encoded), the query decoded as a form and re-encoded with only the unreserved
//! characters left bare, sorted; header values with outer spaces trimmed and runs of spaces made
//! one, repeated headers joined by commas.
//!
//! S3 requests (`s3::payload`) get the same checks scoped to `s3`, with S3's canonical request:
//! the path encoded once (decoded, then encoded as SigV4 encodes), not normalised, and the
//! payload hash the `x-amz-content-sha256` value as sent (a hex hash, `UNSIGNED-PAYLOAD` or a
//! streaming mode), which the S3 layer checks against the body; [`chunk_signature`] and
//! [`trailer_signature`] check the links of a signed `aws-chunked` body.
//!
//! Not checked: the request time against the clock (the emulated clock is deliberately not real
//! time, so any skew test would be meaningless) and session tokens (there is no STS to ask; an
//! `x-amz-security-token` must only be signed, like any `x-amz-*` header).

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::util::{percent_decode, sha256, Digest};
use super::wire::{ApiError, Request};

/// The access key id the emulator accepts unless told otherwise, with [`SECRET_ACCESS_KEY`].
pub const ACCESS_KEY_ID: &str = "AKIDEMULATOR";
/// The secret that goes with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "emulator-secret";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "glacier";
const TERMINATOR: &str = "aws4_request";

/// What the verifier needs: whether it runs, the region credentials must be scoped to, and the
/// accepted secrets by access key id.
#[derive(Clone, Debug)]
pub(crate) struct Verifier {
    pub enabled: bool,
    pub region: String,
    pub keys: BTreeMap<String, String>,
}

/// The default credentials: the one well-known pair.
pub(crate) fn default_keys() -> BTreeMap<String, String> {
    BTreeMap::from([(ACCESS_KEY_ID.to_string(), SECRET_ACCESS_KEY.to_string())])
}

/// The parts of an `Authorization` header.
struct Authorization<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "IncompleteSignatureException", message)
}

fn invalid_signature(message: impl Into<String>) -> ApiError {
    ApiError::new(403, "InvalidSignatureException", message)
}

/// AWS's own words for a signature that does not match.
const MISMATCH: &str = "The request signature we calculated does not match the signature you \
                        provided. Check your AWS Secret Access Key and signing method. Consult \
                        the service documentation for details.";

fn parse_authorization<'a>(value: &'a str) -> Result<Authorization<'a>, ApiError> {
    let Some(fields) = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
    else {
        return Err(incomplete(format!(
            "Unsupported Authorization header: only {ALGORITHM} signatures are accepted"
        )));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',').map(str::trim) {
        let (name, v) = field.split_once('=').unwrap_or((field, ""));
        match name {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let need = |v: Option<&'a str>, name: &str| {
        v.filter(|v| !v.is_empty())
            .ok_or_else(|| incomplete(format!("Authorization header requires '{name}' parameter.")))
    };
    let credential = need(credential, "Credential")?;
    let signed_headers = need(signed_headers, "SignedHeaders")?;
    let signature = need(signature, "Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(
            "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    };
    Ok(Authorization {
        key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

/// Checks a Glacier request's signature and body hash; `body_sha256` is the SHA-256 of the
/// body as received. Does nothing when verification is off.
pub(crate) fn verify(v: &Verifier, req: &Request, body_sha256: &Digest) -> Result<(), ApiError> {
    if !v.enabled {
        return Ok(());
    }
    let payload_hash = hex::encode(body_sha256);
    check(v, req, SERVICE, &canonical_path(&req.path), &payload_hash)?;
    if let Some(sent) = req.header_str("x-amz-content-sha256") {
        if !sent.eq_ignore_ascii_case(&payload_hash) {
            return Err(ApiError::invalid(format!(
                "x-amz-content-sha256 mismatch: expected {sent} (calculated {payload_hash})"
            )));
        }
    }
    Ok(())
}

/// What an S3 request was signed with, for the chunk signatures of an `aws-chunked` body,
/// which chain from the request's own signature.
#[derive(Clone, Debug)]
pub(crate) struct Seed {
    key: Digest,
    amz_date: String,
    scope: String,
    pub signature: String,
}

/// Checks an S3 request's signature, the canonical request carrying `payload_hash` (the
/// `x-amz-content-sha256` value: a hex hash, `UNSIGNED-PAYLOAD` or a `STREAMING-…` mode) as
/// S3 does; the caller checks that value against the body. S3 signs the path as sent, encoded
/// once and not normalised. None when verification is off. Errors carry Glacier's codes, which
/// the S3 layer renames.
pub(crate) fn verify_s3(
    v: &Verifier,
    req: &Request,
    payload_hash: &str,
) -> Result<Option<Seed>, ApiError> {
    if !v.enabled {
        return Ok(None);
    }
    let uri = match percent_decode(&req.path) {
        Some(decoded) => uri_encode(decoded.as_bytes(), true),
        None => req.path.clone(),
    };
    check(v, req, "s3", &uri, payload_hash).map(Some)
}

#[cfg(test)]
impl Seed {
    /// A seed as `verify_s3` would return it for these credentials, for chunk tests.
    pub(crate) fn for_tests(secret: &str, amz_date: &str, region: &str, signature: &str) -> Seed {
        let date = &amz_date[..8];
        Seed {
            key: signing_key(secret, date, region, "s3"),
            amz_date: amz_date.to_string(),
            scope: format!("{date}/{region}/s3/{TERMINATOR}"),
            signature: signature.to_string(),
        }
    }
}

/// The service a request's `Authorization` header is scoped to, if it has a readable one.
pub(crate) fn scoped_service(req: &Request) -> Option<&str> {
    let auth = parse_authorization(req.header_str("authorization")?).ok()?;
    Some(auth.service)
}

/// The signature of one chunk of a signed `aws-chunked` body, chained from `previous`.
pub(crate) fn chunk_signature(seed: &Seed, previous: &str, chunk: &[u8]) -> String {
    let hashes = format!(
        "{}\n{}",
        hex::encode(sha256(b"")),
        hex::encode(sha256(chunk))
    );
    streaming_signature(seed, "AWS4-HMAC-SHA256-PAYLOAD", previous, &hashes)
}

/// The signature of the trailing headers of a signed `aws-chunked` body: over the headers
/// (the signature's own excluded) sorted by name, `name:value\n` each.
pub(crate) fn trailer_signature(
    seed: &Seed,
    previous: &str,
    trailers: &[(String, String)],
) -> String {
    let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
    sorted.sort();
    let canonical: String = sorted
        .iter()
        .map(|(n, v)| format!("{n}:{}\n", v.trim()))
        .collect();
    let hash = hex::encode(sha256(canonical.as_bytes()));
    streaming_signature(seed, "AWS4-HMAC-SHA256-TRAILER", previous, &hash)
}

fn streaming_signature(seed: &Seed, algorithm: &str, previous: &str, hash: &str) -> String {
    let to_sign = format!(
        "{algorithm}\n{}\n{}\n{previous}\n{hash}",
        seed.amz_date, seed.scope
    );
    hex::encode(hmac_sha256(&seed.key, to_sign.as_bytes()))
}

/// Compares signatures without stopping at the first difference.
pub(crate) fn same_signature(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// The checks every signed request gets, for `service`, with its canonical URI and payload
/// hash already decided.
fn check(
    v: &Verifier,
    req: &Request,
    service: &str,
    canonical_uri: &str,
    payload_hash: &str,
) -> Result<Seed, ApiError> {
    let Some(value) = req.header_str("authorization") else {
        return Err(ApiError::new(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = parse_authorization(value)?;
    let Some(amz_date) = req.header_str("x-amz-date") else {
        return Err(incomplete(
            "Authorization header requires existence of an 'X-Amz-Date' header.",
        ));
    };
    if !is_amz_date(amz_date) {
        return Err(incomplete(format!(
            "X-Amz-Date '{amz_date}' is not of the form YYYYMMDDTHHMMSSZ"
        )));
    }
    let Some(secret) = v.keys.get(auth.key_id) else {
        // As AWS words it; the key id is not echoed, since a client may log the message.
        return Err(ApiError::new(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    check_scope(&auth, amz_date, &v.region, service)?;
    check_signed_headers(req, &auth.signed_headers)?;

    let canonical = canonical_request(req, canonical_uri, &auth.signed_headers, payload_hash);
    let scope = format!(
        "{}/{}/{}/{}",
        auth.date, auth.region, auth.service, auth.terminator
    );
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(sha256(&canonical))
    );
    let key = signing_key(secret, auth.date, auth.region, auth.service);
    let expected = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        // Whoever reads the test output can compare this with what the client signed.
        eprintln!(
            "glacier-emulator: signature mismatch on {} {}\n--- canonical request ---\n{}\n\
             --- string to sign ---\n{to_sign}\n---",
            req.method,
            req.path,
            redacted(&canonical),
        );
        return Err(invalid_signature(MISMATCH));
    }
    Ok(Seed {
        key,
        amz_date: amz_date.to_string(),
        scope,
        signature: expected,
    })
}

fn is_amz_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

fn check_scope(
    auth: &Authorization<'_>,
    amz_date: &str,
    region: &str,
    service: &str,
) -> Result<(), ApiError> {
    if auth.date != &amz_date[..8] {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{}' != '{}'",
            auth.date,
            &amz_date[..8]
        )));
    }
    if auth.region != region {
        return Err(invalid_signature(format!(
            "Credential should be scoped to a valid region, not '{}' (this endpoint is {region})",
            auth.region
        )));
    }
    if auth.service != service {
        return Err(invalid_signature(format!(
            "Credential should be scoped to correct service: '{service}', not '{}'",
            auth.service
        )));
    }
    if auth.terminator != TERMINATOR {
        return Err(invalid_signature(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'",
            auth.terminator
        )));
    }
    Ok(())
}

/// `host`, `x-amz-date` and every `x-amz-*` header present must be signed (so the tree hash,
/// the payload hash and the security token are covered), and every header named as signed
/// must be present.
fn check_signed_headers(req: &Request, signed: &[&str]) -> Result<(), ApiError> {
    let must = ["host", "x-amz-date"].into_iter().chain(
        req.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("x-amz-")),
    );
    for name in must {
        if !signed.contains(&name) {
            return Err(invalid_signature(format!(
                "The '{name}' header must be signed (it is not in SignedHeaders)"
            )));
        }
    }
    if let Some(absent) = signed.iter().find(|n| req.header(n).is_none()) {
        return Err(invalid_signature(format!(
            "SignedHeaders names '{absent}', which the request does not carry"
        )));
    }
    Ok(())
}

/// The canonical request, as bytes: header values may hold any byte.
fn canonical_request(req: &Request, uri: &str, signed: &[&str], payload_hash: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(uri.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(&req.raw_query).as_bytes());
    out.push(b'\n');
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let values: Vec<Vec<u8>> = req
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| trim_all(v))
            .collect();
        out.extend_from_slice(&values.join(&b","[..]));
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// The canonical request for the log, with the session token's value hidden.
fn redacted(canonical: &[u8]) -> String {
    String::from_utf8_lossy(canonical)
        .lines()
        .map(|l| match l.strip_prefix("x-amz-security-token:") {
            Some(_) => "x-amz-security-token:** redacted **".to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The path normalised (`.`, `..` and empty segments resolved, a trailing slash kept) and
/// percent-encoded once more: `%` becomes `%25`, as the SDKs sign every service but S3.
fn canonical_path(path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let normalized = if path.contains('.') || path.contains("//") {
        let mut segs: Vec<&str> = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                s => segs.push(s),
            }
        }
        let mut out = format!("/{}", segs.join("/"));
        let trailing = ["/", "/.", "/./", "/..", "/../"]
            .iter()
            .any(|s| path.ends_with(s));
        if trailing && !out.ends_with('/') {
            out.push('/');
        }
        out
    } else {
        path
    };
    uri_encode(normalized.as_bytes(), true)
}

/// The query as a form (`+` is a space, bad escapes stay as they are), each name and value
/// encoded again, pairs sorted.
fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&form_decode(k), false),
                uri_encode(&form_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    // Decoded as UTF-8 with replacement, as the SDK's form parser does, then encoded again.
    String::from_utf8_lossy(&out).into_owned().into_bytes()
}

/// Percent-encodes all but the unreserved characters (`A-Z a-z 0-9 - . _ ~`), and `/` when
/// `keep_slash`; upper-case hex, as SigV4 wants.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else if c == b'/' && keep_slash {
            out.push('/');
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Outer spaces trimmed, runs of spaces made one (only spaces: other whitespace stays).
fn trim_all(v: &[u8]) -> Vec<u8> {
    let start = v.iter().position(|&c| c != b' ').unwrap_or(v.len());
    let end = v.iter().rposition(|&c| c != b' ').map_or(start, |e| e + 1);
    let mut out = Vec::with_capacity(end - start);
    for &c in &v[start..end] {
        if !(c == b' ' && out.last() == Some(&b' ')) {
            out.push(c);
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104), written out: the emulator has no HMAC crate and needs only this.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Digest {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&sha256(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `kSigning` of SigV4: the secret chained through the scope.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Digest {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

/// Compares without stopping at the first difference, as a real service must.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.into(),
            path: path.into(),
            raw_query: query.into(),
            query: Vec::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            http10: false,
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than a block is hashed first (case 6).
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// The worked example of Glacier's developer guide ("Example Signature Calculation"):
    /// CreateVault of `examplevault`, signed with the documentation's example credentials.
    #[test]
    fn the_documented_glacier_example_verifies() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20120525/us-east-1/glacier/\
                    aws4_request, SignedHeaders=host;x-amz-date;x-amz-glacier-version, \
                    Signature=3ce5b2f2fffac9262b4da9256f8d086b4aaf42eba5f111c21681a65a127b7c2a";
        let req = request(
            "PUT",
            "/-/vaults/examplevault",
            &[
                ("Host", "glacier.us-east-1.amazonaws.com"),
                ("x-amz-date", "20120525T002453Z"),
                ("x-amz-glacier-version", "2012-06-01"),
                ("Authorization", auth),
            ],
            b"",
        );
        let mut v = Verifier {
            enabled: true,
            region: "us-east-1".into(),
            keys: BTreeMap::from([(
                "AKIAIOSFODNN7EXAMPLE".to_string(),
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
            )]),
        };
        assert_eq!(verify(&v, &req, &sha256(b"")), Ok(()));
        // One byte of body, one character of secret, or another region: refused.
        assert_eq!(
            verify(&v, &req, &sha256(b"x")).map_err(|e| e.code),
            Err("InvalidSignatureException")
        );
        v.region = "eu-west-1".into();
        assert_eq!(
            verify(&v, &req, &sha256(b"")).map_err(|e| e.code),
            Err("InvalidSignatureException")
        );
        v.region = "us-east-1".into();
        v.keys.insert(
            "AKIAIOSFODNN7EXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEz".into(),
        );
        assert_eq!(
            verify(&v, &req, &sha256(b"")).map_err(|e| e.code),
            Err("InvalidSignatureException")
        );
        v.keys.clear();
        assert_eq!(
            verify(&v, &req, &sha256(b"")).map_err(|e| (e.status, e.code)),
            Err((403, "UnrecognizedClientException"))
        );
        v.enabled = false;
        assert_eq!(verify(&v, &req, &sha256(b"x")), Ok(()));
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/-/vaults/a%20b"), "/-/vaults/a%2520b");
        assert_eq!(canonical_path("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_path("/-/vaults/.."), "/-/");
        assert_eq!(
            canonical_query("marker=a%2Bb&limit=10&completed=true&x"),
            "completed=true&limit=10&marker=a%2Bb&x="
        );
        assert_eq!(canonical_query("a=b+c&a=b%20a"), "a=b%20a&a=b%20c");
        assert_eq!(trim_all(b"  a   b  c "), b"a b c");
        assert_eq!(trim_all(b"   "), b"");
    }

    #[test]
    fn malformed_authorization_is_incomplete() {
        let v = Verifier {
            enabled: true,
            region: "us-east-1".into(),
            keys: default_keys(),
        };
        let with = |auth: &str| {
            let req = request(
                "GET",
                "/-/vaults",
                &[
                    ("host", "h"),
                    ("x-amz-date", "20260101T000000Z"),
                    ("authorization", auth),
                ],
                b"",
            );
            verify(&v, &req, &sha256(b"")).map_err(|e| (e.status, e.code))
        };
        let incomplete = Err((400, "IncompleteSignatureException"));
        assert_eq!(
            with("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"),
            incomplete
        );
        assert_eq!(with("AWS AKIDEMULATOR:abc"), incomplete);
        assert_eq!(
            with("AWS4-HMAC-SHA256 Credential=AKIDEMULATOR/20260101, SignedHeaders=host, Signature=0"),
            incomplete
        );
        let none = request("GET", "/-/vaults", &[("host", "h")], b"");
        assert_eq!(
            verify(&v, &none, &sha256(b"")).map_err(|e| (e.status, e.code)),
            Err((403, "MissingAuthenticationTokenException"))
        );
    }
}
