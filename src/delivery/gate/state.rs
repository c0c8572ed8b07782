//! The gate's state: endpoints, free seats, the slow queue and the attempts in flight, and the
//! decisions made on it. Everything here runs under the gate's lock; nothing here blocks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::{Class, Endpoint};
use super::{
    FORGET_IDLE, GateConfig, MAX_OVERFLOW_DELAY, MIN_OVERFLOW_DELAY, Next, Outcome, Seat, Ticket,
    index,
};
use crate::delivery::Delivery;

#[derive(Debug)]
struct Running {
    endpoint: Arc<str>,
    seat: Seat,
    started: Instant,
    /// An unknown endpoint's first attempt on a first or retry seat.
    probe: bool,
}

#[derive(Debug)]
pub(super) struct State {
    endpoints: HashMap<Arc<str>, Endpoint>,
    /// Free seats: first, retry, slow.
    free: [usize; 3],
    /// Endpoints with parked work for slow seats, served in turn.
    slow_queue: VecDeque<Arc<str>>,
    /// Attempts in flight, by ticket (a slab: freed slots are reused).
    running: Vec<Option<Running>>,
    free_slots: Vec<usize>,
    /// Probes on first or retry seats.
    probes: usize,
    parked: usize,
    /// Parked for endpoints not known to be quick.
    parked_unproven: usize,
    last_forget: Instant,
}

pub(super) enum Admitted {
    /// Run; `true` when the caller's seat was freed (the attempt took a slow seat instead).
    Run(Ticket, Delivery, bool),
    /// Parked; `true` when it waits for a slow seat.
    Parked { slow_work: bool },
    /// The parking space is full.
    Full(Delivery),
    /// The endpoint has parked its share.
    Overflow(Delivery),
}

impl State {
    pub(super) fn new(config: &GateConfig) -> State {
        State {
            endpoints: HashMap::new(),
            free: [config.first, config.retry, config.slow],
            slow_queue: VecDeque::new(),
            running: Vec::new(),
            free_slots: Vec::new(),
            probes: 0,
            parked: 0,
            parked_unproven: 0,
            last_forget: Instant::now(),
        }
    }

    /// Deliveries parked.
    pub(super) fn parked(&self) -> usize {
        self.parked
    }

    /// Attempts in flight, on `seat` or on any.
    pub(super) fn in_flight(&self, seat: Option<Seat>) -> usize {
        self.running
            .iter()
            .flatten()
            .filter(|r| seat.is_none_or(|s| r.seat == s))
            .count()
    }

    /// Whether a first-attempt or retry seat is free.
    pub(super) fn free_reading_seat(&self) -> bool {
        self.free[0] + self.free[1] > 0
    }

    /// Whether slow work waits with a slow seat free for it.
    pub(super) fn slow_work_waits(&self) -> bool {
        self.free[2] > 0 && !self.slow_queue.is_empty()
    }

    pub(super) fn give_back(&mut self, seat: Seat) {
        self.free[index(seat)] += 1;
    }

    /// Runs `change` on `id`'s endpoint, keeping the count of deliveries parked for endpoints
    /// not known to be quick exact when the change moves the endpoint in or out of that class.
    fn with<R>(&mut self, id: &Arc<str>, change: impl FnOnce(&mut Endpoint) -> R) -> Option<R> {
        let endpoint = self.endpoints.get_mut(id)?;
        let was_quick = endpoint.class == Class::Quick;
        let result = change(endpoint);
        let parked = endpoint.parked.len();
        match (was_quick, endpoint.class == Class::Quick) {
            (true, false) => self.parked_unproven += parked,
            (false, true) => self.parked_unproven -= parked,
            _ => {}
        }
        Some(result)
    }

    pub(super) fn take_seat(&mut self) -> Option<Next> {
        if self.free[2] > 0
            && let Some((id, delivery)) = self.next_slow(None)
        {
            self.free[2] -= 1;
            let ticket = self.start(&id, Seat::Slow, false);
            return Some(Next::Run(ticket, delivery));
        }
        for seat in [Seat::First, Seat::Retry] {
            if self.free[index(seat)] > 0 {
                self.free[index(seat)] -= 1;
                return Some(Next::Read(seat));
            }
        }
        None
    }

