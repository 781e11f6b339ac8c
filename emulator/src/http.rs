//! A small HTTP/1.1 server on std::net: a thread per connection, keep-alive, Content-Length and
//! chunked request bodies, `Expect: 100-continue`. Written by hand, rather than on a server
//! library, so that faults can be placed exactly: a reset before or after the service commits,
//! a stall, a body cut short or corrupted. The link model (`link`) acts here too: each request
//! waits its latency once read, and bodies move at the connection's bandwidth both ways.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::api;
use super::faults::FaultKind;
use super::link::Link;
use super::router::{self, Op};
use super::s3;
use super::util::{http_date, percent_decode};
use super::wire::{ApiError, Body, Request, Response};
use super::Shared;

/// How often an idle connection looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long.
const IDLE_LIMIT: Duration = Duration::from_secs(120);
/// Once a request has started, each read may wait this long.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 200;
/// Bodies beyond this are refused without being read: a single upload is at most 4 GiB, and a
/// part at most 4 GiB, so nothing legitimate is larger.
const MAX_BODY: u64 = (4 << 30) + (1 << 20);

pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        if let Ok(stream) = conn {
            let shared = shared.clone();
            thread::spawn(move || connection(stream, &shared));
        }
    }
}

enum Incoming {
    Request(Request),
    Closed,
    Bad(String),
}

fn connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    loop {
        let req = match read_request(&mut reader, &mut writer, shared) {
            Incoming::Request(r) => r,
            Incoming::Closed => return,
            Incoming::Bad(msg) => {
                let resp = ApiError::new(400, "BadRequest", msg).to_response();
                shared.record(Op::Unknown, resp.status);
                let _ = send(&mut writer, shared, &resp, true, None);
                return;
            }
        };
        // One round trip of latency per request, before anything is handled: a client waits
        // that long for every answer, an error's as well as a body's.
        shared.link().delay();
        if !exchange(req, &mut writer, shared) {
            return;
        }
    }
}

/// Handles one request with whatever fault it draws. Returns whether the connection stays open.
fn exchange(req: Request, writer: &mut TcpStream, shared: &Shared) -> bool {
    let keep_alive = wants_keep_alive(&req);
    // S3 requests (signed for the service `s3`) share the listener and go their own way.
    if s3::is_s3(&req) {
        return s3::exchange(req, writer, shared, keep_alive);
    }
    let route = match router::route(&req.method, &req.path, &req.query) {
        Ok(route) => route,
        Err(e) => {
            shared.record(Op::Unknown, e.status);
            return send(writer, shared, &e.to_response(), !keep_alive, None).is_ok() && keep_alive;
        }
    };
    let op = route.op;
    // Hashed once, outside every lock: uploads need the tree hash, the signature the linear one.
    let hashes = api::BodyHashes::for_op(op, &req.body);
    // The signature first, as Glacier authenticates before anything else; a refused request
    // draws no fault, so a scripted fault still lands on the next request that gets through.
    if let Err(e) = shared.verify_signature(&req, hashes.as_ref()) {
        // One line on the test's stderr: a client that signs wrong should be easy to see.
        eprintln!(
            "glacier-emulator: refused {} {}: {} {}: {}",
            req.method, req.path, e.status, e.code, e.message
        );
        shared.record(op, e.status);
        return send(writer, shared, &e.to_response(), !keep_alive, None).is_ok() && keep_alive;
    }
    // Two statements: the faults lock must be released before it is taken again.
    let picked = shared.faults().pick(op);
    let fault = picked.or_else(|| {
        // A stall a test placed on this job's output, from some offset on (`stall_job_output`).
        let start = output_range_start(&req)?;
        (op == Op::GetJobOutput && shared.faults().stalls_job(&route.id, start))
            .then_some(FaultKind::Timeout)
    });
    let handle = || api::handle(&shared.state, &req, &route, hashes.as_ref());
    match fault {
        Some(
            kind @ (FaultKind::Throttle
            | FaultKind::InternalError
            | FaultKind::ServiceUnavailable
            | FaultKind::RequestTimeout
            | FaultKind::InsufficientCapacity
            | FaultKind::PolicyEnforced
            | FaultKind::InvalidParameter),
        ) => {
            shared.count_fault(kind);
            let resp = fault_error(kind).to_response();
            shared.record(op, resp.status);
            send(writer, shared, &resp, !keep_alive, None).is_ok() && keep_alive
        }
        Some(FaultKind::NoSuchOperation) => {
            shared.count_fault(FaultKind::NoSuchOperation);
            let resp = not_implemented_here();
            shared.record(op, resp.status);
            send(writer, shared, &resp, !keep_alive, None).is_ok() && keep_alive
        }
        Some(kind @ (FaultKind::Reset | FaultKind::ResetAfterCommit)) => {
            shared.count_fault(kind);
            if kind == FaultKind::ResetAfterCommit {
                handle();
            }
            shared.record(op, 0);
            reset(writer);
            false
        }
        Some(kind @ (FaultKind::Timeout | FaultKind::TimeoutAfterCommit)) => {
            shared.count_fault(kind);
            if kind == FaultKind::TimeoutAfterCommit {
                handle();
            }
            shared.record(op, 0);
            stall(shared);
            false
        }
        output_fault => deliver(op, handle(), output_fault, keep_alive, writer, shared),
    }
}

