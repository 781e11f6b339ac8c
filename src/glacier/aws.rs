//! The real [`GlacierClient`]: aws-sdk-glacier over an HTTPS client built with rustls and ring.
//!
//! The SDK's own retries are turned off. Retrying lives in [`super::retry`], where the
//! classification in [`super::ErrorKind`] applies (the SDK would, for one, keep retrying
//! LimitExceededException as if it were throttling).
//!
//! Upload bodies are hashed here, once, and not by the SDK. Its Glacier customisation hashes
//! every body twice over (each MiB for the tree hash, the whole for the linear SHA-256 that
//! SigV4 signs), even when the tree-hash header is given; that was most of an upload's CPU.
//! Here both hashes come from one pass ([`treehash::body_hashes`]) on the blocking pool, and
//! an interceptor, `PrecomputedHashes`, hands them to the SDK so that it has nothing left to
//! hash. The request is the one the SDK would have sent: the same headers, signed the same way.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_glacier::config::retry::RetryConfig;
use aws_sdk_glacier::config::timeout::TimeoutConfig;
use aws_sdk_glacier::config::Region;
use aws_sdk_glacier::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_glacier::operation::RequestId;
use aws_sdk_glacier::primitives::ByteStream;
use aws_sdk_glacier::types::{
    ActionCode, GlacierJobDescription, InventoryRetrievalJobInput, JobParameters, StatusCode,
    VaultLockPolicy,
};
use aws_sdk_glacier::Client;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::LoadedRequestBody;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;

use super::{
    parse_range, ArchiveCreated, BoxFut, ErrorKind, GlacierClient, GlacierError, JobAction,
    JobDesc, JobFilter, JobOutput, JobRequest, JobStatus, LockDesc, PartDesc, PartsListing,
    UploadDesc, VaultDesc,
};
use crate::codec::treehash::{self, to_hex, BodyHashes, Digest};

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub account_id: String,
    /// Connect timeout; also bounds how long an unreachable endpoint delays a mount.
    pub connect_timeout: Option<Duration>,
}

/// aws-sdk-glacier behind [`GlacierClient`].
#[derive(Debug, Clone)]
pub struct AwsGlacier {
    client: Client,
    account: String,
    region: String,
}

impl AwsGlacier {
    /// Loads credentials and region through the normal AWS chain (environment, profiles, SSO,
    /// instance roles). Fails when no region can be found: every call would fail without one.
    pub async fn connect(opts: &AwsOptions) -> Result<AwsGlacier, GlacierError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &opts.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let region = shared.region().map(|r| r.to_string()).ok_or_else(|| {
            GlacierError::new(
                "connect",
                ErrorKind::Other,
                "no AWS region configured: pass --region or set AWS_REGION",
            )
        })?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .read_timeout(Duration::from_secs(120))
            .build();
        let conf = aws_sdk_glacier::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .build();
        Ok(AwsGlacier {
            client: Client::from_conf(conf),
            account: opts.account_id.clone(),
            region,
        })
    }

    /// A client on an SDK configuration made elsewhere, taken as it is (retries included):
    /// for callers that need something [`AwsGlacier::connect`] does not offer, such as an
    /// interceptor of their own.
    pub fn from_conf(conf: aws_sdk_glacier::Config, account_id: &str) -> AwsGlacier {
        let region = conf.region().map(|r| r.to_string()).unwrap_or_default();
        AwsGlacier {
            client: Client::from_conf(conf),
            account: account_id.to_owned(),
            region,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }
}

/// Bodies up to this size are hashed where the call is polled (well under a tenth of a
/// millisecond); larger ones on the blocking pool, never on a runtime worker.
const HASH_INLINE_MAX: usize = 64 * 1024;

