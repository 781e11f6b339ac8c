//! Multipart uploads: CreateMultipartUpload, UploadPart, ListParts, CompleteMultipartUpload,
//! AbortMultipartUpload and ListMultipartUploads, with the checks S3 makes at Complete (part
//! order, ETags and checksums as uploaded, 5 MiB minimum for all but the last part).

use std::sync::Arc;

use super::objects::limit;
use super::state::{Completed, Object, Part, S3State, Upload};
use super::wire::{self, err, invalid_argument, no_such_upload, Xml};
use super::Ctx;
use crate::util::{iso_ms, sha256, MIB};
use crate::wire::{ApiError, ApiResult, Response};

/// The smallest a part may be unless it is the last.
const MIN_PART: usize = 5 * MIB as usize;
const MAX_PART_NUMBER: u32 = 10_000;

fn upload_id<'a>(c: &'a Ctx<'_>) -> &'a str {
    c.req.query("uploadId").unwrap_or("")
}

pub(crate) fn create(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    wire::check_key(c.key)?;
    let metadata = wire::metadata(c.req)?;
    let storage_class = wire::storage_class(c.req)?;
    let sha256 = match c.req.header_str("x-amz-checksum-algorithm") {
        None => false,
        Some(a) if a.eq_ignore_ascii_case("SHA256") => true,
        Some(a) => {
            return Err(err(
                501,
                "NotImplemented",
                format!("This emulator checks SHA256 checksums only, not {a}"),
            ))
        }
    };
    if let Some(kind) = c.req.header_str("x-amz-checksum-type") {
        if !kind.eq_ignore_ascii_case("COMPOSITE") {
            return Err(err(
                400,
                "InvalidRequest",
                format!("The {kind} checksum type cannot be used with the SHA256 algorithm."),
            ));
        }
    }
    st.bucket(c.bucket)?;
    let (id, seq) = st.next_upload();
    st.bucket_mut(c.bucket)?.uploads.insert(
        id.clone(),
        Upload {
            key: c.key.to_string(),
            seq,
            initiated_ms: c.now_ms,
            metadata,
            storage_class,
            content_type: wire::content_type(c.req),
            sha256,
            parts: Default::default(),
        },
    );
    let mut x = Xml::new();
    x.text("Bucket", c.bucket);
    x.text("Key", c.key);
    x.text("UploadId", &id);
    let mut resp = x.into_response("InitiateMultipartUploadResult");
    if sha256 {
        resp = resp
            .with_header("x-amz-checksum-algorithm", "SHA256")
            .with_header("x-amz-checksum-type", "COMPOSITE");
    }
    Ok(resp)
}

pub(crate) fn upload_part(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    let number = c
        .req
        .query("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
        })?;
    let digests = c.digests()?;
    let upload = st.bucket_mut(c.bucket)?.upload_mut(c.key, upload_id(c))?;
    if upload.sha256 && c.claimed_sha256.is_none() {
        return Err(err(
            400,
            "InvalidRequest",
            "Checksum Type mismatch occurred, expected checksum Type: sha256, actual checksum \
             Type: null",
        ));
    }
    wire::check_digests(c.req, c.claimed_sha256, &digests.md5, &digests.sha256)?;
    let part = Part {
        data: Arc::new(c.req.body.clone()),
        md5: digests.md5,
        sha256: digests.sha256,
        checksum_sha256: c.claimed_sha256.map(|_| wire::b64(&digests.sha256)),
        modified_ms: c.now_ms,
    };
    let mut resp = Response::empty(200).with_header("ETag", part.etag());
    if let Some(sum) = &part.checksum_sha256 {
        resp = resp.with_header("x-amz-checksum-sha256", sum.clone());
    }
    upload.parts.insert(number, part);
    Ok(resp)
}

