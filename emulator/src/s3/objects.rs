//! Buckets and whole objects: CreateBucket, HeadBucket, DeleteBucket, ListObjectsV2, PutObject,
//! GetObject, HeadObject, DeleteObject and CopyObject.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::state::{md5, valid_bucket_name, Bucket, Object, S3State};
use super::wire::{self, err, invalid_argument, no_such_key, Xml};
use super::Ctx;
use crate::util::{http_date, iso_ms, percent_decode, sha256};
use crate::wire::{ApiError, ApiResult, Body, Request, Response};

pub(crate) fn create_bucket(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    if !valid_bucket_name(c.bucket) {
        return Err(err(
            400,
            "InvalidBucketName",
            "The specified bucket is not valid.",
        ));
    }
    if st.buckets.contains_key(c.bucket) {
        return Err(err(
            409,
            "BucketAlreadyOwnedByYou",
            "Your previous request to create the named bucket succeeded and you already own it.",
        ));
    }
    st.buckets.insert(c.bucket.to_string(), Bucket::default());
    Ok(Response::empty(200)
        .with_header("Location", format!("/{}", c.bucket))
        .with_header("Content-Length", "0"))
}

pub(crate) fn head_bucket(st: &S3State, c: &Ctx<'_>) -> ApiResult {
    st.bucket(c.bucket)?;
    Ok(Response::empty(200)
        .with_header("x-amz-bucket-region", c.region)
        .with_header("Content-Length", "0"))
}

pub(crate) fn delete_bucket(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    let b = st.bucket(c.bucket)?;
    if !b.objects.is_empty() || !b.uploads.is_empty() {
        return Err(err(
            409,
            "BucketNotEmpty",
            "The bucket you tried to delete is not empty",
        ));
    }
    st.buckets.remove(c.bucket);
    Ok(Response::empty(204))
}

/// An integer query parameter within `0..=max`, `max` when absent.
pub(crate) fn limit(req: &Request, name: &str, max: usize) -> Result<usize, ApiError> {
    match req.query(name) {
        None => Ok(max),
        Some(v) => v.parse::<usize>().map(|n| n.min(max)).map_err(|_| {
            invalid_argument(format!(
                "Provided {name} not an integer or within integer range"
            ))
        }),
    }
}

/// One entry of a listing: an object, or a common prefix standing for all keys under it.
enum Entry<'a> {
    Object(&'a str, &'a Object),
    Prefix(String),
}

pub(crate) fn list_objects_v2(st: &S3State, c: &Ctx<'_>) -> ApiResult {
    let b = st.bucket(c.bucket)?;
    let req = c.req;
    let prefix = req.query("prefix").unwrap_or("");
    let delimiter = req.query("delimiter").filter(|d| !d.is_empty());
    let max_keys = limit(req, "max-keys", 1000)?;
    let token = req.query("continuation-token");
    // The token names the last entry returned: `k` a key, `p` a common prefix.
    let (start, mut skip_prefix) = match token {
        Some(t) => {
            let bad = || invalid_argument("The continuation token provided is incorrect");
            let raw = URL_SAFE_NO_PAD.decode(t).map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            match text.split_at_checked(1) {
                Some(("k", key)) => (key.to_string(), None),
                Some(("p", p)) => (p.to_string(), Some(p.to_string())),
                _ => return Err(bad()),
            }
        }
        None => (req.query("start-after").unwrap_or("").to_string(), None),
    };
    let mut entries: Vec<Entry<'_>> = Vec::new();
    let range = (Bound::Excluded(start.as_str()), Bound::Unbounded);
    for (key, obj) in b.objects.range::<str, _>(range) {
        if !key.starts_with(prefix) || skip_prefix.as_deref().is_some_and(|p| key.starts_with(p)) {
            continue;
        }
        if entries.len() > max_keys {
            break;
        }
        let common = delimiter.and_then(|d| {
            let rest = &key[prefix.len()..];
            rest.find(d)
                .map(|at| format!("{prefix}{}", &rest[..at + d.len()]))
        });
        match common {
            Some(p) => {
                skip_prefix = Some(p.clone());
                entries.push(Entry::Prefix(p));
            }
            None => entries.push(Entry::Object(key, obj)),
        }
    }
    // max-keys=0 asks for nothing, and there is no entry to continue after.
    let truncated = entries.len() > max_keys && max_keys > 0;
    entries.truncate(max_keys);
    let next = match entries.last() {
        Some(Entry::Object(k, _)) if truncated => Some(format!("k{k}")),
        Some(Entry::Prefix(p)) if truncated => Some(format!("p{p}")),
        _ => None,
    };
    let mut x = Xml::new();
    x.text("Name", c.bucket);
    x.text("Prefix", prefix);
    x.opt("Delimiter", delimiter);
    x.text("MaxKeys", &max_keys.to_string());
    x.text("KeyCount", &entries.len().to_string());
    x.text("IsTruncated", &truncated.to_string());
    x.opt("ContinuationToken", token);
    x.opt(
        "NextContinuationToken",
        next.map(|n| URL_SAFE_NO_PAD.encode(n)).as_deref(),
    );
    x.opt("StartAfter", req.query("start-after"));
    for e in &entries {
        match e {
            Entry::Object(key, obj) => {
                x.open("Contents");
                x.text("Key", key);
                x.text("LastModified", &iso_ms(obj.modified_ms));
                x.text("ETag", &obj.etag);
                if obj.checksum_sha256.is_some() {
                    x.text("ChecksumAlgorithm", "SHA256");
                }
                x.text("Size", &obj.data.len().to_string());
                x.text("StorageClass", &obj.storage_class);
                x.close("Contents");
            }
            Entry::Prefix(p) => {
                x.open("CommonPrefixes");
                x.text("Prefix", p);
                x.close("CommonPrefixes");
            }
        }
    }
    Ok(x.into_response("ListBucketResult"))
}

