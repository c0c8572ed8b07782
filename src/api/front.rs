//! The API's front door: a TCP acceptor that bounds connections and their idle time, in front of
//! tiny_http, which serves on a private Unix socket.
//!
//! tiny_http gives each connection a thread, reads with no timeout and reads a header line of any
//! length into memory, so a client that stalls mid-header, sits idle, or sends an endless header
//! would hold a thread or memory for ever; the fork's bounded pool wedges once its threads are all
//! held. tiny_http cannot take our accepted sockets, and a timeout set on the listening socket also
//! times out `accept`, which stops its accept loop. So the front accepts, and for each connection:
//! - at most `WEBHOOK_API_MAX_CONNECTIONS` at once (more get a 503 and are closed);
//! - read and write timeouts of `WEBHOOK_API_IDLE_TIMEOUT_MS`;
//! - a request head of at most 64 KiB (else 431), which it forwards with `Connection: close` and
//!   the client's address as `X-Forwarded-For` (replacing any the client sent), so each
//!   connection carries one request;
//! - at most `WEBHOOK_MAX_BODY_BYTES` (plus framing) of body, after which the request stream
//!   ends (tiny_http answers 413 before that).
//!
//! Threads are bounded: two relay threads and one tiny_http thread per connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown as NetShutdown, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};

use crate::app::Shutdown;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Body framing (chunk sizes, trailers) allowed beyond the body limit.
const FRAMING_SLACK: u64 = 64 * 1024;
/// Stack of relay threads (they only copy through a 16 KiB buffer on the heap).
const RELAY_STACK: usize = 128 * 1024;

