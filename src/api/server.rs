//! The API server: its listener, its handler threads, and the pipeline every request goes
//! through: CORS preflight → route (404/405) → auth (401) → declared size (413) → body → handler
//! → CORS headers.
//!
//! Threads and why (no async runtime; blocking threads, a fixed number per connection):
//! - `api-accept` accepts connections and bounds them ([`super::front`]);
//! - one `api-conn` thread per connection ([`super::conn`]) reads each request whole (head and
//!   body, each under a deadline), admits it, hands it to a handler thread, and writes the
//!   answer, so no handler thread ever waits on a client's bytes or on a slow reader;
//! - `api-N` handler threads run the handlers of ordinary routes, `api-slow-N` those that wait
//!   on something outside (test deliveries), so that those never hold the threads `/health`
//!   needs, and `api-capture-0` those of the capture URLs, which need no token (a flood of
//!   them must not slow `/health` either). They take complete requests from bounded channels,
//!   each under `catch_unwind`.
//!
//! The stop: the first handler thread wakes `api-accept`, which stops listening, closes the
//! connections between requests, and waits for those with a request in hand, whose answers say
//! `Connection: close`. Handler threads end only when every connection has ended (the last
//! sender of their channel gone), so no request read is left unanswered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{error, info};
use serde_json::Value;

use super::auth::authorized;
use super::cors::Cors;
use super::front;
use super::handlers;
use super::reply::Reply;
use super::request::Request;
use super::router::{self, Lane, Method, Miss, Route};
use super::state::Shared;
use super::wire::{Framing, Head};
use crate::shutdown::Shutdown;

/// Threads running the handlers of ordinary routes.
const QUICK_THREADS: usize = 4;
/// Threads running handlers that wait on something outside (test deliveries).
const SLOW_THREADS: usize = 2;
/// Requests of the slow lane waiting for a thread; more are refused with 503.
const SLOW_QUEUE: usize = 16;
/// Threads running the capture URLs' handlers. One: two contended for a flooded test receiver's
/// record (each capture rewrites it under WATCH, and a conflict redoes the work), and kept both
/// cores of a small machine busy, so that `/health` took 270 ms instead of 3-7 ms.
const CAPTURE_THREADS: usize = 1;
/// Captures waiting for a thread; more are refused with 503. Enough for this service's own
/// deliveries to a capture URL (each endpoint gets at most half the delivery threads at once).
const CAPTURE_QUEUE: usize = 64;
/// How long the handler thread that wakes the acceptor waits for a request before it looks
/// whether the stop has begun.
const POLL: Duration = Duration::from_millis(100);

/// Deadlines and sizes of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A kept-alive connection waits this long for its next request.
    pub(crate) idle: Duration,
    /// A whole head must arrive within this of its first byte.
    pub(crate) head: Duration,
    /// A whole body must arrive within this of the head; a whole response must be taken
    /// within this.
    pub(crate) body: Duration,
    /// The largest body.
    pub(crate) max_body: usize,
}

/// A request handed to a handler thread, and where its answer goes.
struct Job {
    route: Route,
    request: Request,
    reply_to: Sender<Reply>,
}

/// What every connection thread shares: the API state, the handler lanes, the limits.
pub(crate) struct Server {
    pub(crate) shared: Arc<Shared>,
    pub(crate) limits: Limits,
    pub(crate) shutdown: Shutdown,
    quick: Sender<Job>,
    slow: Sender<Job>,
    capture: Sender<Job>,
}

/// What the server decides from a head alone, before any body is read.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Read the body and run the route's handler.
    Run(Route),
    /// Answer at once (preflight, 401, 404, 405, 413), without reading the body.
    Answer(Reply),
}

