//! Wiring: builds the shared state, starts every named thread, and joins them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, error, info, warn};

use crate::config::{Config, redact_url};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::durable::Durable;
use crate::delivery::pool::{self, Context, EndpointGate};
use crate::delivery::scheduler::{self, Backlog};
use crate::delivery::throttle::Throttle;
use crate::delivery::{Delivery, http, recovery};
use crate::intake::{Intake, pubsub, stage, stream};
use crate::monitor::Counters;
use crate::monitor::history;
use crate::redis_conn::{RedisPool, Target};
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

    /// Deliveries waiting for their time in Redis (retries, hand-backs), plus retries held in
    /// memory while Redis was away.
    pub fn retry_backlog(&self) -> usize {
        let in_memory = self.backlog.retries.load(Ordering::Relaxed);
        in_memory + self.delivery.durable.due_count().unwrap_or(0) as usize
    }

    /// How long the earliest due delivery has been waiting past its time (0 if none is late).
    pub fn oldest_pending_age_ms(&self) -> u64 {
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
    pub fn reload_webhooks(&self) {
        let _ = self.registry_notify.try_send(());
    }
}

/// Why the service could not start.
#[derive(Debug)]
pub enum AppError {
    /// A Redis setting is wrong, or Redis refused what it names (certificate, credentials).
    RedisSetting(crate::redis_conn::TargetError),
    /// A thread could not be started.
    Spawn(&'static str, std::io::Error),
    /// The API could not listen.
    Listen(String),
    /// Signal handlers could not be installed.
    Signal(std::io::Error),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::RedisSetting(e) => write!(f, "redis: {e}"),
            AppError::Spawn(what, e) => write!(f, "cannot start the {what} thread: {e}"),
            AppError::Listen(e) => f.write_str(e),
            AppError::Signal(e) => write!(f, "cannot handle SIGTERM/SIGINT: {e}"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::RedisSetting(_) => None,
            AppError::Spawn(_, e) => Some(e),
            AppError::Signal(e) => Some(e),
            AppError::Listen(_) => None,
        }
    }
}

/// Starts the service and blocks until SIGTERM or SIGINT, then stops it gracefully.
pub fn run(config: Config) -> Result<(), AppError> {
    let signalled = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, signalled.clone()).map_err(AppError::Signal)?;
    }
    let service = start(config)?;
    while !signalled.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    service.stop();
    Ok(())
}

/// A started service.
pub struct Service {
    /// Stops intake and new attempts (first phase of a shutdown).
    draining: Shutdown,
    /// The pub/sub record stage, drained before the hand-back.
    stage: stage::StageSender,
    /// The intake threads, which must have stopped before anything is handed back: an event in
    /// their hands would otherwise be recorded after the hand-back, leased by a stopped instance.
    intake: Vec<std::thread::JoinHandle<()>>,
    /// Stops every thread (second phase).
    shutdown: Shutdown,
    delivery: Arc<Context>,
    timeout: Duration,
}

impl Service {
    /// Graceful stop: intake stops, attempts in flight may finish within the shutdown timeout,
    /// and whatever is still in hand goes back to Redis for another instance or the next start.
    pub fn stop(self) {
        info!(
            "stopping: intake closed, waiting up to {} ms for attempts in flight",
            self.timeout.as_millis()
        );
        self.draining.set();
        let intake_deadline = Instant::now() + Duration::from_secs(5);
        while self.intake.iter().any(|h| !h.is_finished()) && Instant::now() < intake_deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Events read before intake stopped are recorded and queued (then handed back below).
        if !self.stage.drain(Duration::from_secs(5)) {
            warn!("some pub/sub events read before the stop could not be recorded");
        }
        let deadline = Instant::now() + self.timeout;
        while self.delivery.gate.in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let unfinished = self.delivery.gate.in_flight();
        // Successes not yet written would otherwise be handed back and made again.
        if !self.delivery.completer.flush(Duration::from_secs(2)) {
            warn!("some completed deliveries could not be recorded; they may be delivered again");
        }
        self.shutdown.set();
        let durable = &self.delivery.durable;
        match durable.release_all(durable.instance(), crate::time::now_ms()) {
            Ok(n) => info!(
                "stopped: {n} deliveries handed back ({unfinished} attempts were still in flight)"
            ),
            Err(e) => error!(
                "stopped, but could not hand deliveries back ({e}); another instance takes them over when this one's heartbeat expires"
            ),
        }
        if let Err(e) = durable.leave() {
            debug!("could not remove this instance's heartbeat: {e}");
        }
    }
}