/// The hashes an upload of `body` is sent with. A tree hash the caller gives is used as it is
/// (Glacier checks the body against it), and only the linear hash is computed.
async fn upload_hashes(
    operation: &'static str,
    body: &Bytes,
    tree_hash: Option<Digest>,
) -> Result<BodyHashes, GlacierError> {
    let compute = move |data: &[u8]| match tree_hash {
        Some(tree) => BodyHashes {
            tree,
            linear: treehash::linear_sha256(data),
        },
        None => treehash::body_hashes(data),
    };
    if body.len() <= HASH_INLINE_MAX {
        return Ok(compute(body));
    }
    let body = body.clone();
    match tokio::task::spawn_blocking(move || compute(&body)).await {
        Ok(hashes) => Ok(hashes),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(GlacierError::new(
            operation,
            ErrorKind::Other,
            "hashing the body was cancelled: the runtime is shutting down",
        )),
    }
}

/// Hands the SDK an upload body's hashes, computed here, for one UploadArchive or UploadPart.
///
/// The tree hash goes in as the operation's `checksum` input, so it is serialized as
/// `x-amz-sha256-tree-hash` and the SDK leaves it be. The SDK's Glacier interceptor still
/// hashes, in `modify_before_retry_loop`, the copy of the body the orchestrator loaded into
/// the config bag (`LoadedRequestBody`) right after serialization: every interceptor's
/// `read_after_serialization` runs between the two, whatever their order, so this one
/// replaces that copy with an empty one there. The request keeps its body; the SDK hashes
/// nothing and, having nothing else, sets `x-amz-content-sha256` and its payload hash to the
/// empty body's. Both are put right before signing: the header (signed like the rest) and
/// the signer's payload hash, through `PayloadSigningOverride`, which the SigV4 signer takes
/// over any payload hash of its operation's own.
#[derive(Debug)]
struct PrecomputedHashes {
    len: u64,
    linear_hex: String,
}

impl PrecomputedHashes {
    fn new(len: usize, hashes: &BodyHashes) -> Self {
        PrecomputedHashes {
            len: len as u64,
            linear_hex: to_hex(&hashes.linear),
        }
    }
}

/// The header of the linear hash, as the SDK's Glacier customisation spells it.
const CONTENT_SHA256: &str = "x-amz-content-sha256";

impl Intercept for PrecomputedHashes {
    fn name(&self) -> &'static str {
        "glacierfs::PrecomputedHashes"
    }

    fn read_after_serialization(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The hashes are of the body handed to the SDK; a different one would be signed wrong.
        let sent = context.request().body().content_length();
        if sent != Some(self.len) {
            return Err(format!(
                "the request body has {sent:?} bytes, the hashes are of {}",
                self.len
            )
            .into());
        }
        if let Some(LoadedRequestBody::Loaded(_)) = cfg.load::<LoadedRequestBody>() {
            cfg.interceptor_state()
                .store_put(LoadedRequestBody::Loaded(Bytes::new()));
        }
        Ok(())
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert(CONTENT_SHA256, self.linear_hex.clone());
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(
                self.linear_hex.clone(),
            ));
        Ok(())
    }
}

/// Maps an SDK failure to [`GlacierError`], keeping the service's code, message and request id.
fn sdk_err<E>(
    operation: &'static str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> GlacierError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let request_id = err.request_id().map(str::to_owned);
    let (kind, code, message) = match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let message = service
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| DisplayErrorContext(&err).to_string());
            (
                GlacierError::classify(code.as_deref(), status),
                code,
                message,
            )
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let message = DisplayErrorContext(&err).to_string();
            // Identity resolution failures arrive as dispatch failures; they are not transient.
            let kind = if message.contains("credentials") || message.contains("Credentials") {
                ErrorKind::Credentials
            } else {
                ErrorKind::Transient
            };
            (kind, None, message)
        }
        _ => (
            ErrorKind::Other,
            None,
            DisplayErrorContext(&err).to_string(),
        ),
    };
    GlacierError {
        operation,
        kind,
        code,
        message,
        request_id,
        status,
    }
}

fn missing(operation: &'static str, what: &str) -> GlacierError {
    GlacierError::new(
        operation,
        ErrorKind::Other,
        format!("response lacks {what}"),
    )
}

fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Glacier's pagination ends at an absent or empty marker.
fn next_marker(m: Option<&str>) -> Option<String> {
    m.filter(|m| !m.is_empty()).map(str::to_owned)
}

fn job_desc(j: &GlacierJobDescription) -> JobDesc {
    let action = match j.action() {
        Some(ActionCode::InventoryRetrieval) => JobAction::InventoryRetrieval,
        Some(ActionCode::Select) => JobAction::Select,
        _ => JobAction::ArchiveRetrieval,
    };
    let status = match j.status_code() {
        Some(StatusCode::Succeeded) => JobStatus::Succeeded,
        Some(StatusCode::Failed) => JobStatus::Failed,
        _ => JobStatus::InProgress,
    };
    JobDesc {
        job_id: j.job_id().unwrap_or_default().to_owned(),
        action,
        status,
        status_message: j.status_message().map(str::to_owned),
        archive_id: j.archive_id().map(str::to_owned),
        archive_size: j.archive_size_in_bytes().map(non_negative),
        archive_tree_hash: j.archive_sha256_tree_hash().map(str::to_owned),
        tree_hash: j.sha256_tree_hash().map(str::to_owned),
        retrieval_byte_range: j.retrieval_byte_range().map(str::to_owned),
        tier: j.tier().map(str::to_owned),
        creation_date: j.creation_date().map(str::to_owned),
        completion_date: j.completion_date().map(str::to_owned),
        inventory_size: j.inventory_size_in_bytes().map(non_negative),
        inventory_marker: j
            .inventory_retrieval_parameters()
            .and_then(|p| next_marker(p.marker())),
        description: j.job_description().map(str::to_owned),
    }
}

fn job_parameters(request: &JobRequest) -> JobParameters {
    match request {
        JobRequest::Archive {
            archive_id,
            tier,
            range,
            description,
        } => {
            let mut p = JobParameters::builder()
                .r#type("archive-retrieval")
                .archive_id(archive_id)
                .tier(tier.as_str());
            if let Some((s, e)) = range {
                p = p.retrieval_byte_range(format!("{s}-{e}"));
            }
            if let Some(d) = description {
                p = p.description(d);
            }
            p.build()
        }
        JobRequest::Inventory {
            format,
            marker,
            limit,
            description,
        } => {
            let mut p = JobParameters::builder()
                .r#type("inventory-retrieval")
                .format(format);
            if marker.is_some() || limit.is_some() {
                let mut inv = InventoryRetrievalJobInput::builder();
                if let Some(m) = marker {
                    inv = inv.marker(m);
                }
                if let Some(l) = limit {
                    inv = inv.limit(l.to_string());
                }
                p = p.inventory_retrieval_parameters(inv.build());
            }
            if let Some(d) = description {
                p = p.description(d);
            }
            p.build()
        }
    }
}

/// Total length from `bytes S-E/T` or the range length when T is `*`.
fn content_length(content_range: Option<&str>) -> Option<u64> {
    let spec = content_range?.trim().strip_prefix("bytes ")?;
    let (range, _total) = spec.split_once('/')?;
    let (s, e) = parse_range(range)?;
    Some(e - s + 1)
}

impl GlacierClient for AwsGlacier {
    fn list_vaults(&self) -> BoxFut<'_, Vec<VaultDesc>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_vaults()
                    .account_id(&self.account)
                    .set_marker(marker.take())
                    .limit(1000)
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListVaults", e))?;
                out.extend(page.vault_list().iter().map(|v| VaultDesc {
                    name: v.vault_name().unwrap_or_default().to_owned(),
                    arn: v.vault_arn().map(str::to_owned),
                    creation_date: v.creation_date().map(str::to_owned),
                    last_inventory_date: v.last_inventory_date().map(str::to_owned),
                    number_of_archives: non_negative(v.number_of_archives()),
                    size_in_bytes: non_negative(v.size_in_bytes()),
                }));
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn describe_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, VaultDesc> {
        Box::pin(async move {
            let v = self
                .client
                .describe_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeVault", e))?;
            Ok(VaultDesc {
                name: v.vault_name().unwrap_or(vault).to_owned(),
                arn: v.vault_arn().map(str::to_owned),
                creation_date: v.creation_date().map(str::to_owned),
                last_inventory_date: v.last_inventory_date().map(str::to_owned),
                number_of_archives: non_negative(v.number_of_archives()),
                size_in_bytes: non_negative(v.size_in_bytes()),
            })
        })
    }

