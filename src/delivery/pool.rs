//! The delivery threads, and the gate that keeps one endpoint from holding them all.
//!
//! Two fixed pools read two bounded channels: `delivery-N` threads make first attempts and
//! `retry-N` threads make retries, so a backlog of retries never delays fresh events. Both pass
//! through one [`EndpointGate`]: a webhook may have at most `limit` attempts in flight; further
//! deliveries for it are parked (not holding a thread) and run, in order, as its attempts finish.
//! The limit adapts: it halves on each timeout or connection failure and grows back by one per
//! success, so an endpoint that hangs until the timeout soon holds a single thread.
//!
//! Parking is bounded so memory is: at most the queue capacity in all, and a quarter of that
//! for a webhook not known to answer quickly (one whose attempts take long or have not ended).
//! A delivery that finds the whole space full waits up to 100 ms for room; one over its
//! webhook's share goes back to Redis as due after the time the webhook's parked backlog should
//! take (200 ms to 60 s), so a hung endpoint's backlog is not offered again and again.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, error, info, warn};
use parking_lot::{Condvar, Mutex};

use super::Delivery;
use super::attempt::{self, AttemptOutcome};
use super::durable::{Durable, DurableError};
use super::handle::Job;
use super::retry::{self, Decision};
use super::scheduler::{SchedulerHandle, Timed};
use crate::monitor::history::{AttemptRecord, Final, Recorder};
use crate::monitor::{Counters, bump};
use crate::redis_conn::RedisPool;
use crate::webhook::model::Webhook;
use crate::webhook::registry::Registry;
use crate::webhook::store;

/// Share of the parking space a webhook may take unless it is known to answer quickly: a
/// quarter, so a hung endpoint's backlog leaves room for the others'. A quick webhook may use
/// all of it (a burst to one webhook).
const PARKED_SHARE_UNPROVEN: usize = 4;
/// Attempts shorter than this (on average) make a webhook quick: it may use all the parking.
const QUICK_ATTEMPT_SECS: f64 = 0.25;
/// Longest a delivery thread waits for room in a full parking space before it puts the
/// delivery back in Redis.
const PARK_WAIT: Duration = Duration::from_millis(100);
/// How long a delivery waits when the registry cannot be read to find its webhook.
const REGISTRY_WAIT: Duration = Duration::from_secs(1);
/// Shortest and longest wait of an overflowing delivery before it is offered to the gate again.
/// In between, the wait is the time the endpoint needs to work through what is parked for it,
/// so a slow or hung endpoint's backlog is not offered again and again in vain.
const MIN_OVERFLOW_DELAY: Duration = Duration::from_millis(200);
const MAX_OVERFLOW_DELAY: Duration = Duration::from_secs(60);

/// Per-webhook admission: in-flight count, adaptive limit, parked deliveries.
#[derive(Debug)]
pub struct EndpointGate {
    max: usize,
    /// Most deliveries parked, all webhooks together: memory stays bounded however many
    /// webhooks a burst fans out to (beyond it, deliveries wait in Redis).
    max_parked: usize,
    /// Most deliveries parked for one struggling webhook.
    max_parked_unproven: usize,
    state: Mutex<GateState>,
    /// Signalled when the parking space, having been full, is down to `low_water`.
    room: Condvar,
    low_water: usize,
}

#[derive(Debug, Default)]
struct GateState {
    endpoints: HashMap<Arc<str>, Endpoint>,
    parked: usize,
}

#[derive(Debug)]
struct Endpoint {
    in_flight: usize,
    limit: usize,
    parked: VecDeque<Delivery>,
    /// Moving average of its attempts' durations, in seconds.
    attempt_secs: f64,
    /// When its attempts last made progress: one ended, or the first of a busy spell began.
    progressed: Instant,
}

/// What the gate says to a delivery.
#[derive(Debug)]
pub enum Admission {
    /// Run it now (it counts as in flight).
    Run(Delivery),
    /// Parked; it will be handed to whichever thread finishes an attempt for this webhook.
    Parked,
    /// Too many parked already: hold it elsewhere and offer it again after this wait.
    Overflow(Delivery, Duration),
}

