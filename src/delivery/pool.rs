//! The delivery threads: one fixed pool, each thread working on the seat the gate gives it.
//!
//! A thread holding a first-attempt or retry seat reads that queue and offers what it reads to
//! the [`EndpointGate`]; one holding a slow seat runs slow endpoints' attempts in turn; one without
//! a seat waits for the gate to give it one. After an attempt the thread acts on the outcome
//! (done, retry, dead letter, disable), lets the next event of the same job to the same webhook
//! go on ([`Lines`]), and asks the gate what to do next. The `delivery-watch` thread moves
//! attempts that run long off first-attempt and retry seats; the `delivery-lines` thread lets
//! per-job lines whose head did not come back from Redis go on (apart, so that a Redis that
//! hangs cannot hold up the moves to slow seats).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, error, info, warn};

use super::Delivery;
use super::attempt::{self, AttemptOutcome};
use super::durable::{Durable, DurableError};
use super::gate::{Admission, EndpointGate, Next, Outcome, Seat, Ticket};
use super::lines::{Entered, Lines, Place, Turn};
use super::retry::{self, Decision};
use super::scheduler::{SchedulerHandle, Timed};
use crate::monitor::history::{AttemptRecord, Final, Recorder};
use crate::monitor::{Counters, bump};
use crate::redis_conn::RedisPool;
use crate::webhook::model::Webhook;
use crate::webhook::registry::Registry;
use crate::webhook::store;

/// Work handed to a delivery thread that is not a delivery (see [`spawn`]): a test attempt.
pub(crate) type Job = Box<dyn FnOnce(&Context) + Send>;

/// Longest a delivery thread waits for room in a full parking space before it puts the
/// delivery back in Redis.
const PARK_WAIT: Duration = Duration::from_millis(100);
/// How long a delivery waits when the registry cannot be read to find its webhook.
const REGISTRY_WAIT: Duration = Duration::from_secs(1);
/// How long an idle thread blocks before it looks at the stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How often `delivery-watch` looks at the attempts in flight, and `delivery-lines` at the per-job lines.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Everything a delivery thread needs. Shared by all of them.
pub(crate) struct Context {
    /// The HTTP client (an agent and connection pool per origin).
    pub(crate) clients: super::http::Clients,
    /// The current webhooks.
    pub(crate) registry: Arc<Registry>,
    /// Redis, for the rare writes to a webhook (410, failure counts).
    pub(crate) redis: Arc<RedisPool>,
    /// Seats, per-endpoint limits and parking.
    pub(crate) gate: Arc<EndpointGate>,
    /// Per-job order of first attempts.
    pub(crate) lines: Arc<Lines>,
    /// Where retries go.
    pub(crate) scheduler: SchedulerHandle,
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
    /// Cap on `Retry-After`.
    pub(crate) max_retry_after: Duration,
    /// Where attempt records go.
    pub(crate) recorder: Recorder,
    /// Durable delivery state.
    pub(crate) durable: Durable,
    /// Batches the forgetting of delivered ids.
    pub(crate) completer: super::recovery::Completer,
    /// Final failures in a row that disconnect a webhook.
    pub(crate) disconnect_after: u64,
    /// Set when the service stops: no new attempt starts, deliveries are handed back.
    pub(crate) draining: crate::shutdown::Shutdown,
}

/// Starts one thread per seat of the gate, named `delivery-{i}`, reading `first_rx` and
/// `retry_rx` as their seats say; a thread on a retry seat also runs the [`Job`]s of `jobs`
/// (test attempts) between deliveries.
pub(crate) fn spawn(
    ctx: Arc<Context>,
    first_rx: Receiver<Delivery>,
    retry_rx: Receiver<Delivery>,
    jobs: Receiver<Job>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..ctx.gate.config().threads())
        .map(|i| {
            let (ctx, first_rx, retry_rx) = (ctx.clone(), first_rx.clone(), retry_rx.clone());
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("delivery-{i}"))
                .spawn(move || work(&ctx, &first_rx, &retry_rx, jobs))
        })
        .collect()
}