    fn create_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .create_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("CreateVault", e))?;
            Ok(())
        })
    }

    fn delete_vault<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_vault()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("DeleteVault", e))?;
            Ok(())
        })
    }

    fn upload_archive<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, ArchiveCreated> {
        Box::pin(async move {
            let hashes = upload_hashes("UploadArchive", &body, tree_hash).await?;
            let precomputed = PrecomputedHashes::new(body.len(), &hashes);
            let out = self
                .client
                .upload_archive()
                .account_id(&self.account)
                .vault_name(vault)
                .archive_description(description)
                .checksum(to_hex(&hashes.tree))
                .body(ByteStream::from(body))
                .customize()
                .interceptor(precomputed)
                .send()
                .await
                .map_err(|e| sdk_err("UploadArchive", e))?;
            Ok(ArchiveCreated {
                archive_id: out
                    .archive_id()
                    .ok_or_else(|| missing("UploadArchive", "x-amz-archive-id"))?
                    .to_owned(),
                tree_hash: out.checksum().map(str::to_owned),
            })
        })
    }

    fn delete_archive<'a>(&'a self, vault: &'a str, archive_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .delete_archive()
                .account_id(&self.account)
                .vault_name(vault)
                .archive_id(archive_id)
                .send()
                .await
                .map_err(|e| sdk_err("DeleteArchive", e))?;
            Ok(())
        })
    }

    fn initiate_multipart<'a>(
        &'a self,
        vault: &'a str,
        description: &'a str,
        part_size: u64,
    ) -> BoxFut<'a, String> {
        Box::pin(async move {
            let out = self
                .client
                .initiate_multipart_upload()
                .account_id(&self.account)
                .vault_name(vault)
                .archive_description(description)
                .part_size(part_size.to_string())
                .send()
                .await
                .map_err(|e| sdk_err("InitiateMultipartUpload", e))?;
            out.upload_id()
                .map(str::to_owned)
                .ok_or_else(|| missing("InitiateMultipartUpload", "x-amz-multipart-upload-id"))
        })
    }

    fn upload_part<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        start: u64,
        body: Bytes,
        tree_hash: Option<Digest>,
    ) -> BoxFut<'a, Option<String>> {
        Box::pin(async move {
            let end = start + body.len() as u64 - 1;
            let hashes = upload_hashes("UploadMultipartPart", &body, tree_hash).await?;
            let precomputed = PrecomputedHashes::new(body.len(), &hashes);
            let out = self
                .client
                .upload_multipart_part()
                .account_id(&self.account)
                .vault_name(vault)
                .upload_id(upload_id)
                .range(format!("bytes {start}-{end}/*"))
                .checksum(to_hex(&hashes.tree))
                .body(ByteStream::from(body))
                .customize()
                .interceptor(precomputed)
                .send()
                .await
                .map_err(|e| sdk_err("UploadMultipartPart", e))?;
            Ok(out.checksum().map(str::to_owned))
        })
    }

    fn complete_multipart<'a>(
        &'a self,
        vault: &'a str,
        upload_id: &'a str,
        size: u64,
        tree_hash: Digest,
    ) -> BoxFut<'a, ArchiveCreated> {
        Box::pin(async move {
            let out = self
                .client
                .complete_multipart_upload()
                .account_id(&self.account)
                .vault_name(vault)
                .upload_id(upload_id)
                .archive_size(size.to_string())
                .checksum(to_hex(&tree_hash))
                .send()
                .await
                .map_err(|e| sdk_err("CompleteMultipartUpload", e))?;
            Ok(ArchiveCreated {
                archive_id: out
                    .archive_id()
                    .ok_or_else(|| missing("CompleteMultipartUpload", "x-amz-archive-id"))?
                    .to_owned(),
                tree_hash: out.checksum().map(str::to_owned),
            })
        })
    }

    fn abort_multipart<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .abort_multipart_upload()
                .account_id(&self.account)
                .vault_name(vault)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(|e| sdk_err("AbortMultipartUpload", e))?;
            Ok(())
        })
    }

    fn list_parts<'a>(&'a self, vault: &'a str, upload_id: &'a str) -> BoxFut<'a, PartsListing> {
        Box::pin(async move {
            let mut listing = PartsListing {
                part_size: 0,
                description: None,
                parts: Vec::new(),
            };
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_parts()
                    .account_id(&self.account)
                    .vault_name(vault)
                    .upload_id(upload_id)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListParts", e))?;
                listing.part_size = non_negative(page.part_size_in_bytes());
                listing.description = page.archive_description().map(str::to_owned);
                for p in page.parts() {
                    let (start, end_inclusive) = p
                        .range_in_bytes()
                        .and_then(parse_range)
                        .ok_or_else(|| missing("ListParts", "a valid RangeInBytes"))?;
                    listing.parts.push(PartDesc {
                        start,
                        end_inclusive,
                        tree_hash: p.sha256_tree_hash().unwrap_or_default().to_owned(),
                    });
                }
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(listing);
                }
            }
        })
    }

    fn list_multipart_uploads<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Vec<UploadDesc>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_multipart_uploads()
                    .account_id(&self.account)
                    .vault_name(vault)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListMultipartUploads", e))?;
                out.extend(page.uploads_list().iter().map(|u| UploadDesc {
                    upload_id: u.multipart_upload_id().unwrap_or_default().to_owned(),
                    description: u.archive_description().map(str::to_owned),
                    part_size: non_negative(u.part_size_in_bytes()),
                    creation_date: u.creation_date().map(str::to_owned),
                }));
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn initiate_job<'a>(&'a self, vault: &'a str, request: &'a JobRequest) -> BoxFut<'a, String> {
        Box::pin(async move {
            let out = self
                .client
                .initiate_job()
                .account_id(&self.account)
                .vault_name(vault)
                .job_parameters(job_parameters(request))
                .send()
                .await
                .map_err(|e| sdk_err("InitiateJob", e))?;
            out.job_id()
                .map(str::to_owned)
                .ok_or_else(|| missing("InitiateJob", "x-amz-job-id"))
        })
    }

    fn describe_job<'a>(&'a self, vault: &'a str, job_id: &'a str) -> BoxFut<'a, JobDesc> {
        Box::pin(async move {
            let out = self
                .client
                .describe_job()
                .account_id(&self.account)
                .vault_name(vault)
                .job_id(job_id)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeJob", e))?;
            // DescribeJob's output mirrors GlacierJobDescription field for field.
            let j = GlacierJobDescription::builder()
                .set_job_id(out.job_id().map(str::to_owned))
                .set_job_description(out.job_description().map(str::to_owned))
                .set_action(out.action().cloned())
                .set_archive_id(out.archive_id().map(str::to_owned))
                .set_status_code(out.status_code().cloned())
                .set_status_message(out.status_message().map(str::to_owned))
                .set_archive_size_in_bytes(out.archive_size_in_bytes())
                .set_inventory_size_in_bytes(out.inventory_size_in_bytes())
                .set_creation_date(out.creation_date().map(str::to_owned))
                .set_completion_date(out.completion_date().map(str::to_owned))
                .set_sha256_tree_hash(out.sha256_tree_hash().map(str::to_owned))
                .set_archive_sha256_tree_hash(out.archive_sha256_tree_hash().map(str::to_owned))
                .set_retrieval_byte_range(out.retrieval_byte_range().map(str::to_owned))
                .set_tier(out.tier().map(str::to_owned))
                .set_inventory_retrieval_parameters(out.inventory_retrieval_parameters().cloned())
                .build();
            Ok(job_desc(&j))
        })
    }

    fn list_jobs<'a>(&'a self, vault: &'a str, filter: JobFilter) -> BoxFut<'a, Vec<JobDesc>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut marker = None;
            loop {
                let page = self
                    .client
                    .list_jobs()
                    .account_id(&self.account)
                    .vault_name(vault)
                    .set_marker(marker.take())
                    .set_completed(filter.completed.map(|c| c.to_string()))
                    .set_statuscode(filter.status.map(|s| s.as_str().to_owned()))
                    .send()
                    .await
                    .map_err(|e| sdk_err("ListJobs", e))?;
                out.extend(page.job_list().iter().map(job_desc));
                marker = next_marker(page.marker());
                if marker.is_none() {
                    return Ok(out);
                }
            }
        })
    }

    fn get_job_output<'a>(
        &'a self,
        vault: &'a str,
        job_id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFut<'a, JobOutput> {
        Box::pin(async move {
            let out = self
                .client
                .get_job_output()
                .account_id(&self.account)
                .vault_name(vault)
                .job_id(job_id)
                .set_range(range.map(|(s, e)| format!("bytes={s}-{e}")))
                .send()
                .await
                .map_err(|e| sdk_err("GetJobOutput", e))?;
            let content_range = out.content_range().map(str::to_owned);
            Ok(JobOutput {
                status: u16::try_from(out.status()).unwrap_or(200),
                tree_hash: out.checksum().map(str::to_owned),
                content_length: content_length(content_range.as_deref()),
                content_range,
                body: Box::pin(out.body.into_async_read()),
            })
        })
    }

    fn get_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, Option<LockDesc>> {
        Box::pin(async move {
            let result = self
                .client
                .get_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await;
            match result {
                Ok(out) => Ok(Some(LockDesc {
                    state: out.state().unwrap_or("Unknown").to_owned(),
                    policy: out.policy().map(str::to_owned),
                    creation_date: out.creation_date().map(str::to_owned),
                    expiration_date: out.expiration_date().map(str::to_owned),
                })),
                Err(e) => {
                    let err = sdk_err("GetVaultLock", e);
                    if err.kind == ErrorKind::NotFound && err.code.is_some() {
                        Ok(None)
                    } else {
                        Err(err)
                    }
                }
            }
        })
    }

    fn initiate_vault_lock<'a>(&'a self, vault: &'a str, policy: &'a str) -> BoxFut<'a, String> {
        Box::pin(async move {
            let out = self
                .client
                .initiate_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .policy(VaultLockPolicy::builder().policy(policy).build())
                .send()
                .await
                .map_err(|e| sdk_err("InitiateVaultLock", e))?;
            out.lock_id()
                .map(str::to_owned)
                .ok_or_else(|| missing("InitiateVaultLock", "x-amz-lock-id"))
        })
    }

    fn complete_vault_lock<'a>(&'a self, vault: &'a str, lock_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .complete_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .lock_id(lock_id)
                .send()
                .await
                .map_err(|e| sdk_err("CompleteVaultLock", e))?;
            Ok(())
        })
    }

    fn abort_vault_lock<'a>(&'a self, vault: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.client
                .abort_vault_lock()
                .account_id(&self.account)
                .vault_name(vault)
                .send()
                .await
                .map_err(|e| sdk_err("AbortVaultLock", e))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_the_body_length() {
        assert_eq!(
            content_length(Some("bytes 0-1048575/8388608")),
            Some(1048576)
        );
        assert_eq!(content_length(Some("bytes 5-9/*")), Some(5));
        assert_eq!(content_length(None), None);
        assert_eq!(content_length(Some("garbage")), None);
    }

    #[test]
    fn markers_end_when_empty() {
        assert_eq!(next_marker(Some("")), None);
        assert_eq!(next_marker(None), None);
        assert_eq!(next_marker(Some("m")), Some("m".to_owned()));
    }
}
