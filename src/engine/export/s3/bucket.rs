//! The bucket an export writes to, through aws-sdk-s3: the dozen calls the export makes, each
//! answering with plain values or a typed [`S3Error`] that says whether trying again may help.
//!
//! The SDK's standard retries stay on here (unlike Glacier's client, whose retry rules live in
//! `glacier::retry`): S3's transient answers (500, 503 SlowDown, resets) are exactly what they
//! retry, and every body sent is an in-memory buffer the SDK can send again. The SDK computes
//! no checksum of its own: each body's SHA-256 is computed once, by the caller, from the bytes
//! it verified, and sent as `x-amz-checksum-sha256` so that S3 checks what it stores against
//! what glacierfs checked. That SHA-256 is also the payload hash SigV4 signs
//! ([`SignedPayload`]), so the SDK does not hash a body a second time to sign it.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, MetadataDirective, StorageClass,
};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine as _;
use bytes::Bytes;

/// How an S3 call failed, as far as the export cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The bucket does not exist.
    NoSuchBucket,
    /// The multipart upload is gone (completed or aborted elsewhere).
    NoSuchUpload,
    /// S3 computed another checksum than the one sent: the body was damaged on the way.
    BadDigest,
    /// Refused for want of permission or valid credentials.
    Denied,
    /// The network or S3 itself, after the SDK's own retries: worth trying later.
    Transient,
    /// Anything else: a request S3 will not take.
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("S3 {op}: {message}")]
pub struct S3Error {
    pub op: &'static str,
    pub kind: S3ErrorKind,
    pub message: String,
}

impl S3Error {
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, S3ErrorKind::Transient | S3ErrorKind::BadDigest)
    }

    fn of<E: ProvideErrorMetadata + std::error::Error + 'static>(
        op: &'static str,
        e: SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> S3Error {
        let (kind, message) = match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let kind = match (code, status) {
                    ("NoSuchBucket", _) => S3ErrorKind::NoSuchBucket,
                    ("NoSuchUpload", _) => S3ErrorKind::NoSuchUpload,
                    ("BadDigest" | "XAmzContentSHA256Mismatch", _) => S3ErrorKind::BadDigest,
                    ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _) => {
                        S3ErrorKind::Denied
                    }
                    ("SlowDown" | "RequestTimeout" | "InternalError", _) => S3ErrorKind::Transient,
                    (_, 500..=599) => S3ErrorKind::Transient,
                    (_, 403) => S3ErrorKind::Denied,
                    _ => S3ErrorKind::Other,
                };
                let message = match (code, se.err().message()) {
                    ("", _) => format!("HTTP {status}"),
                    (c, Some(m)) if !m.is_empty() => format!("{c}: {m}"),
                    (c, _) => format!("{c} (HTTP {status})"),
                };
                (kind, message)
            }
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => (S3ErrorKind::Transient, one_line(&e)),
            _ => (S3ErrorKind::Other, one_line(&e)),
        };
        S3Error { op, kind, message }
    }
}

/// An error and its sources on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s.replace('\n', " ")
}

/// What an object is stored with besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub storage_class: &'static str,
    /// User metadata, names without the `x-amz-meta-` prefix.
    pub user: BTreeMap<String, String>,
}

/// What HeadObject says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub user: BTreeMap<String, String>,
}

/// One part S3 holds of an open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub etag: String,
    pub size: u64,
    /// Base64, as sent.
    pub sha256: Option<String>,
}

/// An open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
}

/// Where and as whom to reach the bucket.
#[derive(Debug, Clone)]
pub struct Reach {
    pub bucket: String,
    /// None: the AWS configuration's region.
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The bucket, through the SDK.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Client,
    name: String,
}

