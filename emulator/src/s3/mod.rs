//! An S3 subset on the emulator's endpoint, for glacierfs's export to S3: buckets, objects and
//! multipart uploads over S3's REST API, path-style only (`/{bucket}` and `/{bucket}/{key}`),
//! answered in S3's XML so that `aws-sdk-s3` reads it. A request is S3's when its SigV4
//! credential scope names the service `s3`; everything else is Glacier's, untouched.
//!
//! The checks the export relies on are S3's: `x-amz-checksum-sha256` and `Content-MD5` against
//! the body (400 BadDigest, nothing stored), the part list of CompleteMultipartUpload (ETags and
//! checksums as uploaded, ascending, all parts but the last at least 5 MiB), user metadata of at
//! most 2 KiB, keys of at most 1,024 bytes, the six storage classes. ETags are S3's: the MD5 of
//! a single object, the MD5 of the parts' MD5s and `-N` for a multipart one; an upload created
//! with the SHA256 algorithm gets the composite checksum (SHA-256 of the parts' digests, `-N`).
//! Signatures are checked as for Glacier (same switch, same keys), see `payload`.
//!
//! **Not emulated:** restores. Objects of every storage class (GLACIER and DEEP_ARCHIVE
//! included) are readable with GetObject at once; the class is only stored and reported.
//! Neither are versioning, ACLs, encryption, ListObjects (v1), UploadPartCopy, or checksums
//! other than SHA-256 (other `x-amz-checksum-*` values are accepted unverified and not kept):
//! such requests answer 501 NotImplemented where they can be told apart.
//!
//! **Choices where S3 is vague:** metadata size counts names without `x-amz-meta-`; a part
//! sent without a SHA-256 checksum to an upload created with SHA256 is refused at once
//! (InvalidRequest); a copy is a single-part object whose SHA-256, when its source had one or
//! the request asks for it, is of its whole data; a repeated Complete of a completed upload
//! answers as the first did while the object stands. Conditional writes (PutObject and
//! CompleteMultipartUpload with `If-None-Match: *` or `If-Match`) and reads (`If-Match`,
//! `If-None-Match`) are honoured; the date conditions are not.
//!
//! Each S3 request is counted per [`S3Op`] (faulted and refused ones included), may draw a
//! scripted fault ([`S3FaultKind`]), and passes the test's hook twice, [`Stage::Before`] (parsed,
//! not applied) and [`Stage::After`] (applied, response not yet sent), on its own thread.
//!
//! Layout: `wire` (routing, XML, errors, request headers), `payload` (signature and body
//! decoding), `state` (the model), `objects` and `multipart` (the operations).

mod multipart;
mod objects;
mod payload;
pub(crate) mod state;
mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::TcpStream;
use std::sync::Arc;

use super::http::{reset, send, stall};
use super::util::{sha256, Digest};
use super::wire::{ApiError, ApiResult, Request, Response};
use super::{lock, Shared};
use state::{md5, Md5Digest, S3State};
use wire::{err, Target};

/// An S3 operation, as named in S3's API reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum S3Op {
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    ListObjectsV2,
    PutObject,
    GetObject,
    HeadObject,
    DeleteObject,
    CopyObject,
    CreateMultipartUpload,
    UploadPart,
    ListParts,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListMultipartUploads,
    /// Anything else; answered with 501 NotImplemented.
    Unknown,
}

impl S3Op {
    /// Operations that change state: what [`crate::Stats::s3_writes`] counts.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            S3Op::CreateBucket
                | S3Op::DeleteBucket
                | S3Op::PutObject
                | S3Op::DeleteObject
                | S3Op::CopyObject
                | S3Op::CreateMultipartUpload
                | S3Op::UploadPart
                | S3Op::CompleteMultipartUpload
                | S3Op::AbortMultipartUpload
        )
    }
}

