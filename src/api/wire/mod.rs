//! HTTP/1.0 and HTTP/1.1 framing for the API, without I/O: request heads (parsed by `httparse`),
//! request body framing (`Content-Length` or chunked), and response heads. The connection
//! module feeds these functions the bytes it reads and writes what they return.
//!
//! Rules kept here (RFC 9112): a request with both `Transfer-Encoding` and `Content-Length`, or
//! with differing lengths, is refused (request smuggling); only `chunked` is understood as a
//! transfer coding (anything else: 501); HTTP/1.0 closes after the response unless the client
//! asks `Connection: keep-alive`, HTTP/1.1 keeps the connection unless it says `close`.
//!
//! Wherever a proxy in front of the service could read the framing otherwise, the request is
//! refused (400) rather than guessed at: an HTTP/1.1 request without `Host` or with two, a
//! `Transfer-Encoding` in HTTP/1.0, white space around values other than spaces and tabs (Rust's
//! `trim` would take a no-break space too), a chunk size that is not plain hex digits, a chunk
//! line not ended by CRLF, a control character in a chunk line. Lines of the head may end with
//! a bare LF (RFC 9112 section 2.2 allows it; httparse reads them). Chunked bodies are decoded
//! in `chunked.rs`.

mod chunked;

pub(crate) use chunked::{ChunkError, Chunked};

/// Largest request head (request line and headers) accepted: more is a 431.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted: more is a 431.
const MAX_HEADERS: usize = 128;

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes follow the head (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The method as sent.
    pub(crate) method: String,
    /// The path (percent-encoded, as sent; an absolute-form target is cut to its path).
    pub(crate) path: String,
    /// The query, without `?`.
    pub(crate) query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor: u8,
    /// Every header, in order, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body's framing.
    pub(crate) framing: Framing,
    /// Whether the client lets the connection stay open after the response.
    pub(crate) keep_alive: bool,
    /// Whether the client waits for `100 Continue` before it sends the body.
    pub(crate) expect_continue: bool,
}

impl Head {
    /// The first header `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        super::request::header(&self.headers, name)
    }

    /// Whether a body follows the head.
    pub(crate) fn has_body(&self) -> bool {
        self.framing != Framing::Length(0)
    }
}

/// Why a head cannot be served. Each is answered with its status and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Over [`MAX_HEAD`] bytes or over the header count: 431.
    TooLarge,
    /// Not HTTP/1.x as the RFC writes it: 400, with what was wrong.
    Malformed(String),
    /// A transfer coding other than chunked: 501.
    UnknownCoding(String),
    /// An `Expect` other than `100-continue`: 417.
    UnknownExpectation(String),
}

impl HeadError {
    /// The status this error is answered with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Malformed(_) => 400,
            HeadError::UnknownCoding(_) => 501,
            HeadError::UnknownExpectation(_) => 417,
        }
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete, else the head and
/// its length in bytes (leading empty lines included).
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(trim_ows(h.value)).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let hosts = headers.iter().filter(|(k, _)| k == "host").count();
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header".into()));
    }
    if hosts == 0 && minor == 1 {
        return Err(HeadError::Malformed(
            "an HTTP/1.1 request needs a Host header".into(),
        ));
    }
    // `OPTIONS *` asks about the server as a whole (RFC 9112 section 3.2.4).
    let (path, query) = if target == "*" && method == "OPTIONS" {
        ("*".to_string(), String::new())
    } else {
        split_target(target)?
    };
    let framing = framing(&headers, minor)?;
    let tokens = |name: &str, token: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| trim_ows_str(t).eq_ignore_ascii_case(token))
    };
    // `close` wins over anything else said (RFC 9112 9.6).
    let keep_alive =
        !tokens("connection", "close") && (minor == 1 || tokens("connection", "keep-alive"));
    let expect = super::request::header(&headers, "expect");
    let expect_continue = match expect {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("100-continue") => minor == 1,
        Some(e) => return Err(HeadError::UnknownExpectation(e.to_string())),
    };
    let head = Head {
        method: method.to_string(),
        path,
        query,
        minor,
        headers,
        framing,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, len)))
}

/// The path and query of a request target (origin-form, or absolute-form cut to its path).
fn split_target(target: &str) -> Result<(String, String), HeadError> {
    let origin_form = match target.find("://") {
        Some(scheme_end) if !target.starts_with('/') => {
            let after = &target[scheme_end + 3..];
            after.find('/').map_or("/", |i| &after[i..])
        }
        _ => target,
    };
    if !origin_form.starts_with('/') {
        return Err(HeadError::Malformed(format!(
            "the request target {origin_form:?} is not a path"
        )));
    }
    let (path, query) = origin_form.split_once('?').unwrap_or((origin_form, ""));
    Ok((path.to_string(), query.to_string()))
}

/// Spaces and tabs, the only white space HTTP puts around a value, trimmed.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(start), Some(end)) => &value[start..=end],
        _ => &[],
    }
}