pub(crate) fn list_parts(st: &S3State, c: &Ctx<'_>) -> ApiResult {
    let upload = st.bucket(c.bucket)?.upload(c.key, upload_id(c))?;
    let max_parts = limit(c.req, "max-parts", 1000)?;
    let marker = match c.req.query("part-number-marker") {
        None => 0,
        Some(m) => m
            .parse::<u32>()
            .map_err(|_| invalid_argument("Part number marker must be an integer"))?,
    };
    let after: Vec<(&u32, &Part)> = upload.parts.range(marker + 1..).collect();
    let shown = &after[..after.len().min(max_parts)];
    let truncated = after.len() > shown.len();
    let mut x = Xml::new();
    x.text("Bucket", c.bucket);
    x.text("Key", c.key);
    x.text("UploadId", upload_id(c));
    x.text("PartNumberMarker", &marker.to_string());
    if let Some((last, _)) = shown.last() {
        x.text("NextPartNumberMarker", &last.to_string());
    }
    x.text("MaxParts", &max_parts.to_string());
    x.text("IsTruncated", &truncated.to_string());
    for (number, part) in shown {
        x.open("Part");
        x.text("PartNumber", &number.to_string());
        x.text("LastModified", &iso_ms(part.modified_ms));
        x.text("ETag", &part.etag());
        x.text("Size", &part.data.len().to_string());
        x.opt("ChecksumSHA256", part.checksum_sha256.as_deref());
        x.close("Part");
    }
    x.owner("Initiator");
    x.owner("Owner");
    x.text("StorageClass", &upload.storage_class);
    if upload.sha256 {
        x.text("ChecksumAlgorithm", "SHA256");
        x.text("ChecksumType", "COMPOSITE");
    }
    Ok(x.into_response("ListPartsResult"))
}

fn complete_result(c: &Ctx<'_>, etag: &str, checksum: Option<&str>) -> Response {
    let mut x = Xml::new();
    x.text("Location", &format!("/{}/{}", c.bucket, c.key));
    x.text("Bucket", c.bucket);
    x.text("Key", c.key);
    x.text("ETag", etag);
    x.opt("ChecksumSHA256", checksum);
    if checksum.is_some() {
        x.text("ChecksumType", "COMPOSITE");
    }
    x.into_response("CompleteMultipartUploadResult")
}

fn invalid_part() -> ApiError {
    err(
        400,
        "InvalidPart",
        "One or more of the specified parts could not be found. The part may not have been \
         uploaded, or the specified entity tag may not match the part's entity tag.",
    )
}

pub(crate) fn complete(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    let listed = wire::parse_part_list(&c.req.body)?;
    let id = upload_id(c);
    let bucket = st.bucket_mut(c.bucket)?;
    if !bucket.uploads.contains_key(id) {
        // A repeat of a Complete that succeeded answers the same, while the object stands.
        return match bucket.completed.get(id) {
            Some(done)
                if done.key == c.key
                    && bucket
                        .objects
                        .get(c.key)
                        .is_some_and(|o| o.etag == done.etag) =>
            {
                Ok(complete_result(
                    c,
                    &done.etag,
                    done.checksum_sha256.as_deref(),
                ))
            }
            _ => Err(no_such_upload()),
        };
    }
    let upload = bucket.upload(c.key, id)?;
    // Checked at Complete, as S3 does; a refusal leaves the upload open.
    super::objects::check_write_conditions(c.req, bucket.objects.get(c.key))?;
    if listed.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(err(
            400,
            "InvalidPartOrder",
            "The list of parts was not in ascending order. Parts must be ordered by part number.",
        ));
    }
    let mut parts: Vec<&Part> = Vec::with_capacity(listed.len());
    for l in &listed {
        let part = upload.parts.get(&l.number).ok_or_else(invalid_part)?;
        if l.etag.trim_matches('"') != part.etag().trim_matches('"') {
            return Err(invalid_part());
        }
        match (&l.checksum_sha256, &part.checksum_sha256) {
            (Some(sent), stored) if Some(sent) != stored.as_ref() => {
                return Err(err(
                    400,
                    "InvalidPart",
                    format!(
                        "The checksum of part {} does not match the checksum it was uploaded \
                         with.",
                        l.number
                    ),
                ))
            }
            (None, _) if upload.sha256 => {
                return Err(err(
                    400,
                    "InvalidRequest",
                    format!(
                        "The upload was created using a sha256 checksum. The complete request \
                         must include the checksum for each part. It was missing for part {} \
                         in the request.",
                        l.number
                    ),
                ))
            }
            _ => {}
        }
        parts.push(part);
    }
    let last = parts.len() - 1;
    if let Some((i, small)) = parts
        .iter()
        .enumerate()
        .find(|(i, p)| *i < last && p.data.len() < MIN_PART)
    {
        return Err(err(
            400,
            "EntityTooSmall",
            format!(
                "Your proposed upload is smaller than the minimum allowed object size (part {} \
                 has {} bytes; all but the last part need at least 5 MiB).",
                listed[i].number,
                small.data.len()
            ),
        ));
    }
    let n = parts.len();
    let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    let mut md5s = Vec::with_capacity(16 * n);
    let mut shas = Vec::with_capacity(32 * n);
    for p in &parts {
        data.extend_from_slice(&p.data);
        md5s.extend_from_slice(&p.md5);
        shas.extend_from_slice(&p.sha256);
    }
    let etag = format!("\"{}-{n}\"", hex::encode(super::state::md5(&md5s)));
    let checksum = upload
        .sha256
        .then(|| format!("{}-{n}", wire::b64(&sha256(&shas))));
    let object = Object {
        data: Arc::new(data),
        etag: etag.clone(),
        metadata: upload.metadata.clone(),
        storage_class: upload.storage_class.clone(),
        checksum_sha256: checksum.clone(),
        parts: n as u32,
        content_type: upload.content_type.clone(),
        modified_ms: c.now_ms,
    };
    bucket.uploads.remove(id);
    bucket.objects.insert(c.key.to_string(), object);
    bucket.completed.insert(
        id.to_string(),
        Completed {
            key: c.key.to_string(),
            etag: etag.clone(),
            checksum_sha256: checksum.clone(),
        },
    );
    Ok(complete_result(c, &etag, checksum.as_deref()))
}

