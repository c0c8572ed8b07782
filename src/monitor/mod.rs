//! Observability: in-process counters of what intake and delivery did, and the one table of
//! figures that `/health` and `/metrics` both show.
//!
//! Counters are plain atomics, bumped on the hot path without locks; readers (the API) take a
//! consistent-enough snapshot. Per-source counts use a small map, bounded by the fixed set of
//! channels we read. [`FIGURES`] lists every counter and gauge once, with its `/health` place,
//! its Prometheus family and its help text: a new counter is a field of [`Counters`] and a row
//! there (and a line in the README's Metrics section, which a test checks).

pub(crate) mod history;
pub(crate) mod metrics;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::outcome::OutcomeClass;

/// Counters of the whole process.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Messages received from Redis (event channels only).
    pub(crate) events_received: AtomicU64,
    /// Messages that parsed into at least one event.
    pub(crate) events_processed: AtomicU64,
    /// Events that reached no webhook, were duplicates, or describe nothing deliverable.
    pub(crate) events_skipped: AtomicU64,
    /// Messages that could not be parsed.
    pub(crate) events_malformed: AtomicU64,
    /// Events whose handling failed inside the service.
    pub(crate) events_failed: AtomicU64,
    /// Events suppressed as duplicates.
    pub(crate) events_duplicate: AtomicU64,
    /// Events another instance claimed first.
    pub(crate) events_claimed_elsewhere: AtomicU64,
    /// Events whose deliveries could not be recorded in Redis (delivered from memory).
    pub(crate) events_unrecorded: AtomicU64,
    /// Deliveries that waited in Redis because the in-memory queue or parking space was full.
    pub(crate) deliveries_spilled: AtomicU64,
    /// Deliveries recorded straight into Redis's due set because their endpoint was backed up.
    pub(crate) deliveries_deferred: AtomicU64,
    /// Deliveries created (one per event and webhook).
    pub(crate) deliveries_created: AtomicU64,
    /// Progress deliveries superseded by a later one within the throttle period.
    pub(crate) deliveries_throttled: AtomicU64,
    /// Deliveries that succeeded.
    pub(crate) deliveries_succeeded: AtomicU64,
    /// Deliveries that used up their attempts.
    pub(crate) deliveries_failed: AtomicU64,
    /// Deliveries dropped because their webhook was deleted or deactivated.
    pub(crate) deliveries_dropped: AtomicU64,
    /// History records not written because the recorder was too far behind.
    pub(crate) records_dropped: AtomicU64,
    /// Attempts by outcome class (index as in [`OutcomeClass::ALL`]).
    attempts: [AtomicU64; 8],
    /// Sum of attempt durations, in microseconds.
    pub(crate) attempt_micros: AtomicU64,
    /// Whether the intake subscriber is connected to Redis.
    pub(crate) redis_connected: AtomicBool,
    /// Malformed messages per source.
    malformed_by_source: Mutex<BTreeMap<String, u64>>,
    /// Events received per (type, source).
    /// Events by source, then type (looked up by `&str`: no allocation per event).
    events_by_source: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    /// Attempt durations per webhook.
    pub(crate) durations: metrics::Histogram,
}

impl Counters {
    /// Counts one attempt.
    pub(crate) fn attempt(&self, class: OutcomeClass, micros: u64) {
        if let Some(i) = OutcomeClass::ALL.iter().position(|c| *c == class) {
            self.attempts[i].fetch_add(1, Relaxed);
        }
        self.attempt_micros.fetch_add(micros, Relaxed);
    }

    /// Attempts of one class so far.
    pub(crate) fn attempts(&self, class: OutcomeClass) -> u64 {
        OutcomeClass::ALL
            .iter()
            .position(|c| *c == class)
            .map(|i| self.attempts[i].load(Relaxed))
            .unwrap_or(0)
    }

    /// Counts a malformed message from `source`.
    pub(crate) fn malformed(&self, source: &str) {
        self.events_malformed.fetch_add(1, Relaxed);
        *self
            .malformed_by_source
            .lock()
            .entry(source.to_string())
            .or_insert(0) += 1;
    }

    /// Malformed messages per source so far.
    pub(crate) fn malformed_by_source(&self) -> BTreeMap<String, u64> {
        self.malformed_by_source.lock().clone()
    }

