//! The API's listener and threads, and the pipeline every request goes through:
//! CORS preflight → route (404/405) → auth (401) → body (413/400) → handler → CORS headers.
//!
//! Clients connect to [`front`], which bounds connections and idle time and relays to tiny_http
//! on a private Unix socket. A fixed number of `api-N` threads run the handlers, each request
//! under `catch_unwind`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, error, info};
use serde_json::Value;
use tiny_http::{Header, ListenAddr, Request, Response, Server, ServerConfig};

use super::auth::authorized;
use super::cors::Cors;
use super::front::{self, SocketPath};
use super::handlers;
use super::reply::Reply;
use super::router::{self, Matched};
use crate::app::{Shared, Shutdown};

/// Threads running handlers.
const HANDLER_THREADS: usize = 4;
/// How long a handler thread waits for a request before checking for shutdown.
const POLL: Duration = Duration::from_millis(500);

/// One request, read and routed, as handlers see it.
#[derive(Debug)]
pub struct Call {
    /// Upper-case method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The route's `{…}` values.
    pub params: Vec<String>,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (empty when none).
    pub body: Vec<u8>,
    /// The client's IP address, as the front saw it.
    pub client_ip: String,
}

impl Call {
    /// The first query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON: `Null` when empty, 400 when malformed.
    pub fn json(&self) -> Result<Value, Reply> {
        if self.body_is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| Reply::error_message(400, "Invalid JSON", format!("request body: {e}")))
    }

    /// Whether the request has no body (or only white space).
    pub fn body_is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }

    /// The `{…}` value at `index`.
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map(String::as_str).unwrap_or("")
    }
}

/// Binds the API and starts its threads.
pub fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> Result<Vec<JoinHandle<()>>, String> {
    let config = &shared.config;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address of {addr}: {e}"))?;
    let (socket, internal) = SocketPath::bind(local.port())
        .map_err(|e| format!("cannot bind the internal API socket: {e}"))?;
    let socket = Arc::new(socket);
    let internal_addr = internal
        .local_addr()
        .map_err(|e| format!("cannot read the internal API socket address: {e}"))?;
    let server_config = ServerConfig {
        // Only the listener passed to from_listener is used; the address is informational.
        addr: tiny_http::ConfigListenAddr::IP(vec![local]),
        ssl: None,
        min_threads: Some(2),
        max_threads: None,
    };
    let server = Server::from_listener(internal, ListenAddr::Unix(internal_addr), server_config)
        .map_err(|e| format!("cannot serve the API: {e}"))?;
    let mut handles = vec![
        front::spawn(
            listener,
            socket,
            config.api_max_connections,
            config.api_idle_timeout,
            config.max_body_bytes,
            shutdown.clone(),
        )
        .map_err(|e| format!("cannot start the API acceptor: {e}"))?,
    ];
    let server = Arc::new(server);
    info!("API listening on http://{local}");
    let workers: Result<Vec<JoinHandle<()>>, String> = (0..HANDLER_THREADS)
        .map(|i| {
            let server = server.clone();
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("api-{i}"))
                .spawn(move || {
                    while !shutdown.is_set() {
                        match server.recv_timeout(POLL) {
                            Ok(Ok(Some(request))) => serve(&shared, request),
                            Ok(Ok(None)) => {}
                            // tiny_http has already answered the client (400, 408, ...).
                            Ok(Err(e)) => debug!("unreadable API request: {e}"),
                            Err(e) => {
                                error!("API server failed: {e}");
                                shutdown.sleep(POLL);
                            }
                        }
                    }
                })
                .map_err(|e| format!("cannot start API thread: {e}"))
        })
        .collect();
    handles.extend(workers?);
    Ok(handles)
}

fn serve(shared: &Shared, mut request: Request) {
    let started = Instant::now();
    let method = request.method().as_str().to_ascii_uppercase();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let headers = read_headers(shared, &request);
    let origin = headers
        .iter()
        .find(|(k, _)| k == "origin")
        .map(|(_, v)| v.clone());
    let origin_allowed = origin.as_deref().filter(|o| shared.cors.allows(o));
    let reply = catch_unwind(AssertUnwindSafe(|| {
        route(
            shared,
            &mut request,
            &method,
            path,
            query,
            headers,
            origin.as_deref(),
        )
    }))
    .unwrap_or_else(|_| {
        error!("API handler for {method} {path} panicked");
        Reply::internal("the request could not be handled")
    });
    let status = reply.status;
    respond(request, reply, origin_allowed);
    debug!(
        "{method} {path} -> {status} in {} ms",
        started.elapsed().as_millis()
    );
}

