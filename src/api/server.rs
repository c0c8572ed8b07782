//! The API threads and the routes they serve.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{error, info};
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::app::{Shared, Shutdown};
use crate::monitor::{OUTCOMES, get};

/// API threads.
const THREADS: usize = 2;
/// How long a thread waits for a request before checking for shutdown.
const POLL: Duration = Duration::from_millis(500);

/// Binds the API and starts its threads.
pub fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> Result<Vec<JoinHandle<()>>, String> {
    let server = Arc::new(Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?);
    info!("API listening on http://{addr}");
    (0..THREADS)
        .map(|i| {
            let server = server.clone();
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("api-{i}"))
                .spawn(move || {
                    while !shutdown.is_set() {
                        match server.recv_timeout(POLL) {
                            Ok(Ok(Some(request))) => handle(&shared, request),
                            Ok(Ok(None)) => {}
                            // A client that sent something unparsable; tiny_http answers it.
                            Ok(Err(e)) => log::debug!("bad request from a client: {e}"),
                            Err(e) => {
                                error!("API accept failed: {e}");
                                shutdown.sleep(POLL);
                            }
                        }
                    }
                })
                .map_err(|e| format!("cannot start API thread: {e}"))
        })
        .collect()
}

fn handle(shared: &Shared, request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let (status, body) = match (request.method(), path.as_str()) {
        (Method::Get, "/health") => health(shared),
        (_, "/health") => (
            405,
            json!({"success": false, "error": "Method not allowed", "allowed": ["GET"]}),
        ),
        _ => (
            404,
            json!({"success": false, "error": "Endpoint not found", "path": path, "timestamp": crate::time::iso8601(crate::time::now_ms())}),
        ),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::from_data(body).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", "application/json; charset=utf-8") {
        response.add_header(h);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("could not answer {path}: {e}");
    }
}

fn health(shared: &Shared) -> (u16, Value) {
    let c = &shared.counters;
    let connected = c.redis_connected.load(Ordering::Relaxed);
    let now = crate::time::now_ms();
    let snapshot = shared.registry.snapshot();
    let active = snapshot.webhooks().iter().filter(|w| w.active).count();
    let next_due = shared.backlog.next_retry_due_ms.load(Ordering::Relaxed);
    let oldest_pending = if next_due > 0 && next_due < now {
        now - next_due
    } else {
        0
    };
    let attempts: serde_json::Map<String, Value> = OUTCOMES
        .iter()
        .map(|o| (o.label().to_string(), Value::from(c.attempts(*o))))
        .collect();
    let body = json!({
        "status": if connected { "ok" } else { "degraded" },
        "service": "webhook-service",
        "timestamp": crate::time::iso8601(now),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": shared.started.elapsed().as_secs(),
        "redis": {
            "connected": connected,
            "status": if connected { "ready" } else { "reconnecting" },
        },
        "processor": {
            "active_webhooks": active,
            "total_webhooks": snapshot.webhooks().len(),
            "total_deliveries": get(&c.events_processed),
            "failed_deliveries": get(&c.events_failed),
            "workflow_tracking": {
                "total_tracked_workflows": 0,
                "workflows": [],
                "message": "Internal workflow tracking disabled - using Redis events exclusively",
            },
        },
        "queue": {
            "depth": shared.first_rx.len() + shared.gate_parked(),
            "in_flight": shared.gate_in_flight(),
            "retry_backlog": shared.backlog.retries.load(Ordering::Relaxed),
            "oldest_pending_age_ms": oldest_pending,
        },
        "events": {
            "received": get(&c.events_received),
            "processed": get(&c.events_processed),
            "skipped": get(&c.events_skipped),
            "duplicate": get(&c.events_duplicate),
            "malformed": get(&c.events_malformed),
            "failed": get(&c.events_failed),
            "malformed_by_source": c.malformed_by_source(),
        },
        "deliveries": {
            "created": get(&c.deliveries_created),
            "succeeded": get(&c.deliveries_succeeded),
            "failed": get(&c.deliveries_failed),
            "throttled": get(&c.deliveries_throttled),
            "dropped": get(&c.deliveries_dropped),
            "attempts": attempts,
        },
    });
    (if connected { 200 } else { 503 }, body)
}
