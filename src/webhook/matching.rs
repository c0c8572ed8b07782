//! Which webhooks receive an event, and under which name. Pure: no I/O, no clock.
//!
//! The rules are CONTRACT sections 2 and 6: an exact entry of `events` beats a pattern, among exact
//! entries the first in the list wins, a pattern delivers the canonical name, and one event reaches
//! one webhook at most once. The resolution per (webhook, kind) is computed once, when a snapshot
//! is built, so matching an event costs a walk over the webhooks subscribed to its kind.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Event, EventKind};

use super::model::{Filters, Subscription, Webhook};

/// Which `data` a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Canonical data (dotted names).
    Canonical,
    /// The original's data for the legacy name.
    Legacy,
}

/// How long a disconnected webhook is skipped before deliveries are tried again (half-open), by
/// default (reference 5.4: `AUTO_RECONNECT_DELAY_MS`).
pub const HALF_OPEN_AFTER_MS: u64 = 300_000;

/// An immutable view of every webhook, indexed for matching.
#[derive(Debug, Default)]
pub struct Snapshot {
    webhooks: Vec<Arc<Webhook>>,
    /// See [`receives`].
    half_open_after_ms: u64,
    by_id: HashMap<String, usize>,
    /// For each kind (by `EventKind as usize`): the webhooks subscribed to it, in registry order,
    /// with the name and form they receive it under.
    by_kind: Vec<Vec<Route>>,
}

#[derive(Debug)]
struct Route {
    webhook: usize,
    event_type: Arc<str>,
    form: Form,
}

/// One webhook that receives an event.
#[derive(Debug)]
pub struct Match<'a> {
    /// The webhook.
    pub(crate) webhook: &'a Arc<Webhook>,
    /// The `event_type` it receives.
    pub(crate) event_type: &'a Arc<str>,
    /// The shape of `data` it receives.
    pub(crate) form: Form,
    /// The webhook is disconnected and not yet due for a probe: keep the delivery as a dead
    /// letter (recoverable) rather than send it.
    pub(crate) held: bool,
}

impl Snapshot {
    /// Indexes `webhooks`.
    pub fn new(webhooks: Vec<Arc<Webhook>>, half_open_after_ms: u64) -> Snapshot {
        let mut by_kind: Vec<Vec<Route>> = EventKind::ALL.iter().map(|_| Vec::new()).collect();
        let mut by_id = HashMap::with_capacity(webhooks.len());
        for (index, webhook) in webhooks.iter().enumerate() {
            by_id.insert(webhook.id.clone(), index);
            for kind in EventKind::ALL {
                if let Some((event_type, form)) = resolve(&webhook.subscriptions, kind) {
                    by_kind[kind as usize].push(Route {
                        webhook: index,
                        event_type: Arc::from(event_type),
                        form,
                    });
                }
            }
        }
        Snapshot {
            webhooks,
            half_open_after_ms,
            by_id,
            by_kind,
        }
    }

    /// Every webhook, in registry order.
    pub(crate) fn webhooks(&self) -> &[Arc<Webhook>] {
        &self.webhooks
    }

    /// The webhook with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Webhook>> {
        self.by_id.get(id).map(|i| &self.webhooks[*i])
    }

    /// The webhooks that receive `event` now (`now_ms` decides half-open disconnected webhooks).
    pub fn matches<'a>(&'a self, event: &'a Event, now_ms: u64) -> impl Iterator<Item = Match<'a>> {
        // What the filters look at, worked out once per event rather than once per webhook.
        let facts = Facts::of(event);
        self.by_kind[event.kind as usize]
            .iter()
            .filter_map(move |route| {
                let webhook = &self.webhooks[route.webhook];
                (webhook.active && passes(&webhook.filters, &facts)).then(|| Match {
                    webhook,
                    event_type: &route.event_type,
                    form: route.form,
                    held: !self.receives(webhook, now_ms),
                })
            })
    }
}

/// The name and form under which `subscriptions` receive `kind`, if at all.
fn resolve(subscriptions: &[Subscription], kind: EventKind) -> Option<(&'static str, Form)> {
    for s in subscriptions {
        match s {
            Subscription::Canonical(k) if *k == kind => {
                return Some((kind.name(), Form::Canonical));
            }
            Subscription::Legacy(k) if *k == kind => {
                return kind.legacy_name().map(|n| (n, Form::Legacy));
            }
            _ => {}
        }
    }
    subscriptions
        .iter()
        .any(|s| s.pattern_covers(kind))
        .then_some((kind.name(), Form::Canonical))
}

impl Snapshot {
    /// Whether a webhook takes deliveries at all right now: active, and not disconnected, or
    /// disconnected long enough ago that deliveries are tried again (half-open; a success
    /// reconnects it, a failure starts the quiet period again).
    pub(crate) fn receives(&self, webhook: &Webhook, now_ms: u64) -> bool {
        if !webhook.active {
            return false;
        }
        if webhook.disconnected {
            let since = webhook.last_failure_at.unwrap_or(0);
            return now_ms.saturating_sub(since) >= self.half_open_after_ms;
        }
        true
    }
}