impl Server {
    /// Decides what to do with `head`: the preflight, the route, auth and the declared size are
    /// known before the body, so a refused request never costs a handler thread or body reads.
    pub(crate) fn admit(&self, head: &Head) -> Admission {
        if head.path == "*" {
            // `OPTIONS *`: what the server as a whole allows.
            let allow: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
            return Admission::Answer(
                Reply::envelope(204, Value::Null).with_header("Allow", allow.join(", ")),
            );
        }
        let preflight =
            head.method == "OPTIONS" && head.header("access-control-request-method").is_some();
        if preflight {
            return Admission::Answer(match self.allowed_origin(head) {
                Some(o) => {
                    let mut reply = Reply::envelope(204, Value::Null);
                    reply.headers.extend(Cors::preflight_headers(o));
                    reply
                }
                None => Reply::error_message(403, "Forbidden", "this origin is not allowed"),
            });
        }
        let route = match router::find(&head.method, &head.path) {
            Ok(route) => route,
            Err(Miss::NotFound) => return Admission::Answer(not_found(&head.path)),
            Err(Miss::MethodNotAllowed(methods)) => {
                let allow: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                let allow = allow.join(", ");
                return Admission::Answer(
                    Reply::error_message(
                        405,
                        "Method not allowed",
                        format!("{} allows {allow}", head.path),
                    )
                    .with_header("Allow", allow),
                );
            }
        };
        if let Some(token) = &self.shared.config.api_token
            && !route.operation().public()
            && !authorized(token, head.header("authorization"))
        {
            return Admission::Answer(
                Reply::error_message(401, "Unauthorized", "a valid bearer token is required")
                    .with_header("WWW-Authenticate", "Bearer"),
            );
        }
        if let Framing::Length(n) = head.framing
            && n > self.limits.max_body as u64
        {
            return Admission::Answer(too_large(self.limits.max_body));
        }
        Admission::Run(route)
    }

    /// The request's `Origin` if CORS allows it.
    pub(crate) fn allowed_origin<'h>(&self, head: &'h Head) -> Option<&'h str> {
        head.header("origin").filter(|o| self.shared.cors.allows(o))
    }

    /// Runs `route`'s handler on a handler thread and waits for its reply. Handler threads run
    /// until every connection has ended, so a request handed over is always answered.
    pub(crate) fn run(&self, route: Route, request: Request) -> Reply {
        let lane = route.operation().lane();
        let (reply_to, reply) = crossbeam_channel::bounded(1);
        let job = Job {
            route,
            request,
            reply_to,
        };
        let sent = match lane {
            Lane::Quick => self.quick.try_send(job),
            Lane::Slow => self.slow.try_send(job),
            Lane::Capture => self.capture.try_send(job),
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                return Reply::error_message(
                    503,
                    "Service unavailable",
                    format!(
                        "too many {} requests in progress; try again shortly",
                        job.request.path
                    ),
                )
                .with_header("Retry-After", "1");
            }
            Err(TrySendError::Disconnected(_)) => return stopping(),
        }
        // The job is dropped unanswered only if its handler thread is gone.
        reply.recv().unwrap_or_else(|_| stopping())
    }
}

/// 404 for a path no route serves (the original's envelope).
fn not_found(path: &str) -> Reply {
    Reply::envelope(
        404,
        serde_json::json!({
            "success": false,
            "error": "Endpoint not found",
            "path": path,
            "timestamp": crate::time::iso8601(crate::time::now_ms()),
        }),
    )
}

/// 413 for a body over the limit.
pub(crate) fn too_large(limit: usize) -> Reply {
    Reply::error_message(
        413,
        "Request body too large",
        format!("the limit is {limit} bytes"),
    )
}

fn stopping() -> Reply {
    Reply::error_message(503, "Service unavailable", "the service is stopping")
}

/// A reply as bytes on the wire: status, headers (CORS included) and body.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

/// Renders `reply`, adding CORS headers for an allowed `origin`.
pub(crate) fn render(reply: Reply, origin: Option<&str>) -> Rendered {
    let (content_type, body) = match (reply.status, reply.raw) {
        (_, Some(raw)) => *raw,
        (204, None) => ("application/json; charset=utf-8", Vec::new()),
        // JavaScript's number formatting, as the original's responses had.
        (_, None) => (
            "application/json; charset=utf-8",
            crate::json::to_vec(&reply.body),
        ),
    };
    let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(reply.headers.len() + 4);
    if reply.status != 204 {
        headers.push(("Content-Type", content_type.to_string()));
    }
    headers.extend(reply.headers);
    if let Some(origin) = origin
        && !headers
            .iter()
            .any(|(k, _)| *k == "Access-Control-Allow-Origin")
    {
        headers.extend(Cors::response_headers(origin));
    }
    Rendered {
        status: reply.status,
        headers,
        body,
    }
}