    pub(super) fn admit(
        &mut self,
        config: &GateConfig,
        delivery: Delivery,
        seat: Seat,
    ) -> Admitted {
        let now = Instant::now();
        let free_slow = seat == Seat::Slow || self.free[2] > 0;
        let may_probe_here = seat != Seat::Slow && self.probes < config.first / 2;
        // One lookup on this path (every delivery comes through it): fields are borrowed apart.
        let endpoint = self
            .endpoints
            .entry(delivery.webhook_id.clone())
            .or_insert_with(|| Endpoint::new(config, now));
        let was_quick = endpoint.class == Class::Quick;
        endpoint.notice_stall(config, now);
        if was_quick && endpoint.class != Class::Quick {
            self.parked_unproven += endpoint.parked.len();
        }
        // Where it would run, if it may run now: probes and slow endpoints on a slow seat.
        let room_to_run = endpoint.in_flight < endpoint.limit;
        let class = endpoint.class;
        let run_on = match class {
            Class::Quick if room_to_run => seat,
            Class::Unknown if endpoint.in_flight == 0 && free_slow => Seat::Slow,
            Class::Unknown if endpoint.in_flight == 0 && may_probe_here => seat,
            Class::Slow if room_to_run && free_slow => Seat::Slow,
            _ => return self.park(config, delivery),
        };
        // What was parked first runs first; this one takes its place at the back.
        let delivery = match endpoint.parked.pop_front() {
            Some(first) => {
                endpoint.parked.push_back(delivery);
                first
            }
            None => delivery,
        };
        let freed = run_on != seat;
        if freed {
            self.free[index(seat)] += 1;
            self.free[index(run_on)] -= 1;
        }
        let probe = class == Class::Unknown && run_on != Seat::Slow;
        if probe {
            self.probes += 1;
        }
        let ticket = start(
            &mut self.running,
            &mut self.free_slots,
            &delivery.webhook_id,
            endpoint,
            run_on,
            probe,
        );
        Admitted::Run(ticket, delivery, freed)
    }

    /// Parks `delivery` if there is room.
    fn park(&mut self, config: &GateConfig, delivery: Delivery) -> Admitted {
        let id = delivery.webhook_id.clone();
        let Some(endpoint) = self.endpoints.get_mut(&id) else {
            return Admitted::Overflow(delivery);
        };
        let quick = endpoint.class == Class::Quick;
        if !quick
            && (endpoint.parked.len() >= (config.max_parked / 4).max(1)
                || self.parked_unproven >= (config.max_parked / 2).max(1))
        {
            return Admitted::Overflow(delivery);
        }
        if self.parked >= config.max_parked {
            return if quick {
                Admitted::Full(delivery)
            } else {
                Admitted::Overflow(delivery)
            };
        }
        endpoint.parked.push_back(delivery);
        self.parked += 1;
        if !quick {
            self.parked_unproven += 1;
        }
        let slow_work = self.queue_if_slow(&id);
        Admitted::Parked { slow_work }
    }

    /// Puts `id` in the slow queue if its parked work must run on a slow seat and could run now.
    fn queue_if_slow(&mut self, id: &Arc<str>) -> bool {
        let Some(endpoint) = self.endpoints.get_mut(id) else {
            return false;
        };
        let runnable = !endpoint.parked.is_empty()
            && match endpoint.class {
                Class::Unknown => endpoint.in_flight == 0,
                Class::Slow => endpoint.in_flight < endpoint.limit,
                Class::Quick => false,
            };
        if runnable && !endpoint.queued {
            endpoint.queued = true;
            self.slow_queue.push_back(id.clone());
        }
        runnable
    }

    /// The next delivery for a slow seat: the endpoint whose turn it is, which then goes to the
    /// back of the queue if it can run more.
    fn next_slow(&mut self, after: Option<&Arc<str>>) -> Option<(Arc<str>, Delivery)> {
        // The endpoint that just held the seat goes behind the others waiting.
        if self.slow_queue.len() > 1 && self.slow_queue.front() == after {
            self.slow_queue.rotate_left(1);
        }
        while let Some(id) = self.slow_queue.pop_front() {
            let Some(endpoint) = self.endpoints.get_mut(&id) else {
                continue;
            };
            endpoint.queued = false;
            let room = match endpoint.class {
                Class::Unknown => usize::from(endpoint.in_flight == 0),
                _ => endpoint.limit.saturating_sub(endpoint.in_flight),
            };
            if room == 0 {
                continue;
            }
            let Some(delivery) = endpoint.parked.pop_front() else {
                continue;
            };
            let quick = endpoint.class == Class::Quick;
            if room > 1 && !endpoint.parked.is_empty() && endpoint.class == Class::Slow {
                endpoint.queued = true;
                self.slow_queue.push_back(id.clone());
            }
            self.unpark(quick);
            return Some((id, delivery));
        }
        None
    }