/// Where a GetJobOutput request's `Range` starts (0 without one); None if it is unreadable.
fn output_range_start(req: &Request) -> Option<u64> {
    match req.header_str("range") {
        None => Some(0),
        Some(raw) => raw
            .trim()
            .strip_prefix("bytes=")?
            .split_once('-')?
            .0
            .trim()
            .parse()
            .ok(),
    }
}

/// Sends a handled response, applying an output fault (or a `corrupt_job_output` mark) when it
/// is a GetJobOutput body. Returns whether the connection stays open.
fn deliver(
    op: Op,
    mut resp: Response,
    fault: Option<FaultKind>,
    keep_alive: bool,
    writer: &mut TcpStream,
    shared: &Shared,
) -> bool {
    let served = resp
        .served
        .clone()
        .filter(|_| op == Op::GetJobOutput && !resp.body.is_empty());
    let marked = served
        .as_ref()
        .is_some_and(|s| shared.faults().take_job_corruption(&s.job_id));
    if served.is_some() && (marked || fault == Some(FaultKind::CorruptOutput)) {
        shared.count_fault(FaultKind::CorruptOutput);
        let mut bytes = resp.body.as_slice().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        resp.body = Body::new(bytes);
    }
    let cut = match fault {
        Some(kind @ (FaultKind::TruncateOutput | FaultKind::ResetMidBody)) if served.is_some() => {
            shared.count_fault(kind);
            Some(resp.body.len() / 2)
        }
        _ => None,
    };
    let close = !keep_alive || cut.is_some();
    // Record before sending: a client that has the response must find it in the stats.
    let intended = cut.unwrap_or(resp.body.len()) as u64;
    shared.record(op, resp.status);
    if let Some(s) = &resp.served {
        shared.record_output(s, intended);
    }
    let written = send(writer, shared, &resp, close, cut);
    if let Some(s) = &resp.served {
        let sent = *written.as_ref().unwrap_or(&0);
        shared.uncount_output(&s.job_id, intended.saturating_sub(sent));
        if cut.is_none() && sent == intended {
            shared.output_delivered(s);
        }
    }
    if cut.is_some() && fault == Some(FaultKind::ResetMidBody) {
        reset(writer);
    }
    written.is_ok() && !close
}

