//! The emulator's view of one HTTP exchange: a parsed request, the response a handler builds,
//! and Glacier's error shape (`{"code","message","type"}` plus `x-amzn-ErrorType`).

use std::sync::Arc;

use serde_json::Value;

/// A fully read request. Header names are lower-cased; values stay raw bytes because a bad
/// archive description (non-ASCII) must reach the handler to be refused there.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// The raw path, still percent-encoded.
    pub path: String,
    /// The raw query string (after `?`), still encoded: what the signature covers.
    pub raw_query: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// HTTP/1.0 connections default to close.
    pub http10: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A header as text; a value that is not UTF-8 reads as absent-but-present garbage, so
    /// callers that care about bytes use [`Request::header`].
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response body: a view into shared bytes, so a job's output of an archive is served without
/// copying the archive.
#[derive(Clone, Debug, Default)]
pub(crate) struct Body {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Body {
    pub fn new(bytes: Vec<u8>) -> Body {
        let end = bytes.len();
        Body {
            buf: Arc::new(bytes),
            start: 0,
            end,
        }
    }

    pub fn slice(buf: Arc<Vec<u8>>, start: usize, end: usize) -> Body {
        assert!(start <= end && end <= buf.len());
        Body { buf, start, end }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// What a GetJobOutput response served, so stats can record it once the bytes are on the wire.
#[derive(Clone, Debug)]
pub(crate) struct OutputServed {
    pub job_id: String,
    pub first: u64,
    pub last: u64,
}

#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub served: Option<OutputServed>,
}

impl Response {
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::default(),
            served: None,
        }
    }

    pub fn json(status: u16, value: &Value) -> Response {
        let bytes = serde_json::to_vec(value).expect("a JSON value serializes");
        Response::empty(status)
            .with_header("Content-Type", "application/json")
            .with_body(Body::new(bytes))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }
}

/// A Glacier error. `code` doubles as `x-amzn-ErrorType`, which the Rust SDK reads first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "InvalidParameterValueException", message)
    }

    pub fn missing(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "MissingParameterValueException", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "ResourceNotFoundException", message)
    }

    pub fn access_denied(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "AccessDeniedException", message)
    }

    pub fn limit_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "LimitExceededException", message)
    }

    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "SerializationException", message)
    }

    pub fn to_response(&self) -> Response {
        let kind = if self.status >= 500 {
            "Server"
        } else {
            "Client"
        };
        let body = serde_json::json!({ "code": self.code, "message": self.message, "type": kind });
        Response::json(self.status, &body).with_header("x-amzn-ErrorType", self.code)
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Parses an optional `limit` query parameter: an integer in 1..=1000.
pub(crate) fn parse_limit(req: &Request, default: usize) -> Result<usize, ApiError> {
    match req.query("limit") {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "Invalid limit value: '{s}'; it must be an integer from 1 to 1000"
            ))),
        },
    }
}

/// Reads a JSON object body. An empty body is `None`, so each operation can say what is missing.
pub(crate) fn json_body(req: &Request) -> Result<Option<serde_json::Map<String, Value>>, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ApiError::serialization(
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::serialization(format!("Malformed JSON body: {e}"))),
    }
}

/// A string member of a JSON body; other types are a parameter error, `null` counts as absent.
pub(crate) fn json_str<'a>(
    map: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a string"))),
    }
}
