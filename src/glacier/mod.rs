//! The Glacier layer: one trait, [`GlacierClient`], covering every vault-API call glacierfs makes,
//! the plain data types those calls exchange, and the single error type they fail with.
//!
//! Everything above this layer talks to `Arc<dyn GlacierClient>`, so the real SDK client
//! ([`aws::AwsGlacier`]), the retrying decorator ([`retry::Retrying`]) and test fakes are
//! interchangeable. Calls return boxed futures rather than using `async fn` in the trait because
//! the trait must stay object-safe.

pub mod aws;
pub mod retry;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::codec::treehash::{BodyHashes, Digest};

/// A boxed, sendable future of a Glacier call.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, GlacierError>> + Send + 'a>>;

/// A job-output body, streamed.
pub type BodyReader = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// How a failure should be handled: throttling, 5xx answers, timeouts and resets are
/// transient and worth retrying with backoff; everything else is the caller's to handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, 5xx, timeouts, resets: retry with backoff.
    Transient,
    /// The vault, job, archive or upload does not exist (or has expired).
    NotFound,
    /// The request was refused as invalid: checksum, range, alignment, filter, state.
    InvalidParameter,
    /// A retrieval policy refused the job; waiting or another tier may help, hot retries won't.
    PolicyEnforced,
    /// Expedited capacity is not available; a slower tier only if the tier list names one.
    InsufficientCapacity,
    /// Access denied, or a vault-lock state that refuses the call.
    AccessDenied,
    /// An account limit (vaults, tags, capacity units). Permanent, whatever the SDK thinks.
    LimitExceeded,
    /// The endpoint does not implement the call (e.g. vault lock on some emulators).
    Unsupported,
    /// Credentials are missing or rejected.
    Credentials,
    /// Anything else: permanent, reported as it is.
    Other,
}

/// A failed Glacier call, with what the service said about it. It shows as one line that a
/// user can act on: the operation, then Glacier's error code and message (or, for an answer
/// with no code, the HTTP status and what it may mean), then the request id for AWS support.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {}{message}{}", code_prefix(.code), request_suffix(.request_id))]
pub struct GlacierError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    pub status: Option<u16>,
}

fn code_prefix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!("{c}: "))
        .unwrap_or_default()
}

fn request_suffix(id: &Option<String>) -> String {
    id.as_deref()
        .map(|r| format!(" [request {r}]"))
        .unwrap_or_default()
}

impl GlacierError {
    pub fn new(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        GlacierError {
            operation,
            kind,
            code: None,
            message: message.into(),
            request_id: None,
            status: None,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// A transient failure the service answered before acting on the request (throttling),
    /// so repeating it cannot create anything twice.
    pub fn is_refusal(&self) -> bool {
        self.kind == ErrorKind::Transient
            && matches!(
                self.code.as_deref(),
                Some("ThrottlingException" | "SlowDown")
            )
    }

    /// The kind a service error code and HTTP status map to.
    pub fn classify(code: Option<&str>, status: Option<u16>) -> ErrorKind {
        match code {
            Some(
                "ThrottlingException" | "RequestTimeoutException" | "ServiceUnavailableException",
            )
            | Some("InternalFailure" | "InternalError" | "SlowDown") => ErrorKind::Transient,
            Some("ResourceNotFoundException" | "NoSuchVault" | "NotFound") => ErrorKind::NotFound,
            Some("InvalidParameterValueException" | "MissingParameterValueException")
            | Some("BadRequest" | "SerializationException" | "ValidationException") => {
                ErrorKind::InvalidParameter
            }
            Some("PolicyEnforcedException") => ErrorKind::PolicyEnforced,
            Some("InsufficientCapacityException") => ErrorKind::InsufficientCapacity,
            Some("AccessDeniedException" | "AccessDenied") => ErrorKind::AccessDenied,
            Some("LimitExceededException") => ErrorKind::LimitExceeded,
            Some(
                "InvalidSignatureException"
                | "ExpiredTokenException"
                | "MissingAuthenticationTokenException"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch",
            ) => ErrorKind::Credentials,
            Some("NotImplemented" | "UnknownOperationException" | "InvalidAction") => {
                ErrorKind::Unsupported
            }
            _ => match status {
                Some(404) => ErrorKind::NotFound,
                Some(408 | 429 | 500 | 502 | 503 | 504) => ErrorKind::Transient,
                Some(501) => ErrorKind::Unsupported,
                Some(401 | 403) => ErrorKind::AccessDenied,
                _ => ErrorKind::Other,
            },
        }
    }
}

/// What DescribeVault and ListVaults say about a vault.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VaultDesc {
    pub name: String,
    pub arn: Option<String>,
    pub creation_date: Option<String>,
    /// `None` until Glacier has taken the vault's first inventory.
    pub last_inventory_date: Option<String>,
    pub number_of_archives: u64,
    pub size_in_bytes: u64,
}

/// The result of UploadArchive or CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCreated {
    pub archive_id: String,
    /// The tree hash Glacier reports for the stored archive, when it reports one.
    pub tree_hash: Option<String>,
}

