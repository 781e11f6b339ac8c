//! S3's side of an exchange: which operation a path-style request is, S3's XML error shape,
//! the XML the responses are written in and the one request body read as XML (the part list
//! of CompleteMultipartUpload), and the request headers every write reads (metadata, storage
//! class, checksums), each checked as S3 checks it.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::S3Op;
use crate::util::{percent_decode, Digest};
use crate::wire::{ApiError, Body, Request, Response};

/// User metadata may take this many bytes, names (without `x-amz-meta-`) and values counted.
const METADATA_LIMIT: usize = 2048;
/// The longest key S3 accepts, in UTF-8 bytes.
const KEY_LIMIT: usize = 1024;
pub(crate) const STORAGE_CLASSES: [&str; 6] = [
    "STANDARD",
    "STANDARD_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
];
const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// A routed S3 request: the operation, and the bucket and key the path names (the key empty
/// for bucket operations), both percent-decoded.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub op: S3Op,
    pub bucket: String,
    pub key: String,
}

/// Routes a path-style request. Only an undecodable path is an error; anything unmatched is
/// [`S3Op::Unknown`], still counted.
pub(crate) fn route(req: &Request) -> Result<Target, ApiError> {
    let raw = req.path.strip_prefix('/').unwrap_or(&req.path);
    let (raw_bucket, raw_key) = raw.split_once('/').unwrap_or((raw, ""));
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidURI",
                "Couldn't parse the specified URI: malformed percent-encoding.",
            )
        })
    };
    let bucket = decode(raw_bucket)?;
    let key = decode(raw_key)?;
    let has = |name: &str| req.query(name).is_some();
    // Sub-resources this emulator does not serve (`?acl`, `?versioning`, …) must not be
    // mistaken for the plain operation on the same path.
    let plain = req
        .query
        .iter()
        .all(|(k, _)| matches!(k.as_str(), "x-id" | "partNumber" | "versionId"));
    let copy = req.header("x-amz-copy-source").is_some();
    let op = match (req.method.as_str(), bucket.is_empty(), key.is_empty()) {
        (_, true, _) => S3Op::Unknown,
        ("PUT", false, true) if plain => S3Op::CreateBucket,
        ("HEAD", false, true) => S3Op::HeadBucket,
        ("DELETE", false, true) if plain => S3Op::DeleteBucket,
        ("GET", false, true) if req.query("list-type") == Some("2") => S3Op::ListObjectsV2,
        ("GET", false, true) if has("uploads") => S3Op::ListMultipartUploads,
        ("PUT", false, false) if has("uploadId") && has("partNumber") && !copy => S3Op::UploadPart,
        ("PUT", false, false) if plain && copy => S3Op::CopyObject,
        ("PUT", false, false) if plain => S3Op::PutObject,
        ("GET", false, false) if has("uploadId") => S3Op::ListParts,
        ("GET", false, false) if plain => S3Op::GetObject,
        ("HEAD", false, false) if plain => S3Op::HeadObject,
        ("DELETE", false, false) if has("uploadId") => S3Op::AbortMultipartUpload,
        ("DELETE", false, false) if plain => S3Op::DeleteObject,
        ("POST", false, false) if has("uploads") => S3Op::CreateMultipartUpload,
        ("POST", false, false) if has("uploadId") => S3Op::CompleteMultipartUpload,
        _ => S3Op::Unknown,
    };
    Ok(Target { op, bucket, key })
}

// ---------------------------------------------------------------------------------------------
// Errors.

pub(crate) fn err(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

pub(crate) fn no_such_bucket() -> ApiError {
    err(404, "NoSuchBucket", "The specified bucket does not exist")
}

pub(crate) fn no_such_key() -> ApiError {
    err(404, "NoSuchKey", "The specified key does not exist.")
}

pub(crate) fn no_such_upload() -> ApiError {
    err(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may \
         have been aborted or completed.",
    )
}

pub(crate) fn invalid_argument(message: impl Into<String>) -> ApiError {
    err(400, "InvalidArgument", message)
}

pub(crate) fn bad_digest(what: &str) -> ApiError {
    err(
        400,
        "BadDigest",
        format!("The {what} you specified did not match the calculated checksum."),
    )
}

/// Renders an error as S3 does: the XML document, or for HEAD (which has no body) the status
/// alone.
pub(crate) fn error_response(e: &ApiError, head: bool) -> Response {
    if head {
        return Response::empty(e.status).with_header("Content-Length", "0");
    }
    let mut x = Xml::new();
    x.text("Code", e.code);
    x.text("Message", &e.message);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>{}</Error>",
        x.out
    );
    Response::empty(e.status)
        .with_header("Content-Type", "application/xml")
        .with_body(Body::new(body.into_bytes()))
}

