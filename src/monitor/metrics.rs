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

use super::{Counters, FIGURES, Gauges, Kind, Unit};
use crate::outcome::OutcomeClass;

/// Upper bounds of the duration buckets, in seconds.
pub(crate) const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Most webhooks with a series of their own.
pub(crate) const MAX_WEBHOOK_SERIES: usize = 200;

#[derive(Debug, Clone, Default)]
struct Series {
    /// Cumulative counts per bucket (the last is +Inf).
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Attempt durations per webhook.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    series: Mutex<HashMap<Arc<str>, Series>>,
}

impl Histogram {
    /// Records one attempt of `webhook` that took `seconds`.
    pub(crate) fn observe(&self, webhook: &Arc<str>, seconds: f64) {
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

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text: the labelled families, then every figure of [`FIGURES`]. Every family
/// has its `# HELP` and `# TYPE` lines even before its first sample.
pub(crate) fn render(counters: &Counters, histogram: &Histogram, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(8192);
    family(
        &mut out,
        "webhook_events_total",
        "Events received, by canonical type and source channel.",
        Kind::Counter,
    );
    for ((kind, source), n) in counters.events_by_type() {
        let _ = writeln!(
            out,
            "webhook_events_total{{type=\"{}\",source=\"{}\"}} {n}",
            escape(kind),
            escape(&source)
        );
    }
    family(
        &mut out,
        "webhook_malformed_messages_total",
        "Messages that could not be parsed, by source.",
        Kind::Counter,
    );
    for (source, n) in counters.malformed_by_source() {
        let _ = writeln!(
            out,
            "webhook_malformed_messages_total{{source=\"{}\"}} {n}",
            escape(&source)
        );
    }
    family(
        &mut out,
        "webhook_deliveries_total",
        "Delivery attempts, by outcome class.",
        Kind::Counter,
    );
    for class in OutcomeClass::ALL {
        let _ = writeln!(
            out,
            "webhook_deliveries_total{{outcome=\"{}\"}} {}",
            class.label(),
            counters.attempts(class)
        );
    }
    render_histogram(&mut out, histogram);
    for figure in FIGURES {
        family(&mut out, figure.metric, figure.help, figure.kind);
        let value = (figure.read)(counters, gauges);
        let _ = match figure.unit {
            Unit::Count => writeln!(out, "{} {value}", figure.metric),
            Unit::Millis => writeln!(out, "{} {}", figure.metric, value as f64 / 1000.0),
        };
    }
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: Kind) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_histogram(out: &mut String, histogram: &Histogram) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::OutcomeClass;

    #[test]
    fn exposition_has_every_family_and_bounded_series() {
        let counters = Counters::default();
        counters.attempt(OutcomeClass::Success, 1000);
        counters.event("job.completed", "complete_job");
        let histogram = Histogram::default();
        for i in 0..(MAX_WEBHOOK_SERIES + 50) {
            histogram.observe(&Arc::from(format!("wh_{i}")), 0.003);
        }
        let text = render(&counters, &histogram, &Gauges::default());
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

    #[test]
    fn every_figure_is_a_family_with_its_sample_in_base_units() {
        let counters = Counters::default();
        counters
            .events_received
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let gauges = Gauges {
            queue: crate::monitor::Queue {
                oldest_pending_age_ms: 1500,
                ..Default::default()
            },
            ..Default::default()
        };
        let text = render(&counters, &Histogram::default(), &gauges);
        for figure in FIGURES {
            let kind = match figure.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            assert!(text.contains(&format!("# HELP {} {}\n", figure.metric, figure.help)));
            assert!(text.contains(&format!("# TYPE {} {kind}\n", figure.metric)));
        }
        assert!(
            text.contains("\nwebhook_events_received_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\nwebhook_oldest_due_seconds 1.5\n"),
            "{text}"
        );
    }

    #[test]
    fn the_readme_lists_every_family() {
        let readme = include_str!("../../README.md");
        for figure in FIGURES {
            let kind = match figure.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let place = match figure.group {
                crate::monitor::Group::MetricsOnly => "—".to_string(),
                group => format!("`{}.{}`", group.key(), figure.key),
            };
            let row = format!(
                "| `{}` | {kind} | {place} | {} |",
                figure.metric, figure.help
            );
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
        for family in [
            "webhook_events_total{type,source}",
            "webhook_malformed_messages_total{source}",
            "webhook_deliveries_total{outcome}",
            "webhook_attempt_duration_seconds{webhook}",
        ] {
            assert!(
                readme.contains(&format!("`{family}`")),
                "README lacks {family}"
            );
        }
    }
}