    /// Counts one event of `kind` from `source`.
    pub(crate) fn event(&self, kind: &'static str, source: &str) {
        let mut sources = self.events_by_source.lock();
        let kinds = match sources.get_mut(source) {
            Some(kinds) => kinds,
            None => sources.entry(source.to_string()).or_default(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }

    /// Events per (type, source) so far.
    pub(crate) fn events_by_type(&self) -> BTreeMap<(&'static str, String), u64> {
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

/// Figures of delivery that are read when shown, not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Queue {
    /// Deliveries waiting for a delivery thread (queued, or parked behind a busy webhook).
    pub(crate) depth: u64,
    /// Attempts in flight.
    pub(crate) in_flight: u64,
    /// Deliveries waiting for their time: in `webhooks:due`, or in memory while Redis is away.
    pub(crate) retry_backlog: u64,
    /// How long the earliest of them has waited past its time (0 if none is late).
    pub(crate) oldest_pending_age_ms: u64,
    /// Dead letters kept.
    pub(crate) dead_letters: u64,
}

/// Gauges: what is true at the moment of reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    /// Delivery's figures.
    pub(crate) queue: Queue,
    /// Webhooks loaded.
    pub(crate) webhooks: u64,
    /// Webhooks currently disconnected.
    pub(crate) disconnected_webhooks: u64,
    /// Whether the intake subscriber is connected to Redis.
    pub(crate) redis_connected: bool,
}

/// Where `/health` shows a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// `events`: what intake did with messages.
    Events,
    /// `deliveries`: what became of deliveries.
    Deliveries,
    /// `queue`: where deliveries wait now.
    Queue,
    /// Only in `/metrics` (`/health` shows it in the original's own fields).
    MetricsOnly,
}

impl Group {
    /// The `/health` object of the group (the tests check the table against it).
    #[cfg(test)]
    pub(crate) fn key(self) -> &'static str {
        match self {
            Group::Events => "events",
            Group::Deliveries => "deliveries",
            Group::Queue => "queue",
            Group::MetricsOnly => "",
        }
    }
}

/// How a figure behaves over time, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// The unit of a figure's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A number of things.
    Count,
    /// Milliseconds in `/health`; seconds, the base unit, in `/metrics`.
    Millis,
}

/// One figure: where `/health` shows it, the `/metrics` family it is, and how to read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figure {
    /// The `/health` object it is in.
    pub(crate) group: Group,
    /// Its name in that object.
    pub(crate) key: &'static str,
    /// Its Prometheus family.
    pub(crate) metric: &'static str,
    /// The family's help text.
    pub(crate) help: &'static str,
    /// Counter or gauge.
    pub(crate) kind: Kind,
    /// Its unit.
    pub(crate) unit: Unit,
    /// Reads it.
    pub(crate) read: Read,
}

