//! Wiring: builds the shared state, starts every named thread, and joins them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{error, info};

use crate::config::{Config, redact_url};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::pool::{self, Context, EndpointGate};
use crate::delivery::scheduler::{self, Backlog};
use crate::delivery::throttle::Throttle;
use crate::delivery::{Delivery, http};
use crate::intake::{Intake, pubsub};
use crate::monitor::Counters;
use crate::monitor::history;
use crate::redis_conn::RedisPool;
use crate::webhook::registry::{self, Registry};

/// The process-wide stop flag. Blocking loops wake at least every half second to check it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Whether the process is stopping.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Asks every thread to stop.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Sleeps for `duration`, returning early when the process stops.
    pub fn sleep(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.is_set() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// State the API reads and the handles it writes through. Shared as one `Arc`.
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Allowed CORS origins.
    pub cors: crate::api::cors::Cors,
    /// Redis commands.
    pub redis: Arc<RedisPool>,
    /// Monitor-session captures (in memory, as the original keeps them).
    pub sessions: parking_lot::Mutex<crate::api::handlers::sessions::Sessions>,
    /// Asks the registry thread to reload now.
    pub registry_notify: crossbeam_channel::Sender<()>,
    /// Process counters.
    pub counters: Arc<Counters>,
    /// The current webhooks.
    pub registry: Arc<Registry>,
    /// Retry backlog figures.
    pub backlog: Arc<Backlog>,
    /// The first-attempt queue (only its length is read).
    pub first_rx: Receiver<Delivery>,
    /// The delivery context (for the gate's figures).
    pub delivery: Arc<Context>,
    /// When the process started.
    pub started: Instant,
}

impl Shared {
    /// Deliveries waiting for a delivery thread (queued or parked behind a busy endpoint).
    pub fn queue_depth(&self) -> usize {
        self.first_rx.len() + self.delivery.gate.parked()
    }

    /// Retries waiting for their time.
    pub fn retry_backlog(&self) -> usize {
        self.backlog.retries.load(Ordering::Relaxed)
    }

    /// How long the earliest due retry has been waiting past its time (0 if none is late).
    pub fn oldest_pending_age_ms(&self) -> u64 {
        let due = self.backlog.next_retry_due_ms.load(Ordering::Relaxed);
        let now = crate::time::now_ms();
        if due > 0 && due < now { now - due } else { 0 }
    }

    /// Makes this instance re-read the registry now (others hear `webhooks:changed`).
    pub fn reload_webhooks(&self) {
        let _ = self.registry_notify.try_send(());
    }
}

/// Why the service could not start.
#[derive(Debug)]
pub enum AppError {
    /// The Redis URL could not be used.
    Redis(redis::RedisError),
    /// A thread could not be started.
    Spawn(&'static str, std::io::Error),
    /// The API could not listen.
    Listen(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Redis(e) => write!(f, "redis: {e}"),
            AppError::Spawn(what, e) => write!(f, "cannot start the {what} thread: {e}"),
            AppError::Listen(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Redis(e) => Some(e),
            AppError::Spawn(_, e) => Some(e),
            AppError::Listen(_) => None,
        }
    }
}

/// Starts the service and blocks until it stops.
pub fn run(config: Config) -> Result<(), AppError> {
    let shutdown = Shutdown::default();
    let started = Instant::now();
    info!(
        "webhook-service {} starting: redis {}, {} delivery + {} retry threads, timeout {} ms",
        env!("CARGO_PKG_VERSION"),
        redact_url(&config.redis_url),
        config.delivery_threads,
        config.retry_threads,
        config.timeout.as_millis()
    );
    if let Some(env) = &config.node_env {
        info!("NODE_ENV={env}");
    }
    let client = redis::Client::open(config.redis_url.as_str()).map_err(AppError::Redis)?;
    let redis = Arc::new(RedisPool::new(client));
    let counters = Arc::new(Counters::default());
    let registry = Arc::new(Registry::default());
    let (first_tx, first_rx) = crossbeam_channel::bounded(config.queue_capacity);
    let (retry_tx, retry_rx) = crossbeam_channel::bounded(config.retry_threads * 16);
    let (scheduler, scheduler_rx) = scheduler::channel();
    let (notify_tx, notify_rx) = crossbeam_channel::bounded(16);
    let throttle = Arc::new(Throttle::new(config.progress_throttle));
    let (recorder, recorder_rx) = history::channel(counters.clone());
    let delivery = Arc::new(Context {
        agent: http::agent(
            config.timeout,
            config.delivery_threads + config.retry_threads,
            config.allowed_networks.clone(),
            Some(config.port),
        ),
        registry: registry.clone(),
        redis: redis.clone(),
        gate: EndpointGate::new(config.max_in_flight_per_endpoint),
        scheduler: scheduler.clone(),
        counters: counters.clone(),
        max_retry_after: config.max_retry_after,
        recorder,
    });
    let intake = Arc::new(Intake::new(
        Dispatcher {
            registry: registry.clone(),
            throttle: (!config.progress_throttle.is_zero()).then(|| throttle.clone()),
            first_tx: first_tx.clone(),
            scheduler: scheduler.clone(),
            counters: counters.clone(),
        },
        counters.clone(),
        config.dedupe_window,
    ));

    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    handles.push(
        scheduler::spawn(
            scheduler_rx,
            scheduler.backlog.clone(),
            retry_tx,
            first_tx,
            throttle,
            shutdown.clone(),
        )
        .map_err(|e| AppError::Spawn("scheduler", e))?,
    );
    handles.push(
        history::spawn(
            recorder_rx,
            redis.clone(),
            counters.clone(),
            shutdown.clone(),
        )
        .map_err(|e| AppError::Spawn("recorder", e))?,
    );
    handles.extend(
        pool::spawn(
            "delivery",
            config.delivery_threads,
            first_rx.clone(),
            delivery.clone(),
        )
        .map_err(|e| AppError::Spawn("delivery", e))?,
    );
    handles.extend(
        pool::spawn("retry", config.retry_threads, retry_rx, delivery.clone())
            .map_err(|e| AppError::Spawn("retry", e))?,
    );
    handles.push(
        registry::spawn_refresher(
            registry.clone(),
            redis.clone(),
            notify_rx,
            config.registry_refresh,
            shutdown.clone(),
        )
        .map_err(|e| AppError::Spawn("registry", e))?,
    );
    let shared = Arc::new(Shared {
        config: Arc::new(config.clone()),
        cors: crate::api::cors::Cors::new(&config.cors_origins),
        redis: redis.clone(),
        sessions: parking_lot::Mutex::new(Default::default()),
        registry_notify: notify_tx.clone(),
        counters: counters.clone(),
        registry: registry.clone(),
        backlog: scheduler.backlog.clone(),
        first_rx,
        delivery,
        started,
    });
    handles.extend(
        crate::api::server::spawn(
            SocketAddr::new(config.host, config.port),
            shared,
            shutdown.clone(),
        )
        .map_err(AppError::Listen)?,
    );
    handles.push(
        pubsub::spawn(
            redis,
            registry,
            intake,
            notify_tx,
            counters,
            shutdown.clone(),
        )
        .map_err(|e| AppError::Spawn("intake", e))?,
    );
    info!("ready in {} ms", started.elapsed().as_millis());
    for handle in handles {
        let name = handle.thread().name().unwrap_or("?").to_string();
        if handle.join().is_err() {
            error!("thread {name} panicked");
        }
    }
    Ok(())
}
