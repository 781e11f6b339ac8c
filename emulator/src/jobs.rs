//! Job operations: InitiateJob, DescribeJob, ListJobs and GetJobOutput, with ranged output and
//! the tree-hash header on tree-hash-aligned ranges.

use serde_json::{json, Map, Value};

use super::inventory::MARKER_KIND as INVENTORY_MARKER;
use super::retrievals::Retrieval;
use super::router::Route;
use super::state::{Format, InventoryFilter, Job, JobKind, Outcome, State, Tier};
use super::util::{
    check_description, decode_marker, encode_marker, is_mib_aligned, is_tree_aligned, iso_ms,
    parse_iso, range_tree_hash,
};
use super::wire::{json_body, json_str, parse_limit, ApiError, ApiResult, Body, OutputServed};
use super::wire::{Request, Response};

const JOB_MARKER: &str = "job";

pub(crate) fn initiate(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    st.vault(&route.vault)?;
    let params = match json_body(req)? {
        Some(map) if !map.is_empty() => map,
        _ => {
            return Err(ApiError::missing(
                "Required parameter missing: Job Parameters",
            ))
        }
    };
    let kind = json_str(&params, "Type")?
        .ok_or_else(|| ApiError::missing("Required parameter missing: Type"))?;
    let description = match json_str(&params, "Description")? {
        Some(d) => Some(check_description(d.as_bytes()).map_err(ApiError::invalid)?),
        None => None,
    };
    let tier = match json_str(&params, "Tier")? {
        None => Tier::Standard,
        Some(t) => Tier::parse(t).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid Tier '{t}': use Expedited, Standard or Bulk"
            ))
        })?,
    };
    let sns_topic = json_str(&params, "SNSTopic")?.map(str::to_string);
    let range = json_str(&params, "RetrievalByteRange")?;
    let (kind, duration) = match kind {
        "archive-retrieval" => {
            let job = archive_job(st, &route.vault, &params, range)?;
            if let JobKind::Archive { first, last, .. } = &job {
                super::extras::check_retrieval(st, tier, last - first + 1)?;
            }
            let duration = match tier {
                Tier::Expedited => st.config.expedited_ms,
                Tier::Standard => st.config.standard_ms,
                Tier::Bulk => st.config.bulk_ms,
            };
            (job, duration)
        }
        "inventory-retrieval" => {
            if range.is_some() {
                return Err(ApiError::invalid(
                    "RetrievalByteRange is not allowed for an inventory-retrieval job",
                ));
            }
            let job = inventory_job(&params)?;
            let v = st.vault(&route.vault)?;
            if v.snapshot.is_none() && !st.config.auto_inventory {
                return Err(ApiError::not_found(format!(
                    "Inventory retrieval failed: the vault {} has no inventory yet",
                    st.vault_arn(&route.vault)
                )));
            }
            (job, st.config.inventory_ms)
        }
        "select" => {
            return Err(ApiError::invalid(
                "Select jobs are not supported by the emulator",
            ))
        }
        other => {
            return Err(ApiError::invalid(format!(
                "Invalid job Type '{other}': use archive-retrieval or inventory-retrieval"
            )))
        }
    };
    let id = st.new_id(92);
    let seq = st.next_seq();
    let now = st.now_ms;
    let job = Job {
        id: id.clone(),
        seq,
        kind,
        description,
        sns_topic,
        tier,
        created_ms: now,
        complete_ms: now + duration,
        outcome: None,
    };
    let location = st.location(&format!("{}/jobs/{id}", route.vault));
    let retrieval = match &job.kind {
        JobKind::Archive {
            archive,
            first,
            last,
        } => Some(Retrieval::new(
            &id,
            &route.vault,
            &archive.id,
            (*first, *last),
            now,
        )),
        JobKind::Inventory { .. } => None,
    };
    st.vault_mut(&route.vault)?.jobs.insert(id.clone(), job);
    if let Some(r) = retrieval {
        st.note_retrieval(r);
    }
    Ok(Response::empty(202)
        .with_header("Location", location)
        .with_header("x-amz-job-id", id))
}