/// One delivery thread's loop: find a seat, read its queue or run what the gate gives, repeat.
fn work(
    ctx: &Context,
    first_rx: &Receiver<Delivery>,
    retry_rx: &Receiver<Delivery>,
    mut jobs: Receiver<Job>,
) {
    let mut next = Next::Seatless;
    loop {
        next = match next {
            Next::Seatless => match ctx.gate.take_seat(IDLE_WAIT) {
                Some(next) => next,
                None if ctx.draining.is_set() => break,
                None => Next::Seatless,
            },
            Next::Read(seat) => {
                let read = if seat == Seat::Retry {
                    read_retry(retry_rx, &mut jobs)
                } else {
                    first_rx.recv_timeout(IDLE_WAIT).map(Read::Delivery)
                };
                match read {
                    Ok(Read::Delivery(delivery)) => admit(ctx, delivery, seat),
                    Ok(Read::Job(job)) => {
                        if catch_unwind(AssertUnwindSafe(|| job(ctx))).is_err() {
                            error!("a job on a delivery thread panicked");
                        }
                        Next::Read(seat)
                    }
                    Err(RecvTimeoutError::Timeout) if !ctx.draining.is_set() => Next::Read(seat),
                    Err(_) => {
                        ctx.gate.give_back(seat);
                        break;
                    }
                }
            }
            Next::Run(ticket, delivery) => run(ctx, ticket, delivery),
        }
    }
    // Stopping: jobs not started are dropped, which tells whoever waits for them.
    jobs.try_iter().for_each(drop);
}

/// What a thread on a retry seat read.
enum Read {
    Delivery(Delivery),
    Job(Job),
}

/// Reads the retry queue and the jobs, whichever has something first, for up to [`IDLE_WAIT`].
fn read_retry(
    retry_rx: &Receiver<Delivery>,
    jobs: &mut Receiver<Job>,
) -> Result<Read, RecvTimeoutError> {
    crossbeam_channel::select! {
        recv(retry_rx) -> delivery => delivery
            .map(Read::Delivery)
            .map_err(|_| RecvTimeoutError::Disconnected),
        recv(jobs) -> job => match job {
            Ok(job) => Ok(Read::Job(job)),
            Err(_) => {
                // Nobody can send jobs any more: deliveries only from now on.
                *jobs = crossbeam_channel::never();
                Err(RecvTimeoutError::Timeout)
            }
        },
        default(IDLE_WAIT) => Err(RecvTimeoutError::Timeout),
    }
}

/// Offers a delivery read on `seat` to the gate.
fn admit(ctx: &Context, delivery: Delivery, seat: Seat) -> Next {
    match ctx.gate.admit(delivery, seat, PARK_WAIT) {
        Admission::Run(ticket, delivery) => Next::Run(ticket, delivery),
        Admission::Parked => Next::Read(seat),
        Admission::Overflow(delivery, wait) => {
            bump(&ctx.counters.deliveries_spilled);
            hand_back(ctx, delivery, wait);
            Next::Read(seat)
        }
    }
}

/// What became of an admitted delivery.
enum Made {
    /// An attempt was made.
    Attempt(Outcome),
    /// No attempt: it went back to wait (in Redis, or in memory while Redis is away).
    HandedBack,
    /// No attempt: it was dropped or kept as a dead letter.
    Dropped,
}