pub(crate) fn abort(st: &mut S3State, c: &Ctx<'_>) -> ApiResult {
    let bucket = st.bucket_mut(c.bucket)?;
    bucket.upload(c.key, upload_id(c))?;
    bucket.uploads.remove(upload_id(c));
    Ok(Response::empty(204))
}

pub(crate) fn list_uploads(st: &S3State, c: &Ctx<'_>) -> ApiResult {
    let bucket = st.bucket(c.bucket)?;
    let prefix = c.req.query("prefix").unwrap_or("");
    let max = limit(c.req, "max-uploads", 1000)?;
    let key_marker = c.req.query("key-marker").unwrap_or("");
    let id_marker = c
        .req
        .query("upload-id-marker")
        .filter(|_| !key_marker.is_empty());
    // With an upload id marker, the uploads of the marker's key initiated after that one
    // come first; without, the listing starts after the key.
    let seq_marker = id_marker
        .and_then(|id| bucket.uploads.get(id))
        .map_or(u64::MAX, |u| u.seq);
    let mut all: Vec<(&String, &Upload)> = bucket
        .uploads
        .iter()
        .filter(|(_, u)| u.key.starts_with(prefix))
        .filter(|(_, u)| u.key.as_str() > key_marker || (u.key == key_marker && u.seq > seq_marker))
        .collect();
    all.sort_by(|a, b| (&a.1.key, a.1.seq).cmp(&(&b.1.key, b.1.seq)));
    let shown = &all[..all.len().min(max)];
    let truncated = all.len() > shown.len();
    let mut x = Xml::new();
    x.text("Bucket", c.bucket);
    x.text("KeyMarker", key_marker);
    x.text("UploadIdMarker", id_marker.unwrap_or(""));
    if let (true, Some((id, u))) = (truncated, shown.last()) {
        x.text("NextKeyMarker", &u.key);
        x.text("NextUploadIdMarker", id);
    }
    x.text("Prefix", prefix);
    x.text("MaxUploads", &max.to_string());
    x.text("IsTruncated", &truncated.to_string());
    for (id, u) in shown {
        x.open("Upload");
        x.text("Key", &u.key);
        x.text("UploadId", id);
        x.owner("Initiator");
        x.owner("Owner");
        x.text("StorageClass", &u.storage_class);
        x.text("Initiated", &iso_ms(u.initiated_ms));
        if u.sha256 {
            x.text("ChecksumAlgorithm", "SHA256");
            x.text("ChecksumType", "COMPOSITE");
        }
        x.close("Upload");
    }
    Ok(x.into_response("ListMultipartUploadsResult"))
}