/// Builds the shared state and starts every thread.
pub fn start(config: Config) -> Result<Service, AppError> {
    let draining = Shutdown::default();
    let shutdown = Shutdown::default();
    let started = Instant::now();
    info!(
        "webhook-service {} starting as instance {}: redis {}, {} delivery + {} retry threads, timeout {} ms",
        env!("CARGO_PKG_VERSION"),
        config.instance_id,
        redact_url(&config.redis_url),
        config.delivery_threads,
        config.retry_threads,
        config.timeout.as_millis()
    );
    if let Some(env) = &config.node_env {
        info!("NODE_ENV={env}");
    }
    let target = Target::parse(&config.redis_url, config.redis_url_variable, &config.redis)
        .map_err(AppError::RedisSetting)?;
    info!(
        "redis: {} ({}, TLS {})",
        target.describe(),
        target.mode().name(),
        if target.tls() { "on" } else { "off" }
    );
    if config.redis.tls_unsafe_skip_verify {
        warn!(
            "REDIS_TLS_UNSAFE_SKIP_VERIFY=true: the Redis server's certificate is NOT checked; anyone on the network path can read and change this traffic"
        );
    }
    let redis = Arc::new(RedisPool::new(target));
    redis.check().map_err(AppError::RedisSetting)?;
    let durable = Durable::new(redis.clone(), &config.instance_id);
    let counters = Arc::new(Counters::default());
    let registry = Arc::new(Registry::new(config.half_open_after.as_millis() as u64));
    let (first_tx, first_rx) = crossbeam_channel::bounded(config.queue_capacity);
    let (retry_tx, retry_rx) = crossbeam_channel::bounded(config.retry_threads * 16);
    let (scheduler, scheduler_rx) = scheduler::channel();
    let (notify_tx, notify_rx) = crossbeam_channel::bounded(16);
    let throttle = Arc::new(Throttle::new(config.progress_throttle));
    let (recorder, recorder_rx) = history::channel(counters.clone());
    let (completer, _) =
        recovery::spawn_completer(durable.clone(), scheduler.clone(), shutdown.clone())
            .map_err(|e| AppError::Spawn("completer", e))?;
    let delivery = Arc::new(Context {
        agent: http::agent(
            config.timeout,
            config.delivery_threads + config.retry_threads,
            config.allowed_networks.clone(),
            Some(config.port),
        ),
        registry: registry.clone(),
        redis: redis.clone(),
        gate: EndpointGate::new(config.max_in_flight_per_endpoint, config.queue_capacity),
        scheduler: scheduler.clone(),
        counters: counters.clone(),
        max_retry_after: config.max_retry_after,
        recorder,
        durable: durable.clone(),
        completer,
        disconnect_after: config.disconnect_after,
        draining: draining.clone(),
    });
    let dispatcher = Arc::new(Dispatcher {
        registry: registry.clone(),
        throttle: (!config.progress_throttle.is_zero()).then(|| throttle.clone()),
        first_tx: first_tx.clone(),
        scheduler: scheduler.clone(),
        counters: counters.clone(),
        durable: durable.clone(),
        claim_ttl_ms: config.dedupe_window.as_millis() as u64,
    });
    let (stage_tx, stage_rx, stage_waiting) = stage::channel();
    stage::spawn(
        stage_rx,
        stage_waiting,
        dispatcher.clone(),
        shutdown.clone(),
    )
    .map_err(|e| AppError::Spawn("record stage", e))?;
    let intake = Arc::new(Intake::new(
        dispatcher,
        counters.clone(),
        config.dedupe_window,
        Some(stage_tx.clone()),
    ));

    let spawn_err = |what: &'static str| move |e: std::io::Error| AppError::Spawn(what, e);
    recovery::spawn_heartbeat(durable.clone(), config.instance_ttl, shutdown.clone())
        .map_err(spawn_err("heartbeat"))?;
    recovery::spawn_poller(
        durable.clone(),
        first_tx.clone(),
        retry_tx.clone(),
        recovery::Retention {
            max_count: config.dead_letter_max,
            max_age: config.dead_letter_max_age,
        },
        draining.clone(),
    )
    .map_err(spawn_err("poller"))?;
    scheduler::spawn(
        scheduler_rx,
        scheduler.backlog.clone(),
        retry_tx,
        first_tx,
        throttle,
        shutdown.clone(),
    )
    .map_err(spawn_err("scheduler"))?;
    history::spawn(
        recorder_rx,
        redis.clone(),
        counters.clone(),
        shutdown.clone(),
    )
    .map_err(spawn_err("recorder"))?;
    pool::spawn(
        "delivery",
        config.delivery_threads,
        first_rx.clone(),
        delivery.clone(),
    )
    .map_err(spawn_err("delivery"))?;
    pool::spawn("retry", config.retry_threads, retry_rx, delivery.clone())
        .map_err(spawn_err("retry"))?;
    registry::spawn_refresher(
        registry.clone(),
        redis.clone(),
        notify_rx,
        config.registry_refresh,
        shutdown.clone(),
    )
    .map_err(spawn_err("registry"))?;
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
        delivery: delivery.clone(),
        started,
    });
    crate::api::server::spawn(
        SocketAddr::new(config.host, config.port),
        shared,
        shutdown.clone(),
    )
    .map_err(AppError::Listen)?;
    let mut intake_threads = vec![
        pubsub::spawn(
            redis.clone(),
            registry.clone(),
            intake.clone(),
            notify_tx.clone(),
            counters.clone(),
            draining.clone(),
        )
        .map_err(spawn_err("intake"))?,
    ];
    if let Some(stream) = &config.event_stream {
        let reader = stream::spawn(
            redis,
            registry,
            intake,
            stream.clone(),
            config.stream_group.clone(),
            config.instance_id.clone(),
            draining.clone(),
        )
        .map_err(spawn_err("stream"))?;
        intake_threads.push(reader);
    }
    info!("ready in {} ms", started.elapsed().as_millis());
    Ok(Service {
        draining,
        stage: stage_tx,
        intake: intake_threads,
        shutdown,
        delivery,
        timeout: config.shutdown_timeout,
    })
}