/// One uploaded part, as ListParts reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartDesc {
    pub start: u64,
    pub end_inclusive: u64,
    pub tree_hash: String,
}

/// ListParts of one multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsListing {
    pub part_size: u64,
    pub description: Option<String>,
    pub parts: Vec<PartDesc>,
}

/// One in-progress multipart upload, as ListMultipartUploads reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadDesc {
    pub upload_id: String,
    pub description: Option<String>,
    pub part_size: u64,
    pub creation_date: Option<String>,
}

/// Retrieval tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Expedited,
    Standard,
    Bulk,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Expedited => "Expedited",
            Tier::Standard => "Standard",
            Tier::Bulk => "Bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s.to_ascii_lowercase().as_str() {
            "expedited" => Some(Tier::Expedited),
            "standard" => Some(Tier::Standard),
            "bulk" => Some(Tier::Bulk),
            _ => None,
        }
    }
}

/// What to ask InitiateJob for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRequest {
    Archive {
        archive_id: String,
        tier: Tier,
        /// Inclusive byte range; `None` for the whole archive.
        range: Option<(u64, u64)>,
        description: Option<String>,
    },
    Inventory {
        /// "JSON" or "CSV".
        format: String,
        marker: Option<String>,
        limit: Option<u64>,
        description: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    ArchiveRetrieval,
    InventoryRetrieval,
    Select,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    InProgress,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::InProgress => "InProgress",
            JobStatus::Succeeded => "Succeeded",
            JobStatus::Failed => "Failed",
        }
    }
}

/// DescribeJob / ListJobs entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDesc {
    pub job_id: String,
    pub action: JobAction,
    pub status: JobStatus,
    pub status_message: Option<String>,
    pub archive_id: Option<String>,
    pub archive_size: Option<u64>,
    pub archive_tree_hash: Option<String>,
    /// Tree hash of the retrieved range, when that range is tree-hash aligned.
    pub tree_hash: Option<String>,
    pub retrieval_byte_range: Option<String>,
    pub tier: Option<String>,
    pub creation_date: Option<String>,
    pub completion_date: Option<String>,
    pub inventory_size: Option<u64>,
    /// Next inventory page marker, for paginated inventory jobs.
    pub inventory_marker: Option<String>,
    pub description: Option<String>,
}

/// Filters for ListJobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobFilter {
    pub completed: Option<bool>,
    pub status: Option<JobStatus>,
}

/// GetJobOutput: its headers and the body as a stream.
pub struct JobOutput {
    pub status: u16,
    pub tree_hash: Option<String>,
    pub content_range: Option<String>,
    pub content_length: Option<u64>,
    pub body: BodyReader,
}

impl std::fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOutput")
            .field("status", &self.status)
            .field("tree_hash", &self.tree_hash)
            .field("content_range", &self.content_range)
            .finish_non_exhaustive()
    }
}