/// A fault for S3 requests. All but `ResetAfterCommit` fire before the request is handled (and
/// before the hook), so nothing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum S3FaultKind {
    /// 500 InternalError.
    InternalError,
    /// 503 SlowDown, S3's throttling answer.
    SlowDown,
    /// The connection is reset (RST) without a response.
    Reset,
    /// The request is handled (state changes, the hook runs), then the connection is reset: a
    /// reply lost after S3 committed.
    ResetAfterCommit,
    /// The connection is held silent for the stall time, then closed without a response.
    Timeout,
}

/// When the hook runs for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Parsed and authenticated, not yet applied.
    Before,
    /// Applied (or refused), the response not yet sent.
    After,
}

/// What the hook is told about an S3 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Event {
    pub stage: Stage,
    pub op: S3Op,
    pub bucket: String,
    /// None for bucket operations.
    pub key: Option<String>,
    /// UploadPart's `partNumber`.
    pub part_number: Option<u32>,
    /// The `uploadId` the request names (UploadPart, ListParts, Complete, Abort).
    pub upload_id: Option<String>,
    /// The response's status, at [`Stage::After`].
    pub status: Option<u16>,
}

/// A test's hook on S3 requests: see [`crate::Emulator::s3_set_hook`].
pub type S3Hook = Arc<dyn Fn(&S3Event) + Send + Sync>;

/// An object as stored, for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3ObjectInfo {
    pub data: Vec<u8>,
    /// User metadata, names without `x-amz-meta-`.
    pub metadata: BTreeMap<String, String>,
    pub storage_class: String,
    /// Base64; `…-N` for a multipart object.
    pub checksum_sha256: Option<String>,
    /// Parts it was completed from; 0 for a single PUT or a copy.
    pub parts: u32,
    /// In quotes, as S3 sends it.
    pub etag: String,
    pub content_type: String,
    pub last_modified_secs: i64,
}

/// An open multipart upload, for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3UploadInfo {
    pub key: String,
    pub upload_id: String,
    /// (part number, size), ascending.
    pub parts: Vec<(u32, u64)>,
    pub storage_class: String,
    /// Whether it was created with the SHA256 checksum algorithm.
    pub checksum_sha256: bool,
    pub initiated_secs: i64,
}

/// Scripted faults per operation: runs of `(None, n)` let n requests pass, `(Some(k), n)` hit
/// n with k.
#[derive(Default)]
pub(crate) struct S3Faults {
    scripted: HashMap<S3Op, VecDeque<(Option<S3FaultKind>, usize)>>,
}

impl S3Faults {
    pub fn script(&mut self, op: S3Op, kind: Option<S3FaultKind>, count: usize) {
        if count > 0 {
            self.scripted
                .entry(op)
                .or_default()
                .push_back((kind, count));
        }
    }

    pub fn clear(&mut self) {
        self.scripted.clear();
    }

    fn pick(&mut self, op: S3Op) -> Option<S3FaultKind> {
        let queue = self.scripted.get_mut(&op)?;
        let front = queue.front_mut()?;
        let kind = front.0;
        front.1 -= 1;
        if front.1 == 0 {
            queue.pop_front();
        }
        kind
    }
}

/// The body's digests, computed before the state lock so that parallel parts hash in parallel.
pub(crate) struct Digests {
    pub md5: Md5Digest,
    pub sha256: Digest,
}

impl Digests {
    fn of(body: &[u8]) -> Digests {
        if body.len() < 8 << 20 {
            return Digests {
                md5: md5(body),
                sha256: sha256(body),
            };
        }
        // Two passes side by side on a large body.
        std::thread::scope(|s| {
            let sha = s.spawn(|| sha256(body));
            let md5 = md5(body);
            let sha256 = sha.join().unwrap_or_else(|_| self::sha256(body));
            Digests { md5, sha256 }
        })
    }
}

/// What an operation's handler gets.
pub(crate) struct Ctx<'a> {
    pub req: &'a Request,
    pub bucket: &'a str,
    pub key: &'a str,
    pub head: bool,
    pub now_ms: i64,
    pub region: &'a str,
    /// The SHA-256 checksum the body came with: header or `aws-chunked` trailer.
    pub claimed_sha256: Option<&'a str>,
    digests: Option<Digests>,
}

