//! Wiring: builds the shared state, starts every named thread, and joins them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{error, info, warn};

use crate::config::target::Target;
use crate::config::{Config, redact_url};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::durable::Durable;
use crate::delivery::gate::{EndpointGate, GateConfig};
use crate::delivery::handle::DeliveryHandle;
use crate::delivery::lines::Lines;
use crate::delivery::pool::{self, Context, Job};
use crate::delivery::scheduler;
use crate::delivery::scheduler::SchedulerHandle;
use crate::delivery::throttle::Throttle;
use crate::delivery::{Delivery, dns, http, recovery};
use crate::intake::{Intake, pubsub, stage, stream};
use crate::monitor::Counters;
use crate::monitor::history;
use crate::redis_conn::RedisPool;
use crate::shutdown::Shutdown;
use crate::webhook::registry::{self, Registry};

/// Why the service could not start.
#[derive(Debug)]
pub enum AppError {
    /// A Redis setting is wrong, or Redis refused what it names (certificate, credentials).
    RedisSetting(crate::config::target::TargetError),
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

/// A started service: the stop flags and every thread it started.
pub(crate) struct Service {
    /// Set first: intake and the poller stop, delivery threads hand deliveries back instead of
    /// attempting them.
    draining: Shutdown,
    /// Set once what intake read is recorded and queued: the scheduler stops (until then the
    /// record stage hands it progress flushes).
    recorded: Shutdown,
    /// Set last: every other thread stops.
    shutdown: Shutdown,
    /// The service's end of the pub/sub record stage; dropped once intake has stopped, so the
    /// stage ends when it has recorded and queued everything intake read.
    stage: Option<stage::StageSender>,
    threads: Threads,
    delivery: DeliveryHandle,
    timeout: Duration,
}

/// Every thread the service started, by stage of the data flow, in the order they stop.
#[derive(Default)]
struct Threads {
    /// `intake-pubsub`, `intake-stream`.
    intake: Vec<JoinHandle<()>>,
    /// `intake-record`.
    record: Vec<JoinHandle<()>>,
    /// `delivery-poller`, `delivery-scheduler`: they queue deliveries.
    feeders: Vec<JoinHandle<()>>,
    /// `delivery-N`, `delivery-watch`, `delivery-lines`.
    delivery: Vec<JoinHandle<()>>,
    /// `delivery-completer`, `monitor-recorder`, `delivery-heartbeat`, `webhook-registry`, the
    /// API's threads: they stop on the last flag.
    rest: Vec<JoinHandle<()>>,
    /// `delivery-dns`: started per host-name lookup, ending with it.
    dns: dns::Lookups,
}

/// How often a stop looks whether a thread has ended (std has no join with a time limit).
const JOIN_POLL: Duration = Duration::from_millis(5);

/// Joins the threads that end before `deadline` and reports those that panicked; returns the
/// names of those still running (the process exits without them).
fn join_by(threads: Vec<JoinHandle<()>>, deadline: Instant) -> Vec<String> {
    let mut left = Vec::new();
    for thread in threads {
        let name = thread.thread().name().unwrap_or("unnamed").to_string();
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(JOIN_POLL);
        }
        if !thread.is_finished() {
            left.push(name);
        } else if thread.join().is_err() {
            error!("thread {name} panicked");
        }
    }
    left
}

impl Service {
    /// Graceful stop, within the shutdown timeout: intake stops, what it read is recorded,
    /// attempts in flight finish, and every other delivery in hand goes back to
    /// `webhooks:due` for another instance or the next start. Threads are joined in the order
    /// data flows through them; the log says how many deliveries went back.
    pub(crate) fn stop(mut self) {
        let deadline = Instant::now() + self.timeout;
        info!(
            "stopping: intake closed, waiting up to {} ms for attempts in flight",
            self.timeout.as_millis()
        );
        let requeued_before = self.delivery.requeued();
        self.draining.set();
        let mut left = join_by(std::mem::take(&mut self.threads.intake), deadline);
        // Events read before intake stopped are recorded and queued, then handed back below.
        drop(self.stage.take());
        left.extend(join_by(std::mem::take(&mut self.threads.record), deadline));
        self.recorded.set();
        left.extend(join_by(std::mem::take(&mut self.threads.feeders), deadline));
        // With nothing left to queue deliveries, the delivery threads finish their attempts,
        // hand back what is queued or parked, and end.
        left.extend(join_by(
            std::mem::take(&mut self.threads.delivery),
            deadline,
        ));
        let in_flight = self.delivery.in_flight();
        match self.delivery.hand_back_all(deadline) {
            Ok(released) => {
                let handed_back = self.delivery.requeued() - requeued_before + released;
                info!(
                    "stopped: {handed_back} deliveries handed back to webhooks:due ({in_flight} attempts were still in flight)"
                );
            }
            Err(e) => error!(
                "stopped, but could not hand deliveries back ({e}); another instance takes them over when this one's heartbeat expires"
            ),
        }
        self.shutdown.set();
        left.extend(join_by(std::mem::take(&mut self.threads.rest), deadline));
        left.extend(join_by(self.threads.dns.take_threads(), deadline));
        if !left.is_empty() {
            warn!(
                "the shutdown timeout ended with {} threads still running: {}",
                left.len(),
                left.join(", ")
            );
        }
    }
}

