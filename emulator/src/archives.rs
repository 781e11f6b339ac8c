//! Archive operations: UploadArchive, DeleteArchive, and the multipart upload family
//! (Initiate, UploadPart, Complete, Abort, ListParts, ListMultipartUploads).

use serde_json::{json, Value};

use super::api::{check_body_hashes, description_header, BodyHashes};
use super::router::Route;
use super::state::{Finished, Part, State, Upload};
use super::util::{decode_marker, encode_marker, iso_ms, tree_of, MIB};
use super::wire::{parse_limit, ApiError, ApiResult, Request, Response};

const MAX_SINGLE_UPLOAD: u64 = 4 << 30;
const MAX_PARTS: u64 = 10_000;
const UPLOAD_MARKER: &str = "upl";

fn archive_created(st: &State, vault: &str, id: &str, tree_hash: &str) -> Response {
    Response::empty(201)
        .with_header("Location", st.location(&format!("{vault}/archives/{id}")))
        .with_header("x-amz-archive-id", id)
        .with_header("x-amz-sha256-tree-hash", tree_hash)
}

pub(crate) fn upload(st: &mut State, req: &Request, route: &Route, h: &BodyHashes) -> ApiResult {
    st.vault(&route.vault)?;
    let description = description_header(req)?;
    let size = req.body.len() as u64;
    if size == 0 {
        return Err(ApiError::invalid(
            "Invalid Content-Length: an archive holds at least 1 byte",
        ));
    }
    if size > MAX_SINGLE_UPLOAD {
        return Err(ApiError::invalid(format!(
            "Invalid Content-Length {size}: a single upload is at most 4 GiB"
        )));
    }
    check_body_hashes(req, h)?;
    let now = st.now_ms;
    let id = st.add_archive_hashed(
        &route.vault,
        description,
        req.body.clone(),
        h.chunks.clone(),
        h.tree,
        now,
    );
    Ok(archive_created(st, &route.vault, &id, &hex::encode(h.tree)))
}

pub(crate) fn delete(st: &mut State, route: &Route) -> ApiResult {
    st.vault(&route.vault)?;
    if !st.remove_archive(&route.vault, &route.id) {
        return Err(ApiError::not_found(format!(
            "Archive not found: {}",
            route.id
        )));
    }
    Ok(Response::empty(204))
}

pub(crate) fn initiate_multipart(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    st.vault(&route.vault)?;
    let raw = req
        .header_str("x-amz-part-size")
        .ok_or_else(|| ApiError::missing("Required header missing: x-amz-part-size"))?;
    let part_size = raw
        .parse::<u64>()
        .ok()
        .filter(|n| n.is_power_of_two() && (MIB..=4096 * MIB).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid part size {raw}: it must be 1 MiB times a power of two, up to 4 GiB"
            ))
        })?;
    let description = description_header(req)?;
    let id = st.new_id(92);
    let seq = st.next_seq();
    let now = st.now_ms;
    let upload = Upload {
        id: id.clone(),
        description,
        part_size,
        created_ms: now,
        last_activity_ms: now,
        seq,
        parts: Default::default(),
    };
    let location = st.location(&format!("{}/multipart-uploads/{id}", route.vault));
    st.vault_mut(&route.vault)?
        .uploads
        .insert(id.clone(), upload);
    Ok(Response::empty(201)
        .with_header("Location", location)
        .with_header("x-amz-multipart-upload-id", id))
}

fn upload_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Multipart upload not found: {id}"))
}