/// Runs an admitted delivery; returns what the thread does next.
fn run(ctx: &Context, ticket: Ticket, delivery: Delivery) -> Next {
    // A first attempt holds its job's line up until it ends.
    let place = if delivery.attempts == 0 {
        Place::of(&delivery)
    } else {
        None
    };
    let made = if ctx.draining.is_set() {
        hand_back(ctx, delivery, Duration::ZERO);
        Made::HandedBack
    } else {
        let (event_id, webhook_id) = (delivery.event_id.clone(), delivery.webhook_id.clone());
        catch_unwind(AssertUnwindSafe(|| attempt_once(ctx, delivery))).unwrap_or_else(|_| {
            error!("delivery of event {event_id} to webhook {webhook_id} panicked; it is dropped");
            bump(&ctx.counters.events_failed);
            Made::Dropped
        })
    };
    let outcome = match made {
        Made::Attempt(outcome) => Some(outcome),
        Made::Dropped => None,
        // `hand_back` marked the line's head as waiting in Redis: the line waits for it.
        Made::HandedBack => {
            return ctx.gate.release(ticket, None, None);
        }
    };
    let then = place.and_then(|p| next_in_line(ctx, ctx.lines.leave(p)));
    ctx.gate.release(ticket, outcome, then)
}

/// The delivery whose turn in its job's line has come, read back from Redis if it was kept
/// there only; `None` if there is none (or it cannot be read now: the watcher asks again).
fn next_in_line(ctx: &Context, mut turn: Option<Turn>) -> Option<Delivery> {
    loop {
        let (id, place) = match turn? {
            Turn::Go(delivery) => return Some(delivery),
            Turn::Fetch(id, place) => (id, place),
        };
        match ctx.durable.load(&id) {
            Ok(Some(delivery)) => match ctx.lines.enter(delivery) {
                Entered::Go(delivery) => return Some(delivery),
                Entered::Held | Entered::Kept => return None,
            },
            Ok(None) => {
                // Its record is gone (delivered or dropped elsewhere): the line goes on.
                debug!("event {id} waiting in its job's line has no record any more");
                turn = ctx.lines.leave(place);
            }
            Err(e) => {
                debug!("{e}; event {id} waits for its record to be read");
                ctx.lines.fetch_failed(place);
                return None;
            }
        }
    }
}

/// Starts `delivery-watch`: every 50 ms it lets the gate move attempts that run long to slow
/// seats and mark endpoints whose attempts stalled as slow. It touches nothing but the gate's
/// memory, so a Redis that hangs cannot hold it up.
pub(crate) fn spawn_watcher(ctx: Arc<Context>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("delivery-watch".into())
        .spawn(move || {
            while !ctx.draining.is_set() {
                ctx.gate.watch(Instant::now());
                ctx.draining.sleep(WATCH_EVERY);
            }
        })
}

/// Starts `delivery-lines`: every 50 ms it lets per-job lines whose head did not come back from
/// Redis go on (their next is queued, or put back in Redis if the queue is full), reading back
/// from Redis the records of those kept as ids.
pub(crate) fn spawn_line_keeper(
    ctx: Arc<Context>,
    first_tx: Sender<Delivery>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("delivery-lines".into())
        .spawn(move || {
            while !ctx.draining.is_set() {
                for turn in ctx.lines.expire(Instant::now()) {
                    let Some(delivery) = next_in_line(&ctx, Some(turn)) else {
                        continue;
                    };
                    if let Err(TrySendError::Full(d) | TrySendError::Disconnected(d)) =
                        first_tx.try_send(delivery)
                    {
                        hand_back(&ctx, d, Duration::ZERO);
                    }
                }
                ctx.draining.sleep(WATCH_EVERY);
            }
        })
}