/// Maps a signature failure, found with Glacier's codes by `sigv4`, to S3's codes.
pub(crate) fn signature_error(e: ApiError) -> ApiError {
    match e.code {
        "MissingAuthenticationTokenException" => err(403, "AccessDenied", "Access Denied"),
        "IncompleteSignatureException" => err(400, "AuthorizationHeaderMalformed", e.message),
        "UnrecognizedClientException" => err(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ),
        _ => err(403, "SignatureDoesNotMatch", e.message),
    }
}

// ---------------------------------------------------------------------------------------------
// XML.

/// Escapes text for an element: the five XML entities, and control characters as references.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push_str(&format!("&#x{:X};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A response document under construction.
pub(crate) struct Xml {
    out: String,
}

impl Xml {
    pub fn new() -> Xml {
        Xml { out: String::new() }
    }

    pub fn text(&mut self, name: &str, value: &str) {
        self.out
            .push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }

    pub fn opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.text(name, v);
        }
    }

    pub fn open(&mut self, name: &str) {
        self.out.push_str(&format!("<{name}>"));
    }

    pub fn close(&mut self, name: &str) {
        self.out.push_str(&format!("</{name}>"));
    }

    /// The owner and initiator elements of uploads: the emulator is one account.
    pub fn owner(&mut self, name: &str) {
        self.open(name);
        self.text("ID", "emulator");
        self.text("DisplayName", "emulator");
        self.close(name);
    }

    /// A 200 response with this document under `root`.
    pub fn into_response(self, root: &str) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{XMLNS}\">{}</{root}>",
            self.out
        );
        Response::empty(200)
            .with_header("Content-Type", "application/xml")
            .with_body(Body::new(body.into_bytes()))
    }
}