fn archive_job(
    st: &State,
    vault: &str,
    params: &Map<String, Value>,
    range: Option<&str>,
) -> Result<JobKind, ApiError> {
    let archive_id = json_str(params, "ArchiveId")?
        .ok_or_else(|| ApiError::missing("Required parameter missing: ArchiveId"))?;
    let archive = st
        .vault(vault)?
        .archives
        .get(archive_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Archive not found: {archive_id}")))?;
    let size = archive.size();
    let (first, last) = match range {
        None => (0, size - 1),
        Some(r) => {
            let parsed = r
                .split_once('-')
                .and_then(|(s, e)| Some((s.parse::<u64>().ok()?, e.parse::<u64>().ok()?)));
            match parsed {
                Some((s, e)) if is_mib_aligned(s, e, size) => (s, e),
                _ => {
                    return Err(ApiError::invalid(format!(
                        "Invalid RetrievalByteRange '{r}' for an archive of {size} bytes: the \
                         start must be a multiple of 1 MiB and the end one less than a multiple \
                         of 1 MiB or the last byte"
                    )))
                }
            }
        }
    };
    Ok(JobKind::Archive {
        archive,
        first,
        last,
    })
}

fn inventory_job(params: &Map<String, Value>) -> Result<JobKind, ApiError> {
    let format = match json_str(params, "Format")? {
        None | Some("JSON") => Format::Json,
        Some("CSV") => Format::Csv,
        Some(f) => {
            return Err(ApiError::invalid(format!(
                "Invalid Format '{f}': use JSON or CSV"
            )))
        }
    };
    let mut filter = InventoryFilter::default();
    match params.get("InventoryRetrievalParameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            let date = |key: &str| -> Result<Option<(String, i64)>, ApiError> {
                match json_str(p, key)? {
                    None => Ok(None),
                    Some(s) => parse_iso(s)
                        .map(|ms| Some((s.to_string(), ms)))
                        .ok_or_else(|| {
                            ApiError::invalid(format!("Invalid {key} '{s}': use ISO 8601 UTC"))
                        }),
                }
            };
            filter.start = date("StartDate")?;
            filter.end = date("EndDate")?;
            if let (Some((_, s)), Some((_, e))) = (&filter.start, &filter.end) {
                if s >= e {
                    return Err(ApiError::invalid("StartDate must be earlier than EndDate"));
                }
            }
            if let Some(l) = json_str(p, "Limit")? {
                let n = l.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::invalid(format!("Invalid Limit '{l}': use an integer of 1 or more"))
                })?;
                filter.limit = Some((l.to_string(), n));
            }
            if let Some(m) = json_str(p, "Marker")? {
                match decode_marker(INVENTORY_MARKER, m).as_deref() {
                    Some([ms, seq]) => filter.marker = Some((*ms, *seq as u64)),
                    _ => return Err(ApiError::invalid(format!("Invalid inventory Marker '{m}'"))),
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "InventoryRetrievalParameters must be an object",
            ))
        }
    }
    Ok(JobKind::Inventory { format, filter })
}

fn opt(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, |s| json!(s))
}

/// DescribeJob's shape, also the elements of ListJobs. Fields that do not apply are `null`.
pub(crate) fn job_json(st: &State, vault: &str, job: &Job) -> Value {
    let done = job.outcome.is_some();
    let mut j = json!({
        "JobId": job.id,
        "JobDescription": opt(&job.description),
        "Action": job.action(),
        "VaultARN": st.vault_arn(vault),
        "CreationDate": iso_ms(job.created_ms),
        "Completed": done,
        "CompletionDate": if done { json!(iso_ms(job.complete_ms)) } else { Value::Null },
        "StatusCode": job.status_code(),
        "StatusMessage": match &job.outcome {
            None => "Operation in progress.".to_string(),
            Some(Outcome::Succeeded { .. }) => "Succeeded".to_string(),
            Some(Outcome::Failed(msg)) => msg.clone(),
        },
        "SNSTopic": opt(&job.sns_topic),
        "Tier": job.tier.as_str(),
        "ArchiveId": Value::Null,
        "ArchiveSizeInBytes": Value::Null,
        "ArchiveSHA256TreeHash": Value::Null,
        "RetrievalByteRange": Value::Null,
        "SHA256TreeHash": Value::Null,
        "InventorySizeInBytes": Value::Null,
        "InventoryRetrievalParameters": Value::Null,
    });
    match &job.kind {
        JobKind::Archive {
            archive,
            first,
            last,
        } => {
            let size = archive.size();
            let whole = *first == 0 && *last + 1 == size;
            // The range hash is known up front for an aligned sub-range, but for the whole
            // archive Glacier only reports it once the job is done.
            let range_hash = if is_tree_aligned(*first, last + 1, size) && (done || !whole) {
                json!(hex::encode(range_tree_hash(
                    &archive.chunks,
                    *first,
                    last + 1
                )))
            } else {
                Value::Null
            };
            j["ArchiveId"] = json!(archive.id);
            j["ArchiveSizeInBytes"] = json!(size);
            j["ArchiveSHA256TreeHash"] = json!(hex::encode(archive.tree_hash));
            j["RetrievalByteRange"] = json!(format!("{first}-{last}"));
            j["SHA256TreeHash"] = range_hash;
        }
        JobKind::Inventory { format, filter } => {
            let (size, next) = match &job.outcome {
                Some(Outcome::Succeeded {
                    start,
                    end,
                    next_marker,
                    ..
                }) => (json!(end - start), opt(next_marker)),
                _ => (Value::Null, Value::Null),
            };
            j["InventorySizeInBytes"] = size;
            j["InventoryRetrievalParameters"] = json!({
                "Format": match format { Format::Json => "JSON", Format::Csv => "CSV" },
                "StartDate": filter.start.as_ref().map_or(Value::Null, |(s, _)| json!(s)),
                "EndDate": filter.end.as_ref().map_or(Value::Null, |(s, _)| json!(s)),
                "Limit": filter.limit.as_ref().map_or(Value::Null, |(s, _)| json!(s)),
                "Marker": next,
            });
        }
    }
    j
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("The job ID was not found: {id}"))
}

