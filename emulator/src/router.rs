//! Maps a method and path onto a Glacier operation ([`Op`]) and its path parameters.
//!
//! Routing happens before the body is judged so that fault injection can be decided per
//! operation, exactly as a network fault would hit a particular call.

use super::util::percent_decode;
use super::wire::ApiError;

/// A Glacier operation, as named in the API reference. `UploadPart` is UploadMultipartPart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CreateVault,
    DescribeVault,
    ListVaults,
    DeleteVault,
    UploadArchive,
    DeleteArchive,
    InitiateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
    InitiateJob,
    DescribeJob,
    ListJobs,
    GetJobOutput,
    InitiateVaultLock,
    GetVaultLock,
    CompleteVaultLock,
    AbortVaultLock,
    SetVaultAccessPolicy,
    GetVaultAccessPolicy,
    DeleteVaultAccessPolicy,
    SetVaultNotifications,
    GetVaultNotifications,
    DeleteVaultNotifications,
    AddTagsToVault,
    RemoveTagsFromVault,
    ListTagsForVault,
    GetDataRetrievalPolicy,
    SetDataRetrievalPolicy,
    PurchaseProvisionedCapacity,
    ListProvisionedCapacity,
    /// Anything that matches no route; answered with 400 UnknownOperationException.
    Unknown,
}

impl Op {
    /// Operations that change state. Faults that fire before handling leave them undone.
    pub fn is_mutating(self) -> bool {
        !matches!(
            self,
            Op::DescribeVault
                | Op::ListVaults
                | Op::ListParts
                | Op::ListMultipartUploads
                | Op::DescribeJob
                | Op::ListJobs
                | Op::GetJobOutput
                | Op::GetVaultLock
                | Op::GetVaultAccessPolicy
                | Op::GetVaultNotifications
                | Op::ListTagsForVault
                | Op::GetDataRetrievalPolicy
                | Op::ListProvisionedCapacity
                | Op::Unknown
        )
    }
}

/// A routed request: the operation, the account segment as sent, and the decoded path
/// parameters that apply (vault name; archive, upload, job or lock id).
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub op: Op,
    pub account: String,
    pub vault: String,
    pub id: String,
}

/// Routes a request. Only undecodable paths are an error here; an unmatched path routes to
/// [`Op::Unknown`] so that it is still counted and logged.
pub(crate) fn route(
    method: &str,
    path: &str,
    query: &[(String, String)],
) -> Result<Route, ApiError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let raw = raw.strip_suffix('/').unwrap_or(raw);
    let segs = raw
        .split('/')
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| ApiError::invalid("Malformed percent-encoding in the request path"))?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let account = s.first().copied().unwrap_or_default().to_string();
    let tags_op = query
        .iter()
        .find(|(k, _)| k == "operation")
        .map(|(_, v)| v.as_str());

    let (op, vault, id) = match (method, &s[..]) {
        ("GET", [_, "vaults"]) => (Op::ListVaults, "", ""),
        ("PUT", [_, "vaults", v]) => (Op::CreateVault, *v, ""),
        ("GET", [_, "vaults", v]) => (Op::DescribeVault, *v, ""),
        ("DELETE", [_, "vaults", v]) => (Op::DeleteVault, *v, ""),
        ("POST", [_, "vaults", v, "archives"]) => (Op::UploadArchive, *v, ""),
        ("DELETE", [_, "vaults", v, "archives", a]) => (Op::DeleteArchive, *v, *a),
        ("POST", [_, "vaults", v, "multipart-uploads"]) => (Op::InitiateMultipartUpload, *v, ""),
        ("GET", [_, "vaults", v, "multipart-uploads"]) => (Op::ListMultipartUploads, *v, ""),
        ("PUT", [_, "vaults", v, "multipart-uploads", u]) => (Op::UploadPart, *v, *u),
        ("POST", [_, "vaults", v, "multipart-uploads", u]) => (Op::CompleteMultipartUpload, *v, *u),
        ("DELETE", [_, "vaults", v, "multipart-uploads", u]) => (Op::AbortMultipartUpload, *v, *u),
        ("GET", [_, "vaults", v, "multipart-uploads", u]) => (Op::ListParts, *v, *u),
        ("POST", [_, "vaults", v, "jobs"]) => (Op::InitiateJob, *v, ""),
        ("GET", [_, "vaults", v, "jobs"]) => (Op::ListJobs, *v, ""),
        ("GET", [_, "vaults", v, "jobs", j]) => (Op::DescribeJob, *v, *j),
        ("GET", [_, "vaults", v, "jobs", j, "output"]) => (Op::GetJobOutput, *v, *j),
        ("POST", [_, "vaults", v, "lock-policy"]) => (Op::InitiateVaultLock, *v, ""),
        ("GET", [_, "vaults", v, "lock-policy"]) => (Op::GetVaultLock, *v, ""),
        ("DELETE", [_, "vaults", v, "lock-policy"]) => (Op::AbortVaultLock, *v, ""),
        ("POST", [_, "vaults", v, "lock-policy", l]) => (Op::CompleteVaultLock, *v, *l),
        ("PUT", [_, "vaults", v, "access-policy"]) => (Op::SetVaultAccessPolicy, *v, ""),
        ("GET", [_, "vaults", v, "access-policy"]) => (Op::GetVaultAccessPolicy, *v, ""),
        ("DELETE", [_, "vaults", v, "access-policy"]) => (Op::DeleteVaultAccessPolicy, *v, ""),
        ("PUT", [_, "vaults", v, "notification-configuration"]) => {
            (Op::SetVaultNotifications, *v, "")
        }
        ("GET", [_, "vaults", v, "notification-configuration"]) => {
            (Op::GetVaultNotifications, *v, "")
        }
        ("DELETE", [_, "vaults", v, "notification-configuration"]) => {
            (Op::DeleteVaultNotifications, *v, "")
        }
        ("POST", [_, "vaults", v, "tags"]) if tags_op == Some("add") => {
            (Op::AddTagsToVault, *v, "")
        }
        ("POST", [_, "vaults", v, "tags"]) if tags_op == Some("remove") => {
            (Op::RemoveTagsFromVault, *v, "")
        }
        ("GET", [_, "vaults", v, "tags"]) => (Op::ListTagsForVault, *v, ""),
        ("GET", [_, "policies", "data-retrieval"]) => (Op::GetDataRetrievalPolicy, "", ""),
        ("PUT", [_, "policies", "data-retrieval"]) => (Op::SetDataRetrievalPolicy, "", ""),
        ("POST", [_, "provisioned-capacity"]) => (Op::PurchaseProvisionedCapacity, "", ""),
        ("GET", [_, "provisioned-capacity"]) => (Op::ListProvisionedCapacity, "", ""),
        _ => (Op::Unknown, "", ""),
    };
    Ok(Route {
        op,
        account,
        vault: vault.to_string(),
        id: id.to_string(),
    })
}

/// `-` or twelve digits. The emulator is a single account, so any twelve digits mean it.
pub(crate) fn check_account(account: &str) -> Result<(), ApiError> {
    if account == "-" || (account.len() == 12 && account.bytes().all(|c| c.is_ascii_digit())) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Invalid account id '{account}': use '-' or a 12-digit account id without hyphens"
        )))
    }
}