/// Every counter and gauge, in the order `/health` and `/metrics` show them.
#[rustfmt::skip] // One row per figure reads as a table.
pub(crate) const FIGURES: &[Figure] = &[
    count(Group::Events, "received", "webhook_events_received_total",
        "Messages received from Redis (event channels only).",
        |c, _| get(&c.events_received)),
    count(Group::Events, "processed", "webhook_events_processed_total",
        "Messages that parsed into at least one event.",
        |c, _| get(&c.events_processed)),
    count(Group::Events, "skipped", "webhook_events_skipped_total",
        "Events that reached no webhook, were duplicates, or describe nothing deliverable.",
        |c, _| get(&c.events_skipped)),
    count(Group::Events, "duplicate", "webhook_events_duplicate_total",
        "Events suppressed as duplicates.",
        |c, _| get(&c.events_duplicate)),
    count(Group::Events, "claimed_elsewhere", "webhook_events_claimed_elsewhere_total",
        "Events another instance claimed first.",
        |c, _| get(&c.events_claimed_elsewhere)),
    count(Group::Events, "unrecorded", "webhook_events_unrecorded_total",
        "Events whose deliveries could not be recorded in Redis and were made from memory.",
        |c, _| get(&c.events_unrecorded)),
    count(Group::Events, "malformed", "webhook_events_malformed_total",
        "Messages that could not be parsed.",
        |c, _| get(&c.events_malformed)),
    count(Group::Events, "failed", "webhook_events_failed_total",
        "Events or deliveries whose handling failed inside the service.",
        |c, _| get(&c.events_failed)),
    count(Group::Deliveries, "created", "webhook_deliveries_created_total",
        "Deliveries created, one per event and webhook.",
        |c, _| get(&c.deliveries_created)),
    count(Group::Deliveries, "succeeded", "webhook_deliveries_succeeded_total",
        "Deliveries that succeeded.",
        |c, _| get(&c.deliveries_succeeded)),
    count(Group::Deliveries, "failed", "webhook_deliveries_failed_total",
        "Deliveries that used up their attempts.",
        |c, _| get(&c.deliveries_failed)),
    count(Group::Deliveries, "throttled", "webhook_deliveries_throttled_total",
        "Progress deliveries superseded by a later one within the throttle period.",
        |c, _| get(&c.deliveries_throttled)),
    count(Group::Deliveries, "dropped", "webhook_deliveries_dropped_total",
        "Deliveries not sent because their webhook was deleted, paused or disconnected.",
        |c, _| get(&c.deliveries_dropped)),
    count(Group::Deliveries, "spilled", "webhook_deliveries_spilled_total",
        "Deliveries that waited in Redis because the in-memory queue or parking space was full.",
        |c, _| get(&c.deliveries_spilled)),
    count(Group::Deliveries, "deferred", "webhook_deliveries_deferred_total",
        "Deliveries recorded straight into Redis's due set, never queued, because their endpoint was backed up (it hangs or is slow, and its share of the parking space is full).",
        |c, _| get(&c.deliveries_deferred)),
    count(Group::Deliveries, "records_dropped", "webhook_history_records_dropped_total",
        "Attempt records left out of the history because the recorder was too far behind.",
        |c, _| get(&c.records_dropped)),
    gauge(Group::Queue, "depth", "webhook_queue_depth",
        "Deliveries queued or parked for a delivery thread.",
        Unit::Count, |_, g| g.queue.depth),
    gauge(Group::Queue, "in_flight", "webhook_in_flight",
        "Attempts in flight.",
        Unit::Count, |_, g| g.queue.in_flight),
    gauge(Group::Queue, "retry_backlog", "webhook_retry_backlog",
        "Deliveries waiting for their time, in Redis or in memory while Redis is away.",
        Unit::Count, |_, g| g.queue.retry_backlog),
    gauge(Group::Queue, "oldest_pending_age_ms", "webhook_oldest_due_seconds",
        "How long the earliest due delivery has waited past its time.",
        Unit::Millis, |_, g| g.queue.oldest_pending_age_ms),
    gauge(Group::Queue, "dead_letters", "webhook_dead_letters",
        "Dead letters kept.",
        Unit::Count, |_, g| g.queue.dead_letters),
    gauge(Group::MetricsOnly, "disconnected_webhooks", "webhook_disconnected_webhooks",
        "Webhooks disconnected after repeated failures.",
        Unit::Count, |_, g| g.disconnected_webhooks),
    gauge(Group::MetricsOnly, "redis_connected", "webhook_redis_connected",
        "1 while the intake is connected to Redis.",
        Unit::Count, |_, g| u64::from(g.redis_connected)),
    gauge(Group::MetricsOnly, "webhooks", "webhook_webhooks",
        "Webhooks loaded.",
        Unit::Count, |_, g| g.webhooks),
];

/// How a figure is read.
pub(crate) type Read = fn(&Counters, &Gauges) -> u64;

const fn count(
    group: Group,
    key: &'static str,
    metric: &'static str,
    help: &'static str,
    read: Read,
) -> Figure {
    Figure {
        group,
        key,
        metric,
        help,
        kind: Kind::Counter,
        unit: Unit::Count,
        read,
    }
}

const fn gauge(
    group: Group,
    key: &'static str,
    metric: &'static str,
    help: &'static str,
    unit: Unit,
    read: Read,
) -> Figure {
    Figure {
        group,
        key,
        metric,
        help,
        kind: Kind::Gauge,
        unit,
        read,
    }
}

/// Reads a counter.
pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_have_distinct_well_formed_names() {
        let mut metrics: Vec<&str> = FIGURES.iter().map(|f| f.metric).collect();
        metrics.sort_unstable();
        metrics.dedup();
        assert_eq!(metrics.len(), FIGURES.len(), "a metric name is used twice");
        let mut places: Vec<(&str, &str)> = FIGURES
            .iter()
            .filter(|f| f.group != Group::MetricsOnly)
            .map(|f| (f.group.key(), f.key))
            .collect();
        let shown = places.len();
        places.sort_unstable();
        places.dedup();
        assert_eq!(places.len(), shown, "a /health place is used twice");
        for figure in FIGURES {
            let name = figure.metric;
            assert!(
                name.starts_with("webhook_")
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            // Prometheus conventions: counters end in _total, durations are in seconds.
            assert_eq!(
                figure.kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}"
            );
            assert_eq!(
                figure.unit == Unit::Millis,
                name.ends_with("_seconds"),
                "{name}"
            );
            assert!(figure.help.ends_with('.'), "{name}: {}", figure.help);
        }
    }
}