fn route(
    shared: &Shared,
    request: &mut Request,
    method: &str,
    path: &str,
    query: &str,
    headers: Vec<(String, String)>,
    origin: Option<&str>,
) -> Reply {
    let preflight = method == "OPTIONS"
        && headers
            .iter()
            .any(|(k, _)| k == "access-control-request-method");
    if preflight {
        return match origin {
            Some(o) if shared.cors.allows(o) => {
                let mut reply = Reply::envelope(204, Value::Null);
                reply.headers.extend(Cors::preflight_headers(o));
                reply
            }
            _ => Reply::error_message(403, "Forbidden", "this origin is not allowed"),
        };
    }
    let Some(Matched { route, params }) = router::find(path) else {
        return Reply::envelope(
            404,
            serde_json::json!({
                "success": false,
                "error": "Endpoint not found",
                "path": path,
                "timestamp": crate::time::iso8601(crate::time::now_ms()),
            }),
        );
    };
    if !route.methods.contains(&method) {
        return Reply::error_message(
            405,
            "Method not allowed",
            format!("{path} allows {}", route.methods.join(", ")),
        )
        .with_header("Allow", route.methods.join(", "));
    }
    if let Some(token) = &shared.config.api_token
        && !route.public
    {
        let given = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        if !authorized(token, given) {
            return Reply::error_message(401, "Unauthorized", "a valid bearer token is required")
                .with_header("WWW-Authenticate", "Bearer");
        }
    }
    let body = match read_body(request, shared.config.max_body_bytes) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    // The front puts the client's address here (replacing any the client sent).
    let client_ip = headers
        .iter()
        .find(|(k, _)| k == "x-forwarded-for")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let call = Call {
        method: method.to_string(),
        path: path.to_string(),
        params,
        query: router::query_pairs(query),
        headers,
        body,
        client_ip,
    };
    handlers::dispatch(shared, route.pattern, &call)
}

/// Headers looked up by name, lowercased: tiny_http_fork 0.12.17 (the release that drains
/// unread bodies safely) offers lookup but no enumeration of a request's headers. So a request is
/// seen with the standard headers below plus every custom header a webhook sends, which covers
/// what handlers read and what capture URLs are for: inspecting deliveries.
const KNOWN_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "authorization",
    "content-length",
    "content-type",
    "host",
    "origin",
    "referer",
    "traceparent",
    "transfer-encoding",
    "user-agent",
    "webhook-id",
    "webhook-signature",
    "webhook-timestamp",
    "x-event-id",
    "x-forwarded-for",
    "x-real-ip",
    "x-request-id",
    "x-requested-with",
    "x-webhook-event",
    "x-webhook-id",
    "x-webhook-signature",
    "x-workflow-id",
];

fn read_headers(shared: &Shared, request: &Request) -> Vec<(String, String)> {
    let snapshot = shared.registry.snapshot();
    let custom = snapshot
        .webhooks()
        .iter()
        .flat_map(|w| w.headers.iter().map(|(name, _)| name.to_ascii_lowercase()));
    let mut names: Vec<String> = KNOWN_HEADERS
        .iter()
        .map(|n| n.to_string())
        .chain(custom)
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(&name)?.as_str().to_string();
            Some((name, value))
        })
        .collect()
}

/// Reads the body, refusing more than `limit` bytes with 413 (before reading, when the declared
/// length says so).
fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>, Reply> {
    let too_large = || {
        Reply::error_message(
            413,
            "Request body too large",
            format!("the limit is {limit} bytes"),
        )
        .with_header("Connection", "close")
    };
    if request.body_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    match request
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
    {
        Ok(n) if n > limit => Err(too_large()),
        Ok(_) => Ok(body),
        Err(e) => Err(Reply::error_message(
            400,
            "Invalid request body",
            format!("could not read the body: {e}"),
        )),
    }
}

fn respond(request: Request, reply: Reply, origin: Option<&str>) {
    let (content_type, body) = match (reply.status, reply.raw) {
        (_, Some(raw)) => *raw,
        (204, None) => ("application/json; charset=utf-8", Vec::new()),
        // JavaScript's number formatting, as the original's responses had.
        (_, None) => (
            "application/json; charset=utf-8",
            crate::event::json::to_vec(&reply.body),
        ),
    };
    let mut response = Response::from_data(body).with_status_code(reply.status);
    let mut headers: Vec<(&str, String)> = vec![("Content-Type", content_type.into())];
    if reply.status == 204 {
        headers.clear();
    }
    headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.clone())));
    if let Some(origin) = origin
        && !headers
            .iter()
            .any(|(k, _)| *k == "Access-Control-Allow-Origin")
    {
        headers.extend(Cors::response_headers(origin));
    }
    for (name, value) in headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        debug!("could not send an API response: {e}");
    }
}
