//! Conversions between the SDK's types and the [`GlacierClient`] types: errors (keeping the
//! service's code, message and request id), job descriptions and parameters, pagination
//! markers and content ranges.

use aws_sdk_glacier::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_glacier::operation::RequestId;
use aws_sdk_glacier::types::{
    ActionCode, GlacierJobDescription, InventoryRetrievalJobInput, JobParameters, StatusCode,
};

use crate::glacier::{
    parse_range, ErrorKind, GlacierError, JobAction, JobDesc, JobRequest, JobStatus,
};

/// Maps an SDK failure to [`GlacierError`], keeping the service's code, message and request id.
pub(super) fn sdk_err<E>(
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

pub(super) fn missing(operation: &'static str, what: &str) -> GlacierError {
    GlacierError::new(
        operation,
        ErrorKind::Other,
        format!("response lacks {what}"),
    )
}

pub(super) fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Glacier's pagination ends at an absent or empty marker.
pub(super) fn next_marker(m: Option<&str>) -> Option<String> {
    m.filter(|m| !m.is_empty()).map(str::to_owned)
}

pub(super) fn job_desc(j: &GlacierJobDescription) -> JobDesc {
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

pub(super) fn job_parameters(request: &JobRequest) -> JobParameters {
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
pub(super) fn content_length(content_range: Option<&str>) -> Option<u64> {
    let spec = content_range?.trim().strip_prefix("bytes ")?;
    let (range, _total) = spec.split_once('/')?;
    let (s, e) = parse_range(range)?;
    Some(e - s + 1)
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