/// Parses `bytes S-E/*`.
fn parse_content_range(raw: &str) -> Option<(u64, u64)> {
    let rest = raw.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    if total != "*" {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    let (s, e) = (s.parse().ok()?, e.parse().ok()?);
    (s <= e).then_some((s, e))
}

pub(crate) fn upload_part(
    st: &mut State,
    req: &Request,
    route: &Route,
    h: &BodyHashes,
) -> ApiResult {
    let now = st.now_ms;
    let v = st.vault_mut(&route.vault)?;
    let upload = v
        .uploads
        .get_mut(&route.id)
        .ok_or_else(|| upload_not_found(&route.id))?;
    let raw = req
        .header_str("content-range")
        .ok_or_else(|| ApiError::missing("Required header missing: Content-Range"))?;
    let (start, end) = parse_content_range(raw).ok_or_else(|| {
        ApiError::invalid(format!("Invalid Content-Range '{raw}': use 'bytes S-E/*'"))
    })?;
    let len = end - start + 1;
    let ps = upload.part_size;
    if start % ps != 0 || len > ps || start / ps >= MAX_PARTS {
        return Err(ApiError::invalid(format!(
            "Content-Range {start}-{end} does not fit part size {ps}: a part starts at a multiple \
             of the part size and is at most one part long"
        )));
    }
    if len != req.body.len() as u64 {
        return Err(ApiError::invalid(format!(
            "Content-Range length {len} does not match the body length {}",
            req.body.len()
        )));
    }
    check_body_hashes(req, h)?;
    // A re-upload of the same range replaces the earlier part.
    upload.parts.insert(
        start,
        Part {
            data: req.body.clone(),
            chunks: h.chunks.clone(),
            tree_hash: h.tree,
        },
    );
    upload.last_activity_ms = now;
    Ok(Response::empty(204).with_header("x-amz-sha256-tree-hash", hex::encode(h.tree)))
}

pub(crate) fn complete_multipart(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let Some(upload) = v.uploads.get(&route.id) else {
        // Completing again returns the archive the first Complete made.
        return match v.finished_uploads.get(&route.id) {
            Some(Finished::Completed {
                archive_id,
                tree_hash,
                ..
            }) => {
                let (id, hash) = (archive_id.clone(), hex::encode(tree_hash));
                Ok(archive_created(st, &route.vault, &id, &hash))
            }
            _ => Err(upload_not_found(&route.id)),
        };
    };
    let raw_size = req
        .header_str("x-amz-archive-size")
        .ok_or_else(|| ApiError::missing("Required header missing: x-amz-archive-size"))?;
    let size: u64 = raw_size
        .parse()
        .map_err(|_| ApiError::invalid(format!("Invalid x-amz-archive-size '{raw_size}'")))?;
    let sent_hash = req
        .header_str("x-amz-sha256-tree-hash")
        .ok_or_else(|| ApiError::missing("Required header missing: x-amz-sha256-tree-hash"))?;

    // The parts must tile [0, size): every part full except the last. On any failure the upload
    // stays open so the client can fix it and retry.
    let mut expected = 0u64;
    let count = upload.parts.len();
    for (i, (&start, part)) in upload.parts.iter().enumerate() {
        if start != expected {
            return Err(ApiError::invalid(format!(
                "Missing part: no data for range {expected}-{}",
                start - 1
            )));
        }
        let len = part.data.len() as u64;
        if i + 1 < count && len != upload.part_size {
            return Err(ApiError::invalid(format!(
                "Part {start}-{} is shorter than the part size {} and is not the last part",
                start + len - 1,
                upload.part_size
            )));
        }
        expected += len;
    }
    if count == 0 || expected != size {
        return Err(ApiError::invalid(format!(
            "Archive size mismatch: x-amz-archive-size is {size} but the parts hold {expected} bytes"
        )));
    }
    // Non-last parts are whole MiBs, so their chunk hashes concatenate into the archive's.
    let chunks: Vec<_> = upload
        .parts
        .values()
        .flat_map(|p| p.chunks.iter().copied())
        .collect();
    let tree = tree_of(&chunks);
    let actual = hex::encode(tree);
    if !sent_hash.eq_ignore_ascii_case(&actual) {
        return Err(ApiError::invalid(format!(
            "Checksum mismatch: expected {sent_hash} (calculated {actual})"
        )));
    }
    let mut data = Vec::with_capacity(size as usize);
    for part in upload.parts.values() {
        data.extend_from_slice(&part.data);
    }
    let description = upload.description.clone();
    let now = st.now_ms;
    let id = st.add_archive_hashed(&route.vault, description, data, chunks, tree, now);
    let v = st.vault_mut(&route.vault)?;
    v.uploads.remove(&route.id);
    v.finished_uploads.insert(
        route.id.clone(),
        Finished::Completed {
            archive_id: id.clone(),
            tree_hash: tree,
            at_ms: now,
        },
    );
    Ok(archive_created(st, &route.vault, &id, &actual))
}

pub(crate) fn abort_multipart(st: &mut State, route: &Route) -> ApiResult {
    let now = st.now_ms;
    let v = st.vault_mut(&route.vault)?;
    if v.uploads.remove(&route.id).is_some() {
        v.finished_uploads
            .insert(route.id.clone(), Finished::Aborted { at_ms: now });
        return Ok(Response::empty(204));
    }
    match v.finished_uploads.get(&route.id) {
        Some(Finished::Aborted { .. }) => Ok(Response::empty(204)),
        Some(Finished::Completed { .. }) => Err(ApiError::not_found(format!(
            "Multipart upload {} has been completed and cannot be aborted",
            route.id
        ))),
        None => Err(upload_not_found(&route.id)),
    }
}

fn upload_description(u: &Upload) -> Value {
    if u.description.is_empty() {
        Value::Null
    } else {
        json!(u.description)
    }
}

pub(crate) fn list_parts(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let upload = v
        .uploads
        .get(&route.id)
        .ok_or_else(|| upload_not_found(&route.id))?;
    let limit = parse_limit(req, 50)?;
    // The marker is the start offset of the next part to list.
    let from = match req.query("marker") {
        None | Some("") => 0,
        Some(m) => m
            .parse::<u64>()
            .map_err(|_| ApiError::invalid(format!("Invalid marker '{m}'")))?,
    };
    let mut parts = upload.parts.range(from..);
    let page: Vec<Value> = parts
        .by_ref()
        .take(limit)
        .map(|(start, p)| {
            json!({
                "RangeInBytes": format!("{}-{}", start, start + p.data.len() as u64 - 1),
                "SHA256TreeHash": hex::encode(p.tree_hash),
            })
        })
        .collect();
    let marker = parts
        .next()
        .map_or(Value::Null, |(start, _)| json!(start.to_string()));
    Ok(Response::json(
        200,
        &json!({
            "ArchiveDescription": upload_description(upload),
            "CreationDate": iso_ms(upload.created_ms),
            "Marker": marker,
            "MultipartUploadId": upload.id,
            "PartSizeInBytes": upload.part_size,
            "Parts": page,
            "VaultARN": st.vault_arn(&route.vault),
        }),
    ))
}

pub(crate) fn list_uploads(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let limit = parse_limit(req, 50)?;
    let from = match req.query("marker") {
        None | Some("") => 0,
        Some(m) => match decode_marker(UPLOAD_MARKER, m).as_deref() {
            Some([seq]) => *seq as u64,
            _ => return Err(ApiError::invalid(format!("Invalid marker '{m}'"))),
        },
    };
    let mut uploads: Vec<&Upload> = v.uploads.values().filter(|u| u.seq >= from).collect();
    uploads.sort_by_key(|u| u.seq);
    let arn = st.vault_arn(&route.vault);
    let page: Vec<Value> = uploads
        .iter()
        .take(limit)
        .map(|u| {
            json!({
                "ArchiveDescription": upload_description(u),
                "CreationDate": iso_ms(u.created_ms),
                "MultipartUploadId": u.id,
                "PartSizeInBytes": u.part_size,
                "VaultARN": arn,
            })
        })
        .collect();
    let marker = uploads.get(limit).map_or(Value::Null, |u| {
        json!(encode_marker(UPLOAD_MARKER, &[u.seq as i64]))
    });
    Ok(Response::json(
        200,
        &json!({ "Marker": marker, "UploadsList": page }),
    ))
}