    fn unpark(&mut self, quick: bool) {
        self.parked -= 1;
        if !quick {
            self.parked_unproven -= 1;
        }
    }

    /// Records an attempt starting for `id` on `seat` (the seat is already taken).
    fn start(&mut self, id: &Arc<str>, seat: Seat, probe: bool) -> Ticket {
        if probe {
            self.probes += 1;
        }
        let endpoint = self
            .endpoints
            .entry(id.clone())
            .or_insert_with(|| Endpoint::new_at(Instant::now()));
        start(
            &mut self.running,
            &mut self.free_slots,
            id,
            endpoint,
            seat,
            probe,
        )
    }

    pub(super) fn release(
        &mut self,
        config: &GateConfig,
        ticket: Ticket,
        outcome: Option<Outcome>,
        then: Option<Delivery>,
    ) -> Next {
        let Some(running) = self.running.get_mut(ticket.0).and_then(Option::take) else {
            return Next::Seatless;
        };
        self.free_slots.push(ticket.0);
        if running.probe {
            self.probes -= 1;
        }
        let seat = running.seat;
        let id = running.endpoint;
        // One lookup on the common path (a quick endpoint): fields are borrowed apart.
        let endpoint = self
            .endpoints
            .entry(id.clone())
            .or_insert_with(|| Endpoint::new(config, Instant::now()));
        let was_quick = endpoint.class == Class::Quick;
        endpoint.end(config, outcome);
        let quick = endpoint.class == Class::Quick;
        match (was_quick, quick) {
            (true, false) => self.parked_unproven += endpoint.parked.len(),
            (false, true) => self.parked_unproven -= endpoint.parked.len(),
            _ => {}
        }
        if let Some(then) = then {
            // Already in memory (it waited in its line): parked regardless of the bounds.
            endpoint.parked.push_back(then);
            self.parked += 1;
            if !quick {
                self.parked_unproven += 1;
            }
        }
        // A quick endpoint's parked work is picked up only by threads ending its attempts: the
        // next runs here at once.
        if quick
            && endpoint.in_flight < endpoint.limit
            && let Some(delivery) = endpoint.parked.pop_front()
        {
            self.parked -= 1;
            let ticket = start(
                &mut self.running,
                &mut self.free_slots,
                &id,
                endpoint,
                seat,
                false,
            );
            return Next::Run(ticket, delivery);
        }
        self.queue_if_slow(&id);
        if seat == Seat::Slow {
            // In turn: the next endpoint waiting for a slow seat (this one again only if no
            // other waits).
            if let Some((next_id, delivery)) = self.next_slow(Some(&id)) {
                return Next::Run(self.start(&next_id, Seat::Slow, false), delivery);
            }
            self.free[2] += 1;
            return Next::Seatless;
        }
        Next::Read(seat)
    }

    pub(super) fn watch(&mut self, config: &GateConfig, now: Instant) -> usize {
        let mut freed = 0;
        let mut stalled: Vec<Arc<str>> = Vec::new();
        for running in self.running.iter_mut().flatten() {
            if now.duration_since(running.started) < config.slow_after {
                continue;
            }
            stalled.push(running.endpoint.clone());
            if running.seat != Seat::Slow && self.free[2] > 0 {
                self.free[2] -= 1;
                self.free[index(running.seat)] += 1;
                running.seat = Seat::Slow;
                if running.probe {
                    running.probe = false;
                    self.probes -= 1;
                }
                freed += 1;
            }
        }
        for id in stalled {
            self.with(&id, |endpoint| endpoint.notice_stall(config, now));
            self.queue_if_slow(&id);
        }
        if now.duration_since(self.last_forget) >= FORGET_IDLE / 10 {
            self.last_forget = now;
            self.endpoints.retain(|_, endpoint| {
                !(endpoint.is_idle() && now.duration_since(endpoint.progressed) >= FORGET_IDLE)
            });
        }
        freed
    }

    /// Whether a new delivery for `id` would overflow if it were offered now: its endpoint is
    /// not known to be quick, could not run it now (work is parked before it, or its attempts
    /// in flight leave no room) and has no room left to park; then how long it would wait.
    pub(super) fn overflowing(&mut self, config: &GateConfig, id: &Arc<str>) -> Option<Duration> {
        let endpoint = self.endpoints.get(id)?;
        // It could not run now either: work is parked before it, or its attempts in flight
        // leave no room (as `admit` decides, short of a free seat, which may come any moment).
        let no_room = match endpoint.class {
            Class::Quick => return None,
            Class::Unknown => endpoint.in_flight > 0,
            Class::Slow => endpoint.in_flight >= endpoint.limit,
        };
        let must_wait = no_room || !endpoint.parked.is_empty();
        if !must_wait {
            return None;
        }
        let full = endpoint.parked.len() >= (config.max_parked / 4).max(1)
            || self.parked_unproven >= (config.max_parked / 2).max(1)
            || self.parked >= config.max_parked;
        full.then(|| self.overflow_wait(config, id))
    }

