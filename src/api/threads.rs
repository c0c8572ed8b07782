//! The API's threads: binds the listener, starts the handler threads of each lane and the
//! acceptor ([`super::front`]), and runs handlers under `catch_unwind`.
//!
//! - `api-N` handler threads run the handlers of ordinary routes, `api-slow-N` those that wait
//!   on something outside (test deliveries), so that those never hold the threads `/health`
//!   needs, and `api-capture-0` those of the capture URLs, which need no token (a flood of
//!   them must not slow `/health` either). They take complete requests from bounded channels.
//! - Handler threads end only when every connection has ended (the last sender of their channel
//!   gone), so no request read is left unanswered; the first one wakes `api-accept` at the stop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{error, info};

use super::front;
use super::reply::Reply;
use super::request::Request;
use super::routes::{self, Route};
use super::server::{Job, Limits, Server};
use super::state::Shared;
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
    // Descriptors besides API connections: a connection per delivery thread, the idle ones the
    // HTTP client keeps, DNS lookups, Redis connections, the log.
    let other_files = (crate::config::OTHER_FILES
        + config.all_delivery_threads()
        + config.delivery_idle_connections()) as u64;
    let max_connections = front::connection_limit(config.api_max_connections, other_files);
    // Each connection has at most one request in a handler, so this queue never fills.
    let (quick_tx, quick_rx) = crossbeam_channel::bounded(max_connections);
    let (slow_tx, slow_rx) = crossbeam_channel::bounded(SLOW_QUEUE);
    let (capture_tx, capture_rx) = crossbeam_channel::bounded(CAPTURE_QUEUE);
    let limits = Limits {
        idle: config.api_idle_timeout,
        head: config.api_head_timeout,
        body: config.api_body_timeout,
        max_body: config.max_body_bytes,
    };
    let server = Arc::new(Server::new(
        shared.clone(),
        limits,
        shutdown.clone(),
        (quick_tx, slow_tx, capture_tx),
    ));
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
        routes::dispatch(shared, route, request)
    }))
    .unwrap_or_else(|_| {
        error!(
            "API handler for {} {} panicked",
            request.method, request.path
        );
        Reply::internal("the request could not be handled")
    })
}