pub(crate) fn describe(st: &mut State, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let job = v
        .jobs
        .get(&route.id)
        .ok_or_else(|| job_not_found(&route.id))?;
    Ok(Response::json(200, &job_json(st, &route.vault, job)))
}

pub(crate) fn list(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let limit = parse_limit(req, 50)?;
    let status = match req.query("statuscode") {
        None => None,
        Some(s @ ("InProgress" | "Succeeded" | "Failed")) => Some(s),
        Some(s) => {
            return Err(ApiError::invalid(format!(
                "Invalid statuscode '{s}': use InProgress, Succeeded or Failed"
            )))
        }
    };
    let completed = match req.query("completed") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(c) => {
            return Err(ApiError::invalid(format!(
                "Invalid completed '{c}': use true or false"
            )))
        }
    };
    let from = match req.query("marker") {
        None | Some("") => 0,
        Some(m) => match decode_marker(JOB_MARKER, m).as_deref() {
            Some([seq]) => *seq as u64,
            _ => return Err(ApiError::invalid(format!("Invalid marker '{m}'"))),
        },
    };
    let matching: Vec<&Job> = v
        .jobs_in_order()
        .into_iter()
        .filter(|j| j.seq >= from)
        .filter(|j| status.is_none_or(|s| j.status_code() == s))
        .filter(|j| completed.is_none_or(|c| j.outcome.is_some() == c))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|j| job_json(st, &route.vault, j))
        .collect();
    let marker = matching.get(limit).map_or(Value::Null, |j| {
        json!(encode_marker(JOB_MARKER, &[j.seq as i64]))
    });
    Ok(Response::json(
        200,
        &json!({ "JobList": page, "Marker": marker }),
    ))
}

/// Parses `bytes=S-E` or `bytes=S-` against an output of `len` bytes; E is clamped as HTTP
/// allows.
fn parse_range(raw: &str, len: u64) -> Option<(u64, u64)> {
    let spec = raw.trim().strip_prefix("bytes=")?;
    let (s, e) = spec.split_once('-')?;
    let s: u64 = s.trim().parse().ok()?;
    let e: u64 = match e.trim() {
        "" => len.checked_sub(1)?,
        e => e.parse::<u64>().ok()?.min(len.checked_sub(1)?),
    };
    (s <= e).then_some((s, e))
}

pub(crate) fn output(st: &mut State, req: &Request, route: &Route) -> ApiResult {
    let v = st.vault(&route.vault)?;
    let job = v
        .jobs
        .get(&route.id)
        .ok_or_else(|| job_not_found(&route.id))?;
    let (buf, start, end) = match &job.outcome {
        None => {
            return Err(ApiError::invalid(
                "The job is not currently available for download",
            ))
        }
        Some(Outcome::Failed(msg)) => {
            return Err(ApiError::invalid(format!(
                "The job failed and has no output: {msg}"
            )))
        }
        Some(Outcome::Succeeded {
            output, start, end, ..
        }) => (output.clone(), *start, *end),
    };
    let len = (end - start) as u64;
    let ignore_range = st.config.ignore_range && matches!(job.kind, JobKind::Archive { .. });
    let (first, last, partial) = match req.header_str("range") {
        _ if ignore_range => (0, len - 1, false),
        None => (0, len - 1, false),
        Some(raw) => {
            let (s, e) = parse_range(raw, len).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid Range '{raw}' for an output of {len} bytes"
                ))
            })?;
            (s, e, true)
        }
    };
    let body = Body::slice(buf, start + first as usize, start + last as usize + 1);
    let mut resp = Response::empty(if partial { 206 } else { 200 })
        .with_header("Accept-Ranges", "bytes")
        .with_body(body);
    if partial {
        resp = resp.with_header("Content-Range", format!("bytes {first}-{last}/{len}"));
    }
    match &job.kind {
        JobKind::Archive {
            archive,
            first: r_first,
            last: r_last,
        } => {
            resp = resp.with_header("Content-Type", "application/octet-stream");
            if !archive.description.is_empty() {
                resp = resp.with_header("x-amz-archive-description", archive.description.clone());
            }
            // Glacier sends the hash only when both the retrieved range and the downloaded
            // range are nodes of the archive's tree.
            let size = archive.size();
            let (abs_first, abs_end) = (r_first + first, r_first + last + 1);
            if !ignore_range
                && is_tree_aligned(*r_first, r_last + 1, size)
                && is_tree_aligned(abs_first, abs_end, size)
            {
                let hash = range_tree_hash(&archive.chunks, abs_first, abs_end);
                resp = resp.with_header("x-amz-sha256-tree-hash", hex::encode(hash));
            }
        }
        JobKind::Inventory { format, .. } => {
            let ct = match format {
                Format::Json => "application/json",
                Format::Csv => "text/csv",
            };
            resp = resp.with_header("Content-Type", ct);
        }
    }
    resp.served = Some(OutputServed {
        job_id: job.id.clone(),
        first,
        last,
    });
    Ok(resp)
}