/// GetVaultLock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDesc {
    pub state: String,
    pub policy: Option<String>,
    pub creation_date: Option<String>,
    pub expiration_date: Option<String>,
}

/// A vault's notification configuration (GetVaultNotifications, SetVaultNotifications): the
/// SNS topic Glacier publishes to and the job events it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Notifications {
    #[serde(rename = "SNSTopic")]
    pub sns_topic: String,
    #[serde(rename = "Events", default)]
    pub events: Vec<String>,
}

/// The account's data-retrieval policy (GetDataRetrievalPolicy): what Glacier lets through
/// before it refuses a retrieval with PolicyEnforcedException.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalPolicy {
    /// No limit.
    None,
    /// Only what the free tier allows; Glacier refuses the rest.
    FreeTier,
    /// At most this many bytes retrieved in any trailing hour.
    BytesPerHour(u64),
}

impl RetrievalPolicy {
    /// The strategy's name, as Glacier spells it.
    pub fn strategy(self) -> &'static str {
        match self {
            RetrievalPolicy::None => "None",
            RetrievalPolicy::FreeTier => "FreeTier",
            RetrievalPolicy::BytesPerHour(_) => "BytesPerHour",
        }
    }

    /// The rate, for a `BytesPerHour` policy.
    pub fn bytes_per_hour(self) -> Option<u64> {
        match self {
            RetrievalPolicy::BytesPerHour(n) => Some(n),
            _ => None,
        }
    }

    /// Parses a strategy and its rate as Glacier gives them; `None` for an unknown strategy
    /// or a `BytesPerHour` rule without a positive rate.
    pub fn from_rule(strategy: &str, bytes_per_hour: Option<u64>) -> Option<RetrievalPolicy> {
        match (strategy, bytes_per_hour) {
            ("None", _) => Some(RetrievalPolicy::None),
            ("FreeTier", _) => Some(RetrievalPolicy::FreeTier),
            ("BytesPerHour", Some(n)) if n > 0 => Some(RetrievalPolicy::BytesPerHour(n)),
            _ => None,
        }
    }
}

/// One provisioned capacity unit (ListProvisionedCapacity): each guarantees Expedited
/// retrievals until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityUnit {
    pub capacity_id: String,
    pub start_date: Option<String>,
    pub expiration_date: Option<String>,
}

/// Every vault-API call glacierfs makes. Listing calls page to the end.
pub trait GlacierClient: Send + Sync {
    fn list_vaults(&self) -> BoxFut<'_, Vec<VaultDesc>>;
    fn describe_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, VaultDesc>;
    fn create_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()>;
    fn delete_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()>;