/// The attributes of an event the filters judge.
struct Facts {
    job_type: Option<String>,
    /// `Some(None)`: the event has a priority that is not a number.
    priority: Option<Option<f64>>,
    machine_id: Option<String>,
    worker_id: Option<String>,
}

impl Facts {
    fn of(event: &Event) -> Facts {
        Facts {
            job_type: event.job_type(),
            priority: event.priority().map(|p| {
                p.as_f64()
                    .or_else(|| p.as_str().and_then(|s| s.trim().parse().ok()))
            }),
            machine_id: event.machine_id(),
            worker_id: event.worker_id(),
        }
    }
}

/// Whether an event passes the filters. A filter only judges events that carry its field.
fn passes(filters: &Filters, facts: &Facts) -> bool {
    let listed = |list: &[String], value: &Option<String>| {
        list.is_empty() || value.as_ref().is_none_or(|v| list.contains(v))
    };
    let priority_ok = filters.job_priorities.is_empty()
        || match facts.priority {
            None => true,
            Some(p) => p.is_some_and(|p| filters.job_priorities.contains(&p)),
        };
    listed(&filters.job_types, &facts.job_type)
        && priority_ok
        && listed(&filters.machine_ids, &facts.machine_id)
        && listed(&filters.worker_ids, &facts.worker_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse::parse;
    use crate::webhook::model::EventNames;
    use serde_json::{Value, json};

    fn webhook(id: &str, body: Value) -> Arc<Webhook> {
        match Webhook::from_json(id, &body, EventNames::Strict) {
            Ok(w) => Arc::new(w),
            Err(e) => panic!("invalid test webhook: {e}"),
        }
    }

    fn matched(snapshot: &Snapshot, channel: &str, payload: &str) -> Vec<(String, String)> {
        let parsed = match parse(channel, payload.as_bytes(), 1) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let mut out = Vec::new();
        for event in &parsed.events {
            for m in snapshot.matches(event, 1) {
                out.push((m.webhook.id.clone(), m.event_type.to_string()));
            }
        }
        out
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn names_patterns_and_precedence() {
        let snapshot = Snapshot::new(
            vec![
                webhook(
                    "legacy",
                    json!({"url": "http://x/", "events": ["complete_job"]}),
                ),
                webhook(
                    "both",
                    json!({"url": "http://x/", "events": ["job.*", "job.completed", "complete_job"]}),
                ),
                webhook("all", json!({"url": "http://x/", "events": ["*"]})),
                webhook(
                    "prefix",
                    json!({"url": "http://x/", "events": ["worker.*"]}),
                ),
                webhook(
                    "off",
                    json!({"url": "http://x/", "events": ["*"], "active": false}),
                ),
            ],
            HALF_OPEN_AFTER_MS,
        );
        assert_eq!(
            matched(&snapshot, "complete_job", r#"{"job_id":"j"}"#),
            pairs(&[
                ("legacy", "complete_job"),
                ("both", "job.completed"),
                ("all", "job.completed")
            ])
        );
        assert_eq!(
            matched(
                &snapshot,
                "worker:events",
                r#"{"type":"worker_connected","worker_id":"w"}"#
            ),
            pairs(&[("all", "worker.connected"), ("prefix", "worker.connected")])
        );
    }

    #[test]
    fn filters_do_what_their_names_say() {
        let snapshot = Snapshot::new(
            vec![
                webhook(
                    "types",
                    json!({"url": "http://x/", "events": ["*"], "filters": {"job_types": ["comfyui"]}}),
                ),
                webhook(
                    "prio",
                    json!({"url": "http://x/", "events": ["*"], "filters": {"priorities": ["50"]}}),
                ),
                webhook(
                    "machines",
                    json!({"url": "http://x/", "events": ["*"], "filters": {"machine_ids": ["m1"]}}),
                ),
                webhook(
                    "workers",
                    json!({"url": "http://x/", "events": ["*"], "filters": {"worker_ids": ["w1"]}}),
                ),
            ],
            HALF_OPEN_AFTER_MS,
        );
        let ids = |channel: &str, payload: &str| -> Vec<String> {
            matched(&snapshot, channel, payload)
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        // b3: job_types works on submissions (service_required), priority defaults to 50.
        assert_eq!(
            ids(
                "job_submitted",
                r#"{"job_id":"j","service_required":"comfyui"}"#
            ),
            ["types", "prio", "machines", "workers"]
        );
        assert_eq!(
            ids(
                "job_submitted",
                r#"{"job_id":"j","service_required":"a1111","priority":7}"#
            ),
            ["machines", "workers"]
        );
        assert_eq!(
            ids("machine:status:m2", r#"{}"#),
            ["types", "prio", "workers"]
        );
        assert_eq!(
            ids(
                "worker:events",
                r#"{"type":"worker_connected","worker_id":"w2","machine_id":"m1"}"#
            ),
            ["types", "prio", "machines"]
        );
    }
}