/// Replaces the predefined entities and character references of XML text.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';')? + at;
        let entity = &rest[at + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match entity.strip_prefix("#x") {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => entity.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The text of each `<name>…</name>` element in `doc`, in order (flat: no nesting of `name`).
fn elements<'a>(doc: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// One part as CompleteMultipartUpload lists it.
#[derive(Debug)]
pub(crate) struct ListedPart {
    pub number: u32,
    pub etag: String,
    pub checksum_sha256: Option<String>,
}

/// Reads the part list of a CompleteMultipartUpload body.
pub(crate) fn parse_part_list(body: &[u8]) -> Result<Vec<ListedPart>, ApiError> {
    let malformed = || {
        err(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our \
             published schema",
        )
    };
    let doc = std::str::from_utf8(body).map_err(|_| malformed())?;
    if !doc.contains("<CompleteMultipartUpload") || !doc.contains("</CompleteMultipartUpload>") {
        return Err(malformed());
    }
    let one = |part: &str, name: &str| -> Result<Option<String>, ApiError> {
        match elements(part, name)[..] {
            [] => Ok(None),
            [text] => unescape(text.trim()).map(Some).ok_or_else(malformed),
            _ => Err(malformed()),
        }
    };
    let mut parts = Vec::new();
    for part in elements(doc, "Part") {
        let number = one(part, "PartNumber")?
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(malformed)?;
        let etag = one(part, "ETag")?.ok_or_else(malformed)?;
        let checksum_sha256 = one(part, "ChecksumSHA256")?;
        parts.push(ListedPart {
            number,
            etag,
            checksum_sha256,
        });
    }
    if parts.is_empty() {
        return Err(malformed());
    }
    Ok(parts)
}

// ---------------------------------------------------------------------------------------------
// Request headers.

/// A key S3 would store: at most 1,024 bytes.
pub(crate) fn check_key(key: &str) -> Result<(), ApiError> {
    if key.len() > KEY_LIMIT {
        return Err(err(400, "KeyTooLongError", "Your key is too long"));
    }
    Ok(())
}

/// The user metadata: `x-amz-meta-*` headers, names lower-cased and without the prefix, a
/// repeated header's values joined with commas. Over 2 KiB in total is MetadataTooLarge.
pub(crate) fn metadata(req: &Request) -> Result<BTreeMap<String, String>, ApiError> {
    let mut meta: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &req.headers {
        let Some(short) = name.strip_prefix("x-amz-meta-") else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        meta.entry(short.to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let size: usize = meta.iter().map(|(n, v)| n.len() + v.len()).sum();
    if size > METADATA_LIMIT {
        return Err(err(
            400,
            "MetadataTooLarge",
            format!(
                "Your metadata headers exceed the maximum allowed metadata size ({size} bytes, \
                 at most {METADATA_LIMIT})"
            ),
        ));
    }
    Ok(meta)
}

/// The storage class asked for; STANDARD when none is.
pub(crate) fn storage_class(req: &Request) -> Result<String, ApiError> {
    match req.header_str("x-amz-storage-class") {
        None => Ok("STANDARD".into()),
        Some(c) if STORAGE_CLASSES.contains(&c) => Ok(c.to_string()),
        Some(_) => Err(err(
            400,
            "InvalidStorageClass",
            "The storage class you specified is not valid",
        )),
    }
}

pub(crate) fn content_type(req: &Request) -> String {
    req.header_str("content-type")
        .unwrap_or("binary/octet-stream")
        .to_string()
}

/// A base64 SHA-256 as sent in `x-amz-checksum-sha256` (or its trailer), decoded.
pub(crate) fn decode_sha256(value: &str) -> Result<Digest, ApiError> {
    B64.decode(value.trim())
        .ok()
        .and_then(|raw| Digest::try_from(raw.as_slice()).ok())
        .ok_or_else(|| {
            err(
                400,
                "InvalidRequest",
                "Value for x-amz-checksum-sha256 header is invalid.",
            )
        })
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Checks a body against the digests it was sent with: `Content-MD5` and the SHA-256 checksum
/// (header or `aws-chunked` trailer). A mismatch is BadDigest, before anything is stored.
pub(crate) fn check_digests(
    req: &Request,
    claimed_sha256: Option<&str>,
    md5: &[u8; 16],
    sha256: &Digest,
) -> Result<(), ApiError> {
    // An SDK that names an algorithm but sends no checksum (it computes only when required):
    // S3 refuses the request rather than guess.
    let named = req.header("x-amz-sdk-checksum-algorithm").is_some();
    let sent = req.header("x-amz-trailer").is_some()
        || req
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("x-amz-checksum-") && n != "x-amz-checksum-type");
    if named && !sent {
        return Err(err(
            400,
            "InvalidRequest",
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or \
             x-amz-trailer headers were found.",
        ));
    }
    if let Some(sent) = req.header_str("content-md5") {
        let raw = B64.decode(sent.trim()).ok().filter(|r| r.len() == 16);
        let Some(raw) = raw else {
            return Err(err(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            ));
        };
        if raw != md5 {
            return Err(err(
                400,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
    }
    if let Some(sent) = claimed_sha256 {
        if &decode_sha256(sent)? != sha256 {
            return Err(bad_digest("SHA256"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_lists_are_read_with_entities() {
        let body = br#"<?xml version="1.0"?><CompleteMultipartUpload xmlns="x"><Part><ETag>&quot;ab&quot;</ETag><PartNumber>1</PartNumber><ChecksumSHA256>a+b/c=</ChecksumSHA256></Part><Part><PartNumber>3</PartNumber><ETag>cd</ETag></Part></CompleteMultipartUpload>"#;
        let parts = parse_part_list(body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].number, parts[0].etag.as_str()), (1, "\"ab\""));
        assert_eq!(parts[0].checksum_sha256.as_deref(), Some("a+b/c="));
        assert_eq!(
            (parts[1].number, parts[1].checksum_sha256.clone()),
            (3, None)
        );
        assert_eq!(
            parse_part_list(b"<CompleteMultipartUpload></CompleteMultipartUpload>")
                .unwrap_err()
                .code,
            "MalformedXML"
        );
        assert_eq!(unescape("a&#x41;&#66;&lt;"), Some("aAB<".into()));
        assert_eq!(escape("a\"<&'>\n"), "a&quot;&lt;&amp;&apos;&gt;&#xA;");
    }
}