    /// Uploads `body` as one archive. `tree_hash` is the body's tree hash when the caller has
    /// one; with `None` the client computes it, together with the linear SHA-256 it signs with,
    /// in one pass (the SDK hashes nothing). Glacier checks the body against it, so the tree
    /// hash it reports for the archive is that of the bytes it received.
    fn upload_archive<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, ArchiveCreated>;
    fn delete_archive<'a>(&'a self, vault: &'a str, archive_id: &'a str) -> BoxFut<'a, ()>;

    fn initiate_multipart<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        part_size: u64,
    ) -> BoxFut<'a, String>;
    /// Uploads one part starting at `start`; returns the tree hash Glacier echoes for it, which
    /// Glacier checked against the body it received. `tree_hash` is as for
    /// [`GlacierClient::upload_archive`]: `None` lets the client compute it.
    fn upload_part<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, Option<String>>;
    /// [`GlacierClient::upload_part`] of a body whose two hashes the caller computed, in one
    /// pass ([`crate::codec::treehash::body_hashes`]), before it needed a connection: the
    /// client sends them as they are and hashes nothing. A client that cannot take the linear
    /// hash (a test's wrapper) computes it itself, as `upload_part` with the tree hash does.
    fn upload_part_hashed<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        hashes: BodyHashes,
    ) -> BoxFut<'a, Option<String>> {
        self.upload_part(vault, upload_id, start, body, Some(hashes.tree))
    }
    fn complete_multipart<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        size: u64,
        tree_hash: Digest,
    ) -> BoxFut<'a, ArchiveCreated>;
    fn abort_multipart<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, ()>;
    fn list_parts<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, PartsListing>;
    fn list_multipart_uploads<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Vec<UploadDesc>>;

    fn initiate_job<'a>(&'a self, vault: &'a str, request: &'a JobRequest) -> BoxFut<'a, String>;
    fn describe_job<'a>(&'a self, vault: &'a str, job_id: &'a str) -> BoxFut<'a, JobDesc>;
    fn list_jobs<'a>(&'a self, vault: &'a str, filter: JobFilter) -> BoxFut<'a, Vec<JobDesc>>;
    /// `range` is inclusive and relative to the job's retrieved range.
    fn get_job_output<'a>(
        &'a self,
        vault: &'a str,
        job_id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFut<'a, JobOutput>;

    /// `None` when the vault has no lock policy.
    fn get_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<LockDesc>>;
    fn initiate_vault_lock<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, String>;
    fn complete_vault_lock<'a>(&'a self, vault: &'a str, lock_id: &'a str) -> BoxFut<'a, ()>;
    fn abort_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()>;

    /// The vault's tags (ListTagsForVault).
    fn list_tags<'a>(&'a self, vault: &'a str) -> BoxFut<'a, BTreeMap<String, String>>;
    /// Adds or overwrites tags (AddTagsToVault).
    fn add_tags<'a>(&'a self, vault: &'a str, tags: &'a BTreeMap<String, String>)
        -> BoxFut<'a, ()>;
    /// Removes tags by key (RemoveTagsFromVault).
    fn remove_tags<'a>(&'a self, vault: &'a str, keys: &'a [String]) -> BoxFut<'a, ()>;
    /// The access policy's JSON, `None` when the vault has none (GetVaultAccessPolicy).
    fn get_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<String>>;
    fn set_access_policy<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, ()>;
    fn delete_access_policy<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()>;
    /// `None` when the vault has no notification configuration (GetVaultNotifications).
    fn get_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<Notifications>>;
    fn set_notifications<'a>(&'a self, vault: &'a str, config: &'a Notifications)
        -> BoxFut<'a, ()>;
    fn delete_notifications<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()>;
    /// The account's data-retrieval policy (GetDataRetrievalPolicy).
    fn get_retrieval_policy(&self) -> BoxFut<'_, RetrievalPolicy>;
    /// The account's provisioned capacity units (ListProvisionedCapacity).
    fn list_capacity(&self) -> BoxFut<'_, Vec<CapacityUnit>>;
}

/// Parses `S-E` (as in RangeInBytes and RetrievalByteRange) into an inclusive pair.
pub fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once('-')?;
    let (start, end) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_api_digest() {
        let c = |code| GlacierError::classify(Some(code), Some(400));
        assert_eq!(c("ThrottlingException"), ErrorKind::Transient);
        assert_eq!(c("LimitExceededException"), ErrorKind::LimitExceeded);
        assert_eq!(c("PolicyEnforcedException"), ErrorKind::PolicyEnforced);
        assert_eq!(c("ResourceNotFoundException"), ErrorKind::NotFound);
        assert_eq!(
            c("InvalidParameterValueException"),
            ErrorKind::InvalidParameter
        );
        assert_eq!(
            GlacierError::classify(Some("InsufficientCapacityException"), Some(503)),
            ErrorKind::InsufficientCapacity
        );
        assert_eq!(
            GlacierError::classify(None, Some(502)),
            ErrorKind::Transient
        );
        assert_eq!(GlacierError::classify(None, Some(404)), ErrorKind::NotFound);
        assert_eq!(GlacierError::classify(None, None), ErrorKind::Other);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("0-4194303"), Some((0, 4194303)));
        assert_eq!(parse_range("5-4"), None);
        assert_eq!(parse_range("x"), None);
    }
}
