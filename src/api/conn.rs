//! One API connection, on its own `api-conn` thread: requests read whole, answered in order.
//!
//! For each request on the connection (persistent by default in HTTP/1.1, on request in 1.0;
//! pipelined requests are answered one after another, in order):
//! 1. wait up to `WEBHOOK_API_IDLE_TIMEOUT_MS` for its first byte (else close quietly; no wait
//!    for a byte, in any phase, lasts longer than that);
//! 2. read the whole head within `WEBHOOK_API_HEAD_TIMEOUT_MS` of that byte (else 408), at most
//!    64 KiB (else 431), parse it (else 400);
//! 3. admit it from the head alone ([`Server::admit`]): a refused request (401, 404, 405, 413,
//!    preflight) is answered without reading its body into memory;
//! 4. send `100 Continue` if the client waits for it, then read the whole body within
//!    `WEBHOOK_API_BODY_TIMEOUT_MS` (else 408), `Content-Length` or chunked, at most
//!    `WEBHOOK_MAX_BODY_BYTES` (else 413);
//! 5. hand the complete request to a handler thread and wait for its reply;
//! 6. write the reply within `WEBHOOK_API_BODY_TIMEOUT_MS`; a response after which the
//!    connection closes says `Connection: close`, and the rest of the client's bytes are read
//!    and dropped for a moment (so the client reads the answer rather than a reset).
//!
//! Deadlines cover a whole head, body or response, not one read: a client sending a byte a
//! second gains nothing. The slot tells the acceptor what the connection is doing, so that it
//! can evict idle and slow connections first.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use log::debug;

use super::captures::BODY_KEPT;
use super::reply::Reply;
use super::request::{Body, Query, Request};
use super::router::{self, BodyUse};
use super::server::{self, Admission, Server};
use super::slot::{Phase, Slot};
use super::wire::{self, ChunkError, Chunked, Framing, Head, HeadError};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// A connection's input buffer is given back when it grew beyond this.
const KEPT_BUFFER: usize = 64 * 1024;
/// After a closing response, the client's remaining bytes are read and dropped for at most this
/// long, and at most [`LINGER_BYTES`].
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Serves the slot's connection until it closes, fails, times out or is evicted.
pub(crate) fn serve(peer: SocketAddr, slot: &Slot, server: &Server) {
    let mut conn = Connection {
        stream: slot.socket(),
        input: Vec::new(),
        start: 0,
        peer,
        peer_ip: peer.ip().to_string(),
        slot,
        server,
    };
    if let Err(end) = conn.run() {
        debug!("API connection from {peer} closed: {end}");
    }
}

/// Why a connection ends without a response.
#[derive(Debug)]
enum End {
    /// The client closed it.
    Closed,
    /// The acceptor evicted it for a new connection.
    Evicted,
    /// The service is stopping and the connection was between requests.
    Stopped,
    /// A deadline passed (the idle wait, or a write).
    TimedOut,
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("by the client"),
            End::Evicted => f.write_str("evicted to admit a new connection"),
            End::Stopped => f.write_str("the service is stopping"),
            End::TimedOut => f.write_str("timed out"),
            End::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Why a body could not be read.
enum BodyError {
    Refused(Reply),
    End(End),
}

struct Connection<'a> {
    stream: &'a TcpStream,
    /// Bytes read and not yet used; `input[start..]` is pending.
    input: Vec<u8>,
    start: usize,
    peer: SocketAddr,
    peer_ip: String,
    slot: &'a Slot,
    server: &'a Server,
}