fn fault_error(kind: FaultKind) -> ApiError {
    match kind {
        FaultKind::Throttle => ApiError::new(400, "ThrottlingException", "Rate exceeded"),
        FaultKind::InternalError => ApiError::new(
            500,
            "ServiceUnavailableException",
            "Internal failure (injected)",
        ),
        FaultKind::ServiceUnavailable => ApiError::new(
            503,
            "ServiceUnavailableException",
            "Service unavailable (injected)",
        ),
        FaultKind::RequestTimeout => ApiError::new(
            408,
            "RequestTimeoutException",
            "Request timed out (injected)",
        ),
        FaultKind::InsufficientCapacity => ApiError::new(
            503,
            "InsufficientCapacityException",
            "There is not enough capacity to process this job (injected)",
        ),
        FaultKind::PolicyEnforced => ApiError::new(
            400,
            "PolicyEnforcedException",
            "InitiateJob request denied by current data retrieval policy (injected)",
        ),
        FaultKind::InvalidParameter => ApiError::new(
            400,
            "InvalidParameterValueException",
            "Invalid parameter value (injected)",
        ),
        other => unreachable!("{other:?} is not an error-response fault"),
    }
}

/// What a web server with no such route answers: 404, an HTML page, no AWS error code.
fn not_implemented_here() -> Response {
    Response::empty(404)
        .with_header("Content-Type", "text/html")
        .with_body(Body::new(
            b"<html>\n<head><title>404 Not Found</title></head>\n<body>\n\
              <center><h1>404 Not Found</h1></center>\n</body>\n</html>\n"
                .to_vec(),
        ))
}

/// Holds the connection silent for the stall time, then drops it (FIN, no response).
pub(crate) fn stall(shared: &Shared) {
    let total = shared.stall();
    let mut waited = Duration::ZERO;
    while waited < total && !shared.shutdown.load(Ordering::SeqCst) {
        let step = POLL.min(total - waited);
        thread::sleep(step);
        waited += step;
    }
}

