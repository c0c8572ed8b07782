//! The request pipeline every API request goes through: CORS preflight → route (404/405) →
//! auth (401) → declared size (413) → body → handler → CORS headers. [`Server`] decides from a
//! head alone ([`Server::admit`]), hands a complete request to a handler lane ([`Server::run`])
//! and renders the reply ([`render`]); the threads are `threads.rs`'s, the connections
//! `front.rs`'s and `conn.rs`'s.
//!
//! Threads and why (no async runtime; blocking threads, a fixed number per connection):
//! - `api-accept` accepts connections and bounds them ([`super::front`]);
//! - one `api-conn` thread per connection ([`super::conn`]) reads each request whole (head and
//!   body, each under a deadline), admits it, hands it to a handler thread, and writes the
//!   answer, so no handler thread ever waits on a client's bytes or on a slow reader;
//! - handler threads ([`super::threads`]) take complete requests from bounded channels.
//!
//! The stop: the first handler thread wakes `api-accept`, which stops listening, closes the
//! connections between requests, and waits for those with a request in hand, whose answers say
//! `Connection: close`.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use serde_json::Value;

use super::auth::authorized;
use super::cors::Cors;
use super::reply::Reply;
use super::request::Request;
use super::router::{self, Lane, Method, Miss};
use super::routes::Route;
use super::state::Shared;
use super::wire::{Framing, Head};
use crate::shutdown::Shutdown;

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
pub(crate) struct Job {
    pub(crate) route: Route,
    pub(crate) request: Request,
    pub(crate) reply_to: Sender<Reply>,
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
    /// The server of `shared`, handing requests to the handler lanes `quick`, `slow` and
    /// `capture` (see `threads.rs`).
    pub(crate) fn new(
        shared: Arc<Shared>,
        limits: Limits,
        shutdown: Shutdown,
        (quick, slow, capture): (Sender<Job>, Sender<Job>, Sender<Job>),
    ) -> Server {
        Server {
            shared,
            limits,
            shutdown,
            quick,
            slow,
            capture,
        }
    }

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