    /// How long an overflowing delivery for `id` waits before it is offered again: the time its
    /// endpoint needs for what is parked for it and for this one, and, for one waiting for a
    /// slow seat, at least until a slow seat is expected to free ([`State::slow_seat_frees_in`]:
    /// hanging attempts hold them to the timeout, and its backlog is not offered again and again
    /// in vain meanwhile; quick ones free them: it comes back soon). Each one sent back is due an
    /// attempt's time (over the endpoint's limit) after the one before, so a backlog in Redis
    /// comes back at the pace the endpoint can take it.
    pub(super) fn overflow_wait(&mut self, config: &GateConfig, id: &Arc<str>) -> Duration {
        let now = Instant::now();
        let Some(endpoint) = self.endpoints.get(id) else {
            return MIN_OVERFLOW_DELAY;
        };
        // How long an attempt takes here: the average of those that ended, or, while none has
        // ended for longer than that, at least that long.
        let stalled = if endpoint.in_flight > 0 {
            now.duration_since(endpoint.progressed).as_secs_f64()
        } else {
            0.0
        };
        let attempt_secs = endpoint.attempt_secs.max(stalled);
        let per_delivery = Duration::try_from_secs_f64(attempt_secs / endpoint.limit.max(1) as f64)
            .unwrap_or(MAX_OVERFLOW_DELAY);
        // What is parked, and this one.
        let mut wait = per_delivery.saturating_mul(endpoint.parked.len() as u32 + 1);
        if endpoint.in_flight == 0 && endpoint.class != Class::Quick && self.free[2] == 0 {
            wait = wait.max(self.slow_seat_frees_in(config, now));
        }
        let wait = wait.clamp(MIN_OVERFLOW_DELAY, MAX_OVERFLOW_DELAY);
        let due = (now + wait)
            .max(endpoint.overflow_until + per_delivery)
            .min(now + MAX_OVERFLOW_DELAY);
        if let Some(endpoint) = self.endpoints.get_mut(id) {
            endpoint.overflow_until = due;
        }
        due - now
    }

    /// How long until the first slow seat is expected to free: an attempt on one is expected to
    /// take its endpoint's average while it is within it; one that has run past `slow_after`
    /// (and past its average, if any) has stalled, and is expected to run to the timeout; a
    /// young attempt of an endpoint without an average may end any moment. And at least as long
    /// as every slow seat has been busy.
    fn slow_seat_frees_in(&self, config: &GateConfig, now: Instant) -> Duration {
        let slow = self
            .running
            .iter()
            .flatten()
            .filter(|r| r.seat == Seat::Slow);
        let busy = slow
            .clone()
            .map(|r| now.duration_since(r.started))
            .min()
            .unwrap_or_default();
        let frees_in = slow
            .map(|r| {
                let ran = now.duration_since(r.started);
                let average = self
                    .endpoints
                    .get(&r.endpoint)
                    .and_then(|e| Duration::try_from_secs_f64(e.attempt_secs).ok())
                    .unwrap_or_default();
                if ran < average {
                    average - ran
                } else if ran < config.slow_after {
                    Duration::ZERO
                } else {
                    config.attempt_timeout.saturating_sub(ran)
                }
            })
            .min()
            .unwrap_or_default();
        busy.max(frees_in)
    }
}

/// Records an attempt of `endpoint` (whose id is `id`) starting on `seat` (already taken), in
/// the slab of attempts in flight; a free function so the caller can hold the endpoint and the
/// slab, two fields of the state, at once.
fn start(
    running: &mut Vec<Option<Running>>,
    free_slots: &mut Vec<usize>,
    id: &Arc<str>,
    endpoint: &mut Endpoint,
    seat: Seat,
    probe: bool,
) -> Ticket {
    let now = Instant::now();
    if endpoint.in_flight == 0 {
        endpoint.progressed = now;
    }
    endpoint.in_flight += 1;
    let attempt = Running {
        endpoint: id.clone(),
        seat,
        started: now,
        probe,
    };
    match free_slots.pop() {
        Some(slot) => {
            running[slot] = Some(attempt);
            Ticket(slot)
        }
        None => {
            running.push(Some(attempt));
            Ticket(running.len() - 1)
        }
    }
}