/// Closes with RST: SO_LINGER with a zero timeout makes close() abort the connection.
pub(crate) fn reset(writer: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket owned by `writer`; the option value is a valid `linger`.
    unsafe {
        libc::setsockopt(
            writer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // The reader and writer are dups of one socket; the RST goes out when the connection
    // thread drops both, right after this.
}

fn wants_keep_alive(req: &Request) -> bool {
    let conn = req.header_str("connection").map(str::to_ascii_lowercase);
    match conn.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => !req.http10,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a response; with `cut`, only that many body bytes (after a full Content-Length).
/// A response that sets its own Content-Length (S3's HEAD, which sends none of the body it
/// describes) keeps it. Returns the body bytes written.
pub(crate) fn send(
    w: &mut TcpStream,
    shared: &Shared,
    resp: &Response,
    close: bool,
    cut: Option<usize>,
) -> io::Result<u64> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    head.push_str(&format!(
        "x-amzn-RequestId: {}\r\n",
        shared.next_request_id()
    ));
    head.push_str(&format!("Date: {}\r\n", http_date(shared.now_ms())));
    let own_length = resp
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    if resp.status != 204 && !own_length {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    let body = resp.body.as_slice();
    let body = &body[..cut.unwrap_or(body.len()).min(body.len())];
    let link = shared.link();
    let mut pacer = link.pacer();
    let mut written = 0u64;
    for chunk in body.chunks(link.step()) {
        // Each chunk leaves when the link would have carried it, so the last byte arrives no
        // sooner than the body's size over the bandwidth.
        pacer.moved(chunk.len());
        if let Err(e) = w.write_all(chunk) {
            return if written > 0 { Ok(written) } else { Err(e) };
        }
        written += chunk.len() as u64;
    }
    w.flush()?;
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// Request parsing.

fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut buf = Vec::new();
    r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if !buf.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    // Header values may carry any byte (a bad description is refused later, not here).
    Ok(buf.into_iter().map(char::from).collect())
}

/// Waits for the next request on a keep-alive connection, polling so that shutdown is noticed.
fn await_request(r: &mut BufReader<TcpStream>, shared: &Shared) -> bool {
    let _ = r.get_ref().set_read_timeout(Some(POLL));
    let mut idle = Duration::ZERO;
    loop {
        match r.fill_buf() {
            Ok([]) => return false,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if shared.shutdown.load(Ordering::SeqCst) || idle >= IDLE_LIMIT {
                    return false;
                }
                idle += POLL;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let _ = r.get_ref().set_read_timeout(Some(IO_TIMEOUT));
    true
}

fn read_request(r: &mut BufReader<TcpStream>, w: &mut TcpStream, shared: &Shared) -> Incoming {
    if !await_request(r, shared) {
        return Incoming::Closed;
    }
    match parse_request(r, w, &shared.link()) {
        Ok(Ok(req)) => Incoming::Request(req),
        Ok(Err(msg)) => Incoming::Bad(msg),
        Err(_) => Incoming::Closed,
    }
}

/// Outer error: the connection failed. Inner error: the request was malformed.
fn parse_request(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    link: &Link,
) -> io::Result<Result<Request, String>> {
    let line = read_line(r)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(format!("Malformed request line '{line}'")));
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(Err(format!("Unsupported protocol '{version}'")));
    }
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let h = read_line(r)?;
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Ok(Err(format!("Malformed header line '{h}'")));
        };
        if headers.len() >= MAX_HEADERS {
            return Ok(Err("Too many headers".into()));
        }
        let value: Vec<u8> = value
            .trim_matches([' ', '\t'])
            .chars()
            .map(|c| c as u8)
            .collect();
        headers.push((name.trim().to_ascii_lowercase(), value));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (percent_decode(k), percent_decode(v)) {
            (Some(k), Some(v)) => pairs.push((k, v)),
            _ => return Ok(Err(format!("Malformed query component '{pair}'"))),
        }
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        raw_query: query.to_string(),
        query: pairs,
        headers,
        body: Vec::new(),
        http10: version == "HTTP/1.0",
    };
    let chunked = req
        .header_str("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = match req.header_str("content-length") {
        None => None,
        Some(l) => match l.parse::<u64>() {
            Ok(n) if n <= MAX_BODY => Some(n),
            _ => return Ok(Err(format!("Unacceptable Content-Length '{l}'"))),
        },
    };
    if req
        .header_str("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if chunked {
        match read_chunked(r, link)? {
            Ok(body) => req.body = body,
            Err(msg) => return Ok(Err(msg)),
        }
    } else if let Some(n) = length {
        let mut body = vec![0u8; n as usize];
        read_paced(r, &mut body, link)?;
        req.body = body;
    }
    Ok(Ok(req))
}

/// Fills `buf` from the connection no faster than the link's bandwidth: the client's sends
/// back up as they would behind a slow link.
fn read_paced(r: &mut BufReader<TcpStream>, buf: &mut [u8], link: &Link) -> io::Result<()> {
    let mut pacer = link.pacer();
    for chunk in buf.chunks_mut(link.step()) {
        r.read_exact(chunk)?;
        pacer.moved(chunk.len());
    }
    Ok(())
}

fn read_chunked(r: &mut BufReader<TcpStream>, link: &Link) -> io::Result<Result<Vec<u8>, String>> {
    let mut body = Vec::new();
    let mut pacer = link.pacer();
    loop {
        let line = read_line(r)?;
        let size_field = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = u64::from_str_radix(size_field, 16) else {
            return Ok(Err(format!("Malformed chunk size '{line}'")));
        };
        if size == 0 {
            // Trailers, up to the blank line.
            while !read_line(r)?.is_empty() {}
            return Ok(Ok(body));
        }
        if body.len() as u64 + size > MAX_BODY {
            return Ok(Err("Chunked body too large".into()));
        }
        let old = body.len();
        body.resize(old + size as usize, 0);
        r.read_exact(&mut body[old..])?;
        pacer.moved(size as usize);
        if !read_line(r)?.is_empty() {
            return Ok(Err("Missing CRLF after a chunk".into()));
        }
    }
}
