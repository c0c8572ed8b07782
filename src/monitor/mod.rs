//! Observability: in-process counters of what intake and delivery did.
//!
//! Counters are plain atomics, bumped on the hot path without locks; readers (the API) take a
//! consistent-enough snapshot. Per-source counts use a small map, bounded by the fixed set of
//! channels we read.

pub mod history;
pub mod metrics;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::delivery::retry::OutcomeClass;

/// The outcome classes, in label order.
pub const OUTCOMES: [OutcomeClass; 8] = [
    OutcomeClass::Success,
    OutcomeClass::Redirect,
    OutcomeClass::ClientError,
    OutcomeClass::ServerError,
    OutcomeClass::Timeout,
    OutcomeClass::Connect,
    OutcomeClass::Dns,
    OutcomeClass::SsrfBlocked,
];

/// Counters of the whole process.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received from Redis (event channels only).
    pub events_received: AtomicU64,
    /// Messages that parsed into at least one event.
    pub events_processed: AtomicU64,
    /// Events that reached no webhook, were duplicates, or describe nothing deliverable.
    pub events_skipped: AtomicU64,
    /// Messages that could not be parsed.
    pub events_malformed: AtomicU64,
    /// Events whose handling failed inside the service.
    pub events_failed: AtomicU64,
    /// Events suppressed as duplicates.
    pub events_duplicate: AtomicU64,
    /// Events another instance claimed first.
    pub events_claimed_elsewhere: AtomicU64,
    /// Events whose deliveries could not be recorded in Redis (delivered from memory).
    pub events_unrecorded: AtomicU64,
    /// Deliveries that waited in Redis because the in-memory queue or parking space was full.
    pub deliveries_spilled: AtomicU64,
    /// Deliveries created (one per event and webhook).
    pub deliveries_created: AtomicU64,
    /// Progress deliveries superseded by a later one within the throttle period.
    pub deliveries_throttled: AtomicU64,
    /// Deliveries that succeeded.
    pub deliveries_succeeded: AtomicU64,
    /// Deliveries that used up their attempts.
    pub deliveries_failed: AtomicU64,
    /// Deliveries dropped because their webhook was deleted or deactivated.
    pub deliveries_dropped: AtomicU64,
    /// History records not written because the recorder was too far behind.
    pub records_dropped: AtomicU64,
    /// Attempts by outcome class (index as in [`OUTCOMES`]).
    attempts: [AtomicU64; 8],
    /// Sum of attempt durations, in microseconds.
    pub attempt_micros: AtomicU64,
    /// Whether the intake subscriber is connected to Redis.
    pub redis_connected: AtomicBool,
    /// Malformed messages per source.
    malformed_by_source: Mutex<BTreeMap<String, u64>>,
    /// Events received per (type, source).
    /// Events by source, then type (looked up by `&str`: no allocation per event).
    events_by_source: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    /// Attempt durations per webhook.
    pub durations: metrics::Histogram,
}

impl Counters {
    /// Counts one attempt.
    pub fn attempt(&self, class: OutcomeClass, micros: u64) {
        if let Some(i) = OUTCOMES.iter().position(|c| *c == class) {
            self.attempts[i].fetch_add(1, Relaxed);
        }
        self.attempt_micros.fetch_add(micros, Relaxed);
    }

    /// Attempts of one class so far.
    pub fn attempts(&self, class: OutcomeClass) -> u64 {
        OUTCOMES
            .iter()
            .position(|c| *c == class)
            .map(|i| self.attempts[i].load(Relaxed))
            .unwrap_or(0)
    }

    /// Counts a malformed message from `source`.
    pub fn malformed(&self, source: &str) {
        self.events_malformed.fetch_add(1, Relaxed);
        *self
            .malformed_by_source
            .lock()
            .entry(source.to_string())
            .or_insert(0) += 1;
    }

    /// Malformed messages per source so far.
    pub fn malformed_by_source(&self) -> BTreeMap<String, u64> {
        self.malformed_by_source.lock().clone()
    }

    /// Counts one event of `kind` from `source`.
    pub fn event(&self, kind: &'static str, source: &str) {
        let mut sources = self.events_by_source.lock();
        let kinds = match sources.get_mut(source) {
            Some(kinds) => kinds,
            None => sources.entry(source.to_string()).or_default(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }

    /// Events per (type, source) so far.
    pub fn events_by_type(&self) -> BTreeMap<(&'static str, String), u64> {
        let sources = self.events_by_source.lock();
        sources
            .iter()
            .flat_map(|(source, kinds)| {
                kinds
                    .iter()
                    .map(move |(kind, n)| ((*kind, source.clone()), *n))
            })
            .collect()
    }
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}
