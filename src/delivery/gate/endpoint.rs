//! One endpoint as the gate knows it: its class (unknown, quick or slow), its limit and attempts
//! in flight, what is parked for it, and how long its attempts take.

use std::collections::VecDeque;
use std::time::Instant;

use super::{GateConfig, Outcome};
use crate::delivery::Delivery;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Unknown,
    Quick,
    Slow,
}

#[derive(Debug)]
pub(super) struct Endpoint {
    pub(super) class: Class,
    pub(super) in_flight: usize,
    pub(super) limit: usize,
    pub(super) parked: VecDeque<Delivery>,
    /// Moving average of its attempts' durations, in seconds (0: none ended yet).
    pub(super) attempt_secs: f64,
    /// When its attempts last made progress: one ended, or the first of a busy spell began.
    pub(super) progressed: Instant,
    /// Whether its id is in `slow_queue`.
    pub(super) queued: bool,
    /// When the last of its deliveries sent back to Redis is due: the next one sent back is due
    /// an attempt's time after it (at the endpoint's pace), so a backlog comes back spread out.
    pub(super) overflow_until: Instant,
}

impl Endpoint {
    /// An endpoint first seen when an attempt for it starts (it was forgotten meanwhile): its
    /// limit is set on its first `end`.
    pub(super) fn new_at(now: Instant) -> Endpoint {
        Endpoint::with_limit(1, now)
    }

    /// A new endpoint, seen when a delivery for it is first offered.
    pub(super) fn new(config: &GateConfig, now: Instant) -> Endpoint {
        Endpoint::with_limit(config.max_per_endpoint, now)
    }

    fn with_limit(limit: usize, now: Instant) -> Endpoint {
        Endpoint {
            class: Class::Unknown,
            in_flight: 0,
            limit,
            parked: VecDeque::new(),
            attempt_secs: 0.0,
            progressed: now,
            queued: false,
            overflow_until: now,
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.parked.is_empty() && !self.queued
    }

    /// An attempt in flight for `slow_after` with none ending meanwhile makes the endpoint slow.
    pub(super) fn notice_stall(&mut self, config: &GateConfig, now: Instant) {
        if self.in_flight > 0
            && self.class != Class::Slow
            && now.duration_since(self.progressed) >= config.slow_after
        {
            self.become_slow();
        }
    }

    fn become_slow(&mut self) {
        if self.class != Class::Slow {
            self.class = Class::Slow;
            // One attempt at a time, one more per answer.
            self.limit = 1;
        }
    }

    pub(super) fn end(&mut self, config: &GateConfig, outcome: Option<Outcome>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.progressed = Instant::now();
        let Some(Outcome { took, unreachable }) = outcome else {
            return;
        };
        let secs = took.as_secs_f64();
        self.attempt_secs = if self.attempt_secs == 0.0 {
            secs
        } else {
            0.8 * self.attempt_secs + 0.2 * secs
        };
        let slow_secs = config.slow_after.as_secs_f64();
        if secs >= slow_secs || self.attempt_secs >= slow_secs {
            self.become_slow();
        } else {
            self.class = Class::Quick;
        }
        self.limit = if unreachable {
            (self.limit / 2).max(1)
        } else {
            (self.limit + 1).min(config.max_per_endpoint)
        };
    }
}
