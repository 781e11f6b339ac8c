//! Upload bodies hashed once and handed to the SDK so it hashes nothing: the tree hash and the
//! linear SHA-256 of each body come from one pass ([`treehash::body_hashes`]), here, or by the
//! caller of `upload_part_hashed`, and the `PrecomputedHashes` interceptor gives them to the
//! request right before it is signed.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::LoadedRequestBody;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;

use crate::codec::treehash::{self, to_hex, BodyHashes, Digest};
use crate::glacier::{ErrorKind, GlacierError};

/// Bodies up to this size are hashed where the call is polled (well under a tenth of a
/// millisecond); larger ones on the blocking pool, never on a runtime worker.
const HASH_INLINE_MAX: usize = 64 * 1024;

/// The hashes an upload of `body` is sent with. A tree hash the caller gives is used as it is
/// (Glacier checks the body against it), and only the linear hash is computed.
pub(super) async fn upload_hashes(
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
pub(super) struct PrecomputedHashes {
    len: u64,
    linear_hex: String,
}

impl PrecomputedHashes {
    pub(super) fn new(len: usize, hashes: &BodyHashes) -> Self {
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