impl EndpointGate {
    /// A gate allowing up to `max` attempts in flight per webhook and `max_parked` deliveries
    /// parked in all.
    pub fn new(max: usize, max_parked: usize) -> EndpointGate {
        EndpointGate {
            max: max.max(1),
            max_parked,
            max_parked_unproven: (max_parked / PARKED_SHARE_UNPROVEN).max(1),
            state: Mutex::new(GateState::default()),
            room: Condvar::new(),
            low_water: max_parked.saturating_sub(max_parked / 8 + 1),
        }
    }

    /// Asks to run `delivery`.
    pub fn admit(&self, delivery: Delivery) -> Admission {
        self.admit_within(delivery, Duration::ZERO)
    }

    /// Asks to run `delivery`; when it would be parked but the parking space as a whole is
    /// full, waits up to `max_wait` for room first (room frees as fast as the endpoints work,
    /// and a delivery put back in Redis costs two round trips and a poll to come back).
    pub fn admit_within(&self, delivery: Delivery, max_wait: Duration) -> Admission {
        let deadline = Instant::now() + max_wait;
        let mut state = self.state.lock();
        loop {
            let full = state.parked >= self.max_parked;
            let endpoint = state
                .endpoints
                .entry(delivery.webhook_id.clone())
                .or_insert_with(|| Endpoint {
                    in_flight: 0,
                    limit: self.max,
                    parked: VecDeque::new(),
                    attempt_secs: 0.0,
                    progressed: Instant::now(),
                });
            if endpoint.in_flight < endpoint.limit && endpoint.parked.is_empty() {
                if endpoint.in_flight == 0 {
                    endpoint.progressed = Instant::now();
                }
                endpoint.in_flight += 1;
                return Admission::Run(delivery);
            }
            // How long an attempt takes here: the average of those that ended, or, while none
            // has ended for longer than that, at least that long (a hanging endpoint's limit
            // drops only when its attempts time out).
            let stalled = if endpoint.in_flight > 0 {
                endpoint.progressed.elapsed().as_secs_f64()
            } else {
                0.0
            };
            let attempt_secs = endpoint.attempt_secs.max(stalled);
            // Only a webhook known to answer quickly may fill the parking space.
            let quick = endpoint.limit == self.max
                && endpoint.attempt_secs > 0.0
                && attempt_secs < QUICK_ATTEMPT_SECS;
            let within_share = quick || endpoint.parked.len() < self.max_parked_unproven;
            if within_share && !full {
                endpoint.parked.push_back(delivery);
                state.parked += 1;
                return Admission::Parked;
            }
            if within_share && Instant::now() < deadline {
                self.room.wait_until(&mut state, deadline);
                continue;
            }
            let backlog = endpoint.parked.len() as f64 * attempt_secs;
            let wait = Duration::try_from_secs_f64(backlog / endpoint.limit as f64)
                .unwrap_or(MAX_OVERFLOW_DELAY)
                .clamp(MIN_OVERFLOW_DELAY, MAX_OVERFLOW_DELAY);
            return Admission::Overflow(delivery, wait);
        }
    }

    /// Ends an attempt for `webhook_id` that took `took`; `unreachable` is `Some(true)` after a
    /// timeout or a connection failure, `Some(false)` after an answer, `None` when no attempt
    /// was made. Returns the next parked delivery for this webhook if it may run now (already in
    /// flight).
    pub fn release(
        &self,
        webhook_id: &Arc<str>,
        unreachable: Option<bool>,
        took: Duration,
    ) -> Option<Delivery> {
        let mut state = self.state.lock();
        let GateState { endpoints, parked } = &mut *state;
        let endpoint = endpoints.get_mut(webhook_id)?;
        endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
        endpoint.progressed = Instant::now();
        match unreachable {
            Some(true) => endpoint.limit = (endpoint.limit / 2).max(1),
            Some(false) => endpoint.limit = (endpoint.limit + 1).min(self.max),
            None => {}
        }
        if unreachable.is_some() {
            let secs = took.as_secs_f64();
            endpoint.attempt_secs = if endpoint.attempt_secs == 0.0 {
                secs
            } else {
                0.8 * endpoint.attempt_secs + 0.2 * secs
            };
        }
        if endpoint.in_flight < endpoint.limit
            && let Some(next) = endpoint.parked.pop_front()
        {
            endpoint.in_flight += 1;
            *parked -= 1;
            if *parked == self.low_water {
                // Wake whoever waits for room once an eighth of the space is free, not on every
                // freed place: a wake-up per delivery costs more than the wait saves.
                self.room.notify_all();
            }
            return Some(next);
        }
        if endpoint.in_flight == 0 && endpoint.parked.is_empty() && endpoint.limit == self.max {
            endpoints.remove(webhook_id);
        }
        None
    }

