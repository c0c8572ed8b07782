//! The endpoint gate: which attempt runs on which thread, so that endpoints that hang, answer in
//! seconds, refuse or reset cannot take the threads healthy endpoints need (issue #11).
//!
//! # Seats
//!
//! The delivery threads are one fixed pool of `first + retry + slow` threads. A thread works only
//! while it holds a *seat*: one of `first` seats that take first attempts from the delivery queue,
//! `retry` seats that take retries from the retry queue, or `slow` seats for endpoints whose
//! attempts take long. Seats, not threads, are the budget:
//!
//! - an endpoint is *slow* once an attempt of it takes `slow_after` or longer, whether it ended
//!   (a success in 4 s counts, not only a timeout) or is still running; its attempts then run only
//!   on slow seats, one at a time at first, one more per answer (a hanging endpoint keeps one);
//! - an attempt on a first or retry seat that runs past `slow_after` moves to a slow seat while it
//!   runs (when one is free): its thread is stuck either way, but its seat goes to an idle
//!   thread, so the queues keep their full complement of readers;
//! - an endpoint not seen before is *unknown*: its first attempt (one at a time until one ends)
//!   runs on a slow seat when one is free, else on a first seat, at most `first / 2` of them, so
//!   endpoints known to answer quickly keep the rest even when many new endpoints hang at once;
//! - slow seats serve the slow endpoints in turn: a freed slow seat goes to the next endpoint
//!   waiting, not back to the one that just held it.
//!
//! So whatever some endpoints do, the first and retry seats are held by attempts that are quick,
//! by at most `first / 2` probes of new endpoints, or — when more endpoints turn slow at once than
//! there are slow seats — by attempts that started quick and then stalled.
//!
//! # Per-endpoint limits and parking
//!
//! A quick endpoint may have up to `max_per_endpoint` attempts in flight; the limit halves on a
//! timeout or connection failure and grows by one per answer. What cannot run yet is parked, in
//! order, without a thread. Parking is bounded: `max_parked` in all, a quarter of that per
//! endpoint not known to be quick, and half of it for all of those together, so a quick endpoint
//! always finds room. A delivery that finds no room goes back to Redis as due after the time its
//! endpoint's backlog should take (200 ms to 60 s) ([`Admission::Overflow`]); for an endpoint
//! waiting for a slow seat, at least as long as every slow seat has been busy. One endpoint's
//! deliveries sent back are due one attempt's time apart, so they come back at its pace. Intake
//! asks first ([`EndpointGate::overflowing`]) and records such a delivery straight into the due
//! set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Delivery;
use state::{Admitted, State};

mod endpoint;
mod state;

/// Shortest and longest wait of an overflowing delivery before it is offered to the gate again.
/// In between, the wait is the time the endpoint needs to work through what is parked for it,
/// so a slow or hung endpoint's backlog is not offered again and again in vain.
const MIN_OVERFLOW_DELAY: Duration = Duration::from_millis(200);
const MAX_OVERFLOW_DELAY: Duration = Duration::from_secs(60);
/// An endpoint idle this long is forgotten (it is unknown again when it comes back).
const FORGET_IDLE: Duration = Duration::from_secs(600);

/// The kinds of seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// Reads the first-attempt queue.
    First,
    /// Reads the retry queue.
    Retry,
    /// Runs attempts of slow endpoints.
    Slow,
}

/// The gate's sizes.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// First-attempt seats.
    pub first: usize,
    /// Retry seats.
    pub retry: usize,
    /// Slow seats.
    pub slow: usize,
    /// Most attempts in flight for one endpoint.
    pub max_per_endpoint: usize,
    /// An attempt this long makes its endpoint slow.
    pub slow_after: Duration,
    /// Most deliveries parked, all endpoints together.
    pub max_parked: usize,
    /// The longest an attempt can take (the delivery timeout).
    pub attempt_timeout: Duration,
}

impl GateConfig {
    /// Threads the pool needs: one per seat.
    pub(crate) fn threads(&self) -> usize {
        self.first + self.retry + self.slow
    }
}

/// An admitted attempt: it holds a seat until [`EndpointGate::release`].
#[derive(Debug)]
#[must_use = "an admitted attempt holds a seat until it is released"]
pub struct Ticket(usize);

/// What the gate says to a delivery.
#[derive(Debug)]
pub enum Admission {
    /// Run it now on the ticket's seat; the caller's seat went into the ticket.
    Run(Ticket, Delivery),
    /// Parked; the caller keeps its seat.
    Parked,
    /// No room: the caller keeps its seat and puts the delivery back in Redis, due after this wait.
    Overflow(Delivery, Duration),
}

/// What a thread does next.
#[derive(Debug)]
pub enum Next {
    /// Make this attempt.
    Run(Ticket, Delivery),
    /// Read this seat's queue (the thread holds the seat).
    Read(Seat),
    /// Find a seat ([`EndpointGate::take_seat`]).
    Seatless,
}

/// How an attempt went, for the endpoint's limit and class.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// From the start of the attempt to its end.
    pub took: Duration,
    /// A timeout or connection failure.
    pub unreachable: bool,
}

/// Seats, per-endpoint limits and parking. Shared by every delivery thread.
#[derive(Debug)]
pub struct EndpointGate {
    config: GateConfig,
    state: Mutex<State>,
    /// Seatless threads wait here for a seat (or slow work with a free slow seat).
    seats: Condvar,
    /// Signalled when the parking space, having been full, is down to `low_water`.
    room: Condvar,
    low_water: usize,
}