fn trim_ows_str(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

fn framing(headers: &[(String, String)], minor: u8) -> Result<Framing, HeadError> {
    let encoded = headers.iter().any(|(k, _)| k == "transfer-encoding");
    let codings: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(trim_ows_str)
        .filter(|t| !t.is_empty())
        .collect();
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .flat_map(|(_, v)| v.split(','))
        .map(trim_ows_str)
        .collect();
    if encoded {
        if !lengths.is_empty() {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length".into(),
            ));
        }
        // An HTTP/1.0 recipient may not know chunked: the framing is faulty (RFC 9112 6.1).
        if minor == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request".into(),
            ));
        }
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            [] => Err(HeadError::Malformed("an empty Transfer-Encoding".into())),
            _ => Err(HeadError::UnknownCoding(codings.join(", "))),
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Length(0));
    };
    if lengths.iter().any(|l| l != first) {
        return Err(HeadError::Malformed(
            "differing Content-Length values".into(),
        ));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Malformed(format!(
            "Content-Length {first:?} is not a number"
        )));
    }
    // More digits than a u64 holds is more than any limit: saturate, the caller answers 413.
    Ok(Framing::Length(first.parse().unwrap_or(u64::MAX)))
}

/// The reason phrase of a status the API sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response head: status line, `headers`, `Date`, framing and connection headers. `body_len`
/// is the `Content-Length` (also for a `HEAD` request, whose body is not sent); a 204 has none.
/// `keep_alive` is the idle timeout in whole seconds if the connection stays open.
pub(crate) fn response_head(
    status: u16,
    minor: u8,
    headers: &[(&str, String)],
    body_len: usize,
    keep_alive: Option<u64>,
) -> Vec<u8> {
    use std::fmt::Write;
    let mut head = String::with_capacity(256);
    // The version we speak is 1.1 whatever the client's; a 1.0 client reads it as 1.0.
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Date: {}\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    if status != 204 {
        let _ = write!(head, "Content-Length: {body_len}\r\n");
    }
    match keep_alive {
        None => head.push_str("Connection: close\r\n"),
        // An HTTP/1.0 client keeps the connection only when told so.
        Some(idle_s) => {
            if minor == 0 {
                head.push_str("Connection: keep-alive\r\n");
            }
            // Whole seconds, rounded down: a client trusting the hint never reuses a connection
            // the server has closed. Under a second there is nothing true to say.
            if idle_s > 0 {
                let _ = write!(head, "Keep-Alive: timeout={idle_s}\r\n");
            }
        }
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Ok(Some((head, len))) => {
                assert_eq!(len, text.len(), "{text}");
                head
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn error(text: &[u8]) -> HeadError {
        match parse_head(text) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn heads_parse_with_every_header_in_order() {
        let h = head(
            "\r\nPOST /webhook-monitor/s?x=1&y HTTP/1.1\r\nHost: a\r\nX-Probe: p1\r\nx-probe: p2\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("POST", "/webhook-monitor/s")
        );
        assert_eq!(h.query, "x=1&y");
        let names: Vec<&str> = h.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["host", "x-probe", "x-probe", "content-length"]);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    }

    #[test]
    fn connection_persistence_follows_the_version() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: h\r\nConnection: x, close\r\n\r\n").keep_alive);
        assert!(head("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        assert!(!head("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert_eq!(
            head("GET http://h:1/a?b HTTP/1.1\r\nHost: h\r\n\r\n").path,
            "/a"
        );
        assert_eq!(head("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path, "*");
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        let statuses = [
            (
                &b"GET /health HTTP/1.1\r\nHost: h\r\n0p1Rn7#alSdu-oe.;\r\n\r\n"[..],
                400,
            ),
            (b"GET /health HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
            (b"GET /he alth HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /health HTTP/2.0\r\nHost: h\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /health HTTP/1.1\r\n\r\n", 400),
            (b"GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\xc2\xa0\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n",
                501,
            ),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
        ];
        for (text, status) in statuses {
            assert_eq!(
                error(text).status(),
                status,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(error(&big), HeadError::TooLarge);
        let many: String = (0..200).map(|i| format!("X-{i}: a\r\n")).collect();
        assert_eq!(
            error(format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()),
            HeadError::TooLarge
        );
        let huge =
            head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(huge.framing, Framing::Length(u64::MAX));
    }

    #[test]
    fn response_heads_frame_and_say_when_the_connection_closes() {
        let text = |h: Vec<u8>| String::from_utf8_lossy(&h).into_owned();
        let ok = text(response_head(
            200,
            1,
            &[("Content-Type", "a".into())],
            7,
            Some(10),
        ));
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\nContent-Type: a\r\nDate: "),
            "{ok}"
        );
        assert!(
            ok.ends_with("Content-Length: 7\r\nKeep-Alive: timeout=10\r\n\r\n"),
            "{ok}"
        );
        let closing = text(response_head(413, 1, &[], 2, None));
        assert!(
            closing.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"),
            "{closing}"
        );
        let old = text(response_head(200, 0, &[], 0, Some(5)));
        assert!(old.contains("Connection: keep-alive\r\n"), "{old}");
        assert!(!text(response_head(204, 1, &[], 0, Some(5))).contains("Content-Length"));
        let under_a_second = text(response_head(200, 0, &[], 0, Some(0)));
        assert!(
            under_a_second.contains("Connection: keep-alive\r\n")
                && !under_a_second.contains("Keep-Alive:"),
            "{under_a_second}"
        );
    }
}