    /// Deliveries parked, all webhooks together.
    pub fn parked(&self) -> usize {
        self.state.lock().parked
    }

    /// Attempts in flight, all webhooks together.
    pub fn in_flight(&self) -> usize {
        self.state
            .lock()
            .endpoints
            .values()
            .map(|e| e.in_flight)
            .sum()
    }
}

/// Everything a delivery thread needs. Shared by all of them.
pub struct Context {
    /// The HTTP client (one per process; its connection pool is shared).
    pub agent: ureq::Agent,
    /// The current webhooks.
    pub registry: Arc<Registry>,
    /// Redis, for the rare writes to a webhook (410, failure counts).
    pub redis: Arc<RedisPool>,
    /// Per-webhook admission.
    pub gate: EndpointGate,
    /// Where retries go.
    pub scheduler: SchedulerHandle,
    /// Process counters.
    pub counters: Arc<Counters>,
    /// Cap on `Retry-After`.
    pub max_retry_after: Duration,
    /// Where attempt records go.
    pub recorder: Recorder,
    /// Durable delivery state.
    pub durable: Durable,
    /// Batches the forgetting of delivered ids.
    pub completer: super::recovery::Completer,
    /// Final failures in a row that disconnect a webhook.
    pub disconnect_after: u64,
    /// Set when the service stops: no new attempt starts, deliveries are handed back.
    pub draining: crate::app::Shutdown,
}

/// Starts `threads` threads named `{name}-{i}` reading `rx`, and running the [`Job`]s of `jobs`,
/// if any, between deliveries (test attempts). A thread ends once `rx` is closed and empty,
/// whatever `jobs` holds.
pub fn spawn(
    name: &str,
    threads: usize,
    rx: Receiver<Delivery>,
    jobs: Option<Receiver<Job>>,
    ctx: Arc<Context>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads)
        .map(|i| {
            let rx = rx.clone();
            let jobs = jobs.clone();
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || match jobs {
                    None => rx.iter().for_each(|delivery| deliver(&ctx, delivery)),
                    Some(jobs) => work(&rx, jobs, &ctx),
                })
        })
        .collect()
}

/// Reads deliveries and jobs until `rx` closes.
fn work(rx: &Receiver<Delivery>, mut jobs: Receiver<Job>, ctx: &Context) {
    loop {
        crossbeam_channel::select! {
            recv(rx) -> delivery => match delivery {
                Ok(delivery) => deliver(ctx, delivery),
                Err(_) => {
                    // Stopping: jobs not started are dropped, which tells whoever waits.
                    jobs.try_iter().for_each(drop);
                    return;
                }
            },
            recv(jobs) -> job => match job {
                Ok(job) => {
                    if catch_unwind(AssertUnwindSafe(|| job(ctx))).is_err() {
                        error!("a job on a delivery thread panicked");
                    }
                }
                // Nobody can send jobs any more: deliveries only from now on.
                Err(_) => jobs = crossbeam_channel::never(),
            },
        }
    }
}

fn deliver(ctx: &Context, delivery: Delivery) {
    match ctx.gate.admit_within(delivery, PARK_WAIT) {
        Admission::Run(d) => run_admitted(ctx, d),
        Admission::Parked => {}
        Admission::Overflow(d, wait) => {
            bump(&ctx.counters.deliveries_spilled);
            hand_back(ctx, d, wait)
        }
    }
}