/// Makes one attempt of `delivery` (unless its webhook is gone, inactive, or cannot be read)
/// and acts on the outcome.
fn attempt_once(ctx: &Context, mut delivery: Delivery) -> Made {
    if let Err(e) = ctx
        .registry
        .refresh_for(&ctx.redis, &delivery.webhook_id, delivery.created_ms)
    {
        // Whether its webhook still exists cannot be told now: never drop it on a guess.
        debug!(
            "cannot read the registry ({e}); event {} to webhook {} waits",
            delivery.event_id, delivery.webhook_id
        );
        hand_back(ctx, delivery, REGISTRY_WAIT);
        return Made::HandedBack;
    }
    let snapshot = ctx.registry.snapshot();
    let now_ms = crate::time::now_ms();
    let Some(webhook) = snapshot.get(&delivery.webhook_id) else {
        info!(
            "webhook {} was deleted; event {} is not delivered",
            delivery.webhook_id, delivery.event_id
        );
        bump(&ctx.counters.deliveries_dropped);
        durable(
            ctx,
            &delivery,
            "forget",
            ctx.durable.complete(&delivery.event_id),
        );
        return Made::Dropped;
    };
    if !snapshot.receives(webhook, now_ms) {
        // Kept as a dead letter: recoverable once the webhook takes deliveries again.
        let why = if webhook.active {
            "webhook is disconnected"
        } else {
            "webhook is inactive"
        };
        debug!(
            "{why}; event {} to webhook {} is a dead letter",
            delivery.event_id, webhook.id
        );
        bump(&ctx.counters.deliveries_dropped);
        let stored = ctx.durable.dead_letter(&delivery, now_ms, None, why);
        durable(ctx, &delivery, "keep as a dead letter", stored);
        return Made::Dropped;
    }
    delivery.attempts += 1;
    let outcome = attempt::send(&ctx.clients.agent(&webhook.url), webhook, &delivery);
    ctx.counters
        .attempt(outcome.class, outcome.duration.as_micros() as u64);
    ctx.counters
        .durations
        .observe(&delivery.webhook_id, outcome.duration.as_secs_f64());
    let decision = retry::decide(
        &webhook.retry,
        delivery.attempts,
        outcome.class,
        outcome.status,
        outcome.retry_after,
        ctx.max_retry_after,
        crate::rand::unit(),
    );
    log_attempt(&delivery, &outcome, &decision);
    let (state, next_retry_at) = match decision {
        Decision::Done => (Final::Delivered, None),
        Decision::Retry(delay) => (Final::Pending, Some(now_ms + delay.as_millis() as u64)),
        Decision::Gone | Decision::GiveUp => (Final::Failed, None),
    };
    ctx.recorder.record(record(
        webhook,
        &delivery,
        &outcome,
        state,
        next_retry_at,
        false,
    ));
    let made = Made::Attempt(Outcome {
        took: outcome.duration,
        unreachable: outcome.class.is_unreachable(),
    });
    settle(ctx, webhook, delivery, &outcome, decision, now_ms);
    made
}

/// Acts on the decision after an attempt: forget, retry later, or keep as a dead letter, and
/// record what it means for the webhook (reconnected, disabled, one more failure).
fn settle(
    ctx: &Context,
    webhook: &Webhook,
    delivery: Delivery,
    outcome: &AttemptOutcome,
    decision: Decision,
    now_ms: u64,
) {
    match decision {
        Decision::Done => {
            bump(&ctx.counters.deliveries_succeeded);
            let done = ctx.completer.done(&ctx.durable, delivery.event_id.clone());
            durable(ctx, &delivery, "complete", done);
            if webhook.disconnected || webhook.consecutive_failures > 0 {
                if webhook.disconnected {
                    info!("webhook {} answered again and is reconnected", webhook.id);
                }
                write(ctx, &delivery, "reconnect", |redis| {
                    store::record_success(redis, &webhook.id)
                });
            }
        }
        Decision::Retry(delay) => {
            // From the end of the attempt, rounded up: a retry is never early.
            hand_back(ctx, delivery, delay);
        }
        Decision::Gone => {
            warn!(
                "webhook {} answered 410 Gone to event {}: the webhook is disabled",
                webhook.id, delivery.event_id
            );
            bump(&ctx.counters.deliveries_failed);
            let stored = ctx.durable.dead_letter(
                &delivery,
                now_ms,
                outcome.status,
                "410 Gone: the webhook is disabled",
            );
            durable(ctx, &delivery, "keep as a dead letter", stored);
            write(ctx, &delivery, "disable", |redis| {
                store::disable_gone(redis, &webhook.id)
            });
        }
        Decision::GiveUp => {
            let last_error = outcome.error.as_deref().unwrap_or("unknown error");
            crate::warn_limited!(
                1000,
                "event {} to webhook {} failed after {} attempts: {last_error}",
                delivery.event_id,
                webhook.id,
                delivery.attempts,
            );
            bump(&ctx.counters.deliveries_failed);
            let stored = ctx
                .durable
                .dead_letter(&delivery, now_ms, outcome.status, last_error);
            durable(ctx, &delivery, "keep as a dead letter", stored);
            write(ctx, &delivery, "record the failure of", |redis| {
                store::record_final_failure(
                    redis,
                    &webhook.id,
                    webhook.is_static,
                    ctx.disconnect_after,
                )
            });
        }
    }
}