impl Connection<'_> {
    fn run(&mut self) -> Result<(), End> {
        let _ = self.stream.set_nodelay(true);
        loop {
            self.enter(Phase::Idle)?;
            if self.start == self.input.len() && self.input.capacity() > KEPT_BUFFER {
                self.input = Vec::new();
                self.start = 0;
            }
            if self.pending().is_empty() {
                self.fill(Instant::now() + self.server.limits.idle)?;
            }
            self.enter(Phase::Head)?;
            let deadline = Instant::now() + self.server.limits.head;
            let head = loop {
                match wire::parse_head(self.pending()) {
                    Ok(Some((head, len))) => {
                        self.consume(len);
                        break head;
                    }
                    Ok(None) => match self.fill(deadline) {
                        Ok(_) => {}
                        Err(End::TimedOut) => {
                            let reply = timed_out("the request head");
                            return self.refuse_and_close(None, reply);
                        }
                        Err(e) => return Err(e),
                    },
                    Err(e) => return self.refuse_and_close(None, head_error(&e)),
                }
            };
            if !self.exchange(head)? {
                return Ok(());
            }
            self.slot.answered();
        }
    }

    /// Reads `head`'s body, runs it, answers; returns whether the connection stays open.
    fn exchange(&mut self, mut head: Head) -> Result<bool, End> {
        let started = Instant::now();
        let origin = self.server.allowed_origin(&head).map(str::to_string);
        let (reply, keep) = match self.server.admit(&head) {
            Admission::Answer(reply) => {
                let drained = self.discard_body(&head)?;
                (reply, head.keep_alive && drained)
            }
            Admission::Run(route) => {
                if head.expect_continue && head.has_body() {
                    let deadline = Instant::now() + self.server.limits.body;
                    self.write_by(b"HTTP/1.1 100 Continue\r\n\r\n", deadline)?;
                }
                self.enter(Phase::Body)?;
                let kept = match route.operation().body_use() {
                    BodyUse::Ignored => 0,
                    BodyUse::Captured => BODY_KEPT,
                    BodyUse::Whole => self.server.limits.max_body,
                };
                match self.read_body(&head, kept) {
                    Ok((body, body_len)) => {
                        self.enter(Phase::Handler)?;
                        let request = Request {
                            method: head.method.clone(),
                            path: head.path.clone(),
                            query: Query(router::query_pairs(&head.query)),
                            // Admitted: the rest of the exchange needs no header.
                            headers: std::mem::take(&mut head.headers),
                            body: Body(body),
                            body_len,
                            client_ip: self.peer_ip.clone(),
                        };
                        let reply = self.server.run(route, request);
                        (reply, head.keep_alive)
                    }
                    Err(BodyError::Refused(reply)) => (reply, false),
                    Err(BodyError::End(e)) => return Err(e),
                }
            }
        };
        let keep = keep && !self.server.shutdown.is_set();
        let status = reply.status;
        self.respond(Some(&head), reply, origin.as_deref(), keep)?;
        debug!(
            "{} {} -> {status} in {} ms for {}",
            head.method,
            head.path,
            started.elapsed().as_millis(),
            self.peer
        );
        if !keep {
            self.linger();
        }
        Ok(keep)
    }

    /// Reads the whole body `head` announces, within the body deadline; keeps its first `kept`
    /// bytes, and says how long it was.
    fn read_body(&mut self, head: &Head, kept: usize) -> Result<(Vec<u8>, usize), BodyError> {
        let deadline = Instant::now() + self.server.limits.body;
        let limit = self.server.limits.max_body;
        let timed_out = |e: End| match e {
            End::TimedOut => BodyError::Refused(timed_out("the request body")),
            e => BodyError::End(e),
        };
        match head.framing {
            Framing::Length(n) => {
                // `admit` refused anything over the limit.
                let n = usize::try_from(n).unwrap_or(usize::MAX).min(limit);
                let mut body = Vec::with_capacity(n.min(kept).min(READ_CHUNK));
                let mut read = 0;
                while read < n {
                    if self.pending().is_empty() {
                        self.fill(deadline).map_err(timed_out)?;
                    }
                    let take = (n - read).min(self.pending().len());
                    let keep = take.min(kept.saturating_sub(body.len()));
                    body.extend_from_slice(&self.pending()[..keep]);
                    self.consume(take);
                    read += take;
                }
                Ok((body, n))
            }
            Framing::Chunked => {
                let mut decoder = Chunked::new(limit, kept);
                let mut body = Vec::new();
                loop {
                    let used = decoder
                        .feed(self.pending(), &mut body)
                        .map_err(|e| BodyError::Refused(chunk_error(e, limit)))?;
                    self.consume(used);
                    if decoder.is_done() {
                        return Ok((body, decoder.decoded()));
                    }
                    self.fill(deadline).map_err(timed_out)?;
                }
            }
        }
    }

    /// Reads and drops the body of a request answered from its head, when that is cheap (a
    /// declared length within the limit); returns whether the connection can carry on.
    fn discard_body(&mut self, head: &Head) -> Result<bool, End> {
        let n = match head.framing {
            Framing::Length(0) => return Ok(true),
            // The client waits for a go-ahead that will not come: it sends no body.
            _ if head.expect_continue => return Ok(false),
            Framing::Length(n) if n <= self.server.limits.max_body as u64 => n as usize,
            Framing::Length(_) | Framing::Chunked => return Ok(false),
        };
        self.enter(Phase::Body)?;
        let deadline = Instant::now() + self.server.limits.body;
        let mut left = n;
        while left > 0 {
            if self.pending().is_empty() {
                match self.fill(deadline) {
                    Ok(_) => {}
                    Err(End::TimedOut) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            let take = left.min(self.pending().len());
            self.consume(take);
            left -= take;
        }
        Ok(true)
    }

    /// Answers with `reply` and closes (a request that cannot be read or served).
    fn refuse_and_close(&mut self, head: Option<&Head>, reply: Reply) -> Result<(), End> {
        let origin = head
            .and_then(|h| self.server.allowed_origin(h))
            .map(str::to_string);
        debug!(
            "API request from {} refused: {}",
            self.peer_ip, reply.status
        );
        self.respond(head, reply, origin.as_deref(), false)?;
        self.linger();
        Ok(())
    }

    /// Writes the response to `head` (without a body for `HEAD`).
    fn respond(
        &mut self,
        head: Option<&Head>,
        reply: Reply,
        origin: Option<&str>,
        keep: bool,
    ) -> Result<(), End> {
        self.enter(Phase::Writing)?;
        let rendered = server::render(reply, origin);
        let idle_s = self.server.limits.idle.as_secs();
        let minor = head.map_or(1, |h| h.minor);
        let mut bytes = wire::response_head(
            rendered.status,
            minor,
            &rendered.headers,
            rendered.body.len(),
            keep.then_some(idle_s),
        );
        if head.is_none_or(|h| h.method != "HEAD") {
            bytes.extend_from_slice(&rendered.body);
        }
        let deadline = Instant::now() + self.server.limits.body;
        self.write_by(&bytes, deadline)
    }

    /// Ends the connection gracefully: no more writes, and the client's remaining bytes read and
    /// dropped for a moment, so that a client still sending a refused body reads our answer
    /// instead of a reset.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(NetShutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut dropped = 0;
        let mut chunk = [0u8; READ_CHUNK];
        while dropped < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match Read::read(&mut self.stream, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }

    fn enter(&self, phase: Phase) -> Result<(), End> {
        self.slot.enter(phase).map_err(|_| End::Evicted)
    }

    fn pending(&self) -> &[u8] {
        &self.input[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes into the input, waiting until `deadline` at most, and no longer than the
    /// idle timeout for any byte (a client that stalls outright goes sooner).
    fn fill(&mut self, deadline: Instant) -> Result<usize, End> {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let deadline = deadline.min(Instant::now() + self.server.limits.idle);
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::TimedOut);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(End::Io)?;
            match Read::read(&mut self.stream, &mut chunk) {
                Ok(0) => return Err(self.closed()),
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if is_retry(&e) => {}
                Err(_) if self.slot.is_evicted() => return Err(End::Evicted),
                Err(e) => return Err(End::Io(e)),
            }
        }
    }

    /// Writes all of `bytes` by `deadline`.
    fn write_by(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), End> {
        let mut at = 0;
        while at < bytes.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::TimedOut);
            }
            self.stream
                .set_write_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(End::Io)?;
            match Write::write(&mut self.stream, &bytes[at..]) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => at += n,
                Err(e) if is_retry(&e) => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
        Ok(())
    }

    /// Why a read saw the end of the stream: an eviction shuts the socket down too, and so does
    /// the stop (its reading side).
    fn closed(&self) -> End {
        if self.slot.is_evicted() {
            End::Evicted
        } else if self.server.shutdown.is_set() {
            End::Stopped
        } else {
            End::Closed
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn timed_out(what: &str) -> Reply {
    Reply::error_message(
        408,
        "Request timeout",
        format!("{what} did not arrive in time"),
    )
}

fn head_error(e: &HeadError) -> Reply {
    let (error, message) = match e {
        HeadError::TooLarge => (
            "Request header fields too large",
            format!("the limit is {} bytes", wire::MAX_HEAD),
        ),
        HeadError::Malformed(what) => (
            "Malformed request",
            format!("the request line or a header is not valid HTTP/1.1: {what}"),
        ),
        HeadError::UnknownCoding(coding) => (
            "Transfer coding not supported",
            format!("only chunked is understood, not {coding}"),
        ),
        HeadError::UnknownExpectation(expect) => (
            "Expectation failed",
            format!("only 100-continue is understood, not {expect}"),
        ),
    };
    Reply::error_message(e.status(), error, message)
}

fn chunk_error(e: ChunkError, limit: usize) -> Reply {
    match e {
        ChunkError::TooLarge => server::too_large(limit),
        ChunkError::Malformed(what) => {
            Reply::error_message(400, "Invalid request body", format!("chunked body: {what}"))
        }
    }
}
