//! The API's state: what its handlers read, and the handles they write through. `app` builds it
//! once and hands it to [`super::server::spawn`]; it is shared by every API thread as one `Arc`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::captures::Sessions;
use super::cors::Cors;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::delivery::pool::Context;
use crate::delivery::scheduler::Backlog;
use crate::monitor::Counters;
use crate::redis_conn::RedisPool;
use crate::webhook::registry::Registry;

/// State the API reads and the handles it writes through.
pub(crate) struct Shared {
    /// The configuration.
    pub(crate) config: Arc<Config>,
    /// Allowed CORS origins.
    pub(crate) cors: Cors,
    /// Redis commands.
    pub(crate) redis: Arc<RedisPool>,
    /// Monitor-session captures (in memory, as the original keeps them).
    pub(crate) sessions: Sessions,
    /// Asks the registry thread to reload now.
    pub(crate) registry_notify: crossbeam_channel::Sender<()>,
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
    /// The current webhooks.
    pub(crate) registry: Arc<Registry>,
    /// Retry backlog figures.
    pub(crate) backlog: Arc<Backlog>,
    /// The first-attempt queue (only its length is read).
    pub(crate) first_rx: Receiver<Delivery>,
    /// The delivery context (for the gate's figures).
    pub(crate) delivery: Arc<Context>,
    /// When the process started.
    pub(crate) started: Instant,
}

/// The parts of the service the API is given; [`Shared::new`] adds what the API owns.
pub(crate) struct Parts {
    /// The configuration.
    pub(crate) config: Arc<Config>,
    /// Redis commands.
    pub(crate) redis: Arc<RedisPool>,
    /// Asks the registry thread to reload now.
    pub(crate) registry_notify: crossbeam_channel::Sender<()>,
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
    /// The current webhooks.
    pub(crate) registry: Arc<Registry>,
    /// Retry backlog figures.
    pub(crate) backlog: Arc<Backlog>,
    /// The first-attempt queue (only its length is read).
    pub(crate) first_rx: Receiver<Delivery>,
    /// The delivery context.
    pub(crate) delivery: Arc<Context>,
    /// When the process started.
    pub(crate) started: Instant,
}

impl Shared {
    /// The API's state over the service's `parts`.
    pub(crate) fn new(parts: Parts) -> Shared {
        Shared {
            cors: Cors::new(&parts.config.cors_origins),
            sessions: Sessions::new(parts.config.capture_max_bytes),
            config: parts.config,
            redis: parts.redis,
            registry_notify: parts.registry_notify,
            counters: parts.counters,
            registry: parts.registry,
            backlog: parts.backlog,
            first_rx: parts.first_rx,
            delivery: parts.delivery,
            started: parts.started,
        }
    }

    /// Deliveries waiting for a delivery thread (queued or parked behind a busy endpoint).
    pub(crate) fn queue_depth(&self) -> usize {
        self.first_rx.len() + self.delivery.gate.parked()
    }

    /// Deliveries waiting for their time in Redis (retries, hand-backs), plus retries held in
    /// memory while Redis was away.
    pub(crate) fn retry_backlog(&self) -> usize {
        let in_memory = self.backlog.retries.load(Ordering::Relaxed);
        in_memory + self.delivery.durable.due_count().unwrap_or(0) as usize
    }

    /// How long the earliest due delivery has been waiting past its time (0 if none is late).
    pub(crate) fn oldest_pending_age_ms(&self) -> u64 {
        let now = crate::time::now_ms();
        let in_memory = self.backlog.next_retry_due_ms.load(Ordering::Relaxed);
        let durable = self.delivery.durable.next_due().ok().flatten().unwrap_or(0);
        [in_memory, durable]
            .into_iter()
            .filter(|due| *due > 0 && *due < now)
            .map(|due| now - due)
            .max()
            .unwrap_or(0)
    }

    /// Makes this instance re-read the registry now (others hear `webhooks:changed`).
    pub(crate) fn reload_webhooks(&self) {
        let _ = self.registry_notify.try_send(());
    }
}