/// Runs an admitted delivery, then whatever the gate hands back for the same webhook.
fn run_admitted(ctx: &Context, delivery: Delivery) {
    let mut next = Some(delivery);
    while let Some(delivery) = next {
        let webhook_id = delivery.webhook_id.clone();
        if ctx.draining.is_set() {
            hand_back(ctx, delivery, Duration::ZERO);
            next = ctx.gate.release(&webhook_id, None, Duration::ZERO);
            continue;
        }
        let event_id = delivery.event_id.clone();
        let started = Instant::now();
        let unreachable = match catch_unwind(AssertUnwindSafe(|| attempt_once(ctx, delivery))) {
            Ok(unreachable) => unreachable,
            Err(_) => {
                error!(
                    "delivery of event {event_id} to webhook {webhook_id} panicked; it is dropped"
                );
                bump(&ctx.counters.events_failed);
                None
            }
        };
        next = ctx
            .gate
            .release(&webhook_id, unreachable, started.elapsed());
    }
}

/// Makes one attempt and acts on the decision. Returns whether the endpoint looked unreachable,
/// or `None` if no attempt was made.
fn attempt_once(ctx: &Context, mut delivery: Delivery) -> Option<bool> {
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
        return None;
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
        return None;
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
        return None;
    }
    delivery.attempts += 1;
    let outcome = attempt::send(&ctx.agent, webhook, &delivery);
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
            crate::warn_limited!(
                1000,
                "event {} to webhook {} failed after {} attempts: {}",
                delivery.event_id,
                webhook.id,
                delivery.attempts,
                outcome.error.as_deref().unwrap_or("unknown error")
            );
            bump(&ctx.counters.deliveries_failed);
            let last_error = outcome.error.as_deref().unwrap_or("unknown error");
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
    Some(outcome.class.is_unreachable())
}