impl Bucket {
    /// A client for the bucket, credentials from the usual AWS chain. A custom endpoint is
    /// addressed path-style (`URL/BUCKET/KEY`), which every S3-compatible server takes.
    pub async fn connect(reach: &Reach) -> Bucket {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &reach.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &reach.profile {
            loader = loader.profile_name(profile);
        }
        let shared = loader.load().await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build();
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &reach.endpoint_url {
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        Bucket {
            client: Client::from_conf(conf.build()),
            name: reach.bucket.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object under `key`, if there is one. The bucket must exist ([`Bucket::check`]).
    pub async fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        let sent = self
            .client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await;
        match sent {
            Ok(out) => Ok(Some(Head {
                size: out.content_length().map_or(0, |n| n.max(0) as u64),
                user: out
                    .metadata()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.to_lowercase(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })),
            // HEAD has no body, so a missing bucket would answer a bare 404 too: callers check
            // the bucket once first ([`Bucket::check`]) rather than once per key here.
            Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(S3Error::of("HeadObject", e)),
        }
    }

    /// Checks that the bucket is there and reachable before anything else is asked of it.
    pub async fn check(&self) -> Result<(), S3Error> {
        match self.client.head_bucket().bucket(&self.name).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => Err(S3Error {
                op: "HeadBucket",
                kind: S3ErrorKind::NoSuchBucket,
                message: format!("bucket {} does not exist; create it first", self.name),
            }),
            Err(e) => Err(S3Error::of("HeadBucket", e)),
        }
    }

    /// PutObject of a whole (small) object.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &str,
        meta: &ObjectMeta,
    ) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_length(body.len() as i64)
            .checksum_sha256(sha256)
            .storage_class(StorageClass::from(meta.storage_class))
            .set_metadata(Some(meta.user.clone().into_iter().collect()))
            .body(ByteStream::from(body))
            .customize()
            .interceptor(SignedPayload::of(sha256))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| S3Error::of("PutObject", e))
    }

    /// CreateMultipartUpload, with per-part SHA-256 checksums.
    pub async fn create_upload(&self, key: &str, meta: &ObjectMeta) -> Result<String, S3Error> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .storage_class(StorageClass::from(meta.storage_class))
            .set_metadata(Some(meta.user.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| S3Error::of("CreateMultipartUpload", e))?;
        out.upload_id().map(str::to_owned).ok_or_else(|| S3Error {
            op: "CreateMultipartUpload",
            kind: S3ErrorKind::Other,
            message: "the answer has no upload id".into(),
        })
    }

    /// UploadPart; returns the part's ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Bytes,
        sha256: &str,
    ) -> Result<String, S3Error> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(body.len() as i64)
            .checksum_sha256(sha256)
            .body(ByteStream::from(body))
            .customize()
            .interceptor(SignedPayload::of(sha256))
            .send()
            .await
            .map_err(|e| S3Error::of("UploadPart", e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// Every part S3 holds of an upload, in part-number order.
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, S3Error> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.name)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| S3Error::of("ListParts", e))?;
            for p in out.parts() {
                parts.push(PartInfo {
                    number: p.part_number().unwrap_or(0).max(0) as u32,
                    etag: p.e_tag().unwrap_or_default().to_owned(),
                    size: p.size().unwrap_or(0).max(0) as u64,
                    sha256: p.checksum_sha256().map(str::to_owned),
                });
            }
            match (out.is_truncated(), out.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartInfo],
    ) -> Result<(), S3Error> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag)
                    .set_checksum_sha256(p.sha256.clone())
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| S3Error::of("CompleteMultipartUpload", e))
    }

    /// AbortMultipartUpload; an upload already gone counts as aborted.
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let sent = self
            .client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        match sent.map_err(|e| S3Error::of("AbortMultipartUpload", e)) {
            Err(e) if e.kind == S3ErrorKind::NoSuchUpload => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every open multipart upload under `prefix`.
    pub async fn open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, S3Error> {
        let mut found = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.name)
                .prefix(prefix)
                .set_key_marker(markers.0.take())
                .set_upload_id_marker(markers.1.take())
                .send()
                .await
                .map_err(|e| S3Error::of("ListMultipartUploads", e))?;
            for u in out.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    found.push(OpenUpload {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                    });
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            markers = (
                out.next_key_marker().map(str::to_owned),
                out.next_upload_id_marker().map(str::to_owned),
            );
            if markers.0.is_none() {
                break;
            }
        }
        Ok(found)
    }

    /// A server-side copy of `from` to `to`, stored with `meta` (no data passes through here).
    pub async fn copy(&self, from: &str, to: &str, meta: &ObjectMeta) -> Result<(), S3Error> {
        self.client
            .copy_object()
            .bucket(&self.name)
            .key(to)
            .copy_source(copy_source(&self.name, from))
            .metadata_directive(MetadataDirective::Replace)
            .storage_class(StorageClass::from(meta.storage_class))
            .set_metadata(Some(meta.user.clone().into_iter().collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| S3Error::of("CopyObject", e))
    }
}

/// `x-amz-copy-source`: the bucket and the key, URL-encoded (S3 decodes it; `/` may stay).
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Gives SigV4 the body's SHA-256, which the caller computed from the bytes it verified (and
/// sends as `x-amz-checksum-sha256`), as the payload hash to sign: left alone, the SDK would
/// hash every body again to sign it, a whole pass over each part on the send's critical path.
#[derive(Debug)]
struct SignedPayload {
    /// Hex; `None` when the checksum given is not base64 of 32 bytes (the SDK then hashes the
    /// body itself, and S3 refuses the checksum anyway).
    hex: Option<String>,
}

impl SignedPayload {
    /// From the base64 SHA-256 sent as the body's checksum.
    fn of(sha256_b64: &str) -> SignedPayload {
        let hex = base64::engine::general_purpose::STANDARD
            .decode(sha256_b64)
            .ok()
            .filter(|raw| raw.len() == 32)
            .map(hex::encode);
        SignedPayload { hex }
    }
}

/// The header of the payload hash S3 requires with a SigV4 signature.
const CONTENT_SHA256: &str = "x-amz-content-sha256";

impl Intercept for SignedPayload {
    fn name(&self) -> &'static str {
        "glacierfs::SignedPayload"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(hex) = &self.hex {
            context
                .request_mut()
                .headers_mut()
                .insert(CONTENT_SHA256, hex.clone());
            cfg.interceptor_state().store_put(
                aws_runtime::auth::PayloadSigningOverride::Precomputed(hex.clone()),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_encode_what_a_url_cannot_hold() {
        assert_eq!(copy_source("b", "a/b c.txt"), "b/a/b%20c.txt");
        assert_eq!(copy_source("b", "é,\"+%"), "b/%C3%A9%2C%22%2B%25");
    }
}