impl Ctx<'_> {
    pub fn digests(&self) -> Result<&Digests, ApiError> {
        self.digests
            .as_ref()
            .ok_or_else(|| err(500, "InternalError", "The body's digests were not computed"))
    }
}

/// Whether a request is S3's: its credential scope names the service `s3`.
pub(crate) fn is_s3(req: &Request) -> bool {
    super::sigv4::scoped_service(req) == Some("s3")
}

/// Serves one S3 request with whatever fault it draws. Returns whether the connection stays
/// open.
pub(crate) fn exchange(
    mut req: Request,
    writer: &mut TcpStream,
    shared: &Shared,
    keep_alive: bool,
) -> bool {
    let head = req.method == "HEAD";
    let routed = wire::route(&req);
    let op = routed.as_ref().map_or(S3Op::Unknown, |t| t.op);
    let verifier = lock(&shared.auth).clone();
    let prepared = payload::prepare(&mut req, &verifier).and_then(|p| Ok((routed?, p)));
    let (target, payload) = match prepared {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!(
                "glacier-emulator: refused S3 {} {}: {} {}: {}",
                req.method, req.path, e.status, e.code, e.message
            );
            let resp = wire::error_response(&e, head);
            shared.record_s3(op, resp.status);
            return send(writer, shared, &resp, !keep_alive, None).is_ok() && keep_alive;
        }
    };
    let fault = lock(&shared.s3_faults).pick(op);
    if let Some(kind) = fault {
        shared.count_s3_fault(kind);
    }
    let claimed = req
        .header_str("x-amz-checksum-sha256")
        .map(str::to_string)
        .or(payload.trailer_sha256);
    let handle = || handle(shared, &req, &target, claimed.as_deref(), head);
    match fault {
        Some(kind @ (S3FaultKind::InternalError | S3FaultKind::SlowDown)) => {
            let e = if kind == S3FaultKind::SlowDown {
                err(
                    503,
                    "SlowDown",
                    "Please reduce your request rate. (injected)",
                )
            } else {
                err(
                    500,
                    "InternalError",
                    "We encountered an internal error. Please try again. (injected)",
                )
            };
            let resp = wire::error_response(&e, head);
            shared.record_s3(op, resp.status);
            send(writer, shared, &resp, !keep_alive, None).is_ok() && keep_alive
        }
        Some(kind @ (S3FaultKind::Reset | S3FaultKind::ResetAfterCommit)) => {
            if kind == S3FaultKind::ResetAfterCommit {
                handle();
            }
            shared.record_s3(op, 0);
            reset(writer);
            false
        }
        Some(S3FaultKind::Timeout) => {
            shared.record_s3(op, 0);
            stall(shared);
            false
        }
        None => {
            let resp = handle();
            // Recorded before sending: a client that has the response finds it in the stats.
            shared.record_s3(op, resp.status);
            send(writer, shared, &resp, !keep_alive, None).is_ok() && keep_alive
        }
    }
}

/// Runs the hook (taken out of its lock first, so it may call back into the emulator).
fn fire(shared: &Shared, event: &S3Event) {
    let hook = lock(&shared.s3_hook).clone();
    if let Some(hook) = hook {
        hook(event);
    }
}

fn handle(
    shared: &Shared,
    req: &Request,
    t: &Target,
    claimed_sha256: Option<&str>,
    head: bool,
) -> Response {
    let digests =
        matches!(t.op, S3Op::PutObject | S3Op::UploadPart).then(|| Digests::of(&req.body));
    let mut event = S3Event {
        stage: Stage::Before,
        op: t.op,
        bucket: t.bucket.clone(),
        key: (!t.key.is_empty()).then(|| t.key.clone()),
        part_number: req.query("partNumber").and_then(|n| n.parse().ok()),
        upload_id: req.query("uploadId").map(str::to_string),
        status: None,
    };
    fire(shared, &event);
    let region = lock(&shared.auth).region.clone();
    let c = Ctx {
        req,
        bucket: &t.bucket,
        key: &t.key,
        head,
        now_ms: shared.now_ms(),
        region: &region,
        claimed_sha256,
        digests,
    };
    let result = dispatch(&mut lock(&shared.s3), t.op, &c);
    let resp = result.unwrap_or_else(|e| wire::error_response(&e, head));
    event.stage = Stage::After;
    event.status = Some(resp.status);
    fire(shared, &event);
    resp
}