/// A complete JSON error response that closes the connection.
fn canned(status: &str, error: &str, message: &str, extra: &str) -> Vec<u8> {
    let body =
        serde_json::json!({"success": false, "error": error, "message": message}).to_string();
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to a connection over the limit.
fn busy() -> Vec<u8> {
    canned(
        "503 Service Unavailable",
        "Service unavailable",
        "too many connections",
        "Retry-After: 1\r\n",
    )
}

/// The answer to a request head over the limit.
fn head_too_large() -> Vec<u8> {
    canned(
        "431 Request Header Fields Too Large",
        "Request header fields too large",
        &format!("the limit is {MAX_HEAD} bytes"),
        "",
    )
}

/// The answer to a request head that is not HTTP/1.x as tiny_http reads it (tiny_http itself
/// would answer with an empty 400; every answer of this API is JSON).
fn bad_head() -> Vec<u8> {
    canned(
        "400 Bad Request",
        "Malformed request",
        "the request line or a header is not valid HTTP/1.1",
        "",
    )
}

/// The internal server's socket: a file in the temporary directory (only this user may connect),
/// or, where there is no writable temporary directory (an empty root), a Linux abstract socket.
#[derive(Debug)]
pub enum SocketPath {
    /// A socket file, removed when dropped.
    File(PathBuf),
    /// An abstract socket name.
    Abstract(String),
}

impl SocketPath {
    /// Binds the internal socket for the API on `port`.
    pub fn bind(port: u16) -> io::Result<(SocketPath, UnixListener)> {
        let name = format!("webhook-service-{}-{port}", std::process::id());
        let path = std::env::temp_dir().join(format!("{name}.sock"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match UnixListener::bind(&path) {
            Ok(listener) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                Ok((SocketPath::File(path), listener))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
                let listener = UnixListener::bind_addr(&addr)?;
                Ok((SocketPath::Abstract(name), listener))
            }
            Err(e) => Err(e),
        }
    }

    /// Connects to the internal server.
    pub fn connect(&self) -> io::Result<UnixStream> {
        match self {
            SocketPath::File(path) => UnixStream::connect(path),
            SocketPath::Abstract(name) => {
                UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
            }
        }
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        if let SocketPath::File(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts the `api-accept` thread.
pub fn spawn(
    listener: TcpListener,
    backend: Arc<SocketPath>,
    max_connections: usize,
    idle: Duration,
    max_body: usize,
    shutdown: Shutdown,
) -> io::Result<JoinHandle<()>> {
    let open = Arc::new(AtomicUsize::new(0));
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("api-accept".into())
        .spawn(move || {
            let mut warned = false;
            while !shutdown.is_set() {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => {
                        debug!("API accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if client.set_nonblocking(false).is_err() {
                    continue;
                }
                if open.load(Ordering::Acquire) >= max_connections {
                    if !warned {
                        warn!("API is at its limit of {max_connections} connections; refusing more with 503");
                        warned = true;
                    }
                    refuse(client);
                    continue;
                }
                warned = false;
                open.fetch_add(1, Ordering::AcqRel);
                let guard = Open(open.clone());
                let backend = backend.clone();
                let limits = Limits { idle, body: max_body as u64 + FRAMING_SLACK };
                let spawned = std::thread::Builder::new()
                    .name("api-conn".into())
                    .stack_size(RELAY_STACK)
                    .spawn(move || {
                        let _guard = guard;
                        if let Err(e) = relay(client, &backend, limits) {
                            debug!("API connection ended: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    warn!("cannot start an API connection thread: {e}");
                }
            }
        })
}

/// Counts an open connection until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refuse(mut client: TcpStream) {
    let _ = client.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = client.write_all(&busy());
    let _ = client.shutdown(NetShutdown::Both);
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: Duration,
    /// Most body bytes passed on after the head.
    body: u64,
}

/// Relays one request on one connection: the guarded head, then the body, then the response.
fn relay(client: TcpStream, backend: &SocketPath, limits: Limits) -> io::Result<()> {
    client.set_read_timeout(Some(limits.idle))?;
    client.set_write_timeout(Some(limits.idle))?;
    client.set_nodelay(true)?;
    let peer = client
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut client_read = client.try_clone()?;
    let answer = |mut client: TcpStream, reply: &[u8]| {
        let _ = client.write_all(reply);
        let _ = client.shutdown(NetShutdown::Both);
        Ok(())
    };
    let (head, rest) = match read_head(&mut client_read)? {
        Some(parts) => parts,
        None => return answer(client, &head_too_large()),
    };
    if !well_formed(&head) {
        return answer(client, &bad_head());
    }
    let server = backend.connect()?;
    server.set_write_timeout(Some(limits.idle))?;
    let mut server_write = server.try_clone()?;
    server_write.write_all(&rewrite_head(&head, &peer))?;
    let upstream = std::thread::Builder::new()
        .name("api-conn".into())
        .stack_size(RELAY_STACK)
        .spawn(move || {
            let allowed = limits.body;
            let first = rest.len().min(allowed as usize);
            let mut result = server_write.write_all(&rest[..first]);
            if result.is_ok() {
                result = copy(
                    &mut client_read.take(allowed - first as u64),
                    &mut server_write,
                )
                .map(|_| ());
            }
            if let Err(e) = result {
                debug!("API request stream ended: {e}");
            }
            // One request per connection: the server sees the end of the request stream.
            let _ = server_write.shutdown(NetShutdown::Write);
        })?;
    let (mut server_read, mut client_write) = (server, client);
    let result = copy(&mut server_read, &mut client_write);
    // The response is complete (or the client stopped reading): end both directions.
    let _ = client_write.shutdown(NetShutdown::Both);
    let _ = server_read.shutdown(NetShutdown::Both);
    let _ = upstream.join();
    result.map(|_| ())
}

/// Reads up to the blank line that ends a request head. Returns the head (with its final
/// CRLFCRLF) and whatever body bytes came with it, or `None` if the head exceeds [`MAX_HEAD`].
fn read_head(client: &mut TcpStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match client.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed before a full request head",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let search_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = find(&buf[search_from..], b"\r\n\r\n") {
            let end = search_from + at + 4;
            if end > MAX_HEAD {
                return Ok(None);
            }
            let rest = buf.split_off(end);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// Whether a head is a request line and header lines tiny_http accepts: a token method, a target,
/// `HTTP/1.0` or `HTTP/1.1`, and `token: printable-ASCII` headers.
fn well_formed(head: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(head) else {
        return false;
    };
    let mut lines = text[..text.len() - 4].split("\r\n");
    let Some(request_line) = lines.next() else {
        return false;
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) || target.is_empty() || !(version == "HTTP/1.1" || version == "HTTP/1.0") {
        return false;
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    lines.all(|line| match line.split_once(':') {
        Some((name, value)) => {
            token(name)
                && value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        }
        None => false,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The head with `Connection: close` and `X-Forwarded-For: <peer>` in place of any the client
/// sent.
fn rewrite_head(head: &[u8], peer: &str) -> Vec<u8> {
    let text = &head[..head.len() - 2]; // without the final empty line
    let mut out = Vec::with_capacity(head.len() + 64);
    for line in text.split_inclusive(|b| *b == b'\n') {
        let lower: Vec<u8> = line.iter().take(20).map(u8::to_ascii_lowercase).collect();
        if lower.starts_with(b"connection:") || lower.starts_with(b"x-forwarded-for:") {
            continue;
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"Connection: close\r\n");
    out.extend_from_slice(format!("X-Forwarded-For: {peer}\r\n\r\n").as_bytes());
    out
}

fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_declare_their_length() {
        for answer in [busy(), head_too_large(), bad_head()] {
            let text = String::from_utf8_lossy(&answer);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
            let declared = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.trim().parse::<usize>().ok());
            assert_eq!(declared, Some(body.len()), "{text}");
            assert!(
                serde_json::from_str::<serde_json::Value>(body).is_ok(),
                "{body}"
            );
        }
    }

    #[test]
    fn malformed_heads_are_recognised() {
        let ok: &[&[u8]] = &[
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /webhooks?x=1 HTTP/1.0\r\n\r\n",
        ];
        for head in ok {
            assert!(well_formed(head), "{}", String::from_utf8_lossy(head));
        }
        let bad: &[&[u8]] = &[
            b"GET /health HTTP/1.1\r\n0p1Rn7#alSdu-oe.;\r\n\r\n",
            b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
            b"GET /he alth HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/2.0\r\n\r\n",
            b"\r\n\r\n",
        ];
        for head in bad {
            assert!(!well_formed(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn heads_are_rewritten_to_one_request_per_connection() {
        let head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
        let out = rewrite_head(head, "127.0.0.1");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
        );
    }
}