fn index(seat: Seat) -> usize {
    match seat {
        Seat::First => 0,
        Seat::Retry => 1,
        Seat::Slow => 2,
    }
}

impl EndpointGate {
    /// A gate with these sizes.
    pub fn new(mut config: GateConfig) -> EndpointGate {
        config.first = config.first.max(1);
        config.retry = config.retry.max(1);
        config.slow = config.slow.max(1);
        config.max_per_endpoint = config.max_per_endpoint.max(1);
        let low_water = config.max_parked.saturating_sub(config.max_parked / 8 + 1);
        EndpointGate {
            state: Mutex::new(State::new(&config)),
            config,
            seats: Condvar::new(),
            room: Condvar::new(),
            low_water,
        }
    }

    /// The sizes.
    pub(crate) fn config(&self) -> &GateConfig {
        &self.config
    }

    /// For a thread without a seat: waits (up to `wait`) for one. Returns slow work with its
    /// seat, or a queue's seat to read, or `None` after the wait.
    pub fn take_seat(&self, wait: Duration) -> Option<Next> {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock();
        loop {
            if let Some(next) = state.take_seat() {
                // Pass the word on if there is more for another seatless thread.
                if state.free_reading_seat() || state.slow_work_waits() {
                    self.seats.notify_one();
                }
                return Some(next);
            }
            if self.seats.wait_until(&mut state, deadline).timed_out() {
                return None;
            }
        }
    }

    /// Gives a seat back (a thread stops).
    pub(crate) fn give_back(&self, seat: Seat) {
        self.state.lock().give_back(seat);
        self.seats.notify_one();
    }

    /// Asks to run `delivery` on the caller's `seat`. When it would be parked but the parking
    /// space as a whole is full, waits up to `max_wait` for room first (room frees as fast as
    /// the endpoints work, and a delivery put back in Redis costs two round trips and a poll to
    /// come back).
    pub fn admit(&self, delivery: Delivery, seat: Seat, max_wait: Duration) -> Admission {
        let deadline = Instant::now() + max_wait;
        let mut state = self.state.lock();
        let mut delivery = delivery;
        loop {
            match state.admit(&self.config, delivery, seat) {
                Admitted::Run(ticket, d, freed) => {
                    if freed {
                        self.seats.notify_one();
                    }
                    return Admission::Run(ticket, d);
                }
                Admitted::Parked { slow_work } => {
                    if slow_work && state.slow_work_waits() {
                        self.seats.notify_one();
                    }
                    return Admission::Parked;
                }
                Admitted::Full(d) if Instant::now() < deadline => {
                    delivery = d;
                    self.room.wait_until(&mut state, deadline);
                }
                Admitted::Full(d) | Admitted::Overflow(d) => {
                    let wait = state.overflow_wait(&self.config, &d.webhook_id);
                    return Admission::Overflow(d, wait);
                }
            }
        }
    }

    /// For each of `webhook_ids`: `Some(wait)` if a delivery for it offered now would overflow
    /// ([`Admission::Overflow`] with this wait) without ever having a chance to run or park.
    /// Intake asks before recording an event's deliveries, so that one whose endpoint is
    /// backed up is recorded straight into the due set instead of being leased, queued, offered
    /// and handed back (a hung endpoint's backlog costs a write, not a trip through the pool).
    pub(crate) fn overflowing<'a>(
        &self,
        webhook_ids: impl IntoIterator<Item = &'a Arc<str>>,
    ) -> Vec<Option<Duration>> {
        let mut state = self.state.lock();
        webhook_ids
            .into_iter()
            .map(|id| state.overflowing(&self.config, id))
            .collect()
    }

    /// Ends an attempt. `outcome` is `None` when no attempt was made. `then` is a delivery for
    /// the same endpoint to place now (the next of a per-job line). Returns what the thread does
    /// next: another attempt, reading its seat's queue, or finding a seat.
    pub fn release(
        &self,
        ticket: Ticket,
        outcome: Option<Outcome>,
        then: Option<Delivery>,
    ) -> Next {
        let mut state = self.state.lock();
        let was_full = state.parked() > self.low_water;
        let next = state.release(&self.config, ticket, outcome, then);
        if was_full && state.parked() <= self.low_water {
            // Wake whoever waits for room once an eighth of the space is free, not on every
            // freed place: a wake-up per delivery costs more than the wait saves.
            self.room.notify_all();
        }
        if state.slow_work_waits() {
            self.seats.notify_one();
        }
        next
    }

    /// Moves attempts that have run `slow_after` on a first or retry seat to slow seats, marks
    /// endpoints whose attempts stalled as slow, and forgets long-idle endpoints. Called by the
    /// watcher every few tens of ms.
    pub(crate) fn watch(&self, now: Instant) {
        let mut state = self.state.lock();
        let freed = state.watch(&self.config, now);
        for _ in 0..freed {
            self.seats.notify_one();
        }
        if state.slow_work_waits() {
            self.seats.notify_one();
        }
    }

    /// Deliveries parked, all endpoints together.
    pub(crate) fn parked(&self) -> usize {
        self.state.lock().parked()
    }

    /// Attempts in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.lock().in_flight(None)
    }

    /// Attempts in flight on slow seats (for tests).
    #[cfg(test)]
    pub(crate) fn in_flight_slow(&self) -> usize {
        self.state.lock().in_flight(Some(Seat::Slow))
    }
}

#[cfg(test)]
mod tests;