/// Binds the API and starts its threads.
pub(crate) fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> Result<Vec<JoinHandle<()>>, String> {
    let config = shared.config.clone();
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address of {addr}: {e}"))?;
    // Descriptors besides API connections: a connection per delivery thread and up to four
    // idle ones per thread (at least 16) kept by the HTTP client, Redis connections, the log.
    let delivery_threads = (config.delivery_threads + config.retry_threads).max(16) as u64;
    let other_files = 64 + 5 * delivery_threads;
    let max_connections = front::connection_limit(config.api_max_connections, other_files);
    // Each connection has at most one request in a handler, so this queue never fills.
    let (quick_tx, quick_rx) = crossbeam_channel::bounded(max_connections);
    let (slow_tx, slow_rx) = crossbeam_channel::bounded(SLOW_QUEUE);
    let (capture_tx, capture_rx) = crossbeam_channel::bounded(CAPTURE_QUEUE);
    let server = Arc::new(Server {
        shared: shared.clone(),
        limits: Limits {
            idle: config.api_idle_timeout,
            head: config.api_head_timeout,
            body: config.api_body_timeout,
            max_body: config.max_body_bytes,
        },
        shutdown: shutdown.clone(),
        quick: quick_tx,
        slow: slow_tx,
        capture: capture_tx,
    });
    let mut handles = Vec::new();
    let lanes = [
        ("api", QUICK_THREADS, quick_rx),
        ("api-slow", SLOW_THREADS, slow_rx),
        ("api-capture", CAPTURE_THREADS, capture_rx),
    ];
    for (name, threads, rx) in lanes {
        for i in 0..threads {
            let (rx, shared, shutdown) = (rx.clone(), shared.clone(), shutdown.clone());
            // The first handler thread to see the stop wakes the acceptor, blocked in accept.
            let wake = (name == "api" && i == 0).then_some(local);
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&rx, &shared, &shutdown, wake))
                .map_err(|e| format!("cannot start API thread: {e}"))?;
            handles.push(handle);
        }
    }
    handles.push(
        front::spawn(listener, server, max_connections)
            .map_err(|e| format!("cannot start the API acceptor: {e}"))?,
    );
    info!("API listening on http://{local}");
    Ok(handles)
}

/// A handler thread: runs jobs until every connection, and the acceptor, has ended (their
/// senders dropped), so that every request read before or during the stop is answered. The one
/// given `wake` also wakes the acceptor, blocked in `accept`, once the stop begins.
fn work(rx: &Receiver<Job>, shared: &Shared, shutdown: &Shutdown, wake: Option<SocketAddr>) {
    let mut wake = wake;
    loop {
        if let Some(addr) = wake.filter(|_| shutdown.is_set()) {
            wake = None;
            let ip = match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let _ = TcpStream::connect_timeout(&SocketAddr::new(ip, addr.port()), POLL);
        }
        let job = if wake.is_some() {
            match rx.recv_timeout(POLL) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let reply = handle(shared, job.route, &job.request);
        // The connection waits for exactly this reply; it is gone only if it died.
        let _ = job.reply_to.send(reply);
    }
}

/// Runs the handler of `route`; a panic becomes a 500 (and is logged with the route).
fn handle(shared: &Shared, route: Route, request: &Request) -> Reply {
    catch_unwind(AssertUnwindSafe(|| {
        handlers::dispatch(shared, route, request)
    }))
    .unwrap_or_else(|_| {
        error!(
            "API handler for {} {} panicked",
            request.method, request.path
        );
        Reply::internal("the request could not be handled")
    })
}