/// The history record of one attempt.
pub fn record(
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
        success: outcome.class == retry::OutcomeClass::Success,
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
/// stands, or a hand-back.
pub fn hand_back(ctx: &Context, delivery: Delivery, delay: Duration) {
    let due = crate::time::now_ms() + delay.as_millis() as u64 + 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn delivery(webhook: &str, n: u32) -> Delivery {
        Delivery {
            webhook_id: Arc::from(webhook),
            event_id: format!("e{n}"),
            event_type: Arc::from("job.completed"),
            kind: EventKind::JobCompleted,
            body: Arc::from(Vec::new()),
            attempts: 0,
            created_ms: 0,
        }
    }

    #[test]
    fn an_endpoint_holds_at_most_its_limit_and_shrinks_when_unreachable() {
        let gate = EndpointGate::new(2, 100);
        let id: Arc<str> = Arc::from("slow");
        assert!(matches!(gate.admit(delivery("slow", 1)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("slow", 2)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("slow", 3)), Admission::Parked));
        // Another webhook is not affected.
        assert!(matches!(gate.admit(delivery("fast", 1)), Admission::Run(_)));
        // A timeout halves the limit to 1: with one still in flight, nothing more runs.
        assert!(gate.release(&id, Some(true), Duration::ZERO).is_none());
        // The last in flight ends: the parked one runs, in order.
        let next = gate
            .release(&id, Some(true), Duration::ZERO)
            .map(|d| d.event_id);
        assert_eq!(next.as_deref(), Some("e3"));
        assert_eq!(gate.parked(), 0);
        // Successes grow the limit back.
        assert!(gate.release(&id, Some(false), Duration::ZERO).is_none());
        assert!(matches!(gate.admit(delivery("slow", 4)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("slow", 5)), Admission::Run(_)));
    }

    #[test]
    fn parking_is_bounded_across_all_webhooks() {
        let gate = EndpointGate::new(1, 2);
        assert!(matches!(gate.admit(delivery("a", 1)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("a", 2)), Admission::Parked));
        assert!(matches!(gate.admit(delivery("b", 1)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("b", 2)), Admission::Parked));
        // Two parked in all: a third waits elsewhere, whichever webhook it is for.
        assert!(matches!(gate.admit(delivery("c", 2)), Admission::Run(_)));
        assert!(matches!(
            gate.admit(delivery("c", 3)),
            Admission::Overflow(..)
        ));
        assert_eq!(gate.parked(), 2);
        // A parked one runs: there is room again.
        let next = gate.release(&Arc::from("a"), Some(false), Duration::ZERO);
        assert_eq!(next.map(|d| d.event_id).as_deref(), Some("e2"));
        assert_eq!(gate.parked(), 1);
        assert!(matches!(gate.admit(delivery("c", 3)), Admission::Parked));
    }

    #[test]
    fn a_full_parking_space_is_waited_for_briefly() {
        let gate = Arc::new(EndpointGate::new(1, 2));
        let a: Arc<str> = Arc::from("a");
        assert!(matches!(gate.admit(delivery("a", 1)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("a", 2)), Admission::Parked));
        // An attempt took 1 ms: the webhook is quick and may fill the space.
        let next = gate.release(&a, Some(false), Duration::from_millis(1));
        assert_eq!(next.map(|d| d.event_id).as_deref(), Some("e2"));
        assert!(matches!(gate.admit(delivery("a", 3)), Admission::Parked));
        assert!(matches!(gate.admit(delivery("a", 4)), Admission::Parked));
        // Full, and nothing frees it: the wait ends and the delivery overflows.
        let started = Instant::now();
        assert!(matches!(
            gate.admit_within(delivery("a", 5), Duration::from_millis(50)),
            Admission::Overflow(..)
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Full, and an attempt ends meanwhile: the waiting delivery takes the freed place.
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.admit_within(delivery("a", 6), Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        let next = gate.release(&a, Some(false), Duration::from_millis(1));
        assert_eq!(next.map(|d| d.event_id).as_deref(), Some("e3"));
        let admitted = waiter.join().map_err(|_| "the waiter panicked");
        assert!(matches!(admitted, Ok(Admission::Parked)), "{admitted:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_webhook_whose_attempts_never_end_has_its_overflow_wait_long() {
        let gate = EndpointGate::new(4, 4000);
        for n in 1..=4 {
            assert!(matches!(gate.admit(delivery("hung", n)), Admission::Run(_)));
        }
        // No attempt has ended yet: it is not known to be quick, so it parks a quarter.
        for n in 5..1005 {
            assert!(matches!(gate.admit(delivery("hung", n)), Admission::Parked));
        }
        std::thread::sleep(Duration::from_millis(100));
        // Nothing ended for 100 ms: 1,000 parked, 4 at a time, take at least 25 s.
        match gate.admit(delivery("hung", 1005)) {
            Admission::Overflow(_, wait) => {
                assert!(wait >= Duration::from_secs(20), "{wait:?}")
            }
            other => panic!("expected an overflow, got {other:?}"),
        }
    }

    #[test]
    fn one_webhook_parks_a_share_and_its_overflow_waits_for_its_backlog() {
        let gate = EndpointGate::new(4, 8);
        let hung: Arc<str> = Arc::from("hung");
        assert!(matches!(gate.admit(delivery("hung", 1)), Admission::Run(_)));
        // Its attempts take 10 s (a timeout): the limit halves to 2.
        assert!(
            gate.release(&hung, Some(true), Duration::from_secs(10))
                .is_none()
        );
        assert!(matches!(gate.admit(delivery("hung", 2)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("hung", 3)), Admission::Run(_)));
        assert!(matches!(gate.admit(delivery("hung", 4)), Admission::Parked));
        assert!(matches!(gate.admit(delivery("hung", 5)), Admission::Parked));
        // Struggling, a quarter of the space is its share; the overflow waits for the two parked,
        // two at a time, 10 s each.
        match gate.admit(delivery("hung", 6)) {
            Admission::Overflow(_, wait) => assert_eq!(wait, Duration::from_secs(10)),
            other => panic!("expected an overflow, got {other:?}"),
        }
        // Another webhook still parks.
        for n in 1..=4 {
            assert!(matches!(gate.admit(delivery("ok", n)), Admission::Run(_)));
        }
        assert!(matches!(gate.admit(delivery("ok", 5)), Admission::Parked));
    }
}