fn etag_matches(condition: &str, etag: &str) -> bool {
    condition
        .split(',')
        .map(|c| c.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|c| c == "*" || c == etag.trim_matches('"'))
}

fn precondition_failed() -> ApiError {
    err(
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// The conditional writes S3 supports (PutObject, CompleteMultipartUpload): `If-None-Match: *`
/// (only if no object has the key) and `If-Match: ETAG` (only over that object).
pub(crate) fn check_write_conditions(
    req: &Request,
    existing: Option<&Object>,
) -> Result<(), ApiError> {
    if let Some(cond) = req.header_str("if-none-match") {
        if cond.trim() != "*" {
            return Err(err(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented: \
                 If-None-Match on a write takes only '*'",
            ));
        }
        if existing.is_some() {
            return Err(precondition_failed());
        }
    }
    if let Some(cond) = req.header_str("if-match") {
        let obj = existing.ok_or_else(no_such_key)?;
        if !etag_matches(cond, &obj.etag) {
            return Err(precondition_failed());
        }
    }
    Ok(())
}

/// The SHA-256 checksum header on a response: the stored value, or nothing.
fn with_checksum(resp: Response, checksum: Option<&str>) -> Response {
    match checksum {
        Some(v) => resp.with_header("x-amz-checksum-sha256", v),
        None => resp,
    }
}

pub(crate) fn put_object(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    wire::check_key(c.key)?;
    let metadata = wire::metadata(c.req)?;
    let storage_class = wire::storage_class(c.req)?;
    let digests = c.digests()?;
    let b = st.bucket_mut(c.bucket)?;
    wire::check_digests(c.req, c.claimed_sha256, &digests.md5, &digests.sha256)?;
    check_write_conditions(c.req, b.objects.get(c.key))?;
    let etag = format!("\"{}\"", hex::encode(digests.md5));
    let checksum = c.claimed_sha256.map(|_| wire::b64(&digests.sha256));
    b.objects.insert(
        c.key.to_string(),
        Object {
            data: Arc::new(c.req.body.clone()),
            etag: etag.clone(),
            metadata,
            storage_class,
            checksum_sha256: checksum.clone(),
            parts: 0,
            content_type: wire::content_type(c.req),
            modified_ms: c.now_ms,
        },
    );
    let resp = Response::empty(200).with_header("ETag", etag);
    Ok(with_checksum(resp, checksum.as_deref()))
}

/// A single `bytes=` range, as (first, last) inclusive, clamped to the object; None for no
/// Range header or one S3 would ignore (several ranges, unreadable); Err when unsatisfiable.
fn byte_range(req: &Request, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(spec) = req
        .header_str("range")
        .and_then(|r| r.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    let Some((a, b)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        err(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
        )
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(first), last) if !a.is_empty() && (b.is_empty() || last.is_some()) => {
            let last = last.unwrap_or(u64::MAX).min(size.saturating_sub(1));
            if first >= size || last < first {
                return Err(unsatisfiable());
            }
            (first, last)
        }
        (None, Some(n)) if a.is_empty() => {
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        _ => return Ok(None),
    };
    Ok(Some(range))
}

/// GetObject and HeadObject: the object, or a range of it, with its headers.
pub(crate) fn get_object(st: &S3State, c: &Ctx<'_>) -> ApiResult {
    let obj = st
        .bucket(c.bucket)?
        .objects
        .get(c.key)
        .ok_or_else(no_such_key)?;
    // If-Match first, as S3 does: a mismatch is 412; a matching If-None-Match is 304.
    if let Some(cond) = c.req.header_str("if-match") {
        if !etag_matches(cond, &obj.etag) {
            return Err(precondition_failed());
        }
    }
    if let Some(cond) = c.req.header_str("if-none-match") {
        if etag_matches(cond, &obj.etag) {
            return Ok(Response::empty(304)
                .with_header("ETag", obj.etag.clone())
                .with_header("Content-Length", "0"));
        }
    }
    let size = obj.data.len() as u64;
    let range = byte_range(c.req, size)?;
    let (first, end) = range.map_or((0, size), |(f, l)| (f, l + 1));
    let mut resp = Response::empty(if range.is_some() { 206 } else { 200 })
        .with_header("ETag", obj.etag.clone())
        .with_header("Last-Modified", http_date(obj.modified_ms))
        .with_header("Content-Type", obj.content_type.clone())
        .with_header("Accept-Ranges", "bytes");
    if let Some((f, l)) = range {
        resp = resp.with_header("Content-Range", format!("bytes {f}-{l}/{size}"));
    }
    if obj.storage_class != "STANDARD" {
        resp = resp.with_header("x-amz-storage-class", obj.storage_class.clone());
    }
    for (name, value) in &obj.metadata {
        resp = resp.with_header(&format!("x-amz-meta-{name}"), value.clone());
    }
    if obj.parts > 0 {
        resp = resp.with_header("x-amz-mp-parts-count", obj.parts.to_string());
    }
    let checksum_mode = c
        .req
        .header_str("x-amz-checksum-mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("ENABLED"));
    // A range is not the object the checksum is of, so S3 leaves it out.
    if checksum_mode && range.is_none() {
        if let Some(sum) = &obj.checksum_sha256 {
            let kind = if obj.parts > 0 {
                "COMPOSITE"
            } else {
                "FULL_OBJECT"
            };
            resp = resp
                .with_header("x-amz-checksum-sha256", sum.clone())
                .with_header("x-amz-checksum-type", kind);
        }
    }
    if c.head {
        return Ok(resp.with_header("Content-Length", (end - first).to_string()));
    }
    Ok(resp.with_body(Body::slice(obj.data.clone(), first as usize, end as usize)))
}

pub(crate) fn delete_object(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    // Deleting a key that is not there succeeds, as in S3.
    st.bucket_mut(c.bucket)?.objects.remove(c.key);
    Ok(Response::empty(204))
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=…]`, URL-encoded.
fn copy_source(req: &Request) -> Result<(String, String), ApiError> {
    let raw = req.header_str("x-amz-copy-source").unwrap_or("");
    let raw = raw.split_once('?').map_or(raw, |(p, _)| p);
    let decoded = percent_decode(raw.strip_prefix('/').unwrap_or(raw));
    decoded
        .as_deref()
        .and_then(|d| d.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .map(|(b, k)| (b.to_string(), k.to_string()))
        .ok_or_else(|| invalid_argument("Invalid copy source object key"))
}

pub(crate) fn copy_object(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    wire::check_key(c.key)?;
    let (src_bucket, src_key) = copy_source(c.req)?;
    let replace = match c.req.header_str("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return Err(invalid_argument("Unknown metadata directive.")),
    };
    let storage_class = wire::storage_class(c.req)?;
    let src = st
        .bucket(&src_bucket)?
        .objects
        .get(&src_key)
        .ok_or_else(no_such_key)?;
    st.bucket(c.bucket)?;
    let to_itself = src_bucket == c.bucket && src_key == c.key;
    if to_itself && !replace && c.req.header("x-amz-storage-class").is_none() {
        return Err(err(
            400,
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself \
             without changing the object's metadata, storage class, website redirect location \
             or encryption attributes.",
        ));
    }
    let (metadata, content_type): (BTreeMap<String, String>, String) = if replace {
        (wire::metadata(c.req)?, wire::content_type(c.req))
    } else {
        (src.metadata.clone(), src.content_type.clone())
    };
    let wants_sha256 = c
        .req
        .header_str("x-amz-checksum-algorithm")
        .is_some_and(|a| a.eq_ignore_ascii_case("SHA256"));
    let checksum =
        (wants_sha256 || src.checksum_sha256.is_some()).then(|| wire::b64(&sha256(&src.data)));
    let copy = Object {
        data: src.data.clone(),
        etag: format!("\"{}\"", hex::encode(md5(&src.data))),
        metadata,
        storage_class,
        checksum_sha256: checksum,
        parts: 0,
        content_type,
        modified_ms: c.now_ms,
    };
    let mut x = Xml::new();
    x.text("ETag", &copy.etag);
    x.text("LastModified", &iso_ms(copy.modified_ms));
    x.opt("ChecksumSHA256", copy.checksum_sha256.as_deref());
    st.bucket_mut(c.bucket)?
        .objects
        .insert(c.key.to_string(), copy);
    Ok(x.into_response("CopyObjectResult"))
}
