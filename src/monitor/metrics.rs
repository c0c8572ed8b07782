//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the counters, the attempt
//! duration histogram, and gauges read at scrape time.
//!
//! Label cardinality is bounded: event types and sources are fixed sets, outcome classes are
//! eight, and the per-webhook histogram keeps at most [`MAX_WEBHOOK_SERIES`] webhooks; attempts
//! to any further webhook are counted under `webhook="other"`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Counters, OUTCOMES};

/// Upper bounds of the duration buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Most webhooks with a series of their own.
pub const MAX_WEBHOOK_SERIES: usize = 200;

#[derive(Debug, Clone, Default)]
struct Series {
    /// Cumulative counts per bucket (the last is +Inf).
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Attempt durations per webhook.
#[derive(Debug, Default)]
pub struct Histogram {
    series: Mutex<HashMap<Arc<str>, Series>>,
}

impl Histogram {
    /// Records one attempt of `webhook` that took `seconds`.
    pub fn observe(&self, webhook: &Arc<str>, seconds: f64) {
        let mut series = self.series.lock();
        let key = if series.contains_key(webhook) || series.len() < MAX_WEBHOOK_SERIES {
            webhook.clone()
        } else {
            Arc::from("other")
        };
        let s = series.entry(key).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                s.buckets[i] += 1;
            }
        }
        s.buckets[BUCKETS.len()] += 1;
        s.sum += seconds;
        s.count += 1;
    }

    fn snapshot(&self) -> Vec<(Arc<str>, Series)> {
        let mut all: Vec<(Arc<str>, Series)> = self
            .series
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Deliveries waiting in Redis for their time.
    pub retry_backlog: u64,
    /// How long the earliest due delivery is overdue, in seconds.
    pub oldest_due_seconds: f64,
    /// Dead letters kept.
    pub dead_letters: u64,
    /// Webhooks currently disconnected.
    pub disconnected_webhooks: u64,
    /// Whether the intake subscriber is connected.
    pub redis_connected: bool,
    /// Deliveries queued or parked.
    pub queue_depth: u64,
    /// Attempts in flight.
    pub in_flight: u64,
    /// Webhooks loaded.
    pub webhooks: u64,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub fn render(counters: &Counters, histogram: &Histogram, gauges: Gauges) -> String {
    let mut out = String::with_capacity(8192);
    let _ = writeln!(
        out,
        "# HELP webhook_events_total Events received, by canonical type and source channel."
    );
    let _ = writeln!(out, "# TYPE webhook_events_total counter");
    for ((kind, source), n) in counters.events_by_type() {
        let _ = writeln!(
            out,
            "webhook_events_total{{type=\"{}\",source=\"{}\"}} {n}",
            escape(kind),
            escape(&source)
        );
    }
    let _ = writeln!(
        out,
        "# HELP webhook_malformed_messages_total Messages that could not be parsed, by source."
    );
    let _ = writeln!(out, "# TYPE webhook_malformed_messages_total counter");
    for (source, n) in counters.malformed_by_source() {
        let _ = writeln!(
            out,
            "webhook_malformed_messages_total{{source=\"{}\"}} {n}",
            escape(&source)
        );
    }
    let _ = writeln!(
        out,
        "# HELP webhook_deliveries_total Delivery attempts, by outcome class."
    );
    let _ = writeln!(out, "# TYPE webhook_deliveries_total counter");
    for class in OUTCOMES {
        let _ = writeln!(
            out,
            "webhook_deliveries_total{{outcome=\"{}\"}} {}",
            class.label(),
            counters.attempts(class)
        );
    }
    let _ = writeln!(
        out,
        "# HELP webhook_attempt_duration_seconds Duration of delivery attempts, by webhook."
    );
    let _ = writeln!(out, "# TYPE webhook_attempt_duration_seconds histogram");
    for (webhook, series) in histogram.snapshot() {
        let w = escape(&webhook);
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "webhook_attempt_duration_seconds_bucket{{webhook=\"{w}\",le=\"{bound}\"}} {}",
                series.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "webhook_attempt_duration_seconds_bucket{{webhook=\"{w}\",le=\"+Inf\"}} {}",
            series.buckets[BUCKETS.len()]
        );
        let _ = writeln!(
            out,
            "webhook_attempt_duration_seconds_sum{{webhook=\"{w}\"}} {}",
            series.sum
        );
        let _ = writeln!(
            out,
            "webhook_attempt_duration_seconds_count{{webhook=\"{w}\"}} {}",
            series.count
        );
    }
    let gauge = |out: &mut String, name: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    };
    gauge(
        &mut out,
        "webhook_retry_backlog",
        "Deliveries waiting in Redis for their time.",
        gauges.retry_backlog.to_string(),
    );
    gauge(
        &mut out,
        "webhook_oldest_due_seconds",
        "How long the earliest due delivery has waited past its time.",
        gauges.oldest_due_seconds.to_string(),
    );
    gauge(
        &mut out,
        "webhook_dead_letters",
        "Dead letters kept.",
        gauges.dead_letters.to_string(),
    );
    gauge(
        &mut out,
        "webhook_disconnected_webhooks",
        "Webhooks disconnected after repeated failures.",
        gauges.disconnected_webhooks.to_string(),
    );
    gauge(
        &mut out,
        "webhook_redis_connected",
        "1 while the intake is connected to Redis.",
        u8::from(gauges.redis_connected).to_string(),
    );
    gauge(
        &mut out,
        "webhook_queue_depth",
        "Deliveries queued or parked for a delivery thread.",
        gauges.queue_depth.to_string(),
    );
    gauge(
        &mut out,
        "webhook_in_flight",
        "Attempts in flight.",
        gauges.in_flight.to_string(),
    );
    gauge(
        &mut out,
        "webhook_webhooks",
        "Webhooks loaded.",
        gauges.webhooks.to_string(),
    );
    let totals = [
        (
            "webhook_events_received_total",
            "Messages received.",
            &counters.events_received,
        ),
        (
            "webhook_events_duplicate_total",
            "Events suppressed as duplicates.",
            &counters.events_duplicate,
        ),
        (
            "webhook_deliveries_succeeded_total",
            "Deliveries that succeeded.",
            &counters.deliveries_succeeded,
        ),
        (
            "webhook_deliveries_failed_total",
            "Deliveries that used up their attempts.",
            &counters.deliveries_failed,
        ),
        (
            "webhook_deliveries_spilled_total",
            "Deliveries that waited in Redis because the in-memory queue or parking space was full.",
            &counters.deliveries_spilled,
        ),
    ];
    for (name, help, counter) in totals {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", super::get(counter));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::retry::OutcomeClass;

    #[test]
    fn exposition_has_every_family_and_bounded_series() {
        let counters = Counters::default();
        counters.attempt(OutcomeClass::Success, 1000);
        counters.event("job.completed", "complete_job");
        let histogram = Histogram::default();
        for i in 0..(MAX_WEBHOOK_SERIES + 50) {
            histogram.observe(&Arc::from(format!("wh_{i}")), 0.003);
        }
        let text = render(&counters, &histogram, Gauges::default());
        for family in [
            "webhook_events_total{type=\"job.completed\",source=\"complete_job\"} 1",
            "webhook_deliveries_total{outcome=\"2xx\"} 1",
            "webhook_deliveries_total{outcome=\"ssrf_blocked\"} 0",
            "webhook_attempt_duration_seconds_bucket{webhook=\"other\",le=\"0.005\"} 50",
            "webhook_retry_backlog 0",
            "webhook_oldest_due_seconds 0",
            "webhook_dead_letters 0",
            "webhook_disconnected_webhooks 0",
            "webhook_redis_connected 0",
        ] {
            assert!(text.contains(family), "missing {family}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("webhook_attempt_duration_seconds_count"))
            .count();
        assert_eq!(series, MAX_WEBHOOK_SERIES + 1);
    }
}
