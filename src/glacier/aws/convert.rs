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
    RetrievalPolicy,
};

/// The most of a service message a user is shown; the rest is in the DEBUG log.
const MESSAGE_LIMIT: usize = 180;

/// Maps an SDK failure to [`GlacierError`], keeping the service's code, message and request id.
/// The message is one readable line: the service's own words, or, where there are none, what
/// happened in plain terms (the HTTP status, a timeout, an endpoint that cannot be reached)
/// with a hint where one is known. The SDK's whole error chain goes to the DEBUG log only: it
/// is long, spans lines and dumps internal structures.
pub(super) fn sdk_err<E>(
    operation: &'static str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> GlacierError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let chain = DisplayErrorContext(&err).to_string();
    log::debug!("{operation} failed: {chain}");
    let status = err.raw_response().map(|r| r.status().as_u16());
    let request_id = err.request_id().map(str::to_owned);
    let (kind, code, message) = match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let message = service
                .err()
                .message()
                .and_then(readable)
                .unwrap_or_else(|| status_text(operation, code.is_some(), status));
            (
                GlacierError::classify(code.as_deref(), status),
                code,
                message,
            )
        }
        SdkError::TimeoutError(_) => (
            ErrorKind::Transient,
            None,
            "no answer in time (timed out)".to_owned(),
        ),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            // Identity resolution failures arrive as dispatch failures; they are not transient.
            let credentials = chain.contains("credentials") || chain.contains("Credentials");
            let cause = root_cause(&err);
            let (kind, what) = match (credentials, &err) {
                (true, _) => (
                    ErrorKind::Credentials,
                    "no usable AWS credentials (set them in the environment, a profile or an \
                     instance role)",
                ),
                (false, SdkError::ResponseError(_)) => {
                    (ErrorKind::Transient, "the answer could not be read")
                }
                (false, _) => (ErrorKind::Transient, "the endpoint could not be reached"),
            };
            (kind, None, with_cause(what, cause))
        }
        _ => (
            ErrorKind::Other,
            None,
            with_cause("the request could not be made", root_cause(&err)),
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

/// [`sdk_err`] for the vault sub-resources and account settings (tags, access policy,
/// notifications, retrieval policy, capacity), which partial endpoints often lack: a 404 that
/// carries no error code did not come from a vault API that knows the call (a missing vault
/// or setting has `ResourceNotFoundException`), so it is [`ErrorKind::Unsupported`].
pub(super) fn sub_resource_err<E>(
    operation: &'static str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> GlacierError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut e = sdk_err(operation, err);
    if e.code.is_none() && e.status == Some(404) {
        e.kind = ErrorKind::Unsupported;
    }
    e
}

/// A sub-resource that is not set (ResourceNotFoundException) reads as `None`.
pub(super) fn none_if_unset<T>(e: GlacierError) -> Result<Option<T>, GlacierError> {
    if e.kind == ErrorKind::NotFound && e.code.is_some() {
        Ok(None)
    } else {
        Err(e)
    }
}

/// GetDataRetrievalPolicy's one rule as a [`RetrievalPolicy`]; no rule at all is `None`, the
/// policy of an account that never set one.
pub(super) fn retrieval_policy(
    policy: Option<&aws_sdk_glacier::types::DataRetrievalPolicy>,
) -> Result<RetrievalPolicy, GlacierError> {
    let Some(rule) = policy.and_then(|p| p.rules().first()) else {
        return Ok(RetrievalPolicy::None);
    };
    let strategy = rule.strategy().unwrap_or("None");
    let rate = rule.bytes_per_hour().and_then(|n| u64::try_from(n).ok());
    RetrievalPolicy::from_rule(strategy, rate).ok_or_else(|| {
        GlacierError::new(
            "GetDataRetrievalPolicy",
            ErrorKind::Other,
            format!("unknown data-retrieval strategy {strategy:?}"),
        )
    })
}

/// `what`, followed by the innermost cause when it reads as a sentence.
fn with_cause(what: &str, cause: Option<String>) -> String {
    match cause {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}

/// The innermost error of a chain (the one that says what really happened: "connection
/// refused", "dns error"), as one readable line.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut inner = err;
    while let Some(next) = inner.source() {
        inner = next;
    }
    readable(&inner.to_string())
}

/// A message as one line of bounded length; None when it is empty or is not prose (a dumped
/// structure, an HTML page), which the status line replaces.
pub(crate) fn readable(raw: &str) -> Option<String> {
    let line = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() || line.contains(['{', '}', '<', '>']) {
        return None;
    }
    if line.chars().count() <= MESSAGE_LIMIT {
        return Some(line);
    }
    let cut: String = line.chars().take(MESSAGE_LIMIT - 1).collect();
    Some(format!("{}…", cut.trim_end()))
}

/// What an answer with no readable message means: its HTTP status, and a hint where the
/// status says something about the endpoint rather than the request.
fn status_text(operation: &str, has_code: bool, status: Option<u16>) -> String {
    let Some(status) = status else {
        return "the endpoint gave no reason".to_owned();
    };
    let reason = match status_reason(status) {
        Some(r) => format!("{status} {r}"),
        None => format!("HTTP status {status}"),
    };
    // A 404 with an error code is Glacier's "no such vault, job or upload"; one without is a
    // server that does not know the request at all.
    let hint = match status {
        404 if !has_code && is_multipart(operation) => " (it may not implement multipart uploads)",
        404 if !has_code => " (it may not implement this call)",
        401 | 403 if !has_code => " (check the credentials, the region and the endpoint URL)",
        _ => "",
    };
    format!("the endpoint answered {reason}{hint}")
}

fn is_multipart(operation: &str) -> bool {
    matches!(
        operation,
        "InitiateMultipartUpload"
            | "UploadMultipartPart"
            | "CompleteMultipartUpload"
            | "AbortMultipartUpload"
            | "ListParts"
            | "ListMultipartUploads"
    )
}

/// The standard reason phrase of the statuses an endpoint or a proxy in front of it answers.
fn status_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
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
    use aws_sdk_glacier::error::ErrorMetadata;
    use aws_sdk_glacier::operation::initiate_job::InitiateJobError;
    use aws_sdk_glacier::operation::initiate_multipart_upload::InitiateMultipartUploadError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn response(status: u16, body: &'static str) -> Response {
        Response::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
    }

    /// What every message a user sees must be: one line, bounded, no dumped structure.
    fn assert_readable(text: &str, operation: &str) {
        assert!(text.chars().count() <= 300, "too long: {text}");
        assert!(!text.contains('\n'), "more than one line: {text}");
        assert!(!text.contains('{'), "a dump: {text}");
        assert!(
            text.starts_with(operation),
            "does not name {operation}: {text}"
        );
    }

    #[test]
    fn a_bare_404_on_a_multipart_call_reads_as_one_line_with_a_hint() {
        // An HTML page with no error code: the SDK can only call it unhandled, and its own
        // rendering of that is a multi-line dump.
        let source: Box<dyn std::error::Error + Send + Sync> =
            "failed to parse JSON: { unexpected `<` at offset 0 }\n<html>".into();
        let err = SdkError::service_error(
            InitiateMultipartUploadError::unhandled(source),
            response(404, "<html><h1>404 Not Found</h1></html>"),
        );
        assert!(DisplayErrorContext(&err).to_string().contains('{'));
        let e = sdk_err("InitiateMultipartUpload", err);
        let text = e.to_string();
        assert_readable(&text, "InitiateMultipartUpload");
        assert_eq!(
            text,
            "InitiateMultipartUpload: the endpoint answered 404 Not Found (it may not implement \
             multipart uploads)"
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.status, Some(404));
    }

    #[test]
    fn a_service_error_keeps_glaciers_code_and_message() {
        let meta = ErrorMetadata::builder()
            .code("PolicyEnforcedException")
            .message("InitiateJob request denied by current data retrieval policy.")
            .build();
        let err = SdkError::service_error(InitiateJobError::generic(meta), response(400, ""));
        let e = sdk_err("InitiateJob", err);
        assert_eq!(e.kind, ErrorKind::PolicyEnforced);
        assert_eq!(
            e.to_string(),
            "InitiateJob: PolicyEnforcedException: InitiateJob request denied by current data \
             retrieval policy."
        );
        // A long, many-line message is cut to one bounded line.
        let meta = ErrorMetadata::builder()
            .code("InvalidParameterValueException")
            .message(format!("first line\nsecond {}", "x ".repeat(400)))
            .build();
        let err = SdkError::service_error(InitiateJobError::generic(meta), response(400, ""));
        let text = sdk_err("InitiateJob", err).to_string();
        assert_readable(
            &text,
            "InitiateJob: InvalidParameterValueException: first line second",
        );
        assert!(text.ends_with('…'), "{text}");
    }

    #[test]
    fn transport_failures_name_their_cause_without_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err: SdkError<InitiateJobError, Response> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        let e = sdk_err("InitiateJob", err);
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "InitiateJob: the endpoint could not be reached: Connection refused"
        );
        let err: SdkError<InitiateJobError, Response> = SdkError::timeout_error("deadline");
        let text = sdk_err("InitiateJob", err).to_string();
        assert_readable(&text, "InitiateJob");
        assert!(text.contains("timed out"), "{text}");
    }

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