/// The history record of one attempt.
pub(crate) fn record(
    webhook: &Webhook,
    delivery: &Delivery,
    outcome: &AttemptOutcome,
    state: Final,
    next_retry_at: Option<u64>,
    test: bool,
) -> AttemptRecord {
    AttemptRecord {
        webhook_id: delivery.webhook_id.clone(),
        url: webhook.url.clone(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        attempt_number: delivery.attempts,
        timestamp: crate::time::now_ms(),
        success: outcome.class == crate::outcome::OutcomeClass::Success,
        response_status: outcome.status,
        response_body: outcome.response_body.clone(),
        error_message: outcome.error.clone(),
        next_retry_at,
        response_time_ms: outcome
            .status
            .map(|_| (outcome.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0),
        outcome: outcome.class.label(),
        state,
        payload: delivery.body.clone(),
        test,
    }
}

fn log_attempt(delivery: &Delivery, outcome: &AttemptOutcome, decision: &Decision) {
    debug!(
        "webhook {} event {} attempt {}: {} {} in {} ms -> {:?}",
        delivery.webhook_id,
        delivery.event_id,
        delivery.attempts,
        outcome.class.label(),
        outcome
            .status
            .map(|s| s.to_string())
            .or_else(|| outcome.error.clone())
            .unwrap_or_default(),
        outcome.duration.as_millis(),
        decision
    );
}

fn write(
    ctx: &Context,
    delivery: &Delivery,
    what: &str,
    op: impl FnOnce(&RedisPool) -> Result<(), store::StoreError>,
) {
    if let Err(e) = op(&ctx.redis) {
        error!(
            "could not {what} webhook {} after event {}: {e}",
            delivery.webhook_id, delivery.event_id
        );
    }
}

/// Puts a delivery back in the durable due set (or, with Redis away, the in-memory scheduler)
/// to be offered again `delay` from now, rounded up: a retry, with its attempt count as it
/// stands, or a hand-back. A first attempt handed back still heads its job's line: what is
/// behind it waits for it to come back.
pub(crate) fn hand_back(ctx: &Context, delivery: Delivery, delay: Duration) {
    if delivery.attempts == 0 {
        ctx.lines.away(&delivery, delay);
    }
    let due = super::dispatcher::due_after(crate::time::now_ms(), delay);
    if let Err(kept) = ctx.completer.defer(&ctx.durable, delivery, due) {
        let (delivery, e) = *kept;
        debug!("{e}; event {} waits in memory", delivery.event_id);
        if let Err(item) = ctx
            .scheduler
            .schedule(Instant::now() + delay, Timed::Retry(delivery))
        {
            lost(ctx, &item, "the scheduler has stopped");
        }
    }
}

/// Logs a failed durable-state write (the delivery itself goes on: at least once).
fn durable(ctx: &Context, delivery: &Delivery, what: &str, result: Result<(), DurableError>) {
    if let Err(e) = result {
        crate::warn_limited!(
            1000,
            "could not {what} event {} to webhook {}: {e}",
            delivery.event_id,
            delivery.webhook_id
        );
        bump(&ctx.counters.events_failed);
    }
}

fn lost(ctx: &Context, item: &Timed, why: &str) {
    if let Timed::Retry(d) = item {
        error!(
            "event {} to webhook {} could not be scheduled ({why}); it is dropped",
            d.event_id, d.webhook_id
        );
    }
    bump(&ctx.counters.events_failed);
}
