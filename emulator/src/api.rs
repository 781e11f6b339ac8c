//! Dispatch: the checks every request gets (API version, account), then the operation's
//! handler under the state lock, then the clock's consequences (`settle`).

use std::sync::Mutex;

use super::router::{check_account, Op, Route};
use super::state::{State, Vault};
use super::util::{chunk_hashes, sha256, tree_of, Digest};
use super::wire::{ApiError, ApiResult, Request, Response};
use super::{archives, extras, jobs, lock, vaults};

const API_VERSION: &str = "2012-06-01";

/// Hashes of an upload body, computed before the state lock is taken so that parallel part
/// uploads hash in parallel.
pub(crate) struct BodyHashes {
    pub chunks: Vec<Digest>,
    pub tree: Digest,
    pub linear: Digest,
}

impl BodyHashes {
    /// The hashes of an upload's body (UploadArchive, UploadPart); None for other operations,
    /// which need no tree hash.
    pub fn for_op(op: Op, body: &[u8]) -> Option<BodyHashes> {
        matches!(op, Op::UploadArchive | Op::UploadPart).then(|| BodyHashes::of(body))
    }

    fn of(body: &[u8]) -> BodyHashes {
        // Two independent passes; on a large body run them side by side, since uploads are
        // where the emulator spends its CPU.
        let (chunks, linear) = if body.len() >= 8 << 20 {
            std::thread::scope(|s| {
                let linear = s.spawn(|| sha256(body));
                let chunks = chunk_hashes(body);
                (chunks, linear.join().expect("hashing does not panic"))
            })
        } else {
            (chunk_hashes(body), sha256(body))
        };
        let tree = tree_of(&chunks);
        BodyHashes {
            chunks,
            tree,
            linear,
        }
    }
}

/// Handles one routed request against the state and renders errors in Glacier's shape.
/// `hashes` are [`BodyHashes::for_op`] of the request, computed by the caller, which also
/// needs the linear hash to check the signature.
pub(crate) fn handle(
    state: &Mutex<State>,
    req: &Request,
    route: &Route,
    hashes: Option<&BodyHashes>,
) -> Response {
    match handle_inner(state, req, route, hashes) {
        Ok(resp) => resp,
        Err(e) => e.to_response(),
    }
}

fn handle_inner(
    state: &Mutex<State>,
    req: &Request,
    route: &Route,
    hashes: Option<&BodyHashes>,
) -> ApiResult {
    match req.header_str("x-amz-glacier-version") {
        None => {
            return Err(ApiError::missing(
                "Required header missing: x-amz-glacier-version",
            ))
        }
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Unsupported x-amz-glacier-version '{other}'"
            )))
        }
    }
    check_account(&route.account)?;
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let result = call(&mut st, req, route, hashes);
    st.settle();
    result
}

fn call(st: &mut State, req: &Request, route: &Route, hashes: Option<&BodyHashes>) -> ApiResult {
    let body_hashes = || hashes.expect("hashes are computed for upload operations");
    match route.op {
        Op::CreateVault => vaults::create(st, route),
        Op::DescribeVault => vaults::describe(st, route),
        Op::ListVaults => vaults::list(st, req),
        Op::DeleteVault => vaults::delete(st, route),
        Op::UploadArchive => archives::upload(st, req, route, body_hashes()),
        Op::DeleteArchive => archives::delete(st, route),
        Op::InitiateMultipartUpload => archives::initiate_multipart(st, req, route),
        Op::UploadPart => archives::upload_part(st, req, route, body_hashes()),
        Op::CompleteMultipartUpload => archives::complete_multipart(st, req, route),
        Op::AbortMultipartUpload => archives::abort_multipart(st, route),
        Op::ListParts => archives::list_parts(st, req, route),
        Op::ListMultipartUploads => archives::list_uploads(st, req, route),
        Op::InitiateJob => jobs::initiate(st, req, route),
        Op::DescribeJob => jobs::describe(st, route),
        Op::ListJobs => jobs::list(st, req, route),
        Op::GetJobOutput => jobs::output(st, req, route),
        Op::InitiateVaultLock => lock::initiate(st, req, route),
        Op::GetVaultLock => lock::get(st, route),
        Op::CompleteVaultLock => lock::complete(st, route),
        Op::AbortVaultLock => lock::abort(st, route),
        Op::SetVaultAccessPolicy
        | Op::GetVaultAccessPolicy
        | Op::DeleteVaultAccessPolicy
        | Op::SetVaultNotifications
        | Op::GetVaultNotifications
        | Op::DeleteVaultNotifications
        | Op::AddTagsToVault
        | Op::RemoveTagsFromVault
        | Op::ListTagsForVault
        | Op::GetDataRetrievalPolicy
        | Op::SetDataRetrievalPolicy
        | Op::PurchaseProvisionedCapacity
        | Op::ListProvisionedCapacity => extras::handle(st, req, route),
        Op::Unknown => Err(ApiError::new(
            400,
            "UnknownOperationException",
            format!("No Glacier operation matches {} {}", req.method, req.path),
        )),
    }
}

impl State {
    pub(crate) fn vault(&self, name: &str) -> Result<&Vault, ApiError> {
        self.vaults
            .get(name)
            .ok_or_else(|| self.vault_not_found(name))
    }

    pub(crate) fn vault_mut(&mut self, name: &str) -> Result<&mut Vault, ApiError> {
        if !self.vaults.contains_key(name) {
            return Err(self.vault_not_found(name));
        }
        Ok(self.vaults.get_mut(name).expect("checked above"))
    }

    fn vault_not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!("Vault not found for ARN: {}", self.vault_arn(name)))
    }
}

/// The archive description header, checked; absent means empty.
pub(crate) fn description_header(req: &Request) -> Result<String, ApiError> {
    match req.header("x-amz-archive-description") {
        None => Ok(String::new()),
        Some(raw) => super::util::check_description(raw).map_err(ApiError::invalid),
    }
}

/// The two body checks of UploadArchive and UploadPart: the tree hash header is required and
/// must match; the linear SHA-256 (the signing hash) must match when it is a real hash. With
/// signatures verified (`sigv4`) the linear hash has been checked already, more strictly.
pub(crate) fn check_body_hashes(req: &Request, h: &BodyHashes) -> Result<(), ApiError> {
    let sent = req
        .header_str("x-amz-sha256-tree-hash")
        .ok_or_else(|| ApiError::missing("Required header missing: x-amz-sha256-tree-hash"))?;
    let actual = hex::encode(h.tree);
    if !sent.eq_ignore_ascii_case(&actual) {
        return Err(ApiError::invalid(format!(
            "Checksum mismatch: expected {sent} (calculated {actual})"
        )));
    }
    if let Some(linear) = req.header_str("x-amz-content-sha256") {
        let unsigned = linear == "UNSIGNED-PAYLOAD" || linear.starts_with("STREAMING-");
        let actual = hex::encode(h.linear);
        if !unsigned && !linear.eq_ignore_ascii_case(&actual) {
            return Err(ApiError::invalid(format!(
                "x-amz-content-sha256 mismatch: expected {linear} (calculated {actual})"
            )));
        }
    }
    Ok(())
}
