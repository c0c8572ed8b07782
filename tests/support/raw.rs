//! HTTP/1.1 on a plain socket, as the edge tests speak it: requests written byte for byte (so a
//! test can send what no client library would) and responses read exactly as framed, one after
//! another on one connection, so pipelining and keep-alive can be checked on the wire.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A connection to the service on 127.0.0.1:`port`, with a read timeout.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    stream
}

/// One response read off a connection.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads one response (framed by `Content-Length`; no body for `HEAD`, a 1xx or a 204) within
/// 10 s; `buf` keeps bytes read past it, for the next response. `Err` says why there is none: the
/// connection closed or failed first (what a client sees as "no response").
pub fn try_read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Result<Response, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fill = |buf: &mut Vec<u8>, what: &str| -> Result<(), String> {
        if Instant::now() >= deadline {
            return Err(format!("no {what} within 10 s"));
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => Err(format!("closed before the {what}")),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(format!("{e} before the {what}")),
        }
    };
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(buf, "response head")?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut response = Response {
        status,
        head,
        body: Vec::new(),
    };
    let length: usize = response
        .header("content-length")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let length = if head_request || status < 200 || status == 204 {
        0
    } else {
        length
    };
    while buf.len() < length {
        fill(buf, "end of the body")?;
    }
    response.body = buf.drain(..length).collect();
    Ok(response)
}

/// [`try_read_response`], panicking when there is no response.
pub fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Response {
    try_read_response(stream, buf, head_request).unwrap_or_else(|e| {
        panic!(
            "no response: {e}; received {:?}",
            String::from_utf8_lossy(buf)
        )
    })
}

/// Whether the server closes the connection (reads end, nothing more sent) within 5 s.
pub fn closes(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok() && rest.is_empty()
}
