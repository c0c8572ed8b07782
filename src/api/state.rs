//! The API's state: what its handlers read, and the handles they write through. `app` builds it
//! once and hands it to [`super::threads::spawn`]; it is shared by every API thread as one `Arc`.

use std::sync::Arc;
use std::time::Instant;

use super::captures::Sessions;
use super::cors::Cors;
use crate::config::Config;
use crate::delivery::handle::DeliveryHandle;
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
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
    /// The current webhooks.
    pub(crate) registry: Arc<Registry>,
    /// Delivery: its figures, dead letters and test attempts.
    pub(crate) delivery: DeliveryHandle,
    /// When the process started.
    pub(crate) started: Instant,
}

/// The parts of the service the API is given; [`Shared::new`] adds what the API owns.
pub(crate) struct Parts {
    /// The configuration.
    pub(crate) config: Arc<Config>,
    /// Redis commands.
    pub(crate) redis: Arc<RedisPool>,
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
    /// The current webhooks.
    pub(crate) registry: Arc<Registry>,
    /// Delivery: its figures, dead letters and test attempts.
    pub(crate) delivery: DeliveryHandle,
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
            counters: parts.counters,
            registry: parts.registry,
            delivery: parts.delivery,
            started: parts.started,
        }
    }
}