/// What every part of the service is built on.
struct Base {
    redis: Arc<RedisPool>,
    durable: Durable,
    counters: Arc<Counters>,
    registry: Arc<Registry>,
    draining: Shutdown,
    recorded: Shutdown,
    shutdown: Shutdown,
}

/// The delivery side, started: what intake queues deliveries with, and the handle.
struct Delivering {
    first_tx: Sender<Delivery>,
    scheduler: SchedulerHandle,
    throttle: Arc<Throttle>,
    lines: Arc<Lines>,
    gate: Arc<EndpointGate>,
    completer: recovery::Completer,
    handle: DeliveryHandle,
}

fn spawn_err(what: &'static str) -> impl FnOnce(std::io::Error) -> AppError {
    move |e| AppError::Spawn(what, e)
}

/// Builds the shared state and starts every thread.
pub(crate) fn start(config: Config) -> Result<Service, AppError> {
    let started = Instant::now();
    info!(
        "webhook-service {} starting as instance {}: redis {}, {} delivery + {} retry + {} slow threads, timeout {} ms",
        env!("CARGO_PKG_VERSION"),
        config.instance_id,
        redact_url(&config.redis_url),
        config.delivery_threads,
        config.retry_threads,
        config.slow_threads,
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
    let base = Base {
        durable: Durable::new(redis.clone(), &config.instance_id),
        redis,
        counters: Arc::new(Counters::default()),
        registry: Arc::new(Registry::new(config.half_open_after.as_millis() as u64)),
        draining: Shutdown::default(),
        recorded: Shutdown::default(),
        shutdown: Shutdown::default(),
    };
    let mut threads = Threads::default();
    let delivering = start_delivery(&config, &base, &mut threads)?;
    let handle = delivering.handle.clone();
    let (notify_tx, notify_rx) = crossbeam_channel::bounded(16);
    threads.rest.push(
        registry::spawn_refresher(
            base.registry.clone(),
            base.redis.clone(),
            notify_rx,
            config.registry_refresh,
            base.shutdown.clone(),
        )
        .map_err(spawn_err("registry"))?,
    );
    let shared = Arc::new(crate::api::state::Shared::new(crate::api::state::Parts {
        config: Arc::new(config.clone()),
        redis: base.redis.clone(),
        counters: base.counters.clone(),
        registry: base.registry.clone(),
        delivery: handle.clone(),
        started,
    }));
    threads.rest.extend(
        crate::api::threads::spawn(
            SocketAddr::new(config.host, config.port),
            shared,
            base.shutdown.clone(),
        )
        .map_err(AppError::Listen)?,
    );
    let stage = start_intake(&config, &base, delivering, notify_tx, &mut threads)?;
    info!("ready in {} ms", started.elapsed().as_millis());
    Ok(Service {
        draining: base.draining,
        recorded: base.recorded,
        shutdown: base.shutdown,
        stage: Some(stage),
        threads,
        delivery: handle,
        timeout: config.shutdown_timeout,
    })
}

/// Starts the delivery threads and those that feed and settle them.
fn start_delivery(
    config: &Config,
    base: &Base,
    threads: &mut Threads,
) -> Result<Delivering, AppError> {
    let (first_tx, first_rx) = crossbeam_channel::bounded(config.queue_capacity);
    let (retry_tx, retry_rx) = crossbeam_channel::bounded(config.retry_threads * 16);
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(config.retry_threads * 16);
    let (scheduler, scheduler_rx) = scheduler::channel();
    let throttle = Arc::new(Throttle::new(config.progress_throttle));
    // Deliveries waiting behind an earlier event of their job: up to half the queue's capacity
    // in memory, the rest in Redis.
    let lines = Arc::new(Lines::new(config.queue_capacity / 2));
    let durable = &base.durable;
    let gate = Arc::new(gate(config));
    let (recorder, completer) = start_settling(config, base, &scheduler, threads)?;
    let ctx = Arc::new(Context {
        clients: http::Clients::new(
            config.timeout,
            (
                config.max_in_flight_per_endpoint,
                config.delivery_idle_connections(),
            ),
            (config.allowed_networks.clone(), Some(config.port)),
            threads.dns.clone(),
        ),
        gate: gate.clone(),
        lines: lines.clone(),
        max_retry_after: config.max_retry_after,
        disconnect_after: config.disconnect_after,
        registry: base.registry.clone(),
        redis: base.redis.clone(),
        counters: base.counters.clone(),
        durable: durable.clone(),
        draining: base.draining.clone(),
        scheduler: scheduler.clone(),
        recorder,
        completer: completer.clone(),
    });
    let handle = DeliveryHandle::new(
        ctx.clone(),
        first_rx.clone(),
        scheduler.backlog.clone(),
        jobs_tx,
        config.timeout,
    );
    let retention = recovery::Retention {
        max_count: config.dead_letter_max,
        max_age: config.dead_letter_max_age,
    };
    threads.feeders.push(
        recovery::spawn_poller(
            durable.clone(),
            lines.clone(),
            first_tx.clone(),
            retry_tx.clone(),
            retention,
            base.draining.clone(),
        )
        .map_err(spawn_err("poller"))?,
    );
    threads.feeders.push(
        scheduler::spawn(
            scheduler_rx,
            scheduler.backlog.clone(),
            retry_tx,
            first_tx.clone(),
            throttle.clone(),
            lines.clone(),
            base.recorded.clone(),
        )
        .map_err(spawn_err("scheduler"))?,
    );
    // Test attempts run on the retry seats: they never delay first attempts.
    threads.delivery.extend(
        pool::spawn(ctx.clone(), first_rx, retry_rx, jobs_rx).map_err(spawn_err("delivery"))?,
    );
    threads
        .delivery
        .push(pool::spawn_watcher(ctx.clone()).map_err(spawn_err("delivery watch"))?);
    threads.delivery.push(
        pool::spawn_line_keeper(ctx.clone(), first_tx.clone())
            .map_err(spawn_err("delivery lines"))?,
    );
    Ok(Delivering {
        first_tx,
        scheduler,
        throttle,
        lines,
        gate,
        completer,
        handle,
    })
}

/// The endpoint gate, with the seats and limits of `config`.
fn gate(config: &Config) -> EndpointGate {
    EndpointGate::new(GateConfig {
        first: config.delivery_threads,
        retry: config.retry_threads,
        slow: config.slow_threads,
        max_per_endpoint: config.max_in_flight_per_endpoint,
        slow_after: config.slow_attempt,
        max_parked: config.queue_capacity,
        attempt_timeout: config.timeout,
    })
}

/// Starts the threads that write what delivery did: the completer (settlements), the recorder
/// (history), and the heartbeat that keeps this instance's leases.
fn start_settling(
    config: &Config,
    base: &Base,
    scheduler: &SchedulerHandle,
    threads: &mut Threads,
) -> Result<(history::Recorder, recovery::Completer), AppError> {
    let (completer, completer_thread) = recovery::spawn_completer(
        base.durable.clone(),
        scheduler.clone(),
        base.shutdown.clone(),
    )
    .map_err(spawn_err("completer"))?;
    threads.rest.push(completer_thread);
    let (recorder, recorder_rx) = history::channel(base.counters.clone());
    threads.rest.push(
        history::spawn(
            recorder_rx,
            base.redis.clone(),
            base.counters.clone(),
            base.shutdown.clone(),
        )
        .map_err(spawn_err("recorder"))?,
    );
    threads.rest.push(
        recovery::spawn_heartbeat(
            base.durable.clone(),
            config.instance_ttl,
            base.shutdown.clone(),
        )
        .map_err(spawn_err("heartbeat"))?,
    );
    Ok((recorder, completer))
}

/// Starts the record stage and the intake threads; returns the service's end of the stage.
fn start_intake(
    config: &Config,
    base: &Base,
    delivering: Delivering,
    registry_notify: Sender<()>,
    threads: &mut Threads,
) -> Result<stage::StageSender, AppError> {
    let dispatcher = Arc::new(Dispatcher {
        registry: base.registry.clone(),
        throttle: (!config.progress_throttle.is_zero()).then_some(delivering.throttle),
        first_tx: delivering.first_tx,
        scheduler: delivering.scheduler,
        lines: delivering.lines,
        gate: delivering.gate,
        counters: base.counters.clone(),
        durable: base.durable.clone(),
        completer: delivering.completer,
        claim_ttl_ms: config.dedupe_window.as_millis() as u64,
    });
    let (stage_tx, stage_rx, stage_waiting) = stage::channel();
    threads.record.push(
        stage::spawn(
            stage_rx,
            stage_waiting,
            dispatcher.clone(),
            base.shutdown.clone(),
        )
        .map_err(spawn_err("record stage"))?,
    );
    let intake = Arc::new(Intake::new(
        dispatcher,
        base.counters.clone(),
        config.dedupe_window,
        Some(stage_tx.clone()),
    ));
    threads.intake.push(
        pubsub::spawn(
            base.redis.clone(),
            base.registry.clone(),
            intake.clone(),
            registry_notify,
            base.counters.clone(),
            base.draining.clone(),
        )
        .map_err(spawn_err("intake"))?,
    );
    if let Some(stream) = &config.event_stream {
        threads.intake.push(
            stream::spawn(
                base.redis.clone(),
                base.registry.clone(),
                intake,
                stream.clone(),
                config.stream_group.clone(),
                config.instance_id.clone(),
                base.draining.clone(),
            )
            .map_err(spawn_err("stream"))?,
        );
    }
    Ok(stage_tx)
}