fn dispatch(st: &mut S3State, op: S3Op, c: &Ctx<'_>) -> ApiResult {
    match op {
        S3Op::CreateBucket => objects::create_bucket(st, c),
        S3Op::HeadBucket => objects::head_bucket(st, c),
        S3Op::DeleteBucket => objects::delete_bucket(st, c),
        S3Op::ListObjectsV2 => objects::list_objects_v2(st, c),
        S3Op::PutObject => objects::put_object(st, c),
        S3Op::GetObject | S3Op::HeadObject => objects::get_object(st, c),
        S3Op::DeleteObject => objects::delete_object(st, c),
        S3Op::CopyObject => objects::copy_object(st, c),
        S3Op::CreateMultipartUpload => multipart::create(st, c),
        S3Op::UploadPart => multipart::upload_part(st, c),
        S3Op::ListParts => multipart::list_parts(st, c),
        S3Op::CompleteMultipartUpload => multipart::complete(st, c),
        S3Op::AbortMultipartUpload => multipart::abort(st, c),
        S3Op::ListMultipartUploads => multipart::list_uploads(st, c),
        S3Op::Unknown => Err(err(
            501,
            "NotImplemented",
            format!(
                "This emulator does not implement {} {}",
                c.req.method, c.req.path
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// What the library's `Emulator` methods read.

/// The objects and uploads of a bucket, for the test-facing API.
impl S3State {
    pub(crate) fn create_bucket(&mut self, name: &str) {
        self.buckets.entry(name.to_string()).or_default();
    }

    pub(crate) fn keys(&self, bucket: &str) -> Vec<String> {
        self.buckets
            .get(bucket)
            .map(|b| b.objects.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn object_info(&self, bucket: &str, key: &str) -> Option<S3ObjectInfo> {
        let o = self.buckets.get(bucket)?.objects.get(key)?;
        Some(S3ObjectInfo {
            data: o.data.to_vec(),
            metadata: o.metadata.clone(),
            storage_class: o.storage_class.clone(),
            checksum_sha256: o.checksum_sha256.clone(),
            parts: o.parts,
            etag: o.etag.clone(),
            content_type: o.content_type.clone(),
            last_modified_secs: o.modified_ms.div_euclid(1000),
        })
    }

    pub(crate) fn put_object(&mut self, bucket: &str, key: &str, data: &[u8], now_ms: i64) {
        self.buckets
            .entry(bucket.to_string())
            .or_default()
            .objects
            .insert(
                key.to_string(),
                state::Object {
                    data: Arc::new(data.to_vec()),
                    etag: format!("\"{}\"", hex::encode(md5(data))),
                    metadata: BTreeMap::new(),
                    storage_class: "STANDARD".into(),
                    checksum_sha256: None,
                    parts: 0,
                    content_type: "binary/octet-stream".into(),
                    modified_ms: now_ms,
                },
            );
    }

    pub(crate) fn open_uploads(&self, bucket: &str) -> Vec<S3UploadInfo> {
        let Some(b) = self.buckets.get(bucket) else {
            return Vec::new();
        };
        let mut list: Vec<_> = b.uploads.iter().collect();
        list.sort_by(|a, b| (&a.1.key, a.1.seq).cmp(&(&b.1.key, b.1.seq)));
        list.into_iter()
            .map(|(id, u)| S3UploadInfo {
                key: u.key.clone(),
                upload_id: id.clone(),
                parts: u
                    .parts
                    .iter()
                    .map(|(n, p)| (*n, p.data.len() as u64))
                    .collect(),
                storage_class: u.storage_class.clone(),
                checksum_sha256: u.sha256,
                initiated_secs: u.initiated_ms.div_euclid(1000),
            })
            .collect()
    }
}
